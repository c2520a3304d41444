"""The departure-time view (plain Python, Feast's python mode) gives pandas' New York local
time for every hour of the year, daylight saving changes included, for each input form
Feast hands it: aware and naive datetimes offline and here, epoch seconds from `feast serve`."""

from __future__ import annotations

import pandas as pd

from feature_repo.definitions.on_demand import departure_time

udf = departure_time.feature_transformation.udf


def test_every_hour_of_2013_and_both_clock_changes_match_pandas():
    instants = pd.date_range("2012-12-31 00:00", "2014-01-01 06:00", freq="17min", tz="UTC")
    local = instants.tz_convert("America/New_York")
    want = {"dep_hour_local": local.hour.tolist(), "dep_dow_local": local.dayofweek.tolist(),
            "dep_month_local": local.month.tolist()}
    aware = [t.to_pydatetime() for t in instants]
    assert udf({"scheduled_departure": aware}) == want
    assert udf({"scheduled_departure": [t.replace(tzinfo=None) for t in aware]}) == want  # naive = UTC
    assert udf({"scheduled_departure": [int(t.timestamp()) for t in aware]}) == want  # feast serve
    # The spring-forward night: 06:59 UTC is 01:59 EST, 07:00 UTC is 03:00 EDT.
    spring = udf({"scheduled_departure": [pd.Timestamp("2013-03-10 06:59", tz="UTC"),
                                          pd.Timestamp("2013-03-10 07:00", tz="UTC")]})
    assert spring["dep_hour_local"] == [1, 3]


def test_missing_instant_gives_missing_features():
    out = udf({"scheduled_departure": [None, pd.Timestamp("2013-07-01 12:00", tz="UTC")]})
    assert out == {"dep_hour_local": [None, 8], "dep_dow_local": [None, 0], "dep_month_local": [None, 7]}
