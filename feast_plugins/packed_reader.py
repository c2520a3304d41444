"""The server's online read of the packed SQLite store, bypassing Feast's ``get_online_features``.

:class:`DirectRead` reads a FeatureService's batch views straight from the packed store's
tables (layout: ``packed_layout.py``) and returns what
``get_online_features(...).to_dict(include_event_timestamps=True)`` returns for them
(``tests/feast_plugins/test_packed_reader.py`` compares the two); its on-demand views are
:class:`~feast_plugins.on_demand.RequestViews`. Why: it is the serving hot path. Feast's
read goes through the store's one shared connection, one statement per view, and
serializes each key and converts each value on every request; this one keeps a read-only
connection per thread, reads every view in one ``SELECT``, and caches serialized keys and
decoded rows. The Feast internals used here are listed in ``compat.py``.

**A damaged file is refused, not served.** :meth:`DirectRead.verify` checks the whole
store when a model is loaded: SQLite's own ``PRAGMA integrity_check``, then every row
(:func:`check_store`): its values parse, are of their features' kinds, name no feature
one damaged byte away from one of its view's, carry an event time that is not in the
future, and keep to the view's value rules (the source table's contract: nulls, and the
ranges and allowed values of rules that tolerate no bad row). A store that fails is
refused with :class:`CorruptOnlineStore` (HTTP 503 naming the file and how to rebuild
it) until the file changes and checks out (:meth:`DirectRead.recheck`, from readiness;
while refused, from every read). Bytes that do not parse on the hot path refuse it the
same way. Checks run at load and in readiness, never per value on the request path.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional

from google.protobuf.message import DecodeError

from core.contracts import ColumnRule
from core.duck import sql_ident
from feast_plugins import packed_layout, windowed_online
from feast_plugins.on_demand import TS_SUFFIX, NotDirect, Output, RequestViews, outputs_of, round_trip

#: Decoded packed rows kept per batch view (:func:`_decoder`).
DECODE_CACHE_ENTRIES = 20_000
#: Keys whose decoded windowed state is kept, per windowed view (:class:`WindowRead`; a state holds a window's events).
WINDOW_CACHE_ENTRIES = 4_096
#: Entity keys :class:`DirectRead` keeps serialized (a few MB at most).
KEY_CACHE_SIZE = 50_000
#: The prepared statements each thread's connection keeps (one per mix of padded key counts).
UNION_STATEMENTS = 256
#: How to rebuild a damaged online store (said in every refusal).
REBUILD = "rebuild it with `pipeline materialize --start 1970-01-01`"
#: An event time this far past the wall clock is damage, not data (microseconds).
FUTURE_SLACK_US = 24 * 3600 * 1_000_000
#: Problems :func:`check_store` names before it stops looking.
MAX_PROBLEMS = 5

log = logging.getLogger(__name__)


class CorruptOnlineStore(sqlite3.DatabaseError):
    """The packed store's file is damaged (:func:`check_store`): the server refuses to read
    it. A ``sqlite3.DatabaseError``, so the serving path answers it as an unavailable
    store (HTTP 503), with this message: which file, what is wrong, how to rebuild."""


#: ``Value`` fields by kind: a feature's value must be of its type's kind (a number may have
#: been written as another number: a view whose type changed keeps its old rows until
#: they are materialized again).
_KINDS = {"int32_val": "number", "int64_val": "number", "double_val": "number", "float_val": "number",
          "bool_val": "number", "string_val": "string", "bytes_val": "bytes", "unix_timestamp_val": "timestamp"}
_TYPE_KINDS = {"INT32": "number", "INT64": "number", "DOUBLE": "number", "FLOAT": "number", "BOOL": "number",
               "STRING": "string", "BYTES": "bytes", "UNIX_TIMESTAMP": "timestamp"}


def _near_miss(name: str, missing) -> Optional[str]:
    """The feature of ``missing`` that ``name`` is a damaged copy of (same length, at most
    two bytes differ), if any. A feature removed from a view leaves its old name in old
    rows: that is not damage; a name one flipped bit away from a feature the row lacks is."""
    encoded = name.encode("utf8", "surrogatepass")
    for feature in missing:
        other = feature.encode("utf8")
        if len(other) == len(encoded) and sum(a != b for a, b in zip(other, encoded)) <= 2:
            return feature
    return None


class StoredView(NamedTuple):
    """What a view's packed rows may hold: its features, their types, their value rules."""

    name: str
    table: str
    features: Mapping[str, Any]  # feature -> Feast ValueType
    rules: Mapping[str, ColumnRule]


def _signature(path: Path) -> tuple:
    """The store's file and its WAL as ``stat`` sees them: any write or replacement changes it."""
    out = []
    for each in (path, Path(f"{path}-wal")):
        try:
            st = os.stat(each)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def check_store(path: Path, views: list[StoredView], now_us: Optional[int] = None) -> Optional[str]:
    """What is wrong with the packed store at ``path`` (None: nothing found): SQLite's
    ``PRAGMA integrity_check``, then each view's rows (:func:`_check_rows`). A file that
    cannot be opened at all (missing, a directory) is not judged here: reads report it.
    Raises ``sqlite3.OperationalError`` when the file is busy (check again later)."""
    path = Path(path)
    if not path.is_file():
        return None
    now_us = int(time.time() * 1_000_000) if now_us is None else now_us
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        try:
            found = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
            if found != ["ok"]:
                return f"SQLite's integrity check fails: {'; '.join(map(str, found))}"
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            problems: list[str] = []
            for view in views:
                if view.table in tables:
                    problems += _check_rows(conn, view, now_us)
                if len(problems) >= MAX_PROBLEMS:
                    break
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise
            return f"SQLite cannot read it: {e}"
        except sqlite3.DatabaseError as e:
            return f"SQLite cannot read it: {e}"
    finally:
        conn.close()
    return "; ".join(problems[:MAX_PROBLEMS]) or None


def _check_rows(conn: sqlite3.Connection, view: StoredView, now_us: int) -> list[str]:
    """Problems with ``view``'s rows: values that do not parse, a damaged feature name
    (:func:`_near_miss`), a value of another kind than its feature's type, an event time
    in the future, and values its rules forbid:
    nulls where a rule allows none, ranges and allowed values of rules without a
    tolerance. (A rule that tolerates a share of bad rows, for known-bad readings, cannot
    judge the few rows an online store holds: the newest reading may be the bad one.)"""
    problems: list[str] = []
    broken: dict[str, int] = {}  # feature -> rows breaking a value rule
    example: dict[str, object] = {}
    nulls: dict[str, int] = {}
    ranges = {f: rule for f, rule in view.rules.items()
              if not rule.tolerance and (rule.min is not None or rule.max is not None or rule.allowed is not None)}
    allowed = {f: {str(v) for v in rule.allowed} for f, rule in ranges.items() if rule.allowed is not None}
    for _key, ts, packed in conn.execute(f"SELECT entity_key, event_ts, packed FROM {sql_ident(view.table)}"):
        if len(problems) >= MAX_PROBLEMS:
            break
        if not isinstance(ts, int) or ts < 0 or ts > now_us + FUTURE_SLACK_US:
            problems.append(f"view {view.name!r}: a row's event time {ts!r} is not a plausible instant")
            continue
        try:
            values = packed_layout.unpack(packed) if isinstance(packed, bytes) else None
        except DecodeError:
            values = None
        if values is None:
            problems.append(f"view {view.name!r}: a row's values do not parse")
            continue
        unknown = [name for name in values if name not in view.features]
        damaged = next((name for name in unknown if _near_miss(name, view.features.keys() - values.keys())), None)
        if damaged is not None:
            problems.append(f"view {view.name!r}: a row holds {damaged!r} where its feature "
                            f"{_near_miss(damaged, view.features.keys() - values.keys())!r} belongs")
            continue
        for name, value in values.items():
            value_type = view.features.get(name)
            if value_type is None:
                continue  # a feature the view no longer has (see _near_miss)
            field = value.WhichOneof("val")
            if field is None or field == "null_val":
                if name in view.rules and not view.rules[name].nullable:
                    nulls[name] = nulls.get(name, 0) + 1
                continue
            expected = _TYPE_KINDS.get(value_type.name)
            if expected is not None and _KINDS.get(field) != expected:
                problems.append(f"view {view.name!r}: a row's {name!r} is a {field}, the view declares "
                                f"{value_type.name}")
                break
            rule = ranges.get(name)
            if rule is None or field not in packed_layout.SCALAR_FIELDS:
                continue
            v = getattr(value, field)
            if ((rule.min is not None and not v >= rule.min) or (rule.max is not None and not v <= rule.max)
                    or (name in allowed and str(v) not in allowed[name])):
                broken[name] = broken.get(name, 0) + 1
                example.setdefault(name, v)
    for name, n in broken.items():
        rule = ranges[name]
        bounds = f"allowed {sorted(allowed[name])}" if name in allowed else f"range [{rule.min}, {rule.max}]"
        problems.append(f"view {view.name!r}: {n} row(s) hold {name} values outside its contract's {bounds} "
                        f"(e.g. {example[name]!r})")
    for name, n in nulls.items():
        problems.append(f"view {view.name!r}: {n} row(s) hold a null {name}, which its contract forbids")
    return problems


class KeyColumn(NamedTuple):
    """One column of a batch view's entity key."""

    join_key: str  # the entity's join key (its name in the serialized key)
    field: str  # the request field holding it (the projection may map it)
    value_type: Any  # its Feast ValueType


@dataclass(frozen=True)
class BatchView:
    """A batch view of the FeatureService as the read needs it."""

    table: str  # its packed table
    keys: tuple[KeyColumn, ...]
    outputs: tuple[Output, ...]
    #: ``decode(packed) -> values in output order`` (None: an empty row), memoized (:func:`_decoder`).
    decode: Callable[[bytes], Optional[tuple]]
    #: A windowed view's read (its rows are states, merged at each request's instant), or None.
    window: Optional["WindowRead"] = None

    @functools.cached_property
    def join_keys(self) -> tuple[str, ...]:
        """The key's join keys: serialized keys depend on these names and the values only."""
        return tuple(key.join_key for key in self.keys)

    @functools.cached_property
    def signature(self) -> tuple[tuple[str, str], ...]:
        """(join key, request field) pairs: views with equal signatures share a request's keys."""
        return tuple((key.join_key, key.field) for key in self.keys)

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        """The request fields holding the key."""
        return tuple(key.field for key in self.keys)

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """The outputs' names in the response."""
        return tuple(output.name for output in self.outputs)

    @functools.cached_property
    def stamp_names(self) -> tuple[str, ...]:
        """The names of the outputs' timestamps in the response."""
        return tuple(output.name + TS_SUFFIX for output in self.outputs)

    @functools.cached_property
    def empty(self) -> tuple:
        """The values of an entity without a row: every output null."""
        return (None,) * len(self.outputs)


def _decoder(outputs: tuple[Output, ...]) -> Callable[[bytes], Optional[tuple]]:
    """:func:`packed_layout.decode` for these outputs, memoized on the bytes: decoding is a
    pure function of them, and hot entities (airports, carriers, routes) repeat. The row
    itself is read on every request."""
    features = tuple((output.feature, output.value_type) for output in outputs)

    @functools.lru_cache(maxsize=DECODE_CACHE_ENTRIES)
    def decode(packed: bytes) -> Optional[tuple]:
        return packed_layout.decode(packed, features)

    return decode


@dataclass(frozen=True)
class WindowRead:
    """How :class:`DirectRead` answers a windowed view (``windowed_online.py``): each key's
    state, decoded once per distinct stored bytes, merged at the request's instant."""

    layout: windowed_online.Layout
    #: Each output's position in the layout's outputs.
    positions: tuple[int, ...]
    #: ``pick(layout's values) -> the outputs' values`` (None: all of them, in order).
    pick: Optional[Callable[[tuple], tuple]] = None
    #: Per serialized key, the bytes last read for it and their decoded state (:meth:`state`).
    states: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, view, outputs: tuple[Output, ...]) -> "WindowRead":
        layout = windowed_online.layout_of(view)
        positions = tuple(layout.names.index(o.feature) for o in outputs)
        if positions == tuple(range(len(layout.names))):
            pick = None
        elif len(positions) == 1:
            def pick(values: tuple, p: int = positions[0]) -> tuple:
                return (values[p],)
        else:
            pick = operator.itemgetter(*positions)
        return cls(layout, positions, pick)

    def state(self, key: bytes, packed: bytes) -> windowed_online.State:
        """The state stored as ``packed`` for ``key``, decoded when these bytes were not the
        ones last decoded for it: a push or a materialization that rewrote the key's state
        changes its bytes. Kept by key and checked by comparing the bytes, which costs far
        less than hashing them (a busy key's state is kilobytes). At most
        :data:`WINDOW_CACHE_ENTRIES` keys (the oldest is dropped)."""
        states = self.states
        held = states.get(key)
        if held is not None and held[0] == packed:
            return held[1]
        state = self.layout.decode(packed)
        if held is None and len(states) >= WINDOW_CACHE_ENTRIES:
            try:
                del states[next(iter(states))]
            except (KeyError, RuntimeError, StopIteration):  # another thread changed it meanwhile
                pass
        states[key] = (packed, state)
        return state

    def values(self, key: bytes, packed: Optional[bytes], instant: Optional[int]) -> tuple:
        """The outputs' values at ``instant`` (microseconds; None: null) for ``key``'s stored
        state (None: a key without events)."""
        merged = self.layout.values_at(None if packed is None else self.state(key, packed), instant)
        return merged if self.pick is None else self.pick(merged)


class DirectRead:
    """The FeatureService's batch views read from the packed SQLite store's tables directly.

    ``read(rows)`` returns the dict ``get_online_features(service, rows,
    full_feature_names=True).to_dict(include_event_timestamps=True)`` returns for the batch
    views (on-demand views: :attr:`on_demand`). Built by :meth:`for_store`, which answers
    None when the store or the service does not qualify.

    Windowed views (``windowed_online.py``) are answered at each row's instant: its
    ``request_time_field`` (a datetime; None there: nulls), or the wall clock when no field
    is named; their timestamp is that instant (whole seconds), 0 for a null key (None or
    ``""``, which the server sends for a null key: every windowed feature null).
    """

    def __init__(self, store, service, request_time_field: Optional[str] = None):
        self.request_time_field = request_time_field
        #: Serialized entity keys by (join keys, values): a server sees the same airports,
        #: carriers and aircraft again and again (bounded: emptied past KEY_CACHE_SIZE).
        self._key_cache: dict[tuple[str, ...], dict[tuple, bytes]] = {}
        self.store = store
        config = store.config
        self._version = config.entity_key_serialization_version
        self._placeholder_key = packed_layout.placeholder_key(self._version)
        online_store = store._get_provider().online_store
        views = {v.name: v for v in store.list_feature_views()}
        windowed = {v.name: v for v in store.list_stream_feature_views() if windowed_online.is_windowed(v)}
        self.batch: list[BatchView] = []
        #: Every view read, as :func:`check_store` checks its rows (value rules: :meth:`verify`).
        self._stored: dict[str, StoredView] = {}
        for projection in service.feature_view_projections:
            view = views.get(projection.name)
            if view is None and projection.name in windowed:  # a windowed view: its states
                view = windowed[projection.name]
                outputs = outputs_of(projection)
                keys = tuple(KeyColumn(c.name, projection.join_key_map.get(c.name, c.name), c.dtype.to_value_type())
                             for c in view.entity_columns)
                self.batch.append(BatchView(packed_layout.windowed_table_name(config.project, view.name), keys,
                                            outputs, _decoder(outputs), WindowRead.of(view, outputs)))
                continue
            if view is None:
                continue
            outputs = outputs_of(projection)
            keys = tuple(KeyColumn(c.name, projection.join_key_map.get(c.name, c.name), c.dtype.to_value_type())
                         for c in view.entity_columns)
            table = packed_layout.table_name(config.project, view.name)
            self.batch.append(BatchView(table, keys, outputs, _decoder(outputs)))
            self._stored[view.name] = StoredView(view.name, table,
                                                 {f.name: f.dtype.to_value_type() for f in view.features}, {})
        echoed: dict[str, KeyColumn] = {}
        for view in self.batch:
            for key in view.keys:
                echoed.setdefault(key.field, key)
        #: The request fields holding join keys, once each: Feast's response echoes them.
        self._echoed = tuple(echoed.values())
        #: The store's file, opened read-only by each serving thread (:meth:`_connection`).
        self._path = online_store._get_db_path(config)
        self._local = threading.local()
        self._generation = 0
        #: Why the store is refused (:class:`CorruptOnlineStore`), or None.
        self.corruption: Optional[str] = None
        #: The file's signature when it was last checked (:meth:`recheck`).
        self._checked: Optional[tuple] = None
        self._check_lock = threading.Lock()
        #: ``SELECT ... UNION ALL ...`` over every batch view, by the number of keys per view.
        self._union_sql: dict[tuple[int, ...], Optional[str]] = {}
        #: Every on-demand view, computed from the request.
        self.on_demand = RequestViews(store, service, ("pandas", "python"))
        computed = {view.odfv.name for view in self.on_demand.views}
        other = [p.name for p in service.feature_view_projections
                 if p.name not in views and p.name not in computed and p.name not in windowed]
        if other:
            raise NotDirect(f"views {other}")

    @classmethod
    def for_store(cls, store, service, request_time_field: Optional[str] = None) -> "DirectRead | None":
        from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStore

        if not isinstance(store._get_provider().online_store, PackedSqliteOnlineStore):
            return None
        try:
            return cls(store, service, request_time_field)
        except NotDirect:
            return None

    def _keys(self, rows: list[dict], view: BatchView) -> list[bytes]:
        """Each row's serialized entity key for ``view``, from the cache or :meth:`_encode`."""
        keys = view.keys
        if not keys:  # a view without entities: one row, under Feast's placeholder key
            return [self._placeholder_key] * len(rows)
        cache = self._key_cache.get(view.join_keys)
        if cache is None:
            cache = self._key_cache[view.join_keys] = {}
        # The value's type is part of the key (1, 1.0 and True are equal in a dict).
        if len(keys) == 1:
            field = keys[0].field
            wanted = [(type(v), v) for v in [row[field] for row in rows]]
        else:
            fields = [key.field for key in keys]
            wanted = [tuple((type(row[f]), row[f]) for f in fields) for row in rows]
        out = [cache.get(w) for w in wanted]  # never read back after a write: threads share it
        if None in out:
            missing = [i for i, key in enumerate(out) if key is None]
            if sum(map(len, self._key_cache.values())) + len(missing) > KEY_CACHE_SIZE:
                for each in self._key_cache.values():
                    each.clear()
            for i, key in zip(missing, self._encode([rows[i] for i in missing], keys)):
                out[i] = cache[wanted[i]] = key
        return out

    def _encode(self, rows: list[dict], keys: tuple[KeyColumn, ...]) -> list[bytes]:
        columns = [(key.join_key, key.value_type, [row[key.field] for row in rows]) for key in keys]
        encoded = packed_layout.encode_entity_keys(columns) if self._version == 3 else None
        return encoded if encoded is not None else packed_layout.serialize_entity_keys(columns, self._version)

    def _connection(self) -> sqlite3.Connection:
        """This thread's read-only connection to the store's file.

        Feast's SQLite store shares one connection per process; SQLite serializes the
        threads on it, and under gunicorn's threads the waits cost more than the reads.
        Read-only (``mode=ro``): a missing file is an error, never a new empty store.
        :meth:`reset` makes every thread reconnect on its next read."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            old = getattr(local, "conn", None)
            local.conn = None
            if old is not None:
                try:
                    old.close()
                except sqlite3.Error:
                    pass
            local.conn = sqlite3.connect(f"{Path(self._path).absolute().as_uri()}?mode=ro", uri=True,
                                         check_same_thread=False, cached_statements=UNION_STATEMENTS)
            local.generation = self._generation
        return local.conn

    def reset(self) -> None:
        """After a failed read: every thread opens a new connection on its next read."""
        self._generation += 1

    @property
    def path(self) -> Path:
        """The store's file."""
        return Path(self._path)

    def verify(self, rules: Optional[Mapping[str, Mapping[str, ColumnRule]]] = None) -> Optional[str]:
        """Check the whole store now (:func:`check_store`) and refuse it if anything is wrong;
        return the problem (None: it checks out). ``rules``: each view's value rules by
        feature (kept for later checks). A busy file keeps the last verdict; the next
        :meth:`recheck` tries again."""
        if rules is not None:
            self._stored = {name: view._replace(rules=dict(rules.get(name, {})))
                            for name, view in self._stored.items()}
        with self._check_lock:
            signature = _signature(self.path)
            try:
                problem = check_store(self.path, list(self._stored.values()))
            except sqlite3.OperationalError as e:
                log.warning("online store %s: not checked now (%s); checking again later", self.path, e)
                return self.corruption
            self._checked = signature
            self._refuse(problem)
            return self.corruption

    def recheck(self) -> Optional[str]:
        """:meth:`verify` again if the file changed since it was last checked (a stat or two
        otherwise); the current verdict."""
        if _signature(self.path) != self._checked:
            return self.verify()
        return self.corruption

    def _refuse(self, problem: Optional[str]) -> None:
        if problem is None:
            if self.corruption is not None:
                log.warning("online store %s checks out again: serving from it", self.path)
            self.corruption = None
            return
        message = f"online store {self.path.name} is damaged ({problem}): refusing to serve from it; {REBUILD}"
        if message != self.corruption:
            log.error("%s [%s]", message, self.path)
        self.corruption = message

    def _fetch(self, conn: sqlite3.Connection, keys_per_view: list[list[bytes]]) -> list[dict]:
        """Per batch view, ``{serialized key: (event_ts microseconds, packed)}`` for the keys found:
        one ``SELECT`` for all views (``UNION ALL``), each view's distinct keys padded to a
        power of two by repeating one (``IN`` ignores repeats), so that few distinct
        statements exist and SQLite's statement cache keeps them prepared."""
        found: list[dict] = [{} for _ in keys_per_view]
        unique = [list(dict.fromkeys(keys)) for keys in keys_per_view]
        sizes = tuple(1 << (len(u) - 1).bit_length() if u else 0 for u in unique)
        if sum(sizes) > packed_layout.KEYS_PER_STATEMENT:  # more than one statement binds: view by view
            for view, keys, out in zip(self.batch, unique, found):
                out.update(packed_layout.read_rows(conn, view.table, keys))
            return found
        try:
            sql = self._union_sql[sizes]
        except KeyError:
            sql = self._union_sql[sizes] = packed_layout.union_select([view.table for view in self.batch], sizes)
        if sql is None:
            return found
        params = [key for keys, n in zip(unique, sizes) for key in keys + keys[-1:] * (n - len(keys))]
        for i, key, ts, packed in conn.execute(sql, params).fetchall():
            found[i][key] = (ts, packed)
        return found

    def read(self, rows: list[dict]) -> dict:
        if self.corruption is not None and self.recheck() is not None:
            raise CorruptOnlineStore(self.corruption)
        out: dict = {}
        for key in self._echoed:  # Feast's response echoes the join keys (timestamp 0)
            out[key.field] = round_trip([row[key.field] for row in rows], key.value_type)
            out[key.field + TS_SUFFIX] = [0] * len(rows)
        by_keys: dict[tuple, list[bytes]] = {}
        keys_per_view = []
        for view in self.batch:
            serialized = by_keys.get(view.signature)
            if serialized is None:
                serialized = by_keys[view.signature] = self._keys(rows, view)
            keys_per_view.append(serialized)
        try:
            found_per_view = self._fetch(self._connection(), keys_per_view)
        except sqlite3.DatabaseError as e:
            if type(e) is sqlite3.DatabaseError:  # SQLITE_CORRUPT, SQLITE_NOTADB: not a passing failure
                self._damaged(f"SQLite cannot read it: {e}")
                raise CorruptOnlineStore(self.corruption) from e
            raise
        try:
            instants = None
            for view, serialized, found in zip(self.batch, keys_per_view, found_per_view):
                if view.window is not None:
                    if instants is None:
                        instants = self._instants(rows)
                    self._windowed(view, rows, serialized, found, instants, out)
                    continue
                decode = view.decode
                empty = (None,) * len(view.outputs)
                stamps, decoded = [], []
                for key in serialized:
                    row = found.get(key)
                    values = decode(row[1]) if row else None
                    # Feast: a key without a row has timestamp 0; to_dict gives whole seconds.
                    stamps.append(row[0] // 1_000_000 if values is not None else 0)
                    decoded.append(empty if values is None else values)
                for output, column in zip(view.outputs, zip(*decoded)):
                    out[output.name] = list(column)
                    out[output.name + TS_SUFFIX] = stamps
        except (DecodeError, windowed_online.StateError, struct.error):  # bytes no write of this store produces
            self._damaged("a row's values do not parse")
            raise CorruptOnlineStore(self.corruption) from None
        return out

    # -- windowed views -------------------------------------------------------------------

    def _instants(self, rows: list[dict]) -> list[Optional[int]]:
        """Each row's read instant in microseconds (see the class doc)."""
        field = self.request_time_field
        if field is None:
            return [windowed_online.current_instant()] * len(rows)
        micros = windowed_online.micros
        return [None if (when := row.get(field)) is None else micros(when) for row in rows]

    @staticmethod
    def _windowed(view: BatchView, rows: list[dict], serialized: list[bytes], found: dict,
                  instants: list[Optional[int]], out: dict) -> None:
        window = view.window
        fields = view.fields
        stamps, decoded = [], []
        merged: dict = {}  # (key, instant) -> values: a request's flights share origins and instants
        for row, key, instant in zip(rows, serialized, instants):
            if instant is None or any(row.get(f) in (None, "") for f in fields):
                stamps.append(0)
                decoded.append(view.empty)
                continue
            values = merged.get((key, instant))
            if values is None:
                stored = found.get(key)
                values = merged[key, instant] = window.values(key, None if stored is None else stored[1], instant)
            decoded.append(values)
            stamps.append(instant // 1_000_000)
        for name, stamp_name, column in zip(view.names, view.stamp_names, zip(*decoded)):
            out[name] = list(column)
            out[stamp_name] = stamps

    def _damaged(self, problem: str) -> None:
        """A read found the file damaged: refuse it until it changes (:meth:`recheck`)."""
        with self._check_lock:
            self._checked = _signature(self.path)
            self._refuse(problem)
