"""`replay run`: walk the history day by day as if live, under one training policy.

A bad option is a usage error naming it; a bad REPLAY_* variable a
:class:`~core.errors.ConfigError` naming it; both exit 2, never with a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date

from cli.entry import parse, run
from replay.config import FEEDS, POLICIES, ReplayConfig


def at_least_one(text: str) -> int:
    """argparse type: a whole number of at least 1 (a count of days or rounds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def day(text: str) -> date:
    """argparse type: an ISO 8601 date."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date, e.g. 2013-01-22") from None


def one_of(choices):
    """An argparse-style type accepting only ``choices`` (for a variable: argparse checks
    an option's ``choices`` itself, never its default)."""

    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def fault(text: str):
    """argparse type: a fault spec (:func:`replay.faults.parse`)."""
    from replay.faults import FaultError, parse

    try:
        return parse(text)
    except FaultError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def from_env(name: str, parse, default):
    """The environment variable ``name`` through ``parse`` (one of the argparse types above),
    ``default`` when it is unset or empty; a bad value is a :class:`~core.errors.ConfigError`
    naming it (the types' messages begin with the value: ``REPLAY_DAYS='x' is not ...``)."""
    from core.errors import ConfigError

    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse(raw)
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"{name}={e}") from None


def cmd_run(args) -> int:
    from cli.entry import context
    from replay.run import run_replay

    # The variables are read here, inside cli.entry.run, so a bad one is refused by name.
    policy = args.policy or from_env("REPLAY_POLICY", one_of(POLICIES), "periodic")
    days = args.days if args.days is not None else from_env("REPLAY_DAYS", at_least_one, None)
    feed = args.feed or from_env("REPLAY_FEED", one_of(sorted(FEEDS)), "none")
    settings, use_case = context()
    config = ReplayConfig(policy=policy, start=args.start, warmup_days=args.warmup_days, days=days,
                          retrain_every_days=args.retrain_every_days, window_days=args.window_days,
                          monitor_every_days=args.monitor_every_days, seed=args.seed,
                          num_boost_round=args.rounds, bad_days=tuple(args.bad_day), feed=FEEDS[feed],
                          feature_service=settings.feature_service, faults=tuple(args.inject))
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
    from core.progress import summary as last_line

    last_line(f"replay ({config.name}): {summary['served_days']} days served in "
              f"{summary['timing']['total_seconds']:.0f}s; report: {summary['paths']['html']} "
              f"(JSON: {summary['paths']['json']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replay", description="Replay the history day by day as if live "
                                     "(ingest, validate, features, materialize, serve, score, monitor, retrain); "
                                     "report under DATA_DIR/reports/replay/.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one replay under one training policy")
    r.add_argument("--policy", choices=POLICIES,
                   help="static: train once on the warm-up; periodic: every --retrain-every-days on a sliding "
                        "--window-days; triggered: when monitoring's drift/quality alerts fire (REPLAY_POLICY; "
                        "default: periodic)")
    r.add_argument("--days", type=at_least_one,
                   help="served days after the warm-up (REPLAY_DAYS; default: until the data ends)")
    d = ReplayConfig()
    r.add_argument("--start", type=day, default=d.start, help="first day of history")
    r.add_argument("--warmup-days", type=at_least_one, default=d.warmup_days,
                   help="history before the first served day, the static policy's training data (N weeks x 7)")
    r.add_argument("--retrain-every-days", type=at_least_one, default=d.retrain_every_days,
                   help="K, the periodic period")
    r.add_argument("--window-days", type=at_least_one, default=d.window_days, help="the sliding training window")
    r.add_argument("--monitor-every-days", type=at_least_one, default=d.monitor_every_days,
                   help="how often monitoring runs")
    r.add_argument("--seed", type=int, default=d.seed)
    r.add_argument("--rounds", type=at_least_one, default=d.num_boost_round, help="XGBoost boosting rounds per retrain")
    r.add_argument("--bad-day", type=day, action="append", default=[],
                   help="corrupt that day's delivery (its rows arrive twice): the ingest gate must refuse it")
    r.add_argument("--feed", choices=sorted(FEEDS),
                   help="intraday feed run before each hour's requests (none: the nightly batch only; push: the "
                        "use case's push sources, hour by hour, pipeline.push.push_window; events: windowed views' "
                        "events before every request instant, replay/events_feed.py; REPLAY_FEED; default: none)")
    r.add_argument("--inject", type=fault, action="append", default=[], metavar="FAULT",
                   help="inject a fault, to check monitoring names its cause (repeatable; replay/faults.py): "
                        "push-delay=2h, late-rows[=HOURS], skip-materialize, transform-change[=TABLE.COLUMN], "
                        "each optionally @YYYY-MM-DD (one served day)")
    r.add_argument("--profile", action="store_true", help="pyinstrument profile to reports/replay/ "
                   "(pip install -e '.[bench]')")
    r.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(parse(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
