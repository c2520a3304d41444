"""Windowed views through the project's Spark store (``feast_plugins/spark_windows.py``):
every value against the brute-force reference of the windows contract, on the scenarios of
the DuckDB store's suite (``test_windowed_offline.py``: window and tile edges, late and
out-of-order events, duplicates, null keys, instants and values), and the whole frame
(event times for the leakage guard included) equal to the DuckDB store's."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from feast_plugins.windows import window_specs
from tests.conftest import require_tool
from tests.feast_plugins.test_spark_offline_store import SPARK_CONF
from tests.feast_plugins.test_windowed_offline import (
    _aggregations,
    _assert_reference,
    _at,
    _build_repo,
    _entity_frame,
    _refs,
    _sfv,
    _write_events,
    scenarios,
)
from tests.feast_plugins.windows_reference import Event

pytestmark = [pytest.mark.spark]

SPARK_WINDOWS = settings(max_examples=4, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _write_spark_events(root: Path, events, tz: str = "UTC") -> None:
    """The DuckDB suite's events file with its instants in microseconds (Spark does not
    read Parquet's nanosecond timestamps)."""
    _write_events(root, events, tz)
    frame = pd.read_parquet(root / "events.parquet")
    for column in ("event_timestamp", "known_at"):
        frame[column] = frame[column].astype(f"datetime64[us, {tz}]")
    frame.to_parquet(root / "events.parquet", index=False)


@pytest.fixture(scope="module")
def spark_windows(tmp_path_factory):
    require_tool("java")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from feast import Entity, FeatureStore, PushSource, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.repo_config import RepoConfig

    root = tmp_path_factory.mktemp("spark_win_repo")
    staging = tmp_path_factory.mktemp("spark_win_staging")
    k = Entity(name="k", join_keys=["k"], value_type=ValueType.STRING)
    j = Entity(name="j", join_keys=["j"], value_type=ValueType.STRING)
    source = SparkSource(name="events_src", path=str(root / "events.parquet"), file_format="parquet",
                         timestamp_field="event_timestamp")
    push = PushSource(name="events_push", batch_source=source)
    one, two = _aggregations()
    views = [_sfv("wk", [k], push, one), _sfv("wkj", [k, j], push, two)]
    config = RepoConfig(project="win", provider="local", registry=str(root / "registry.db"),
                        online_store={"type": "sqlite", "path": str(root / "online.db")},
                        offline_store={"type": "feast_plugins.spark_offline_store.SparkPitOfflineStore",
                                       "spark_conf": SPARK_CONF, "staging_location": str(staging)},
                        entity_key_serialization_version=3, repo_path=str(root))
    store = FeatureStore(repo_path=str(root), config=config)
    _write_spark_events(root, [])
    with warnings.catch_warnings():  # Feast: stream feature views are experimental
        warnings.simplefilter("ignore", RuntimeWarning)
        store.apply([k, j, push, *views])
    specs = {v.name: window_specs(store.get_stream_feature_view(v.name)) for v in views}
    return root, store, specs, staging


@SPARK_WINDOWS
@given(scenario=scenarios(), full_names=st.booleans(), form=st.sampled_from(["pandas", "parquet"]))
def test_every_value_equals_the_brute_force_reference(spark_windows, tmp_path, scenario, full_names, form):
    from feast_plugins.spark_offline_store import SparkPitRetrievalJob

    root, store, specs, staging = spark_windows
    events, rows, tz = scenario
    _write_spark_events(root, events, tz)
    frame = _entity_frame(rows, tz)
    entity_set = frame
    if form == "parquet":
        entity_set = str(tmp_path / "entities.parquet")
        frame.assign(event_timestamp=frame["event_timestamp"].astype(f"datetime64[us, {tz}]")) \
            .to_parquet(entity_set, index=False)
    job = store.get_historical_features(entity_df=entity_set, features=_refs(specs), full_feature_names=full_names)
    assert isinstance(job, SparkPitRetrievalJob), "not the store under test"
    _assert_reference(job.to_df(), specs, events, rows, full_names)
    arrow = job.to_arrow()
    for view, view_specs in specs.items():
        for spec in view_specs:
            column = f"{view}__{spec.name}" if full_names else spec.name
            assert str(arrow.schema.field(column).type) == ("int64" if spec.function == "count" else "double")
    assert not any(staging.iterdir()), "staging files left behind"


def test_the_frame_equals_the_duckdb_stores(spark_windows, tmp_path):
    """One scenario with every edge by hand: the whole frame, with the leakage guard's event
    times, equals the DuckDB store's (same names, dtypes, order, values)."""
    root, store, specs, _ = spark_windows
    duck_store, _ = _build_repo(tmp_path)
    e = lambda key, s, v, et=None: Event(key, _at(et if et is not None else s), _at(s), {"v": v, "w": v})  # noqa: E731
    xp, yq = {"k": "x", "j": "p"}, {"k": "y", "j": "q"}
    events = [e(xp, 0, 1.0), e(xp, 60, 3.0, et=0), e(xp, 60, 2.0, et=30), e(xp, 61, None), e(yq, 30, 4.5),
              e(yq, -86400, 2.5), e(yq, 90, -1.0), e({"k": None, "j": "p"}, 30, 9.0)]
    _write_spark_events(root, events)
    _write_events(tmp_path, events)
    rows = [{"row_id": f"r{i}", "k": k, "j": j, "event_timestamp": _at(s)}
            for i, (k, j, s) in enumerate([("x", "p", -1), ("x", "p", 0), ("x", "p", 60), ("x", "p", 121),
                                           ("y", "q", 90), ("y", "q", 0), ("w", "p", 60), (None, "p", 60),
                                           ("x", None, 60), ("x", "p", 60)])]
    frame = _entity_frame(rows, "America/New_York")
    jobs = [s.get_historical_features(entity_df=frame, features=_refs(specs), full_feature_names=True)
            for s in (store, duck_store)]
    for job in jobs:
        job.include_event_timestamps = True
    ours, theirs = (job.to_df() for job in jobs)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert ours.filter(like="__event_timestamp__").notna().any(axis=None), "vacuous: no event time"
    # Non-null values known in (t - 1 day, t]: at 121 the null one (61) does not count; at
    # y's 0 the event known a day earlier (-86400) is just outside.
    assert ours["wk__n_1d"].tolist()[:6] == [0, 1, 3, 3, 2, 0]


def test_a_bad_events_table_is_refused_naming_source_and_column(spark_windows):
    root, store, _, _ = spark_windows
    _write_spark_events(root, [Event({"k": "x", "j": "p"}, _at(0), _at(0), {"v": 1.0, "w": 1.0})])
    pd.read_parquet(root / "events.parquet").drop(columns=["known_at"]).to_parquet(root / "events.parquet")
    rows = _entity_frame([{"row_id": "r0", "k": "x", "j": "p", "event_timestamp": _at(0)}], "UTC")
    with pytest.raises(ValueError, match="events source 'events_src'.*no 'known_at' column"):
        store.get_historical_features(entity_df=rows, features=["wk:n_1m"]).to_df()
