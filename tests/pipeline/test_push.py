"""Push sources on the January-February slice: the origin_recent SQL against a plain
recount, pushed online values against the offline point-in-time values (SQLite and
Redis), the TTL of pushed values, a broken source table refused with nothing written, and
training on the FeatureService chosen by configuration. (The push writer itself, against
Feast's ``store.push``: ``tests/feast_plugins/test_push_writer.py``.)"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.push_writer import PushError, push_frames, push_targets
from feast_plugins.store import feature_store
from pipeline.apply import apply, source_contracts
from pipeline.push import push_window, window_rows
from tests.conftest import copy_data_dir
from tests.feast_plugins.helpers import empty_copy, packed_rows
from training.dataset import load_events, service_features, training_set

V2 = "late_arrival_v2"
PUSHED_VIEWS = ("weather_hourly", "origin_recent")
JOIN_KEYS = ["origin", "dest", "carrier", "tailnum"]
HOUR = timedelta(hours=1)
#: The pushed stretch of the slice: a day in February, hour by hour.
START = datetime(2013, 2, 11, 5, tzinfo=timezone.utc)
HOURS = 24


@pytest.fixture
def fresh(slice_run, tmp_path, monkeypatch):
    """A private DATA_DIR of the slice with a new registry and an EMPTY online store:
    whatever is online was pushed by the test."""
    target = empty_copy(slice_run["settings"].data_dir, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(target))
    monkeypatch.delenv("PROFILE", raising=False)
    return target


def _applied_store(settings: Settings):
    apply(settings)
    return feature_store(settings)


def _same(a, b) -> bool:
    missing = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (missing(a) and missing(b)) or a == b


def test_origin_recent_sql_equals_a_plain_recount_of_departures(slice_run):
    """Each row counts the flights that actually departed in (h - 3 h, h], no later ones."""
    settings, snapshot = slice_run["settings"], slice_run["snapshot"]
    table = pd.read_parquet(settings.sources / "origin_recent.parquet")
    flights = pd.read_parquet(snapshot.table_path("flights"))
    flights = flights[flights["dep_delay"].notna()]
    departed = flights["scheduled_departure"] + pd.to_timedelta(flights["dep_delay"], unit="min")
    flights = flights.assign(departed=departed)
    hours = table["event_timestamp"]
    assert hours.max() <= snapshot.as_of and (hours == hours.dt.floor("h")).all()
    per_origin = table.groupby("origin")["event_timestamp"].agg(["min", "max", "count"])
    assert (per_origin["count"] == (per_origin["max"] - per_origin["min"]) / HOUR + 1).all(), "rows are dense"
    # Hours where a departure sits exactly on the boundary (counted at h, gone 3 h later),
    # plus a seeded sample of the rest.
    on_boundary = flights.loc[flights["departed"] == flights["departed"].dt.floor("h"), "departed"]
    rng = np.random.default_rng(3)
    sample = set(on_boundary.head(20)) | set(on_boundary.head(20) + 3 * HOUR)
    sample |= set(pd.to_datetime(rng.choice(hours.unique(), 40), utc=True))
    rows = table[table["event_timestamp"].isin(sample)]
    assert len(rows) >= 100, "the sample should cover many (origin, hour) rows"
    for row in rows.itertuples():
        window = flights[(flights["origin"] == row.origin) & (flights["departed"] > row.event_timestamp - 3 * HOUR)
                         & (flights["departed"] <= row.event_timestamp)]
        where = f"{row.origin} at {row.event_timestamp}"
        assert row.departures_3h == len(window), where
        if len(window):
            assert row.mean_dep_delay_3h == pytest.approx(window["dep_delay"].mean(), abs=1e-9), where
            assert row.delayed_share_3h == pytest.approx((window["dep_delay"] > 15).mean(), abs=1e-12), where
        else:
            assert pd.isna(row.mean_dep_delay_3h) and pd.isna(row.delayed_share_3h), where


def _assert_pushed_equals_offline(settings: Settings, use_case) -> int:
    """Push hour by hour (the first window with Feast's own ``store.push``, then
    ``push_window``); after each hour's push, the online vectors of that hour's flights
    equal their offline point-in-time values. Returns the number of values compared."""
    from feast.data_source import PushMode

    from serving.online import OnlineFeatures

    v2 = use_case.with_feature_service(V2)
    store = _applied_store(settings)
    features = [f for f in service_features(store, V2) if f.split("__")[0] in PUSHED_VIEWS]
    events = load_events(settings, v2)
    when = events["scheduled_departure"]
    sample = events[(when >= START) & (when < START + HOURS * HOUR)].reset_index(drop=True)
    offline = training_set(store, v2, sample).set_index(v2.id_column)
    online = OnlineFeatures(store, V2, features, JOIN_KEYS, "scheduled_departure")
    compared, found = 0, dict.fromkeys(features, 0)
    for i in range(HOURS):
        h = START + i * HOUR
        if i == 0:  # everything within the views' TTLs before the first hour, through Feast's push
            for target in push_targets(store, settings, v2.push_sources):
                rows = window_rows(target, h - 3 * HOUR, h).to_pandas()
                store.push(target.name, rows, to=PushMode.ONLINE)
        else:
            counts = push_window(settings, v2, store, h - HOUR, h)
            assert counts["origin_recent_push"] == 3, counts
        hour = sample[(sample["scheduled_departure"] >= h) & (sample["scheduled_departure"] < h + HOUR)]
        if hour.empty:  # no departures in the small hours
            continue
        entities = [{"origin": r.origin, "dest": r.dest, "carrier": r.carrier,
                     "tailnum": None if pd.isna(r.tailnum) else r.tailnum,
                     "scheduled_departure": r.scheduled_departure.to_pydatetime()} for r in hour.itertuples()]
        for flight_id, vector in zip(hour[v2.id_column], online.lookup(entities)):
            for feature in features:
                want, got = offline.at[flight_id, feature], vector.values[feature]
                assert _same(got, want), f"{flight_id} {feature}: online {got!r}, offline {want!r}"
                compared += 1
                found[feature] += got is not None
    flights = compared // len(features)
    # Not vacuous: hundreds of flights, and every one found its fresh origin_recent row
    # (weather has gaps and a mostly-null gust column; mean and share are null at night).
    assert flights >= 500 and found["origin_recent__departures_3h"] == flights, (flights, found)
    assert sum(found.values()) >= 0.8 * compared, found
    return compared


def test_pushed_values_equal_offline_values_sqlite(fresh, use_case):
    settings = Settings.from_env()
    assert feature_store(settings).config.online_store.type.endswith("PackedSqliteOnlineStore")
    _assert_pushed_equals_offline(settings, use_case)


def test_pushed_values_equal_offline_values_redis(fresh, use_case, redis_server, monkeypatch):
    monkeypatch.setenv("PROFILE", "redis")
    monkeypatch.setenv("REDIS_ADDRESS", redis_server.address)
    settings = Settings.from_env()
    _assert_pushed_equals_offline(settings, use_case)


def test_a_pushed_value_older_than_the_ttl_is_reported_stale(fresh, use_case):
    from serving.online import OnlineFeatures

    settings = Settings.from_env()
    store = _applied_store(settings)
    targets = push_targets(store, settings, use_case.push_sources)
    ts = pd.Timestamp("2013-02-20T15:00:00Z")
    row = pd.DataFrame({"origin": ["JFK"], "event_timestamp": [ts], "departures_3h": [12],
                        "mean_dep_delay_3h": [31.5], "delayed_share_3h": [0.25]})
    assert push_frames(store, targets, {"origin_recent_push": row}) == {"origin_recent_push": 1}
    features = [f"origin_recent__{f}" for f in ("departures_3h", "mean_dep_delay_3h", "delayed_share_3h")]
    online = OnlineFeatures(store, V2, features, JOIN_KEYS, "scheduled_departure")
    flight = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "tailnum": None}
    ttl = store.get_feature_view("origin_recent").ttl
    assert ttl == timedelta(hours=2)
    fresh_vector, stale_vector = online.lookup([
        {**flight, "scheduled_departure": (ts + ttl).to_pydatetime()},
        {**flight, "scheduled_departure": (ts + ttl + timedelta(seconds=1)).to_pydatetime()}])
    assert fresh_vector.values == dict(zip(features, [12, 31.5, 0.25])) and not fresh_vector.stale
    assert stale_vector.stale == features and all(stale_vector.values[f] is None for f in features)


def test_push_window_refuses_a_broken_source_table_and_writes_nothing(fresh, use_case):
    """A source table that breaks its views' contract: push_window refuses the window,
    naming the push source and column, and neither push source is written."""
    settings = Settings.from_env()
    store = _applied_store(settings)
    by_name = {t.name: t for t in push_targets(store, settings, use_case.push_sources)}
    assert window_rows(by_name["origin_recent_push"], START, START + HOUR).num_rows == 3
    path = by_name["origin_recent_push"].path
    pd.read_parquet(path).drop(columns="mean_dep_delay_3h").to_parquet(path, index=False)
    with pytest.raises(PushError, match="push source 'origin_recent_push': column 'mean_dep_delay_3h' is missing"):
        push_window(settings, use_case, store, START, START + HOUR)
    assert all(packed_rows(settings.data_dir, view) == [] for view in PUSHED_VIEWS), "nothing may have been pushed"


def test_training_uses_the_configured_feature_service(slice_run, tmp_path, monkeypatch):
    from cli.entry import context
    from training.errors import TrainingError
    from training.train import TrainConfig, run_training

    data_dir = copy_data_dir(slice_run["settings"].data_dir, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEATURE_SERVICE", V2)
    settings, use_case = context()
    assert use_case.feature_service == V2 and context("late_arrival_v1")[1].feature_service == "late_arrival_v1"
    store = feature_store(settings)
    config = TrainConfig(num_boost_round=10, holdout_start="2013-02-15")
    result = run_training(settings, use_case, store, config, say=lambda m: None)
    from training.registry import ModelRegistry

    meta = ModelRegistry(settings.models).metadata(result["version"])
    assert meta["feature_service"] == V2 and meta["leakage_guard"] == "passed"
    v1_features = service_features(store, "late_arrival_v1")
    assert meta["features"] == [*v1_features, "origin_recent__departures_3h", "origin_recent__mean_dep_delay_3h",
                                "origin_recent__delayed_share_3h"]
    with pytest.raises(TrainingError, match="FeatureService 'late_arrival_v9' is not in the Feast registry"):
        service_features(store, "late_arrival_v9")


def test_origin_recent_contract_takes_types_from_the_view_and_values_from_the_use_case(slice_run, use_case):
    from validation.contracts import Context, read_table
    from validation.gates import run_contracts
    from validation.report import Report

    settings, snapshot = slice_run["settings"], slice_run["snapshot"]
    contract = source_contracts(settings, use_case)["origin_recent"]
    assert contract.key == ("origin", "event_timestamp")
    assert {c: r.dtype for c, r in contract.columns.items()} == {
        "origin": "string", "event_timestamp": "timestamp", "departures_3h": "int64",
        "mean_dep_delay_3h": "float64", "delayed_share_3h": "float64"}
    frame = read_table(settings.sources / "origin_recent.parquet")
    ctx = Context(now=datetime.now(timezone.utc), as_of=snapshot.as_of)
    report = Report("features", "test")
    run_contracts(report, {"origin_recent": frame}, {"origin_recent": contract}, ctx)
    assert report.passed, report.render()
    frame.loc[frame.index[:4], "delayed_share_3h"] = 1.5
    run_contracts(report, {"origin_recent": frame}, {"origin_recent": contract}, ctx)
    failures = {(f.check, f.table, f.column, f.failed_rows) for f in report.failures}
    assert ("range", "origin_recent", "delayed_share_3h", 4) in failures, report.render()
