"""Served windowed values equal the offline point-in-time values on the real flights.

The use case's windowed views (``feature_repo/definitions/windows.py``: the origin's
departures, the carrier's outcomes, the aircraft's previous leg) over events tables built
by the shipped SQL (``departure_events.sql``, ``outcome_events.sql``) from the slice; a few
morning hours of one day replayed with the event feed of ``REPLAY_FEED=events``
(``replay/events_feed.py``): its first call loads the state up to its start, then, before
each departure instant in time order, the events known since the last one are pushed, and
that instant's flights are read. Every value equals what the offline join
(``get_historical_features`` through the project's ASOF store) gives for the same flight
at its scheduled departure: 0 mismatches, on the packed SQLite store (the server's direct
read) and on a real redis-server (Feast's ``get_online_features``). The full held-out week
is ``bench/bench_windows_online.py``'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from core.duck import connect, sql_str
from core.settings import Settings
from feast_plugins.windowed_online import read_instant
from feast_plugins.windows import window_specs
from tests.feast_plugins.windows_reference import values_equal

#: The served span: 8 to 11 in the morning in New York (a busy stretch with delays building).
START = datetime(2013, 2, 11, 13, tzinfo=timezone.utc)
END = datetime(2013, 2, 11, 16, tzinfo=timezone.utc)
PIPELINES = Path(__file__).resolve().parents[2] / "feature_repo" / "pipelines"
KEYS = ("origin", "carrier", "tailnum")


def build_events(raw_dir: Path, target: Path, use_case, as_of: datetime) -> Path:
    """The events tables the feature pipeline builds, from the raw flights, up to ``as_of``."""
    target.mkdir(parents=True, exist_ok=True)
    [flights] = [t for t in use_case.raw_tables if t.name == "flights"]
    con = connect()
    try:
        con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet({sql_str(raw_dir / 'flights.parquet')})")
        con.execute(f"CREATE TABLE raw_flights AS {flights.normalize_sql}")
        con.execute(f"SET VARIABLE as_of = CAST({sql_str(as_of.isoformat())} AS TIMESTAMPTZ)")
        for name in ("departure_events", "outcome_events"):
            sql = (PIPELINES / f"{name}.sql").read_text()
            con.execute(f"COPY ({sql}) TO {sql_str(target / f'{name}.parquet')} (FORMAT parquet)")
    finally:
        con.close()
    return target


def build_store(directory: Path, events: Path, online,
                offline: str = "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"):
    """A Feast repository over ``directory``: the shipped windowed views, read from ``events``
    (``offline``: the offline store's type, the project's by default)."""
    import warnings

    from feast import FeatureService, FeatureStore, FileSource, PushSource, StreamFeatureView
    from feast.repo_config import RegistryConfig, RepoConfig

    from feature_repo.definitions.entities import carrier, origin, tailnum
    from feature_repo.definitions.windows import WINDOWED_VIEWS

    config = RepoConfig(project="w", provider="local", registry=RegistryConfig(path=str(directory / "registry.db")),
                        online_store=online,
                        offline_store={"type": offline},
                        entity_key_serialization_version=3, repo_path=str(directory))
    store = FeatureStore(config=config)
    pushes, views = {}, []
    for view in WINDOWED_VIEWS:
        name = view.stream_source.name
        if name not in pushes:
            table = view.stream_source.batch_source.path.rsplit("/", 1)[-1]
            pushes[name] = PushSource(name=name, batch_source=FileSource(
                name=view.stream_source.batch_source.name, path=str(events / table),
                timestamp_field=view.stream_source.batch_source.timestamp_field))
        entities = {"origin": origin, "carrier": carrier, "tailnum": tailnum}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            views.append(StreamFeatureView(
                name=view.name, entities=[entities[e] for e in view.entities], source=pushes[name],
                schema=list(view.schema), aggregations=list(view.aggregations), timestamp_field=view.timestamp_field,
                ttl=view.ttl, online=True))
    service = FeatureService(name="windowed", features=views)
    store.apply([origin, carrier, tailnum, *pushes.values(), *views, service])
    return store


@pytest.fixture(scope="module")
def stream(tmp_path_factory, raw_slice_dir, use_case) -> Settings:
    """The whole history's Settings, as the replay's feed gets it: the events tables in its
    ``sources`` (known up to the next midnight: later events are there but must not be seen)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("stream"))
    build_events(raw_slice_dir, settings.sources, use_case, as_of=datetime(2013, 2, 12, tzinfo=timezone.utc))
    return settings


@pytest.fixture(scope="module")
def flights(raw_slice_dir, use_case) -> pd.DataFrame:
    """The flights scheduled in the served span (keys, scheduled departure), in time order."""
    [table] = [t for t in use_case.raw_tables if t.name == "flights"]
    con = connect()
    try:
        con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet({sql_str(raw_slice_dir / 'flights.parquet')})")
        frame = con.execute(
            f"SELECT origin, carrier, tailnum, scheduled_departure FROM ({table.normalize_sql}) "
            "WHERE scheduled_departure >= ? AND scheduled_departure < ? ORDER BY scheduled_departure, origin, "
            "carrier, tailnum", [START, END]).df()
    finally:
        con.close()
    frame["scheduled_departure"] = pd.to_datetime(frame["scheduled_departure"], utc=True)
    return frame.reset_index(drop=True)


def offline_values(store, flights: pd.DataFrame) -> pd.DataFrame:
    entity_df = flights.rename(columns={"scheduled_departure": "event_timestamp"}).assign(row=range(len(flights)))
    result = store.get_historical_features(entity_df=entity_df, features=store.get_feature_service("windowed"),
                                           full_feature_names=True).to_df()
    return result.sort_values("row").reset_index(drop=True)


def replay(store, stream: Settings, flights: pd.DataFrame, read, start: datetime = START) -> pd.DataFrame:
    """The event feed of ``REPLAY_FEED=events`` (:class:`replay.events_feed.EventsFeed`), as
    the replay calls it: before each departure instant ``t`` in time order, ``feed(..., last,
    t)`` (its first call loads the state up to its start), then that instant's flights are
    read (``read(rows, t) -> {column: values}``)."""
    from replay.events_feed import EventsFeed

    feed, no_hourly = EventsFeed(), SimpleNamespace(push_sources=())
    last, parts = start - timedelta(hours=1), []
    for t, group in flights.groupby("scheduled_departure", sort=True):
        t = t.to_pydatetime()
        feed(stream, no_hourly, store, last, t)
        last = t
        rows = [{k: (None if pd.isna(r[k]) else r[k]) for k in KEYS} | {"scheduled_departure": t}
                for r in group.to_dict("records")]
        parts.append(pd.DataFrame(read(rows, t), index=group.index))
    return pd.concat(parts).sort_index()


def mismatches(store, online: pd.DataFrame, offline: pd.DataFrame) -> list:
    bad = []
    for view in store.list_stream_feature_views():
        for spec in window_specs(view):
            column = f"{view.name}__{spec.name}"
            for i, (got, expected) in enumerate(zip(online[column], offline[column])):
                expected = None if pd.isna(expected) else expected
                if not values_equal(spec, None if got is None or pd.isna(got) else got, expected):
                    bad.append((column, i, got, expected))
    return bad


def test_served_equals_offline_on_packed_sqlite(tmp_path, stream, flights):
    from feast_plugins.packed_reader import DirectRead
    from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStoreConfig

    store = build_store(tmp_path, stream.sources, PackedSqliteOnlineStoreConfig(path=str(tmp_path / "online.db")))
    direct = DirectRead.for_store(store, store.get_feature_service("windowed"),
                                  request_time_field="scheduled_departure")

    def read(rows, t):  # as the server sends them: a null key as ""
        return direct.read([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])

    online = replay(store, stream, flights, read)
    offline = offline_values(store, flights)
    assert len(online) == len(offline) == len(flights) > 100
    assert mismatches(store, online, offline) == []
    departures = online["origin_departures_w__departures_1h"]
    assert departures.min() >= 0 and departures.max() > 5, "the window holds real departures"


def test_served_equals_offline_on_redis(tmp_path, redis_server, stream, flights):
    from feast_plugins.windowed_redis import WindowedRedisOnlineStoreConfig

    store = build_store(tmp_path, stream.sources,
                        WindowedRedisOnlineStoreConfig(connection_string=redis_server.address))
    service = store.get_feature_service("windowed")

    def read(rows, t):
        with read_instant(t):
            return store.get_online_features(features=service, full_feature_names=True, entity_rows=[
                {k: ("" if row[k] is None else row[k]) for k in KEYS} for row in rows]).to_dict()

    online = replay(store, stream, flights, read)
    offline = offline_values(store, flights)
    assert mismatches(store, online, offline) == []
