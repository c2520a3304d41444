"""Embedded (DuckDB + SQLite) vs scale-out (Spark + Redis) profiles, on this machine.

In one run over the same data: (1) a training set — get_historical_features through the
FeatureService — for the 336,776 real flights and for a larger synthetic entity set drawn
from them, and (2) a full materialization into each profile's online store. The anchor is
the embedded default; ratios are spark / embedded. Each variant runs in its own process
(peak memory includes Spark's JVM). Sizes: BENCH_PROFILE_SIZES (default real,10000000;
"real" is every labelled flight up to the snapshot's as-of, 335,787 of the 336,776);
a variant slower than BENCH_TIMEOUT_S (default 1500) is recorded as a timeout.

Each engine gets the entity set the way it reads it best: the DuckDB store a pandas frame
(it cannot take SQL), the Spark store a Spark SQL query over the same Parquet file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cells, run_isolated, say, write_result  # noqa: E402

REAL = "real"


def _env(data_dir: str, profile: str, redis_url: str | None) -> None:
    os.environ["DATA_DIR"] = data_dir
    os.environ["PROFILE"] = profile
    os.environ["SPARK_MASTER"] = "local[2]"
    if redis_url:
        os.environ["REDIS_ADDRESS"] = redis_url


def prepare(data_dir: str, redis_url: str) -> str:
    """Ingest, build sources, apply both profiles; return the snapshot's as-of (ISO)."""
    from core.settings import Settings
    from core.usecase import load_use_case
    from pipeline.apply import apply
    from pipeline.features import build_sources
    from pipeline.ingest import ingest

    _env(data_dir, "embedded", redis_url)
    settings, use_case = Settings.from_env(), load_use_case()
    snapshot = ingest(settings, use_case)
    build_sources(settings, use_case, snapshot)
    apply(settings)
    _env(data_dir, "spark", redis_url)
    apply(Settings.from_env())
    return snapshot.as_of.isoformat()


def entity_file(data_dir: str, rows: int | str) -> str:
    """Parquet entity set: the real events, or ``rows`` drawn from them with replacement,
    their timestamps shifted by up to ±3 days (seeded)."""
    from core.duck import connect, sql_str

    events = Path(data_dir) / "sources" / "labelled_events.parquet"
    out = Path(data_dir) / f"entities_{rows}.parquet"
    if out.exists():
        return str(out)
    con = connect()
    con.execute("SELECT setseed(0.42)")
    columns = "origin, dest, carrier, tailnum, event_timestamp, scheduled_departure"
    if rows == REAL:
        query = f"SELECT {columns} FROM read_parquet({sql_str(events)})"
    else:
        query = f"""
            WITH e AS (SELECT row_number() OVER () - 1 AS i, * FROM read_parquet({sql_str(events)})),
                 n AS (SELECT count(*) AS n FROM e),
                 draws AS (SELECT CAST(floor(random() * (SELECT n FROM n)) AS BIGINT) AS i,
                                  to_minutes(CAST(floor(random() * 8640) - 4320 AS BIGINT)) AS shift
                           FROM range({rows}))
            SELECT origin, dest, carrier, tailnum,
                   event_timestamp + shift AS event_timestamp,
                   scheduled_departure + shift AS scheduled_departure
            FROM draws JOIN e USING (i)"""
    con.execute(f"COPY ({query}) TO {sql_str(out)} (FORMAT parquet)")
    return str(out)


def training_set(data_dir: str, profile: str, redis_url: str, path: str) -> int:
    import pandas as pd

    from core.quiet import quiet_third_party_warnings
    from core.settings import Settings
    from feast_plugins.store import feature_store

    quiet_third_party_warnings()
    _env(data_dir, profile, redis_url)
    store = feature_store(Settings.from_env())
    entity_df = pd.read_parquet(path) if profile == "embedded" else f"SELECT * FROM parquet.`{path}`"
    service = store.get_feature_service("late_arrival_v1")
    frame = store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=True).to_df()
    return len(frame)


def materialize(data_dir: str, profile: str, redis_url: str, as_of: str) -> int:
    from datetime import datetime

    from core.quiet import quiet_third_party_warnings
    from core.settings import Settings
    from feast_plugins.store import feature_store
    from pipeline.materialize import EPOCH, materialize

    quiet_third_party_warnings()
    _env(data_dir, profile, redis_url)
    settings = Settings.from_env()
    materialize(settings, end=datetime.fromisoformat(as_of), start=EPOCH)
    return len(feature_store(settings).list_feature_views())


def _redis(workdir: str) -> tuple[subprocess.Popen, str]:
    from serving.process import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    time.sleep(1)
    return proc, f"127.0.0.1:{port}"


def _timed(fn, *args) -> dict:
    return run_isolated(fn, *args, timeout=float(os.environ.get("BENCH_TIMEOUT_S", "1500")))


def main() -> int:
    sizes = [x if x == REAL else int(x) for x in os.environ.get("BENCH_PROFILE_SIZES", f"{REAL},10000000").split(",")]
    root = tempfile.mkdtemp(prefix="bench-profiles-")
    redis, redis_url = _redis(root)
    rows, goals = [], []
    try:
        as_of = run_isolated(prepare, root, redis_url)["value"]
        for size in cells(sizes, "profiles: training-set sizes"):
            path = entity_file(root, size)
            results = {}
            for profile in ("embedded", "spark"):
                r = _timed(training_set, root, profile, redis_url, path)
                results[profile] = r
                say(f"training set {size} rows, {profile}: {r}")
            base = results["embedded"]
            for profile, r in results.items():
                n = r.get("value") or base.get("value") or size
                rows.append({
                    "case": f"training set, {n:,} entity rows" + (" (real flights)" if size == REAL else ""),
                    "variant": profile,
                    "wall_s": None if r.get("timeout") else round(r["wall_s"], 2),
                    "peak_mib": None if r.get("timeout") else round(r["peak_mib"]),
                    "ratio_vs_embedded": None if r.get("timeout") or base.get("timeout")
                    else round(r["wall_s"] / base["wall_s"], 2),
                    "note": f"timeout after {r['wall_s']:.0f}s" if r.get("timeout") else "",
                })
        results = {p: _timed(materialize, root, p, redis_url, as_of) for p in ("embedded", "spark")}
        for profile, r in results.items():
            rows.append({
                "case": "materialize all views (full window)", "variant": profile,
                "wall_s": round(r["wall_s"], 2), "peak_mib": round(r.get("peak_mib", 0)),
                "ratio_vs_embedded": round(r["wall_s"] / results["embedded"]["wall_s"], 2), "note": "",
            })
    finally:
        redis.terminate()
    write_result("profiles", "Embedded (DuckDB + SQLite) vs spark (Spark local[2] + Redis) profile on 2 cores",
                 rows, goals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
