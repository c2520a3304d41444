"""What every command-line entry point does the same way: build the context, run the
command with third-party noise silenced and the platform's errors mapped to exit code 2.

Imports stay inside the functions so ``--help`` never pays for Feast or XGBoost.
"""

from __future__ import annotations


def context(feature_service: str | None = None):
    """(Settings, UseCase) from the environment, with DATA_DIR exported for Feast. The use
    case's FeatureService is ``feature_service``, else FEATURE_SERVICE, else its default."""
    from pipeline.config import Settings
    from pipeline.usecase import load_use_case

    settings = Settings.from_env()
    settings.export()
    return settings, load_use_case().with_feature_service(feature_service or settings.feature_service)


def run(args, gate_stream=None) -> int:
    """Run ``args.func(args)`` (see :func:`pipeline.errors.run_command` for the exit codes)."""
    from pipeline.errors import run_command
    from pipeline.quiet import quiet_third_party_warnings

    quiet_third_party_warnings()
    return run_command(args.func, args, gate_stream=gate_stream)


def add_accept_argument(parser) -> None:
    """``--accept CHECK``: the ingest gate reports that check's failures without refusing
    the data (an intended change). Shared by ``pipeline run/ingest`` and ``validation raw``."""
    parser.add_argument("--accept", action="append", default=[], metavar="CHECK",
                        help="an intended change: report this ingest check's failures (e.g. volume_change, "
                             "distribution_psi) without refusing the data; repeatable")
