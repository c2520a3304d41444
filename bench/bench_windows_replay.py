"""The replay's served AUC and log loss with the event feed (late_arrival_v3, windowed
features pushed event by event) against the hourly push feed (late_arrival_v2), from two
replay summaries (``replay run`` writes ``DATA_DIR/reports/replay/<name>.json``).

Nothing is replayed here: a full-year replay takes about an hour on 2 cores, so each is run
on its own (``FEATURE_SERVICE=late_arrival_v2 replay run --feed push`` and
``FEATURE_SERVICE=late_arrival_v3 replay run --feed events``, the same defaults otherwise)
and this script compares what they served. When the two cover different days (a shorter
run), only the weeks both served are compared, and the result says which: the weekly
metrics (``weeks`` in the summaries) are pooled over those weeks, weighted by their rows.

    .venv/bin/python bench/bench_windows_replay.py --events EVENTS.json --push PUSH.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import write_result  # noqa: E402


def pooled(weeks: list[dict], metric: str) -> float:
    """The rows-weighted mean of ``metric`` of the served (dynamic) predictions over ``weeks``
    (exact for log loss; for AUC an approximation, said so in the result)."""
    rows = sum(w["dynamic"]["rows"] for w in weeks)
    return sum(w["dynamic"][metric] * w["dynamic"]["rows"] for w in weeks) / rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, required=True, help="summary JSON of the events-feed replay")
    parser.add_argument("--push", type=Path, required=True, help="summary JSON of the push-feed replay")
    args = parser.parse_args()
    runs = {"events": json.loads(args.events.read_text()), "push": json.loads(args.push.read_text())}
    weeks = {name: {w["week"]: w for w in run["weeks"] if w["dynamic"]["rows"]} for name, run in runs.items()}
    # A week both served in full: a partial last week of a shorter run is left out.
    common = sorted(k for k in weeks["events"].keys() & weeks["push"].keys()
                    if (weeks["events"][k]["from"], weeks["events"][k]["to"]) ==
                    (weeks["push"][k]["from"], weeks["push"][k]["to"])
                    and weeks["events"][k]["dynamic"]["rows"] == weeks["push"][k]["dynamic"]["rows"])
    if not common:
        raise SystemExit("the two replays have no served week in common")
    rows = []
    for name, run in runs.items():
        chosen = [weeks[name][k] for k in common]
        full_year = run["served_days"] >= 300 and len(common) == len(weeks[name])
        rows.append({"case": f"weeks {common[0]}-{common[-1]} ({chosen[0]['from']} to {chosen[-1]['to']})",
                     "variant": f"{run['config']['feature_service']} + {run['config']['feed']} feed",
                     "run": run["config"]["name"], "run_served_days": run["served_days"],
                     "served_rows": sum(w["dynamic"]["rows"] for w in chosen),
                     "auc_weekly_mean": round(pooled(chosen, "auc"), 4),
                     "log_loss": round(pooled(chosen, "log_loss"), 4),
                     **({"overall_auc": round(run["overall"]["dynamic"]["auc"], 4),
                         "overall_log_loss": round(run["overall"]["dynamic"]["log_loss"], 4)} if full_year else {})})
    events, push = rows
    goals = [{"goal": "served AUC (weekly, rows-weighted), events feed v3 - push feed v2",
              "value": round(events["auc_weekly_mean"] - push["auc_weekly_mean"], 4), "target": "> 0",
              "met": events["auc_weekly_mean"] > push["auc_weekly_mean"]},
             {"goal": "served log loss, events feed v3 - push feed v2",
              "value": round(events["log_loss"] - push["log_loss"], 4), "target": "< 0",
              "met": events["log_loss"] < push["log_loss"] and not math.isnan(events["log_loss"])}]
    write_result("windows_replay", "Replay served metrics: late_arrival_v3 with the event feed vs late_arrival_v2 "
                 "with the hourly push feed, over the weeks both replays served (from their summaries; "
                 "log loss pooled exactly, AUC as the rows-weighted mean of weekly AUCs)", rows, goals,
                 extra={"summaries": {"events": str(args.events), "push": str(args.push)}, "weeks": common})
    return 0


if __name__ == "__main__":
    sys.exit(main())
