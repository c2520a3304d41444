"""`training`: train, list, show, promote, and batch-score models; browse the tracked runs (`mlflow-ui`).

Exit codes (``core/errors.py``): 0 success, 2 refused (the message says why), 3 the
candidate was not promoted.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.entry import context, instant_text, parse, run
from core.errors import EXIT_NOT_PROMOTED, EXIT_OK


def cmd_train(args) -> int:
    from feast_plugins.store import feature_store
    from training.train import TrainConfig, run_training

    settings, use_case = context(feature_service=args.feature_service)
    config = TrainConfig(holdout_start=args.holdout_start, seed=args.seed, num_boost_round=args.rounds)
    result = run_training(settings, use_case, feature_store(settings), config,
                          say=lambda m: print(m, file=sys.stderr))
    print(json.dumps({"version": result["version"], "model": result["metrics"]["model"],
                      "baseline": result["metrics"]["baseline"]}, indent=2))
    from core.progress import summary

    summary(f"train: model {result['version']} registered (holdout AUC {result['metrics']['model']['auc']:.4f}) "
            f"in {settings.models / result['version']}; promote it with `training promote {result['version']}`")
    return 0


def version_text(text: str) -> str:
    """argparse type: a model version (16 lowercase hex digits), never a path."""
    from training.errors import TrainingError
    from training.registry import check_version

    try:
        return check_version(text)
    except TrainingError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_list(args) -> int:
    from training.errors import TrainingError
    from training.registry import ModelRegistry

    settings, _ = context()
    registry = ModelRegistry(settings.models)
    try:
        champion = (registry.champion() or {}).get("version")
    except TrainingError as e:  # still list the models: they are how to repair it
        print(f"warning: {e}", file=sys.stderr)
        champion = None
    for version in registry.versions():
        meta = registry.metadata(version)
        mark = "*" if version == champion else " "
        print(f"{mark} {version}  {meta['trained_at'][:19]}  {meta['feature_service']}  "
              f"AUC {meta['metrics']['model']['auc']:.4f}")
    return 0


def cmd_show(args) -> int:
    from training.registry import ModelRegistry

    settings, _ = context()
    print(json.dumps(ModelRegistry(settings.models).metadata(args.version), indent=2))
    return 0


def cmd_promote(args) -> int:
    from feast_plugins.store import feature_store
    from training.promote import promote_if_better
    from training.registry import ModelRegistry

    settings, use_case = context()
    if args.force:
        print(json.dumps(ModelRegistry(settings.models).promote(args.version)))
        return 0
    result = promote_if_better(settings, use_case, feature_store(settings), args.version,
                               say=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result))
    return EXIT_OK if result["promoted"] else EXIT_NOT_PROMOTED


def cmd_score(args) -> int:
    from feast_plugins.store import feature_store
    from training.dataset import load_events
    from training.registry import ModelRegistry
    from training.score import score_events

    settings, use_case = context()
    events = load_events(settings, use_case, args.start, args.end)
    registry = ModelRegistry(settings.models)
    model = registry.load(args.version) if args.version else registry.load_champion()
    scored = score_events(feature_store(settings), use_case, model, events)
    columns = [use_case.id_column, use_case.event_timestamp, "probability", "model_version"]
    scored[columns].to_parquet(args.output, index=False)
    print(f"scored {len(scored):,} rows with model {model.version} -> {args.output}", file=sys.stderr)
    return 0


def cmd_reproduce(args) -> int:
    """Rebuild a registered model from its recorded snapshot, parameters and definitions;
    exit 0 when the bytes are the same, 2 when not (saying which definitions changed)."""
    from core.errors import EXIT_REFUSED
    from training.reproduce import reproduce

    settings, use_case = context()
    result = reproduce(settings, use_case, args.version, say=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, indent=2))
    return EXIT_OK if result["same_bytes"] else EXIT_REFUSED


def cmd_mlflow_ui(args) -> int:
    """Replace this process with MLflow's UI over the local tracking store (``make mlflow``)."""
    import os

    from core.settings import Settings
    from training.tracking import ui_command

    settings = Settings.from_env()
    command = ui_command(settings, args.host or settings.host, args.port, args.mlflow)
    print(f"MLflow UI on http://{args.host or settings.host}:{args.port} over {settings.tracking_uri}",
          file=sys.stderr, flush=True)
    os.execv(command[0], command)
    return 0  # not reached


def tcp_port(text: str) -> int:
    """argparse type: a TCP port number (1-65535)."""
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port number (1-65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="training", description="Train and manage models (state under DATA_DIR).")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train on the FeatureService's point-in-time training set and register")
    train.add_argument("--holdout-start", type=instant_text,
                       help="first day of the evaluation window (default: last 20%% of events)")
    train.add_argument("--seed", type=int, default=7)
    train.add_argument("--rounds", type=int, default=300, help="boosting rounds")
    train.add_argument("--feature-service", help="the FeatureService to train on (default: $FEATURE_SERVICE, "
                                                 "else the use case's default)")
    train.set_defaults(func=cmd_train)
    sub.add_parser("list", help="registered models (* = champion)").set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="a model's metadata")
    show.add_argument("version", type=version_text)
    show.set_defaults(func=cmd_show)
    promote = sub.add_parser("promote", help="make a model the champion if it passes the gate")
    promote.add_argument("version", type=version_text)
    promote.add_argument("--force", action="store_true", help="skip the gate (the hash is still checked)")
    promote.set_defaults(func=cmd_promote)
    score = sub.add_parser("score", help="batch-score labelled events with the champion (or --version)")
    score.add_argument("--start", type=instant_text, help="first event time (ISO date, UTC)")
    score.add_argument("--end", type=instant_text, help="end of the event window, exclusive (ISO date, UTC)")
    score.add_argument("--version", type=version_text)
    score.add_argument("--output", required=True, help="Parquet file to write")
    score.set_defaults(func=cmd_score)
    again = sub.add_parser("reproduce", help="rebuild a model from its recorded snapshot, parameters and "
                                             "definitions; check the bytes are the same")
    again.add_argument("version", type=version_text)
    again.set_defaults(func=cmd_reproduce)
    ui = sub.add_parser("mlflow-ui", help="MLflow's UI over the runs tracked in DATA_DIR/mlflow (make mlflow)")
    ui.add_argument("--host", help="interface to listen on (default: $HOST, else 127.0.0.1)")
    ui.add_argument("--port", type=tcp_port, default=5000, help="port (default: 5000; make mlflow: $MLFLOW_PORT)")
    ui.add_argument("--mlflow", help="the full MLflow's executable (default: the one `make install` puts in "
                                     "<venv>/mlflow-ui)")
    ui.set_defaults(func=cmd_mlflow_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
