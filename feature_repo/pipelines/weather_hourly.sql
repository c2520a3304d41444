-- Hourly weather per origin airport, as observed (event time = observation hour, UTC).
-- Duplicate observations for one airport and hour keep one row, chosen deterministically.
SELECT
    origin,
    time_hour AS event_timestamp,
    CAST(temp AS DOUBLE) AS temp,
    CAST(dewp AS DOUBLE) AS dewp,
    CAST(humid AS DOUBLE) AS humid,
    CAST(wind_dir AS DOUBLE) AS wind_dir,
    CAST(wind_speed AS DOUBLE) AS wind_speed,
    CAST(wind_gust AS DOUBLE) AS wind_gust,
    CAST(precip AS DOUBLE) AS precip,
    CAST(pressure AS DOUBLE) AS pressure,
    CAST(visib AS DOUBLE) AS visib
FROM raw_weather
WHERE time_hour <= getvariable('as_of')
QUALIFY row_number() OVER (
    PARTITION BY origin, time_hour
    ORDER BY temp NULLS LAST, dewp NULLS LAST, humid NULLS LAST, pressure NULLS LAST, visib NULLS LAST
) = 1
ORDER BY origin, event_timestamp
