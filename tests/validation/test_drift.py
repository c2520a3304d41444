"""Drift, volume and the statistics behind the gates' thresholds, on hand-worked numbers."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from core.contracts import ColumnRule, TableContract
from training.model_gate import auc_standard_error
from validation.drift import (
    PSI_MAX,
    as_of_failures,
    as_of_lead_failures,
    as_of_step_failures,
    column_profile,
    distribution_failures,
    profile,
    psi,
    volume_failures,
)


def test_psi_matches_the_hand_computed_value():
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5) = 0.1733 + 0.1014
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.27465, abs=1e-4)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0])), "empty bins are floored, not infinite"


def test_profile_bins_nulls_and_unseen_categories():
    numeric = column_profile(pd.Series([1.0, 2.0, 3.0, 4.0, None] * 20))
    assert numeric["kind"] == "numeric" and numeric["proportions"][-1] == pytest.approx(0.2), "nulls are a bin"
    text = column_profile(pd.Series(["AA", "UA", "UA", None]))
    assert text["categories"] == ["AA", "UA"] and text["proportions"] == [0.25, 0.5, 0.0, 0.25]


def test_a_shift_fails_and_the_same_data_passes():
    contract = {"t": TableContract("t", {"x": ColumnRule(drift=True), "c": ColumnRule(drift=True)})}
    frame = pd.DataFrame({"x": [float(i % 100) for i in range(1000)], "c": ["a", "b"] * 500})
    reference = profile({"t": frame}, contract)
    assert distribution_failures({"t": frame}, reference)[0] == []
    shifted = frame.assign(x=frame["x"] + 30, c=["a", "z"] * 500)
    failures, stats = distribution_failures({"t": shifted}, reference)
    assert {(f.check, f.column) for f in failures} == {("distribution_psi", "x"), ("distribution_psi", "c")}
    assert stats["t.x"] > PSI_MAX and stats["t.c"] > PSI_MAX


@pytest.mark.parametrize("rows, fails", [(100, False), (50, False), (200, False), (49, True), (201, True), (300, True)])
def test_volume_band_is_half_to_double(rows, fails):
    contracts = {"t": TableContract("t", {})}
    failures, stats = volume_failures({"t": rows}, {"t": 100}, contracts)
    assert bool(failures) == fails, stats
    assert volume_failures({"t": rows}, None, contracts) == ([], {}), "no previous snapshot: nothing to compare"


def test_as_of_may_stay_or_move_forward_only():
    t0, t1 = datetime(2013, 1, 1, tzinfo=timezone.utc), datetime(2013, 1, 2, tzinfo=timezone.utc)
    assert as_of_failures(t1, t0, "a") == [] and as_of_failures(t0, t0, "a") == []
    assert [f.check for f in as_of_failures(t0, t1, "a")] == ["as_of_forward"]


def test_as_of_step_is_bounded_by_the_use_case_setting():
    t0 = datetime(2013, 1, 1, tzinfo=timezone.utc)
    day = timedelta(days=1)
    assert as_of_step_failures(t0 + 92 * day, t0, "a", 92 * day) == []
    assert [f.check for f in as_of_step_failures(t0 + 93 * day, t0, "a", 92 * day)] == ["as_of_step"]
    assert as_of_step_failures(t0 + 900 * day, t0, "a", None) == [], "None: no bound"
    assert as_of_step_failures(t0, None, None, day) == [], "no previous snapshot: nothing to compare"


def test_as_of_lead_names_each_timestamp_column_reaching_past_the_as_of():
    as_of = pd.Timestamp("2013-01-04T05:00:00Z")
    hours = pd.Series(pd.date_range("2013-01-01", periods=80, freq="h", tz="UTC"))
    frames = {"flights": pd.DataFrame({"when": hours, "n": range(80)}),
              "weather": pd.DataFrame({"time_hour": hours + pd.DateOffset(years=1)}),
              "planes": pd.DataFrame({"built": pd.to_datetime(["1990-01-01"] * 3)})}  # naive: not a timestamp of events
    failures, stats = as_of_lead_failures(frames, as_of.to_pydatetime(), timedelta(days=2))
    assert [(f.check, f.table, f.column, f.failed_rows) for f in failures] == [("as_of_lead", "weather", "time_hour", 80)]
    assert failures[0].examples[0] == {"row": 0, "time_hour": hours[0] + pd.DateOffset(years=1)}
    assert stats["flights.when"] == pytest.approx(2.0) and stats["weather.time_hour"] > 24 * 365
    assert as_of_lead_failures(frames, as_of.to_pydatetime(), timedelta(days=400))[0] == []


def test_auc_standard_error_hanley_mcneil():
    # By hand, AUC 0.8, 50 positives, 50 negatives: Q1 = 0.8/1.2, Q2 = 1.28/1.8,
    # var = (0.16 + 49 (Q1 - 0.64) + 49 (Q2 - 0.64)) / 2500 = 0.0019804 -> SE 0.04450
    assert auc_standard_error(0.8, 50, 50) == pytest.approx(0.04450, abs=1e-4)
    assert auc_standard_error(0.8, 5000, 5000) < auc_standard_error(0.8, 50, 50) / 9
