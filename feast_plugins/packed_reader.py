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
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from feast_plugins import packed_layout
from feast_plugins.on_demand import TS_SUFFIX, NotDirect, Output, RequestViews, outputs_of, round_trip

#: Decoded packed rows kept per batch view (:func:`_decoder`).
DECODE_CACHE_ENTRIES = 20_000
#: Entity keys :class:`DirectRead` keeps serialized (a few MB at most).
KEY_CACHE_SIZE = 50_000
#: The prepared statements each thread's connection keeps (one per mix of padded key counts).
UNION_STATEMENTS = 256


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

    @functools.cached_property
    def join_keys(self) -> tuple[str, ...]:
        """The key's join keys: serialized keys depend on these names and the values only."""
        return tuple(key.join_key for key in self.keys)

    @functools.cached_property
    def signature(self) -> tuple[tuple[str, str], ...]:
        """(join key, request field) pairs: views with equal signatures share a request's keys."""
        return tuple((key.join_key, key.field) for key in self.keys)


def _decoder(outputs: tuple[Output, ...]) -> Callable[[bytes], Optional[tuple]]:
    """:func:`packed_layout.decode` for these outputs, memoized on the bytes: decoding is a
    pure function of them, and hot entities (airports, carriers, routes) repeat. The row
    itself is read on every request."""
    features = tuple((output.feature, output.value_type) for output in outputs)

    @functools.lru_cache(maxsize=DECODE_CACHE_ENTRIES)
    def decode(packed: bytes) -> Optional[tuple]:
        return packed_layout.decode(packed, features)

    return decode


class DirectRead:
    """The FeatureService's batch views read from the packed SQLite store's tables directly.

    ``read(rows)`` returns the dict ``get_online_features(service, rows,
    full_feature_names=True).to_dict(include_event_timestamps=True)`` returns for the batch
    views (on-demand views: :attr:`on_demand`). Built by :meth:`for_store`, which answers
    None when the store or the service does not qualify.
    """

    def __init__(self, store, service):
        #: Serialized entity keys by (join keys, values): a server sees the same airports,
        #: carriers and aircraft again and again (bounded: emptied past KEY_CACHE_SIZE).
        self._key_cache: dict[tuple[str, ...], dict[tuple, bytes]] = {}
        self.store = store
        config = store.config
        self._version = config.entity_key_serialization_version
        self._placeholder_key = packed_layout.placeholder_key(self._version)
        online_store = store._get_provider().online_store
        views = {v.name: v for v in store.list_feature_views()}
        self.batch: list[BatchView] = []
        for projection in service.feature_view_projections:
            view = views.get(projection.name)
            if view is None:
                continue
            outputs = outputs_of(projection)
            keys = tuple(KeyColumn(c.name, projection.join_key_map.get(c.name, c.name), c.dtype.to_value_type())
                         for c in view.entity_columns)
            self.batch.append(BatchView(packed_layout.table_name(config.project, view.name), keys, outputs,
                                        _decoder(outputs)))
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
        #: ``SELECT ... UNION ALL ...`` over every batch view, by the number of keys per view.
        self._union_sql: dict[tuple[int, ...], Optional[str]] = {}
        #: Every on-demand view, computed from the request.
        self.on_demand = RequestViews(store, service, ("pandas", "python"))
        computed = {view.odfv.name for view in self.on_demand.views}
        other = [p.name for p in service.feature_view_projections if p.name not in views and p.name not in computed]
        if other:
            raise NotDirect(f"views {other}")

    @classmethod
    def for_store(cls, store, service) -> "DirectRead | None":
        from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStore

        if not isinstance(store._get_provider().online_store, PackedSqliteOnlineStore):
            return None
        try:
            return cls(store, service)
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
        found_per_view = self._fetch(self._connection(), keys_per_view)
        for view, serialized, found in zip(self.batch, keys_per_view, found_per_view):
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
        return out
