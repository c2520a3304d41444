"""Full-year replay, periodic weekly retraining, against the 15-minute goal.

Runs ``replay run --policy periodic`` (the defaults: 4 weeks of warm-up, then every day
of 2013 to the end of the data, a retrain every 7 days on a 4-week window, monitoring
weekly) in a fresh process over a fresh DATA_DIR, and records where the time went, the
machine's load around it (the 2 cores are shared), and the replay's own quality numbers.

    .venv/bin/python bench/bench_replay.py            # the whole year
    .venv/bin/python bench/bench_replay.py --days 14  # a quick look (not written to results/)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import run_isolated, write_result  # noqa: E402

GOAL_SECONDS = 15 * 60


def _replay(data_dir: str, days: int | None) -> dict:
    os.environ["DATA_DIR"] = data_dir
    os.environ.pop("RAW_DIR", None)
    from cli.entry import context
    from core import progress
    from core.quiet import quiet_third_party_warnings
    from replay.config import ReplayConfig
    from replay.run import run_replay

    quiet_third_party_warnings()
    progress.enable()  # the replay's bar over its days
    settings, use_case = context()
    summary = run_replay(settings, use_case, ReplayConfig(policy="periodic", days=days))
    keep = ("served_days", "events", "overall", "promotions", "rejections", "timing", "conclusion",
            "conclusion_timing", "refusals", "config")
    return {**{k: summary[k] for k in keep}, "alerts": len(summary["alerts"]), "retrains": len(summary["retrains"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=None, help="served days (default: the whole year)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        result = run_isolated(_replay, tmp, args.days)
    load_after = os.getloadavg()
    s = result["value"]
    wall = result["wall_s"]
    o = s["overall"]
    rows = [{"case": f"periodic weekly, {s['served_days']} served days", "variant": "whole replay",
             "seconds": round(wall, 1), "share": 1.0, "per_day_s": round(wall / s["served_days"], 3),
             "events": s["events"], "peak_mib": round(result["peak_mib"])}]
    for stage, seconds in sorted(s["timing"]["stages_seconds"].items(), key=lambda kv: -kv[1]):
        rows.append({"case": "stage", "variant": stage, "seconds": round(seconds, 1),
                     "share": round(seconds / wall, 3), "per_day_s": round(seconds / s["served_days"], 3)})
    goals = [{"goal": "full-year replay with weekly periodic retraining, wall seconds", "value": round(wall, 1),
              "target": f"<= {GOAL_SECONDS}", "met": wall <= GOAL_SECONDS and s["served_days"] >= 300}]
    extra = {"load_average_before": load_before, "load_average_after": load_after,
             "quality": {"dynamic": o["dynamic"], "static": o["static"], "latency_ms": o["latency_ms"]},
             "retrains": s["retrains"], "promotions": s["promotions"], "rejections": s["rejections"],
             "alerts": s["alerts"], "refusals": len(s["refusals"]),
             "conclusion": s["conclusion"] + s["conclusion_timing"]}
    print(f"replay: {wall:.0f} s for {s['served_days']} days (load {load_before[0]:.1f} -> {load_after[0]:.1f})")
    if args.days is not None:
        print("(a shortened run: not written to bench/results/)")
        return 0
    write_result("replay", "Full-year replay of 2013, day by day as if live (ingest, gates, features, "
                 "materialize, nightly batch scoring, every event answered by /predict and /precomputed of one "
                 "gunicorn server, weekly monitoring, weekly retrain on a 4-week window behind the model gate), "
                 "in a fresh process; the 2 cores were shared (load average in the JSON)", rows, goals, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
