"""Windowed features: events sources and the aggregations declared over them, once.

Two events tables, built by the feature pipeline (``pipelines/departure_events.sql`` and
``pipelines/outcome_events.sql``) under ``DATA_DIR/sources`` like every source table, each
with the flight's keys (origin, carrier, dest, tailnum), ``event_timestamp`` (when it
happened), ``known_at`` (when it became known) and its values:

* a departure event at the actual departure, known at once (``dep_delay``);
* an outcome event when the outcome is known, by the rule the daily views use
  (``arr_delay``, null if the flight never arrived; ``cancelled``; ``late``).

Each is a ``PushSource`` (online, events are pushed as they happen) over its table (its
batch source, which the offline join reads). A windowed view is a Feast
``StreamFeatureView`` with ``timestamp_field="known_at"`` and one ``Aggregation`` per output
feature; ``slide_interval`` is the tile size online. What the values mean (the window
``(t - window, t]`` over ``known_at``, nulls, empty windows) is
:mod:`feast_plugins.windows`' docstring; it parses these declarations for every reader.
"""

import warnings
from datetime import timedelta

from feast import PushSource
from feast.aggregation import Aggregation
from feast.field import Field
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64, String

from feast_plugins.sources import parquet_source
from feast_plugins.windows import KNOWN_AT
from feature_repo.definitions.entities import carrier, origin, tailnum

departure_events_source = parquet_source("departure_events")
outcome_events_source = parquet_source("outcome_events")

departure_events_push = PushSource(name="departure_events_push", batch_source=departure_events_source)
outcome_events_push = PushSource(name="outcome_events_push", batch_source=outcome_events_source)

#: The freshness objective (tag ``freshness_p99``, parsed by ``serving.online.freshness_objective``)
#: of every windowed view. A windowed value is computed at the request instant from the
#: events pushed so far, so what can age is the events' push: an event should be online
#: within 5 minutes of becoming known (its write lag, ``docs/freshness.md``), at the 99th
#: percentile. The smallest tile (5 minutes) is the scale below which a late push changes
#: which tile an event counts in.
FRESHNESS = "5m"

_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)


def _suffix(window: timedelta) -> str:
    if window % _HOUR:
        return f"{window // _MINUTE}m"
    return f"{window // _HOUR}h"


def _aggregation(column: str, function: str, window: timedelta, tile: timedelta, name: str) -> Aggregation:
    return Aggregation(column=column, function=function, time_window=window, slide_interval=tile, name=name)


def _windowed_view(name: str, entity, source, aggregations: list[Aggregation], description: str, freshness: str):
    schema = [Field(name=entity.join_key, dtype=String)]
    schema += [Field(name=a.name, dtype=Int64 if a.function == "count" else Float64) for a in aggregations]
    with warnings.catch_warnings():
        # Feast warns that stream feature views are experimental; this use of them (a
        # declaration, computed by this project's stores) does not depend on Feast's engine.
        warnings.simplefilter("ignore", RuntimeWarning)
        return StreamFeatureView(
            name=name,
            entities=[entity],
            source=source,
            schema=schema,
            aggregations=aggregations,
            timestamp_field=KNOWN_AT,
            ttl=timedelta(0),
            online=True,
            description=description,
            tags={"cadence": "event", "freshness_p99": freshness},
        )


# The origin's departures, their mean departure delay and the share delayed over 15
# minutes, over the last 30 minutes, hour and 3 hours (5-minute tiles).
_ORIGIN_TILE = timedelta(minutes=5)
_origin_aggregations = []
for _window in (timedelta(minutes=30), timedelta(hours=1), timedelta(hours=3)):
    _origin_aggregations += [
        _aggregation("dep_delay", "count", _window, _ORIGIN_TILE, f"departures_{_suffix(_window)}"),
        _aggregation("dep_delay", "mean", _window, _ORIGIN_TILE, f"mean_dep_delay_{_suffix(_window)}"),
        _aggregation("dep_delay", "share_gt:15", _window, _ORIGIN_TILE, f"delayed_share_{_suffix(_window)}"),
    ]

origin_departures_w = _windowed_view(
    "origin_departures_w", origin, departure_events_push, _origin_aggregations,
    "The origin's departures over the last 30 min, 1 h and 3 h: count, mean departure delay, "
    "share delayed over 15 min.", FRESHNESS)

# The carrier's arrivals known over the last 3 and 24 hours: mean arrival delay, and the
# share late (15+ minutes late or never arrived) over 3 hours.
carrier_outcomes_w = _windowed_view(
    "carrier_outcomes_w", carrier, outcome_events_push,
    [
        _aggregation("arr_delay", "mean", timedelta(hours=3), timedelta(minutes=15), "carrier_mean_arr_delay_3h"),
        _aggregation("late", "mean", timedelta(hours=3), timedelta(minutes=15), "carrier_late_share_3h"),
        _aggregation("arr_delay", "mean", timedelta(hours=24), _HOUR, "carrier_mean_arr_delay_24h"),
    ],
    "The carrier's outcomes known over the last 3 h and 24 h: mean arrival delay, share late.", FRESHNESS)

# The same aircraft's previous leg: its newest arrival delay known within 12 hours. An
# outcome is known 30 minutes after the arrival, so a flight's own is never visible before
# it departs. (Its newest *departure* delay would be the flight's own whenever it left at
# or before its scheduled departure, the instant its training rows ask at: a leak worth
# most of v3's measured gain, bench/bench_windows_value.py.)
aircraft_last_arrival_w = _windowed_view(
    "aircraft_last_arrival_w", tailnum, outcome_events_push,
    [_aggregation("arr_delay", "last", timedelta(hours=12), _HOUR, "aircraft_last_arr_delay_12h")],
    "The aircraft's previous leg: its newest arrival delay known within the last 12 h.", FRESHNESS)

#: Every windowed view, for the feature services and the tests.
WINDOWED_VIEWS = (origin_departures_w, carrier_outcomes_w, aircraft_last_arrival_w)
