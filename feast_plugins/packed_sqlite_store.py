"""A Feast online store: SQLite with ONE row per entity per feature view.

Named in ``feature_repo/feature_store.yaml`` (embedded profile)::

    online_store:
      type: feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore
      path: ${DATA_DIR}/online_store.db

Why: Feast 0.67's stock SQLite store writes one row per *feature* per entity, one
``execute`` each (materializing 1,000 rows of a 22-feature view takes ~0.5 s), and reads
back one row per feature, parsing one protobuf each. Here a view's values for one entity
are one row: ``(entity_key, event_ts, created_ts, packed)`` where ``packed`` is ONE
serialized Feast ``Value`` whose ``map_val`` holds every feature's ``Value`` by name (so
every type Feast has round-trips exactly). A batch is written with one ``executemany`` in
one transaction, so a reader sees a view's batch either entirely or not at all.

Same answers as the stock store (``tests/pipeline/test_packed_sqlite_store.py`` compares
both on the same materialized data): ``online_read`` returns ``(event_ts, {feature:
Value})`` for a found key and ``(None, None)`` for a missing one; entity keys are Feast's
own serialization; the last write for a key wins (the stock upsert, per feature, does the
same); ``requested_features`` is ignored, as the stock store does. Event timestamps are
stored as integer microseconds since the epoch (UTC), the stock store's precision.

**Materialization.** Feast's local engine converts every cell of the offline result to a
protobuf ``Value`` (``feast.utils._convert_arrow_to_proto``, most of a stock
materialization's time) before ``online_write_batch``. The batch engine named next to this
store, :class:`PackedLocalComputeEngine` (``batch_engine:`` in ``feature_store.yaml``; the
stock local engine otherwise), hands the Arrow table to :meth:`PackedSqliteOnlineStore.
online_write_arrow` instead, which writes each row's packed ``Value`` in protobuf's wire
format directly, with Feast's conversion rules (null and NaN -> an empty ``Value``;
``float``/``int``/``str``/``bool`` into the view type's field), and string/int64 entity keys
in Feast's serialization (version 3). Views with other feature types, or also written
offline, take Feast's own path. ``tests/pipeline/test_packed_sqlite_store.py`` checks that
both paths store the same bytes.

Everything else (connection caching, ``teardown`` deleting the file) is the stock
:class:`~feast.infra.online_stores.sqlite.SqliteOnlineStore`, inherited unchanged. Vector
search is not supported (``vector_enabled`` is refused). The tables are named
``<project>_<view>_packed`` (never the stock store's names, so the two cannot be confused
in one file). :func:`read_packed` is the raw read the server's direct path uses
(``serving/online.py``).
"""

from __future__ import annotations

import sqlite3
import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Optional, Sequence

from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.compute_engines.local.arrow_table_value import ArrowTableValue
from feast.infra.compute_engines.local.compute import LocalComputeEngine, LocalComputeEngineConfig
from feast.infra.compute_engines.local.feature_builder import LocalFeatureBuilder
from feast.infra.compute_engines.local.nodes import LocalOutputNode
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.value_type import ValueType

from core.duck import sql_ident

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


class PackedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """The stock SQLite settings (``path``), and ``synchronous``: SQLite's ``PRAGMA
    synchronous`` for this store's connections (unset: SQLite's default, FULL). Each write
    transaction waits for the disk (fsync, ~15 ms here) unless it is ``OFF``; with ``OFF``
    a crash of the *machine* mid-write (not of the process) can corrupt the file, which
    is a cache of the offline tables: rebuild it with ``pipeline materialize --start
    1970-01-01``. Hourly pushes (``pipeline.push``) are small transactions: fsync is most
    of their cost."""

    type: Literal["feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore"] = (  # type: ignore[assignment]
        "feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore"
    )
    synchronous: Optional[Literal["OFF", "NORMAL", "FULL", "EXTRA"]] = None


def table_name(project: str, view_name: str) -> str:
    return f"{project}_{view_name}_packed"


def to_micros(ts: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is UTC (as Feast treats it)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return (ts - EPOCH) // _US


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def pack(values: dict[str, ValueProto]) -> bytes:
    """All feature values of one entity in one view: one serialized ``Value`` (``map_val``)."""
    packed = ValueProto()
    target = packed.map_val.val
    for name, value in values.items():
        target[name].CopyFrom(value)
    if not values:
        packed.map_val.SetInParent()
    return packed.SerializeToString()


def unpack(blob: bytes) -> dict[str, ValueProto]:
    value = ValueProto()
    value.ParseFromString(blob)
    return dict(value.map_val.val)


def read_packed(conn: sqlite3.Connection, table: str, keys: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
    """``{serialized entity key: (event_ts microseconds, packed values)}`` for the keys found."""
    unique = list(dict.fromkeys(keys))
    found: dict[bytes, tuple[int, bytes]] = {}
    # SQLite allows 32,766 parameters per statement.
    for start in range(0, len(unique), 30_000):
        chunk = unique[start:start + 30_000]
        rows = conn.execute(
            f"SELECT entity_key, event_ts, packed FROM {sql_ident(table)} "
            f"WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        found.update((key, (ts, packed)) for key, ts, packed in rows)
    return found


#: Feature value types packed straight from Arrow (:func:`_wire_value`).
_ARROW_TYPES = {ValueType.DOUBLE, ValueType.FLOAT, ValueType.INT64, ValueType.INT32, ValueType.STRING, ValueType.BOOL}


# Protocol Buffers wire format (https://protobuf.dev/programming-guides/encoding/) of
# ``Value{map_val: Map{val: map<string, Value>}}``, written directly: building a message per
# cell costs more than the rest of materialization. Field numbers from Value.proto.
_MAP_TAG = b"\xa2\x01"  # Value.map_val = 20, length-delimited
_MASK64 = (1 << 64) - 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _wire_value(value_type: ValueType):
    """The bytes of a non-null ``Value`` of this type, as protobuf serializes it."""
    # (DOUBLE and FLOAT columns never get here: _wire_entries packs them vectorised.)
    if value_type == ValueType.INT64:
        return lambda v: b"\x20" + _varint(int(v) & _MASK64)  # int64_val = 4, varint
    if value_type == ValueType.INT32:
        return lambda v: b"\x18" + _varint(int(v) & _MASK64)  # int32_val = 3 (negatives: 10 bytes)
    if value_type == ValueType.STRING:
        def string(v):
            encoded = str(v).encode("utf8")
            return b"\x12" + _varint(len(encoded)) + encoded  # string_val = 2
        return string
    if value_type == ValueType.BOOL:
        return lambda v: b"\x38\x01" if v else b"\x38\x00"  # bool_val = 7
    raise KeyError(value_type)


def _wire_entries(name: str, value_type: ValueType, column) -> list[bytes]:
    """One map entry (``Map.val = 1``: key = 1, value = 2) per row of an Arrow column; null
    and NaN -> an empty Value."""
    key = name.encode("utf8")
    key_part = b"\x0a" + _varint(len(key)) + key
    null = b"\x0a" + _varint(len(key_part) + 2) + key_part + b"\x12\x00"
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        # Fixed width: one prefix, then each value's little-endian bytes (NumPy packs them all).
        import numpy as np

        width, tag, dtype = (8, b"\x29", "<f8") if value_type == ValueType.DOUBLE else (4, b"\x35", "<f4")
        values = column.to_numpy(zero_copy_only=False).astype("<f8")  # null -> NaN
        missing = np.isnan(values).tolist()
        raw = values.astype(dtype).tobytes()
        entry_len = len(key_part) + 2 + 1 + width
        prefix = b"\x0a" + _varint(entry_len) + key_part + b"\x12" + _varint(1 + width) + tag
        return [null if missing[i] else prefix + raw[i * width:(i + 1) * width] for i in range(len(missing))]
    encode = _wire_value(value_type)
    seen: dict = {}  # repeated values (counts, categories) are encoded once

    def entry(v) -> bytes:
        encoded = encode(v)
        body = key_part + b"\x12" + _varint(len(encoded)) + encoded
        return b"\x0a" + _varint(len(body)) + body

    out = []
    for v in column.to_pylist():
        if v is None or v != v:
            out.append(null)
        else:
            cached = seen.get(v)
            if cached is None:
                cached = seen[v] = entry(v)
            out.append(cached)
    return out


def encode_entity_keys(columns: list[tuple[str, ValueType, list]]) -> Optional[list[bytes]]:
    """Feast's entity key serialization (version 3, ``serialize_entity_key``) of many keys at
    once, for ``(join key, type, values)`` columns of str (STRING) or int (INT64) values;
    None for anything else (nulls, other types): then Feast serializes."""
    if not columns:
        return None
    head = [struct.pack("<I", len(columns))]
    parts = []
    pack_q = struct.Struct("<q").pack
    for name, value_type, values in sorted(columns, key=lambda c: c[0]):
        encoded_name = name.encode("utf8")
        head += [struct.pack("<I", ValueType.STRING.value), struct.pack("<I", len(encoded_name)), encoded_name]
        if value_type == ValueType.STRING and all(type(v) is str for v in values):
            encoded = [v.encode("utf8") for v in values]
            tag = b"\x02\x00\x00\x00"
        elif value_type == ValueType.INT64 and all(type(v) is int for v in values):
            encoded = [pack_q(v) for v in values]
            tag = b"\x04\x00\x00\x00"
        else:
            return None
        parts.append([tag + struct.pack("<I", len(b)) + b for b in encoded])
    prefix = b"".join(head)
    return [prefix + b"".join(p) for p in zip(*parts)]


def _wire_keys(view: FeatureView, data) -> Optional[list[bytes]]:
    if any(data.column(c.name).null_count for c in view.entity_columns):
        return None
    return encode_entity_keys([(c.name, c.dtype.to_value_type(), data.column(c.name).to_pylist())
                               for c in view.entity_columns])


#: ``Value`` fields whose Python value is the field itself (as Feast's
#: ``feast_value_type_to_python_type`` returns it).
SCALAR_FIELDS = frozenset({"double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val", "bytes_val"})


def packs_from_arrow(view: FeatureView) -> bool:
    return all(f.dtype.to_value_type() in _ARROW_TYPES for f in view.features)


def _arrow_micros(column) -> list:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us"))
    return pc.cast(pc.cast(column, pa.timestamp("us", tz=column.type.tz), safe=False), pa.int64()).to_pylist()


class PackedSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store, one row per entity per feature view (see the module doc)."""

    def _table(self, config: RepoConfig, view: FeatureView) -> str:
        if config.registry.enable_online_feature_view_versioning:
            raise ValueError("PackedSqliteOnlineStore: online feature view versioning is not supported")
        return table_name(config.project, view.name)

    def _get_conn(self, config: RepoConfig):
        fresh = self._conn is None
        conn = super()._get_conn(config)
        synchronous = getattr(config.online_store, "synchronous", None)
        if fresh and synchronous:
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        return conn

    def _conn_for(self, config: RepoConfig) -> sqlite3.Connection:
        if config.online_store.vector_enabled:
            raise ValueError("PackedSqliteOnlineStore: vector search is not supported (vector_enabled)")
        return self._get_conn(config)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, Optional[datetime]]],
        progress: Optional[Callable[[int], Any]],
    ) -> None:
        conn = self._conn_for(config)
        version = config.entity_key_serialization_version
        rows = [
            (serialize_entity_key(key, entity_key_serialization_version=version), to_micros(event_ts),
             None if created_ts is None else to_micros(created_ts), pack(values))
            for key, values, event_ts, created_ts in data
            if values  # the stock store writes no row for an entity without features
        ]
        self._upsert(conn, config, table, rows)
        if progress:
            progress(len(data))

    def online_write_arrow(self, config: RepoConfig, table: FeatureView, data) -> None:
        """Write a materialization's Arrow table (one transaction), packing each row's values
        as :meth:`online_write_batch` would after Feast's own conversion."""
        from feast.type_map import python_values_to_proto_values

        conn = self._conn_for(config)
        version = config.entity_key_serialization_version
        n = data.num_rows
        key_names = [c.name for c in table.entity_columns]
        keys = _wire_keys(table, data) if version == 3 else None
        if keys is None:  # Feast's own conversion and serialization
            key_values = [python_values_to_proto_values(data.column(c.name).to_numpy(zero_copy_only=False),
                                                        c.dtype.to_value_type())
                          for c in table.entity_columns]
            keys = [serialize_entity_key(EntityKeyProto(join_keys=key_names, entity_values=list(values)),
                                         entity_key_serialization_version=version)
                    for values in zip(*key_values)]
        event_us = _arrow_micros(data.column(table.batch_source.timestamp_field))
        created = table.batch_source.created_timestamp_column
        created_us = _arrow_micros(data.column(created)) if created else [None] * n
        entries = [_wire_entries(feature.name, feature.dtype.to_value_type(), data.column(feature.name))
                   for feature in table.features]
        rows = []
        append = rows.append
        for i, cells in enumerate(zip(*entries)):
            body = b"".join(cells)
            append((keys[i], event_us[i], created_us[i], _MAP_TAG + _varint(len(body)) + body))
        # Inserting in key order keeps SQLite's B-tree writes sequential; the sort is stable,
        # so for a repeated key the last row still wins, as in the input order.
        rows.sort(key=lambda row: row[0])
        self._upsert(conn, config, table, rows)

    def _upsert(self, conn, config: RepoConfig, table: FeatureView, rows: list[tuple]) -> None:
        with conn:  # one transaction: readers see all of the batch or none of it
            conn.executemany(
                f"INSERT INTO {sql_ident(self._table(config, table))} (entity_key, event_ts, created_ts, packed) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(entity_key) DO UPDATE SET "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts, packed = excluded.packed",
                rows)

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: Optional[list[str]] = None,
    ) -> list[tuple[Optional[datetime], Optional[dict[str, ValueProto]]]]:
        conn = self._conn_for(config)
        version = config.entity_key_serialization_version
        keys = [serialize_entity_key(k, entity_key_serialization_version=version) for k in entity_keys]
        found = read_packed(conn, self._table(config, table), keys)
        result: list[tuple[Optional[datetime], Optional[dict[str, ValueProto]]]] = []
        for key in keys:
            row = found.get(key)
            values = unpack(row[1]) if row else None
            result.append((from_micros(row[0]), values) if values else (None, None))
        return result

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        conn = self._conn_for(config)
        with conn:
            for view in tables_to_keep:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {sql_ident(self._table(config, view))} ("
                    "entity_key BLOB PRIMARY KEY, event_ts INTEGER NOT NULL, created_ts INTEGER, "
                    "packed BLOB NOT NULL) WITHOUT ROWID")
            for view in tables_to_delete:
                conn.execute(f"DROP TABLE IF EXISTS {sql_ident(self._table(config, view))}")

    def plan(self, config: RepoConfig, desired_registry_proto: RegistryProto) -> list:
        # The stock store plans its own table layout as infra objects (which `feast plan`
        # would create); this store's tables are made by `update` (`feast apply`).
        return []


class _PackedOutputNode(LocalOutputNode):
    """The local engine's output node, writing Arrow straight into the packed store."""

    def execute(self, context):
        store = context.online_store
        view = self.feature_view
        if not (isinstance(store, PackedSqliteOnlineStore) and view.online and not view.offline
                and packs_from_arrow(view)):
            return super().execute(context)
        data = self.get_single_table(context).data
        output = ArrowTableValue(data=data)
        context.node_outputs[self.name] = output
        if data.num_rows:
            store.online_write_arrow(context.repo_config, view, data)
        return output


class _PackedFeatureBuilder(LocalFeatureBuilder):
    def build_output_nodes(self, view, input_node):
        node = _PackedOutputNode("output", self.dag_root.view, inputs=[input_node])
        self.nodes.append(node)
        return node


class PackedLocalComputeEngineConfig(LocalComputeEngineConfig):
    type: Literal["feast_plugins.packed_sqlite_store.PackedLocalComputeEngine"] = (  # type: ignore[assignment]
        "feast_plugins.packed_sqlite_store.PackedLocalComputeEngine"
    )


class PackedLocalComputeEngine(LocalComputeEngine):
    """Feast's local engine; only its output node differs (see the module doc)."""

    def _materialize_one(self, registry, task, **kwargs):
        from feast.infra.common.materialization_job import MaterializationJobStatus
        from feast.infra.compute_engines.local.job import LocalMaterializationJob

        # LocalComputeEngine._materialize_one with this module's feature builder.
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        context = self.get_execution_context(registry, task)
        backend = self._get_backend(context)
        try:
            _PackedFeatureBuilder(registry, task, backend=backend).build().execute(context)
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
        except Exception as e:
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=e)
