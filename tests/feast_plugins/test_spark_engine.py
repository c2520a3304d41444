"""The spark profile's engine (``feast_plugins/spark_engine.py``) writes into Redis exactly
what Feast's stock engines write: every key, every hash field, every byte.

One repository (two join keys, one int64 key, a view without entities, a view with a
feature type the writer leaves to stock, created-time ties, nulls and NaN in every type)
is materialized into three Redis databases: by stock ``spark.engine``, by the project's
engine (its driver writing, then its executors), and by Feast's stock local engine over
the same files (what the redis profile writes), in two windows (the second one incremental, so rows older than what is stored
are skipped as stock skips them, and a key's later row overwrites it), with and without
``key_ttl_seconds``. Then the databases are compared key by key: ours equals stock Spark's
on every view stock Spark can write, and the local engine's on every view. Stock Spark
fails on the view without entities (its plan never adds Feast's ``__dummy_id`` column);
that is checked too, so a Feast that fixes it is noticed.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_tool
from tests.feast_plugins.test_spark_offline_store import SPARK_CONF

pytestmark = [pytest.mark.spark, pytest.mark.redis]

T0 = datetime(2013, 3, 1, tzinfo=timezone.utc)
MID = T0 + timedelta(days=2)
END = T0 + timedelta(days=4)
STOCK = "spark.engine"
OURS = "feast_plugins.spark_engine.SparkRedisComputeEngine"
LOCAL = "local"
KEYED = ["two_keys", "one_key"]


def _rows(seed: int) -> dict[str, dict[str, list]]:
    """The sources: several rows per key across both windows, with ties on the event time
    (the created time decides), and a null or NaN in every type."""
    rng = np.random.default_rng(seed)
    n = 400
    ts = [T0 + timedelta(hours=int(h), microseconds=int(u))
          for h, u in zip(rng.integers(0, 96, n), rng.choice([0, 0, 250, 999_999], n))]
    created = [t + timedelta(seconds=int(s)) for t, s in zip(ts, rng.integers(0, 3, n))]

    def maybe(values, p=0.1):
        return [None if rng.random() < p else v for v in values]

    doubles = rng.normal(0, 100, n)
    doubles[rng.random(n) < 0.05] = np.nan
    two_keys = {
        "k": rng.choice(["a", "b", "é", "long key " * 5, ""], n).tolist(), "n": rng.integers(-3, 40, n).tolist(),
        "d": doubles.tolist(), "f": maybe(rng.normal(0, 1, n).astype("float32").tolist()),
        "i": maybe(rng.integers(-2**40, 2**40, n).tolist()), "i32": maybe(rng.integers(-5, 5, n).tolist()),
        "s": maybe(rng.choice(["x", "yz", "ü"], n).tolist()), "b": maybe(rng.choice([True, False], n).tolist()),
        "ts": ts, "created": created}
    one_key = {"n": rng.integers(0, 60, n).tolist(), "v": maybe(rng.normal(0, 1, n).tolist()),
               "u": maybe(rng.integers(0, 10**12, n).tolist()), "ts": ts, "created": created}
    global_rows = {"g": rng.normal(0, 1, 20).tolist(), "ts": ts[:20], "created": created[:20]}
    return {"two_keys": two_keys, "one_key": one_key, "global_rows": global_rows}


def _write(root: Path, frames: dict[str, dict[str, list]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"k": pa.string(), "n": pa.int64(), "d": pa.float64(), "f": pa.float32(), "i": pa.int64(),
             "i32": pa.int32(), "s": pa.string(), "b": pa.bool_(), "u": pa.int64(), "v": pa.float64(),
             "g": pa.float64(), "ts": pa.timestamp("us", tz="UTC"), "created": pa.timestamp("us", tz="UTC")}
    for name, columns in frames.items():
        pq.write_table(pa.table({c: pa.array(v, type=types[c]) for c, v in columns.items()}),
                       root / f"{name}.parquet")


def _store(root: Path, engine: str, redis_address: str, db: int, ttl: int | None, driver_rows: int = 10**6):
    """The repository over the files, materializing with ``engine`` into Redis ``db``: Spark
    sources and the spark profile's offline store, or (``local``) file sources and the
    embedded profile's offline store."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.repo_config import RepoConfig
    from feast.types import Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

    repo = root / f"repo-{db}"
    repo.mkdir()
    k = Entity(name="k", join_keys=["k"], value_type=ValueType.STRING)
    n = Entity(name="n", join_keys=["n"], value_type=ValueType.INT64)

    def source(name):
        if engine == LOCAL:
            return FileSource(name=f"{name}_src", path=str(root / f"{name}.parquet"), timestamp_field="ts",
                              created_timestamp_column="created")
        return SparkSource(name=f"{name}_src", path=str(root / f"{name}.parquet"), file_format="parquet",
                           timestamp_field="ts", created_timestamp_column="created")

    views = [
        FeatureView(name="two_keys", entities=[k, n], ttl=timedelta(days=30), source=source("two_keys"),
                    schema=[Field(name="k", dtype=String), Field(name="n", dtype=Int64),
                            Field(name="d", dtype=Float64), Field(name="f", dtype=Float32),
                            Field(name="i", dtype=Int64), Field(name="i32", dtype=Int32),
                            Field(name="s", dtype=String), Field(name="b", dtype=Bool)]),
        # A unix-timestamp feature: not the writer's type, stock's node writes the view.
        FeatureView(name="one_key", entities=[n], ttl=timedelta(days=30), source=source("one_key"),
                    schema=[Field(name="n", dtype=Int64), Field(name="v", dtype=Float64),
                            Field(name="u", dtype=UnixTimestamp)]),
        FeatureView(name="global_rows", entities=[], ttl=timedelta(days=30), source=source("global_rows"),
                    schema=[Field(name="g", dtype=Float64)]),
    ]
    address = f"{redis_address},db={db}"
    config = RepoConfig(
        project="engine", provider="local", registry=str(repo / "registry.db"), repo_path=str(repo),
        online_store={"type": "redis", "connection_string": address, "key_ttl_seconds": ttl},
        offline_store={"type": "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"} if engine == LOCAL else
        {"type": "feast_plugins.spark_offline_store.SparkPitOfflineStore", "spark_conf": SPARK_CONF,
         "staging_location": str(root / "staging")},
        batch_engine={"type": LOCAL} if engine == LOCAL else {
            "type": engine, "spark_conf": SPARK_CONF, "partitions": 3,
            **({"driver_write_rows": driver_rows} if engine == OURS else {})},
        entity_key_serialization_version=3)
    store = FeatureStore(repo_path=str(repo), config=config)
    store.apply([k, n, *views])
    return store


def _contents(client) -> dict:
    return {key: (client.hgetall(key), client.ttl(key) > 0) for key in client.scan_iter(count=1000)}


@pytest.fixture(scope="module")
def spark_env():
    require_tool("java")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _differences(got: dict, want: dict, label: str) -> None:
    assert got.keys() == want.keys(), f"{label}: keys only in one: {len(want.keys() - got.keys())} / " \
                                      f"{len(got.keys() - want.keys())} of {len(want)}"
    different = [k for k in want if got[k] != want[k]]
    assert not different, f"{label}: {len(different)} of {len(want)} keys differ, e.g. {different[0]!r}: " \
                          f"{want[different[0]]} vs ours {got[different[0]]}"


@pytest.mark.parametrize("ttl, driver_rows", [(None, 10**6), (3600, 0)], ids=["driver-writes", "executors-write"])
def test_the_engine_writes_the_bytes_stock_writes(spark_env, redis_server, tmp_path, ttl, driver_rows):
    """``driver_rows``: the engine's ``driver_write_rows``: every view written by the driver
    (10**6), or every view by the executors from the staged files (0)."""
    import redis

    from feast_plugins import spark_engine

    frames = _rows(seed=7)
    _write(tmp_path, frames)
    dbs = {STOCK: 1, OURS: 2, LOCAL: 3}
    stores = {engine: _store(tmp_path, engine, redis_server.address, db, ttl, driver_rows)
              for engine, db in dbs.items()}
    ours = stores[OURS]
    assert spark_engine.fast_path(ours.get_feature_view("two_keys"), ours.config) is None
    assert spark_engine.fast_path(ours.get_feature_view("one_key"), ours.config) == "feature types UNIX_TIMESTAMP"
    host, port = redis_server.address.split(":")
    clients = {engine: redis.Redis(host=host, port=int(port), db=db) for engine, db in dbs.items()}
    windows = []
    for start, end in ((T0 - timedelta(days=1), MID), (MID, END)):
        stores[STOCK].materialize(start_date=start, end_date=end, feature_views=KEYED)
        with pytest.raises(Exception, match="__dummy_id"):  # stock Spark on a view without entities
            stores[STOCK].materialize(start_date=start, end_date=end, feature_views=["global_rows"])
        for engine in (OURS, LOCAL):
            stores[engine].materialize(start_date=start, end_date=end)
        got, local = _contents(clients[OURS]), _contents(clients[LOCAL])
        _differences(got, local, "Feast's local engine")
        placeholder = next(k for k in got if b"__dummy_id" in k)
        _differences({k: v for k, v in got.items() if k != placeholder}, _contents(clients[STOCK]), "stock Spark")
        windows.append(got)
    # Every entity of the sources is there, and the later window changed what the first wrote.
    pairs = set(zip(frames["two_keys"]["k"], frames["two_keys"]["n"]))
    assert len(got) == len(pairs) + len(set(frames["one_key"]["n"])) + 1
    first, second = windows
    assert sum(first[k] != second[k] for k in first) > len(first) // 4, "the second window overwrote little"
    assert all(expires == (ttl is not None) for _, expires in got.values())
