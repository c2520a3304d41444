"""PROFILE=spark: the same definitions on Spark + Redis + a SQL registry give the same
training set as DuckDB (cell for cell) and the same online vectors as SQLite."""

from __future__ import annotations

from datetime import timezone

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from pipeline.apply import apply
from pipeline.materialize import materialize
from tests.conftest import require_tool
from training.dataset import load_events, training_set

pytestmark = [pytest.mark.spark, pytest.mark.redis, pytest.mark.e2e]


@pytest.fixture(scope="session")
def spark_profile(slice_run, redis_session):
    """The slice's DATA_DIR under the spark profile: its own SQL registry, Redis online store.
    One SparkSession serves the whole test session (Feast reuses the active one). The
    environment is restored before the tests run; the store keeps its configuration."""
    require_tool("java")
    settings = slice_run["settings"]
    with pytest.MonkeyPatch.context() as mp:
        for name in ("REGISTRY_URL", "SPARK_LOCAL_IP", "SPARK_DRIVER_HOST", "PYSPARK_PYTHON"):
            mp.delenv(name, raising=False)  # let export() set them, and undo that afterwards
        mp.setenv("DATA_DIR", str(settings.data_dir))
        mp.setenv("PROFILE", "spark")
        mp.setenv("REDIS_ADDRESS", redis_session.address)
        mp.setenv("SPARK_MASTER", "local[2]")
        spark = Settings.from_env()
        apply(spark)
        materialize(spark, end=slice_run["snapshot"].as_of)
        store = feature_store(spark)
    return {"settings": spark, "store": store}


@pytest.fixture(scope="session")
def embedded_store(slice_run):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(slice_run["settings"].data_dir))
        mp.setenv("PROFILE", "embedded")
        return feature_store(slice_run["settings"])


def test_profile_selects_spark_sources_redis_and_sql_registry(spark_profile):
    store = spark_profile["store"]
    assert store.config.offline_store.type == "spark"
    assert store.config.online_store.type == "redis"
    assert store.config.registry.registry_type == "sql"
    sources = {fv.name: type(fv.batch_source).__name__ for fv in store.list_feature_views()}
    assert set(sources.values()) == {"SparkSource"}, sources


def test_spark_training_set_equals_duckdb_cell_for_cell(spark_profile, embedded_store, slice_run, use_case):
    events = load_events(slice_run["settings"], use_case)
    events = events[events["event_timestamp"] >= pd.Timestamp("2013-02-20", tz="UTC")]
    duck = training_set(embedded_store, use_case, events)
    spark = training_set(spark_profile["store"], use_case, events)[duck.columns]
    assert len(duck) == len(events) > 5000
    pd.testing.assert_frame_equal(duck, spark, check_dtype=True, check_exact=True)


def test_redis_serves_the_same_vectors_as_sqlite(spark_profile, embedded_store, slice_run, use_case, monkeypatch):
    as_of = slice_run["snapshot"].as_of
    monkeypatch.setenv("DATA_DIR", str(slice_run["settings"].data_dir))
    monkeypatch.setenv("PROFILE", "embedded")
    materialize(slice_run["settings"], end=as_of)  # SQLite up to the same instant
    events = load_events(slice_run["settings"], use_case)
    sample = events.drop_duplicates(["origin", "dest", "carrier", "tailnum"]).head(300)
    rows = [{"origin": r.origin, "dest": r.dest, "carrier": r.carrier,
             "tailnum": r.tailnum if isinstance(r.tailnum, str) else "",
             "scheduled_departure": as_of.astimezone(timezone.utc)} for r in sample.itertuples()]

    def vectors(store):
        service = store.get_feature_service(use_case.feature_service)
        return store.get_online_features(features=service, entity_rows=rows, full_feature_names=True) \
            .to_dict(include_event_timestamps=True)

    sqlite, redis = vectors(embedded_store), vectors(spark_profile["store"])
    assert sqlite.keys() == redis.keys()
    present = sum(v is not None for k, col in sqlite.items() if not k.endswith("__ts") for v in col)
    assert present > 1000, "too few present values for the comparison to mean anything"
    for key in sqlite:
        assert sqlite[key] == redis[key], f"{key} differs between SQLite and Redis"
