-- The origin airport's recent departures, hourly: one row per origin at every UTC hour
-- boundary h up to as_of (event_timestamp = h), over the flights that ACTUALLY departed
-- in (h - 3 h, h]. Actual departure = scheduled_departure + dep_delay minutes; a flight
-- without dep_delay (cancelled) never departed. Only departures are used, nothing about
-- arrivals, so a row describes exactly what was known at h: it can be pushed online the
-- moment h passes, fresher than any nightly batch (pipeline/push.py reads this table).
-- Rows are dense (every hour from the first departure to as_of), so a quiet night reads
-- as 0 departures (mean and share null), not as an older window's numbers.
WITH departed AS (
    SELECT origin,
           CAST(dep_delay AS DOUBLE) AS dep_delay,
           scheduled_departure + to_minutes(CAST(dep_delay AS BIGINT)) AS departed_at
    FROM raw_flights
    WHERE dep_delay IS NOT NULL
),
known AS (
    -- The hour boundary closing each departure's hour: (h - 1 h, h] -> h.
    SELECT origin, dep_delay,
           CASE WHEN departed_at = date_trunc('hour', departed_at) THEN departed_at
                ELSE date_trunc('hour', departed_at) + INTERVAL 1 HOUR END AS hour
    FROM departed
    WHERE departed_at <= getvariable('as_of')
),
per_hour AS (
    SELECT origin, hour,
           count(*) AS n,
           sum(dep_delay) AS sum_delay,
           count(*) FILTER (WHERE dep_delay > 15) AS n_delayed
    FROM known
    GROUP BY ALL
),
hours AS (
    SELECT h AS hour
    FROM generate_series((SELECT min(hour) FROM known),
                         date_trunc('hour', getvariable('as_of')),
                         INTERVAL 1 HOUR) AS t(h)
),
dense AS (
    SELECT origin, hour,
           coalesce(n, 0) AS n,
           coalesce(sum_delay, 0) AS sum_delay,
           coalesce(n_delayed, 0) AS n_delayed
    FROM (SELECT DISTINCT origin FROM known) AS o
    CROSS JOIN hours
    LEFT JOIN per_hour USING (origin, hour)
),
windowed AS (
    SELECT origin, hour,
           sum(n) OVER w AS n3,
           sum(sum_delay) OVER w AS sum_delay3,
           sum(n_delayed) OVER w AS n_delayed3
    FROM dense
    WINDOW w AS (PARTITION BY origin ORDER BY hour RANGE BETWEEN INTERVAL 2 HOUR PRECEDING AND CURRENT ROW)
)
SELECT
    origin,
    hour AS event_timestamp,
    CAST(n3 AS BIGINT) AS departures_3h,
    CAST(sum_delay3 AS DOUBLE) / nullif(n3, 0) AS mean_dep_delay_3h,
    CAST(n_delayed3 AS DOUBLE) / nullif(n3, 0) AS delayed_share_3h
FROM windowed
WHERE hour <= getvariable('as_of')
ORDER BY origin, event_timestamp
