"""The events tables' contracts (``validation/events_contracts.py``), derived from the
windowed views declared in ``feature_repo/definitions/windows.py``: a good events table
passes, a bad one is refused by the features gate's check naming the table and the column."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from validation.contracts import Context
from validation.events_contracts import events_contracts
from validation.gates import check_files
from validation.report import Report

AS_OF = datetime(2013, 3, 1, 5, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def contracts():
    from feature_repo.definitions.entities import carrier, origin, tailnum
    from feature_repo.definitions.windows import WINDOWED_VIEWS

    return events_contracts(WINDOWED_VIEWS, [origin, carrier, tailnum])


def departures(n: int = 4) -> pd.DataFrame:
    at = pd.date_range(AS_OF - timedelta(hours=n), periods=n, freq="h", tz="UTC").astype("datetime64[us, UTC]")
    return pd.DataFrame({"origin": ["JFK"] * n, "carrier": ["B6"] * n, "dest": ["BOS"] * n,
                         "tailnum": ["N1"] * (n - 1) + [None],  # a flight without a tail number: allowed
                         "event_timestamp": at, "known_at": at, "dep_delay": [3.0, -2.0, None, 40.0][:n]})


def failures(contracts, frame: pd.DataFrame, tmp_path, table: str = "departure_events") -> list:
    path = tmp_path / f"{table}.parquet"
    frame.to_parquet(path)
    report = Report("features", "test")
    check_files(report, {table: path}, {table: contracts[table]}, Context(now=AS_OF, as_of=AS_OF))
    return report.failures


def test_each_events_table_gets_its_views_columns(contracts):
    assert set(contracts) == {"departure_events", "outcome_events"}
    departures_ = contracts["departure_events"].columns
    assert set(departures_) == {"origin", "event_timestamp", "known_at", "dep_delay"}
    assert departures_["dep_delay"].dtype == "float64" and departures_["known_at"].not_after == "as_of"
    assert not departures_["known_at"].nullable and not departures_["event_timestamp"].nullable
    outcomes = contracts["outcome_events"].columns
    assert set(outcomes) == {"carrier", "tailnum", "event_timestamp", "known_at", "arr_delay", "late"}
    assert outcomes["tailnum"].nullable, "an outcome without a tail number still counts for its carrier"


def test_a_good_events_table_passes(contracts, tmp_path):
    assert failures(contracts, departures(), tmp_path) == []


def test_an_event_without_its_key_belongs_to_no_key_and_passes(contracts, tmp_path):
    assert failures(contracts, departures().assign(origin=["JFK", None, "LGA", None]), tmp_path) == []


@pytest.mark.parametrize("column, change, check", [
    ("origin", lambda f: f.drop(columns=["origin"]), None),
    ("dep_delay", lambda f: f.drop(columns=["dep_delay"]), None),
    ("dep_delay", lambda f: f.assign(dep_delay=f["dep_delay"].astype(str)), None),
    ("known_at", lambda f: f.assign(known_at=f["known_at"].where(f.index != 1, pd.NaT)), None),
    ("event_timestamp", lambda f: f.assign(event_timestamp=f["event_timestamp"].dt.tz_localize(None)), None),
    ("known_at", lambda f: f.assign(known_at=f["known_at"] + timedelta(hours=2)), "not_after_as_of"),
], ids=["missing_key", "missing", "wrong_type", "null_known_at", "naive_time", "known_in_the_future"])
def test_a_bad_events_table_is_refused_naming_table_and_column(contracts, tmp_path, column, change, check):
    found = failures(contracts, change(departures()), tmp_path)
    assert found, "refused"
    assert all(f.table == "departure_events" for f in found), found
    assert column in {f.column for f in found}, found
    if check is not None:
        assert any(f.check == check and f.column == column for f in found), found
