"""Reading the served-feature log (``serving/featurelog.py``) back as one frame."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring.errors import MonitoringError

#: Columns every log file has besides the request fields and the features.
LOG_COLUMNS = ("request_id", "entity_index", "served_at", "endpoint", "model_version", "feature_service",
               "missing_features", "stale_features", "probability")


def read_served_log(root: Path, features: Sequence[str], event_timestamp: str,
                    start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
    """Every logged row (whole files only: ``*.parquet``) whose request time lies in
    [start, end), sorted by serving time. The frame is empty when nothing was logged.

    A file that cannot be read as a served log (truncated or not Parquet, a fixed column
    missing, a request or serving time that is not an instant, a request time missing, a
    feature column that is not numbers) is skipped and listed, with why, in
    ``frame.attrs["skipped"]`` (``{"file", "error"}`` each): the report counts and names
    it, and the other files are still monitored. A readable file that lacks a feature of
    the current FeatureService is an error naming the file: its rows cannot be compared
    feature by feature, and skipping them would hide traffic.

    Files are read and checked as Arrow tables and turned into one frame at the end (a
    year of daily files in one conversion).
    """
    files = sorted(root.glob("date=*/*.parquet")) if root.is_dir() else []
    tables, skipped = [], []
    # Arrow reads without the GIL: files are read on every core, checked in order.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        read = list(pool.map(_read, files))
    for path, table in zip(files, read):
        if isinstance(table, str):
            skipped.append({"file": str(path), "error": table})
            continue
        names = set(table.column_names)
        if any(f not in names for f in features):
            missing = [c for c in (*LOG_COLUMNS, event_timestamp, *features) if c not in names]
            raise MonitoringError(f"{path}: served-feature log file lacks column(s) {missing}")
        table, problem = _checked(table, features, event_timestamp)
        if problem:
            skipped.append({"file": str(path), "error": problem})
            continue
        tables.append(table)
    if not tables:
        empty = pd.DataFrame(columns=[*LOG_COLUMNS, event_timestamp, *features])
        empty.attrs["skipped"] = skipped
        return empty
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as e:
        raise MonitoringError(f"{root}: served-log files of incompatible schemas: {e}") from None
    when = table.column(event_timestamp)
    keep = None
    if start is not None:
        keep = pc.greater_equal(when, pa.scalar(pd.Timestamp(start).to_pydatetime(), when.type))
    if end is not None:
        before = pc.less(when, pa.scalar(pd.Timestamp(end).to_pydatetime(), when.type))
        keep = before if keep is None else pc.and_(keep, before)
    if keep is not None:
        table = table.filter(keep)
    order = pc.sort_indices(table, [("served_at", "ascending"), ("request_id", "ascending"),
                                    ("entity_index", "ascending")])
    if not np.array_equal(order.to_numpy(), np.arange(len(order))):  # the files' order usually is it
        table = table.take(order)
    # List columns (missing_features, stale_features) stay Arrow-backed (pd.ArrowDtype):
    # a Python list per row would cost more than every other column together.
    log = table.to_pandas(types_mapper=lambda kind: pd.ArrowDtype(kind) if pa.types.is_list(kind) else None)
    log.attrs["skipped"] = skipped
    return log


_UTC = pa.timestamp("us", "UTC")


def flat_lists(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A list column (``stale_features``: Arrow-backed as read here, or Python lists as in
    a frame built by hand) as (row position, item) pairs; null lists and items left out."""
    if isinstance(column.dtype, pd.ArrowDtype):
        lists = pa.array(column.array)
        rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        items = pc.list_flatten(lists)
        keep = pc.is_valid(items).to_numpy(zero_copy_only=False)
        return rows[keep], np.asarray(items.to_numpy(zero_copy_only=False), dtype=object)[keep]
    flat = pd.Series(column.to_numpy(), dtype=object).explode().dropna()
    return flat.index.to_numpy(dtype=np.int64), flat.astype(str).to_numpy(dtype=object)


def _read(path: Path) -> pa.Table | str:
    """The file as a table, or why it cannot be read. Read as one file (``ParquetFile``):
    ``pq.read_table`` goes through the datasets API, whose set-up per call costs more than
    reading a small log file."""
    try:
        with pq.ParquetFile(path) as f:
            return f.read()
    except (OSError, ValueError, pa.ArrowException) as e:
        return f"unreadable: {type(e).__name__}: {str(e)[:200]}"


def _checked(table: pa.Table, features: Sequence[str], event_timestamp: str) -> tuple[pa.Table, str | None]:
    """The table with its instants as UTC timestamps, or why it is not a served log."""
    names = set(table.column_names)
    missing = [c for c in (*LOG_COLUMNS, event_timestamp) if c not in names]
    if missing:
        return table, f"lacks column(s) {missing}"
    for column in dict.fromkeys(("served_at", event_timestamp)):
        values = table.column(column)
        if not pa.types.is_timestamp(values.type):
            try:
                values = pa.chunked_array([pa.array(pd.to_datetime(values.to_pandas(), utc=True), type=_UTC)])
            except (ValueError, TypeError, pa.ArrowException) as e:
                return table, f"{column} is not instants: {str(e)[:200]}"
        elif values.type.tz is None:
            values = pc.assume_timezone(values, "UTC")
        table = table.set_column(table.schema.get_field_index(column), column, values.cast(_UTC))
        if values.null_count:
            what = "a request time" if column == event_timestamp else "a serving time"
            return table, f"{values.null_count} row(s) without {what} ({column})"
    for feature in features:
        kind = table.schema.field(feature).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)
                or pa.types.is_boolean(kind)):
            return table, f"feature column {feature} is {kind}, not numbers"
    return table, None
