"""The per-request cost of recording served value ages (issue 16 item 4): the server's
request-path work for one batch of entities, ``OnlineFeatures.lookup`` (after the online
read) plus ``Metrics.observe_vectors``, as it is now (ages computed per entity and added to
the buffered histogram) against the same two functions at the commit before ages existed
(the anchor, loaded from git in the same run, on the same synthetic online response).

The response mimics late_arrival_v2's: 6 time-stamped views, 24 features, every value
found; 1 and 100 entities per request. No online store is read (its cost is the same on
both sides and would only add noise): what is measured is exactly the code that changed.
The ages themselves are computed off the request path, by the metrics' flush thread (its
CPU per request is reported too, ``flush_us_per_request``) and the feature log's writer.

    .venv/bin/python bench/bench_value_age.py [--repeat 2000]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _util import say, write_result  # noqa: E402

#: The last commit without served value ages.
ANCHOR_COMMIT = "d5249cb"
VIEWS = {"weather_hourly": 9, "origin_recent": 3, "aircraft": 3, "carrier_daily": 3, "origin_daily": 3,
         "route_daily": 3}
#: The goals: ages add at most this many CPU microseconds to a request of 1 entity, and per
#: entity to one of 100 (a /predict takes milliseconds: either is under 1% of it).
GOAL_US = {1: 20.0, 100: 5.0}


def _module_at(commit: str, path: str, name: str):
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    file = Path(tempfile.mkdtemp()) / Path(path).name
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _online(module, n: int):
    """An OnlineFeatures of ``module`` answering a fixed response for ``n`` entities."""
    from feast_plugins.on_demand import TS_SUFFIX

    features = [f"{view}__f{j}" for view, count in VIEWS.items() for j in range(count)]
    at = datetime(2013, 12, 1, 12, tzinfo=timezone.utc)
    stamp = int((at - timedelta(minutes=30)).timestamp())
    response = {f: [float(j)] * n for j, f in enumerate(features)}
    for view in VIEWS:
        response[f"{view}__f0{TS_SUFFIX}"] = [stamp] * n
    online = module.OnlineFeatures.__new__(module.OnlineFeatures)
    online.features, online.join_keys, online.request_time_field = features, ["origin"], "scheduled_departure"
    online.direct, online.on_demand, online._stale_cache = None, None, {}
    positions = {}
    for i, f in enumerate(features):
        positions.setdefault(f.split("__")[0], []).append(i)
    online._views = [module.TimedView(features[p[0]], 3 * 3600, p) for p in positions.values()]
    if hasattr(module, "AgeViews"):
        online.age_views = module.AgeViews(tuple(positions), (5400.0,) * len(positions))
    online._read = lambda rows: response
    entities = [{"origin": "EWR", "scheduled_departure": at}] * n
    return online, entities


def _seconds_per_call(sides: list, n: int, repeat: int, rounds: int = 7) -> list[float]:
    """CPU seconds per request of each side ``(online module, metrics module)``: the best of
    ``rounds`` rounds, the sides taking turns in each (CPU time of this process, so other
    processes on a busy machine cost it little)."""
    setups = []
    for module, metrics_module in sides:
        online, entities = _online(module, n)
        setups.append((online, entities, metrics_module.Metrics()))
    best = [float("inf")] * len(sides)
    for _ in range(rounds):
        for i, (online, entities, metrics) in enumerate(setups):
            began = time.process_time()
            for _ in range(repeat):
                metrics.observe_vectors(online.lookup(entities))
            best[i] = min(best[i], (time.process_time() - began) / repeat)
    return best


def _flush_seconds_per_request(module, metrics_module, n: int, repeat: int) -> float:
    """CPU seconds the metrics' flush thread spends per request on its ages (computing and
    placing them; writing the counters once per flush is left out): ``repeat`` requests'
    lookups placed at once, the best of 5."""
    online, entities = _online(module, n)
    metrics = metrics_module.Metrics()
    vectors = online.lookup(entities)
    best = float("inf")
    for _ in range(5):
        for _ in range(repeat):
            metrics.ages.add(vectors[0].age_batch)
        began = time.process_time()
        metrics.ages._place_batches()
        best = min(best, (time.process_time() - began) / repeat)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    import serving.metrics as metrics_now
    import serving.online as online_now

    online_then = _module_at(ANCHOR_COMMIT, "serving/online.py", "anchor_online")
    metrics_then = _module_at(ANCHOR_COMMIT, "serving/metrics.py", "anchor_metrics")
    rows, goals = [], []
    for n in (1, 100):
        repeat = max(20, args.repeat // n)
        then, now = _seconds_per_call([(online_then, metrics_then), (online_now, metrics_now)], n, repeat)
        added_us = (now - then) * 1e6
        rows.append({"entities": n, "anchor_us": round(then * 1e6, 2), "with_ages_us": round(now * 1e6, 2),
                     "added_us": round(added_us, 2), "added_us_per_entity": round(added_us / n, 3),
                     "ratio": round(now / then, 3)})
        say(f"{n} entities: {then * 1e6:.1f} us -> {now * 1e6:.1f} us CPU per request "
            f"(+{added_us:.1f} us, {added_us / n:.2f} us per entity)")
        goals.append({"goal": f"ages add <= {GOAL_US[n]} us CPU per entity ({n} per request)",
                      "value": round(added_us / n, 3), "target": GOAL_US[n], "met": added_us / n <= GOAL_US[n]})
        flush = _flush_seconds_per_request(online_now, metrics_now, n, repeat)
        rows[-1]["flush_us_per_request"] = round(flush * 1e6, 2)
        say(f"  off the request path, the flush thread's ages: {flush * 1e6:.1f} us CPU per request")
    write_result("value_age", "request-path cost of served value ages: lookup + observe_vectors, now vs "
                 f"{ANCHOR_COMMIT} (no ages), synthetic 6-view response", rows, goals)


if __name__ == "__main__":
    main()
