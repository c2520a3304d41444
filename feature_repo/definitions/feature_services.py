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
from feature_repo.definitions.windows import (
    aircraft_last_arrival_w,
    carrier_outcomes_w,
    origin_departures_w,
)

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

late_arrival_v3 = FeatureService(
    name="late_arrival_v3",
    features=[weather_hourly, aircraft, carrier_daily, origin_daily, route_daily, departure_time,
              origin_recent, origin_departures_w, carrier_outcomes_w, aircraft_last_arrival_w],
    description="Late-arrival model v3: v2 plus windowed features exact at the request instant: the "
                "origin's departures, mean delay and share delayed over 30 min, 1 h and 3 h; the "
                "carrier's arrival delays over 3 h and 24 h; the aircraft's previous leg (its newest "
                "arrival delay within 12 h).",
)
