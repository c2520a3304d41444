"""What every command-line entry point does the same way: parse with ``--verbose``, build
the context, run the command with third-party noise silenced (``core.quiet``; shown with
``--verbose`` or VERBOSE=1) and progress on (``core.progress``), and turn the platform's
errors into a message and an exit code (``core.errors``), never a traceback.

Imports stay inside the functions so ``--help`` never pays for Feast or XGBoost.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone


def instant(text: str) -> datetime:
    """argparse type: an ISO 8601 date or date-time, as an aware UTC datetime (a time without
    an offset is UTC). A bad value is a usage error naming the option (exit 2)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or date-time, "
                                         "e.g. 2013-06-01 or 2013-06-01T08:30:00-04:00") from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def instant_text(text: str) -> str:
    """argparse type: ``text`` as given, once :func:`instant` accepts it (options the
    platform keeps as ISO text, e.g. in a model's metadata)."""
    instant(text)
    return text


def context(feature_service: str | None = None):
    """(Settings, UseCase) from the environment, with DATA_DIR exported for Feast. The use
    case's FeatureService is ``feature_service``, else FEATURE_SERVICE, else its default."""
    from core.settings import Settings
    from core.usecase import load_use_case

    settings = Settings.from_env()
    settings.export()
    return settings, load_use_case().with_feature_service(feature_service or settings.feature_service)


VERBOSE_HELP = "show third-party warnings and Feast's own output (also: VERBOSE=1)"


def add_verbose_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--verbose`` on ``parser`` and on each of its sub-commands, so it is accepted before
    or after the command's name (``pipeline --verbose run``, ``pipeline run --verbose``)."""
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += list(action.choices.values())
    for p in parsers:
        if not any("--verbose" in a.option_strings for a in p._actions):
            # SUPPRESS: a sub-command's default must not undo the option given before it.
            p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser``'s arguments, with ``--verbose`` (:func:`add_verbose_argument`)."""
    return add_verbose_argument(parser).parse_args(argv)


def run(args, gate_stream=None) -> int:
    """Run ``args.func(args)`` and return its exit code, third-party noise silenced unless
    ``args.verbose`` or VERBOSE=1, progress shown. A :class:`~core.errors.PlatformError`
    is printed (``error: ...`` on stderr) and exits with its ``exit_code``; a refusing gate
    prints its whole report, to ``gate_stream`` (default stderr)."""
    from core import progress
    from core.errors import PlatformError
    from core.quiet import quiet
    from validation.report import GateFailed

    quiet(True if getattr(args, "verbose", False) else None, spark=True)
    progress.enable()
    try:
        return args.func(args)
    except GateFailed as e:
        print(f"refused by a validation gate; nothing was written downstream.\n{e}",
              file=gate_stream or sys.stderr)
        return e.exit_code
    except PlatformError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def add_accept_argument(parser) -> None:
    """``--accept CHECK``: the ingest gate reports that check's failures without refusing
    the data (an intended change). Shared by ``pipeline run/ingest`` and ``validation raw``."""
    parser.add_argument("--accept", action="append", default=[], metavar="CHECK",
                        help="an intended change: report this ingest check's failures (e.g. volume_change, "
                             "distribution_psi) without refusing the data; repeatable")
