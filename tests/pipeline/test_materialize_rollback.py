"""Materializing to an earlier instant than the store holds leaves nothing newer online,
on SQLite and on Redis (which otherwise skips writes older than what it holds)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from feast_plugins.store import feature_store
from pipeline.materialize import EPOCH, materialize


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def test_rollback_leaves_no_value_from_after_the_end(slice_run, applied_copy, profile):
    settings = applied_copy(profile)
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
