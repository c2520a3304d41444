"""The entity rows of a training set, handed to Spark as a Parquet file instead of a plan.

Why: Feast's Spark offline store turns a pandas entity frame into a Spark DataFrame with
``spark.createDataFrame(frame)``. With Arrow on (Spark 4's default) that DataFrame is a
``LocalRelation``: every entity row lives *inside the query plan*, in the driver's heap.
Feast's point-in-time query references the entity table once per feature view and again
for the final join; the optimizer rule ``ConvertToLocalRelation`` then evaluates each
projection over it in the driver, copying every row per reference (and the planned query
carries a copy per scan). On the full data (335,787 flights through six views) this ends in
``java.lang.OutOfMemoryError: Java heap space`` in the "serve-Arrow" thread (the thread
``toPandas`` runs the query in), whatever the driver heap: the copies grow with the rows
times the views.

:func:`stage_entity_df` writes the frame as Parquet and reads it back, so the entity table
is a file scan: the driver plans over a file, executors read it in partitions, and the
rows are never copied into the plan. :class:`StagedEntitySparkOfflineStore` is Feast's
Spark offline store with that one change for pandas entity frames (a Spark DataFrame or a
SQL string is passed through untouched); the staged file lives as long as the retrieval
job that reads it.

The staging directory (``entity_staging_location``) must be readable by every Spark
executor under the same path: on one machine any local directory; on a real cluster a
shared mount (the same requirement as the Parquet sources under DATA_DIR).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pandas as pd
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
    get_spark_session_or_start_new_with_repoconfig,
)
from pydantic import StrictStr

#: The name this store is configured by (``offline_store: type:`` in a feature_store YAML).
STORE_TYPE = "feast_plugins.spark_entities.StagedEntitySparkOfflineStore"


class StagedEntitySparkOfflineStoreConfig(SparkOfflineStoreConfig):
    """Feast's Spark offline store settings plus where pandas entity frames are staged."""

    type: StrictStr = STORE_TYPE
    #: Directory for the staged entity files (created if missing); None: the system's temp
    #: directory (fine on one machine, not for executors on other hosts).
    entity_staging_location: Optional[StrictStr] = None


@dataclass
class StagedEntities:
    """A pandas entity frame written as Parquet and read back as a Spark DataFrame."""

    frame: object  # pyspark.sql.DataFrame
    path: Path
    #: The entity timestamps' range, as Feast computes it from a pandas frame (aware UTC).
    event_timestamp_range: tuple[datetime, datetime] | None = None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def stage_entity_df(spark, entity_df: pd.DataFrame, directory: str | Path | None = None,
                    event_timestamp_column: str | None = None) -> StagedEntities:
    """``entity_df`` as a Spark DataFrame scanning a Parquet copy of it under ``directory``.

    Timestamps become aware UTC with microsecond precision first, as Feast's own upload
    and Spark's Arrow conversion make them (naive values are taken as UTC; Spark's
    TimestampType holds microseconds). The index is dropped, as ``createDataFrame`` drops it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = entity_df.copy(deep=False)
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    base = Path(directory) if directory else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"entities-{uuid.uuid4().hex}"
    path.mkdir()
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, path / "part-00000.parquet", coerce_timestamps="us", allow_truncated_timestamps=True)
        spark_frame = spark.read.parquet(str(path))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    span = None
    if event_timestamp_column is not None and len(frame):
        stamps = frame[event_timestamp_column]
        span = (stamps.min().to_pydatetime(), stamps.max().to_pydatetime())
    return StagedEntities(frame=spark_frame, path=path, event_timestamp_range=span)


def _event_timestamp_column(entity_df: pd.DataFrame) -> str | None:
    """The column Feast will take as the entity timestamp (its own inference), or None."""
    from feast.infra.offline_stores.offline_utils import infer_event_timestamp_from_entity_df

    try:
        return infer_event_timestamp_from_entity_df(dict(zip(entity_df.columns, entity_df.dtypes)))
    except Exception:
        return None  # Feast raises its own error on the frame below


class StagedEntitySparkOfflineStore(SparkOfflineStore):
    """Feast's Spark offline store, with pandas entity frames staged as Parquet (see the
    module's docstring); everything else is stock."""

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                full_feature_names: bool = False, **kwargs):
        if not isinstance(entity_df, pd.DataFrame) or entity_df.empty:
            return SparkOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names=full_feature_names, **kwargs)
        store_config = config.offline_store
        spark = get_spark_session_or_start_new_with_repoconfig(store_config=store_config)
        location = _staging_directory(store_config)
        staged = stage_entity_df(spark, entity_df, location, _event_timestamp_column(entity_df))
        try:
            job = SparkOfflineStore.get_historical_features(
                config, feature_views, feature_refs, staged.frame, registry, project,
                full_feature_names=full_feature_names, **kwargs)
            _check_timestamp_range(job, staged)
        except BaseException:
            staged.remove()
            raise
        weakref.finalize(job, staged.remove)  # the file lives as long as the job reading it
        return job


def _staging_directory(store_config) -> str | None:
    """Where to stage: ``entity_staging_location``, else the store's ``staging_location``
    when it is a local path (a store extending this one may only set that), else None
    (the system's temp directory)."""
    location = getattr(store_config, "entity_staging_location", None)
    if location:
        return location
    staging = getattr(store_config, "staging_location", None) or ""
    if staging.startswith("file://"):
        return staging[len("file://"):]
    return staging if staging and "://" not in staging else None


def _check_timestamp_range(job, staged: StagedEntities) -> None:
    """Feast bounds the feature rows it reads by the entity timestamps' range, which it
    collects from a Spark DataFrame as *local* wall-clock times (pyspark's conversion) and
    then reads as UTC. With a process time zone other than UTC those bounds are shifted
    and rows near the edges would silently miss their features: refuse instead."""
    expected = staged.event_timestamp_range
    metadata = getattr(job, "metadata", None)
    if expected is None or metadata is None:
        return
    got = (metadata.min_event_timestamp, metadata.max_event_timestamp)

    def utc(value) -> datetime:
        value = pd.Timestamp(value).to_pydatetime()
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    if tuple(map(utc, got)) != tuple(map(utc, expected)):
        raise RuntimeError(
            f"Spark offline store: the entity timestamps' range came back as {got[0]} .. {got[1]} instead of "
            f"{expected[0]} .. {expected[1]} (UTC): pyspark converts timestamps to this process's local time "
            "zone, and Feast reads them as UTC. Run with the time zone UTC (TZ=UTC).")
