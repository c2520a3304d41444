-- Outcome events: one row per scheduled flight whose outcome is known by as_of, with the
-- "when known" rule of labelled_events.sql (the one the daily views use):
-- known_at = scheduled departure + dep_delay + air_time + 30 minutes of taxi-in (a missing
-- delay or air time counts 0: a cancelled flight is known 30 minutes after its scheduled
-- departure, as its label is).
-- event_timestamp is when the outcome happened: the arrival at the gate
-- (scheduled departure + dep_delay + air_time) for a flight that flew, its scheduled
-- departure for one that did not. arr_delay is null for a cancelled or diverted flight;
-- cancelled is 1.0 for a flight that never departed, else 0.0; late is the label's rule
-- (15+ minutes late or never arrived) as 1.0/0.0, both DOUBLE (a bare 1.0 is a DECIMAL in DuckDB,
-- which the events contract refuses).
WITH outcomes AS (
    SELECT origin, carrier, dest, tailnum,
           scheduled_departure
               + to_minutes(CAST(round(coalesce(dep_delay, 0) + coalesce(air_time, 0)) AS BIGINT))
               AS event_timestamp,
           scheduled_departure
               + to_minutes(CAST(round(coalesce(dep_delay, 0) + coalesce(air_time, 0) + 30) AS BIGINT))
               AS known_at,
           CAST(arr_delay AS DOUBLE) AS arr_delay,
           CAST(CASE WHEN dep_delay IS NULL THEN 1 ELSE 0 END AS DOUBLE) AS cancelled,
           CAST(CASE WHEN arr_delay IS NULL OR arr_delay >= 15 THEN 1 ELSE 0 END AS DOUBLE) AS late
    FROM raw_flights
    WHERE scheduled_departure <= getvariable('as_of')
)
SELECT *
FROM outcomes
WHERE known_at <= getvariable('as_of')
ORDER BY known_at, origin, carrier, dest, tailnum, arr_delay
