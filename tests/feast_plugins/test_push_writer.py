"""The push writer (``feast_plugins.push_writer``) stores exactly what Feast's own
``store.push(..., to=PushMode.ONLINE)`` stores, and refuses bad rows naming the push source
and column, writing nothing. (Moved here from ``tests/pipeline/test_push.py``, which keeps
the tests of the hourly push stage.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.push_writer import PushError, push_frames, push_targets
from feast_plugins.store import clear_online, feature_store
from pipeline.apply import apply
from tests.feast_plugins.helpers import empty_copy, packed_rows

PUSHED_VIEWS = ("weather_hourly", "origin_recent")
START = datetime(2013, 2, 11, 5, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


@pytest.fixture
def applied(slice_run, tmp_path, monkeypatch):
    """(Settings, FeatureStore) of a private copy of the slice, applied, its online store empty."""
    target = empty_copy(slice_run["settings"].data_dir, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(target))
    monkeypatch.delenv("PROFILE", raising=False)
    settings = Settings.from_env()
    apply(settings)
    return settings, feature_store(settings)


def rows_between(target, start: datetime, end: datetime) -> pd.DataFrame:
    """The push source's table rows with event time in ``(start, end]``."""
    table = pd.read_parquet(target.path)
    when = table[target.timestamp_field]
    return table[(when > start) & (when <= end)].reset_index(drop=True)


def test_push_frames_writes_what_feast_push_writes(applied, use_case):
    from feast.data_source import PushMode

    settings, store = applied
    targets = push_targets(store, settings, use_case.push_sources)
    frames = {t.name: rows_between(t, START, START + 2 * HOUR) for t in targets}
    for name, frame in frames.items():
        store.push(name, frame, to=PushMode.ONLINE)
    by_feast = {view: packed_rows(settings.data_dir, view) for view in PUSHED_VIEWS}
    clear_online(store, [view for view in store.list_feature_views() if view.name in PUSHED_VIEWS])
    assert all(packed_rows(settings.data_dir, view) == [] for view in PUSHED_VIEWS)
    assert push_frames(store, targets, frames) == {"weather_hourly_push": 6, "origin_recent_push": 6}
    assert {view: packed_rows(settings.data_dir, view) for view in PUSHED_VIEWS} == by_feast
    assert all(len(rows) == 3 for rows in by_feast.values()), "one row per origin, the newest hour"


def test_bad_rows_fail_naming_push_source_and_column_and_write_nothing(applied, use_case):
    settings, store = applied
    targets = push_targets(store, settings, use_case.push_sources)
    by_name = {t.name: t for t in targets}
    weather = rows_between(by_name["weather_hourly_push"], START, START + HOUR)
    good = rows_between(by_name["origin_recent_push"], START, START + HOUR)
    assert len(weather) == 3 and len(good) == 3
    bad_frames = [
        (good.drop(columns="delayed_share_3h"), "'delayed_share_3h' is missing"),
        (good.astype({"departures_3h": "float64"}), "'departures_3h' has type double, expected int64"),
        (good.assign(origin=[None, "JFK", "LGA"]), "'origin' has 1 null value"),
        (good.assign(event_timestamp=good["event_timestamp"].dt.tz_localize(None)), "'event_timestamp' has type"),
    ]
    for frame, message in bad_frames:
        with pytest.raises(PushError, match="push source 'origin_recent_push'") as info:
            push_frames(store, targets, {"weather_hourly_push": weather, "origin_recent_push": frame})
        assert message in str(info.value), str(info.value)
    with pytest.raises(PushError, match=r"push source\(s\) \['nope'\] are not among"):
        push_frames(store, targets, {"nope": good})
    assert all(packed_rows(settings.data_dir, view) == [] for view in PUSHED_VIEWS), "nothing may have been pushed"
