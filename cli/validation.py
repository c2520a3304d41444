"""`validation`: run any data contract or gate by hand (only `profile` writes anything).

Every command prints a readable report and writes the same as JSON under
DATA_DIR/reports (its path is printed last). Exit codes: 0 passed, 2 failed (or could not
run, e.g. no snapshot yet). Heavy imports happen inside the commands: --help is instant.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.entry import add_accept_argument, context, parse, run
from core.errors import EXIT_OK, EXIT_REFUSED, PlatformError


def _show(report, path) -> int:
    print(report.render())
    print(f"report: {path}")
    return EXIT_OK if report.passed else EXIT_REFUSED


def cmd_raw(args) -> int:
    from pipeline.ingest import ingest

    settings, use_case = context()
    ingest(settings, use_case, accept=args.accept, dry_run=True)  # raises GateFailed on failure
    return _latest(settings, "ingest")


def cmd_sources(args) -> int:
    from datetime import datetime, timezone

    from pipeline.apply import source_contracts
    from pipeline.ingest import latest_snapshot
    from validation.contracts import Context
    from validation.gates import check_files
    from validation.report import Report

    settings, use_case = context()
    contracts = source_contracts(settings, use_case)
    report = Report("sources", str(settings.sources))
    check_files(report, {name: settings.sources / f"{name}.parquet" for name in contracts}, contracts,
                Context(now=datetime.now(timezone.utc), as_of=latest_snapshot(settings).as_of))
    return _show(report, report.write(settings.reports))


def cmd_materialize(args) -> int:
    from feast_plugins.store import feature_store
    from pipeline.ingest import latest_snapshot
    from pipeline.materialize import check_sources

    settings, use_case = context()
    store = feature_store(settings)
    check_sources(settings, use_case, store, latest_snapshot(settings).as_of)
    return _latest(settings, "materialize")


def cmd_model(args) -> int:
    from feast_plugins.store import feature_store
    from training.promote import model_report

    settings, use_case = context()
    report = model_report(settings, use_case, feature_store(settings), args.version)
    return _show(report, report.write(settings.reports))


def cmd_profile(args) -> int:
    from pipeline.ingest import latest_snapshot, write_reference_profile
    from validation.contracts import read_table

    settings, use_case = context()
    snapshot = latest_snapshot(settings)
    frames = {name: read_table(snapshot.table_path(name)) for name in snapshot.tables}
    write_reference_profile(settings, use_case, frames, snapshot.id, snapshot.as_of.isoformat(), None)
    print(f"reference profile from snapshot {snapshot.id} -> {settings.reference_profile}")
    return 0


def cmd_show(args) -> int:
    from core.settings import Settings

    path = Settings.from_env().reports / f"{args.gate}-latest.json"
    if not path.is_file():
        raise PlatformError(f"no {args.gate} report yet ({path}): run that gate first")
    report = json.loads(path.read_text())
    print(json.dumps(report, indent=2) if args.json else _render(report))
    return EXIT_OK if report["passed"] else EXIT_REFUSED


def _render(report: dict) -> str:
    from validation.report import Failure, Report

    def failures(items):
        return [Failure(**{**f, "examples": tuple(f["examples"])}) for f in items]

    r = Report(report["gate"], report["subject"], failures(report["failures"]), failures(report["tolerated"]),
               report["checks"], report["stats"], report["created_at"])
    return r.render() + f"\n(created {report['created_at']})"


def _latest(settings, gate: str) -> int:
    path = settings.reports / f"{gate}-latest.json"
    print(_render(json.loads(path.read_text())))
    print(f"report: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="validation",
        description="Run a data contract or a gate by hand. Only `profile` changes anything (the reference "
                    "profile); state under DATA_DIR.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    raw = sub.add_parser("raw", help="the ingest gate on RAW_DIR (or the built-in data), without writing a snapshot")
    add_accept_argument(raw)
    raw.set_defaults(func=cmd_raw)
    sub.add_parser("sources", help="the source tables' contracts (types from the Feast views) on DATA_DIR/sources"
                   ).set_defaults(func=cmd_sources)
    sub.add_parser("materialize", help="the materialization gate: registered views' source files"
                   ).set_defaults(func=cmd_materialize)
    model = sub.add_parser("model", help="the model gate on a registered version (nothing is promoted)")
    model.add_argument("version")
    model.set_defaults(func=cmd_model)
    sub.add_parser("profile", help="(re)write the reference distribution profile from the newest snapshot"
                   ).set_defaults(func=cmd_profile)
    show = sub.add_parser("show", help="the latest report of a gate")
    show.add_argument("gate", choices=["ingest", "features", "materialize", "training", "model", "sources"])
    show.add_argument("--json", action="store_true", help="the JSON report as written")
    show.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    return run(args, gate_stream=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
