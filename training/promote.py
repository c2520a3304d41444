"""The promotion step: a candidate replaces the champion only if the model gate blesses it.

The gate itself (integrity, FeatureService, floors, champion and slices, behaviour) is
``training.model_gate``; this module gathers what it needs — the candidate's later
evaluation window, fetched through the FeatureService, and the baseline on those rows —
and acts on the verdict. A rejected candidate stays in the registry with its report
(``models/<version>/gate_report.json``); the champion keeps serving.
"""

from __future__ import annotations

import json

import pandas as pd

from core.files import atomic_write
from core.settings import Settings
from core.usecase import UseCase
from training import evaluate
from training.dataset import load_events, service_features, training_set
from training.errors import TrainingError
from training.model_gate import GateConfig, judge
from training.registry import ModelRegistry
from validation.report import Failure, Report

GATE_REPORT = "gate_report.json"
REQUIRED_METADATA = {"holdout_window", "features", "feature_service", "sha256"}


def evaluation_frame(settings: Settings, use_case: UseCase, store, metadata: dict) -> pd.DataFrame:
    """The candidate's holdout window, with the FeatureService's features and the fields
    the behaviour checks vary."""
    window = metadata["holdout_window"]
    rows = load_events(settings, use_case, window["start"], window["end"], include_end=True)
    if rows.empty:
        raise TrainingError(f"no events in the candidate's holdout window {window['start']} .. {window['end']}")
    return training_set(store, use_case, rows, extra_columns=use_case.model_expectations.invariant_fields)


def baseline_metrics(frame: pd.DataFrame, use_case: UseCase, metadata: dict) -> dict:
    """The baseline's metrics on ``frame``, from the rates the candidate's training window gave."""
    base = metadata.get("baseline")
    if base is None:  # models registered before the baseline was stored
        return metadata["metrics"]["baseline"]
    p = evaluate.baseline_predictions(frame, base["key"], base["rates"], base["overall"])
    return evaluate.holdout_metrics(frame[use_case.label].to_numpy(dtype=float), p)


def model_report(settings: Settings, use_case: UseCase, store, version: str,
                 config: GateConfig = GateConfig()) -> Report:
    """Run the model gate on ``version``; nothing is promoted."""
    registry = ModelRegistry(settings.models)
    try:
        metadata = registry.metadata(version)
        problem = None if REQUIRED_METADATA <= set(metadata) else \
            f"metadata lacks {sorted(REQUIRED_METADATA - set(metadata))}"
    except (TrainingError, ValueError, OSError) as e:
        problem = f"unreadable metadata: {e}"
    if problem:
        report = Report("model", f"candidate {version}")
        report.ran("model_integrity")
        report.failures.append(Failure("model_integrity", "model", None, problem))
        return report
    frame = evaluation_frame(settings, use_case, store, metadata)

    def refetch(rows: pd.DataFrame) -> pd.DataFrame:
        return training_set(store, use_case, rows, extra_columns=use_case.model_expectations.invariant_fields)

    return judge(
        registry, version, frame,
        label=use_case.label,
        feature_service=use_case.feature_service,
        service_features=service_features(store, use_case.feature_service),
        baseline=baseline_metrics(frame, use_case, metadata),
        expectations=use_case.model_expectations,
        slices=use_case.slices,
        refetch=refetch,
        config=config,
    )


def promote_if_better(settings: Settings, use_case: UseCase, store, version: str, say=print,
                      config: GateConfig = GateConfig()) -> dict:
    """Promote ``version`` if the model gate passes; keep the champion otherwise."""
    registry = ModelRegistry(settings.models)
    report = model_report(settings, use_case, store, version, config)
    path = report.write(settings.reports)
    if (settings.models / version).is_dir():
        atomic_write(settings.models / version / GATE_REPORT, json.dumps(report.to_dict(), indent=2,
                                                                          default=str).encode())
    from training.tracking import record_model_gate

    record_model_gate(settings, version, report, say=say)
    if not report.passed:
        for failure in report.failures:
            say(f"not promoted: {failure.line()}")
        champion = registry.champion()
        say(f"champion stays {champion['version'] if champion else '(none)'}; report {path}")
        return {"promoted": False, "version": version, "failures": [f.line() for f in report.failures],
                "report": str(path)}
    record = registry.promote(version)
    say(f"promoted {version} ({len(report.checks)} gate checks passed; report {path.name})")
    return {"promoted": True, **record, "report": str(path)}
