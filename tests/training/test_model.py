"""The one prediction path (training.model.predict_proba) skips XGBoost's Python-side
feature validation; it must answer as the validating call does and still refuse a matrix
of the wrong width."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from training.model import booster_from_bytes, predict_proba


@pytest.fixture(scope="module")
def booster():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + rng.normal(size=500) > 0).astype(int)
    trained = xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": 0, "nthread": 1},
                        xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=20)
    return booster_from_bytes(bytes(trained.save_raw("ubj")))


def test_predict_proba_equals_the_validating_inplace_predict(booster):
    rng = np.random.default_rng(1)
    for rows in (1, 7, 100):
        matrix = rng.normal(size=(rows, 6))
        matrix[rng.random(matrix.shape) < 0.2] = np.nan
        want = booster.inplace_predict(matrix, missing=np.nan, validate_features=True)
        got = predict_proba(booster, matrix)
        assert got.dtype == np.float64 and np.array_equal(got, want.astype(np.float64))
    assert predict_proba(booster, np.empty((0, 6))).shape == (0,)


def test_a_matrix_of_the_wrong_width_is_refused(booster):
    for width in (5, 7):
        with pytest.raises(xgb.core.XGBoostError, match="Number of columns"):
            predict_proba(booster, np.zeros((1, width)))


def test_rows_matrix_equals_feature_matrix_and_names_a_bad_feature():
    from training.dataset import TrainingError, feature_matrix, rows_matrix

    features = ["a__x", "b__y", "c__z"]
    rows = [(1, None, 2.5), ("3.5", True, None), (None, None, None)]
    want = feature_matrix([dict(zip(features, row)) for row in rows], features)
    got = rows_matrix(rows, features)
    assert got.dtype == np.float64 and np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got[2]).all() and got[1, 0] == 3.5
    assert rows_matrix([], features).shape == (0, 3)
    with pytest.raises(TrainingError, match="'b__y'"):
        rows_matrix([(1, "fast", 2)], features)
    with pytest.raises(TrainingError, match="absent"):
        rows_matrix([(1, 2)], features)
