"""Loading and running an XGBoost model: one prediction path for batch scoring and serving."""

from __future__ import annotations

import numpy as np
import xgboost as xgb


def booster_from_bytes(model_bytes: bytes, nthread: int = 1) -> xgb.Booster:
    """A booster from UBJSON/JSON bytes. One thread by default: on a small, busy machine
    OpenMP contention costs far more than it gains for small batches."""
    booster = xgb.Booster()
    booster.load_model(bytearray(model_bytes))
    booster.set_param({"nthread": nthread})
    return booster


def predict_proba(booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
    """Positive-class probabilities for a float matrix with NaN as missing."""
    if len(matrix) == 0:
        return np.empty(0)
    # validate_features=False: a NumPy matrix has no names to check, and XGBoost's C++ side
    # still refuses a wrong column count (tests/training/test_model.py); the Python-side
    # check is a noticeable part of a one-row prediction.
    return np.asarray(booster.inplace_predict(matrix, missing=np.nan, validate_features=False), dtype=np.float64)
