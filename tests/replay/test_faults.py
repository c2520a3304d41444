"""Faults injected into a replay are attributed to their causes: one short replay (three
served days of January 2013 on the fresher FeatureService with the push feed), one fault
per day (a transform change on the second), and monitoring's causes checked per day and view
against what was injected."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import pytest

from core.settings import Settings
from replay.config import FEEDS, ReplayConfig, ReplayError
from replay.faults import Fault, FaultError, attribution, late_mask, parse
from replay.run import run_replay

pytestmark = pytest.mark.replay



def test_fault_specs_parse_and_bad_ones_are_refused_naming_them():
    assert parse("push-delay=2h") == Fault("push-delay", delay=timedelta(hours=2))
    assert parse("late-rows@2013-01-23") == Fault("late-rows", every_hours=4, day=date(2013, 1, 23))
    assert parse("skip-materialize").spec() == "skip-materialize"
    assert parse("transform-change@2013-01-23") == Fault("transform-change", day=date(2013, 1, 23),
                                                         column="aircraft.plane_year")
    assert parse("transform-change=route_daily.flights").spec() == "transform-change=route_daily.flights"
    for bad, says in (("push-delay", "positive duration"), ("push-delay=0h", "positive duration"),
                      ("late-rows=x", "whole number"), ("skip-materialize=1", "takes no value"),
                      ("drop-table", "not a fault"), ("late-rows@2013-13-01", "not a date"),
                      ("transform-change=aircraft", "TABLE.COLUMN")):
        with pytest.raises(FaultError, match=says):
            parse(bad)
    with pytest.raises(ReplayError, match="needs the intraday push feed"):
        ReplayConfig(faults=(parse("push-delay=2h"),))
    with pytest.raises(ReplayError, match="same day"):
        ReplayConfig(feed=FEEDS["push"], faults=(parse("push-delay=2h"), parse("late-rows")))


def test_late_rows_are_the_first_entitys_rows_every_nth_hour():
    import pyarrow as pa

    when = pd.date_range("2013-01-23T00:00Z", periods=6, freq="h").repeat(2)
    table = pa.table({"event_timestamp": when, "origin": ["EWR", "JFK"] * 6})
    assert late_mask(table, "event_timestamp", ["origin"], 4).tolist() == [True, False] + [False] * 6 + \
        [True, False] + [False] * 2


@pytest.fixture(scope="module")
def faulty_replay(tmp_path_factory, raw_slice_dir, use_case):
    uc = use_case.with_feature_service("late_arrival_v2")
    faults = (parse("push-delay=2h@2013-01-22"), parse("late-rows@2013-01-23"),
              parse("skip-materialize@2013-01-23"),  # the night ending the 23rd: the 24th is served stale
              parse("transform-change@2013-01-23"))  # aircraft's SQL changes the night before the 23rd
    config = ReplayConfig(policy="static", start=date(2013, 1, 8), warmup_days=14, days=3, window_days=14,
                          monitor_every_days=3, num_boost_round=20, feed=FEEDS["push"],
                          feature_service="late_arrival_v2", faults=faults)
    settings = Settings(data_dir=tmp_path_factory.mktemp("replay_faults"), raw_dir=raw_slice_dir)
    summary = run_replay(settings, uc, config, say=lambda *a: None)
    root = settings.data_dir / "replay" / config.name
    work = replace(settings, data_dir=root / "data", raw_dir=root / "delivery")
    return {"summary": summary, "work": work, "use_case": uc, "faults": faults}


def test_each_injected_faults_mismatches_are_attributed_to_its_cause(faulty_replay):
    summary, work, uc = faulty_replay["summary"], faulty_replay["work"], faulty_replay["use_case"]
    assert summary["errors"] == [] and summary["config"]["inject"] == [
        "push-delay=120m@2013-01-22", "late-rows=4@2013-01-23", "skip-materialize@2013-01-23",
        "transform-change=aircraft.plane_year@2013-01-23"]
    # The change was made deliberately: a model on the new definitions promoted for the 23rd.
    assert [r["reason"] for r in summary["retrains"]] == [
        "initial", "definitions changed (transform-change=aircraft.plane_year@2013-01-23)"], summary["retrains"]
    assert all(r["promoted"] for r in summary["retrains"]), summary["retrains"]
    [check] = summary["monitoring"]
    assert check["rows"] == summary["events"]
    result = attribution(work, uc, faulty_replay["faults"], [date(2013, 1, 22) + timedelta(days=i) for i in range(3)])
    assert result["rows"] == summary["events"]
    for spec, f in result["faults"].items():
        assert f["mismatches"] >= 20, f"{spec} caused too few mismatches to judge: {result}"
        assert f["attributed"] >= 0.99 * f["mismatches"], f"{spec}: {f}"
    # Everything else matched, and no mismatch anywhere is unexplained.
    assert result["rest"]["exact_rate"] >= 0.999, result["rest"]
    assert result["unexplained"] == 0 and check["causes"].get("unexplained", 0) == 0, result
    assert set(check["causes"]) <= {"write_late", "late_source_row", "definition_changed"}, check["causes"]
    assert result["faults"]["transform-change=aircraft.plane_year@2013-01-23"]["causes"].keys() == {
        "definition_changed"}
