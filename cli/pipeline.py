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

from cli.entry import add_accept_argument, context, instant, instant_text, parse, run
from core.progress import summary as last_line
from flow.nightly import STAGES


def cmd_run(args) -> int:
    """Every stage of the nightly flow (:mod:`flow.nightly`), a summary in
    DATA_DIR/reports/pipeline_run.json; exit 3 when the model gate kept the champion."""
    from core.progress import Progress
    from flow.nightly import FlowOptions, FlowRun
    from training.train import TrainConfig

    settings, use_case = context()
    settings = _allowing(settings, args)
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
    print(json.dumps({"stage_seconds": progress.timings, "model": result["version"],
                      "promoted": summary["promotion"]["promoted"]}, indent=2))
    verdict = "promoted" if summary["promotion"]["promoted"] else "not promoted (the champion stays)"
    last_line(f"pipeline run: snapshot {snapshot.id}, {sum(flow.sources.values()):,} source rows, model "
              f"{result['version']} {verdict}, in {sum(progress.timings.values()):.1f}s; summary: {out}")
    return 0 if summary["promotion"]["promoted"] else 3


def cmd_ingest(args) -> int:
    from core.progress import Progress
    from pipeline.ingest import ingest

    settings, use_case = context()
    snapshot = ingest(settings, use_case, Progress(1), accept=args.accept)
    print(json.dumps({"id": snapshot.id, "path": str(snapshot.path), "as_of": snapshot.as_of.isoformat()}))
    last_line(f"ingest: snapshot {snapshot.id} (as of {snapshot.as_of.isoformat()}) in {snapshot.path}")
    return 0


def cmd_features(args) -> int:
    from core.progress import Progress
    from pipeline.features import build_sources
    from pipeline.ingest import latest_snapshot

    settings, use_case = context()
    settings = _allowing(settings, args)
    counts = build_sources(settings, use_case, latest_snapshot(settings), Progress(1))
    print(json.dumps(counts))
    last_line(f"features: {len(counts)} source tables, {sum(counts.values()):,} rows, in {settings.sources}")
    return 0


def cmd_apply(args) -> int:
    from core.quiet import feast_prints
    from pipeline.apply import apply
    settings, use_case = context()
    with feast_prints():  # Feast's CLI lines ("Deploying infrastructure for ..."), not ours
        apply(_allowing(settings, args), use_case)
    last_line(f"apply: feature_repo/ registered for the {settings.profile} profile "
              f"({settings.feature_store_yaml.name}) over the sources in {settings.sources}")
    return 0


def cmd_plan(args) -> int:
    """The definition changes pending in feature_repo/ and the models each affects
    (:func:`pipeline.definitions.plan`); exit 0 whether or not apply would refuse them."""
    from pipeline import definitions

    settings, use_case = context()
    settings = _allowing(settings, args)
    result = definitions.plan(settings, definitions.current(settings, use_case))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not result["changes"]:
        print("no definition changes pending: feature_repo/ is what the last apply registered")
    for change in result["changes"]:
        detail = f": {change['description']}" if change.get("description") else ""
        print(f"{change['view']}: {change['change']}{detail}")
        for version, model in change["models"].items():
            role = "champion" if model["champion"] else "model"
            print(f"  {role} {version} was trained on the old definition ({', '.join(model['features'])})")
        if change["refused"]:
            print(f"  apply will refuse it: publish it as a new version of {change['view']} "
                  f"or pass --allow-definition-change {change['view']}")
    return 0


def _allowing(settings, args):
    """``settings`` with the views of ``--allow-definition-change``."""
    import dataclasses

    views = tuple(getattr(args, "allow_definition_change", None) or ())
    return dataclasses.replace(settings, allow_definition_change=views) if views else settings


def add_allow_argument(parser) -> None:
    parser.add_argument("--allow-definition-change", action="append", default=[], metavar="VIEW",
                        help="change this feature view's definition although the champion was trained on the "
                             "old one (then retrain and promote); repeatable. Otherwise such a change is refused "
                             "(publish it as a new version of the view, e.g. VIEW_v2)")


def cmd_materialize(args) -> int:
    from pipeline.ingest import latest_snapshot
    from pipeline.materialize import materialize

    settings, use_case = context()
    end = args.end or latest_snapshot(settings).as_of
    materialize(settings, end=end, start=args.start, use_case=use_case)
    last_line(f"materialize: the {settings.profile} profile's online store holds the feature views up to "
              f"{end.isoformat()}")
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
    features = sub.add_parser("features", help="build the source tables from the newest snapshot")
    features.set_defaults(func=cmd_features)
    apply = sub.add_parser("apply", help="feast apply on feature_repo/ (refused if it changes what the champion "
                                         "was trained on)")
    apply.set_defaults(func=cmd_apply)
    for command in (run, features, apply):
        add_allow_argument(command)
    plan = sub.add_parser("plan", help="list the definition changes pending in feature_repo/ and the models each "
                                       "affects")
    plan.add_argument("--json", action="store_true", help="the plan as JSON")
    plan.set_defaults(func=cmd_plan)
    mat = sub.add_parser("materialize", help="load the online store (incremental unless --start)")
    mat.add_argument("--start", type=instant, help="window start (ISO 8601); default: continue from the last run")
    mat.add_argument("--end", type=instant, help="window end (ISO 8601); default: the newest snapshot's as-of time")
    mat.set_defaults(func=cmd_materialize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
