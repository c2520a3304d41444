"""Materialization into Redis on the Spark cluster: the project's engine
(``feast_plugins.spark_engine.SparkRedisComputeEngine``) vs Feast's stock ``spark.engine``,
with the redis profile's local engine (one machine, DuckDB) beside them.

In one run, on the local cluster (``core.cluster``: Spark master + 2 workers, PostgreSQL
registry, redis-server; started here under the data directory and stopped at the end,
unless ``SPARK_MASTER`` and ``REDIS_ADDRESS`` name one already running):

* ``real flights``: every view of ``feature_repo/`` that Feast's engines load (the windowed
  views are loaded from their events by the same code on every profile, so they are left
  out), from the epoch to the end of the full shipped data, as ``pipeline run`` loads them;
* ``synthetic``: one view of ``--rows`` entities (int64 key, 10 double + 2 int64 features,
  one row each, ``bench_materialize.py``'s source): where per-row work shows.

Each variant writes into a Redis database of its own, in a process of its own (peak RSS of
it and its children: the driver's JVM, not the workers' executors), timed around
``FeatureStore.materialize`` alone (the Spark session is started before). Then every key
and hash field of the databases is compared: the project's engine must write what stock
Spark writes, byte for byte, and what the local engine writes.

    BENCH_DATA_DIR=<a DATA_DIR with the full sources built> .venv/bin/python bench/bench_spark_materialize.py [--rows N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cells, run_isolated, say, write_result  # noqa: E402
from bench.bench_materialize import FLOATS, INTS, make_source  # noqa: E402
from bench.bench_profiles import prepare  # noqa: E402
from bench.bench_spark_store import apply_profile  # noqa: E402

STOCK = "spark.engine"
OURS = "feast_plugins.spark_engine.SparkRedisComputeEngine"
LOCAL = "local"
VARIANTS = {STOCK: "stock spark.engine", OURS: "project engine", LOCAL: "local engine (redis profile)"}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
END = datetime(2014, 1, 2, tzinfo=timezone.utc)


def _start_spark(conf: dict) -> None:
    """The session Feast's engine and store then find active, its executors started (neither
    is timed: every variant would pay them alike; the Python workers stock's engine then
    starts on the executors are its own cost, and timed)."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.config(conf=SparkConf().setAll(list(conf.items()))).getOrCreate()
    spark.range(0, 64, 1, 8).count()  # the executors are up (a new application starts them) before timing


def real(data_dir: str, engine: str, redis: str) -> dict:
    """In a child: the repository's views (not the windowed ones) into Redis ``redis``."""
    import time

    from core.quiet import quiet_third_party_warnings
    from core.settings import Settings
    from feast_plugins.windows import is_windowed

    quiet_third_party_warnings()
    address, _, db = redis.partition(",db=")
    os.environ.update({"DATA_DIR": data_dir, "PROFILE": "redis" if engine == LOCAL else "spark",
                       "REDIS_ADDRESS": address})
    settings = Settings.from_env()
    settings.export()
    from feast import FeatureStore
    from feast.repo_config import load_repo_config

    config = load_repo_config(settings.feature_repo, settings.feature_store_yaml)
    online = config.online_store  # the profile's connection string, on this run's database
    online.connection_string = online.connection_string.replace(address, redis, 1)
    assert f",db={db}" in online.connection_string, online.connection_string
    if engine != LOCAL:
        config.batch_engine_config = {**config.batch_engine_config, "type": engine}
        _start_spark(config.batch_engine_config["spark_conf"])
    store = FeatureStore(repo_path=str(settings.feature_repo), config=config)
    names = [v.name for v in store.list_feature_views() if not is_windowed(v)]
    start = time.perf_counter()
    store.materialize(start_date=EPOCH, end_date=END, feature_views=names)
    return {"materialize_s": round(time.perf_counter() - start, 2), "views": len(names)}


def synthetic(root: str, source: str, engine: str, redis: str, spark_master: str) -> dict:
    """In a child: the synthetic view into Redis ``redis`` (its own repository under ``root``)."""
    import time
    import warnings

    warnings.simplefilter("ignore")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors' Python imports Feast (as core/settings.py sets it)
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    conf = {"spark.master": spark_master, "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.session.timeZone": "UTC", "spark.ui.enabled": "false", "spark.driver.memory": "4g",
            "spark.sql.shuffle.partitions": "8"}
    repo = Path(root) / engine.rsplit(".", 1)[-1]
    repo.mkdir(parents=True)
    if engine == LOCAL:
        source_obj = FileSource(name="synthetic_src", path=source, timestamp_field="event_timestamp")
        offline, batch = {"type": "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"}, {"type": LOCAL}
    else:
        source_obj = SparkSource(name="synthetic_src", path=source, file_format="parquet",
                                 timestamp_field="event_timestamp")
        offline = {"type": "feast_plugins.spark_offline_store.SparkPitOfflineStore", "spark_conf": conf,
                   "staging_location": str(repo / "staging")}
        batch = {"type": engine, "spark_conf": conf, "partitions": 4}
        _start_spark(conf)
    config = RepoConfig(project="synthetic", provider="local", registry=str(repo / "registry.db"),
                        repo_path=str(repo), online_store={"type": "redis", "connection_string": redis},
                        offline_store=offline, batch_engine=batch, entity_key_serialization_version=3)
    store = FeatureStore(repo_path=str(repo), config=config)
    entity = Entity(name="entity_id", join_keys=["entity_id"], value_type=ValueType.INT64)
    view = FeatureView(name="synthetic", entities=[entity], ttl=None, source=source_obj,
                       schema=[Field(name=f, dtype=Float64) for f in FLOATS] + [Field(name=f, dtype=Int64) for f in INTS])
    store.apply([entity, view])
    start = time.perf_counter()
    store.materialize(start_date=EPOCH, end_date=END)
    return {"materialize_s": round(time.perf_counter() - start, 2), "views": 1}


def contents(redis: str) -> tuple[int, str]:
    """How many keys a Redis database holds, and a digest of every key and hash field."""
    import redis as redis_py

    address, _, db = redis.partition(",db=")
    host, port = address.rsplit(":", 1)
    client = redis_py.Redis(host=host, port=int(port), db=int(db or 0))
    keys = sorted(client.scan_iter(count=10_000))
    digest = hashlib.sha256()
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(keys), 10_000):
        for key in keys[i:i + 10_000]:
            pipe.hgetall(key)
        for key, fields in zip(keys[i:i + 10_000], pipe.execute()):
            digest.update(key)
            for field in sorted(fields):
                digest.update(field + b"=" + fields[field])
    return len(keys), digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="entities of the synthetic view")
    args = parser.parse_args()
    from core.cluster import ClusterOptions, down, up

    root = os.environ.get("BENCH_DATA_DIR") or tempfile.mkdtemp(prefix="bench-spark-materialize-")
    started = None
    if os.environ.get("SPARK_MASTER") and os.environ.get("REDIS_ADDRESS"):
        master, redis = os.environ["SPARK_MASTER"], os.environ["REDIS_ADDRESS"]
    else:
        started = up(Path(root), ClusterOptions(workers=2, worker_cores=1, worker_memory="1g"), say=say)
        master, redis = started["spark_master"], started["redis_address"]
        os.environ.update({"SPARK_MASTER": master, "REDIS_ADDRESS": redis, "REGISTRY_URL": started["registry_url"]})
    try:
        return run(args, root, master, redis)
    finally:
        if started is not None:
            down(Path(root), say=say)


def run(args, root: str, master: str, redis: str) -> int:
    import redis as redis_py

    if not (Path(root) / "sources" / "labelled_events.parquet").exists():
        run_isolated(prepare, root, redis)
    os.environ["REDIS_ADDRESS"] = redis
    for profile in ("redis", "spark"):  # their registries over this data (spark: the cluster's)
        run_isolated(apply_profile, root, profile)
    work = Path(tempfile.mkdtemp(prefix="bench-spark-materialize-"))
    source = str(make_source(work, args.rows))
    host, port = redis.rsplit(":", 1)
    rows, goals, db = [], [], 0
    cases = [("real flights", lambda engine, address: run_isolated(real, root, engine, address)),
             (f"synthetic {args.rows:,} entities", lambda engine, address: run_isolated(
                 synthetic, str(work), source, engine, address, master))]
    for case, runner in cells(cases, "spark materialize: cases"):
        results = {}
        for engine, label in VARIANTS.items():
            db += 1
            address = f"{redis},db={db}"
            redis_py.Redis(host=host, port=int(port), db=db).flushdb()
            out = runner(engine, address)
            keys, digest = contents(address)
            row = {"case": case, "variant": label, "seconds": out["value"]["materialize_s"],
                   "views": out["value"]["views"], "keys": keys, "digest": digest,
                   "peak_mib": round(out["peak_mib"])}
            results[engine] = row
            rows.append(row)
            say(row)
        ours, stock, local = results[OURS], results[STOCK], results[LOCAL]
        ours["speedup_vs_stock"] = round(stock["seconds"] / ours["seconds"], 2)
        ours["vs_local_engine"] = round(ours["seconds"] / local["seconds"], 2)
        ours["same_bytes_as_stock"] = ours["digest"] == stock["digest"] and ours["keys"] == stock["keys"]
        ours["same_bytes_as_local"] = ours["digest"] == local["digest"] and ours["keys"] == local["keys"]
        goals.append({"goal": f"{case}: project engine writes what stock spark.engine writes, byte for byte",
                      "value": ours["same_bytes_as_stock"], "target": "True", "met": ours["same_bytes_as_stock"]})
        goals.append({"goal": f"{case}: project engine faster than stock spark.engine (stock / ours)",
                      "value": ours["speedup_vs_stock"], "target": "> 1", "met": ours["speedup_vs_stock"] > 1})
    write_result("spark_materialize", "Materialization into Redis on the local Spark cluster (2 workers x 1 core): "
                 "the project's engine vs Feast's stock spark.engine, and the redis profile's local engine on "
                 f"one machine; master {master}", rows, goals)
    return 0 if all(g["met"] for g in goals if "byte" in g["goal"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
