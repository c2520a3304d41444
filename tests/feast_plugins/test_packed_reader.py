"""The server's direct read of the packed SQLite store (``DirectRead``) answers exactly as
Feast's ``get_online_features`` does on the same store, whatever its caches hold, past the
one-statement key limit, and from every thread through its own read-only connection.

(Moved here from ``tests/serving/test_direct_read.py``, which keeps the tests of the
served, TTL-checked vectors built on this read.)"""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins import packed_layout, packed_reader
from feast_plugins.on_demand import RequestViews
from feast_plugins.packed_reader import DirectRead
from feast_plugins.store import feature_store
from tests.conftest import SERVE_END
from training.dataset import load_events

JOIN_KEYS = ["origin", "dest", "carrier", "tailnum"]


@pytest.fixture
def served(served_dir, use_case):
    """(DirectRead, FeatureStore, FeatureService, Settings) over the served slice."""
    settings = Settings.from_env()
    store = feature_store(settings)
    service = store.get_feature_service(use_case.feature_service)
    direct = DirectRead.for_store(store, service)
    assert direct is not None
    return direct, store, service, settings


def entity_rows(settings, use_case) -> list[dict]:
    """Flights of the two days around SERVE_END (values found and not), a null tailnum
    (sent as "", as the server does), unknown keys and a repeated entity."""
    events = load_events(settings, use_case)
    when = events["scheduled_departure"]
    near = events[(when > SERVE_END - timedelta(days=1)) & (when < SERVE_END + timedelta(days=1))]
    near = near.sample(n=150, random_state=5)
    rows = [{"origin": r.origin, "dest": r.dest, "carrier": r.carrier,
             "tailnum": "" if pd.isna(r.tailnum) else r.tailnum,
             "scheduled_departure": r.scheduled_departure.to_pydatetime()} for r in near.itertuples()]
    rows[0]["tailnum"] = ""
    rows[1]["tailnum"] = "N-NOT-THERE"
    rows[2].update(origin="XXX", dest="YYY", carrier="ZZ")
    rows.append(dict(rows[3]))
    return rows


def direct_answer(direct: DirectRead, rows: list[dict]) -> dict:
    out = direct.read(rows)
    direct.on_demand.add(rows, out, JOIN_KEYS)
    return out


def feast_answer(store, service, rows: list[dict]) -> dict:
    """Feast's answer; its python-mode on-demand outputs (which Feast 0.67 drops under full
    feature names) computed by the same RequestViews the direct read uses."""
    out = store.get_online_features(features=service, entity_rows=rows,
                                    full_feature_names=True).to_dict(include_event_timestamps=True)
    RequestViews(store, service, ("python",)).add(rows, out, JOIN_KEYS)
    return out


def test_direct_read_answers_as_get_online_features(served, use_case):
    direct, store, service, settings = served
    rows = entity_rows(settings, use_case)
    for batch in ([rows[0]], [rows[2]], [rows[5]], rows):
        assert direct_answer(direct, batch) == feast_answer(store, service, batch)
    want = feast_answer(store, service, rows)
    # Not vacuous: found and missing values, real timestamps, on-demand values.
    assert any(v is None for v in want["aircraft__seats"]) and any(v is not None for v in want["aircraft__seats"])
    assert 0 in want["route_daily__departures_7d__ts"] and max(want["route_daily__departures_7d__ts"]) > 0
    assert None not in want["departure_time__dep_hour_local"]


def test_entity_key_cache_is_bounded_and_answers_like_feast(served, use_case, monkeypatch):
    """Serialized entity keys are remembered between requests (hits and misses in one batch,
    unknown keys) and the memory stays bounded (past the bound the cache is emptied, so it
    holds at most the bound plus one batch)."""
    direct, store, service, settings = served
    monkeypatch.setattr(packed_reader, "KEY_CACHE_SIZE", 40)
    rows = entity_rows(settings, use_case)

    def cached():
        return [key for keys in direct._key_cache.values() for key in keys]

    for batch in (rows[:10], rows[5:30], rows):
        assert direct_answer(direct, batch) == feast_answer(store, service, batch)
        assert len(cached()) <= max(40, len(batch) * 6)
    assert cached(), "nothing was cached"

    def typed(pair):  # (type, value) per join key: 1 and True differ
        return isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], type)

    assert all(typed(key) or all(typed(part) for part in key) for key in cached())


def test_view_by_view_read_beyond_one_statement_answers_the_same(served, use_case, monkeypatch):
    """Past KEYS_PER_STATEMENT keys the views are read one statement (or more) each: the
    same answer as Feast, and as the single UNION ALL statement (which pads each view's
    keys to a power of two) on the same batches."""
    direct, store, service, settings = served
    rows = entity_rows(settings, use_case)
    for batch in (rows[:3], rows[:7], rows):
        union = direct_answer(direct, batch)
        monkeypatch.setattr(packed_layout, "KEYS_PER_STATEMENT", 4)
        assert direct_answer(direct, batch) == union == feast_answer(store, service, batch)
        monkeypatch.undo()
    assert len(direct._union_sql) >= 2, "the batches did not use differently padded statements"


def test_each_thread_reads_through_its_own_read_only_connection(served, use_case):
    """Threads do not share (and wait on) one SQLite connection; a connection cannot write,
    nor create an empty store where the file went missing; after reset() every thread
    reconnects."""
    direct, store, service, settings = served
    rows = entity_rows(settings, use_case)[:20]
    want = feast_answer(store, service, rows)
    results, connections = [], []

    def read():
        results.append(direct_answer(direct, rows) == want)
        connections.append(direct._connection())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
    assert len({id(c) for c in connections}) == 4
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        connections[0].execute("CREATE TABLE nope (x)")
    before = direct._connection()
    direct.reset()
    assert direct._connection() is not before
    path = settings.data_dir / "online_store.db"
    path.rename(path.with_suffix(".away"))
    try:
        direct.reset()
        with pytest.raises(sqlite3.OperationalError):
            direct._connection().execute("SELECT 1 FROM sqlite_master").fetchall()
        assert not path.exists(), "a read created an empty store"
    finally:
        path.with_suffix(".away").rename(path)
