"""On-demand features: computed by Feast from request data, identically offline and online.

``mode="python"``: Feast hands the function a dict of lists (``{"scheduled_departure":
[datetime, ...]}``) and takes back a dict of lists, offline (``get_historical_features``,
after the point-in-time join) and online (``get_online_features``) alike. Plain Python on
a handful of values costs far less per request than building a pandas frame.
"""

from feast.field import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Int64

from feature_repo.definitions.data_sources import flight_request


@on_demand_feature_view(
    sources=[flight_request],
    schema=[
        Field(name="dep_hour_local", dtype=Int64),
        Field(name="dep_dow_local", dtype=Int64),
        Field(name="dep_month_local", dtype=Int64),
    ],
    mode="python",
)
def departure_time(inputs: dict) -> dict:
    """Local (America/New_York) hour, weekday (Monday=0) and month of the scheduled departure.

    Offline and through this server the instant is a datetime (a timezone-naive one is read
    as UTC); Feast's own online read hands over request values as sent, so ``feast serve``
    gives a number: seconds since the epoch (Feast's ``UnixTimestamp``). A missing instant
    gives missing features."""
    # Feast serialises this function; it must carry its imports.
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    hours, weekdays, months = [], [], []
    for when in inputs["scheduled_departure"]:
        if when is None:
            hours.append(None)
            weekdays.append(None)
            months.append(None)
            continue
        if isinstance(when, (int, float)) and not isinstance(when, bool):
            when = datetime.fromtimestamp(when, tz=timezone.utc)
        elif not isinstance(when, datetime):
            raise TypeError(f"scheduled_departure: expected a datetime or epoch seconds, got {when!r}")
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        local = when.astimezone(new_york)
        hours.append(local.hour)
        weekdays.append(local.weekday())
        months.append(local.month)
    return {"dep_hour_local": hours, "dep_dow_local": weekdays, "dep_month_local": months}
