"""A Feast offline store: the stock DuckDB store, with point-in-time joins done by DuckDB's ASOF JOIN.

Named in ``feature_repo/feature_store.yaml``::

    offline_store:
      type: feast_plugins.asof_offline_store.AsofDuckDBOfflineStore

so training, batch scoring and anything else calling ``FeatureStore.get_historical_features``
get it. Everything except ``get_historical_features`` (materialization's
``pull_latest_from_table_or_query``, ``pull_all``, writes, logging, monitoring) is the stock
:class:`~feast.infra.offline_stores.duckdb.DuckDBOfflineStore`, inherited unchanged, but
for one addition: a pull without join keys (materializing a view without entities) adds
the placeholder key Feast then reads (:func:`_keyless_pull`).

Why: Feast 0.67's DuckDB store (through ibis) builds, per feature view, a range join of
every entity row with every older feature row, a ``ROW_NUMBER`` over the result and a join
back on a string row id; that is 7-11x slower than DuckDB's ASOF JOIN, which walks both
sides once in timestamp order. It also needs the entity set as a pandas DataFrame.

Semantics (the same as the stock store; ``tests/feast_plugins/test_asof_offline_store.py``
proves them against a brute-force reference and against the stock store):

* For each entity row and feature view, the feature row with the same join keys and the
  newest ``event_ts <= entity_ts`` is chosen (a view without entities, such as a global
  statistic, has no keys: every entity row, even one with null keys, takes the newest row
  of the whole view); among rows with that same event timestamp the newest created
  timestamp wins (a missing created timestamp loses). It is used only if
  ``event_ts + ttl >= entity_ts``; a TTL of 0 or None means no limit. Any ``timedelta``
  works (the stock store's ibis path rejects one mixing days and seconds).
* Rows with equal event *and* created timestamps (or equal event timestamps and no created
  column) are a tie that neither store breaks: either row may be returned.
* Every entity row comes back exactly once, in the input order; a null join key or
  timestamp gives missing features, never a dropped row.
* ``full_feature_names`` names columns ``view__feature``; on-demand feature views run after
  the join through Feast's own :class:`RetrievalJob` (``to_arrow``/``to_df``); a python-mode
  view is handed only the columns it declares (:class:`DeclaredInputsOnly`).

Entity sets may be a pandas DataFrame, a Parquet path (a string or :class:`pathlib.Path`
ending in ``.parquet``, globs allowed) or a DuckDB SQL query string; the last two never
pass through pandas. Cases this store does not plan itself (non-Parquet or remote sources,
``filter_by_created_timestamp``, substrait on-demand views) go to the stock store, which
needs a DataFrame there.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional, Sequence, Union

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.data_format import ParquetFormat
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL, FeatureView
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import StrictStr

from core.duck import connect, sql_ident, sql_str
from feast_plugins.windowed_offline import (
    WindowedViewPlan,
    check_events_schema,
    windowed_sql,
    windowed_view_plan,
)
from feast_plugins.windows import is_windowed

EntitySet = Union[pd.DataFrame, str, Path]

#: Prefix of the per-view event-time columns a job adds when ``include_event_timestamps`` is set.
EVENT_TIMESTAMP_PREFIX = "__event_timestamp__"

_TIMESTAMP_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS",
                    "TIMESTAMP_S", "DATE")


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Offline store settings (``offline_store:`` in ``feature_store.yaml``).

    ``memory_limit`` (e.g. ``"2GB"``) and ``threads`` are passed to DuckDB for the join;
    unset, DuckDB's defaults apply (80% of RAM, all cores). Past the limit DuckDB spills to
    ``temp_directory`` (default: a ``duckdb_asof_spill`` folder in the system temp dir).
    """

    type: StrictStr = "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"
    memory_limit: Optional[StrictStr] = None
    threads: Optional[int] = None
    temp_directory: Optional[StrictStr] = None


def is_parquet_path(entity_df: EntitySet) -> bool:
    """A Path, or a string naming ``*.parquet`` file(s), is a Parquet entity set; other strings are SQL."""
    if isinstance(entity_df, Path):
        return True
    return isinstance(entity_df, str) and entity_df.strip().lower().endswith(".parquet")


def _ttl_microseconds(ttl: Optional[timedelta]) -> Optional[int]:
    if not ttl:  # None or timedelta(0): no limit, as in Feast
        return None
    return ttl // timedelta(microseconds=1)


@dataclass(frozen=True)
class ViewPlan:
    """What one feature view contributes: where its rows are and which columns to take."""

    name: str
    source_sql: str                    # a FROM item: read_parquet('...')
    join_keys: tuple[tuple[str, str], ...]  # (feature-table column, entity column); () without entities
    timestamp_field: str
    created_timestamp_column: Optional[str]
    features: tuple[tuple[str, str], ...]   # (source column, output column)
    ttl_us: Optional[int]


def _parquet_source_sql(source: FileSource) -> Optional[str]:
    """``read_parquet(...)`` for a local Parquet FileSource; None if this store cannot read it."""
    if not isinstance(source, FileSource) or type(source) is not FileSource:
        return None
    path = source.path
    is_parquet = isinstance(source.file_format, ParquetFormat) or (
        source.file_format is None and path.endswith(".parquet"))
    if not is_parquet or "://" in path and not path.startswith("file://"):
        return None
    path = path.removeprefix("file://")
    if Path(path).is_dir():
        path = str(Path(path) / "**" / "*.parquet")
    return f"read_parquet({sql_str(path)})"


def view_plan(feature_view: FeatureView, feature_refs: Sequence[str], full_feature_names: bool
              ) -> Optional[ViewPlan | WindowedViewPlan]:
    """The join plan for one view, mirroring the stock store's naming; None if unsupported.
    A windowed view (:func:`feast_plugins.windows.is_windowed`) gets a
    :class:`~feast_plugins.windowed_offline.WindowedViewPlan`, or an error if its events
    source is not local Parquet: only this store computes windows."""
    source = feature_view.batch_source
    source_sql = _parquet_source_sql(source) if source is not None else None
    if is_windowed(feature_view):
        return windowed_view_plan(feature_view, feature_refs, full_feature_names, source_sql)
    if source_sql is None:
        return None
    return ViewPlan(name=feature_view.name, source_sql=source_sql,
                    **view_columns(feature_view, feature_refs, full_feature_names))


def view_columns(feature_view: FeatureView, feature_refs: List[str], full_feature_names: bool) -> dict:
    """A view's columns as a point-in-time join needs them, in its source's names and named
    in the output as the stock stores name them: ``join_keys`` and ``features`` as (source
    column, output name) pairs, ``timestamp_field``, ``created_timestamp_column`` (or
    None), ``ttl_us`` (None: no limit). Shared by the ASOF and the Spark store."""
    source = feature_view.batch_source
    prefix = feature_view.projection.name_to_use()
    requested = [ref.split(":", 1)[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
    base_name = feature_view.projection.name_alias or feature_view.name
    # field_mapping maps a source column to the name Feast uses for it.
    to_source = {new: old for old, new in source.field_mapping.items()}
    features = tuple(
        (to_source.get(f, f), f"{base_name}__{f}" if full_feature_names else f) for f in requested)
    join_key_map = feature_view.projection.join_key_map or {
        e.name: e.name for e in feature_view.entity_columns}
    # An entity-less view joins on time alone. Feast's get_historical_features strips its
    # placeholder entity; a view read straight from the registry still names the
    # placeholder's key, a column that exists neither in the source nor in entity sets.
    join_keys = tuple((to_source.get(k, k), v) for k, v in join_key_map.items() if k != DUMMY_ENTITY_ID)
    created = source.created_timestamp_column or None
    return dict(
        join_keys=join_keys,
        timestamp_field=to_source.get(source.timestamp_field, source.timestamp_field),
        created_timestamp_column=to_source.get(created, created) if created else None,
        features=features,
        ttl_us=_ttl_microseconds(feature_view.ttl),
    )


def entity_timestamp_column(schema: dict[str, str]) -> str:
    """Feast's rule: ``event_timestamp`` if present, else the only timestamp column."""
    if DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL in schema:
        return DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
    candidates = [c for c, t in schema.items() if t.upper().startswith(_TIMESTAMP_TYPES)]
    if len(candidates) != 1:
        raise ValueError(
            f"entity set: cannot tell the event timestamp column among {list(schema)}; "
            f"name it {DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL!r}")
    return candidates[0]


def point_in_time_sql(entity_relation: str, entity_columns: Sequence[str], timestamp_column: str,
                      views: Sequence[ViewPlan], event_timestamps: bool = False) -> str:
    """The point-in-time query: entity columns (timestamp as UTC), then each view's features.

    Each view is one ``ASOF LEFT JOIN`` of a narrow copy of the entity set (row number,
    join keys, timestamp) with the view's rows, put back in entity order; the views' results
    are then laid beside the entity rows with ``POSITIONAL JOIN``. Sorting narrow rows per view
    instead of carrying every column through every join is what keeps 10M rows fast and
    within memory. The row numbers are compared on every row: a misalignment is an error,
    never a silently shifted feature.

    ``entity_relation`` must have a ``__feast_row`` column giving the input order. With
    ``event_timestamps``, each view adds ``__event_timestamp__<view>``: the event time of
    the row its values came from (null when they are missing), for the leakage guard.
    """
    ts_entity = f"CAST({sql_ident(timestamp_column)} AS TIMESTAMPTZ)"
    ets = "e.__feast_ts"
    select = [f"e.{sql_ident(c)}" if c != timestamp_column else f"{ets} AS {sql_ident(c)}"
              for c in entity_columns]
    parts, aligned = [], []
    for i, view in enumerate(views):
        if isinstance(view, WindowedViewPlan):  # aggregations over a window: windowed_offline
            windowed = windowed_sql(entity_relation, ts_entity, view, i, event_timestamps,
                                    EVENT_TIMESTAMP_PREFIX + view.name)
            parts.append(f"POSITIONAL JOIN ({windowed}) m{i}")
            select += [f"m{i}.{sql_ident(out)}" for out in view.outputs]
            if event_timestamps:
                select.append(f"m{i}.{sql_ident(EVENT_TIMESTAMP_PREFIX + view.name)}")
            aligned.append(f"e.__feast_row IS DISTINCT FROM m{i}.__r{i}")
            continue
        key_cols = [f"{sql_ident(src)} AS __k{j}" for j, (src, _) in enumerate(view.join_keys)]
        feat_cols = [f"{sql_ident(src)} AS __v{j}" for j, (src, _) in enumerate(view.features)]
        ts = f"CAST({sql_ident(view.timestamp_field)} AS TIMESTAMPTZ)"
        inner = [*key_cols, f"{ts} AS __ts", *feat_cols]
        if view.created_timestamp_column:
            created = (f"COALESCE(CAST({sql_ident(view.created_timestamp_column)} AS TIMESTAMPTZ),"
                       f" '-infinity'::TIMESTAMPTZ)")
            # Ties on the event timestamp go to the newest created timestamp: the ASOF
            # inequality runs on the pair (event, created) against (entity_ts, +infinity).
            inner.append(f"{{'t': {ts}, 'c': {created}}} AS __ord")
            inequality = f"{{'t': {ets}, 'c': 'infinity'::TIMESTAMPTZ}} >= f.__ord"
            # A pair with a null entity timestamp still compares: keep only true matches.
            conditions = [f"f.__ts <= {ets}"]
        else:
            inequality = f"{ets} >= f.__ts"
            conditions = ["f.__ts IS NOT NULL"]
        if view.ttl_us is not None:
            conditions.append(f"f.__ts >= {ets} - to_microseconds({view.ttl_us})")
        valid = " AND ".join(conditions)
        outputs = [f"CASE WHEN {valid} THEN f.__v{j} END AS {sql_ident(out)}"
                   for j, (_, out) in enumerate(view.features)]
        if event_timestamps:
            outputs.append(f"CASE WHEN {valid} THEN f.__ts END AS {sql_ident(EVENT_TIMESTAMP_PREFIX + view.name)}")
        # A view without join keys (no entities) matches on the time inequality alone.
        narrow = ["__feast_row", *dict.fromkeys(sql_ident(ent) for _, ent in view.join_keys),
                  f"{ts_entity} AS __feast_ts"]
        on = [f"e.{sql_ident(ent)} = f.__k{j}" for j, (_, ent) in enumerate(view.join_keys)]
        parts.append(
            f"POSITIONAL JOIN (SELECT e.__feast_row AS __r{i}, {', '.join(outputs)}\n"
            f"  FROM (SELECT {', '.join(narrow)} FROM {entity_relation}) e\n"
            f"  ASOF LEFT JOIN (SELECT {', '.join(inner)} FROM {view.source_sql}) f"
            f" ON {' AND '.join([*on, inequality])}\n"
            f"  ORDER BY e.__feast_row) m{i}")
        select += [f"m{i}.{sql_ident(out)}" for _, out in view.features]
        if event_timestamps:
            select.append(f"m{i}.{sql_ident(EVENT_TIMESTAMP_PREFIX + view.name)}")
        aligned.append(f"e.__feast_row IS DISTINCT FROM m{i}.__r{i}")
    where = (f"\nWHERE CASE WHEN {' OR '.join(aligned)} THEN error('point-in-time join: rows misaligned')"
             f" ELSE TRUE END") if aligned else ""
    return (
        f"SELECT {', '.join(select)}\n"
        f"FROM (SELECT * EXCLUDE ({sql_ident(timestamp_column)}), {ts_entity} AS __feast_ts"
        f" FROM {entity_relation}) e\n" + "\n".join(parts) + where
    )


def _connect(config: Optional[AsofDuckDBOfflineStoreConfig]) -> duckdb.DuckDBPyConnection:
    con = connect()
    if config is not None and config.memory_limit:
        con.execute(f"SET memory_limit = {sql_str(config.memory_limit)}")
        spill = config.temp_directory or str(Path(tempfile.gettempdir()) / "duckdb_asof_spill")
        con.execute(f"SET temp_directory = {sql_str(spill)}")
    if config is not None and config.threads:
        con.execute(f"SET threads = {int(config.threads)}")
    return con


def register_entity_set(con: duckdb.DuckDBPyConnection, entity_df: EntitySet,
                        materialize: bool = True) -> None:
    """Make the entity set a relation ``__feast_entity`` with a ``__feast_row`` order column.

    A SQL entity set is run (``materialize``) into a temporary table, because DuckDB keeps a
    table's insertion order and so its ``rowid`` numbers the query's rows in their order;
    ``materialize=False`` only declares it (to read its schema).
    """
    if isinstance(entity_df, (pd.DataFrame, pa.Table)):
        table = (pa.Table.from_pandas(entity_df, preserve_index=False)
                 if isinstance(entity_df, pd.DataFrame) else entity_df)
        if "__feast_row" not in table.column_names:
            table = table.append_column("__feast_row", pa.array(np.arange(table.num_rows)))
        con.register("__feast_entity_input", table)
        con.execute("CREATE TEMP VIEW __feast_entity AS SELECT * FROM __feast_entity_input")
    elif is_parquet_path(entity_df) and not any(ch in str(entity_df) for ch in "*?["):
        con.execute(
            "CREATE TEMP VIEW __feast_entity AS SELECT * EXCLUDE (file_row_number),"
            " file_row_number AS __feast_row"
            f" FROM read_parquet({sql_str(entity_df)}, file_row_number = true)")
    elif is_parquet_path(entity_df):  # a glob: files in name order, rows in file order
        con.execute(
            "CREATE TEMP VIEW __feast_entity AS SELECT * EXCLUDE (filename, file_row_number),"
            " dense_rank() OVER (ORDER BY filename) * 4294967296 + file_row_number AS __feast_row"
            f" FROM read_parquet({sql_str(entity_df)}, filename = true, file_row_number = true)")
    elif isinstance(entity_df, str):
        if materialize:
            con.execute(f"CREATE TEMP TABLE __feast_entity_input AS {entity_df}")
            con.execute("CREATE TEMP VIEW __feast_entity AS SELECT *, rowid AS __feast_row"
                        " FROM __feast_entity_input")
        else:
            con.execute(f"CREATE TEMP VIEW __feast_entity AS SELECT *, 0 AS __feast_row FROM ({entity_df})")
    else:
        raise TypeError(f"entity_df must be a pandas DataFrame, a Parquet path or a SQL string, "
                        f"not {type(entity_df).__name__}")


def entity_schema(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM __feast_entity").fetchall()
            if r[0] != "__feast_row"}


def _describe(entity_df: EntitySet) -> str:
    if isinstance(entity_df, (pd.DataFrame, pa.Table)):
        return "(DataFrame)"
    text = str(entity_df)
    return repr(text if len(text) < 200 else text[:200] + "...")


class DeclaredInputsOnly:
    """A python-mode on-demand view whose ``transform_arrow`` is given only the columns it
    declares (its request fields, its source views' features, the join keys): what Feast's
    online read hands it. Everything else is the view itself.

    Feast's python-mode ``transform_arrow`` turns the whole table it gets into Python objects
    (``to_pydict``) before calling the function; after the join that is every feature and
    entity column (the flights training set: ~10 s instead of ~1 s for the one column the
    view reads). The function's answer is the same: it can only read what it declares online.
    """

    def __init__(self, odfv: OnDemandFeatureView, join_keys: set[str]):
        self._odfv = odfv
        columns = set(join_keys)
        columns.update(f.name for source in odfv.source_request_sources.values() for f in source.schema)
        for projection in odfv.source_feature_view_projections.values():
            for feature in projection.features:
                columns.update((feature.name, f"{projection.name}__{feature.name}",
                                f"{projection.name_to_use()}__{feature.name}"))
        self.declared_columns = frozenset(columns)

    def __getattr__(self, name):
        return getattr(self._odfv, name)

    def transform_arrow(self, pa_table: pa.Table, full_feature_names: bool = False) -> pa.Table:
        """Feast's ``OnDemandFeatureView.transform_arrow`` for a python-mode view (the same
        pre- and post-processing of names, the same function called once on a dict of
        lists), given the declared columns only and converted by :func:`python_columns`."""
        keep = [c for c in pa_table.column_names if c in self.declared_columns]
        odfv = self._odfv
        table, cleanup = odfv._preprocess_arrow_table(pa_table.select(keep))
        out = pa.Table.from_pydict(odfv.feature_transformation.udf(python_columns(table)))
        return odfv._postprocess_arrow_table(out, cleanup, full_feature_names)


def python_columns(table: pa.Table) -> dict[str, list]:
    """``table.to_pydict()``, faster: pyarrow turns each UTC timestamp into an aware
    ``datetime`` at ~2.6 µs a value (0.9 s for the flights training set's one column);
    pandas builds the same instants ~6x faster. They carry ``datetime.timezone.utc`` (what
    serving's request parser hands the view online) where pyarrow attaches
    ``ZoneInfo("UTC")``: both are offset 0 with no daylight saving. Nulls stay ``None``."""
    out = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_timestamp(column.type) and column.type.tz == "UTC":
            index = pd.DatetimeIndex(column.to_pandas()).tz_convert(timezone.utc)
            values = index.to_pydatetime().tolist()
            if column.null_count:
                values = [None if missing else v for v, missing in zip(values, index.isna())]
            out[name] = values
        else:
            out[name] = column.to_pylist()
    return out


class AsofRetrievalJob(RetrievalJob):
    """Runs the ASOF JOIN when asked for the result; on-demand views via Feast's ``to_arrow``.

    Each call opens its own in-memory DuckDB connection; ``to_parquet`` streams the result
    to a file without building it in Python.
    """

    def __init__(self, config: RepoConfig, entity_df: EntitySet, views: List[ViewPlan],
                 on_demand_feature_views: List[OnDemandFeatureView], full_feature_names: bool,
                 feature_refs: List[str]) -> None:
        super().__init__()
        self._config = config
        if isinstance(entity_df, pd.DataFrame):  # converted once, shared by every query of this job
            entity_df = pa.Table.from_pandas(entity_df, preserve_index=False)
            entity_df = entity_df.append_column("__feast_row", pa.array(np.arange(entity_df.num_rows)))
        self._entity_df = entity_df
        self._views = views
        self._odfvs = on_demand_feature_views
        join_keys = {entity for view in views for _, entity in view.join_keys}
        #: What Feast's ``to_arrow`` applies: python-mode views see only their declared inputs.
        self._applied_odfvs = [DeclaredInputsOnly(o, join_keys) if o.mode == "python" else o
                               for o in on_demand_feature_views]
        self._full_feature_names = full_feature_names
        self._feature_refs = feature_refs
        self._metadata: Optional[RetrievalMetadata] = None
        #: Add ``__event_timestamp__<view>`` columns (for the leakage guard in training).
        self.include_event_timestamps = False
        # Fail now, not at to_df(): an unreadable entity set or a missing join key column.
        con = self._connection(materialize=False)
        try:
            self._check_columns(entity_schema(con))
        finally:
            con.close()

    def _connection(self, materialize: bool = True) -> duckdb.DuckDBPyConnection:
        con = _connect(self._config.offline_store)
        try:
            register_entity_set(con, self._entity_df, materialize)
        except duckdb.Error as e:
            con.close()
            raise ValueError(f"entity set {_describe(self._entity_df)}: {e}") from e
        return con

    def _check_columns(self, schema: dict[str, str]) -> str:
        ts_col = entity_timestamp_column(schema)
        for view in self._views:
            missing = [ent for _, ent in view.join_keys if ent not in schema]
            if missing:
                raise ValueError(f"entity set lacks join key column(s) {missing} of feature view "
                                 f"{view.name!r}; it has {list(schema)}")
        return ts_col

    def query(self, con: duckdb.DuckDBPyConnection) -> str:
        schema = entity_schema(con)
        ts_col = self._check_columns(schema)
        for view in self._views:
            if isinstance(view, WindowedViewPlan):
                check_events_schema(con, view)
        return point_in_time_sql("__feast_entity", list(schema), ts_col, self._views,
                                 self.include_event_timestamps)

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pa.Table:
        con = self._connection()
        try:
            if self._metadata is None and self._odfvs:
                self._remember_metadata(con)  # Feast's to_arrow reads it to pick ODFV columns
            return con.sql(self.query(con)).to_arrow_table()
        finally:
            con.close()

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_parquet(self, path: str | Path) -> Path:
        """Write the joined rows straight from DuckDB to Parquet (no on-demand views: they need Arrow)."""
        if self._odfvs:
            raise ValueError("to_parquet cannot apply on-demand feature views; use to_arrow()")
        con = self._connection()
        try:
            con.execute(f"COPY ({self.query(con)}) TO {sql_str(path)} (FORMAT parquet)")
        finally:
            con.close()
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
            con = self._connection()
            try:
                self._remember_metadata(con)
            finally:
                con.close()
        return self._metadata

    def _remember_metadata(self, con: duckdb.DuckDBPyConnection) -> None:
        schema = entity_schema(con)
        ts_col = entity_timestamp_column(schema)
        low, high = con.execute(
            f"SELECT min(CAST({sql_ident(ts_col)} AS TIMESTAMPTZ)),"
            f" max(CAST({sql_ident(ts_col)} AS TIMESTAMPTZ)) FROM __feast_entity").fetchone()
        epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
        self._metadata = RetrievalMetadata(
            features=self._feature_refs,
            keys=[c for c in schema if c != ts_col],
            min_event_timestamp=low or epoch,
            max_event_timestamp=high or epoch,
        )

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False,
                timeout: Optional[int] = None) -> None:
        source = storage.to_data_source()
        if not isinstance(source, FileSource):
            raise NotImplementedError(f"persisting to {type(source).__name__} is not supported")
        path = Path(source.path)
        if path.exists() and not allow_overwrite:
            from feast.errors import SavedDatasetLocationAlreadyExists

            raise SavedDatasetLocationAlreadyExists(location=str(path))
        pq.write_table(self.to_arrow(timeout=timeout), path)


def _keyless_pull(pull):
    """The stock store's ``pull``, adding to a pull without join keys Feast's placeholder
    join key column (``__dummy_id``, value ``""``), its rows in time order.

    Feast materializes a view without entities under its placeholder entity: it asks the
    offline store for no join key columns, then reads the placeholder's from the rows.
    Feast's SQL stores add it (``'' AS __dummy_id``); its DuckDB store does not, so
    materializing such a view fails ("Column __dummy_id not found in table"). The online
    store keeps the last row written for a key; in time order (a missing created timestamp
    first, as it loses ties) that is the newest, the row the point-in-time join picks.
    """

    def keyless(config: RepoConfig, data_source, join_key_columns: List[str],
                feature_name_columns: List[str], timestamp_field: str,
                created_timestamp_column: Optional[str] = None, start_date: Optional[datetime] = None,
                end_date: Optional[datetime] = None) -> RetrievalJob:
        job = pull(config=config, data_source=data_source, join_key_columns=join_key_columns,
                   feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
                   created_timestamp_column=created_timestamp_column, start_date=start_date,
                   end_date=end_date)
        if join_key_columns:
            return job
        table = job.table.mutate(**{DUMMY_ENTITY_ID: ibis.literal(DUMMY_ENTITY_VAL)})
        order = [ibis.asc(table[timestamp_field])]
        if created_timestamp_column:
            order.append(ibis.asc(table[created_timestamp_column], nulls_first=True))
        job.table = table.order_by(order)
        return job

    return staticmethod(keyless)


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """The stock DuckDB offline store with ``get_historical_features`` as a DuckDB ASOF JOIN
    (and a view without entities materializable: :func:`_keyless_pull`)."""

    pull_latest_from_table_or_query = _keyless_pull(DuckDBOfflineStore.pull_latest_from_table_or_query)
    pull_all_from_table_or_query = _keyless_pull(DuckDBOfflineStore.pull_all_from_table_or_query)

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df: Union[pd.DataFrame, str],
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        plans = [view_plan(fv, feature_refs, full_feature_names) for fv in feature_views]
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        unsupported = (
            any(p is None for p in plans)
            or any(o.mode == "substrait" for o in odfvs)
            or (filter_by_created_timestamp and any(p.created_timestamp_column for p in plans)))
        if unsupported:
            windowed = [p.name for p in plans if isinstance(p, WindowedViewPlan)]
            if windowed:
                raise ValueError(f"windowed view(s) {windowed} cannot be joined here: this retrieval "
                                 "needs the stock DuckDB store (non-Parquet source, substrait view or "
                                 "filter_by_created_timestamp), which does not compute windows")
            if not isinstance(entity_df, pd.DataFrame):
                raise ValueError("this retrieval needs the stock DuckDB store (non-Parquet source, "
                                 "substrait view or filter_by_created_timestamp), which takes only "
                                 "a pandas DataFrame entity set")
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names, filter_by_created_timestamp)
        return AsofRetrievalJob(config, entity_df, plans, odfvs, full_feature_names, feature_refs)
