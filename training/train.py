"""Train, evaluate on a later window, register. Promotion is a separate step."""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata

import numpy as np
import pandas as pd
import xgboost as xgb

from core.settings import Settings
from core.usecase import UseCase
from pipeline.definitions import service_pins
from pipeline.features import built_from
from training import evaluate
from training.dataset import feature_matrix, load_events, service_features, training_set
from training.errors import TrainingError
from training.model import booster_from_bytes, predict_proba
from training.registry import ModelRegistry
from training.training_gate import check_events, check_training_set
from validation.report import Report


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and the time split. Seeded: same data + config -> same model bytes."""

    seed: int = 7
    num_boost_round: int = 300
    max_depth: int = 6
    learning_rate: float = 0.08
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 5.0
    nthread: int = 2
    #: First instant of the holdout window (ISO date or datetime, UTC). Default: the day
    #: boundary that leaves the last ``holdout_fraction`` of events for evaluation.
    holdout_start: str | None = None
    holdout_fraction: float = 0.2
    #: First instant of the training window (ISO, UTC): older events are not used (a
    #: sliding window). Default: every event in the events table.
    window_start: str | None = None

    def xgb_params(self) -> dict:
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "seed": self.seed,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "nthread": self.nthread,
        }


def holdout_start(timestamps: pd.Series, config: TrainConfig) -> pd.Timestamp:
    if config.holdout_start:
        start = pd.Timestamp(config.holdout_start)
        return start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return timestamps.quantile(1 - config.holdout_fraction).floor("D")


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content (row order included)."""
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()


def _versions() -> dict:
    names = ["feast", "xgboost-cpu", "duckdb", "pandas", "numpy", "scikit-learn", "pyarrow"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def fit(train_x: np.ndarray, train_y: np.ndarray, features: list[str], config: TrainConfig) -> bytes:
    """Train a booster and return its UBJSON bytes."""
    dtrain = xgb.DMatrix(train_x, label=train_y, feature_names=features, missing=np.nan)
    booster = xgb.train(config.xgb_params(), dtrain, num_boost_round=config.num_boost_round)
    return bytes(booster.save_raw(raw_format="ubj"))


def run_training(settings: Settings, use_case: UseCase, store, config: TrainConfig, say=print) -> dict:
    """Build the training set through the FeatureService, check it (training gate), train
    on the earlier window, evaluate on the later one (next to a baseline), and register.

    The run is logged to MLflow (``training/tracking.py``), refused or not; its store is
    checked first, so an unreachable one stops the run before any data is read or fitted.
    Tracking reads the registered model back and never touches the model bytes."""
    from training import tracking

    run = tracking.open_run(settings, use_case, config)
    try:
        result = _train_and_register(settings, use_case, store, config, say)
    except BaseException as e:
        run.fail(e)
        raise
    run.finish(result["version"])
    say(f"tracked as MLflow run {run.run_id} in {tracking.describe(settings)}")
    return result


def _train_and_register(settings: Settings, use_case: UseCase, store, config: TrainConfig, say) -> dict:
    """:func:`run_training`'s work, without the tracking."""
    report = Report("training", f"FeatureService {use_case.feature_service}")
    check_events(settings, use_case, report)
    events = load_events(settings, use_case)
    if config.window_start:
        since = pd.Timestamp(config.window_start)
        since = since.tz_localize("UTC") if since.tzinfo is None else since
        events = events[events[use_case.event_timestamp] >= since]
    features = service_features(store, use_case.feature_service)
    definitions = service_pins(settings, use_case, store, use_case.feature_service)
    guard: dict = {}
    frame = training_set(store, use_case, events, guard=guard)
    if guard["leakage_guard"] != "passed":
        say(f"warning: leakage guard {guard['leakage_guard']}")

    ts = frame[use_case.event_timestamp]
    cut = holdout_start(ts, config)
    check_training_set(settings, use_case, report, frame, features, cut)
    train, holdout = frame[ts < cut], frame[ts >= cut]
    y_train = train[use_case.label].to_numpy(dtype=float)
    y_hold = holdout[use_case.label].to_numpy(dtype=float)

    start = time.perf_counter()
    model_bytes = fit(feature_matrix(train, features), y_train, features, config)
    train_seconds = time.perf_counter() - start
    say(f"trained on {len(train):,} rows before {cut:%Y-%m-%d} in {train_seconds:.1f}s")

    booster = booster_from_bytes(model_bytes, nthread=config.nthread)
    p_hold = predict_proba(booster, feature_matrix(holdout, features))
    if not np.isfinite(p_hold).all():
        raise TrainingError("the model produced NaN or Inf probabilities on the holdout window")
    rates, overall = evaluate.baseline_rates(train, use_case.label, use_case.baseline_key)
    p_base = evaluate.baseline_predictions(holdout, use_case.baseline_key, rates, overall)

    metrics = {
        "model": evaluate.holdout_metrics(y_hold, p_hold),
        "baseline": {"description": f"historical {use_case.label} rate per {use_case.baseline_key} "
                                    "in the training window",
                     **evaluate.holdout_metrics(y_hold, p_base)},
        "calibration": evaluate.calibration(y_hold, p_hold),
        "slices": evaluate.slice_metrics(holdout, y_hold, p_hold, use_case.slices),
    }
    metadata = {
        "use_case": use_case.name,
        "feature_service": use_case.feature_service,
        "features": features,
        "label": use_case.label,
        "training_window": {"start": ts.min().isoformat(), "end": cut.isoformat(), "rows": len(train)},
        "holdout_window": {"start": cut.isoformat(), "end": ts.max().isoformat(), "rows": len(holdout)},
        "data_fingerprint": fingerprint(frame[[use_case.id_column, use_case.label, *features]]),
        "params": asdict(config),
        "xgboost_params": config.xgb_params(),
        "metrics": metrics,
        # The baseline itself, so the model gate can recompute its metrics on any window.
        "baseline": {"key": use_case.baseline_key, "rates": rates, "overall": overall},
        "library_versions": _versions(),
        "trained_at": datetime.now(timezone.utc).isoformat(),
        "train_seconds": round(train_seconds, 2),
        "format": "xgboost-ubj",
        "leakage_guard": guard["leakage_guard"],
        # Per feature, the fingerprint of all that defines its values (pipeline/definitions.py).
        "definitions": definitions,
        # The snapshot the source tables were built from (`training reproduce` rebuilds from it).
        "snapshot": built_from(settings),
    }
    version = ModelRegistry(settings.models).register(model_bytes, metadata)
    say(f"registered model {version}: holdout AUC {metrics['model']['auc']:.4f} "
        f"(baseline {metrics['baseline']['auc']:.4f}), log loss {metrics['model']['log_loss']:.4f} "
        f"(baseline {metrics['baseline']['log_loss']:.4f})")
    return {"version": version, "metrics": metrics}
