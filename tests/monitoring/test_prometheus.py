"""Prometheus for real: the shipped alert rules (monitoring/prometheus/) pass promtool's
checks and unit tests, and a real Prometheus server loading them unchanged scrapes a real
gunicorn server, returns the platform's series from its query API, and fires an alert.

Which alert fires here: ChampionRefused (a corrupt model promoted). Its shipped ``for`` is
0m because a refusal is a settled state, not a noisy measurement; the other alerts keep
realistic ``for`` durations (minutes), so within a bounded test they can only be seen
pending, which StaleFeaturesServed is (materialization stopped at SERVE_END, traffic hours
later). Their firing after the ``for`` is covered by ``promtool test rules`` on
alerts_test.yml, in simulated time.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from core.settings import REPO_ROOT, Settings
from serving.metrics import LATENCY_BUCKETS
from serving.process import free_port, gunicorn_argv, stop_process, wait_ready
from tests.conftest import SERVE_END, require_tool
from tests.serving.helpers import request_body
from tests.serving.test_gunicorn import gunicorn_env, http
from tests.serving.test_hot_swap import write_champion
from tests.serving.test_resilience_model import corrupt_model
from training.dataset import load_events
from training.registry import ModelRegistry

pytestmark = pytest.mark.monitoring

RULES_DIR = REPO_ROOT / "monitoring" / "prometheus"
ALERTS = RULES_DIR / "alerts.yml"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_shipped_rules_config_and_rule_unit_tests():
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml"),
                 ("test", "rules", "alerts_test.yml")):
        result = promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_promtool_refuses_a_broken_rule_and_a_changed_for(tmp_path):
    """The checks above can fail: a rule with a bad expression is refused naming the file,
    and the unit tests notice an alert that would wait longer before firing."""
    text = ALERTS.read_text()
    broken = tmp_path / "alerts.yml"
    broken.write_text(text.replace("expr: max(serving_champion_refused) == 1", "expr: max(serving_champion_refused ==",
                                   1))
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0 and "alerts.yml" in result.stdout + result.stderr, result.stdout + result.stderr

    shutil.copy(RULES_DIR / "alerts_test.yml", tmp_path / "alerts_test.yml")
    champion = re.compile(r"(- alert: ChampionRefused\n(?:.*\n)*?\s+for: )0m")
    assert champion.search(text), "ChampionRefused is expected with `for: 0m`"
    broken.write_text(champion.sub(r"\g<1>5m", text, count=1))
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "ChampionRefused" in result.stdout + result.stderr, result.stdout


def test_the_counters_alerts_watch_with_increase_start_at_zero():
    """``increase()`` needs a sample before the first event: the model-swap and feature-log
    drop counters are exported at 0 for every label value before anything happened."""
    from prometheus_client.parser import text_string_to_metric_families

    from serving.metrics import LOG_DROP_REASONS, MODEL_SWAP_RESULTS, Metrics

    text = Metrics().exposition()[0].decode()
    exported = {(s.name, tuple(s.labels.items())) for f in text_string_to_metric_families(text) for s in f.samples}
    expected = {("serving_model_swaps_total", (("result", r),)) for r in MODEL_SWAP_RESULTS} | \
        {("serving_feature_log_dropped_rows_total", (("reason", r),)) for r in LOG_DROP_REASONS}
    assert expected <= exported, f"not exported: {sorted(expected - exported)}"


class Prometheus:
    """A real ``prometheus`` process on a free loopback port, data in a temporary directory,
    scraping and evaluating every second."""

    def __init__(self, directory: Path, target: str):
        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],  # the shipped file, as is
            "scrape_configs": [{"job_name": "feature-platform", "scrape_timeout": "1s",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = directory / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [require_tool("prometheus"), f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.directory / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT)
        self.wait(lambda: self._get("/-/ready") is not None, 30, "Prometheus ready")
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def _get(self, path: str, **params) -> dict | None:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read()
        except OSError:
            return None
        return json.loads(body) if path.startswith("/api/") else {}

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` evaluates to now ([] if none, or no answer)."""
        answer = self._get("/api/v1/query", query=expr)
        return [] if answer is None else answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def alerts(self) -> list[dict]:
        answer = self._get("/api/v1/alerts")
        return [] if answer is None else answer["data"]["alerts"]

    def alert(self, name: str, state: str) -> list[dict]:
        return [a for a in self.alerts() if a["labels"]["alertname"] == name and a["state"] == state]

    def wait(self, condition, timeout: float, what):
        """Poll ``condition()`` until truthy (returned); fail naming ``what`` (or what
        ``what()`` says then) and the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            result = condition()
            if result:
                return result
            time.sleep(0.25)
        pytest.fail(f"not within {timeout:.0f}s: {what() if callable(what) else what}; prometheus log:\n{self.log.read_text()[-2000:]}")


def seconds(duration: str) -> int:
    """A Prometheus duration of one unit (``0m``, ``15m``, ``2h``) in seconds."""
    number, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]


def flights_departing(data_dir, use_case, starts, n: int) -> list:
    """For each instant of ``starts``, ``n`` flights departing in the hour from it."""
    events = load_events(Settings.from_env({"DATA_DIR": str(data_dir)}), use_case)
    when = events["scheduled_departure"]
    out = []
    for start in starts:
        hour = events[(when >= start) & (when < start + timedelta(hours=1))]
        assert len(hour) >= n, f"expected {n} flights departing from {start}, got {len(hour)}"
        out.append(hour.sort_values([use_case.id_column]).head(n))
    return out


def test_prometheus_scrapes_the_server_and_fires_the_refused_champion_alert(served_dir, use_case, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "gunicorn.log"
    with server_log.open("wb") as log:
        # One worker boots in half the CPU time; /metrics adding up several workers is
        # tests/serving/test_gunicorn.py's (the multiprocess mode is the same with one).
        server = subprocess.Popen(gunicorn_argv(), env=gunicorn_env(served_dir, port, WEB_CONCURRENCY=1),
                                  stdout=log, stderr=subprocess.STDOUT)
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
    try:
        # Materialization stopped at SERVE_END: flights twelve hours later (the next morning in
        # New York) get weather older than its TTL. (Read while the server boots.)
        fresh, late = map(request_body, flights_departing(served_dir, use_case,
                                                          (SERVE_END, SERVE_END + timedelta(hours=12)), 4))
        try:
            wait_ready(base, server, timeout=120)
        except SystemExit as e:
            pytest.fail(f"{e}: {server_log.read_text()[-2000:]}")
        prometheus.start()
        loaded = prometheus._get("/api/v1/rules")["data"]["groups"]
        shipped = yaml.safe_load(ALERTS.read_text())["groups"]
        assert [(g["file"], [(r["name"], r["duration"]) for r in g["rules"]]) for g in loaded] == \
            [(str(ALERTS), [(r["alert"], seconds(r["for"])) for r in g["rules"]]) for g in shipped], \
            "the shipped rules, all loaded, with their `for`"
        prometheus.wait(lambda: prometheus.value('up{job="feature-platform"}') == 1, 20, "a first scrape")

        # Served in rounds a scrape apart, so rates see the counters grow.
        rounds = 6
        for _ in range(rounds):
            assert http("POST", f"{base}/predict", fresh)[0] == 200
            assert http("POST", f"{base}/predict", late)[0] == 200
            time.sleep(0.6)
        assert http("POST", f"{base}/predict", {"flights": "none"})[0] == 400

        expected = {
            'sum(serving_request_duration_seconds_count{endpoint="/predict"})': 2 * rounds + 1,
            'count(serving_request_duration_seconds_bucket{endpoint="/predict"})': len(LATENCY_BUCKETS) + 1,
            'sum(serving_requests_total{endpoint="/predict",status="200"})': 2 * rounds,
            'sum(serving_requests_total{endpoint="/predict",status="400"})': 1,
            'sum(serving_entities_total{endpoint="/predict"})': 8 * rounds,
            'sum(serving_stale_features_total{feature="weather_hourly__temp"})': 4 * rounds,
            'sum(serving_model_swaps_total{result="refused"})': 0,
        }
        prometheus.wait(lambda: all(prometheus.value(q) == v for q, v in expected.items()), 20,
                        lambda: "the platform's series in Prometheus (query: (got, expected)): "
                        + str({q: (prometheus.value(q), v) for q, v in expected.items()}))
        # The stale-weather rule matches the server's real series; it waits its 15 minutes.
        pending = prometheus.wait(lambda: prometheus.alert("StaleFeaturesServed", "pending"), 20,
                                  "StaleFeaturesServed pending")
        assert "weather_hourly" in {a["labels"]["view"] for a in pending}, pending
        assert not prometheus.alert("ChampionRefused", "firing")

        # A corrupt model is promoted: the workers refuse it, and the alert fires.
        registry = ModelRegistry(served_dir / "models")
        write_champion(registry, corrupt_model(registry, registry.champion()["version"], "corrupt"))
        [firing] = prometheus.wait(lambda: prometheus.alert("ChampionRefused", "firing"), 30,
                                   "ChampionRefused firing")
        assert firing["labels"]["severity"] == "page", firing
        assert prometheus.value('sum(serving_model_swaps_total{result="refused"})') >= 1
        assert http("POST", f"{base}/predict", fresh)[0] == 200, "the model it had keeps serving"
    finally:
        prometheus.stop()
        stop_process(server)
