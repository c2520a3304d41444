"""Data sources: Parquet tables built by the DuckDB SQL in ``feature_repo/pipelines``.

Each table's source comes from :func:`feast_plugins.sources.parquet_source`: its path is
under ``DATA_DIR`` and its class follows ``PROFILE`` (read from the environment, as the
Feast CLI sees it; the platform binds the sources to each run's own settings when it
applies them). Hourly tables are also push sources: a ``PushSource`` over the same Parquet
table (its ``batch_source``), so training and materialization read the table while
``pipeline.push.push_window`` pushes each new hour's rows online as soon as it closes.
"""

from feast import PushSource, RequestSource
from feast.field import Field
from feast.types import UnixTimestamp

from feast_plugins.sources import parquet_source

weather_hourly_source = parquet_source("weather_hourly")
origin_recent_source = parquet_source("origin_recent")
aircraft_source = parquet_source("aircraft")
carrier_daily_source = parquet_source("carrier_daily")
origin_daily_source = parquet_source("origin_daily")
route_daily_source = parquet_source("route_daily")

weather_hourly_push = PushSource(name="weather_hourly_push", batch_source=weather_hourly_source)
origin_recent_push = PushSource(name="origin_recent_push", batch_source=origin_recent_source)

# Known only at request time: the scheduled departure instant (UTC) of the flight.
flight_request = RequestSource(
    name="flight_request",
    schema=[Field(name="scheduled_departure", dtype=UnixTimestamp)],
)
