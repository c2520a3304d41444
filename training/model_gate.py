"""The model gate ("blessing"): a candidate replaces the champion only if it is sound,
good enough on its own, no worse than the champion, and behaves sensibly.

Checks, in order (a candidate that fails group 1 or 2 is not judged further; the others
all run, so one report gives every reason):

1. ``model_integrity`` - the file loads and its SHA-256 matches the registry;
   ``feature_service`` - it was trained on the use case's FeatureService and its feature
   list is that service's current list (a dropped or extra feature fails).
2. ``finite_predictions`` - no NaN or Inf on the evaluation window.
3. ``floor_auc`` / ``floor_log_loss`` - absolute floors: AUC at least ``auc_margin`` above
   the baseline's, log loss below the baseline's (slow degradation).
4. ``champion_auc`` / ``champion_log_loss`` / ``slice_auc`` - no regression against the
   champion on the same later window, overall and on every slice value with enough rows
   (sudden degradation). The first model has no champion and is judged on 1-3 and 5.
5. ``invariance`` - predictions do not move when a field that must not matter changes
   (fetched again through the FeatureService); ``direction`` - raising a feature the use
   case names moves the mean prediction the expected way.

All metrics are computed here, on the rows given, not read from the candidate's metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from core.contracts import ModelExpectations
from training.dataset import feature_matrix
from training.errors import TrainingError
from training.evaluate import group_key, holdout_metrics
from training.model import booster_from_bytes, predict_proba
from training.registry import LoadedModel, ModelRegistry
from validation.report import Failure, Report


@dataclass(frozen=True)
class GateConfig:
    #: The candidate's AUC must beat the baseline's by this much (0.02: a model that adds
    #: less than that over "the carrier's usual late rate" is not worth serving).
    auc_margin: float = 0.02
    #: Overall, the candidate may trail the champion's AUC by at most max(auc_tolerance,
    #: slice_z x the standard error of the difference), and its log loss by
    #: log_loss_tolerance: about what two training seeds on the same data differ by.
    auc_tolerance: float = 0.005
    log_loss_tolerance: float = 0.005
    #: Slices need this many rows, and both classes, to be compared.
    min_slice_rows: int = 1000
    #: A slice fails when the candidate trails by more than max(slice_tolerance, slice_z x
    #: the standard error of the AUC difference (Hanley-McNeil, taken as independent,
    #: which overstates it for two models scored on the same rows: the gate leans lenient).
    slice_tolerance: float = 0.01
    slice_z: float = 2.0
    #: Rows used by the behaviour tests (a seeded sample of the evaluation window).
    behaviour_rows: int = 300
    seed: int = 7


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc)
           + (negatives - 1) * (q2 - auc * auc)) / max(positives * negatives, 1)
    return math.sqrt(max(var, 0.0))


def _predictor(model: LoadedModel) -> Callable[[pd.DataFrame], np.ndarray]:
    """The model's probabilities for feature rows (the booster is parsed once)."""
    booster = booster_from_bytes(model.model_bytes)
    return lambda frame: predict_proba(booster, feature_matrix(frame, model.features))


def load_candidate(registry: ModelRegistry, version: str, report: Report) -> LoadedModel | None:
    report.ran("model_integrity")
    try:
        return registry.load(version)
    except (TrainingError, OSError) as e:
        report.failures.append(Failure("model_integrity", "model", None, str(e)))
        return None


def _feature_service_failures(model: LoadedModel, service: str, features: list[str]) -> list[Failure]:
    out = []
    trained_on = model.metadata.get("feature_service")
    if trained_on != service:
        out.append(Failure("feature_service", "model", None,
                           f"trained on FeatureService {trained_on!r}, the use case serves {service!r}"))
    if model.features != features:
        missing = [f for f in features if f not in model.features]
        extra = [f for f in model.features if f not in features]
        out.append(Failure("feature_service", "model", None,
                           f"feature list differs from {service!r}: missing {missing}, extra {extra}"
                           + ("" if missing or extra else " (order)")))
    try:
        booster = booster_from_bytes(model.model_bytes)
        if booster.num_features() != len(model.features):
            out.append(Failure("feature_service", "model", None,
                               f"the booster takes {booster.num_features()} features, its metadata lists "
                               f"{len(model.features)}"))
    except Exception as e:  # noqa: BLE001 - XGBoost raises its own error types for a bad file
        out.append(Failure("model_integrity", "model", None, f"XGBoost cannot load the model: {e}"))
    return out


def floor_failures(model: dict, baseline: dict, config: GateConfig) -> list[Failure]:
    """Absolute floors against the baseline's metrics on the same window."""
    out = []
    if model["auc"] is None or baseline["auc"] is None or model["auc"] < baseline["auc"] + config.auc_margin:
        out.append(Failure("floor_auc", "model", None,
                           f"AUC {model['auc']} is not at least {config.auc_margin} above the baseline's "
                           f"{baseline['auc']}"))
    if model["log_loss"] is None or model["log_loss"] >= baseline["log_loss"]:
        out.append(Failure("floor_log_loss", "model", None,
                           f"log loss {model['log_loss']} is not below the baseline's {baseline['log_loss']}"))
    return out


def _slice_failures(frame: pd.DataFrame, y: np.ndarray, p_new: np.ndarray, p_old: np.ndarray,
                    columns, config: GateConfig, stats: dict) -> list[Failure]:
    out = []
    for column in columns:
        if column not in frame.columns:
            continue
        values = group_key(frame[column]).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            n, positives = int(mask.sum()), int(y[mask].sum())
            if n < config.min_slice_rows or positives in (0, n):
                continue
            new, old = holdout_metrics(y[mask], p_new[mask])["auc"], holdout_metrics(y[mask], p_old[mask])["auc"]
            se = math.hypot(auc_standard_error(new, positives, n - positives),
                            auc_standard_error(old, positives, n - positives))
            allowed = max(config.slice_tolerance, config.slice_z * se)
            stats[f"{column}={value}"] = {"rows": n, "candidate_auc": round(new, 4),
                                          "champion_auc": round(old, 4), "allowed_drop": round(allowed, 4)}
            if new < old - allowed:
                out.append(Failure("slice_auc", "model", column,
                                   f"{column}={value}: AUC {new:.4f} vs the champion's {old:.4f} "
                                   f"(allowed drop {allowed:.4f})", n))
    return out


def judge(
    registry: ModelRegistry,
    version: str,
    frame: pd.DataFrame,
    *,
    label: str,
    feature_service: str,
    service_features: list[str],
    baseline: dict,
    expectations: ModelExpectations,
    slices: Sequence[str] = (),
    refetch: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    config: GateConfig = GateConfig(),
) -> Report:
    """Judge candidate ``version`` on ``frame`` (the evaluation window's rows with the
    FeatureService's features, the label and the slice columns) against the baseline's
    metrics on the same rows and the registry's champion. ``refetch`` turns entity rows
    back into feature rows through the FeatureService (for the invariance check)."""
    report = Report("model", f"candidate {version}")
    report.stats["config"] = asdict(config)
    candidate = load_candidate(registry, version, report)
    if candidate is None:
        return report
    report.ran("feature_service")
    report.extend(_feature_service_failures(candidate, feature_service, service_features))
    if not report.passed:
        return report

    y = frame[label].to_numpy(dtype=float)
    predict = _predictor(candidate)
    p = predict(frame)
    report.ran("finite_predictions")
    bad = ~np.isfinite(p)
    if bad.any():
        report.failures.append(Failure("finite_predictions", "model", None,
                                       "NaN or Inf probabilities", int(bad.sum())))
        return report
    metrics = holdout_metrics(y, p)
    report.stats["candidate"] = metrics
    report.stats["baseline"] = baseline
    report.ran("floor_auc")
    report.ran("floor_log_loss")
    report.extend(floor_failures(metrics, baseline, config))

    record = registry.champion()
    champion = None
    if record is not None and record["version"] != version:
        report.stats["champion_version"] = record["version"]
        report.ran("champion_integrity")
        try:
            champion = registry.load(record["version"])
        except (TrainingError, OSError) as e:  # fail closed: nothing to compare with is not a pass
            report.failures.append(Failure("champion_integrity", "model", None,
                                           f"the champion cannot be loaded ({e}); compare by hand, then "
                                           "`training promote --force`"))
    if champion is not None and metrics["auc"] is None:
        report.stats["champion_comparison"] = "skipped: AUC undefined on this window (one label value)"
    elif champion is not None:
        if champion.features == candidate.features:
            p_old = _predictor(champion)(frame)
            old = holdout_metrics(y, p_old)
            report.stats["champion"] = old
            report.ran("champion_auc")
            report.ran("champion_log_loss")
            report.ran("slice_auc")
            positives = int(y.sum())
            se = math.hypot(auc_standard_error(metrics["auc"], positives, len(y) - positives),
                            auc_standard_error(old["auc"], positives, len(y) - positives))
            allowed = max(config.auc_tolerance, config.slice_z * se)
            report.stats["champion_allowed_auc_drop"] = round(allowed, 4)
            if metrics["auc"] < old["auc"] - allowed:
                report.failures.append(Failure(
                    "champion_auc", "model", None,
                    f"AUC {metrics['auc']:.4f} vs the champion's {old['auc']:.4f} (allowed drop {allowed:.4f})"))
            if metrics["log_loss"] > old["log_loss"] + config.log_loss_tolerance:
                report.failures.append(Failure(
                    "champion_log_loss", "model", None,
                    f"log loss {metrics['log_loss']:.4f} vs the champion's {old['log_loss']:.4f}"))
            report.stats["slices"] = {}
            report.extend(_slice_failures(frame, y, p, p_old, slices, config, report.stats["slices"]))
        else:
            report.stats["champion_comparison"] = "skipped: the champion uses another feature list"

    sample = frame.sample(n=min(config.behaviour_rows, len(frame)), random_state=config.seed)
    sample = sample.reset_index(drop=True)
    base = predict(sample)
    report.stats["behaviour"] = {}
    for field in expectations.invariant_fields:
        report.ran(f"invariance:{field}")
        if refetch is None or field not in sample.columns:
            report.failures.append(Failure("invariance", "model", field,
                                           f"cannot vary {field!r}: not in the evaluation rows"))
            continue
        varied = sample.copy()
        varied[field] = _perturbed(varied[field])
        moved = np.abs(predict(refetch(varied)) - base)
        report.stats["behaviour"][f"invariance:{field}"] = float(moved.max(initial=0.0))
        if (moved > 1e-9).any():
            report.failures.append(Failure("invariance", "model", field,
                                           f"changing {field!r} changed the prediction (by up to {moved.max():.4f})",
                                           int((moved > 1e-9).sum())))
    for direction in expectations.directions:
        report.ran(f"direction:{direction.feature}")
        if direction.feature not in candidate.features:
            report.failures.append(Failure("direction", "model", direction.feature, "not a feature of the model"))
            continue
        low, high = sample.copy(), sample.copy()
        low[direction.feature], high[direction.feature] = direction.low, direction.high
        shift = float(np.mean(predict(high)) - np.mean(predict(low)))
        report.stats["behaviour"][f"direction:{direction.feature}"] = round(shift, 5)
        if direction.sign * shift < 0:
            report.failures.append(Failure(
                "direction", "model", direction.feature,
                f"raising it from {direction.low} to {direction.high} moved the mean prediction by "
                f"{shift:+.4f}; expected {'up' if direction.sign > 0 else 'down'}", len(sample)))
    return report


def _perturbed(values: pd.Series) -> pd.Series:
    """Different values of the same type: numbers shifted, text reversed."""
    if pd.api.types.is_numeric_dtype(values):
        return values + 1000
    return values.astype("string").str[::-1]
