"""Consistency metrics on tiny frames: each class counted where it belongs, per feature, per
day and per slice; SMAPE and difference quantiles; the Prometheus text; malformed logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.consistency import EXACT, EXTRA, MISSING, classify, consistency, prometheus_text
from monitoring.servedlog import LOG_COLUMNS, read_served_log

NAN = np.nan


def frames():
    """Six served rows on two days and two origins; feature a: one missing, one extra, one
    different (10 served, 8 offline); feature b: all equal (nulls on both sides included)."""
    when = pd.to_datetime(["2013-12-01T10:00Z"] * 3 + ["2013-12-02T10:00Z"] * 3)
    log = pd.DataFrame({"event_timestamp": when, "origin": ["JFK", "JFK", "LGA", "LGA", "EWR", "EWR"],
                        "v__a": [1.0, NAN, 3.0, 10.0, 5.0, 0.0], "v__b": [1.0, 2.0, NAN, 4.0, 5.0, 6.0]})
    offline = pd.DataFrame({"v__a": [1.0, 2.0, NAN, 8.0, 5.0, 0.0], "v__b": [1.0, 2.0, NAN, 4.0, 5.0, 6.0]})
    return log, offline


def test_each_served_value_falls_in_one_class():
    log, offline = frames()
    codes = classify(log[["v__a", "v__b"]].to_numpy(), offline[["v__a", "v__b"]].to_numpy())
    assert codes[:, 0].tolist() == [EXACT, MISSING, EXTRA, 3, EXACT, EXACT]
    assert (codes[:, 1] == EXACT).all(), "equal values and nulls on both sides are exact matches"
    assert classify(np.array([[1.0]]), np.array([[1.05]]), tolerance=0.1)[0, 0] == EXACT


def test_metrics_per_feature_day_and_slice():
    log, offline = frames()
    c = consistency(log, offline, ["v__a", "v__b"], "event_timestamp", slices=["origin"])
    a = c["features"]["v__a"]
    assert (a["rows"], a["exact"], a["missing"], a["extra"], a["differ"]) == (6, 3, 1, 1, 1)
    assert a["exact_rate"] == 0.5 and a["missing_rate"] == round(1 / 6, 6)
    # SMAPE over the 4 rows with both sides: |10-8|/9 on one, 0 elsewhere (0 vs 0 included).
    assert a["smape"] == pytest.approx(2 / 9 / 4, abs=1e-6)
    assert a["difference_quantiles"] == {"p01": 2.0, "p50": 2.0, "p99": 2.0}
    b = c["features"]["v__b"]
    assert b["exact_rate"] == 1.0 and b["smape"] == 0.0 and b["difference_quantiles"] is None
    assert c["overall"]["cells"] == 12 and c["overall"]["exact"] == 9
    day1, day2 = c["by_day"]["2013-12-01"], c["by_day"]["2013-12-02"]
    assert (day1["rows"], day1["exact_rate"]) == (3, round(4 / 6, 6))
    assert set(day1["features"]) == {"v__a"}, "a feature without mismatches that day is left out"
    assert day1["features"]["v__a"]["missing"] == 1 and day1["features"]["v__a"]["extra"] == 1
    assert day2["features"]["v__a"]["differ"] == 1
    # Slice values with fewer rows than MIN_SLICE_ROWS fold into "other".
    assert set(c["by_slice"]["origin"]) == {"other"} and c["by_slice"]["origin"]["other"]["rows"] == 6


def test_large_slices_are_kept_by_value(monkeypatch):
    import monitoring.consistency as module

    monkeypatch.setattr(module, "MIN_SLICE_ROWS", 2)
    log, offline = frames()
    c = consistency(log, offline, ["v__a", "v__b"], "event_timestamp", slices=["origin", "absent_column"])
    origin = c["by_slice"]["origin"]
    assert set(origin) == {"JFK", "LGA", "EWR"} and "absent_column" not in c["by_slice"]
    assert origin["EWR"]["exact_rate"] == 1.0 and origin["EWR"]["features"] == {}
    assert origin["LGA"]["features"]["v__a"]["extra"] == 1 and origin["LGA"]["features"]["v__a"]["differ"] == 1


def test_prometheus_text_carries_rates_causes_and_skipped_files():
    log, offline = frames()
    summary = {"consistency": consistency(log, offline, ["v__a", "v__b"], "event_timestamp"),
               "causes": {"findings": [{"cause": "write_late", "values": 3}], "unexplained": 0,
                          "by_feature": {"v__a": {"write_late": 3}}},
               "log": {"skipped_files": [{"file": "x", "error": "unreadable"}]}}
    text = prometheus_text(summary)
    assert 'monitoring_consistency_rate{feature="v__a",class="exact"} 0.5' in text
    assert 'monitoring_mismatch_values{cause="write_late"} 3.0' in text
    assert 'monitoring_mismatch_feature_values{feature="v__a",cause="write_late"} 3.0' in text
    assert "monitoring_mismatch_unexplained_values 0.0" in text
    assert "monitoring_served_log_skipped_files 1.0" in text


def _log_file(path, rows=2, **overrides):
    frame = pd.DataFrame({c: [None] * rows for c in LOG_COLUMNS})
    frame["request_id"] = [f"r{i}" for i in range(rows)]
    frame["entity_index"] = range(rows)
    frame["served_at"] = pd.Timestamp("2026-01-01", tz="UTC")
    frame["event_timestamp"] = pd.Timestamp("2013-12-01T10:00", tz="UTC")
    frame["v__a"] = 1.0
    for k, v in overrides.items():
        frame[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)
    return path


def test_malformed_and_truncated_log_files_are_named_skipped_and_counted(tmp_path):
    root = tmp_path / "served"
    good = _log_file(root / "date=2013-12-01" / "part-good.parquet")
    truncated = _log_file(root / "date=2013-12-01" / "part-truncated.parquet")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (root / "date=2013-12-01" / "part-text.parquet").write_text("not parquet")
    _log_file(root / "date=2013-12-02" / "part-no-time.parquet", event_timestamp=None)
    _log_file(root / "date=2013-12-02" / "part-strings.parquet", v__a="x")
    log = read_served_log(root, ["v__a"], "event_timestamp")
    assert len(log) == 2 and set(log["request_id"]) == {"r0", "r1"}, "the good file's rows are kept"
    skipped = {s["file"].rsplit("/", 1)[-1]: s["error"] for s in log.attrs["skipped"]}
    assert set(skipped) == {"part-truncated.parquet", "part-text.parquet", "part-no-time.parquet",
                            "part-strings.parquet"}, skipped
    assert skipped["part-no-time.parquet"].startswith("2 row(s) without a request time")
    assert "not numbers" in skipped["part-strings.parquet"]
    assert str(good) not in {s["file"] for s in log.attrs["skipped"]}
    only_bad = read_served_log(root, ["v__a"], "event_timestamp", start=pd.Timestamp("2014-01-01", tz="UTC"))
    assert only_bad.empty and len(only_bad.attrs["skipped"]) == 4
