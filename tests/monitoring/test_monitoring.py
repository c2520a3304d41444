"""Monitoring on replayed traffic: zero skew when serving keeps up, drift on exactly the
shifted source's features, stale views for an unmaterialized day, and the alert exit code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import timedelta

import pandas as pd
import pytest

from cli.monitoring import main as monitoring_main
from core.settings import Settings
from feast_plugins.store import feature_store
from monitoring.config import AlertRules, load_rules
from monitoring.errors import MonitoringError
from monitoring.html import PLOT_IDS
from monitoring.monitor import run_monitoring, write_summary
from monitoring.servedlog import read_served_log
from monitoring.skew import feature_skew, offline_features
from tests.conftest import SERVE_END, copy_data_dir, materialize_into, require_tool
from tests.monitoring.conftest import REPLAY_HOURS, replay
from training.registry import ModelRegistry

pytestmark = pytest.mark.monitoring

BATCH_VIEWS_WITH_TTL = {"weather_hourly", "carrier_daily", "origin_daily", "route_daily"}


def monitor(data_dir, use_case, rules=AlertRules(), **kwargs) -> dict:
    settings = Settings.from_env({"DATA_DIR": str(data_dir)})
    return run_monitoring(settings, use_case, feature_store(settings), rules, **kwargs)


def mismatched(summary) -> dict:
    return {f: s["mismatches"] for f, s in summary["skew"].items() if s["mismatches"]}


def test_replayed_traffic_has_zero_skew_fresh_views_and_no_alert(replayed, use_case, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(replayed["data_dir"]))
    summary = monitor(replayed["data_dir"], use_case)
    features = ModelRegistry(replayed["data_dir"] / "models").load_champion().features
    assert replayed["served"] >= 300, f"too little replayed traffic: {replayed['served']}"
    assert summary["log"]["rows"] == replayed["served"]
    assert set(summary["skew"]) == set(features)
    assert all(s["rows"] == replayed["served"] for s in summary["skew"].values())
    assert mismatched(summary) == {}, "served values differ from the offline point-in-time join"
    views = summary["freshness"]["views"]
    assert set(views) == BATCH_VIEWS_WITH_TTL | {"aircraft"}
    assert not [v for v, f in views.items() if f["stale"]], f"stale views after an hourly replay: {views}"
    assert views["weather_hourly"]["age_hours"] <= 1.0
    assert summary["quality"]["rows"] == replayed["served"], "every replayed flight has a label in the slice"
    assert summary["drift"]["by_day"], "drift per request day is missing"
    assert summary["alerts"] == [], f"unexpected alerts: {summary['alerts']}"


def test_a_served_value_that_differs_from_the_offline_one_is_skew_with_an_example(replayed, use_case,
                                                                                   monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(replayed["data_dir"]))
    settings = Settings.from_env()
    features = ModelRegistry(settings.models).load_champion().features
    log = read_served_log(settings.logs / "served", features, use_case.event_timestamp)
    offline = offline_features(feature_store(settings), use_case, log)
    log.loc[3, "carrier_daily__late_rate_7d"] += 1e-9
    skew = feature_skew(log, offline, features, ["origin", "flight"])
    assert {f: s["mismatches"] for f, s in skew.items() if s["mismatches"]} == {"carrier_daily__late_rate_7d": 1}
    example = skew["carrier_daily__late_rate_7d"]["examples"][0]
    assert example["flight"] == int(log.loc[3, "flight"]) and example["served"] != example["offline"]
    assert feature_skew(log, offline, features, ["flight"], tolerance=1e-6)["carrier_daily__late_rate_7d"][
        "mismatches"] == 0, "the tolerance is not applied"


def test_shifted_weather_temperatures_drift_on_exactly_that_feature(replayed, served_template, tmp_path,
                                                                    use_case, monkeypatch):
    """The same traffic served again after weather temperatures moved +15 F in the source."""
    data_dir = copy_data_dir(served_template, tmp_path / "data")
    shutil.copytree(replayed["data_dir"] / "logs", data_dir / "logs")
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.delenv("PROFILE", raising=False)
    settings = Settings.from_env()
    source = settings.sources / "weather_hourly.parquet"
    weather = pd.read_parquet(source)
    weather["temp"] = weather["temp"] + 15.0
    source.unlink()  # the copy shares nothing with the template's file
    weather.to_parquet(source, index=False)
    # A new registry and online store naming this data dir's sources. (Re-applying over the
    # copied registry would make Feast tear down the template's online tables: the copied
    # registry records them under the template's absolute path.)
    for name in ("online_store.db", "registry.db"):
        (data_dir / name).unlink()
    materialize_into(settings)
    cut = pd.Timestamp.now(tz="UTC")
    served = replay(data_dir, use_case, SERVE_END, REPLAY_HOURS)
    assert served == replayed["served"]

    summary = monitor(data_dir, use_case, recent_since=cut.to_pydatetime())
    recent = summary["drift"]["recent_vs_earlier"]
    assert recent["earlier_rows"] == recent["recent_rows"] == served
    moved = {c for c in recent["drifted"] if c != "probability"}
    assert moved == {"weather_hourly__temp"}, f"drift flagged on {recent['drifted']}"
    assert recent["psi"]["weather_hourly__temp"] > 1.0
    alerts = {(a["rule"], a["subject"]) for a in summary["alerts"]}
    assert ("drift_recent_vs_earlier", "weather_hourly__temp") in alerts
    # History was rewritten under traffic already served: the rows served before the
    # change now differ from the offline join on temperature, and only there.
    assert set(mismatched(summary)) == {"weather_hourly__temp"}
    assert summary["skew"]["weather_hourly__temp"]["mismatches"] <= served


def test_an_unmaterialized_day_shows_as_stale(served_template, tmp_path, use_case, monkeypatch):
    """Traffic on 2013-02-28 while the online store still ends at 2013-02-27 23:00."""
    data_dir = copy_data_dir(served_template, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.delenv("PROFILE", raising=False)
    served = replay(data_dir, use_case, SERVE_END + timedelta(hours=12), 3, materialize=False)
    assert served > 0
    summary = monitor(data_dir, use_case)
    views = summary["freshness"]["views"]
    assert {v for v, f in views.items() if f["stale"]} == BATCH_VIEWS_WITH_TTL, views
    assert not views["aircraft"]["stale"], "a view without TTL is never stale"
    assert views["weather_hourly"]["age_hours"] > views["weather_hourly"]["ttl_hours"]
    stale_alerts = {a["subject"] for a in summary["alerts"] if a["rule"] == "stale_view"}
    assert stale_alerts == BATCH_VIEWS_WITH_TTL
    assert summary["freshness"]["served_stale_rate"]["weather_hourly__temp"] == 1.0
    assert "weather_hourly__temp" in mismatched(summary), "values the server dropped are skew too"


def test_cli_writes_the_report_and_exits_1_on_a_breached_rule(replayed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATA_DIR", str(replayed["data_dir"]))
    assert monitoring_main(["report"]) == 0
    out = capsys.readouterr().out
    assert "no alerts" in out and "skew: 0 of 33 features with mismatches" in out, out
    summary = json.loads((replayed["data_dir"] / "reports" / "monitoring" / "summary.json").read_text())
    assert summary["alerts"] == [] and summary["log"]["rows"] == replayed["served"]

    strict = tmp_path / "rules.toml"
    strict.write_text("auc_min = 0.99\n")
    assert monitoring_main(["report", "--rules", str(strict), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert [a["rule"] for a in printed["alerts"]] == ["quality_auc"]


def test_rules_file_refuses_unknown_and_mistyped_rules(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text("psi_maxx = 0.3\n")
    with pytest.raises(MonitoringError, match="psi_maxx"):
        load_rules(path)
    path.write_text('psi_max = "high"\n')
    with pytest.raises(MonitoringError, match="psi_max"):
        load_rules(path)
    path.write_text("psi_max = 1\nalert_on_training_drift = true\n")
    assert load_rules(path) == AlertRules(psi_max=1.0, alert_on_training_drift=True)
    assert load_rules(tmp_path / "absent.toml") == AlertRules()


def test_report_without_traffic_still_reports_freshness(served_template, tmp_path, use_case, monkeypatch):
    data_dir = copy_data_dir(served_template, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    summary = monitor(data_dir, use_case, at=(SERVE_END + timedelta(hours=1)))
    assert summary["log"]["rows"] == 0 and summary["skew"] == {}
    assert not [v for v, f in summary["freshness"]["views"].items() if f["stale"]]
    page = write_summary(Settings.from_env(), summary)["html"].read_text()
    assert "no served traffic in the window" in page
    assert all(f'id="{plot}"' in page for plot in PLOT_IDS), "a plot (or its placeholder) is missing"


#: Flags for headless Chromium on a machine without network or display (a fresh profile).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def test_html_report_renders_every_plot_in_headless_chromium(replayed, use_case, tmp_path, monkeypatch):
    chromium = require_tool("chromium")
    monkeypatch.setenv("DATA_DIR", str(replayed["data_dir"]))
    page = write_summary(Settings.from_env(), monitor(replayed["data_dir"], use_case))["html"]
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    # Each plot marks itself with its decoded width once the browser has drawn it.
    rendered = dict(re.findall(r'<img class="plot" id="([\w-]+)"[^>]*?data-rendered="(\d+)"', dom))
    assert set(rendered) == set(PLOT_IDS), f"plots drawn: {rendered}; expected {PLOT_IDS}"
    assert all(int(width) > 100 for width in rendered.values()), rendered
    assert '<p class="ok" id="status">no alerts</p>' in dom


def test_a_real_servers_metrics_carry_the_last_reports_gauges_in_every_worker(replayed, use_case, monkeypatch):
    """gunicorn with two workers (multiprocess metrics): every scrape, whichever worker
    answers, carries the last report's gauges once (not added up over workers), including
    the consistency rates and cause counts; a newer report replaces them in all workers."""
    from core.files import atomic_write
    from serving.process import free_port, stop_process, wait_ready
    from tests.serving.test_gunicorn import gunicorn_env, http, start_gunicorn
    from tests.serving.test_server import samples

    monkeypatch.setenv("DATA_DIR", str(replayed["data_dir"]))
    settings = Settings.from_env()
    summary = monitor(replayed["data_dir"], use_case)
    write_summary(settings, summary)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_gunicorn(gunicorn_env(replayed["data_dir"], port))
    try:
        wait_ready(base, server, timeout=120)
        psi = summary["drift"]["vs_training"]["weather_hourly__temp"]
        temp = summary["consistency"]["features"]["weather_hourly__temp"]
        expected = [f'monitoring_drift_psi{{comparison="training",feature="weather_hourly__temp"}} {psi}',
                    'monitoring_view_stale{view="weather_hourly"} 0.0',
                    'monitoring_skew_mismatch_rate{feature="weather_hourly__temp"} 0.0',
                    f'monitoring_served_rows {float(replayed["served"])}',
                    f'monitoring_quality{{metric="auc"}} {summary["quality"]["overall"]["auc"]}',
                    f'monitoring_consistency_rate{{class="exact",feature="weather_hourly__temp"}} '
                    f'{temp["exact_rate"]}',
                    'monitoring_consistency_rate{class="missing",feature="weather_hourly__temp"} 0.0',
                    'monitoring_consistency_rate{class="extra",feature="weather_hourly__temp"} 0.0',
                    "monitoring_mismatch_unexplained_values 0.0"]
        for _ in range(6):  # more scrapes than workers
            status, _, text = http("GET", f"{base}/metrics")
            assert status == 200
            missing = [line for line in expected if line not in text]
            assert not missing, f"/metrics lacks {missing}"
        # A newer report (the monitoring job ran again and found causes): every worker shows it.
        summary["causes"] = {"findings": [{"cause": "write_late", "values": 12}, {"cause": "unexplained", "values": 1}],
                             "by_feature": {"weather_hourly__temp": {"write_late": 12, "unexplained": 1}},
                             "mismatches": 13, "unexplained": 1}
        summary["consistency"]["features"]["weather_hourly__temp"].update(exact_rate=0.75, missing_rate=0.25)
        atomic_write(settings.reports / "monitoring" / "summary.json", json.dumps(summary, default=str))
        for _ in range(6):
            text = http("GET", f"{base}/metrics")[2]
            assert samples(text, "monitoring_mismatch_values") == {(("cause", "write_late"),): 12.0,
                                                                   (("cause", "unexplained"),): 1.0}
            assert samples(text, "monitoring_mismatch_feature_values")[
                (("cause", "write_late"), ("feature", "weather_hourly__temp"))] == 12.0
            assert samples(text, "monitoring_mismatch_unexplained_values") == {(): 1.0}
            rates = samples(text, "monitoring_consistency_rate")
            assert rates[(("class", "exact"), ("feature", "weather_hourly__temp"))] == 0.75
            assert rates[(("class", "missing"), ("feature", "weather_hourly__temp"))] == 0.25
    finally:
        stop_process(server)


def test_a_log_file_without_a_feature_column_is_refused_naming_the_file(tmp_path):
    part = tmp_path / "served" / "date=2013-02-28" / "part-1.parquet"
    part.parent.mkdir(parents=True)
    pd.DataFrame({"request_id": ["r"], "event_timestamp": [pd.Timestamp("2013-02-28", tz="UTC")]}).to_parquet(part)
    with pytest.raises(MonitoringError, match=r"part-1\.parquet.*weather_hourly__temp"):
        read_served_log(tmp_path / "served", ["weather_hourly__temp"], "event_timestamp")
    assert read_served_log(tmp_path / "absent", ["weather_hourly__temp"], "event_timestamp").empty
