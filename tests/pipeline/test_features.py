"""Feature pipelines on tiny hand-made data whose answers are worked out by hand."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from pipeline.features import build_sources
from pipeline.ingest import ingest
from tests.conftest import write_raw_dir

EDT = timezone(timedelta(hours=-4))


def _flight(template: pd.Series, local: datetime, dep_delay, air_time, arr_delay, **extra) -> dict:
    row = template.to_dict()
    row.update(year=local.year, month=local.month, day=local.day,
               sched_dep_time=local.hour * 100 + local.minute, dep_delay=dep_delay, air_time=air_time,
               arr_delay=arr_delay, carrier="AA", origin="JFK", dest="LAX", tailnum="N1",
               time_hour=local.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:00:00Z"), **extra)
    return row


@pytest.fixture
def sources(tmp_path, builtin_raw, use_case, settings_for):
    template = builtin_raw["flights"].iloc[0]
    nan = float("nan")
    flights = pd.DataFrame([
        _flight(template, datetime(2013, 6, 1, 12, 0, tzinfo=EDT), 0.0, 100.0, 0.0),     # on time
        _flight(template, datetime(2013, 6, 3, 8, 0, tzinfo=EDT), 10.0, 300.0, 20.0),    # late
        _flight(template, datetime(2013, 6, 3, 9, 0, tzinfo=EDT), nan, nan, nan),        # cancelled
        # departs late on 06-03; its outcome is only known at 04:30 on 06-04
        _flight(template, datetime(2013, 6, 3, 22, 0, tzinfo=EDT), 60.0, 300.0, 70.0),
        _flight(template, datetime(2013, 6, 5, 10, 0, tzinfo=EDT), 0.0, 300.0, -5.0),    # after as-of day
    ])
    w = builtin_raw["weather"].iloc[[0, 0, 1]].copy()
    w.iloc[1, w.columns.get_loc("temp")] = 10.0  # a duplicate observation for the same hour
    # Weather reaches past the last flight, so the snapshot's as-of is that flight's departure.
    w["time_hour"] = ["2013-06-01T16:00:00Z", "2013-06-01T16:00:00Z", "2013-06-05T20:00:00Z"]
    planes = builtin_raw["planes"].iloc[:2].copy()
    planes.loc[planes.index[0], "tailnum"] = "N1"
    tables = {**builtin_raw, "flights": flights, "weather": w, "planes": planes}
    settings = settings_for(tmp_path / "data", write_raw_dir(tables, tmp_path / "raw"))
    # The raw contract refuses the duplicate weather key; accepting that one check lets it
    # through, to show the feature SQL still resolves duplicates deterministically.
    snapshot = ingest(settings, use_case, accept=("unique_key",))
    build_sources(settings, use_case, snapshot)
    return {name: pd.read_parquet(settings.sources / f"{name}.parquet") for name in
            ("labelled_events", "route_daily", "carrier_daily", "weather_hourly", "aircraft")}


def test_labels_and_outcome_times(sources):
    events = sources["labelled_events"]
    assert events["is_late"].tolist() == [0, 1, 1, 1, 0], "late = arr_delay >= 15 or no arrival"
    known = events["outcome_known_at"].dt.tz_convert("America/New_York").dt.strftime("%m-%d %H:%M").tolist()
    assert known == ["06-01 14:10", "06-03 13:40", "06-03 09:30", "06-04 04:30", "06-05 15:30"]
    assert events["flight_id"].is_unique


def test_daily_aggregates_are_past_only_dense_and_windowed(sources):
    route = sources["route_daily"]
    local = route["event_timestamp"].dt.tz_convert("America/New_York")
    assert (local.dt.strftime("%H:%M") == "00:00").all(), "rows are published at local midnight"
    # published at the close of 06-01..06-04; 06-05 has not closed by the snapshot's as-of time
    assert local.dt.strftime("%m-%d").tolist() == ["06-02", "06-03", "06-04", "06-05"]
    assert route["departures_1d"].tolist() == [1, 0, 2, 1], "the 22:00 flight counts when its outcome is known"
    assert route["departures_7d"].tolist() == [1, 1, 3, 4]
    assert route["late_rate_1d"].iloc[0] == 0.0 and math.isnan(route["late_rate_1d"].iloc[1])
    assert route["late_rate_1d"].iloc[2] == 1.0
    assert route["late_rate_7d"].tolist() == pytest.approx([0.0, 0.0, 2 / 3, 3 / 4])
    assert route["mean_arr_delay_1d"].iloc[2] == 20.0, "a cancelled flight has no delay to average"
    assert route["mean_arr_delay_7d"].iloc[3] == pytest.approx((0 + 20 + 70) / 3)
    assert sources["carrier_daily"]["departures_7d"].tolist() == [1, 1, 3, 4], "same numbers for one carrier"


def test_weather_deduplicates_deterministically_and_aircraft_is_timeless(sources):
    weather = sources["weather_hourly"]
    assert not weather.duplicated(["origin", "event_timestamp"]).any()
    assert len(weather) == 1, "one row per hour, and none after the snapshot's as-of time"
    assert weather["temp"].tolist() == [10.0], "duplicates resolve by a fixed order (lowest temp first)"
    aircraft = sources["aircraft"]
    assert (aircraft["event_timestamp"] == pd.Timestamp("1970-01-01", tz="UTC")).all()
    assert "N1" in set(aircraft["tailnum"])
