"""/predict with the windowed FeatureService late_arrival_v3 against late_arrival_v1, through
the real server, in one run.

Each service gets its own DATA_DIR holding what ``make pipeline`` leaves with
``FEATURE_SERVICE`` set to it (a promoted model of that service and a materialized online
store: for v3 also the windowed views' states), built with ``pipeline run`` if it has no
champion yet. Both servers run at once, started as ``make serve`` starts the server
(``serving.process.gunicorn_argv``, 2 workers x 4 threads, as ``bench_serving.py`` runs it);
a closed-loop client (``bench_serving.load``) sends one real flight per request
(``bench_serving.bench_flights``: the flights of the last day before the data's end) at
concurrency 1, keep-alive and a new connection per request, in ROUNDS slices in which the two
servers take turns, so a change in the machine's load reaches both alike. Goal (issue 14):
v3's p50 at most 1.15 x v1's.

    .venv/bin/python bench/bench_windows_serving.py [--seconds 8] [--v1-dir DIR] [--v3-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _util import say, write_result  # noqa: E402

SERVICES = ("late_arrival_v1", "late_arrival_v3")
MODES = ("keep-alive", "new connection")
ROUNDS = 8
GOAL = 1.15


def prepare(service: str, data_dir: Path) -> Path:
    """``data_dir`` with a promoted model of ``service`` and its online store (``pipeline run``
    with FEATURE_SERVICE=service when it has no champion yet)."""
    from core.settings import Settings
    from training.registry import ModelRegistry

    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATA_DIR": str(data_dir), "FEATURE_SERVICE": service}
    env.pop("RAW_DIR", None)
    if ModelRegistry(Settings(data_dir=data_dir).models).champion() is None:
        say(f"{service}: pipeline run into {data_dir}")
        subprocess.run([str(Path(sys.executable).with_name("pipeline")), "run"], env=env, check=True)
    champion = ModelRegistry(Settings(data_dir=data_dir).models).load_champion()
    if champion.metadata["feature_service"] != service:
        raise SystemExit(f"{data_dir}: its champion serves {champion.metadata['feature_service']!r}, not {service!r}")
    return data_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per server and cell")
    parser.add_argument("--v1-dir", type=Path, default=None)
    parser.add_argument("--v3-dir", type=Path, default=None)
    args = parser.parse_args()

    import pandas as pd
    from bench_serving import bench_flights, bodies_for, load, start, stop, summary

    from core.quiet import quiet_third_party_warnings
    from core.settings import Settings
    from pipeline.ingest import latest_snapshot
    from serving.process import free_port, gunicorn_argv, wait_ready

    quiet_third_party_warnings()
    work = Path(tempfile.mkdtemp(prefix="bench_windows_serving_"))
    dirs = {"late_arrival_v1": prepare("late_arrival_v1", args.v1_dir or work / "v1"),
            "late_arrival_v3": prepare("late_arrival_v3", args.v3_dir or work / "v3")}
    settings = Settings(data_dir=dirs["late_arrival_v1"])
    as_of = pd.Timestamp(latest_snapshot(settings).as_of)
    flights = bench_flights(settings, as_of)
    bodies = bodies_for(flights, 1)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PROMETHEUS_MULTIPROC")}
    running = {}
    rows = []
    try:
        for service, data_dir in dirs.items():
            port = free_port()
            process = start(gunicorn_argv(), {
                **env, "DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "WEB_CONCURRENCY": "2",
                "WEB_THREADS": "4", "ACCESS_LOG": "", "PROMETHEUS_MULTIPROC_DIR": str(work / f"metrics_{service}"),
                "PORT": str(port), "HOST": "127.0.0.1"})
            running[service] = (process, port)
            wait_ready(f"http://127.0.0.1:{port}", process, timeout=180, path="/healthz")
        for mode in MODES:
            slices: dict[str, list[dict]] = {s: [] for s in running}
            for k in range(ROUNDS):
                order = list(running) if k % 2 == 0 else list(reversed(running))
                for service in order:
                    slices[service].append(load(running[service][1], "/predict", bodies, 1, args.seconds / ROUNDS,
                                                warmup=1.0 if k == 0 else 0.25, keepalive=mode == "keep-alive"))
            for service in running:
                row = {"case": f"/predict, 1 entity, concurrency 1, {mode}", "variant": service,
                       **summary(slices[service]), "load_1m": round(os.getloadavg()[0], 1)}
                say(json.dumps(row))
                rows.append(row)
    finally:
        for process, _ in running.values():
            stop(process)
    goals = []
    for mode in MODES:
        v1, v3 = (next(r for r in rows if r["variant"] == s and r["case"].endswith(mode)) for s in SERVICES)
        ratio = v3["p50_ms"] / v1["p50_ms"]
        goals.append({"goal": f"/predict p50 late_arrival_v3 / v1 (1 entity, concurrency 1, {mode})",
                      "value": round(ratio, 3), "target": f"<= {GOAL}", "met": ratio <= GOAL})
    for r in rows:
        r.update({k: round(v, 3) for k, v in r.items() if isinstance(v, float)})
    write_result("windows_serving", "/predict with late_arrival_v3 (13 windowed features read at the request's "
                 "instant) vs late_arrival_v1, the real server (2 workers x 4 threads) on each service's own "
                 "DATA_DIR, one flight per request, concurrency 1, the servers taking turns in "
                 f"{ROUNDS} slices per cell", rows, goals, extra={"as_of": as_of.isoformat(), "flights": len(flights)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
