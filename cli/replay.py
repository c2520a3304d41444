"""`replay run`: walk the history day by day as if live, under one training policy."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date

from cli.entry import run
from replay.config import FEEDS, POLICIES, ReplayConfig


def cmd_run(args) -> int:
    from cli.entry import context
    from replay.run import run_replay

    settings, use_case = context()
    config = ReplayConfig(policy=args.policy, start=args.start, warmup_days=args.warmup_days, days=args.days,
                          retrain_every_days=args.retrain_every_days, window_days=args.window_days,
                          monitor_every_days=args.monitor_every_days, seed=args.seed,
                          num_boost_round=args.rounds, bad_days=tuple(args.bad_day), feed=FEEDS[args.feed],
                          feature_service=settings.feature_service)
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    summary = run_replay(settings, use_case, config)
    if args.profile:
        profiler.stop()
        path = settings.reports / "replay" / f"profile-{config.name}.html"
        path.write_text(profiler.output_html())
        path.with_suffix(".txt").write_text(profiler.output_text(unicode=False, color=False))
        print(f"profile: {path} (and .txt)", file=sys.stderr)
    for line in summary["conclusion"] + summary["conclusion_timing"]:
        print(f"- {line}")
    return 0


def _env_int(name: str, default):
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replay", description="Replay the history day by day as if live "
                                     "(ingest, validate, features, materialize, serve, score, monitor, retrain); "
                                     "report under DATA_DIR/reports/replay/.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one replay under one training policy")
    r.add_argument("--policy", choices=POLICIES,
                   default=os.environ.get("REPLAY_POLICY") or "periodic",
                   help="static: train once on the warm-up; periodic: every --retrain-every-days on a sliding "
                        "--window-days; triggered: when monitoring's drift/quality alerts fire (REPLAY_POLICY)")
    r.add_argument("--days", type=int, default=_env_int("REPLAY_DAYS", None),
                   help="served days after the warm-up (REPLAY_DAYS; default: until the data ends)")
    d = ReplayConfig()
    r.add_argument("--start", type=date.fromisoformat, default=d.start, help="first day of history")
    r.add_argument("--warmup-days", type=int, default=d.warmup_days,
                   help="history before the first served day, the static policy's training data (N weeks x 7)")
    r.add_argument("--retrain-every-days", type=int, default=d.retrain_every_days, help="K, the periodic period")
    r.add_argument("--window-days", type=int, default=d.window_days, help="the sliding training window")
    r.add_argument("--monitor-every-days", type=int, default=d.monitor_every_days, help="how often monitoring runs")
    r.add_argument("--seed", type=int, default=d.seed)
    r.add_argument("--rounds", type=int, default=d.num_boost_round, help="XGBoost boosting rounds per retrain")
    r.add_argument("--bad-day", type=date.fromisoformat, action="append", default=[],
                   help="corrupt that day's delivery (its rows arrive twice): the ingest gate must refuse it")
    r.add_argument("--feed", choices=sorted(FEEDS), default=os.environ.get("REPLAY_FEED") or "none",
                   help="intraday feed run before each hour's requests (none: the nightly batch only; push: the "
                        "use case's push sources, hour by hour, pipeline.push.push_window; REPLAY_FEED)")
    r.add_argument("--profile", action="store_true", help="pyinstrument profile to reports/replay/ "
                   "(pip install -e '.[bench]')")
    r.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
