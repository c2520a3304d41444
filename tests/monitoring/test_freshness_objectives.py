"""Freshness objectives: declared per view in feature_repo/, parsed in one place, checked by
the monitoring report against the served log's p99 age; write lag per view from the write
records; both exported as gauges from the last report."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.errors import ConfigError
from core.settings import Settings
from monitoring.freshness import objective_alerts, served_age, write_lag
from pipeline.write_records import append_records, read_write_records, record
from serving.gauges import MonitoringCollector
from serving.online import FRESHNESS_TAG, freshness_objective

H = 3600.0
T0 = datetime(2013, 12, 1, tzinfo=timezone.utc)


def test_every_view_of_the_repo_declares_a_valid_objective():
    from feature_repo.definitions import features

    views = {v.name: v for v in vars(features).values() if type(v).__name__ == "FeatureView"}
    assert {name: freshness_objective(v) for name, v in views.items()} == {
        "weather_hourly": 90 * 60.0, "origin_recent": 2 * H, "aircraft": None,
        "carrier_daily": 26 * H, "origin_daily": 26 * H, "route_daily": 26 * H}
    assert all(FRESHNESS_TAG in v.tags for v in views.values()), "each view says its objective, or none"


@pytest.mark.parametrize("tag", ["90 minutes", "-1h", "0m", "h", "2w", "1e3s", ""])
def test_a_bad_objective_is_refused_naming_the_view_and_tag(tag):
    view = SimpleNamespace(name="weather_hourly", tags={FRESHNESS_TAG: tag})
    with pytest.raises(ConfigError, match=f"feature view 'weather_hourly': tag {FRESHNESS_TAG}='{tag}'"):
        freshness_objective(view)


@pytest.mark.parametrize("tag, seconds", [("45s", 45.0), ("1.5d", 1.5 * 86400), ("none", None), (" None ", None)])
def test_objectives_parse(tag, seconds):
    assert freshness_objective(SimpleNamespace(name="v", tags={FRESHNESS_TAG: tag})) == seconds
    assert freshness_objective(SimpleNamespace(name="v", tags={})) is None


def test_served_p99_age_is_checked_against_each_objective():
    """200 rows: weather mostly fresh with 3% over two hours (p99 breaks 90 minutes), daily
    values under a day (kept), a negative age (a value newer than its request) left out,
    nulls left out; an old log without age columns reports no values."""
    weather = [0.5 * H] * 194 + [2.5 * H] * 6
    daily = [20 * H] * 199 + [-3 * H]
    log = pd.DataFrame({"age__weather_hourly": weather, "age__route_daily": daily,
                        "age__origin_recent": [None] * 200})
    ages = served_age(log, {"weather_hourly": 5400.0, "route_daily": 26 * H, "origin_recent": 2 * H,
                            "aircraft": None})
    assert ages["weather_hourly"] == {"values": 200, "p50_seconds": 1800.0, "p99_seconds": 9000.0,
                                      "max_seconds": 9000.0, "objective_seconds": 5400.0, "breached": True}
    assert ages["route_daily"]["values"] == 199 and not ages["route_daily"]["breached"]
    assert ages["origin_recent"]["values"] == 0 and ages["origin_recent"]["p99_seconds"] is None
    assert ages["aircraft"] == {"values": 0, "p50_seconds": None, "p99_seconds": None, "max_seconds": None,
                                "objective_seconds": None, "breached": False}
    [alert] = objective_alerts(ages)
    assert alert["rule"] == "freshness_objective" and alert["subject"] == "weather_hourly"
    assert (alert["value"], alert["limit"]) == (9000.0, 5400.0) and "2.50 h" in alert["message"]
    # 1% over two hours is within a p99 objective.
    log["age__weather_hourly"] = [0.5 * H] * 198 + [2.5 * H] * 2
    assert not served_age(log, {"weather_hourly": 5400.0})["weather_hourly"]["breached"]


def _write(directory, view, kind, known, written, ok=True):
    append_records(directory, [record(kind, view, "s", known - timedelta(hours=1), known, rows=3, keys=3,
                                      min_event_timestamp=known, max_event_timestamp=known, max_known_at=known,
                                      written_at=written, ok=ok, error=None if ok else "OperationalError: locked")])


def test_write_lag_per_view_from_the_records(tmp_path):
    """Hourly pushes 5 minutes after each hour, one 2 hours late, one failed; a nightly
    materialization 30 minutes after the night."""
    directory = tmp_path / "writes"
    for h in range(1, 200):
        known = T0 + timedelta(hours=h)
        delay = timedelta(hours=2) if h == 50 else timedelta(minutes=5)
        _write(directory, "weather_hourly", "push", known, known + delay, ok=h != 60)
    for d in range(1, 4):
        night = T0 + timedelta(days=d)
        _write(directory, "route_daily", "materialize", night, night + timedelta(minutes=30))
    lag = write_lag(read_write_records(None, directory=directory))
    weather = lag["weather_hourly"]
    assert (weather["writes"], weather["failed"], weather["by_kind"]) == (199, 1, {"push": 199})
    assert weather["lag_p50_seconds"] == 300.0 and weather["lag_p99_seconds"] == 300.0
    assert weather["lag_max_seconds"] == 7200.0
    assert weather["last_failure"] == {"written_at": (T0 + timedelta(hours=60, minutes=5)).isoformat(),
                                       "kind": "push", "error": "OperationalError: locked"}
    assert lag["route_daily"]["lag_p99_seconds"] == 1800.0 and lag["route_daily"]["last_failure"] is None
    assert write_lag(read_write_records(None, directory=tmp_path / "none")) == {}


def test_the_last_reports_ages_and_write_lag_are_gauges(tmp_path):
    summary = {"alerts": [], "log": {"rows": 1}, "model": {"data_age_days": 1.0},
               "freshness": {"views": {},
                             "served_age": {"weather_hourly": {"values": 5, "p99_seconds": 9000.0,
                                                               "objective_seconds": 5400.0, "breached": True},
                                            "aircraft": {"values": 0, "p99_seconds": None,
                                                         "objective_seconds": None, "breached": False}},
                             "write_lag": {"views": {"weather_hourly": {"lag_p50_seconds": 300.0,
                                                                        "lag_p99_seconds": 7200.0, "failed": 1}}}}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(MonitoringCollector(path))
    text = generate_latest(registry).decode()
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(text) for s in f.samples}
    assert got[("monitoring_served_value_age_p99_seconds", (("view", "weather_hourly"),))] == 9000.0
    assert got[("monitoring_freshness_objective_breached", (("view", "weather_hourly"),))] == 1.0
    assert ("monitoring_freshness_objective_breached", (("view", "aircraft"),)) not in got
    assert got[("monitoring_write_lag_seconds", (("quantile", "0.99"), ("view", "weather_hourly")))] == 7200.0
    assert got[("monitoring_failed_writes", (("view", "weather_hourly"),))] == 1.0


def test_the_report_section_reads_objectives_from_the_store_and_lag_from_the_records(served_dir, use_case):
    """What ``monitoring report`` adds to its freshness section: objectives from the applied
    views' tags, the served log's ages against them, write lag from this DATA_DIR's records
    within the report's window (a record after it left out), a torn line counted."""
    from feast_plugins.store import feature_store
    from monitoring.freshness import report_section
    from pipeline.write_records import records_dir

    settings = Settings.from_env({"DATA_DIR": str(served_dir)})
    store = feature_store(settings)
    directory = records_dir(settings)
    for h in range(1, 5):
        known = T0 + timedelta(hours=h)
        _write(directory, "weather_hourly", "push", known, known + timedelta(minutes=10))
    _write(directory, "weather_hourly", "push", T0 + timedelta(days=2), T0 + timedelta(days=2, hours=3))
    with (directory / "writes-2013-12-01.jsonl").open("a") as f:
        f.write('{"kind": "pu')
    log = pd.DataFrame({"age__weather_hourly": [600.0] * 50 + [7000.0] * 50, "age__route_daily": [3600.0] * 100})
    section = report_section(settings, store, use_case.feature_service, log, T0, T0 + timedelta(days=1))
    ages = section["served_age"]
    assert ages["weather_hourly"]["objective_seconds"] == 5400.0 and ages["weather_hourly"]["breached"]
    assert ages["route_daily"]["objective_seconds"] == 26 * H and not ages["route_daily"]["breached"]
    assert ages["aircraft"]["objective_seconds"] is None
    assert section["write_lag"]["records"] == 4
    assert section["write_lag"]["views"]["weather_hourly"]["lag_p99_seconds"] == 600.0
    assert [s["file"] for s in section["write_lag"]["skipped_lines"]] == ["writes-2013-12-01.jsonl"]


def test_the_html_report_shows_served_age_and_write_lag_per_view_beside_the_consistency():
    from monitoring.html import render_html

    freshness = {"views": {}, "served_stale_rate": {},
                 "served_age": {"weather_hourly": {"values": 5, "p50_seconds": 1800.0, "p99_seconds": 9000.0,
                                                   "max_seconds": 9900.0, "objective_seconds": 5400.0,
                                                   "breached": True}},
                 "write_lag": {"records": 3, "skipped_lines": [],
                               "views": {"route_daily": {"writes": 3, "failed": 1, "lag_p50_seconds": 600.0,
                                                         "lag_p99_seconds": 1800.0, "lag_max_seconds": 1800.0,
                                                         "last_failure": {"written_at": "2013-01-02T00:00:00+00:00",
                                                                          "kind": "push", "error": "locked"}}}}}
    summary = {"alerts": [], "at": "2013-01-03T00:00:00+00:00", "generated_at": "2026-01-01T00:00:00+00:00",
               "log": {"rows": 0, "requests": 0, "model_versions": [], "skipped_files": []},
               "model": {"version": "m", "trained_at": "2026-01-01", "wall_clock_age_days": 0.0,
                         "training_window_end": "2013-01-01", "data_age_days": 2.0},
               "freshness": freshness}
    page = render_html(summary)
    section = page[page.index('id="age-lag"'):page.index("<h2>Drift")]
    assert "Consistency" in page[:page.index('id="age-lag"')], "the section follows the consistency section"
    for cells in (("weather_hourly", "5", "0.5", "2.5", "2.75", "1.5", "True"),
                  ("route_daily", "3", "1", "0.167", "0.5", "0.5", "2013-01-02T00:00:00+00:00 push: locked")):
        assert "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" in section, cells
    plot = re.search(r'<img class="plot" id="plot-age-lag" alt="([^"]*)"', section)
    assert plot and plot[1].startswith("served value age and write lag"), "the plot is drawn, not a placeholder"


def test_a_record_line_with_an_instant_that_is_not_one_is_named_and_skipped(tmp_path):
    """The records' instants are parsed for all lines at once: a line whose time is not an
    instant (any of the six) is still named by file and line and skipped, and the lines
    around it are kept."""
    directory = tmp_path / "writes"
    for h in range(1, 4):
        _write(directory, "weather_hourly", "push", T0 + timedelta(hours=h), T0 + timedelta(hours=h, minutes=5))
    [path] = directory.glob("writes-*.jsonl")
    lines = path.read_text().splitlines()
    bad = [json.loads(line) for line in lines]
    bad[1]["max_known_at"] = "yesterday"
    bad[2]["written_at"] = 12
    path.write_text("".join(json.dumps(r) + "\n" for r in bad))
    frame = read_write_records(None, directory=directory)
    assert frame["record_id"].tolist() == [bad[0]["record_id"]]
    assert [(s["line"], s["error"]) for s in frame.attrs["skipped"]] == [
        (2, "ValueError: max_known_at 'yesterday' is not an instant"),
        (3, "ValueError: written_at 12 is not an instant")]
