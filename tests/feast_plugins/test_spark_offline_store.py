"""The project's Spark offline store against the brute-force point-in-time join of the ASOF
store's property suite, and against the ASOF (DuckDB) store frame for frame.

The same five views (one key, two keys, none, a TTL mixing days and seconds, an on-demand
view) as ``test_asof_offline_store.py``, over ``SparkSource``s reading the same kind of
Parquet files; one local Spark session (2 cores, a 4 GiB driver heap at most) serves the
module, since starting the JVM is the slow part. Fewer hypothesis examples than the ASOF
suite: each one runs five Spark jobs.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import require_tool
from tests.feast_plugins.test_asof_offline_store import (
    ENTITYLESS_ROWS,
    FEATURE_REFS,
    VIEWS,
    _assert_matches_reference,
    _entity_frame,
    _entityless_entities,
    _ts,
    scenarios,
)
from tests.feast_plugins.test_asof_offline_store import _write_sources as _write_ns_sources

pytestmark = [pytest.mark.spark]

#: The test session's Spark: what feature_store.spark.yaml sets, on 2 local cores.
SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.driver.memory": "4g",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
}

SPARK_PROFILE = settings(max_examples=4, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _write_sources(root: Path, rows: dict[str, list[dict]], tz: str = "UTC") -> None:
    """The ASOF suite's files, their timestamps in microseconds: Spark does not read
    Parquet's nanosecond timestamps (the pipeline's DuckDB-written sources are in microseconds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_ns_sources(root, rows, tz)
    for name in VIEWS:
        table = pq.read_table(root / f"{name}.parquet")
        schema = pa.schema([f.with_type(pa.timestamp("us", tz=f.type.tz)) if pa.types.is_timestamp(f.type) else f
                            for f in table.schema])
        pq.write_table(table.cast(schema), root / f"{name}.parquet")


def _build_spark_repo(root: Path, offline_store: dict):
    """The ASOF suite's repository with SparkSources over the same files."""
    from feast import Entity, FeatureStore, FeatureView, Field, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    entities = {k: Entity(name=k, join_keys=[k], value_type=ValueType.STRING) for k in ("k", "j")}
    views = []
    for name, (keys, ttl, created, features, _) in VIEWS.items():
        source = SparkSource(name=f"{name}_src", path=str(root / f"{name}.parquet"), file_format="parquet",
                             timestamp_field="ts", created_timestamp_column="created" if created else "")
        schema = [Field(name=f, dtype=Int64 if f == "a1" else Float64) for f in features]
        views.append(FeatureView(name=name, entities=[entities[k] for k in keys], ttl=ttl,
                                 schema=schema, source=source, online=False))

    @on_demand_feature_view(sources=[views[0]], schema=[Field(name="a1_plus", dtype=Float64)], mode="pandas")
    def a_odfv(inputs: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"a1_plus": inputs["a1"].astype("float64") + 0.5}, index=inputs.index)

    config = RepoConfig(project="pit", provider="local", registry=str(root / "registry.db"),
                        online_store={"type": "sqlite", "path": str(root / "online.db")},
                        offline_store=offline_store, entity_key_serialization_version=3,
                        repo_path=str(root))
    store = FeatureStore(repo_path=str(root), config=config)
    _write_sources(root, {name: [] for name in VIEWS})
    store.apply([*entities.values(), *views, a_odfv])
    return store


@pytest.fixture(scope="module")
def spark_repo(tmp_path_factory):
    require_tool("java")
    # The in-task lookups run in Spark's Python workers: this interpreter (pyarrow, the
    # project), as core/settings.py sets it for the spark profile.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = tmp_path_factory.mktemp("spark_pit_repo")
    staging = tmp_path_factory.mktemp("spark_pit_staging")
    store = _build_spark_repo(root, {"type": "feast_plugins.spark_offline_store.SparkPitOfflineStore",
                                     "spark_conf": SPARK_CONF, "staging_location": str(staging)})
    return root, store, staging


@pytest.fixture(scope="module")
def asof_store(spark_repo):
    """The ASOF DuckDB store over the same files (its own registry of FileSources)."""
    from tests.feast_plugins.test_asof_offline_store import _build_repo

    root, _, _ = spark_repo
    duck_root = root / "duck"
    duck_root.mkdir()
    store = _build_repo(duck_root, {"type": "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"})
    return duck_root, store


def _entity_set(frame: pd.DataFrame, form: str, root: Path):
    if form == "pandas":
        return frame
    path = root / "entities.parquet"
    frame.assign(event_timestamp=frame["event_timestamp"].astype("datetime64[us, UTC]")).to_parquet(path, index=False)
    return str(path) if form == "parquet" else f"SELECT * FROM parquet.`{path}`"


@SPARK_PROFILE
@given(scenario=scenarios(), full_names=st.booleans(), form=st.sampled_from(["pandas", "pandas", "parquet", "sql"]),
       broadcast_rows=st.sampled_from([None, 3, 10**9]))
def test_every_cell_equals_the_brute_force_reference(spark_repo, scenario, full_names, form, broadcast_rows):
    """``broadcast_rows``: every view by the sorted window (None), every view looked up in
    each task (10**9), or the views split between the two by their row counts (3)."""
    from feast_plugins.spark_offline_store import SparkPitRetrievalJob

    root, store, staging = spark_repo
    rows, entities, tz_in, tz_src = scenario
    store.config.offline_store.broadcast_rows = broadcast_rows
    _write_sources(root, rows, tz_src)
    job = store.get_historical_features(entity_df=_entity_set(_entity_frame(entities, tz_in), form, root),
                                        features=FEATURE_REFS, full_feature_names=full_names)
    assert isinstance(job, SparkPitRetrievalJob), "not the store under test"
    _assert_matches_reference(job.to_df(), entities, rows, full_names)
    assert not any(staging.iterdir()), "staging files left behind"


@pytest.mark.parametrize(("form", "full_names", "broadcast_rows"),
                         [("pandas", False, None), ("sql", True, 10**9)])
def test_the_frame_equals_the_asof_stores(spark_repo, asof_store, full_names, form, broadcast_rows):
    """Tie-free rows (a keyed view, views without entities, the TTL boundaries): the whole
    frame (values, dtypes, names, order, event times for the leakage guard) equals DuckDB's,
    by the sorted window (``broadcast_rows`` None) and by the lookups in each task."""
    root, store, _ = spark_repo
    store.config.offline_store.broadcast_rows = broadcast_rows
    duck_root, duck = asof_store
    rows = {**ENTITYLESS_ROWS,
            "b": [{"k": "x", "j": "p", "ts": _ts(0, 1), "b1": 3.25}, {"k": "y", "j": "q", "ts": _ts(0, 25), "b1": 1.5}],
            "c": [{"k": "x", "ts": _ts(-1, 9), "c1": 4.25}, {"k": "y", "ts": _ts(-1, 40), "c1": -2.75}]}
    _write_sources(root, rows, "Europe/Berlin")
    _write_sources(duck_root, rows, "Europe/Berlin")
    frame = _entityless_entities()
    jobs = [s.get_historical_features(entity_df=_entity_set(frame, form, root) if s is store else frame,
                                      features=FEATURE_REFS, full_feature_names=full_names) for s in (store, duck)]
    for job in jobs:
        job.include_event_timestamps = True
    ours, theirs = (job.to_df() for job in jobs)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert ours.filter(like="__event_timestamp__").notna().any(axis=None), "vacuous: no event time"
    assert ours.filter(like="c1").notna().any(axis=None), "vacuous: c's TTL of 1 day 5 s never met"


def test_bad_entity_sets_fail_naming_the_problem(spark_repo):
    _, store, _ = spark_repo
    with pytest.raises(ValueError, match="lacks join key column"):
        store.get_historical_features(
            entity_df="SELECT 'x' AS k, TIMESTAMP '2024-03-10 12:00:00' AS event_timestamp", features=FEATURE_REFS)
    with pytest.raises(ValueError, match="missing.parquet"):
        store.get_historical_features(entity_df="/nonexistent/missing.parquet", features=FEATURE_REFS)
    with pytest.raises(ValueError, match="event timestamp column"):
        store.get_historical_features(entity_df=pd.DataFrame({"k": ["x"], "j": ["p"]}), features=["a:a1"])
    null_ts = store.get_historical_features(
        entity_df="SELECT 'r0' AS row_id, 'x' AS k, 'p' AS j, CAST(NULL AS TIMESTAMP) AS event_timestamp",
        features=FEATURE_REFS).to_df()
    assert len(null_ts) == 1 and null_ts[["a1", "b1", "c1"]].isna().all(axis=None), \
        "a row without a timestamp must be kept, with no features"


def test_a_source_without_a_feature_column_is_named(spark_repo):
    root, store, _ = spark_repo
    _write_sources(root, {})
    pd.DataFrame({"k": pd.Series([], dtype="string"), "ts": pd.Series([], dtype="datetime64[us, UTC]"),
                  "created": pd.Series([], dtype="datetime64[us, UTC]"), "a1": pd.Series([], dtype="int64")}) \
        .to_parquet(root / "a.parquet")
    frame = _entityless_entities()
    with pytest.raises(ValueError, match=r"feature view 'a'.*lacks column\(s\) \['a2'\]"):
        store.get_historical_features(entity_df=frame, features=["a:a1", "a:a2"]).to_df()


def test_what_it_does_not_plan_goes_to_the_stock_store(spark_repo, monkeypatch):
    """filter_by_created_timestamp (on a view with a created column) is stock's: the call is
    handed, unchanged, to the stock store (with the pandas frame staged as Parquet)."""
    from feast_plugins import spark_offline_store

    calls = []
    monkeypatch.setattr(spark_offline_store.StagedEntitySparkOfflineStore, "get_historical_features",
                        staticmethod(lambda *args, **kwargs: calls.append((args, kwargs)) or "stock job"))
    _, store, _ = spark_repo
    frame = _entityless_entities()
    assert store.get_historical_features(entity_df=frame, features=["a:a1"],
                                         filter_by_created_timestamp=True) == "stock job"
    (args, kwargs), = calls
    assert args[3].equals(frame) and kwargs["filter_by_created_timestamp"] is True
    assert [fv.name for fv in args[1]] == ["a"] and args[2] == ["a:a1"]
    job = store.get_historical_features(entity_df=frame, features=["a:a1"])
    assert type(job).__name__ == "SparkPitRetrievalJob" and len(calls) == 1, "planned here, not by stock"


def test_to_parquet_to_spark_df_and_persist_write_the_joined_rows(spark_repo, tmp_path):
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    root, store, staging = spark_repo
    _write_sources(root, {"a": [{"k": "x", "ts": _ts(0, 5), "created": _ts(0, 100), "a1": 1, "a2": 2.25}]})
    frame = _entity_frame([{"row_id": f"r{i}", "k": "x", "j": "p", "event_timestamp": _ts(0, s)}
                           for i, s in enumerate([3, 8, 30])], "UTC")
    job = store.get_historical_features(entity_df=frame, features=["a:a1", "a:a2", "b:b1", "c:c1"])
    written = pd.read_parquet(job.to_parquet(tmp_path / "out.parquet"))
    assert written["a1"].isna().tolist() == [True, False, True], "before the row, in TTL, past TTL"
    spark_frame = job.to_spark_df()
    assert len(list(staging.iterdir())) == 1, "to_spark_df reads a staged file"
    from_spark = spark_frame.toPandas()  # timestamps as naive UTC (the session's time zone)
    from_spark["event_timestamp"] = from_spark["event_timestamp"].dt.tz_localize("UTC")
    pd.testing.assert_frame_equal(from_spark, written, check_dtype=False)
    del job, spark_frame
    gc.collect()
    assert not list(staging.iterdir()), "the staged result outlived its job"
    with_odfv = store.get_historical_features(entity_df=frame, features=FEATURE_REFS)
    with_odfv.persist(SavedDatasetFileStorage(path=str(tmp_path / "saved.parquet")))
    saved = pd.read_parquet(tmp_path / "saved.parquet")
    pd.testing.assert_frame_equal(saved[written.columns], written)
    assert saved["a1_plus"].tolist()[1] == 1.5, "the on-demand view runs before persisting"
