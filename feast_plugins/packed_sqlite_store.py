"""A Feast online store: SQLite with ONE row per entity per feature view, and the batch
engine that materializes into it from Arrow.

Named in ``feature_repo/feature_store.yaml`` (embedded profile)::

    online_store:
      type: feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore
      path: ${DATA_DIR}/online_store.db
    batch_engine:
      type: feast_plugins.packed_sqlite_store.PackedLocalComputeEngine

Why: Feast 0.67's stock SQLite store writes one row per *feature* per entity, one
``execute`` each (materializing 1,000 rows of a 22-feature view takes ~0.5 s), and reads
back one row per feature, parsing one protobuf each. Here a view's values for one entity
are one row holding one packed ``Value``, and a batch is one ``executemany`` in one
transaction: the table layout, key encoding and bytes are ``packed_layout.py``'s.

Same answers as the stock store (``tests/feast_plugins/test_packed_sqlite_store.py``
compares both on the same materialized data): ``online_read`` returns ``(event_ts,
{feature: Value})`` for a found key and ``(None, None)`` for a missing one; entity keys are
Feast's own serialization; the last write for a key wins (the stock upsert, per feature,
does the same); ``requested_features`` is ignored, as the stock store does.

**Materialization.** Feast's local engine converts every cell of the offline result to a
protobuf ``Value`` (``feast.utils._convert_arrow_to_proto``, most of a stock
materialization's time) before ``online_write_batch``. :class:`PackedLocalComputeEngine`
(``batch_engine:``; the stock local engine otherwise) hands the Arrow table to
:meth:`PackedSqliteOnlineStore.online_write_arrow` instead, which writes the same bytes
straight from Arrow (``packed_layout.arrow_rows``). Views with other feature types, or
also written offline, take Feast's own path. ``tests/feast_plugins/test_packed_sqlite_store.py``
checks that both paths store the same bytes.

**Durability.** The store's file is a SQLite write-ahead-log database (``journal_mode:
WAL``, ``synchronous: NORMAL``, :class:`PackedSqliteOnlineStoreConfig`): a crash mid-write
leaves the old or the new values, never a mix.

Everything else (connection caching, ``teardown`` deleting the file, here with its WAL
files) is the stock :class:`~feast.infra.online_stores.sqlite.SqliteOnlineStore`. Vector
search is not supported (``vector_enabled`` is refused). The server reads these tables
directly (``packed_reader.py``). The Feast internals used here are listed in ``compat.py``.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from typing import Any, Callable, Literal, Optional, Sequence

from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.compute_engines.local.arrow_table_value import ArrowTableValue
from feast.infra.compute_engines.local.compute import LocalComputeEngine, LocalComputeEngineConfig
from feast.infra.compute_engines.local.feature_builder import LocalFeatureBuilder
from feast.infra.compute_engines.local.nodes import LocalOutputNode
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

from feast_plugins import packed_layout, windowed_online


class PackedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """The stock SQLite settings (``path``), SQLite's ``PRAGMA journal_mode`` and ``PRAGMA
    synchronous`` for this store's connections.

    Default, and ``feature_store.yaml``: ``WAL`` with ``NORMAL``. A commit appends to the
    write-ahead log without waiting for the disk (fsync happens at checkpoints), so small
    transactions (hourly pushes, ``pipeline.push``) stay cheap; a crash of the process *or
    of the machine* mid-write leaves a valid store holding the last transactions that
    reached the disk, never half of one (``tests/feast_plugins/test_durability.py``: kill -9
    of a writer, and power cuts simulated on copies). Readers (the server's read-only
    connections, ``packed_reader.py``) never wait for a writer. ``OFF`` (no fsync at all)
    can corrupt the file on a machine crash: do not use it. A copy of a WAL store must go
    through SQLite (:func:`packed_layout.copy_database`): the file alone may lack the commits
    still in its ``-wal`` file."""

    type: Literal["feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore"] = (  # type: ignore[assignment]
        "feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore"
    )
    journal_mode: Literal["WAL", "DELETE", "TRUNCATE", "PERSIST"] = "WAL"
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"


def _arrow_keys(view: FeatureView, data, version: int) -> list[bytes]:
    """Each row's serialized entity key: version 3 written directly where it can be,
    Feast's own conversion and serialization otherwise."""
    columns = [(c.name, c.dtype.to_value_type(), data.column(c.name)) for c in view.entity_columns]
    keys = None
    if version == 3 and not any(column.null_count for _, _, column in columns):
        keys = packed_layout.encode_entity_keys([(name, value_type, column.to_pylist())
                                                 for name, value_type, column in columns])
    if keys is None:
        keys = packed_layout.serialize_entity_keys(
            [(name, value_type, column.to_numpy(zero_copy_only=False)) for name, value_type, column in columns],
            version)
    return keys


class PackedSqliteOnlineStore(SqliteOnlineStore):
    """SQLite online store, one row per entity per feature view (see the module doc)."""

    def _table(self, config: RepoConfig, view: FeatureView) -> str:
        if config.registry.enable_online_feature_view_versioning:
            raise ValueError("PackedSqliteOnlineStore: online feature view versioning is not supported")
        if windowed_online.is_windowed(view):
            return packed_layout.windowed_table_name(config.project, view.name)
        return packed_layout.table_name(config.project, view.name)

    def _get_conn(self, config: RepoConfig):
        fresh = self._conn is None
        conn = super()._get_conn(config)
        if fresh:
            options = config.online_store
            packed_layout.configure(conn, getattr(options, "journal_mode", "WAL"),
                                    getattr(options, "synchronous", "NORMAL"))
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
        if windowed_online.is_windowed(table):
            raise windowed_online.EventError(windowed_online.NOT_ROWS.format(view=table.name))
        conn = self._conn_for(config)
        version = config.entity_key_serialization_version
        to_micros = packed_layout.to_micros
        rows = [
            (packed_layout.serialize_key(key, version), to_micros(event_ts),
             None if created_ts is None else to_micros(created_ts), packed_layout.pack(values))
            for key, values, event_ts, created_ts in data
            if values  # the stock store writes no row for an entity without features
        ]
        packed_layout.upsert(conn, self._table(config, table), rows)
        if progress:
            progress(len(data))

    def online_write_arrow(self, config: RepoConfig, table: FeatureView, data) -> None:
        """Write a materialization's Arrow table (one transaction), packing each row's values
        as :meth:`online_write_batch` would after Feast's own conversion."""
        conn = self._conn_for(config)
        keys = _arrow_keys(table, data, config.entity_key_serialization_version)
        features = [(feature.name, feature.dtype.to_value_type()) for feature in table.features]
        rows = packed_layout.arrow_rows(keys, data, table.batch_source.timestamp_field,
                                        table.batch_source.created_timestamp_column, features)
        packed_layout.upsert(conn, self._table(config, table), rows)

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: Optional[list[str]] = None,
    ) -> list[tuple[Optional[datetime], Optional[dict[str, ValueProto]]]]:
        conn = self._conn_for(config)
        version = config.entity_key_serialization_version
        keys = [packed_layout.serialize_key(k, version) for k in entity_keys]
        found = packed_layout.read_rows(conn, self._table(config, table), keys)
        if windowed_online.is_windowed(table):
            return windowed_online.feast_read(table, entity_keys, [found.get(k) for k in keys])
        result: list[tuple[Optional[datetime], Optional[dict[str, ValueProto]]]] = []
        for key in keys:
            row = found.get(key)
            values = packed_layout.unpack(row[1]) if row else None
            result.append((packed_layout.from_micros(row[0]), values) if values else (None, None))
        return result

    # -- windowed views (feast_plugins/windowed_online.py) ---------------------------------

    def write_events(self, config: RepoConfig, batches: Sequence[tuple[FeatureView, Any]],
                     until: Optional[datetime] = None) -> None:
        """Add checked events (``windowed_online.check_events``) to windowed views' states:
        ``batches`` of ``(view, Arrow table)``, all in ONE transaction (a reader or a crash
        sees all of them or none). ``until`` (a materialization): the tables hold every
        event known up to it, which replace the stored ones (``windowed_online.rebuilder``)."""
        conn = self._conn_for(config)
        version = config.entity_key_serialization_version
        changes = []
        for view, data in batches:
            layout = windowed_online.layout_of(view)
            data = windowed_online.keyed(layout, data)
            if not data.num_rows and until is None:
                continue
            keys = _arrow_keys(view, data, version) if data.num_rows else []
            grouped = windowed_online.events_by_key(layout, data, keys)
            if until is None:
                changes.append((self._table(config, view), list(grouped), windowed_online.merger(layout, grouped)))
            else:
                changes.append((self._table(config, view), None,
                                windowed_online.rebuilder(layout, grouped, windowed_online.micros(until))))
        if changes:
            packed_layout.update_states(conn, changes)

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
                packed_layout.create_table(conn, self._table(config, view))
            for view in tables_to_delete:
                packed_layout.drop_table(conn, self._table(config, view))

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        """The stock teardown (close, delete the file), and the WAL's ``-wal`` and ``-shm``
        files with it: a log left behind must not meet a new store of the same name."""
        super().teardown(config, tables, entities)
        path = self._get_db_path(config)
        for suffix in packed_layout.SIDE_FILES:
            try:
                os.unlink(path + suffix)
            except FileNotFoundError:
                pass

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
                and packed_layout.packs_from_arrow(f.dtype.to_value_type() for f in view.features)):
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
        if windowed_online.is_windowed(task.feature_view):
            return self._materialize_windowed(task, job_id)
        context = self.get_execution_context(registry, task)
        backend = self._get_backend(context)
        try:
            _PackedFeatureBuilder(registry, task, backend=backend).build().execute(context)
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
        except Exception as e:
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=e)

    def _materialize_windowed(self, task, job_id: str):
        """A windowed view: its events known up to the task's end into the store's states
        (``push_writer.materialize_events``; Feast's local engine refuses time windows)."""
        from feast.infra.common.materialization_job import MaterializationJobStatus
        from feast.infra.compute_engines.local.job import LocalMaterializationJob

        from feast_plugins.push_writer import view_events

        try:
            view, end = task.feature_view, task.end_time
            if not hasattr(self.online_store, "write_events"):
                raise windowed_online.EventError(
                    f"windowed view {view.name!r}: online store {type(self.online_store).__name__} cannot hold "
                    "windowed views (use the packed SQLite store or windowed_redis.WindowedRedisOnlineStore); "
                    "materialize the other views by name")
            table = view_events(view, end, self.repo_config.repo_path or ".")
            self.online_store.write_events(self.repo_config, [(view, table)], until=end)
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
        except Exception as e:
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=e)
