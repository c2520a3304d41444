"""The spark profile's materialization engine: Feast's Spark engine with Redis writes of its own.

Named in ``feature_repo/feature_store.spark.yaml`` (stock: ``type: spark.engine``)::

    batch_engine:
      type: feast_plugins.spark_engine.SparkRedisComputeEngine

Everything up to the write is Feast's ``SparkComputeEngine``: its plan (read the source
over the interval, keep each entity's newest row) runs unchanged on the cluster. Only the
output node differs (:class:`_RedisWriteNode`, as ``packed_sqlite_store`` swaps the local
engine's). Stock's node runs Python on every executor: each executor's Python worker
imports Feast (seconds, in every new Spark application) and, for *each* Arrow batch,
unpickles the view, store and config, builds a protobuf message per cell
(``_convert_arrow_to_proto``) and writes through ``RedisOnlineStore.online_write_batch``.

Ours has the JVM write the plan's rows (one per entity) as Parquet under the offline
store's ``staging_location`` (a directory the driver and every executor reach, as for
training sets), then reads the row count from the files' footers. Up to
``driver_write_rows`` (default :data:`DRIVER_WRITE_ROWS`) the driver writes them to Redis
itself: no Python runs on the executors at all. Past it, the executors do, from the
staged files (``mapInArrow``), unpickling once per partition. Either way each batch is
encoded column by column straight into protobuf's wire format
(``packed_layout.wire_values``, ``timestamp_bytes``, ``encode_entity_keys``), then writes
the very commands stock writes: per entity ``HSET <entity key><project>`` with
``_ts:<view>`` and ``mmh3(<view>:<feature>)`` fields (and ``EXPIRE`` with
``key_ttl_seconds``), after reading the stored ``_ts`` of the batch's keys and skipping a
row that is not newer than it or than an earlier row of the batch, as stock does
(``skip_dedup`` skips that read, as stock does). ``tests/feast_plugins/test_spark_engine.py``
compares every key and field with what stock's engine writes.

A view without entities is written under Feast's placeholder key, as Feast's local engine
writes it; stock's Spark engine fails on such a view (:meth:`RedisWriter.keys`).

Where this encoding does not apply, stock does the work: a view written offline too, a
feature type other than double, float, int64, int32, string or bool, a Redis cluster or
sentinel (:func:`fast_path`, decided on the driver), and a batch whose keys are not plain
string or int64 values or that lacks a join-key column (per batch, on the executor:
Feast's own conversion and ``online_write_batch`` for that batch).
"""

from __future__ import annotations

import shutil
import uuid
from typing import Literal

import pyarrow.dataset as ds
from feast.infra.compute_engines.spark.compute import SparkComputeEngine, SparkComputeEngineConfig
from feast.infra.compute_engines.spark.feature_builder import SparkFeatureBuilder
from feast.infra.compute_engines.spark.nodes import SparkWriteNode

from feast_plugins import packed_layout
from feast_plugins.spark_offline_store import staging_root

#: Rows per Redis pipeline when the driver writes.
BATCH_ROWS = 10_000


#: Rows (one per entity, after Feast's plan kept each entity's newest) up to which the
#: driver writes them to Redis itself; past it, the executors do (``driver_write_rows``).
DRIVER_WRITE_ROWS = 2_000_000


class SparkRedisComputeEngineConfig(SparkComputeEngineConfig):
    """Stock ``spark.engine``'s settings (``spark_conf``, ``partitions``, ...), and
    ``driver_write_rows`` (module doc)."""

    type: Literal["feast_plugins.spark_engine.SparkRedisComputeEngine"] = (  # type: ignore[assignment]
        "feast_plugins.spark_engine.SparkRedisComputeEngine"
    )
    driver_write_rows: int = DRIVER_WRITE_ROWS


def fast_path(view, repo_config) -> str | None:
    """Why this engine's writer does not apply to ``view`` under ``repo_config`` (stock's
    node writes it then), or None when it does."""
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    store = repo_config.online_store
    if not isinstance(store, RedisOnlineStoreConfig):
        return f"online store {store.type!r} is not Redis"
    if store.redis_type != RedisType.redis:
        return f"redis_type {store.redis_type.value}"
    if getattr(view, "offline", False):
        return "the view is written offline too"
    types = [f.dtype.to_value_type() for f in view.features]
    if not packed_layout.packs_from_arrow(types):
        return "feature types " + ", ".join(sorted({t.name for t in types} - packed_layout.ARROW_TYPES))
    return None


class _RedisWriteNode(SparkWriteNode):
    """Stock's write node, writing online with :func:`_write_partition` (module doc)."""

    def execute(self, context):
        from feast.infra.common.serde import SerializedArtifacts
        from feast.infra.compute_engines.dag.model import DAGFormat
        from feast.infra.compute_engines.dag.value import DAGValue

        view = self.feature_view
        if not view.online or fast_path(view, context.repo_config) is not None:
            return super().execute(context)
        spark_df = self.get_single_input_value(context).data
        limit = getattr(context.repo_config.batch_engine, "driver_write_rows", DRIVER_WRITE_ROWS)
        staged = staging_root(context.repo_config) / f"feast-spark-materialize-{uuid.uuid4().hex}"
        try:
            spark_df.write.parquet(str(staged))  # the JVM alone: no Python worker on the executors
            dataset = ds.dataset(str(staged), format="parquet")
            if dataset.count_rows() <= limit:  # from the files' footers
                writer = RedisWriter(view, context.online_store, context.repo_config)
                for batch in dataset.to_batches(batch_size=BATCH_ROWS):
                    if batch.num_rows:
                        writer.write(batch)
            else:
                artifacts = SerializedArtifacts.serialize(feature_view=view, repo_config=context.repo_config)
                staged_df = spark_df.sparkSession.read.parquet(str(staged))
                staged_df.mapInArrow(lambda batches: _write_partition(batches, artifacts), "rows long").count()
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return DAGValue(data=spark_df, format=DAGFormat.SPARK,
                        metadata={"feature_view": view.name, "write_to_online": True, "write_to_offline": False})


class _RedisFeatureBuilder(SparkFeatureBuilder):
    def build_output_nodes(self, view, input_node):
        node = _RedisWriteNode("output", self.dag_root.view, inputs=[input_node])
        self.nodes.append(node)
        return node


class SparkRedisComputeEngine(SparkComputeEngine):
    """Feast's Spark engine; only its output node differs (module doc)."""

    def _materialize_one(self, registry, task, from_offline_store: bool = False, **kwargs):
        from feast.infra.common.materialization_job import MaterializationJobStatus
        from feast.infra.compute_engines.spark.job import SparkMaterializationJob

        if from_offline_store:
            return super()._materialize_one(registry, task, from_offline_store=True, **kwargs)
        # SparkComputeEngine._materialize_one with this module's feature builder.
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        context = self.get_execution_context(registry, task)
        spark = self._get_feature_view_spark_session(task.feature_view)
        try:
            _RedisFeatureBuilder(registry=registry, spark_session=spark, task=task).build().execute(context)
            return SparkMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
        except Exception as e:
            return SparkMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=e)


# -- on the executors ---------------------------------------------------------------------

def _write_partition(batches, artifacts):
    """mapInArrow's function: write each Arrow batch of a partition (:class:`RedisWriter`),
    yield how many rows it wrote."""
    import pyarrow as pa

    view, online_store, _, config = artifacts.unserialize()
    writer = RedisWriter(view, online_store, config)
    for batch in batches:
        if batch.num_rows:
            writer.write(batch)
            yield pa.RecordBatch.from_pydict({"rows": [batch.num_rows]})


class RedisWriter:
    """Writes Arrow batches of one view's rows as stock ``RedisOnlineStore.online_write_batch``
    writes Feast's conversion of them (module doc)."""

    def __init__(self, view, online_store, config):
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name

        self.view, self.store, self.config = view, online_store, config
        self.client = online_store._get_client(config.online_store)
        name = _versioned_fv_name(view, config)
        self.ts_field = f"_ts:{name}".encode()
        self.features = [(f.name, f.dtype.to_value_type()) for f in view.features]
        self.fields = [_mmh3(f"{name}:{f}") for f, _ in self.features]
        self.join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
        self.project = config.project.encode("utf-8")
        self.ttl = config.online_store.key_ttl_seconds
        self.dedup = not config.online_store.skip_dedup

    def keys(self, batch) -> list[bytes] | None:
        """Each row's Redis key (Feast's entity key serialization, then the project); None
        when a join key column is missing (stock then converts the batch). A view without
        entities has one key, Feast's placeholder (``__dummy_id`` = ""), under which every
        engine and the reads keep it; stock's Spark plan never adds that column, so stock's
        node fails on such a view ("Column __dummy_id not found in table")."""
        from feast.feature_view import DUMMY_ENTITY_ID

        names = batch.schema.names
        if list(self.join_keys) == [DUMMY_ENTITY_ID] and DUMMY_ENTITY_ID not in names:
            return [packed_layout.placeholder_key(self.config.entity_key_serialization_version) + self.project
                    ] * batch.num_rows
        if not self.join_keys or any(k not in names for k in self.join_keys):
            return None
        columns = [(k, t, batch.column(names.index(k)).to_pylist()) for k, t in self.join_keys.items()]
        encoded = packed_layout.encode_entity_keys(columns)
        if encoded is None:
            encoded = packed_layout.serialize_entity_keys(columns, self.config.entity_key_serialization_version)
        return [key + self.project for key in encoded]

    def write(self, batch) -> None:
        keys = self.keys(batch)
        if keys is None:
            return self._stock(batch)
        names = batch.schema.names
        column = lambda name: batch.column(names.index(name))  # noqa: E731
        micros = packed_layout.arrow_micros(column(self.view.batch_source.timestamp_field))
        values = [packed_layout.wire_values(t.name, column(f)) for f, t in self.features]
        stored = [None] * len(keys)
        if self.dedup:
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, self.ts_field)
                stored = [r[0] for r in pipe.execute()]
        latest: dict[bytes, int] = {}
        with self.client.pipeline(transaction=False) as pipe:
            for i, key in enumerate(keys):
                nanos = micros[i] * 1000
                if self.dedup:
                    seen = max(_nanos(stored[i]), latest.get(key, 0))
                    if seen and nanos <= seen:
                        continue
                    latest[key] = nanos
                mapping = {self.ts_field: packed_layout.timestamp_bytes(micros[i])}
                for field, cells in zip(self.fields, values):
                    mapping[field] = cells[i]
                pipe.hset(key, mapping=mapping)
                if self.ttl:
                    pipe.expire(name=key, time=self.ttl)
            pipe.execute()

    def _stock(self, batch) -> None:
        from feast.utils import _convert_arrow_to_proto

        rows = _convert_arrow_to_proto(batch, self.view, self.join_keys)
        self.store.online_write_batch(config=self.config, table=self.view, data=rows, progress=None)


def _nanos(stored: bytes | None) -> int:
    """A stored ``_ts`` (a serialized Timestamp) in nanoseconds; 0 when there is none."""
    if not stored:
        return 0
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.ParseFromString(stored)
    return ts.seconds * 1_000_000_000 + ts.nanos
