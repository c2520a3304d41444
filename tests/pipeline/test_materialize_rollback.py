"""Materializing to an earlier instant than the store holds leaves nothing newer online,
on SQLite and on Redis (which otherwise skips writes older than what it holds)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from pipeline.apply import apply
from pipeline.materialize import EPOCH, materialize
from tests.conftest import copy_data_dir


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def test_rollback_leaves_no_value_from_after_the_end(slice_run, tmp_path, monkeypatch, request, profile):
    data_dir = copy_data_dir(slice_run["settings"].data_dir, tmp_path / "data")
    for name in ("online_store.db", "registry.db", "registry.redis.db"):
        (data_dir / name).unlink(missing_ok=True)
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("PROFILE", profile)
    if profile == "redis":
        monkeypatch.setenv("REDIS_ADDRESS", request.getfixturevalue("redis_server").address)
    settings = Settings.from_env()
    apply(settings)
    late = slice_run["snapshot"].as_of
    early = (late - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)

    def newest_weather_ts() -> int:
        store = feature_store(settings)
        online = store.get_online_features(features=["weather_hourly:temp"], entity_rows=[{"origin": "JFK"}])
        return online.to_dict(include_event_timestamps=True)["temp__ts"][0]

    materialize(settings, end=late, start=EPOCH)
    assert newest_weather_ts() == int(late.timestamp())
    materialize(settings, end=early)
    assert newest_weather_ts() == int(early.timestamp()), "a value from after the new end stayed online"
