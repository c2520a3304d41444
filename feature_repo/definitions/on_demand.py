"""On-demand features: computed by Feast from request data, identically offline and online.

``mode="python"``: Feast hands the function a dict of lists (``{"scheduled_departure":
[datetime, ...]}``) and takes back a dict of lists, offline (``get_historical_features``,
after the point-in-time join) and online (``get_online_features``) alike. Plain Python on
a handful of values costs microseconds per request where a pandas frame costs about a
millisecond.
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

    A timezone-naive instant is read as UTC; a missing one gives missing features."""
    # Feast serialises this function; it must carry its imports.
    from datetime import timezone
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    hours, weekdays, months = [], [], []
    for when in inputs["scheduled_departure"]:
        if when is None:
            hours.append(None)
            weekdays.append(None)
            months.append(None)
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        local = when.astimezone(new_york)
        hours.append(local.hour)
        weekdays.append(local.weekday())
        months.append(local.month)
    return {"dep_hour_local": hours, "dep_dow_local": weekdays, "dep_month_local": months}
