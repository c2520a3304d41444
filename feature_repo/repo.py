"""The only file Feast scans (see .feastignore): it exposes the definitions package.

Importing the objects from one package keeps a single instance of each, whether Feast
runs from the repository root or from inside feature_repo/.
"""

from feast import Project

from core.quiet import quiet_third_party_warnings
from feature_repo.definitions.data_sources import (  # noqa: F401
    aircraft_source,
    carrier_daily_source,
    flight_request,
    origin_daily_source,
    origin_recent_push,
    origin_recent_source,
    route_daily_source,
    weather_hourly_push,
    weather_hourly_source,
)
from feature_repo.definitions.entities import carrier, dest, origin, tailnum  # noqa: F401
from feature_repo.definitions.feature_services import (  # noqa: F401
    late_arrival_v1,
    late_arrival_v2,
    late_arrival_v3,
)
from feature_repo.definitions.features import (  # noqa: F401
    aircraft,
    carrier_daily,
    origin_daily,
    origin_recent,
    route_daily,
    weather_hourly,
)
from feature_repo.definitions.on_demand import departure_time  # noqa: F401
from feature_repo.definitions.windows import (  # noqa: F401
    aircraft_last_arrival_w,
    carrier_outcomes_w,
    departure_events_push,
    departure_events_source,
    origin_departures_w,
    outcome_events_push,
    outcome_events_source,
)

# `feast plan/apply/ui` import this file: the same filters as the platform's own commands.
quiet_third_party_warnings()

# The Feast project these definitions belong to (the name feature_store*.yaml gives).
flights_project = Project(name="flights", description="Late arrivals of 2013 New York departures")
