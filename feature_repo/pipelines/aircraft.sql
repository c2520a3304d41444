-- Aircraft registry attributes. The registry has no time: its rows are valid from the
-- epoch, so every flight sees them (the feature view's TTL is 0, "no limit").
SELECT
    tailnum,
    TIMESTAMPTZ '1970-01-01 00:00:00+00' AS event_timestamp,
    CAST(year AS DOUBLE) AS plane_year,
    CAST(seats AS BIGINT) AS seats,
    CAST(engines AS BIGINT) AS engines
FROM raw_planes
WHERE tailnum IS NOT NULL AND tailnum <> ''
QUALIFY row_number() OVER (PARTITION BY tailnum ORDER BY year NULLS LAST, seats, engines) = 1
ORDER BY tailnum
