"""On-demand features: computed by Feast from request data, identically offline and online."""

import pandas as pd
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
    mode="pandas",
)
def departure_time(inputs: pd.DataFrame) -> pd.DataFrame:
    """Local (America/New_York) hour, weekday (Monday=0) and month of the scheduled departure."""
    import pandas as pd  # Feast serialises this function; it must carry its imports.

    local = pd.to_datetime(inputs["scheduled_departure"], utc=True).dt.tz_convert("America/New_York")
    return pd.DataFrame(
        {
            "dep_hour_local": local.dt.hour.astype("int64"),
            "dep_dow_local": local.dt.dayofweek.astype("int64"),
            "dep_month_local": local.dt.month.astype("int64"),
        },
        index=inputs.index,
    )
