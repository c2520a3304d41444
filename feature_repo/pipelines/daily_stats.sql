-- Past-only daily aggregates per {keys}: flights whose outcome became known on each local
-- day ({tz}), over that day and the 7 days ending with it. A row is published at the
-- local midnight that closes its day (event_timestamp) and only if that is <= as_of.
-- Rows are dense (one per key and day while the key had flights in the last 7 days), so
-- a day without flights reads as 0 departures rather than as yesterday's numbers.
WITH outcomes AS (
    SELECT {keys}, is_late, arr_delay,
           CAST(timezone('{tz}', outcome_known_at) AS DATE) AS day
    FROM labelled_events
    WHERE outcome_known_at <= getvariable('as_of')
),
per_day AS (
    SELECT {keys}, day,
           count(*) AS n,
           sum(is_late) AS n_late,
           sum(arr_delay) AS sum_delay,
           count(arr_delay) AS n_delay
    FROM outcomes
    GROUP BY ALL
),
days AS (
    SELECT CAST(d AS DATE) AS day
    FROM generate_series(
        CAST((SELECT min(day) FROM outcomes) AS TIMESTAMP),
        CAST((SELECT max(day) FROM outcomes) AS TIMESTAMP),
        INTERVAL 1 DAY) AS t(d)
),
dense AS (
    SELECT {keys}, day,
           coalesce(n, 0) AS n,
           coalesce(n_late, 0) AS n_late,
           coalesce(sum_delay, 0) AS sum_delay,
           coalesce(n_delay, 0) AS n_delay
    FROM (SELECT DISTINCT {keys} FROM outcomes) AS k
    CROSS JOIN days
    LEFT JOIN per_day USING ({keys}, day)
),
windowed AS (
    SELECT *,
           sum(n) OVER w AS n7,
           sum(n_late) OVER w AS n_late7,
           sum(sum_delay) OVER w AS sum_delay7,
           sum(n_delay) OVER w AS n_delay7
    FROM dense
    WINDOW w AS (PARTITION BY {keys} ORDER BY day ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
)
SELECT
    {keys},
    (CAST(day + 1 AS TIMESTAMP) AT TIME ZONE '{tz}') AS event_timestamp,
    CAST(n AS BIGINT) AS departures_1d,
    CAST(n_late AS DOUBLE) / nullif(n, 0) AS late_rate_1d,
    CAST(sum_delay AS DOUBLE) / nullif(n_delay, 0) AS mean_arr_delay_1d,
    CAST(n7 AS BIGINT) AS departures_7d,
    CAST(n_late7 AS DOUBLE) / nullif(n7, 0) AS late_rate_7d,
    CAST(sum_delay7 AS DOUBLE) / nullif(n_delay7, 0) AS mean_arr_delay_7d
FROM windowed
WHERE n7 > 0
  AND (CAST(day + 1 AS TIMESTAMP) AT TIME ZONE '{tz}') <= getvariable('as_of')
ORDER BY {keys}, event_timestamp
