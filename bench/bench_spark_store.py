"""The project's Spark offline store vs stock Feast's Spark store (and DuckDB's ASOF store).

In one run over the same data and Spark settings: a training set (get_historical_features
through the FeatureService ``late_arrival_v1``, full feature names) for the 335,787 real
flights and for synthetic entity sets drawn from them (1M and 10M rows by default), the
entity set a pandas DataFrame, as ``pipeline run`` passes it. Variants:

* ``spark_pit``: ``feast_plugins.spark_offline_store.SparkPitOfflineStore``;
* ``stock``: Feast's ``SparkOfflineStore`` given the same frame (``spark_entities``'
  Parquet staging for the entity frame, without which stock runs out of driver heap on
  the real flights; ``BENCH_SPARK_STOCK`` lists the sizes it runs, default ``real,1000000``:
  at 10M it is capped);
* ``duckdb``: the embedded profile's ASOF store, the anchor of "same cells".

Each variant runs in its own process (peak RSS of that process and its children, the
JVM included; the driver heap is bounded by ``spark.driver.memory``, 4g). Each answer's
fingerprint (a hash of every cell, rows in entity order) is compared with DuckDB's.
Ratios: stock / spark_pit (speed-up) and spark_pit / duckdb. ``SPARK_MASTER`` (default
``local[2]``) selects the cluster; ``BENCH_SPARK_SIZES`` the sizes (default
``real,1000000,10000000``); a variant past ``BENCH_TIMEOUT_S`` (default 1800) is a timeout.

Usage: ``BENCH_DATA_DIR=<a DATA_DIR with the full sources built> .venv/bin/python bench/bench_spark_store.py``
(without it the data is ingested and built first, as ``bench_profiles.py`` does).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cells, run_isolated, say, write_result  # noqa: E402
from bench.bench_profiles import REAL, entity_file, prepare  # noqa: E402

SPARK_CONF = {"spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "8"}


def _env(data_dir: str, profile: str) -> None:
    os.environ["DATA_DIR"] = data_dir
    os.environ["PROFILE"] = profile
    os.environ.setdefault("SPARK_MASTER", "local[2]")
    os.environ.setdefault("REDIS_ADDRESS", "127.0.0.1:1")  # never contacted: offline only


def apply_spark(data_dir: str) -> None:
    apply_profile(data_dir, "spark")


def apply_profile(data_dir: str, profile: str) -> None:
    """``feast apply`` of the repository for ``profile`` over ``data_dir``'s sources (in a child)."""
    from core.settings import Settings
    from pipeline.apply import apply

    _env(data_dir, profile)
    apply(Settings.from_env())


def fingerprint(frame) -> str:
    """A hash of every cell (timestamps as UTC instants), columns in name order."""
    import pandas as pd

    digest = hashlib.sha256()
    for column in sorted(frame.columns):
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
            values = pd.to_datetime(values, utc=True).astype("int64").where(values.notna(), None)
        digest.update(column.encode())
        digest.update(pd.util.hash_pandas_object(values.astype("object"), index=False).values.tobytes())
    return digest.hexdigest()[:16]


def variant(kind: str, data_dir: str, entities: str) -> dict:
    """One training set in this process: wall time of the join alone, rows, fingerprint."""
    import pandas as pd

    from core.quiet import quiet_third_party_warnings
    from core.settings import Settings
    from feast_plugins.store import feature_store

    quiet_third_party_warnings()
    _env(data_dir, "embedded" if kind == "duckdb" else "spark")
    store = feature_store(Settings.from_env())
    if kind != "duckdb":
        from feast_plugins.spark_offline_store import SparkPitOfflineStoreConfig

        conf = {**store.config.offline_store.spark_conf, **SPARK_CONF}
        if kind == "stock":
            from feast_plugins.spark_entities import StagedEntitySparkOfflineStoreConfig

            store.config._offline_store = StagedEntitySparkOfflineStoreConfig(spark_conf=conf)
        else:
            store.config._offline_store = SparkPitOfflineStoreConfig(spark_conf=conf)
        from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
            get_spark_session_or_start_new_with_repoconfig,
        )

        get_spark_session_or_start_new_with_repoconfig(store.config.offline_store)  # JVM start not timed
    frame = pd.read_parquet(entities)
    frame = frame.assign(flight_id=[f"f{i}" for i in range(len(frame))])
    service = store.get_feature_service("late_arrival_v1")
    start = time.perf_counter()
    result = store.get_historical_features(entity_df=frame, features=service, full_feature_names=True).to_df()
    join_s = time.perf_counter() - start
    result = result.set_index("flight_id").loc[frame["flight_id"]].reset_index()
    for column in result.columns:  # Spark's stock answer has naive UTC timestamps; both in UTC
        if pd.api.types.is_datetime64_any_dtype(result[column]):
            result[column] = pd.to_datetime(result[column], utc=True).astype("datetime64[ns, UTC]")
    return {"join_s": round(join_s, 2), "rows": len(result), "fingerprint": fingerprint(result),
            "present": int(result.notna().sum().sum())}


def main() -> int:
    sizes = [x if x == REAL else int(x) for x in
             os.environ.get("BENCH_SPARK_SIZES", f"{REAL},1000000,10000000").split(",")]
    stock_sizes = {x if x == REAL else int(x) for x in
                   os.environ.get("BENCH_SPARK_STOCK", f"{REAL},1000000").split(",") if x}
    timeout = float(os.environ.get("BENCH_TIMEOUT_S", "1800"))
    root = os.environ.get("BENCH_DATA_DIR") or tempfile.mkdtemp(prefix="bench-spark-store-")
    if not (Path(root) / "sources" / "labelled_events.parquet").exists():
        run_isolated(prepare, root, "127.0.0.1:1")
    run_isolated(apply_spark, root)
    rows, goals = [], []
    for size in cells(sizes, "spark store: entity-set sizes"):
        path = entity_file(root, size)
        label = "real flights" if size == REAL else f"synthetic {size:,}"
        results = {}
        for kind in ("duckdb", "spark_pit", "stock"):
            if kind == "stock" and size not in stock_sizes:
                rows.append({"case": label, "variant": kind, "skipped": "capped: not run at this size"})
                continue
            try:
                out = run_isolated(variant, kind, root, path, timeout=timeout)
            except RuntimeError as e:  # e.g. stock's driver out of memory: recorded, not fatal
                out = {"wall_s": float("nan"), "error": str(e)[-500:]}
            row = {"case": label, "variant": kind, "wall_s": round(out["wall_s"], 1),
                   "peak_mib": out.get("peak_mib"), "timeout": out.get("timeout", False)}
            if out.get("error"):
                row["error"] = out["error"]
            row.update(out.get("value") or {})
            results[kind] = row
            rows.append(row)
            say(row)
        pit, stock, duck = results.get("spark_pit"), results.get("stock"), results.get("duckdb")
        if pit and duck and "join_s" in pit:
            pit["same_cells_as_duckdb"] = pit.get("fingerprint") == duck.get("fingerprint")
            pit["vs_duckdb"] = round(pit["join_s"] / duck["join_s"], 2)
        if pit and stock and "join_s" in pit:
            stock["same_cells_as_duckdb"] = stock.get("fingerprint") == duck.get("fingerprint") if duck else None
            if "join_s" in stock:
                pit["speedup_vs_stock"] = round(stock["join_s"] / pit["join_s"], 2)
            if size == 1_000_000:
                goals.append({"goal": "spark_pit >= 5x faster than stock Spark at 1M entity rows, same cells",
                              "value": pit.get("speedup_vs_stock"), "target": 5,
                              "met": bool(pit.get("speedup_vs_stock", 0) >= 5 and pit.get("same_cells_as_duckdb"))})
        if size == 10_000_000 and pit:
            goals.append({"goal": "10M entity rows complete (spark_pit), peak memory stated",
                          "value": pit.get("peak_mib"), "target": "completes",
                          "met": "join_s" in pit and not pit["timeout"]})
    write_result("spark_store", "Training set (late_arrival_v1) on Spark: the project's store vs stock Feast's "
                 "Spark store, DuckDB's ASOF store as the reference for the cells; master "
                 f"{os.environ.get('SPARK_MASTER', 'local[2]')}", rows, goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
