"""A Feast offline store: the stock Spark store, with point-in-time joins written for Spark.

Named in ``feature_repo/feature_store.spark.yaml``::

    offline_store:
      type: feast_plugins.spark_offline_store.SparkPitOfflineStore
      spark_conf: {...}

Everything except ``get_historical_features`` (materialization's pulls, writes, monitoring)
is the stock :class:`~feast.infra.offline_stores.contrib.spark_offline_store.spark.SparkOfflineStore`,
inherited unchanged, so Feast's Spark compute engine works with it as with stock.

Why: Feast 0.67's Spark store joins every entity row with every older feature row of the
same keys (a range join), deduplicates with ``GROUP BY``/``ROW_NUMBER`` over a string key
built by concatenating the keys and the timestamp, joins the winners back, and then joins
every view's result to the entity rows on that string. It also turns a pandas entity set
into Spark rows through the driver, and the result back through the driver's heap
(``toPandas``): with the full flights history the driver runs out of memory.

How (two Spark jobs per retrieval: the views' candidate rows, then every view's answer):

* The entity set goes to Spark narrow: a row number, the view's join keys and the
  timestamp as UTC microseconds, written to Parquet in a staging directory
  (``staging_location``, default the system temp dir: it must be readable by the
  executors, as a shared filesystem on a cluster). The other entity columns never enter
  Spark.
* Each view's candidate rows (pruned to the entity set's time range less the TTL) are
  staged as Parquet, every view in one job. A view with at most ``broadcast_rows`` of them
  (default 5M; most views: a row per key and hour or day) is answered inside each entity
  task against a copy of its rows (:mod:`feast_plugins.spark_asof`, one ``mapInArrow``
  pass for all such views): the entity rows are never shuffled, and a key with few values
  (``origin``) no longer makes a few giant partitions. A larger view takes the sort below.
* Sorted window (large views): entity rows and the view's rows are unioned and sorted
  within partitions of the join keys by (event time, feature rows before entity rows,
  created time with a missing one first); for each entity row the last feature row so far
  (``last(..., ignorenulls)`` over the running window) is the newest row at or before its
  time, ties on event time going to the newest created time.
  It is used only within the view's TTL.
* Each view's answer (row number and features) is written to Parquet by the executors
  and read back with pyarrow, put in entity order by the row number (a row number that
  does not line up is an error, never a silently shifted feature), and laid beside the
  entity columns: nothing goes through the driver's JVM heap.

Semantics: those of the ASOF DuckDB store (:mod:`feast_plugins.asof_offline_store`) and
of Feast: TTL on both sides (``event_ts <= entity_ts <= event_ts + ttl``; a TTL of 0 or
None means no limit), ties on event time to the newest created time (a missing one loses),
rows tying on both are Feast's unordered tie, every entity row exactly once in input order
(null keys or timestamps give missing features), full feature names ``view__feature``,
on-demand views after the join through Feast's :class:`RetrievalJob` (a python-mode view
gets only its declared inputs, as in the ASOF store), a view without entities joined on
time alone. ``tests/feast_plugins/test_spark_offline_store.py`` runs the ASOF store's
property suite against this store.

Entity sets: a pandas DataFrame (what ``pipeline run`` passes), a Spark SQL query, a
Spark DataFrame or a Parquet path (``*.parquet``). Batch feature views, non-Spark sources
(Iceberg), ``filter_by_created_timestamp``, substrait on-demand views and retrievals
without an entity set go to the stock store (through
:class:`~feast_plugins.spark_entities.StagedEntitySparkOfflineStore`, which stages a pandas
entity frame as Parquet so that the driver's heap does not hold it).

Spark's Python workers must run an interpreter with pyarrow and this project
(``PYSPARK_PYTHON``; the spark profile sets it to the platform's own, core/settings.py).

Windowed views (:func:`feast_plugins.windows.is_windowed`, over a ``SparkSource`` of
events) are computed here too, equal to the DuckDB store: :mod:`feast_plugins.spark_windows`,
one part of the same Spark job. A retrieval that goes to stock refuses them, naming them:
stock Feast would join them as plain views.

Not yet here: a large view without entities is sorted in one Spark partition (time
buckets would spread it).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast.batch_feature_view import BatchFeatureView
from feast.feature_view import FeatureView
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    get_spark_session_or_start_new_with_repoconfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import StrictStr

from feast_plugins.asof_offline_store import (
    EVENT_TIMESTAMP_PREFIX,
    DeclaredInputsOnly,
    is_parquet_path,
    view_columns,
)
from feast_plugins.spark_asof import DEFAULT_BROADCAST_ROWS
from feast_plugins.spark_entities import StagedEntitySparkOfflineStore
from feast_plugins.windowed_offline import WindowedViewPlan, windowed_view_plan
from feast_plugins.windows import is_windowed

#: The entity row number column (input order) and the entity timestamp in UTC microseconds.
ROW = "__feast_row"
TS = "__feast_ts"


class SparkPitOfflineStoreConfig(SparkOfflineStoreConfig):
    """Offline store settings (``offline_store:`` in ``feature_store.yaml``): the stock
    Spark store's (``spark_conf``, ``staging_location``, ``region``).

    ``staging_location``: a directory (a path or ``file://`` URI) where the entity set goes
    to Spark and each view's answer comes back; the driver and every executor must reach
    it. Default: the system temp dir (right for ``local[*]`` and a cluster on one machine).
    """

    type: StrictStr = "feast_plugins.spark_offline_store.SparkPitOfflineStore"
    #: A view whose candidate feature rows number at most this is answered inside each
    #: entity task against a copy of them (no shuffle: :mod:`feast_plugins.spark_asof`);
    #: a larger one by the sorted-window join. None: always the sorted window.
    broadcast_rows: Optional[int] = DEFAULT_BROADCAST_ROWS


def _q(name: str) -> str:
    """A Spark SQL identifier."""
    return "`" + str(name).replace("`", "``") + "`"


@dataclass(frozen=True, eq=False)
class SparkViewPlan:
    """What one feature view contributes: its source and which columns to take."""

    name: str
    source: SparkSource
    join_keys: tuple[tuple[str, str], ...]  # (feature-table column, entity column); () without entities
    timestamp_field: str
    created_timestamp_column: Optional[str]
    features: tuple[tuple[str, str], ...]   # (source column, output column)
    ttl_us: Optional[int]


def spark_view_plan(feature_view: FeatureView, feature_refs: List[str], full_feature_names: bool
                    ) -> Optional[SparkViewPlan | WindowedViewPlan]:
    """The join plan for one view, named as the stock stores name it; None if this store
    does not plan it (a batch feature view, a source other than a SparkSource). A
    windowed view gets a :class:`~feast_plugins.windowed_offline.WindowedViewPlan`."""
    source = feature_view.batch_source
    if is_windowed(feature_view):  # over a SparkSource of events: spark_windows; else refused by the caller
        source_sql = source.get_table_query_string() if type(source) is SparkSource else None
        return windowed_view_plan(feature_view, feature_refs, full_feature_names, source_sql) if source_sql else None
    if isinstance(feature_view, BatchFeatureView) or type(source) is not SparkSource:
        return None
    return SparkViewPlan(name=feature_view.name, source=source,
                         **view_columns(feature_view, feature_refs, full_feature_names))


def micros_expr(column: str, data_type) -> Any:
    """A Spark column: ``column`` as UTC microseconds since the epoch (BIGINT).

    A timestamp is an instant; a timestamp without time zone and a date are read as UTC
    wall time (as the DuckDB store does), whatever the session's time zone. Anything else
    is an error naming the column."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    if isinstance(data_type, TimestampType):
        return F.expr(f"unix_micros({_q(column)})")
    if isinstance(data_type, (TimestampNTZType, DateType)):
        # The UTC wall time moved to the session's zone, then read in that zone: the instant.
        return F.expr(f"unix_micros(CAST(convert_timezone('UTC', current_timezone(), "
                      f"CAST({_q(column)} AS TIMESTAMP_NTZ)) AS TIMESTAMP))")
    raise ValueError(f"column {column!r} is {data_type.simpleString()}, not a timestamp")


def _timestamp_type(data_type) -> bool:
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    return isinstance(data_type, (TimestampType, TimestampNTZType, DateType))


def _aware(data_type) -> bool:
    from pyspark.sql.types import TimestampType

    return isinstance(data_type, TimestampType)


@dataclass
class ViewRows:
    """One view's candidate feature rows as a Spark DataFrame (``__k0..``, ``__ts``, ``__c``
    and the payload struct ``__p`` of the event time ``t`` and the values ``v0..``), the
    feature table's column types, and the output columns holding timestamps (instant or not)."""

    frame: Any
    types: dict
    stamps: dict


def view_rows(spark, plan: SparkViewPlan, low: Optional[int], high: Optional[int]) -> ViewRows:
    """The feature rows of one view that can be chosen: keys and time present, time at most
    ``high`` and, with a TTL, at least ``low`` less the TTL (``low``/``high``: the entity
    set's earliest and latest time in microseconds; None when no entity row has a time)."""
    from pyspark.sql import functions as F

    try:
        table = spark.sql(f"SELECT * FROM {plan.source.get_table_query_string()}")
    except Exception as e:  # noqa: BLE001 - Spark's analysis errors name the cause
        raise ValueError(f"feature view {plan.name!r}: cannot read its source {plan.source.name!r} "
                         f"({plan.source.path or plan.source.table or plan.source.query}): {e}") from e
    types = {f.name: f.dataType for f in table.schema.fields}
    needed = [*(src for src, _ in plan.join_keys), plan.timestamp_field, *(src for src, _ in plan.features)]
    if plan.created_timestamp_column:
        needed.append(plan.created_timestamp_column)
    missing = [c for c in dict.fromkeys(needed) if c not in types]
    if missing:
        raise ValueError(f"feature view {plan.name!r}: source {plan.source.name!r} lacks column(s) {missing}; "
                         f"it has {list(types)}")
    try:
        ts = micros_expr(plan.timestamp_field, types[plan.timestamp_field])
        created = (micros_expr(plan.created_timestamp_column, types[plan.created_timestamp_column])
                   if plan.created_timestamp_column else F.lit(None).cast("bigint"))
    except ValueError as e:
        raise ValueError(f"feature view {plan.name!r}, source {plan.source.name!r}: {e}") from None

    keys = [f"__k{j}" for j in range(len(plan.join_keys))]
    values, stamps = [], {}
    for j, (src, out) in enumerate(plan.features):
        if _timestamp_type(types[src]):
            values.append(micros_expr(src, types[src]).alias(f"v{j}"))
            stamps[out] = _aware(types[src])
        else:
            values.append(F.col(_q(src)).alias(f"v{j}"))
    rows = table.select(*[F.col(_q(src)).alias(k) for (src, _), k in zip(plan.join_keys, keys)],
                        ts.alias("__ts"), created.alias("__c"), *values)
    window_low = None if low is None or plan.ttl_us is None else low - plan.ttl_us
    keep = F.col("__ts").isNotNull()
    for k in keys:
        keep &= F.col(k).isNotNull()
    keep &= F.col("__ts") <= F.lit(high) if high is not None else F.lit(False)
    if window_low is not None:
        keep &= F.col("__ts") >= F.lit(window_low)
    frame = rows.where(keep).select(
        *keys, "__ts", "__c",
        F.struct(F.col("__ts").alias("t"), *[F.col(f"v{j}") for j in range(len(plan.features))]).alias("__p"))
    return ViewRows(frame, types, stamps)


def entity_key_columns(entities, plan: SparkViewPlan, types: dict, prefix: str = "__k") -> list:
    """The entity set's join key columns for one view, as the feature table's types (an
    unconvertible value matches nothing), named ``<prefix>0..``."""
    from pyspark.sql import functions as F

    entity_types = {f.name: f.dataType for f in entities.schema.fields}
    columns = []
    for j, (src, ent) in enumerate(plan.join_keys):
        column = F.col(_q(ent))
        if entity_types[ent] != types[src]:
            column = F.expr(f"try_cast({_q(ent)} AS {types[src].simpleString()})")
        columns.append(column.alias(f"{prefix}{j}"))
    return columns


def answer_fields(plan: SparkViewPlan, event_timestamps: bool) -> list[tuple[str, str]]:
    """(payload field, output column) of one view's answer, in output order."""
    fields = [(f"v{j}", out) for j, (_, out) in enumerate(plan.features)]
    if event_timestamps:
        fields.append(("t", EVENT_TIMESTAMP_PREFIX + plan.name))
    return fields


def view_answer(spark, plan: SparkViewPlan, entity_path: str, low: Optional[int], high: Optional[int],
                event_timestamps: bool, rows: Optional[ViewRows] = None):
    """The Spark DataFrame of one view's answer by the sorted-window join: ``__feast_row``,
    the view's output columns (timestamps as UTC microseconds) and, with
    ``event_timestamps``, the event time of the row the values came from; plus the names of
    the columns holding timestamps (and whether they are instants) to turn back into
    timestamps once read. ``rows``: the view's feature rows if already read (else
    :func:`view_rows`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = rows or view_rows(spark, plan, low, high)
    stamps = dict(rows.stamps)
    keys = [f"__k{j}" for j in range(len(plan.join_keys))]
    features = rows.frame.select(F.lit(None).cast("bigint").alias("__r"), *keys, "__ts",
                                 F.lit(0).alias("__kind"), "__c", "__p")
    payload_type = features.schema["__p"].dataType
    entities = spark.read.parquet(entity_path)
    entity_rows = entities.select(
        F.col(ROW).alias("__r"), *entity_key_columns(entities, plan, rows.types), F.col(TS).alias("__ts"),
        F.lit(1).alias("__kind"), F.lit(None).cast("bigint").alias("__c"),
        F.lit(None).cast(payload_type).alias("__p"))

    order = [F.col("__ts").asc_nulls_first(), F.col("__kind").asc(), F.col("__c").asc_nulls_first()]
    window = (Window.partitionBy(*keys) if keys else Window).orderBy(*order) \
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    joined = entity_rows.unionByName(features) \
        .withColumn("__m", F.last("__p", ignorenulls=True).over(window)) \
        .where(F.col("__kind") == 1)
    valid = F.col("__ts").isNotNull() & F.col("__m").isNotNull()
    if plan.ttl_us is not None:
        valid &= F.col("__m.t") >= F.col("__ts") - F.lit(plan.ttl_us)
    outputs = [F.when(valid, F.col(f"__m.{field}")).alias(out) for field, out in answer_fields(plan, event_timestamps)]
    if event_timestamps:
        stamps[EVENT_TIMESTAMP_PREFIX + plan.name] = True
    return joined.select(F.col("__r").alias(ROW), *outputs), stamps


def broadcast_answers(spark, plans: list[tuple[int, SparkViewPlan, ViewRows, str]], entity_path: str,
                      event_timestamps: bool):
    """The answers of the views whose staged feature rows go to every task (one
    ``mapInArrow`` pass over the entity set, :mod:`feast_plugins.spark_asof`): ``__feast_row``
    and one struct ``__o<i>`` per view (``plans``: view index, plan, rows, staged path)."""
    from functools import partial

    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import LongType, StructField, StructType

    from feast_plugins.spark_asof import AsofSpec, asof_partition

    entities = spark.read.parquet(entity_path)
    columns, specs, fields = [F.col(ROW), F.col(TS)], [], [StructField(ROW, LongType())]
    for i, plan, rows, path in plans:
        columns += entity_key_columns(entities, plan, rows.types, prefix=f"__b{i}_")
        outputs = answer_fields(plan, event_timestamps)
        payload = {f.name: f.dataType for f in rows.frame.schema["__p"].dataType.fields}
        fields.append(StructField(f"__o{i}", StructType([StructField(out, payload[field])
                                                          for field, out in outputs])))
        specs.append(AsofSpec(path=path, prefix=f"__v{i}",
                              entity_keys=tuple(f"__b{i}_{j}" for j in range(len(plan.join_keys))),
                              ttl_us=plan.ttl_us, outputs=tuple(outputs), column=f"__o{i}"))
    schema = StructType(fields)
    large = str(spark.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false")).lower() == "true"
    arrow_schema = to_arrow_schema(schema, prefers_large_types=large)
    return entities.select(*columns).mapInArrow(
        partial(asof_partition, specs=specs, row=ROW, ts=TS, schema=arrow_schema), schema)


def _parquet_rows(path: Path) -> int:
    """The number of rows in a directory of Parquet files written by Spark (from the footers)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.glob("*.parquet")))


def _from_micros(column: pa.ChunkedArray, aware: bool) -> pa.ChunkedArray:
    """UTC microseconds back to ``timestamp[us, UTC]`` (``timestamp[us]`` for wall time)."""
    return column.cast(pa.int64()).cast(pa.timestamp("us", tz="UTC" if aware else None))


def _timestamp_column(schema: pa.Schema) -> str:
    """Feast's rule: ``event_timestamp`` if present, else the only timestamp column."""
    if DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL in schema.names:
        return DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
    candidates = [f.name for f in schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if len(candidates) != 1:
        raise ValueError(f"entity set: cannot tell the event timestamp column among {schema.names}; "
                         f"name it {DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL!r}")
    return candidates[0]


def _utc_column(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """The entity timestamps as ``timestamp[us, UTC]`` (naive times are UTC, as in the DuckDB store)."""
    if pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
        return pc.cast(column, pa.timestamp("us", tz="UTC"), safe=False)
    if pa.types.is_date(column.type):
        return column.cast(pa.timestamp("us", tz="UTC"))
    try:
        parsed = pd.to_datetime(column.to_pandas(), utc=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"entity set: timestamp column {name!r} ({column.type}) is not timestamps: {e}") from None
    return pc.cast(pa.chunked_array([pa.Array.from_pandas(parsed)]), pa.timestamp("us", tz="UTC"), safe=False)


def staging_root(config: RepoConfig) -> Path:
    location = getattr(config.offline_store, "staging_location", None)
    if not location:
        return Path(tempfile.gettempdir())
    if "://" in location and not location.startswith("file://"):
        raise ValueError(f"offline_store.staging_location {location!r}: this store needs a filesystem path "
                         "(or file:// URI) that the driver and every executor can reach")
    return Path(location.removeprefix("file://"))


class SparkPitRetrievalJob(RetrievalJob):
    """Runs the per-view Spark joins when asked for the result; on-demand views via Feast's
    ``to_arrow``. Each run stages its files in a fresh directory and removes it."""

    def __init__(self, config: RepoConfig, spark, entity_df, views: List[SparkViewPlan],
                 on_demand_feature_views: List[OnDemandFeatureView], full_feature_names: bool,
                 feature_refs: List[str]) -> None:
        super().__init__()
        self._config = config
        self._spark = spark
        self._views = views
        self._odfvs = on_demand_feature_views
        join_keys = {entity for view in views for _, entity in view.join_keys}
        self._applied_odfvs = [DeclaredInputsOnly(o, join_keys) if o.mode == "python" else o
                               for o in on_demand_feature_views]
        self._full_feature_names = full_feature_names
        self._feature_refs = feature_refs
        self._metadata: Optional[RetrievalMetadata] = None
        #: Add ``__event_timestamp__<view>`` columns (for the leakage guard in training).
        self.include_event_timestamps = False
        self._entity_table: Optional[pa.Table] = None  # pandas entity sets: converted once
        self._entity_frame = None                      # Spark entity sets: run at each retrieval
        if isinstance(entity_df, pd.DataFrame):
            table = pa.Table.from_pandas(entity_df, preserve_index=False)
            self._ts_col = _timestamp_column(table.schema)
            index = table.schema.get_field_index(self._ts_col)
            table = table.set_column(index, self._ts_col, _utc_column(table.column(self._ts_col), self._ts_col))
            self._entity_table = table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))
            columns = table.schema.names
        else:
            self._entity_frame = self._spark_entities(entity_df)
            columns = self._entity_frame.columns
            self._ts_col = self._spark_timestamp_column(self._entity_frame)
        self._entity_columns = [c for c in columns if c != ROW]
        for view in views:
            missing = [ent for _, ent in view.join_keys if ent not in columns]
            if missing:
                raise ValueError(f"entity set lacks join key column(s) {missing} of feature view "
                                 f"{view.name!r}; it has {self._entity_columns}")

    def _spark_entities(self, entity_df):
        from pyspark.sql import DataFrame

        if isinstance(entity_df, DataFrame):
            return entity_df
        if isinstance(entity_df, Path) or is_parquet_path(entity_df):
            try:
                return self._spark.read.parquet(str(entity_df))
            except Exception as e:  # noqa: BLE001 - Spark names the missing path
                raise ValueError(f"entity set {str(entity_df)!r}: {e}") from None
        if isinstance(entity_df, str):
            try:
                return self._spark.sql(entity_df)
            except Exception as e:  # noqa: BLE001 - Spark's parse and analysis errors
                raise ValueError(f"entity set query {entity_df[:200]!r}: {e}") from None
        raise TypeError(f"entity_df must be a pandas DataFrame, a Spark DataFrame, a Parquet path or a "
                        f"Spark SQL string, not {type(entity_df).__name__}")

    @staticmethod
    def _spark_timestamp_column(frame) -> str:
        fields = {f.name: f.dataType for f in frame.schema.fields}
        if DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL in fields:
            return DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
        candidates = [name for name, t in fields.items() if _timestamp_type(t)]
        if len(candidates) != 1:
            raise ValueError(f"entity set: cannot tell the event timestamp column among {list(fields)}; "
                             f"name it {DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL!r}")
        return candidates[0]

    # -- the entity set in the staging directory ---------------------------------------------

    def _stage_entities(self, staging: Path) -> tuple[pa.Table, str]:
        """The entity rows (``__feast_row`` in input order, the timestamp as UTC) for the
        result, and the path of the narrow Parquet file Spark reads (row, keys, microseconds)."""
        keys = list(dict.fromkeys(ent for view in self._views for _, ent in view.join_keys))
        if self._entity_table is not None:
            table = self._entity_table
            narrow = table.select([ROW, *keys]).append_column(
                TS, table.column(self._ts_col).cast(pa.int64()))
            path = staging / "entities.parquet"
            pq.write_table(narrow, path)
            return table, str(path)
        from pyspark.sql import functions as F

        frame = self._entity_frame
        types = {f.name: f.dataType for f in frame.schema.fields}
        try:
            micros = micros_expr(self._ts_col, types[self._ts_col])
        except ValueError as e:
            raise ValueError(f"entity set: {e}") from None
        stamps = {c: _aware(t) for c, t in types.items() if _timestamp_type(t) and c != self._ts_col}
        stamps[self._ts_col] = True
        # Every timestamp column as microseconds: read back exactly (Spark's default INT96 is not).
        columns = [(micros_expr(c, types[c]) if c in stamps and c != self._ts_col else F.col(_q(c))).alias(c)
                   for c in frame.columns if c != self._ts_col]
        path = staging / "entities"
        frame.select(*columns, micros.alias(self._ts_col), F.monotonically_increasing_id().alias(ROW)) \
            .withColumn(TS, F.col(_q(self._ts_col))).write.parquet(str(path))
        table = pq.read_table(path)
        table = table.take(pc.sort_indices(table.column(ROW)))
        for c, aware in stamps.items():
            table = table.set_column(table.schema.get_field_index(c), c, _from_micros(table.column(c), aware))
        table = table.select([*frame.columns, ROW])
        return table, str(path)

    # -- the joins -----------------------------------------------------------------------------

    def _joined(self) -> pa.Table:
        """Entity columns, then each view's features (and event times), in entity order."""
        from pyspark.sql import functions as F

        staging = staging_root(self._config) / f"feast-spark-pit-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            entity, entity_path = self._stage_entities(staging)
            if entity.num_rows == 0:
                raise ValueError("entity set is empty: no rows to join features to")
            ts = entity.column(self._ts_col)
            low, high = pc.min(ts).cast(pa.int64()).as_py(), pc.max(ts).cast(pa.int64()).as_py()
            if self._metadata is None:
                self._set_metadata(entity)

            # Each view's candidate rows staged as Parquet (their count decides the plan); then
            # one Spark job for every view: the small tables' answers from one mapInArrow pass
            # over the entity set (part 0), each large one's from its sorted window (one part
            # each, their sorts side by side); the parts' rows unioned and written once.
            limit = getattr(self._config.offline_store, "broadcast_rows", DEFAULT_BROADCAST_ROWS)
            small, large, windowed, stamps, candidates = [], [], [], {}, []
            for i, view in enumerate(self._views):
                stamps[i] = {}
                if self.include_event_timestamps:
                    stamps[i][EVENT_TIMESTAMP_PREFIX + view.name] = True
                if isinstance(view, WindowedViewPlan):
                    windowed.append(i)
                    candidates.append(None)
                    continue
                rows = view_rows(self._spark, view, low, high)
                stamps[i].update(rows.stamps)
                candidates.append(rows)
            features = staging / "features"
            if limit is not None and len(windowed) < len(self._views):  # every view's candidates in one job
                union = None
                for i, rows in enumerate(candidates):
                    if rows is None:
                        continue
                    keys = [F.col(f"__k{j}").alias(f"__v{i}k{j}") for j in range(len(self._views[i].join_keys))]
                    frame = rows.frame.select(F.lit(i).alias("__view"), *keys, "__ts", "__c",
                                              F.col("__p").alias(f"__v{i}p"))
                    union = frame if union is None else union.unionByName(frame, allowMissingColumns=True)
                union.write.partitionBy("__view").parquet(str(features))
            for i, (view, rows) in enumerate(zip(self._views, candidates)):
                if rows is None:
                    continue
                path = features / f"__view={i}"
                if limit is not None and path.exists() and _parquet_rows(path) <= limit:
                    small.append((i, view, rows, str(path)))
                else:  # a large table, or none (no candidate rows: nothing was written)
                    large.append((i, view, rows))
            parts: list[tuple[Any, list[int]]] = []
            if small:
                parts.append((broadcast_answers(self._spark, small, entity_path, self.include_event_timestamps),
                              [i for i, *_ in small]))
            answers = [(i, view_answer(self._spark, view, entity_path, low, high, self.include_event_timestamps,
                                       rows=rows)[0]) for i, view, rows in large]
            if windowed:
                from feast_plugins.spark_windows import windowed_answer

                entities = self._spark.read.parquet(entity_path)
                answers += [(i, windowed_answer(self._spark, self._views[i], entities, ROW, TS,
                                                EVENT_TIMESTAMP_PREFIX + self._views[i].name
                                                if self.include_event_timestamps else None)) for i in windowed]
            for i, frame in answers:  # one part per view: its row numbers and its outputs as one struct
                outputs = [c for c in frame.columns if c != ROW]
                parts.append((frame.select(F.col(ROW), F.struct(*[F.col(_q(c)) for c in outputs]).alias(f"__o{i}")),
                              [i]))
            result = entity.drop_columns([ROW])
            if not parts:
                return result
            union = None
            for p, (frame, _) in enumerate(parts):
                frame = frame.withColumn("__part", F.lit(p))
                union = frame if union is None else union.unionByName(frame, allowMissingColumns=True)
            out = staging / "answers"
            union.write.parquet(str(out))
            answers = pq.read_table(out)
            rows = entity.column(ROW)
            part_of = answers.column("__part")
            columns: dict[int, list[tuple[str, pa.ChunkedArray]]] = {}
            for p, (_, indices) in enumerate(parts):
                answer = answers.filter(pc.equal(part_of, p))
                answer = answer.take(pc.sort_indices(answer.column(ROW)))
                if not answer.column(ROW).equals(rows):
                    names = ", ".join(repr(self._views[i].name) for i in indices)
                    raise RuntimeError(f"point-in-time join: rows misaligned for feature view(s) {names} "
                                       f"({answer.num_rows} answers for {entity.num_rows} entity rows)")
                for i in indices:
                    struct = answer.column(f"__o{i}").combine_chunks()
                    columns[i] = []
                    for field, values in zip(struct.type, struct.flatten()):
                        column = pa.chunked_array([values], field.type)
                        if field.name in stamps[i]:
                            column = _from_micros(column, stamps[i][field.name])
                        columns[i].append((field.name, column))
            for i in range(len(self._views)):
                for name, column in columns[i]:
                    result = result.append_column(name, column)
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pa.Table:
        return self._joined()

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._joined().to_pandas()

    def to_spark_df(self):
        """The joined rows (no on-demand views, as in Feast's Spark job) as a Spark DataFrame
        scanning a Parquet file in the staging directory; the file lives as long as this job."""
        staging = staging_root(self._config) / f"feast-spark-pit-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        weakref.finalize(self, shutil.rmtree, staging, True)
        pq.write_table(self._joined(), staging / "part-00000.parquet")
        return self._spark.read.parquet(str(staging))

    def to_parquet(self, path: Union[str, Path]) -> Path:
        """Write the joined rows to one Parquet file (no on-demand views: use to_arrow())."""
        if self._odfvs:
            raise ValueError("to_parquet cannot apply on-demand feature views; use to_arrow()")
        pq.write_table(self._joined(), path)
        return Path(path)

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> List[OnDemandFeatureView]:
        return self._applied_odfvs

    @property
    def metadata(self) -> Optional[RetrievalMetadata]:
        if self._metadata is None:
            if self._entity_table is not None:
                self._set_metadata(self._entity_table)
            else:
                from pyspark.sql import functions as F

                low, high = self._entity_frame.select(F.min(_q(self._ts_col)), F.max(_q(self._ts_col))).first()
                self._set_metadata(None, low, high)
        return self._metadata

    def _set_metadata(self, entity: Optional[pa.Table], low=None, high=None) -> None:
        if entity is not None:
            ts = entity.column(self._ts_col)
            low, high = pc.min(ts).as_py(), pc.max(ts).as_py()
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        self._metadata = RetrievalMetadata(
            features=self._feature_refs,
            keys=[c for c in self._entity_columns if c != self._ts_col],
            min_event_timestamp=_aware_datetime(low) or epoch,
            max_event_timestamp=_aware_datetime(high) or epoch,
        )

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False,
                timeout: Optional[int] = None) -> None:
        """Write the result (with on-demand views) as Parquet where ``storage`` says: a
        SparkSource or FileSource path (a directory for Spark gets one ``part-0.parquet``)."""
        from feast.errors import SavedDatasetLocationAlreadyExists

        path = getattr(storage.to_data_source(), "path", None)
        if not path or "://" in path and not path.startswith("file://"):
            raise NotImplementedError(f"persisting to {type(storage).__name__} without a local path is not supported")
        target = Path(path.removeprefix("file://"))
        if target.exists() and not allow_overwrite:
            raise SavedDatasetLocationAlreadyExists(location=str(target))
        table = self.to_arrow(timeout=timeout)
        if target.suffix != ".parquet":
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            target = target / "part-0.parquet"
        pq.write_table(table, target)


def _aware_datetime(value) -> Optional[datetime]:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return pd.Timestamp(value, tz="UTC").to_pydatetime()


class SparkPitOfflineStore(SparkOfflineStore):
    """The stock Spark offline store with ``get_historical_features`` as per-view sorted
    window joins (:class:`SparkPitRetrievalJob`); what it does not plan goes to stock."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs,
    ) -> RetrievalJob:
        plans = [spark_view_plan(fv, feature_refs, full_feature_names) for fv in feature_views]
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        unsupported = (
            entity_df is None
            or any(p is None for p in plans)
            or any(o.mode == "substrait" for o in odfvs)
            or (filter_by_created_timestamp and any(p.created_timestamp_column for p in plans)))
        if unsupported:  # stock, with a pandas entity frame staged as Parquet (spark_entities)
            windowed = [fv.name for fv in feature_views if is_windowed(fv)]
            if windowed:
                raise ValueError(f"windowed view(s) {windowed} cannot be joined here: this retrieval needs "
                                 "stock Feast's Spark store (a source other than a SparkSource, a substrait "
                                 "view, filter_by_created_timestamp or no entity set), which does not compute "
                                 "windows")
            return StagedEntitySparkOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names=full_feature_names, filter_by_created_timestamp=filter_by_created_timestamp,
                **kwargs)
        spark = get_spark_session_or_start_new_with_repoconfig(config.offline_store)
        return SparkPitRetrievalJob(config, spark, entity_df, plans, odfvs, full_feature_names, feature_refs)
