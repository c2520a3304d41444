"""Online feature vectors with the offline join's time semantics.

Feast's online read returns the newest materialized value whatever its age (it never
checks a view's TTL). Here, for each entity, a value counts only if the offline
point-in-time join would have picked it at the request's as-of instant:

* older than its view's TTL (``event_ts + ttl < as_of``) -> stale, missing;
* newer than the as-of instant (``event_ts > as_of``) -> not yet known, missing.

That is the one place where this platform corrects Feast's online semantics. It is also
where a failing online store becomes :class:`StoreUnavailable` (HTTP 503): Feast's SQLite
store keeps one connection per process and never reopens it, so after a failure the
cached connection is dropped and the next request connects afresh
(:func:`reset_online_connection`). Redis clients reconnect by themselves. A registry
that cannot be read is a 503 too (:func:`registry_errors`); it is never half-written: the
file registry is written atomically (``pipeline/atomic_registry.py``).

**Direct read.** With the packed SQLite store (``pipeline/packed_sqlite_store.py``, the
embedded profile) the batch views are read straight from its tables (one ``SELECT`` for
all views and entities, Feast's own entity-key serialization and value types, a read-only
connection per serving thread instead of Feast's one shared connection). It returns
what ``get_online_features(...).to_dict(include_event_timestamps=True)`` returns
(``tests/serving/test_direct_read.py``); Feast's ``get_online_features`` spends most of a
request on protobuf responses and pandas around that. Other stores (Redis), and services
with on-demand views that read batch features, use ``get_online_features``.

**On-demand views** that read only request data are computed here by the view's own Feast
transformation (``OnDemandFeatureView.transform_dict``, the call Feast's online read makes
for ``mode="python"``; the pandas transformation for ``mode="pandas"``), so no
transformation is written twice. On the ``get_online_features`` path this is also the
workaround for a Feast 0.67 quirk: with ``full_feature_names=True`` Feast drops a
python-mode view's outputs from the response (its ``transform_dict`` returns short names
that never match the full ones asked for), :class:`RequestViews` names them
``view__feature`` (``tests/serving/test_direct_read.py`` shows the difference).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from datetime import datetime, timezone
from itertools import compress, repeat
from operator import is_
from pathlib import Path
from typing import Sequence

from serving.errors import ServingError, StoreUnavailable

#: Feast's suffix for event timestamps in ``OnlineResponse.to_dict(include_event_timestamps=True)``.
TS_SUFFIX = "__ts"


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import redis.exceptions

        errors.append(redis.exceptions.RedisError)
    except ImportError:  # the Redis extra is optional
        pass
    return tuple(errors)


#: What a broken or unreachable online store raises through Feast.
STORE_ERRORS = _store_errors()


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


class OnlineVector:
    """One entity's served features: ``values`` (feature -> value, None where missing, in
    the model's order), and the ``missing`` and ``stale`` features by name.

    Built from a row (:meth:`from_row`) the dict is made only when asked for: the model
    input takes the row as it is (:meth:`row_for`)."""

    __slots__ = ("features", "row", "missing", "stale", "_values")

    def __init__(self, values: dict, missing: list[str], stale: list[str]):
        self.features, self.row = list(values), tuple(values.values())
        self.missing, self.stale, self._values = missing, stale, values

    @classmethod
    def from_row(cls, features: list[str], row: tuple, missing: list[str], stale: list[str]) -> "OnlineVector":
        vector = cls.__new__(cls)
        vector.features, vector.row, vector.missing, vector.stale, vector._values = features, row, missing, stale, None
        return vector

    @property
    def values(self) -> dict:
        if self._values is None:
            self._values = dict(zip(self.features, self.row))
        return self._values

    def row_for(self, features: list[str]) -> tuple:
        """The values in the order of ``features``."""
        if features is self.features or features == self.features:
            return self.row
        values = self.values
        return tuple(values[f] for f in features)

    def __eq__(self, other) -> bool:
        if not isinstance(other, OnlineVector):
            return NotImplemented
        return (self.values, self.missing, self.stale) == (other.values, other.missing, other.stale)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"OnlineVector(values={self.values!r}, missing={self.missing!r}, stale={self.stale!r})"


def _round_trip(values: list, value_type) -> list:
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
    dict holding the join keys. Raises :class:`_NotDirect` for a view of ``modes`` that
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
                raise _NotDirect(f"on-demand view {odfv.name} ({odfv.mode} mode) reads more than request data")
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
            inputs = {name: _round_trip([row.get(name) for row in rows], value_type)
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
                out[name] = _round_trip(columns[feature], value_type)
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

        from pipeline.packed_sqlite_store import SCALAR_FIELDS, encode_entity_keys, read_packed, table_name, unpack

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
        from pipeline.duck import sql_ident

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
            raise _NotDirect(f"views {other}")

    @classmethod
    def for_store(cls, store, service) -> "DirectRead | None":
        from pipeline.packed_sqlite_store import PackedSqliteOnlineStore

        if not isinstance(store._get_provider().online_store, PackedSqliteOnlineStore):
            return None
        try:
            return cls(store, service)
        except _NotDirect:
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
                    out[field] = _round_trip([row[field] for row in rows], value_type)
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


class _NotDirect(Exception):
    """The FeatureService needs something only get_online_features does."""


class OnlineFeatures:
    def __init__(self, store, feature_service: str, features: Sequence[str], join_keys: Sequence[str],
                 request_time_field: str, direct: bool = True):
        self.store = store
        self.service = store.get_feature_service(feature_service)
        #: The direct read path when the store allows it (else Feast's get_online_features).
        self.direct = DirectRead.for_store(store, self.service) if direct else None
        if self.direct is not None:
            self.on_demand = self.direct.on_demand
        else:
            # get_online_features computes pandas-mode views itself but drops python-mode
            # views' outputs under full feature names (a Feast 0.67 quirk): those are ours.
            try:
                self.on_demand = RequestViews(store, self.service, ("python",))
            except _NotDirect as e:
                raise ServingError(f"FeatureService {feature_service!r}: {e}: Feast 0.67 drops its online "
                                   "outputs under full feature names") from None
        self.features = list(features)
        self.join_keys = list(join_keys)
        self.request_time_field = request_time_field
        batch_views = {v.name: v for v in store.list_feature_views()}
        #: TTL in seconds per batch view (0: no limit). On-demand views are computed per request.
        self.ttl = {
            p.name_to_use(): int(batch_views[p.name].ttl.total_seconds()) if batch_views[p.name].ttl else 0
            for p in self.service.feature_view_projections
            if p.name in batch_views
        }
        #: Per feature, once: (feature, whether its view is time-stamped, its TTL or None).
        #: Per time-stamped view, once: (its first feature, its TTL, the positions of its features).
        #: A view's features come from one row, so they share one event timestamp.
        views: dict[str, list[int]] = {}
        for i, feature in enumerate(self.features):
            view = feature.split("__", 1)[0]
            if view in self.ttl:
                views.setdefault(view, []).append(i)
        self._views = [(self.features[positions[0]], self.ttl[view], positions) for view, positions in views.items()]
        #: (positions, names) by the tuple of stale views (at most 2 ** views entries).
        self._stale_cache: dict[tuple[int, ...], tuple[list[int], list[str]]] = {}

    def _entity_row(self, entity: dict) -> dict:
        row = dict(entity)
        for key in self.join_keys:
            # Feast's online read raises TypeError on a null key; the offline join yields
            # nulls for it. An empty string matches no row either, so both sides agree.
            if row.get(key) is None:
                row[key] = ""
        return row

    def _read(self, rows: list[dict]) -> dict:
        try:
            if self.direct is not None:
                out = self.direct.read(rows)
            else:
                out = self.store.get_online_features(
                    features=self.service, entity_rows=rows, full_feature_names=True
                ).to_dict(include_event_timestamps=True)
        except STORE_ERRORS as e:
            if self.direct is not None:  # its own connections; Feast's is not used
                self.direct.reset()
            else:
                reset_online_connection(self.store)
            raise StoreUnavailable(f"online store unavailable: {type(e).__name__}: {e}") from e
        except registry_errors() as e:
            raise StoreUnavailable(f"feature registry unreadable: {type(e).__name__}: {e}") from e
        if self.on_demand:
            self.on_demand.add(rows, out, self.join_keys)
        return out

    def probe(self, entity: dict) -> None:
        """One real online read (the serving path) for a made-up entity; raises
        :class:`StoreUnavailable` when the store cannot answer."""
        self._read([self._entity_row(entity)])

    def lookup(self, entities: Sequence[dict]) -> list[OnlineVector]:
        response = self._read([self._entity_row(e) for e in entities])
        features = self.features
        rows = list(zip(*[response[f] for f in features])) if features else [()] * len(entities)
        # Per time-stamped view: its timestamps (Feast reports 0 for a key it did not find:
        # no row, so not stale), TTL and feature positions.
        views = [(k, response[first + TS_SUFFIX], ttl) for k, (first, ttl, _) in enumerate(self._views)]
        out = []
        for i, entity in enumerate(entities):
            as_of = entity[self.request_time_field].timestamp()
            values = rows[i]
            stale_views = tuple(k for k, stamps, ttl in views
                                if (ts := stamps[i]) and (ts > as_of or (ttl and ts + ttl < as_of)))
            stale: list[str] = []
            if stale_views:
                positions, names = self._stale_positions(stale_views)
                values = list(values)
                for j in positions:
                    values[j] = None
                stale = list(names)
            out.append(OnlineVector.from_row(features, tuple(values),
                                             list(compress(features, map(is_, values, repeat(None)))), stale))
        return out

    def _stale_positions(self, stale_views: tuple[int, ...]) -> tuple[list[int], list[str]]:
        """The feature positions and names (model order) of these time-stamped views."""
        known = self._stale_cache.get(stale_views)
        if known is None:
            positions = sorted(j for k in stale_views for j in self._views[k][2])
            known = self._stale_cache[stale_views] = (positions, [self.features[j] for j in positions])
        return known
