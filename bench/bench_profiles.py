"""`make pipeline` on each profile, on this machine: embedded (DuckDB + SQLite), redis
(DuckDB + Redis) and spark (the local cluster: Spark master + 2 workers, PostgreSQL
registry, Redis).

Each profile runs the command a user runs, ``pipeline run`` (what ``make pipeline`` calls),
on the full shipped data, from an empty data directory of its own, in a process of its
own (peak RSS of that process and its children: for spark the driver's JVM, not the
workers' executors, which the cluster started). The spark profile finds the cluster the
way a user's does: ``core.cluster.up`` under that data directory records its addresses
and ``PROFILE=spark`` reads them (no ``SPARK_MASTER``, ``REGISTRY_URL`` or
``REDIS_ADDRESS`` is passed). The anchor is the embedded profile: ratios are profile /
embedded, in total and per stage (``stage_seconds`` of ``reports/pipeline_run.json``),
and each profile's model version is compared with the embedded one (the same training set
gives the same model bytes). A profile slower than ``BENCH_TIMEOUT_S`` (default 1800) is
recorded as a timeout.

``prepare`` and ``entity_file`` build the data and the entity sets of the Spark store
benchmarks (``bench_spark_store.py``, ``bench_spark_scaling.py``).

    .venv/bin/python bench/bench_profiles.py
"""

from __future__ import annotations

import os
import shutil
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


PROFILES = ("embedded", "redis", "spark")

#: Settings a user's shell might hold that would point a profile somewhere else.
_CLEARED = ("PROFILE", "DATA_DIR", "SPARK_MASTER", "REGISTRY_URL", "REDIS_ADDRESS")


def pipeline_run(data_dir: str, profile: str, redis_address: str | None) -> dict:
    """``pipeline run`` (the command ``make pipeline`` runs) on ``profile`` over ``data_dir``;
    its summary (``reports/pipeline_run.json``)."""
    import json

    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update({"DATA_DIR": data_dir, "PROFILE": profile})
    if redis_address:
        env["REDIS_ADDRESS"] = redis_address
    command = [str(Path(sys.executable).parent / "pipeline"), "run"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"PROFILE={profile} pipeline run exited {done.returncode}: {done.stderr[-2000:]}")
    summary = json.loads((Path(data_dir) / "reports" / "pipeline_run.json").read_text())
    return {"stage_seconds": summary["stage_seconds"], "model": summary["model"]["version"],
            "auc": round(summary["model"]["metrics"]["model"]["auc"], 4)}


def _redis(workdir: str) -> tuple[subprocess.Popen, str]:
    from serving.process import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    time.sleep(1)
    return proc, f"127.0.0.1:{port}"


def run_profile(root: Path, profile: str) -> dict:
    """One profile's ``pipeline run`` in a fresh data directory, with the servers it needs
    started before and stopped after."""
    from core.cluster import ClusterOptions, down, up

    data_dir = root / profile
    data_dir.mkdir()
    timeout = float(os.environ.get("BENCH_TIMEOUT_S", "1800"))
    if profile == "spark":
        up(data_dir, ClusterOptions(workers=2, worker_cores=1, worker_memory="1g"), say=say)
        try:
            return run_isolated(pipeline_run, str(data_dir), profile, None, timeout=timeout)
        finally:
            down(data_dir, say=say)
    redis, address = _redis(str(data_dir)) if profile == "redis" else (None, None)
    try:
        return run_isolated(pipeline_run, str(data_dir), profile, address, timeout=timeout)
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="bench-profiles-"))
    root.chmod(0o755)  # the cluster's PostgreSQL runs as its own user when we are root
    results = {}
    for profile in cells(PROFILES, "profiles: pipeline run"):
        results[profile] = run_profile(root, profile)
        say(f"{profile}: {results[profile]}")
    base = results["embedded"]
    rows, goals = [], []
    for profile, r in results.items():
        row = {"case": "make pipeline, full data", "variant": profile}
        if r.get("timeout"):
            row.update({"wall_s": None, "note": f"timeout after {r['wall_s']:.0f}s"})
        else:
            value = r["value"]
            row.update({"wall_s": round(r["wall_s"], 2), "peak_mib": round(r["peak_mib"]),
                        "ratio_vs_embedded": round(r["wall_s"] / base["wall_s"], 2),
                        **{f"{stage}_s": s for stage, s in value["stage_seconds"].items()},
                        "model": value["model"], "auc": value["auc"],
                        "same_model_as_embedded": value["model"] == base["value"]["model"]})
        rows.append(row)
        goals.append({"goal": f"PROFILE={profile} make pipeline completes on the full data",
                      "value": not r.get("timeout"), "target": "True", "met": not r.get("timeout")})
    write_result("profiles", "make pipeline (pipeline run) on the full shipped data per profile, each from an "
                 "empty DATA_DIR in a fresh process: embedded (DuckDB + SQLite), redis (DuckDB + Redis), spark "
                 "(local cluster: master + 2 workers x 1 core, PostgreSQL registry, Redis; found through "
                 "DATA_DIR/cluster); stage seconds from reports/pipeline_run.json; peak_mib is the pipeline "
                 "process and its children (spark: the driver's JVM, not the workers)", rows, goals)
    shutil.rmtree(root, ignore_errors=True)
    return 0 if all(g["met"] for g in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
