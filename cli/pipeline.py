"""`pipeline`: raw data -> snapshot -> source tables -> Feast registry/online store -> model.

Heavy imports (Feast, XGBoost) happen inside the commands, so ``--help`` is instant.
Exit codes: 0 success, 2 a step or a validation gate refused its input (the message says
which check, file, table, column and rows; gate reports are also JSON in DATA_DIR/reports),
3 the candidate model was not promoted.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.entry import add_accept_argument, context, instant, instant_text, run
from flow.nightly import STAGES


def cmd_run(args) -> int:
    """Every stage of the nightly flow (:mod:`flow.nightly`), a summary in
    DATA_DIR/reports/pipeline_run.json; exit 3 when the model gate kept the champion."""
    from core.progress import Progress
    from flow.nightly import FlowOptions, FlowRun
    from training.train import TrainConfig

    settings, use_case = context()
    progress = Progress(total=len(STAGES))
    options = FlowOptions(accept=tuple(args.accept), train=TrainConfig(holdout_start=args.holdout_start),
                          progress=progress)
    flow = FlowRun(settings, use_case, options).run()
    snapshot, result = flow.snapshot, flow.model
    summary: dict = {
        "data_dir": str(settings.data_dir), "raw_dir": str(settings.raw_dir or "built-in"),
        "snapshot": {"id": snapshot.id, "as_of": snapshot.as_of.isoformat(), "tables": snapshot.tables},
        "sources": flow.sources, "model": result, "promotion": flow.promotion, "stage_seconds": progress.timings,
    }
    settings.reports.mkdir(parents=True, exist_ok=True)
    out = settings.reports / "pipeline_run.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"pipeline done in {sum(progress.timings.values()):.1f}s; summary in {out}", file=sys.stderr)
    print(json.dumps({"stage_seconds": progress.timings, "model": result["version"],
                      "promoted": summary["promotion"]["promoted"]}, indent=2))
    return 0 if summary["promotion"]["promoted"] else 3


def cmd_ingest(args) -> int:
    from core.progress import Progress
    from pipeline.ingest import ingest

    settings, use_case = context()
    snapshot = ingest(settings, use_case, Progress(1), accept=args.accept)
    print(json.dumps({"id": snapshot.id, "path": str(snapshot.path), "as_of": snapshot.as_of.isoformat()}))
    return 0


def cmd_features(args) -> int:
    from core.progress import Progress
    from pipeline.features import build_sources
    from pipeline.ingest import latest_snapshot

    settings, use_case = context()
    print(json.dumps(build_sources(settings, use_case, latest_snapshot(settings), Progress(1))))
    return 0


def cmd_apply(args) -> int:
    from pipeline.apply import apply
    settings, _ = context()
    apply(settings)
    return 0


def cmd_materialize(args) -> int:
    from pipeline.ingest import latest_snapshot
    from pipeline.materialize import materialize

    settings, use_case = context()
    end = args.end or latest_snapshot(settings).as_of
    materialize(settings, end=end, start=args.start, use_case=use_case)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Run the platform's data and training pipeline. State lives under DATA_DIR "
                    "(default ./data); RAW_DIR points at your own raw Parquet tables.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="every stage: " + " -> ".join(STAGES))
    run.add_argument("--holdout-start", type=instant_text,
                     help="first day of the evaluation window (default: last 20%% of events)")
    run.set_defaults(func=cmd_run)
    ingest = sub.add_parser("ingest", help="check the raw tables (ingest gate) and land them as an immutable snapshot")
    ingest.set_defaults(func=cmd_ingest)
    for command in (run, ingest):
        add_accept_argument(command)
    sub.add_parser("features", help="build the source tables from the newest snapshot").set_defaults(func=cmd_features)
    sub.add_parser("apply", help="feast apply on feature_repo/").set_defaults(func=cmd_apply)
    mat = sub.add_parser("materialize", help="load the online store (incremental unless --start)")
    mat.add_argument("--start", type=instant, help="window start (ISO 8601); default: continue from the last run")
    mat.add_argument("--end", type=instant, help="window end (ISO 8601); default: the newest snapshot's as-of time")
    mat.set_defaults(func=cmd_materialize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
