"""Materialization rows/s: Feast's stock SQLite online store against the packed one
(``feast_plugins/packed_sqlite_store.py``), both through ``FeatureStore.materialize`` (Feast's
local engine: offline read, conversion to protobuf values, ``online_write_batch``).

A synthetic feature view (int64 key, 10 Float64 + 2 Int64 features, one row per entity,
seeded) over a Parquet source; each store materializes the same rows into a fresh SQLite
file in its own process. The stock store is measured on ``--stock-rows`` (default 100,000:
at its speed a million rows would take many minutes) and the packed store on ``--rows``
(default 1,000,000); rows/s is what is compared. Then both stores read back the same 1,000
keys and must answer identically.

    .venv/bin/python bench/bench_materialize.py [--rows 1000000] [--stock-rows 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _util import cells, run_isolated, say, write_result  # noqa: E402

FLOATS = [f"f{i}" for i in range(10)]
INTS = ["n0", "n1"]
START = datetime(2013, 1, 1, tzinfo=timezone.utc)
END = datetime(2014, 1, 1, tzinfo=timezone.utc)
STORES = {"stock SQLite store": "sqlite", "packed SQLite store": "feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore"}


def make_source(root: Path, rows: int) -> Path:
    import duckdb

    path = root / f"synthetic_{rows}.parquet"
    floats = ", ".join(f"(hash(i * 31 + {k}) % 1000000) / 1000.0 AS {f}" for k, f in enumerate(FLOATS))
    duckdb.sql(f"""COPY (SELECT i AS entity_id, {floats},
                      (hash(i * 7) % 1000)::BIGINT AS n0, CASE WHEN i % 10 = 0 THEN NULL ELSE i % 97 END::BIGINT AS n1,
                      TIMESTAMPTZ '2013-01-01' + to_microseconds((hash(i * 13) % 31536000000000)::BIGINT) AS event_timestamp
                    FROM range({rows}) t(i)) TO '{path}' (FORMAT parquet)""")
    return path


def store_for(root: Path, online_type: str, source: Path):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    engine = "local" if online_type == "sqlite" else "feast_plugins.packed_sqlite_store.PackedLocalComputeEngine"
    config = RepoConfig(project="synthetic", provider="local", registry=str(root / "registry.db"),
                        online_store={"type": online_type, "path": str(root / "online.db")}, batch_engine=engine,
                        offline_store={"type": "duckdb"}, entity_key_serialization_version=3, repo_path=str(root))
    store = FeatureStore(repo_path=str(root), config=config)
    entity = Entity(name="entity_id", join_keys=["entity_id"], value_type=ValueType.INT64)
    view = FeatureView(name="synthetic", entities=[entity], ttl=None,
                       source=FileSource(name="synthetic_src", path=str(source), timestamp_field="event_timestamp"),
                       schema=[Field(name=f, dtype=Float64) for f in FLOATS] + [Field(name=f, dtype=Int64) for f in INTS])
    store.apply([entity, view])
    return store, view


def materialize(root: str, online_type: str, source: str) -> dict:
    """In a child process: apply into an empty repo directory, then time ``materialize``."""
    import time
    import warnings

    warnings.simplefilter("ignore")
    store, _ = store_for(Path(root), online_type, Path(source))
    started = time.perf_counter()
    store.materialize(start_date=START, end_date=END)
    return {"seconds": time.perf_counter() - started}


def read_back(root: str, online_type: str, source: str, keys: list[int]) -> list:
    import warnings

    warnings.simplefilter("ignore")
    store, view = store_for(Path(root), online_type, Path(source))
    features = [f"synthetic:{f}" for f in FLOATS + INTS]
    rows = store.get_online_features(features=features, entity_rows=[{"entity_id": k} for k in keys])
    return sorted(rows.to_dict(include_event_timestamps=True).items())


def main() -> int:
    import shutil

    work = Path(tempfile.mkdtemp(prefix="bench_materialize_"))
    try:
        return run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the Parquet and SQLite files are large


def run(work: Path) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="entity rows for the packed store")
    parser.add_argument("--stock-rows", type=int, default=100_000, help="entity rows for the stock store")
    args = parser.parse_args()

    rows_out = []
    rates = {}
    roots = {}
    sources = {}
    for name, online_type in cells(list(STORES.items()), "materialize: stores"):
        n = args.stock_rows if online_type == "sqlite" else args.rows
        sources[n] = sources.get(n) or make_source(work, n)
        root = work / online_type.rsplit(".", 1)[-1]
        root.mkdir()
        roots[name] = (root, n)
        result = run_isolated(materialize, str(root), online_type, str(sources[n]))
        seconds = result["value"]["seconds"]
        rates[name] = n / seconds
        row = {"case": f"materialize, {len(FLOATS) + len(INTS)} features", "variant": name, "entity_rows": n,
               "seconds": seconds, "rows_per_s": n / seconds, "peak_mib": result["peak_mib"]}
        say(row)
        rows_out.append(row)

    # Both stores must answer the same for keys both hold (plus missing ones).
    common = min(args.rows, args.stock_rows)
    keys = list(range(0, common, max(1, common // 1000)))[:1000] + [-1, common * 10]
    answers = [run_isolated(read_back, str(root), STORES[name], str(sources[n]), keys)["value"]
               for name, (root, n) in roots.items()]
    same = answers[0] == answers[1]
    print(f"read-back equal: {same}", flush=True)

    ratio = rates["packed SQLite store"] / rates["stock SQLite store"]
    goals = [{"goal": "materialization rows/s, packed / stock SQLite store", "value": ratio, "target": ">= 10",
              "met": ratio >= 10},
             {"goal": "both stores read back the same values and timestamps", "value": same, "target": "True",
              "met": same}]
    write_result("materialize", "feast materialize of a synthetic view (int64 key, 12 features, one row per "
                 f"entity) into Feast's stock SQLite store ({args.stock_rows:,} rows) and the packed store "
                 f"({args.rows:,} rows), each in a fresh process and file; rows/s compared",
                 rows_out, goals)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
