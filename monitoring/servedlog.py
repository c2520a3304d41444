"""Reading the served-feature log (``serving/featurelog.py``) back as one frame, and
compacting it.

The server writes one small file per flush (every few seconds under traffic): a year of
them is thousands of files, and opening each costs more than reading its rows (a
full-year replay's log, 4,734 files, took 14 s to read). :func:`compact_served_log`
merges a day's files into one file per schema, ``compact-*.parquet``, whose Parquet
metadata lists the files it holds (``platform.compacted_from``); the originals are removed
after it is in place. A reader skips any file a compacted file lists, so a compaction
stopped between the two steps never counts a row twice, and a new file written
meanwhile is simply compacted next time. Files that cannot be read as a served log are
left where they are (the reader names and counts them).
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring.errors import MonitoringError

#: Columns every log file has besides the request fields and the features.
LOG_COLUMNS = ("request_id", "entity_index", "served_at", "endpoint", "model_version", "feature_service",
               "missing_features", "stale_features", "probability")

#: Parquet metadata key of a compacted file: the JSON list of the file names it holds.
COMPACTED_FROM = b"platform.compacted_from"


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
    read = _read_all(files)
    held = _held_by_compacted(files, read)
    for path, table in zip(files, read):
        if path in held:  # a compaction stopped before removing it: its rows are in the compacted file
            continue
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


def compact_served_log(root: Path, event_timestamp: str, files: Iterable[Path] | None = None,
                       say: Callable[[str], None] | None = None) -> dict:
    """Merge the served-log files under ``root`` (every ``date=*`` directory; or only
    ``files``) into one ``compact-*.parquet`` per day and schema, then remove what was
    merged (see the module doc). A file :func:`read_served_log` would skip (unreadable,
    a fixed column missing, times that are not instants, a ``view__feature`` or
    ``age__view`` column that is not numbers) is left in place, so the reader still names
    it. Return counts: ``{"files_in", "files_out", "rows", "left": [files left in
    place]}``. One compaction at a time per ``root`` (a lock file); safe beside a server
    writing new files."""
    root = Path(root)
    out = {"files_in": 0, "files_out": 0, "rows": 0, "left": []}
    if not root.is_dir():
        return out
    with _compaction_lock(root):
        chosen = sorted(root.glob("date=*/*.parquet")) if files is None else sorted(Path(f) for f in files)
        read = _read_all(chosen)
        held = _held_by_compacted(chosen, read)
        by_group: dict[tuple, list[tuple[Path, list[str], pa.Table]]] = {}
        for path, table in zip(chosen, read):
            if path in held:
                path.unlink(missing_ok=True)  # the end of a compaction that stopped before it
                continue
            if isinstance(table, str) or _checked(
                    table, [c for c in table.column_names if "__" in c], event_timestamp)[1]:
                out["left"].append(str(path))
                continue
            # Each member: its file, the names it stands for (a compacted file: also its inputs), its rows.
            names = [path.name, *_compacted_from(table.schema.metadata)]
            schema = table.schema.remove_metadata()
            by_group.setdefault((path.parent, schema.to_string()), []).append(
                (path, names, table.replace_schema_metadata()))
        for (directory, _), members in sorted(by_group.items(), key=lambda item: str(item[0][0])):
            if len(members) < 2 and members[0][0].name.startswith("compact-"):
                continue  # already one compacted file
            names = [name for _, held, _ in members for name in held]
            merged = pa.concat_tables([t for _, _, t in members])
            merged = merged.replace_schema_metadata({COMPACTED_FROM: json.dumps(names).encode()})
            name = f"compact-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = directory / f".{name}.tmp"
            try:
                pq.write_table(merged, tmp)
                os.replace(tmp, directory / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            for path, _, _ in members:
                path.unlink(missing_ok=True)
            out["files_in"] += len(members)
            out["files_out"] += 1
            out["rows"] += merged.num_rows
    if say and out["files_in"]:
        say(f"served log {root}: {out['files_in']:,} file(s) compacted into {out['files_out']:,} "
            f"({out['rows']:,} rows)" + (f"; {len(out['left'])} unreadable left in place" if out["left"] else ""))
    return out


@contextmanager
def _compaction_lock(root: Path):
    with open(root / ".compaction.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compacted_from(metadata) -> list[str]:
    raw = (metadata or {}).get(COMPACTED_FROM)
    try:
        names = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _held_by_compacted(files: Sequence[Path], read: Sequence) -> set[Path]:
    """The files a readable compacted file among ``files`` lists (in its own directory)."""
    held = set()
    for path, table in zip(files, read):
        if path.name.startswith("compact-") and not isinstance(table, str):
            held.update(path.parent / name for name in _compacted_from(table.schema.metadata))
    return held


def _read_all(files: Sequence[Path]) -> list:
    # Arrow reads without the GIL: files are read on every core, checked in order.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(_read, files))


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
