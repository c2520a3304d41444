-- One row per scheduled flight: the entity row for training, and its label.
-- Label: arrived 15+ minutes late, or never arrived (cancelled or diverted: arr_delay is null).
-- outcome_known_at: when the outcome can be known (actual departure + air time + 30 min
-- for taxi-in; cancelled flights at their scheduled departure). The daily aggregates only
-- count a flight once its outcome is known, so no future outcome leaks into a feature.
SELECT
    carrier || CAST(flight AS VARCHAR) || '-' || origin || '-'
        || strftime(timezone('{tz}', scheduled_departure), '%Y%m%dT%H%M') AS flight_id,
    scheduled_departure AS event_timestamp,
    scheduled_departure,
    origin,
    dest,
    carrier,
    tailnum,
    CAST(flight AS BIGINT) AS flight,
    CAST(arr_delay IS NULL OR arr_delay >= 15 AS BIGINT) AS is_late,
    CAST(arr_delay AS DOUBLE) AS arr_delay,
    scheduled_departure
        + to_minutes(CAST(round(coalesce(dep_delay, 0) + coalesce(air_time, 0) + 30) AS BIGINT))
        AS outcome_known_at
FROM raw_flights
WHERE scheduled_departure <= getvariable('as_of')
ORDER BY scheduled_departure, flight_id
