"""Data sources: Parquet tables built by the DuckDB SQL in ``feature_repo/pipelines``.

Paths come from ``DATA_DIR`` (see ``core.settings``); they are recorded in the registry
at ``feast apply`` time. Hourly tables are also push sources: a ``PushSource`` over the
same Parquet table (its ``batch_source``), so training and materialization read the table
while ``pipeline.push.push_window`` pushes each new hour's rows online as soon as it closes.
"""

from feast import FileSource, PushSource, RequestSource
from feast.data_format import ParquetFormat
from feast.field import Field
from feast.types import UnixTimestamp

from core.settings import Settings

_SETTINGS = Settings.from_env()


def _parquet_source(name: str):
    """The one place the source class follows the profile: Feast's Spark offline store
    needs a SparkSource, the DuckDB store a FileSource, over the same Parquet file."""
    path = str(_SETTINGS.sources / f"{name}.parquet")
    if _SETTINGS.profile == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=f"{name}_source", path=path, file_format="parquet",
                           timestamp_field="event_timestamp")
    return FileSource(
        name=f"{name}_source",
        path=path,
        timestamp_field="event_timestamp",
        file_format=ParquetFormat(),
    )


weather_hourly_source = _parquet_source("weather_hourly")
origin_recent_source = _parquet_source("origin_recent")
aircraft_source = _parquet_source("aircraft")
carrier_daily_source = _parquet_source("carrier_daily")
origin_daily_source = _parquet_source("origin_daily")
route_daily_source = _parquet_source("route_daily")

weather_hourly_push = PushSource(name="weather_hourly_push", batch_source=weather_hourly_source)
origin_recent_push = PushSource(name="origin_recent_push", batch_source=origin_recent_source)

# Known only at request time: the scheduled departure instant (UTC) of the flight.
flight_request = RequestSource(
    name="flight_request",
    schema=[Field(name="scheduled_departure", dtype=UnixTimestamp)],
)
