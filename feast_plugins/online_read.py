"""Feast's online read, reproduced where the platform bypasses it for speed, and its
on-demand views computed by Feast's own transformations.

:class:`DirectRead` reads the FeatureService's batch views straight from the packed SQLite
store's tables (``feast_plugins/packed_sqlite_store.py``), returning what
``get_online_features(...).to_dict(include_event_timestamps=True)`` returns
(``tests/serving/test_direct_read.py``). :class:`RequestViews` computes on-demand views that
read only request data with the view's own Feast transformation. Both touch Feast
internals listed in ``feast_plugins/compat.py``.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

#: Feast's suffix for event timestamps in ``OnlineResponse.to_dict(include_event_timestamps=True)``.
TS_SUFFIX = "__ts"


@functools.cache
def registry_errors() -> tuple[type[BaseException], ...]:
    """What reading a missing or broken Feast registry raises (imported on first need:
    importing Feast takes seconds)."""
    from feast.errors import FeatureServiceNotFoundException, FeatureViewNotFoundException
    from google.protobuf.message import DecodeError

    return (FeatureViewNotFoundException, FeatureServiceNotFoundException, DecodeError)


#: Decoded packed rows kept per batch view (:meth:`DirectRead._decoder`).
DECODE_CACHE_ENTRIES = 20_000



def reset_online_connection(store) -> None:
    """Make Feast open a new online-store connection on the next read.

    Feast's SQLite online store caches ``_conn`` forever; a connection that failed (file
    missing, replaced, unreadable) would fail every later request too.
    """
    online_store = store._get_provider().online_store
    conn = getattr(online_store, "_conn", None)
    if conn is not None:
        online_store._conn = None
        try:
            conn.close()
        except sqlite3.Error:
            pass


def round_trip(values: list, value_type) -> list:
    """What Feast's response gives back for these values (to ``Value`` and back):
    unchanged for str, int and float columns (NaN -> None); Feast's conversion otherwise."""
    from feast.type_map import NULL_TIMESTAMP_INT_VALUE, feast_value_type_to_python_type, python_values_to_proto_values
    from feast.value_type import ValueType

    kinds = {type(v) for v in values} - {type(None)}
    if (value_type == ValueType.STRING and kinds <= {str}) or (value_type == ValueType.INT64 and kinds <= {int}):
        return list(values)
    if value_type == ValueType.DOUBLE and kinds <= {float}:
        return [None if v is None or v != v else v for v in values]
    if value_type == ValueType.UNIX_TIMESTAMP and kinds <= {datetime}:
        # Feast keeps whole seconds (a naive instant is UTC) and gives back UTC datetimes.
        out = []
        for v in values:
            if v is not None:
                seconds = int((v if v.utcoffset() is not None else v.replace(tzinfo=timezone.utc)).timestamp())
                v = None if seconds == NULL_TIMESTAMP_INT_VALUE else datetime.fromtimestamp(seconds, tz=timezone.utc)
            out.append(v)
        return out
    return [feast_value_type_to_python_type(v, value_type) for v in python_values_to_proto_values(values, value_type)]


class RequestViews:
    """The FeatureService's on-demand views of ``modes`` that read only request data,
    computed by each view's own Feast transformation.

    ``add(rows, out)`` adds each view's outputs (``view__feature``, event timestamp 0) to
    ``out``, a ``get_online_features(...).to_dict(include_event_timestamps=True)``-shaped
    dict holding the join keys. Raises :class:`NotDirect` for a view of ``modes`` that
    needs batch features, aggregations or an online write (only Feast computes those).
    """

    def __init__(self, store, service, modes: Sequence[str]):
        odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
        #: [(view, request fields [(name, value type)], outputs [(feature, output name, value type)])]
        self.views = []
        for projection in service.feature_view_projections:
            odfv = odfvs.get(projection.name)
            if odfv is None or odfv.mode not in modes:
                continue
            if odfv.source_feature_view_projections or odfv.aggregations or odfv.write_to_online_store:
                raise NotDirect(f"on-demand view {odfv.name} ({odfv.mode} mode) reads more than request data")
            prefix = projection.name_to_use()
            outputs = [(f.name, f"{prefix}__{f.name}", f.dtype.to_value_type()) for f in projection.features]
            fields = [(f.name, f.dtype.to_value_type()) for source in odfv.source_request_sources.values()
                      for f in source.schema]
            self.views.append((odfv, fields, outputs))

    def __bool__(self) -> bool:
        return bool(self.views)

    def add(self, rows: list[dict], out: dict, join_keys: Sequence[str]) -> None:
        import pyarrow as pa

        for odfv, fields, outputs in self.views:
            # The request values go through Feast's own conversions (to Value and back), then
            # the view's own transformation, as get_online_features does.
            inputs = {name: round_trip([row.get(name) for row in rows], value_type)
                      for name, value_type in fields}
            if odfv.mode == "python":
                # Feast's input: the response's join keys and the request data, as lists. What
                # odfv.transform_dict does for a view without batch sources (its preprocessing
                # is then a copy), minus its typeguard checks (~0.1 ms a call).
                inputs = {**{k: out[k] for k in join_keys if k in out}, **inputs}
                transformation = odfv.feature_transformation
                result = (transformation.transform_singleton(inputs) if odfv.singleton
                          else transformation.transform(inputs))
                columns = {feature: list(result[feature]) for feature, _, _ in outputs}
            else:
                # Feast's pandas-mode transform_arrow is udf(table.to_pandas()) then back to
                # Arrow; the transformation gets the frame directly here (half the cost).
                frame = odfv.feature_transformation.transform(pa.table(inputs).to_pandas())
                columns = {feature: frame[feature].tolist() for feature, _, _ in outputs}
            for feature, name, value_type in outputs:
                out[name] = round_trip(columns[feature], value_type)
                out[name + TS_SUFFIX] = [0] * len(rows)


#: Entity keys :class:`DirectRead` keeps serialized (a few MB at most).
KEY_CACHE_SIZE = 50_000
#: Keys per ``UNION ALL`` read (SQLite allows 32,766 parameters per statement), and the
#: prepared statements each thread's connection keeps (one per mix of padded key counts).
UNION_MAX_KEYS = 30_000
UNION_STATEMENTS = 256

class DirectRead:
    """The FeatureService's batch views read from the packed SQLite store's tables directly.

    ``read(rows)`` returns the dict ``get_online_features(service, rows,
    full_feature_names=True).to_dict(include_event_timestamps=True)`` returns for the batch
    views (on-demand views: :class:`RequestViews`). Built by :meth:`for_store`, which
    answers None when the store or the service does not qualify.
    """

    def __init__(self, store, service):
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

        from feast_plugins.packed_sqlite_store import SCALAR_FIELDS, encode_entity_keys, read_packed, table_name, unpack

        self._serialize, self._entity_key = serialize_entity_key, EntityKey
        self._to_python, self._to_protos = feast_value_type_to_python_type, python_values_to_proto_values
        self._read_packed, self._unpack = read_packed, unpack
        self._encode_keys, self._scalar = encode_entity_keys, SCALAR_FIELDS
        #: Serialized entity keys by (join keys, values): a server sees the same airports,
        #: carriers and aircraft again and again (bounded: emptied past KEY_CACHE_SIZE).
        self._key_cache: dict[tuple[str, ...], dict[tuple, bytes]] = {}
        self.store = store
        config = store.config
        self._version = config.entity_key_serialization_version
        self._online_store = store._get_provider().online_store
        views = {v.name: v for v in store.list_feature_views()}
        #: Per batch view: (table, entity columns [(name, request field, value type)],
        #: features [(feature, output name, value type)]).
        self.batch = []
        for projection in service.feature_view_projections:
            if projection.name not in views:
                continue
            prefix = projection.name_to_use()
            outputs = [(f.name, f"{prefix}__{f.name}", f.dtype.to_value_type()) for f in projection.features]
            view = views[projection.name]
            keys = [(c.name, projection.join_key_map.get(c.name, c.name), c.dtype.to_value_type())
                    for c in view.entity_columns]
            self.batch.append((table_name(config.project, view.name), keys, outputs, self._decoder(outputs)))
        from core.duck import sql_ident

        self._quoted = [sql_ident(table) for table, *_ in self.batch]
        #: The store's file, opened read-only by each serving thread (:meth:`_connection`).
        self._path = self._online_store._get_db_path(config)
        self._local = threading.local()
        self._generation = 0
        #: ``SELECT ... UNION ALL ...`` over every batch view, by the number of keys per view.
        self._union_sql: dict[tuple[int, ...], str] = {}
        #: Every on-demand view, computed from the request.
        self.on_demand = RequestViews(store, service, ("pandas", "python"))
        computed = {odfv.name for odfv, _, _ in self.on_demand.views}
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

    def _decoder(self, outputs):
        """``decode(packed) -> values in output order`` (None: an empty row), memoized on the
        bytes: decoding is a pure function of them, and hot entities (airports, carriers,
        routes) repeat. The row itself is read on every request."""
        features = [(feature, value_type) for feature, _, value_type in outputs]

        @functools.lru_cache(maxsize=DECODE_CACHE_ENTRIES)
        def decode(packed: bytes) -> tuple | None:
            values = self._unpack(packed)
            if not values:
                return None
            return tuple(None if (v := values.get(f)) is None else self._python(v, t) for f, t in features)

        return decode

    def _python(self, value, value_type):
        """``feast_value_type_to_python_type``, without its checks for the scalar fields."""
        field = value.WhichOneof("val")
        if field is None:
            return None
        if field in self._scalar:
            return getattr(value, field)
        return self._to_python(value, value_type)

    def _keys(self, rows: list[dict], keys) -> list[bytes]:
        """Each row's serialized entity key for ``keys``, from the cache or :meth:`_encode`."""
        signature = tuple(name for name, _, _ in keys)
        cache = self._key_cache.get(signature)
        if cache is None:
            cache = self._key_cache[signature] = {}
        # The value's type is part of the key (1, 1.0 and True are equal in a dict).
        if len(keys) == 1:
            [(_, field, _)] = keys
            wanted = [(type(v), v) for v in [row[field] for row in rows]]
        else:
            fields = [field for _, field, _ in keys]
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

    def _encode(self, rows: list[dict], keys) -> list[bytes]:
        if self._version == 3:
            fast = self._encode_keys([(name, value_type, [row[field] for row in rows])
                                      for name, field, value_type in keys])
            if fast is not None:
                return fast
        columns = [self._to_protos([row[field] for row in rows], value_type) for _, field, value_type in keys]
        names = [name for name, _, _ in keys]
        return [self._serialize(self._entity_key(join_keys=names, entity_values=list(values)),
                                entity_key_serialization_version=self._version)
                for values in zip(*columns)]

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
        if sum(sizes) > UNION_MAX_KEYS:  # beyond SQLite's parameters per statement: view by view
            for (table, *_), keys, out in zip(self.batch, unique, found):
                out.update(self._read_packed(conn, table, keys))
            return found
        sql = self._union_sql.get(sizes)
        if sql is None:
            branches = [f"SELECT {i}, entity_key, event_ts, packed FROM {table} "
                        f"WHERE entity_key IN ({','.join('?' * n)})"
                        for i, (table, n) in enumerate(zip(self._quoted, sizes)) if n]
            if not branches:
                return found
            sql = self._union_sql[sizes] = " UNION ALL ".join(branches)
        params = [key for keys, n in zip(unique, sizes) for key in keys + keys[-1:] * (n - len(keys))]
        for i, key, ts, packed in conn.execute(sql, params).fetchall():
            found[i][key] = (ts, packed)
        return found

    def read(self, rows: list[dict]) -> dict:
        out: dict = {}
        by_keys: dict[tuple, list[bytes]] = {}
        keys_per_view = []
        for table, keys, outputs, decode in self.batch:
            for _, field, value_type in keys:
                if field not in out:  # Feast's response echoes the join keys (timestamp 0)
                    out[field] = round_trip([row[field] for row in rows], value_type)
                    out[field + TS_SUFFIX] = [0] * len(rows)
            signature = tuple((name, field) for name, field, _ in keys)
            if signature not in by_keys:
                by_keys[signature] = self._keys(rows, keys)
            keys_per_view.append(by_keys[signature])
        found_per_view = self._fetch(self._connection(), keys_per_view)
        for (table, keys, outputs, decode), serialized, found in zip(self.batch, keys_per_view, found_per_view):
            empty = (None,) * len(outputs)
            stamps, decoded = [], []
            for key in serialized:
                row = found.get(key)
                values = decode(row[1]) if row else None
                # Feast: a key without a row has timestamp 0; to_dict gives whole seconds.
                stamps.append(row[0] // 1_000_000 if values is not None else 0)
                decoded.append(empty if values is None else values)
            for (_, name, _), column in zip(outputs, zip(*decoded)):
                out[name] = list(column)
                out[name + TS_SUFFIX] = stamps
        return out


class NotDirect(Exception):
    """The FeatureService needs something only get_online_features does."""

