"""Evaluation on a later time window: overall, calibration, slices, and a baseline."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

#: A slice needs this many rows before its metrics are reported.
MIN_SLICE_ROWS = 200
_EPS = 1e-6


def holdout_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    """AUC, log loss, Brier score, base rate and mean prediction for one set of rows."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    both = len(np.unique(y)) == 2
    return {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else None,
        "mean_prediction": float(p.mean()) if len(y) else None,
        "auc": float(roc_auc_score(y, p)) if both else None,
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else None,
        "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
    }


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict:
    """Reliability table over equal-width probability bins and the expected calibration error."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = idx == b
        if not mask.any():
            continue
        mean_p, rate = float(p[mask].mean()), float(y[mask].mean())
        ece += mask.sum() / len(p) * abs(mean_p - rate)
        table.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "rows": int(mask.sum()),
                      "mean_prediction": mean_p, "observed_rate": rate})
    return {"ece": float(ece), "bins": table}


def group_key(values: pd.Series) -> pd.Series:
    """The grouping key for slices and the baseline: the value as text, nulls as "<null>"
    (one definition, so baseline rates, slices and the model gate line up)."""
    return values.astype("string").fillna("<null>")


def slice_metrics(frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, slices: Sequence[str]) -> dict:
    """Per-value metrics for each slice column, for values with at least MIN_SLICE_ROWS rows."""
    out = {}
    for column in slices:
        values = group_key(frame[column]).to_numpy()
        per_value = {}
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() >= MIN_SLICE_ROWS:
                per_value[value] = holdout_metrics(y[mask], p[mask])
        out[column] = per_value
    return out


def baseline_rates(train: pd.DataFrame, label: str, key: str) -> tuple[dict, float]:
    """The historical positive rate per ``key`` value in the training window (the baseline)."""
    overall = float(train[label].mean())
    per_key = train.groupby(group_key(train[key]))[label].mean()
    return {str(k): float(v) for k, v in per_key.items()}, overall


def baseline_predictions(frame: pd.DataFrame, key: str, rates: dict, overall: float) -> np.ndarray:
    keys = group_key(frame[key])
    return keys.map(rates).astype("float64").fillna(overall).to_numpy()
