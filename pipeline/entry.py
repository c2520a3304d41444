"""What every command-line entry point does the same way: build the context, map errors.

Imports stay inside the functions so ``--help`` never pays for Feast or XGBoost.
"""

from __future__ import annotations

import sys


def context():
    """(Settings, UseCase) from the environment, with DATA_DIR exported for Feast."""
    from pipeline.config import Settings
    from pipeline.usecase import load_use_case

    settings = Settings.from_env()
    settings.export()
    return settings, load_use_case()


def run(args, refusals: tuple[type[Exception], ...]) -> int:
    """Run ``args.func(args)``; an error in ``refusals`` prints its message and exits 2."""
    from pipeline.quiet import quiet_third_party_warnings

    quiet_third_party_warnings()
    try:
        return args.func(args)
    except refusals as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
