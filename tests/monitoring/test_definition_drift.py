"""Monitoring reports a served model whose feature definitions drifted from the applied ones."""

from __future__ import annotations

from datetime import timedelta

from core.settings import Settings
from tests.conftest import SERVE_END, copy_data_dir
from tests.monitoring.test_monitoring import monitor
from tests.serving.test_pinned import apply_weather_ttl_change
from training.registry import ModelRegistry


def test_a_champion_whose_definitions_changed_is_reported_and_alerts(served_template, tmp_path, use_case,
                                                                      monkeypatch):
    data_dir = copy_data_dir(served_template, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    at = SERVE_END + timedelta(hours=1)
    assert monitor(data_dir, use_case, at=at)["definitions"] == {}
    apply_weather_ttl_change(data_dir, tmp_path, monkeypatch, use_case)
    summary = monitor(data_dir, use_case, at=at)
    champion = ModelRegistry(Settings.from_env().models).champion()["version"]
    [entry] = summary["definitions"][champion]
    assert entry["view"] == "weather_hourly" and entry["changes"] == ["ttl"]
    [alert] = [a for a in summary["alerts"] if a["rule"] == "definition_drift"]
    assert alert["subject"] == f"{champion} weather_hourly" and "the TTL changed" in alert["message"]
