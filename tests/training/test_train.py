"""Training: reproducible bytes, a time split, honest metrics, a gate that fails closed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import evaluate
from training.dataset import feature_matrix
from training.errors import TrainingError
from training.model_gate import GateConfig, floor_failures
from training.train import TrainConfig, fit, holdout_start


def _data(seed=0, n=2000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[rng.random(n) < 0.1, 1] = np.nan
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0.5).astype(float)
    return x, y


def test_same_data_and_config_give_the_same_model_bytes():
    x, y = _data()
    config = TrainConfig(num_boost_round=30)
    a = fit(x, y, ["a", "b", "c"], config)
    b = fit(x.copy(), y.copy(), ["a", "b", "c"], config)
    assert a == b, "training is not reproducible"
    c = fit(x, y, ["a", "b", "c"], TrainConfig(num_boost_round=30, seed=8))
    assert a != c, "the seed has no effect (subsampling should depend on it)"


def test_holdout_start_is_a_later_day_boundary():
    ts = pd.Series(pd.date_range("2013-01-01", periods=100, freq="D", tz="UTC"))
    cut = holdout_start(ts, TrainConfig(holdout_fraction=0.2))
    assert cut == cut.floor("D") and (ts < cut).mean() == pytest.approx(0.8, abs=0.02)
    assert holdout_start(ts, TrainConfig(holdout_start="2013-03-01")) == pd.Timestamp("2013-03-01", tz="UTC")


def test_metrics_calibration_and_slices():
    y = np.array([0, 0, 1, 1] * 100, dtype=float)
    p = np.array([0.1, 0.2, 0.8, 0.9] * 100)
    m = evaluate.holdout_metrics(y, p)
    assert m["auc"] == 1.0 and m["log_loss"] < 0.25 and m["rows"] == 400
    cal = evaluate.calibration(y, p)
    assert sum(b["rows"] for b in cal["bins"]) == 400 and 0 <= cal["ece"] < 0.2
    frame = pd.DataFrame({"origin": ["JFK"] * 300 + ["LGA"] * 100})
    slices = evaluate.slice_metrics(frame, y, p, ["origin"])
    assert set(slices["origin"]) == {"JFK"}, f"LGA has < {evaluate.MIN_SLICE_ROWS} rows and must be left out"


def test_baseline_is_the_training_rate_per_key():
    train = pd.DataFrame({"carrier": ["AA", "AA", "UA", "UA"], "is_late": [1, 0, 1, 1]})
    rates, overall = evaluate.baseline_rates(train, "is_late", "carrier")
    hold = pd.DataFrame({"carrier": ["AA", "UA", "ZZ"]})
    assert evaluate.baseline_predictions(hold, "carrier", rates, overall).tolist() == [0.5, 1.0, 0.75]


def test_feature_matrix_orders_columns_and_keeps_missing_as_nan():
    frame = pd.DataFrame({"b": [1, None], "a": pd.array([3, None], dtype="Int64")})
    m = feature_matrix(frame, ["a", "b"])
    assert m.dtype == np.float64 and m[0].tolist() == [3.0, 1.0] and np.isnan(m[1]).all()
    rows = feature_matrix([{"a": 3, "b": 1.0}, {"a": None, "b": None}], ["a", "b"])
    np.testing.assert_array_equal(rows, m)


def test_floors_reject_a_candidate_that_does_not_beat_the_baseline_by_the_margin():
    config = GateConfig(auc_margin=0.02)
    base = {"auc": 0.6, "log_loss": 0.55}

    def checks(auc, ll):
        return [f.check for f in floor_failures({"auc": auc, "log_loss": ll}, base, config)]

    assert checks(0.7, 0.5) == []
    assert checks(0.61, 0.5) == ["floor_auc"], "beating the baseline by less than the margin is not enough"
    assert checks(0.7, 0.6) == ["floor_log_loss"]
    assert checks(0.5, 0.7) == ["floor_auc", "floor_log_loss"]
    assert checks(None, 0.5) == ["floor_auc"], "an undefined AUC fails closed"


def test_online_vectors_and_training_frames_give_the_same_matrix():
    rows = [{"a": 3, "b": 1.5, "c": None}, {"a": None, "b": np.float32(2.25), "c": "4"}, {"a": True, "b": 0, "c": 7}]
    from_dicts = feature_matrix(rows, ["c", "a", "b"])
    from_frame = feature_matrix(pd.DataFrame(rows), ["c", "a", "b"])
    assert from_dicts.dtype == from_frame.dtype == np.float64
    np.testing.assert_array_equal(from_dicts, from_frame)
    with pytest.raises(TrainingError, match="'b'"):
        feature_matrix([{"a": 1, "b": "x"}], ["a", "b"])
    with pytest.raises(TrainingError, match="absent"):
        feature_matrix([{"a": 1}], ["a", "b"])


def test_load_events_window_is_applied_while_reading(slice_run, use_case):
    """The window read from Parquet equals the same window cut in pandas, both end rules."""
    from training.dataset import load_events

    settings = slice_run["settings"]
    everything = load_events(settings, use_case)
    ts = everything[use_case.event_timestamp]
    start, end = ts.iloc[len(ts) // 3], ts.iloc[len(ts) // 2]
    sizes = []
    for include_end, upper in ((False, ts < end), (True, ts <= end)):
        expected = everything[(ts >= start) & upper].reset_index(drop=True)
        got = load_events(settings, use_case, start, end, include_end=include_end)
        pd.testing.assert_frame_equal(got, expected)
        sizes.append(len(got))
    assert 0 < sizes[0] < sizes[1]  # rows at exactly `end` tell the two rules apart
    naive = load_events(settings, use_case, start.tz_convert("UTC").tz_localize(None))
    assert len(naive) == int((ts >= start).sum())
