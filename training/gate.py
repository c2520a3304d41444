"""The promotion step: a candidate replaces the champion only if it beats the baseline.

A first, deliberately small gate (fails closed): the candidate's holdout AUC must exceed
the baseline's and its log loss must be lower, and its probabilities finite. Richer
checks (champion comparison, slices, behaviour tests) belong to the validation gates.
"""

from __future__ import annotations

from pipeline.config import Settings
from training.registry import ModelRegistry


def gate_checks(metadata: dict) -> list[str]:
    """The reasons a candidate fails (empty when it passes)."""
    model, base = metadata["metrics"]["model"], metadata["metrics"]["baseline"]
    failures = []
    if model["auc"] is None or base["auc"] is None or model["auc"] <= base["auc"]:
        failures.append(f"holdout AUC {model['auc']} does not beat the baseline's {base['auc']}")
    if model["log_loss"] >= base["log_loss"]:
        failures.append(f"holdout log loss {model['log_loss']:.4f} is not below the baseline's {base['log_loss']:.4f}")
    return failures


def promote_if_better(settings: Settings, version: str, say=print) -> dict:
    registry = ModelRegistry(settings.models)
    failures = gate_checks(registry.metadata(version))
    if failures:
        for failure in failures:
            say(f"not promoted: {failure}")
        champion = registry.champion()
        say(f"champion stays {champion['version'] if champion else '(none)'}")
        return {"promoted": False, "version": version, "failures": failures}
    record = registry.promote(version)
    say(f"promoted {version}")
    return {"promoted": True, **record}
