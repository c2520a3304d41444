-- Departure events: one row per flight that actually departed, at its actual departure
-- (event_timestamp = scheduled_departure + dep_delay minutes, the rule origin_recent.sql
-- uses). A departure is known the moment it happens (known_at = event_timestamp): only
-- departures are used, nothing about arrivals. A cancelled flight (no dep_delay) never
-- departed and has no departure event. Only events known by as_of are published.
-- The windowed views (feature_repo/definitions/windows.py) aggregate these by origin,
-- carrier or aircraft; a flight without a tail number has a null tailnum here and counts
-- for every view but the aircraft's.
SELECT
    origin,
    carrier,
    dest,
    tailnum,
    scheduled_departure + to_minutes(CAST(dep_delay AS BIGINT)) AS event_timestamp,
    scheduled_departure + to_minutes(CAST(dep_delay AS BIGINT)) AS known_at,
    CAST(dep_delay AS DOUBLE) AS dep_delay
FROM raw_flights
WHERE dep_delay IS NOT NULL
  AND scheduled_departure + to_minutes(CAST(dep_delay AS BIGINT)) <= getvariable('as_of')
ORDER BY known_at, origin, carrier, dest, tailnum, dep_delay
