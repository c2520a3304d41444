"""A Feast online store: SQLite with ONE row per entity per feature view.

Named in ``feature_repo/feature_store.yaml`` (embedded profile)::

    online_store:
      type: pipeline.packed_sqlite_store.PackedSqliteOnlineStore
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

Everything else (connection caching, ``teardown`` deleting the file) is the stock
:class:`~feast.infra.online_stores.sqlite.SqliteOnlineStore`, inherited unchanged. Vector
search is not supported (``vector_enabled`` is refused). The tables are named
``<project>_<view>_packed`` (never the stock store's names, so the two cannot be confused
in one file). :func:`read_packed` is the raw read the server's direct path uses
(``serving/online.py``).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Optional, Sequence

from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Map as MapProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


class PackedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """The stock SQLite settings (``path``); only the ``type`` differs."""

    type: Literal["pipeline.packed_sqlite_store.PackedSqliteOnlineStore"] = (  # type: ignore[assignment]
        "pipeline.packed_sqlite_store.PackedSqliteOnlineStore"
    )


def table_name(project: str, view_name: str) -> str:
    return f"{project}_{view_name}_packed"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


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
            f"SELECT entity_key, event_ts, packed FROM {_quote(table)} "
            f"WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        found.update((key, (ts, packed)) for key, ts, packed in rows)
    return found


class PackedSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store, one row per entity per feature view (see the module doc)."""

    def _table(self, config: RepoConfig, view: FeatureView) -> str:
        if config.registry.enable_online_feature_view_versioning:
            raise ValueError("PackedSqliteOnlineStore: online feature view versioning is not supported")
        return table_name(config.project, view.name)

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
        with conn:  # one transaction: readers see all of the batch or none of it
            conn.executemany(
                f"INSERT INTO {_quote(self._table(config, table))} (entity_key, event_ts, created_ts, packed) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(entity_key) DO UPDATE SET "
                "event_ts = excluded.event_ts, created_ts = excluded.created_ts, packed = excluded.packed",
                rows)
        if progress:
            progress(len(data))

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
                    f"CREATE TABLE IF NOT EXISTS {_quote(self._table(config, view))} ("
                    "entity_key BLOB PRIMARY KEY, event_ts INTEGER NOT NULL, created_ts INTEGER, "
                    "packed BLOB NOT NULL) WITHOUT ROWID")
            for view in tables_to_delete:
                conn.execute(f"DROP TABLE IF EXISTS {_quote(self._table(config, view))}")

    def plan(self, config: RepoConfig, desired_registry_proto: RegistryProto) -> list:
        # The stock store plans its own table layout as infra objects (which `feast plan`
        # would create); this store's tables are made by `update` (`feast apply`).
        return []
