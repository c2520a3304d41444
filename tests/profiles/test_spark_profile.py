"""PROFILE=spark against the local cluster (core/cluster.py: a Spark standalone master and
two workers, PostgreSQL as the SQL registry, redis-server as the online store): the same
definitions give the same training set as DuckDB (cell for cell), Redis filled from the
cluster serves the same vectors as SQLite, and the server on this profile answers what the
offline join says."""

from __future__ import annotations

import gc
import json
import math
import urllib.request
from datetime import timezone

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from pipeline.apply import apply
from pipeline.materialize import EPOCH, materialize
from tests.conftest import copy_data_dir
from training.dataset import load_events, training_set

pytestmark = [pytest.mark.spark, pytest.mark.redis, pytest.mark.e2e]

#: A weekday inside the slice model's holdout window (as in tests/test_e2e.py).
HELD_OUT_DAY = "2013-02-27"


def held_out_hour(settings, use_case) -> pd.DataFrame:
    """The flights of the busiest UTC hour of HELD_OUT_DAY. Within one hour every flight
    sees the same source rows (weather is hourly, the aggregates daily), so an online store
    materialized up to the hour's first departure holds what the offline join finds for
    each of them."""
    events = load_events(settings, use_case)
    local_day = events["scheduled_departure"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d")
    day = events[local_day == HELD_OUT_DAY]
    hour = day["scheduled_departure"].dt.floor("h")
    busiest = hour.value_counts().idxmax()
    return day[hour == busiest].sort_values("scheduled_departure").reset_index(drop=True)


def _restart_spark_elsewhere(master: str) -> None:
    """A Spark session another test left running on another master (Feast reuses the
    active one) is stopped, so this module's session is the cluster's."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and active.sparkContext.master != master:
        active.stop()


@pytest.fixture(scope="session")
def spark_profile(slice_run, cluster, use_case):
    """The slice's DATA_DIR under the spark profile on the cluster: its registry in the
    cluster's PostgreSQL, its online store the cluster's Redis, loaded by the cluster's
    Spark up to the held-out hour's first departure. The environment is restored before
    the tests run; the store keeps its configuration."""
    settings = slice_run["settings"]
    record = cluster["record"]
    flights = held_out_hour(settings, use_case)
    serve_at = flights["scheduled_departure"].min().to_pydatetime()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("SPARK_LOCAL_IP", "SPARK_DRIVER_HOST", "PYSPARK_PYTHON"):
            mp.delenv(name, raising=False)  # let export() set them, and undo that afterwards
        mp.setenv("DATA_DIR", str(settings.data_dir))
        mp.setenv("PROFILE", "spark")
        mp.setenv("SPARK_MASTER", record["spark_master"])
        mp.setenv("REGISTRY_URL", record["registry_url"])
        mp.setenv("REDIS_ADDRESS", record["redis_address"])
        _restart_spark_elsewhere(record["spark_master"])
        spark = Settings.from_env()
        apply(spark)
        materialize(spark, end=serve_at, start=EPOCH)
        store = feature_store(spark)
        environment = spark.environment()
    return {"settings": spark, "store": store, "environment": environment, "flights": flights,
            "serve_at": serve_at}


@pytest.fixture(scope="session")
def embedded_store(slice_run):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(slice_run["settings"].data_dir))
        mp.setenv("PROFILE", "embedded")
        return feature_store(slice_run["settings"])


def test_profile_runs_on_the_cluster_with_postgres_registry_and_redis(spark_profile, cluster):
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStoreConfig

    store, record = spark_profile["store"], cluster["record"]
    assert isinstance(store.config.offline_store, SparkOfflineStoreConfig)
    assert store.config.offline_store.spark_conf["spark.master"] == record["spark_master"]
    assert store.config.online_store.type == "feast_plugins.windowed_redis.WindowedRedisOnlineStore"
    assert store.config.registry.registry_type == "sql"
    assert store.config.registry.path.startswith("postgresql+psycopg://")
    sources = {fv.name: type(fv.batch_source).__name__ for fv in store.list_feature_views()}
    assert set(sources.values()) == {"SparkSource"}, sources
    # The registry really is in PostgreSQL: the cluster's database holds the applied views.
    import sqlalchemy

    engine = sqlalchemy.create_engine(record["registry_url"])
    with engine.connect() as connection:
        names = {row[0] for row in connection.execute(sqlalchemy.text("SELECT feature_view_name FROM feature_views"))}
    engine.dispose()
    assert names == set(sources)


def test_spark_training_set_on_the_cluster_equals_duckdb_cell_for_cell(spark_profile, embedded_store, slice_run,
                                                                       use_case, cluster):
    from pyspark.sql import SparkSession

    events = load_events(slice_run["settings"], use_case)
    events = events[events["event_timestamp"] >= pd.Timestamp("2013-02-20", tz="UTC")]
    duck = training_set(embedded_store, use_case, events)
    spark = training_set(spark_profile["store"], use_case, events)[duck.columns]
    assert len(duck) == len(events) > 5000
    pd.testing.assert_frame_equal(duck, spark, check_dtype=True, check_exact=True)
    # ... and the join ran on the cluster's workers: the master lists this application with
    # an executor on each of its two workers.
    session = SparkSession.getActiveSession()
    assert session.sparkContext.master == cluster["record"]["spark_master"]
    with urllib.request.urlopen(cluster["record"]["spark_master_ui"] + "/json/", timeout=5) as response:
        state = json.loads(response.read())
    apps = [a for a in state["activeapps"] if a["id"] == session.sparkContext.applicationId]
    assert apps and apps[0]["cores"] == 2, state["activeapps"]
    assert sum(w["coresused"] for w in state["workers"]) == 2, state["workers"]


def test_windowed_training_set_on_the_cluster_equals_duckdb_cell_for_cell(spark_profile, embedded_store,
                                                                          slice_run, use_case):
    """late_arrival_v3 (v2 and 13 windowed aggregations over the departure and outcome
    events): the cluster's Spark computes the windows (feast_plugins/spark_windows.py) as
    DuckDB does, for the slice's last week of flights."""
    v3 = use_case.with_feature_service("late_arrival_v3")
    events = load_events(slice_run["settings"], v3)
    events = events[events["event_timestamp"] >= pd.Timestamp("2013-02-22", tz="UTC")]
    duck = training_set(embedded_store, v3, events)
    spark = training_set(spark_profile["store"], v3, events)[duck.columns]
    windowed = [c for c in duck.columns if c.startswith(("origin_departures_w__", "carrier_outcomes_w__",
                                                         "aircraft_last_arrival_w__"))]
    assert len(windowed) == 13 and duck[windowed].notna().any().all(), "vacuous: a windowed column never set"
    assert len(duck) == len(events) > 3000
    pd.testing.assert_frame_equal(duck, spark, check_dtype=True, check_exact=True)


def test_pandas_entity_frame_reaches_spark_as_a_file_scan(spark_profile, use_case, tmp_path, monkeypatch):
    """The full-data OOM's mechanism: a pandas entity frame became a LocalRelation inside
    the query plan (copied per reference by the driver's optimizer). The staged store
    (feast_plugins/spark_entities.py, whichever store the YAML names: the project's Spark
    store falls back to it) stages it as Parquet: no LocalRelation in the optimized plan, a
    Parquet scan of the staged file instead, and the file goes when the job does."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config

    from feast_plugins.spark_entities import StagedEntitySparkOfflineStoreConfig

    settings = spark_profile["settings"]
    for name, value in spark_profile["environment"].items():
        monkeypatch.setenv(name, value)
    staging = tmp_path / "spark-staging"
    config = load_repo_config(settings.feature_repo, settings.feature_store_yaml)
    config._offline_store = StagedEntitySparkOfflineStoreConfig(spark_conf=config.offline_store.spark_conf,
                                                                entity_staging_location=str(staging))
    store = FeatureStore(repo_path=str(settings.feature_repo), config=config)
    flights = spark_profile["flights"]
    entity_df = flights[[use_case.id_column, use_case.event_timestamp, *use_case.entity_columns]]
    job = store.get_historical_features(entity_df=entity_df, features=store.get_feature_service(
        use_case.feature_service), full_feature_names=True)
    frame = job.to_spark_df()
    plan = frame._jdf.queryExecution().optimizedPlan().toString()
    staged = list(staging.iterdir())
    assert "LocalRelation" not in plan
    assert len(staged) == 1
    assert any(str(staged[0]) in path for path in frame.inputFiles()), (staged, frame.inputFiles())
    assert len(job.to_df()) == len(entity_df)
    del job
    gc.collect()
    assert not list(staging.iterdir()), "the staged entity file outlived its retrieval job"


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_redis_filled_from_the_cluster_serves_the_same_vectors_as_sqlite(spark_profile, slice_run, use_case,
                                                                          tmp_path, monkeypatch):
    serve_at = spark_profile["serve_at"]
    # SQLite in a copy of the slice's DATA_DIR, loaded by the embedded profile up to the same instant.
    embedded_dir = copy_data_dir(slice_run["settings"].data_dir, tmp_path / "data")
    for name in ("online_store.db", "registry.db"):
        (embedded_dir / name).unlink(missing_ok=True)
    monkeypatch.setenv("DATA_DIR", str(embedded_dir))
    monkeypatch.setenv("PROFILE", "embedded")
    embedded = Settings.from_env()
    apply(embedded)
    materialize(embedded, end=serve_at, start=EPOCH)
    sqlite_store = feature_store(embedded)
    events = load_events(slice_run["settings"], use_case)
    sample = events.drop_duplicates(["origin", "dest", "carrier", "tailnum"]).head(300)
    rows = [{"origin": r.origin, "dest": r.dest, "carrier": r.carrier,
             "tailnum": r.tailnum if isinstance(r.tailnum, str) else "",
             "scheduled_departure": serve_at.astimezone(timezone.utc)} for r in sample.itertuples()]

    def vectors(store):
        service = store.get_feature_service(use_case.feature_service)
        return store.get_online_features(features=service, entity_rows=rows, full_feature_names=True) \
            .to_dict(include_event_timestamps=True)

    sqlite, redis = vectors(sqlite_store), vectors(spark_profile["store"])
    assert sqlite.keys() == redis.keys()
    present = sum(v is not None for k, col in sqlite.items() if not k.endswith("__ts") for v in col)
    assert present > 1000, "too few present values for the comparison to mean anything"
    for key in sqlite:
        assert sqlite[key] == redis[key], f"{key} differs between SQLite and Redis"


def test_served_probability_on_the_cluster_equals_offline(spark_profile, slice_run, use_case, monkeypatch):
    """The server on PROFILE=spark (registry in PostgreSQL, vectors from the Redis the
    cluster loaded) answers, for every flight of the held-out hour, the features and the
    probability the cluster's offline join and the same model give."""
    from serving.app import create_app
    from training.registry import ModelRegistry
    from training.score import score_events

    for name, value in spark_profile["environment"].items():
        monkeypatch.setenv(name, value)
    flights = spark_profile["flights"]
    assert len(flights) > 20, f"expected a busy hour on {HELD_OUT_DAY}, got {len(flights)} flights"
    model = ModelRegistry(slice_run["settings"].models).load_champion()
    offline = score_events(spark_profile["store"], use_case, model, flights).set_index(use_case.id_column)

    app = create_app({"DATA_DIR": slice_run["settings"].data_dir, "FEATURE_LOG_SAMPLE_RATE": 0})
    state = app.extensions["serving"]
    assert state.store.config.online_store.type == "feast_plugins.windowed_redis.WindowedRedisOnlineStore"
    assert state.store.config.registry.path == spark_profile["environment"]["REGISTRY_URL"]
    body = {"flights": [
        {"origin": r.origin, "dest": r.dest, "carrier": r.carrier,
         "tailnum": None if pd.isna(r.tailnum) else r.tailnum, "flight": int(r.flight),
         "scheduled_departure": r.scheduled_departure.isoformat()}
        for r in flights.itertuples()]}
    response = app.test_client().post("/predict", json=body)
    assert response.status_code == 200, response.get_json()
    predictions = response.get_json()["predictions"]
    vectors = state.online.lookup([
        {**f, "scheduled_departure": pd.Timestamp(f["scheduled_departure"]).to_pydatetime()} for f in body["flights"]])
    present = 0
    for row, served, vector in zip(flights.itertuples(), predictions, vectors):
        flight_id = getattr(row, use_case.id_column)
        expected = offline.loc[flight_id]
        for feature in model.features:
            offline_value = None if pd.isna(expected[feature]) else expected[feature]
            present += offline_value is not None
            assert _same(vector.values[feature], offline_value), (
                f"{flight_id} {feature}: served {vector.values[feature]!r}, offline {offline_value!r}")
        assert served["model_version"] == model.version
        assert abs(served["probability"] - expected["probability"]) <= 1e-9, (
            f"{flight_id}: served {served['probability']} vs offline {expected['probability']}")
    assert present > len(flights) * len(model.features) // 2, "too few present values to mean anything"
