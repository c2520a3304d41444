"""Windowed features online (``feast_plugins/windowed_online.py``): the tiles and events a
key keeps, merged at the request instant, equal the brute-force reference
(``windows_reference.py``) on the packed SQLite store (the server's direct read and Feast's
``get_online_features``) and on a real redis-server; pushes are atomic and refuse bad or
not-yet-known events, naming the source and the column; materialization fills the state
pushing every event would.

A small Feast repository of its own (one entity, one windowed view with every function at
several windows and tiles), so the cases are the contract's, not the flights'.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.settings import Settings
from feast_plugins import windowed_online
from feast_plugins.push_writer import PushError, materialize_events, push_frames, push_targets
from feast_plugins.windowed_online import Layout, micros, read_instant
from feast_plugins.windows import window_specs
from tests.feast_plugins.windows_reference import Event, reference_value, values_equal

T0 = datetime(2013, 3, 1, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)
SOURCE = "events_push"
#: (window, tile) pairs in minutes: tiles smaller than, equal to and a fraction of a day's window.
WINDOWS = ((30, 10), (60, 60), (180, 15), (1440, 60))
FUNCTIONS = ("count", "sum", "mean", "min", "max", "last", "share_gt:1.5")


def _name(column: str, function: str, window: int) -> str:
    return f"{column}_{function.split(':')[0]}_{window}m"


def build_repo(directory: Path, online: dict):
    """A FeatureStore over ``directory``: entity ``k``, windowed view ``w`` over the events
    table ``events.parquet`` (columns x, y), FeatureService ``svc``; applied."""
    from feast import Entity, FeatureService, FeatureStore, Field, FileSource, PushSource, StreamFeatureView
    from feast.aggregation import Aggregation
    from feast.repo_config import RegistryConfig, RepoConfig
    from feast.types import Float64, Int64, String

    empty_events().to_pandas().to_parquet(directory / "events.parquet")
    config = RepoConfig(project="t", provider="local", registry=RegistryConfig(path=str(directory / "registry.db")),
                        online_store=online, offline_store={"type": "duckdb"},
                        batch_engine={"type": "feast_plugins.packed_sqlite_store.PackedLocalComputeEngine"},
                        entity_key_serialization_version=3, repo_path=str(directory))
    store = FeatureStore(config=config)
    entity = Entity(name="k", join_keys=["k"])
    push = PushSource(name=SOURCE, batch_source=FileSource(name="events", path=str(directory / "events.parquet"),
                                                           timestamp_field="known_at"))
    aggregations, schema = [], [Field(name="k", dtype=String)]
    for column in ("x", "y"):
        for window, tile in WINDOWS:
            for function in FUNCTIONS:
                name = _name(column, function, window)
                aggregations.append(Aggregation(column=column, function=function, time_window=window * MINUTE,
                                                slide_interval=tile * MINUTE, name=name))
                schema.append(Field(name=name, dtype=Int64 if function == "count" else Float64))
    view = StreamFeatureView(name="w", entities=[entity], source=push, timestamp_field="known_at", schema=schema,
                             aggregations=aggregations, online=True)
    service = FeatureService(name="svc", features=[view])
    store.apply([entity, push, view, service])
    return store


def empty_events() -> pa.Table:
    return events_table([])


def events_table(events) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "k": pa.array([e.keys["k"] for e in events], pa.string()),
        "event_timestamp": pa.array([e.event_timestamp for e in events], ts),
        "known_at": pa.array([e.known_at for e in events], ts),
        "x": pa.array([e.values["x"] for e in events], pa.float64()),
        "y": pa.array([e.values["y"] for e in events], pa.float64()),
    })


@pytest.fixture(scope="module")
def sqlite_repo(tmp_path_factory):
    from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStoreConfig

    directory = tmp_path_factory.mktemp("windowed_sqlite")
    store = build_repo(directory, PackedSqliteOnlineStoreConfig(path=str(directory / "online.db")))
    return store, Settings(data_dir=directory)


@pytest.fixture
def redis_repo(tmp_path, redis_server):
    from feast_plugins.windowed_redis import WindowedRedisOnlineStoreConfig

    store = build_repo(tmp_path, WindowedRedisOnlineStoreConfig(connection_string=redis_server.address))
    return store, Settings(data_dir=tmp_path)


@pytest.fixture
def small_states(monkeypatch):
    """States of more than 4 events keep tiles (the default keeps none below
    ``windowed_online.SMALL_STATE``, more than most generated cases hold): the stores'
    tests then cover both kinds and the writes between them."""
    monkeypatch.setattr(windowed_online, "SMALL_STATE", 4)
    monkeypatch.setattr(windowed_online, "_LAYOUTS", {})


def view_of(store):
    return store.get_stream_feature_view("w")


def clear(store) -> None:
    """Empty the windowed view's online state (between Hypothesis examples)."""
    from feast_plugins.store import clear_online

    clear_online(store, [view_of(store)])


def push(store, settings_, events, clock=None):
    targets = push_targets(store, settings_, (SOURCE,))
    newest = max((e.known_at for e in events), default=T0)
    return push_frames(store, targets, {SOURCE: events_table(events)}, clock=clock or newest)


def direct_read(store, rows):
    from feast_plugins.packed_reader import DirectRead

    direct = DirectRead.for_store(store, store.get_feature_service("svc"), request_time_field="at")
    return direct.read(rows)


def feast_read(store, keys, at):
    with read_instant(at):
        return store.get_online_features(features=store.get_feature_service("svc"), entity_rows=[{"k": k} for k in keys],
                                         full_feature_names=True).to_dict()


# -- events as the contract lists them: late and out-of-order arrival, duplicates, equal
# timestamps, events exactly on window and tile boundaries (whole minutes), keys without
# events, null values. Values are halves: every sum is exact in floating point.
_value = st.one_of(st.none(), st.integers(-6, 6).map(lambda i: i / 2))
_event = st.builds(lambda key, known, lag, x, y: Event({"k": key}, T0 + (known - lag) * MINUTE, T0 + known * MINUTE,
                                                       {"x": x, "y": y}),
                   st.sampled_from(["a", "b"]), st.integers(0, 600), st.integers(0, 45), _value, _value)
_case = st.lists(_event, max_size=30).flatmap(lambda events: st.tuples(
    st.just(events),
    st.permutations(events + events[:2]),  # pushed out of order; the first two twice (duplicates)
    st.integers(1, 4),  # batches
    st.lists(st.integers(0, 700), min_size=1, max_size=4),  # request instants, minutes after T0
))
KEYS = ["a", "b", "c", ""]  # c: no events; "": a null key (the server sends a null join key as "")


def _batches(events, n):
    size = max(1, math.ceil(len(events) / n))
    return [events[i:i + size] for i in range(0, len(events), size)]


def check_against_reference(got: dict, specs, pushed, keys, instants, prefix="w__"):
    """``got``: ``{w__<feature>: [value per (instant, key)]}`` in instants-major order."""
    requests = [(k, t) for t in instants for k in keys]
    for spec in specs:
        column = got[prefix + spec.name]
        for (key, t), value in zip(requests, column):
            expected = reference_value(spec, pushed, None if key in (None, "") else (key,), t)
            assert values_equal(spec, value, expected), (spec.name, key, t, value, expected)


@settings(max_examples=100, deadline=None)
@given(_case, st.sampled_from((0, 4, windowed_online.SMALL_STATE)))
def test_layout_merge_equals_the_reference(case, small_state):
    """The tile layout alone (no store): states built batch by batch, out of order, read at
    arbitrary instants, equal the reference for every function, window and tile; with
    tiles always (``small_state`` 0), with states crossing the small-state size both ways
    (4: tiles dropped, built, patched) and with the default."""
    events, pushed, n, minutes = case
    specs = SPECS
    layout = Layout(specs, small_state=small_state)
    states: dict = {}
    for batch in _batches(pushed, n):
        grouped: dict = {}
        for e in batch:
            grouped.setdefault((e.keys["k"],), []).append((micros(e.known_at), micros(e.event_timestamp),
                                                  tuple(math.nan if e.values[c] is None else e.values[c]
                                                        for c in layout.columns)))
        for key, new in grouped.items():
            old = states.get(key)
            states[key] = layout.encode(layout.add(None if old is None else layout.decode(old), new))
    for m in minutes:
        t = T0 + m * MINUTE
        for key in ("a", "b", "c"):
            blob = states.get((key,))
            got = layout.values_at(None if blob is None else layout.decode(blob), micros(t))
            for spec, value in zip(specs, got):
                assert values_equal(spec, value, reference_value(spec, pushed, (key,), t)), (spec.name, key, m)


def _specs():
    from feast_plugins.windows import WindowSpec

    out = []
    for column in ("x", "y"):
        for window, tile in WINDOWS:
            for function in FUNCTIONS:
                name, _, threshold = function.partition(":")
                out.append(WindowSpec("w", ("k",), column, name, window * MINUTE, tile * MINUTE,
                                      _name(column, function, window), float(threshold) if threshold else None))
    return out


SPECS = _specs()

#: Functions read from running totals when no min, max or last shares their (column, window, tile).
RUNNING_FUNCTIONS = ("count", "sum", "mean", "share_gt:1.5")
# Halves add up exactly (running sums are kept); any float may not (sums come from the tiles).
_any_value = st.one_of(st.none(), st.integers(-6, 6).map(lambda i: i / 2),
                       st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
_any_event = st.builds(lambda key, known, lag, x, y: Event({"k": key}, T0 + (known - lag) * MINUTE,
                                                          T0 + known * MINUTE, {"x": x, "y": y}),
                       st.sampled_from(["a", "b"]), st.integers(0, 600), st.integers(0, 45), _any_value, _value)


def _running_specs():
    from feast_plugins.windows import WindowSpec

    out = []
    for column in ("x", "y"):
        for window, tile in WINDOWS:
            for function in RUNNING_FUNCTIONS:
                name, _, threshold = function.partition(":")
                out.append(WindowSpec("w", ("k",), column, name, window * MINUTE, tile * MINUTE,
                                      _name(column, function, window), float(threshold) if threshold else None))
    # Counts and shares alone: running totals whatever the values.
    out += [WindowSpec("w", ("k",), "x", "count", 120 * MINUTE, 30 * MINUTE, "x_count_120m"),
            WindowSpec("w", ("k",), "x", "share_gt", 120 * MINUTE, 30 * MINUTE, "x_share_gt_120m", 1.5)]
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(_any_event, max_size=40), st.integers(1, 4), st.lists(st.integers(0, 700), min_size=1, max_size=4),
       st.sampled_from((0, 4, windowed_online.SMALL_STATE)))
def test_running_totals_give_the_numbers_the_tiles_give(events, n, minutes, small_state):
    """count, sum, mean and share_gt with no min, max or last beside them are read from
    running totals: bit for bit what merging tiles and edges gives, whether the values add
    up exactly (halves: running sums) or not (any float: the sums come from the tiles), and
    the reference's values (sums and means where the values are halves)."""
    specs = _running_specs()
    running = Layout(specs, small_state=small_state)
    tiles = Layout(specs, small_state=small_state, running=False)
    assert all(g.running for g in running.groups) and not any(g.running for g in tiles.groups)
    states: dict = {}
    for batch in _batches(events, n):
        grouped: dict = {}
        for e in batch:
            grouped.setdefault(e.keys["k"], []).append((micros(e.known_at), micros(e.event_timestamp),
                                                        tuple(math.nan if e.values[c] is None else e.values[c]
                                                              for c in running.columns)))
        for key, new in grouped.items():
            old = states.get(key)
            states[key] = running.encode(running.add(None if old is None else running.decode(old), new))
    halves = {c: all(e.values[c] is None or (2 * e.values[c]).is_integer() and abs(e.values[c]) <= 3 for e in events)
              for c in ("x", "y")}
    # Also where events lie exactly on a window's start and end.
    edges = [(e.known_at - T0) // MINUTE + w for e in events[:3] for w in (0, 30, 60, 120, 180)]
    for m in minutes + edges:
        t = T0 + m * MINUTE
        for key in ("a", "b", "c"):
            blob = states.get(key)
            state = None if blob is None else running.decode(blob)
            got = running.values_at(state, micros(t))
            assert repr(got) == repr(tiles.values_at(None if blob is None else tiles.decode(blob), micros(t)))
            assert repr(running.values_at(state, micros(t))) == repr(got), "read again: the totals kept"
            for spec, value in zip(specs, got):
                if spec.function in ("sum", "mean") and not halves[spec.column]:
                    continue
                assert values_equal(spec, value, reference_value(spec, events, (key,), t)), (spec.name, key, m)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_case)
def test_packed_sqlite_pushes_and_reads_equal_the_reference(sqlite_repo, small_states, case):
    """Pushed through the push writer in batches (out of order, duplicates) into the packed
    SQLite store; read at arbitrary instants through the server's direct read and through
    Feast's get_online_features: every value equals the reference, null keys give nulls."""
    store, settings_ = sqlite_repo
    clear(store)
    events, pushed, n, minutes = case
    for batch in _batches(pushed, n):
        push(store, settings_, batch, clock=max(e.known_at for e in pushed))
    specs = window_specs(view_of(store))
    instants = [T0 + m * MINUTE for m in minutes]
    rows = [{"k": k, "at": t} for t in instants for k in KEYS]
    check_against_reference(direct_read(store, rows), specs, pushed, KEYS, instants)
    for t in instants:
        check_against_reference(feast_read(store, KEYS, t), specs, pushed, KEYS, [t])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_case)
def test_redis_pushes_and_reads_equal_the_reference(redis_repo, small_states, case):
    """The same on a real redis-server, through Feast's get_online_features."""
    store, settings_ = redis_repo
    clear(store)
    events, pushed, n, minutes = case
    for batch in _batches(pushed, n):
        push(store, settings_, batch, clock=max(e.known_at for e in pushed))
    specs = window_specs(view_of(store))
    for m in minutes:
        t = T0 + m * MINUTE
        check_against_reference(feast_read(store, KEYS, t), specs, pushed, KEYS, [t])


def _event(key, known_minutes, x=1.0, lag=0):
    return Event({"k": key}, T0 + (known_minutes - lag) * MINUTE, T0 + known_minutes * MINUTE, {"x": x, "y": None})


def _count(store, key, at):
    return direct_read(store, [{"k": key, "at": at}])["w__x_count_1440m"][0]


def test_an_event_pushed_before_it_is_known_is_refused_and_no_request_sees_it(sqlite_repo):
    store, settings_ = sqlite_repo
    clear(store)
    clock = T0 + 60 * MINUTE
    batch = [_event("a", 10), _event("a", 61)]  # the second is known a minute after the push's clock
    with pytest.raises(PushError, match=r"push source 'events_push': column 'known_at'.*before it is known"):
        push(store, settings_, batch, clock=clock)
    for minutes in (10, 61, 120, 10_000):  # at any instant, before or after its known_at
        at = T0 + minutes * MINUTE
        assert _count(store, "a", at) == 0, "nothing of the refused batch was written"
        assert feast_read(store, ["a"], at)["w__x_count_1440m"] == [0]
    push(store, settings_, batch[:1], clock=clock)
    assert _count(store, "a", T0 + 120 * MINUTE) == 1


@pytest.mark.parametrize("change, column", [
    (lambda t: t.drop(["k"]), "k"),
    (lambda t: t.set_column(0, "k", pa.array([None, "a"], pa.string())), "k"),
    (lambda t: t.set_column(1, "event_timestamp", pa.array([None, T0], pa.timestamp("us", tz="UTC"))),
     "event_timestamp"),
    (lambda t: t.drop(["known_at"]), "known_at"),
    (lambda t: t.set_column(2, "known_at", pa.array(["2013-03-01", "2013-03-01"])), "known_at"),
    (lambda t: t.set_column(3, "x", pa.array(["1", "2"])), "x"),
])
def test_bad_events_are_refused_whole_naming_source_and_column(sqlite_repo, change, column):
    store, settings_ = sqlite_repo
    clear(store)
    table = change(events_table([_event("a", 1), _event("a", 2)]))
    targets = push_targets(store, settings_, (SOURCE,))
    with pytest.raises(PushError, match=rf"push source 'events_push': column '{column}'"):
        push_frames(store, targets, {SOURCE: table}, clock=T0 + 10 * MINUTE)
    assert _count(store, "a", T0 + 10 * MINUTE) == 0


def test_a_batch_failing_midway_writes_nothing(sqlite_repo, monkeypatch):
    """The batch's keys are written in one transaction: a failure on the second key leaves
    the first unwritten too, and the retry counts every event once."""
    store, settings_ = sqlite_repo
    clear(store)
    batch = [_event("a", 1), _event("b", 2)]
    real = windowed_online.Layout.add
    calls = []

    def failing(self, state, events):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(self, state, events)

    monkeypatch.setattr(windowed_online.Layout, "add", failing)
    with pytest.raises(OSError):
        push(store, settings_, batch)
    monkeypatch.setattr(windowed_online.Layout, "add", real)
    at = T0 + 5 * MINUTE
    assert (_count(store, "a", at), _count(store, "b", at)) == (0, 0)
    push(store, settings_, batch)
    assert (_count(store, "a", at), _count(store, "b", at)) == (1, 1)


def _states(store) -> list[tuple]:
    path = store.config.online_store.path
    with sqlite3.connect(path) as conn:
        return conn.execute('SELECT entity_key, event_ts, packed FROM "t_w_windowed" ORDER BY entity_key').fetchall()


@pytest.mark.parametrize("small", [False, True], ids=["default", "small_states_4"])
def test_materialize_fills_the_state_pushing_every_event_leaves_and_is_idempotent(sqlite_repo, request, small):
    if small:
        request.getfixturevalue("small_states")
    store, settings_ = sqlite_repo
    events = [_event(k, m, x=float(m % 5), lag=m % 7) for m in range(0, 2000, 7) for k in ("a", "b")]
    end = T0 + 1500 * MINUTE
    known = [e for e in events if e.known_at <= end]
    clear(store)
    for batch in _batches(known, 9):  # pushed as they became known
        push(store, settings_, batch)
    pushed = _states(store)
    events_table(events).to_pandas().to_parquet(Path(view_of(store).batch_source.path))
    clear(store)
    materialize_events(settings_, store, [view_of(store)], end)
    assert _states(store) == pushed, "the same bytes: events and tiles, pruned the same"
    materialize_events(settings_, store, [view_of(store)], end)
    push(store, settings_, known[-3:], clock=end)  # pushes of events already materialized ...
    materialize_events(settings_, store, [view_of(store)], end)  # ... are replaced, not added
    assert _states(store) == pushed
    clear(store)
    store.materialize(start_date=T0 - timedelta(days=1), end_date=end, feature_views=["w"])  # Feast's own call
    assert _states(store) == pushed
    later = [_event("a", 1600)]
    push(store, settings_, later)
    materialize_events(settings_, store, [view_of(store)], end)
    assert _count(store, "a", T0 + 1600 * MINUTE) == 1 + sum(
        1 for e in known if e.keys["k"] == "a" and e.known_at > T0 + 160 * MINUTE), \
        "events pushed after the materialization's end are kept"


def test_old_events_are_pruned_beyond_the_largest_window(sqlite_repo):
    store, settings_ = sqlite_repo
    clear(store)
    layout = windowed_online.layout_of(view_of(store))
    day = 1440
    old = [_event("a", m) for m in range(0, 3 * day, 60)]
    push(store, settings_, old)
    [(_key, _ts, blob)] = _states(store)
    state = layout.decode(blob)
    newest = micros(old[-1].known_at)
    assert min(state.known) > newest - layout.retain
    assert len(state.known) < len(old), "events past the largest window and the slack are gone"
    at = old[-1].known_at
    day_count = next(s for s in SPECS if s.name == "x_count_1440m")
    assert _count(store, "a", at) == reference_value(day_count, old, ("a",), at), "reads at the head stay exact"


def test_the_direct_read_decodes_a_state_again_once_a_push_rewrites_it(sqlite_repo):
    """The server's direct read keeps each key's decoded state while its stored bytes stay
    the same: the next read after a push sees the pushed events; a key the push left alone
    keeps its decoded state."""
    from feast_plugins.packed_reader import DirectRead

    store, settings_ = sqlite_repo
    clear(store)
    push(store, settings_, [_event("a", 10), _event("b", 10)])
    direct = DirectRead.for_store(store, store.get_feature_service("svc"), request_time_field="at")
    at = T0 + 30 * MINUTE

    def read(key):
        out = direct.read([{"k": key, "at": at}])
        return out["w__x_count_1440m"][0], out["w__x_sum_1440m"][0]

    assert (read("a"), read("b")) == ((1, 1.0), (1, 1.0))
    [window] = [view.window for view in direct.batch if view.window is not None]
    before = dict(window.states)
    push(store, settings_, [_event("a", 20, x=3.0)])
    assert (read("a"), read("b")) == ((2, 4.0), (1, 1.0))
    [key_b] = [key for key, (packed, state) in window.states.items() if before[key][0] == packed]
    assert window.states[key_b][1] is before[key_b][1], "b's bytes did not change: its state was not decoded again"
