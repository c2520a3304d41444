"""Online serving on the same data: this server's /predict (packed SQLite store, direct read)
against `feast serve` (features only, Feast's stock SQLite store materialized from the same
sources up to the same instant) and a floor app (Flask + one SQLite row per entity +
inplace_predict).

Each server runs 2 worker processes on 127.0.0.1 (this server: ``serving/worker.py``, gthread's
thread pool with requests read by the event loop, 4 threads each; the floor app: gunicorn's
gthread, 4 threads each; feast serve: its own uvicorn workers), all three at once. A
closed-loop client sends real flights (1 or 100 per request) at concurrency 1, 8 and 32 for
a fixed time per cell, cut in ROUNDS slices in which the three servers take turns, and
records p50/p99 latency and requests/s over the slices. Every cell is measured in both
connection modes (MODES): a new connection per request, and keep-alive (each client thread
keeps its connection, as the connection pool of a calling service does); the goals hold in
both. Needs `make pipeline` (DATA_DIR with a promoted model and a materialized online store).

    .venv/bin/python bench/bench_serving.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _util import cell_bar, say, write_result  # noqa: E402

from core.settings import Settings  # noqa: E402
from serving.process import free_port, gunicorn_argv, stop_process, wait_ready  # noqa: E402

CONCURRENCY = (1, 8, 32)
#: gunicorn workers and threads per worker, the same for this server and the floor app
#: (feast serve runs 2 uvicorn workers).
WORKERS, THREADS = 2, 4
BATCHES = (1, 100)
#: How clients connect: a new connection per request, or one kept alive per client thread.
MODES = ("new connection", "keep-alive")
BODIES = 200
#: Slices per server and cell (the servers take turns).
ROUNDS = 4


def stop(process: subprocess.Popen) -> None:
    stop_process(process, group=True)


def start(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def load(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
         warmup: float = 1.0, keepalive: bool = False) -> dict:
    """Closed-loop load: ``concurrency`` threads, each sending its next request on the last
    answer, for ``warmup`` seconds (not recorded) and then ``seconds``; each thread opens a
    new connection per request, or (``keepalive``) keeps one (opened again if the server
    closed it). Returns the recorded latencies (seconds), the measured wall time and the
    failed requests."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = [0.0]
    headers = {"Content-Type": "application/json", **({} if keepalive else {"Connection": "close"})}

    def worker(offset: int) -> None:
        i = offset
        mine = []
        bad = 0
        conn = None
        while time.perf_counter() < stop_at[0]:
            body = bodies[i % len(bodies)]
            i += concurrency
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
                if not keepalive or response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                ok = False
                if conn is not None:
                    conn.close()
                    conn = None
            if ok:
                mine.append(time.perf_counter() - started)
            else:
                bad += 1
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    def run(duration: float) -> float:
        started = time.perf_counter()
        stop_at[0] = started + duration
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started

    if warmup > 0:
        run(warmup)
        latencies.clear()
        errors[0] = 0
    wall = run(seconds)
    return {"latencies": latencies, "wall": wall, "errors": errors[0]}


def summary(slices: list[dict]) -> dict:
    """p50/p99 over every recorded latency of the slices, requests/s over their total time."""
    ms = np.array([x for s in slices for x in s["latencies"]]) * 1000
    wall = sum(s["wall"] for s in slices)
    return {"p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "req_s": len(ms) / wall, "errors": sum(s["errors"] for s in slices)}


def bench_flights(settings: Settings, as_of: pd.Timestamp) -> pd.DataFrame:
    from core.usecase import load_use_case
    from training.dataset import load_events

    events = load_events(settings, load_use_case())
    when = events["scheduled_departure"]
    recent = events[(when > as_of - pd.Timedelta(days=1)) & (when <= as_of) & events["tailnum"].notna()]
    return recent.sample(n=min(len(recent), 2000), random_state=0).reset_index(drop=True)


def bodies_for(flights: pd.DataFrame, size: int, feast_service: str | None = None) -> list[bytes]:
    rng = np.random.default_rng(size)
    out = []
    for _ in range(BODIES):
        rows = flights.iloc[rng.choice(len(flights), size=size, replace=False)]
        entities = [{"origin": r.origin, "dest": r.dest, "carrier": r.carrier, "tailnum": r.tailnum,
                     "flight": int(r.flight), "scheduled_departure": r.scheduled_departure.isoformat()}
                    for r in rows.itertuples()]
        if feast_service:
            columns = {k: [e[k] for e in entities] for k in ("origin", "dest", "carrier", "tailnum")}
            columns["scheduled_departure"] = [int(r.scheduled_departure.timestamp()) for r in rows.itertuples()]
            body = {"feature_service": feast_service, "entities": columns, "full_feature_names": True}
        else:
            body = {"flights": entities}
        out.append(json.dumps(body).encode())
    return out


def build_floor(settings: Settings, store, model, as_of: pd.Timestamp, directory: Path) -> dict:
    """One SQLite table per feature view: the latest source row per entity at ``as_of``."""
    import sqlite3

    import duckdb

    db = directory / "floor.db"
    conn = sqlite3.connect(db)
    views = []
    wanted = {f.split("__", 1)[0] for f in model.features}
    for view in store.list_feature_views():
        if view.name not in wanted:
            continue
        keys = [c.name for c in view.entity_columns]
        columns = [f.name for f in view.features]
        ts = view.batch_source.timestamp_field
        frame = duckdb.sql(
            f"SELECT {', '.join(keys + columns)} FROM read_parquet('{view.batch_source.path}') "
            f"WHERE {ts} <= TIMESTAMPTZ '{as_of.isoformat()}' "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY {ts} DESC) = 1").df()
        table = f"floor_{view.name}"
        conn.execute(f"CREATE TABLE {table} ({', '.join(keys + columns)}, PRIMARY KEY ({', '.join(keys)}))")
        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(keys + columns))})",
                         [tuple(None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in row)
                          for row in frame.itertuples(index=False)])
        views.append({"name": view.name, "table": table, "keys": keys, "columns": columns})
    conn.commit()
    conn.close()
    spec = directory / "floor.json"
    spec.write_text(json.dumps({"features": model.features, "views": views}))
    return {"FLOOR_DB": str(db), "FLOOR_SPEC": str(spec),
            "FLOOR_MODEL": str(settings.models / model.version / "model.ubj")}


def build_stock_store(settings: Settings, as_of: pd.Timestamp, directory: Path) -> Path:
    """The anchor's store: Feast's stock SQLite online store (and local engine), materialized
    from a copy of the registry over the same source tables up to ``as_of``; `feast serve`
    reads it. (This server reads the packed store named in feature_store.yaml.)"""
    import shutil

    from feast import FeatureStore

    from pipeline.materialize import EPOCH
    shutil.copy(settings.data_dir / "registry.db", directory / "registry_stock.db")
    text = settings.feature_store_yaml.read_text()
    text = text.replace("${DATA_DIR}/registry.db", str(directory / "registry_stock.db"))
    text = text.replace("type: feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore", "type: sqlite")
    text = text.replace("${DATA_DIR}/online_store.db", str(directory / "online_stock.db"))
    text = text.replace("type: feast_plugins.packed_sqlite_store.PackedLocalComputeEngine", "type: local")
    # The packed store's own options (`journal_mode`, `synchronous`) are not the stock store's:
    # drop them (they concern writes; the anchor is measured on reads).
    text = re.sub(r"(?m)^  (?:journal_mode|synchronous):.*\n", "", text)
    if "packed_sqlite_store" in text:
        raise RuntimeError(f"could not derive a stock-store YAML from {settings.feature_store_yaml}")
    path = directory / "feature_store_stock.yaml"
    path.write_text(text)
    store = FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=path)
    views = store.list_feature_views()
    store._get_provider().online_store.update(store.config, [], views, [], [], partial=False)
    store.materialize(start_date=EPOCH, end_date=as_of.to_pydatetime())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per cell")
    args = parser.parse_args()

    from core.quiet import quiet_third_party_warnings
    from feast_plugins.store import feature_store
    from pipeline.ingest import latest_snapshot
    from training.registry import ModelRegistry

    quiet_third_party_warnings()
    settings = Settings.from_env()
    registry = ModelRegistry(settings.models)
    if registry.champion() is None or not (settings.data_dir / "online_store.db").exists():
        print("no promoted model or online store: running `pipeline run` first", file=sys.stderr)
        subprocess.run([str(Path(sys.executable).with_name("pipeline")), "run"], check=False)
    model = registry.load_champion()
    as_of = pd.Timestamp(latest_snapshot(settings).as_of)
    store = feature_store(settings)
    flights = bench_flights(settings, as_of)
    service = model.metadata["feature_service"]
    workdir = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.upper().startswith("PROMETHEUS_MULTIPROC")}
    floor_env = build_floor(settings, store, model, as_of, workdir)
    stock_yaml = build_stock_store(settings, as_of, workdir)
    bin_dir = Path(sys.executable).parent

    systems = {
        "feast serve": (
            [str(bin_dir / "feast"), "-c", str(settings.feature_repo), "-f", str(stock_yaml), "serve",
             "-h", "127.0.0.1", "-p", "{port}",
             "-w", "2", "--max-requests", "0", "--no-access-log"],
            "/get-online-features", "/health", env, service),
        "this server /predict": (
            gunicorn_argv(),
            "/predict", "/healthz",
            {**env, "WEB_CONCURRENCY": str(WORKERS), "WEB_THREADS": str(THREADS), "ACCESS_LOG": "",
             "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"), "DATA_DIR": str(settings.data_dir)}, None),
        "floor app": (
            [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "--worker-class", "gthread",
             "--threads", str(THREADS), "--no-control-socket", "--chdir", str(ROOT / "bench"),
             "-b", "127.0.0.1:{port}",
             "floor_app:create_app()"],
            "/predict", "/healthz", {**env, **floor_env}, None),
    }
    # All three servers run at once (idle ones cost nothing) and each cell measures them
    # back to back, so a change in the machine's load between cells hits all three alike.
    running = {}
    try:
        for name, (argv, path, health, system_env, feast_service) in systems.items():
            port = free_port()
            argv = [a.replace("{port}", str(port)) for a in argv]
            process = start(argv, {**system_env, "PORT": str(port), "HOST": "127.0.0.1"})
            running[name] = (process, port, path, feast_service)
            wait_ready(f"http://127.0.0.1:{port}", process, timeout=180, path=health)
        rows = []
        bar = cell_bar("serving: cells", len(MODES) * len(BATCHES) * len(CONCURRENCY))
        for mode in MODES:
            for size in BATCHES:
                bodies = {name: bodies_for(flights, size, feast_service)
                          for name, (_, _, _, feast_service) in running.items()}
                for concurrency in CONCURRENCY:
                    # The cell's time is cut in ROUNDS slices per server, the servers taking
                    # turns (in a rotating order): a change in the machine's speed during the
                    # cell reaches all three alike, and so leaves their ratios alone.
                    slices: dict[str, list[dict]] = {name: [] for name in running}
                    names = list(running)
                    for k in range(ROUNDS):
                        for name in names[k % len(names):] + names[:k % len(names)]:
                            _, port, path, _ = running[name]
                            slices[name].append(load(port, path, bodies[name], concurrency, args.seconds / ROUNDS,
                                                     warmup=1.0 if k == 0 else 0.25,
                                                     keepalive=mode == "keep-alive"))
                    for name in names:
                        row = {"case": case_name(size, concurrency, mode), "variant": name, **summary(slices[name])}
                        say(json.dumps(row))
                        rows.append(row)
                    bar.update(1, case_name(size, concurrency, mode))
        bar.close()
    finally:
        for process, *_ in running.values():
            stop(process)

    def cell(variant, size, concurrency, mode):
        return next(r for r in rows if r["variant"] == variant and r["case"] == case_name(size, concurrency, mode))

    ours, feast, floor = "this server /predict", "feast serve", "floor app"
    goals = []
    for mode in MODES:
        p50_ratio = cell(ours, 1, 1, mode)["p50_ms"] / cell(feast, 1, 1, mode)["p50_ms"]
        rps_ratio = cell(ours, 1, 8, mode)["req_s"] / cell(feast, 1, 8, mode)["req_s"]
        floor_ratio = cell(ours, 1, 1, mode)["p50_ms"] / cell(floor, 1, 1, mode)["p50_ms"]
        p99_100 = cell(ours, 100, 1, mode)["p99_ms"]
        goals += [
            {"goal": f"/predict p50 / feast serve p50 (1 entity, concurrency 1, {mode})", "value": p50_ratio,
             "target": "<= 0.5", "met": p50_ratio <= 0.5},
            {"goal": f"/predict req/s / feast serve req/s (1 entity, concurrency 8, {mode})", "value": rps_ratio,
             "target": ">= 3", "met": rps_ratio >= 3},
            {"goal": f"/predict p50 / floor app p50 (1 entity, concurrency 1, {mode})", "value": floor_ratio,
             "target": "<= 1.3", "met": floor_ratio <= 1.3},
            {"goal": f"/predict p99 ms, 100 entities, concurrency 1, {mode}", "value": p99_100,
             "target": "<= 15", "met": p99_100 <= 15},
        ]
    errors = sum(r["errors"] for r in rows)
    write_result("serving", "Online serving, the same data materialized to the same instant (this server: "
                 "packed SQLite store, direct read; feast serve: Feast's stock SQLite store), 2 workers per server "
                 f"(this server: serving/worker.py, {THREADS} threads each; the floor app: gthread, {THREADS} "
                 f"threads each), {args.seconds:.0f} s per cell and server in {ROUNDS} turns, each cell with a new "
                 "connection per request and with kept-alive connections (one per client thread); "
                 "/predict includes features, "
                 "TTL checks, prediction, metrics and the feature log (sample rate 1); feast serve only "
                 f"returns features. Failed requests in all cells: {errors}",
                 rows, goals, extra={"as_of": as_of.isoformat(), "flights": len(flights)})
    return 0


def case_name(size: int, concurrency: int, mode: str) -> str:
    return f"{size} entit{'y' if size == 1 else 'ies'}, concurrency {concurrency}, {mode}"


if __name__ == "__main__":
    sys.exit(main())
