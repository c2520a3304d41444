"""Feature services: one per model version, the only list of features a model uses."""

from feast import FeatureService

from feature_repo.definitions.features import (
    aircraft,
    carrier_daily,
    origin_daily,
    origin_recent,
    route_daily,
    weather_hourly,
)
from feature_repo.definitions.on_demand import departure_time

late_arrival_v1 = FeatureService(
    name="late_arrival_v1",
    features=[weather_hourly, aircraft, carrier_daily, origin_daily, route_daily, departure_time],
    description="Late-arrival model v1: weather, aircraft, daily carrier/origin/route history, local time.",
)

late_arrival_v2 = FeatureService(
    name="late_arrival_v2",
    features=[weather_hourly, aircraft, carrier_daily, origin_daily, route_daily, departure_time,
              origin_recent],
    description="Late-arrival model v2: v1 plus the origin's departures over the last 3 hours "
                "(pushed hourly).",
)
