"""Push fresh feature rows online as time passes, through Feast push sources.

A use case names push sources (``UseCase.push_sources``): Feast ``PushSource`` objects
whose ``batch_source`` is a source table built by the feature pipelines. Training and the
nightly materialization read that table; :func:`push_window` sends the rows of each new
window to the online store as soon as it closes, so the online values can be fresher
than the nightly batch while coming from the very same SQL (never a second formula).

**Why reading the built table is right.** A row of such a table must hold only what was
known at its own event time (``origin_recent.sql``: the departures up to its hour; the
weather: the observation of its hour). Then the rows with event time in ``(start, end]``
of the table built from the data available at ``end`` are exactly what running the SQL
at ``end`` would give for that window; the feature pipelines' contracts already checked
the table. Reading it costs milliseconds, where re-running the SQL would cost a second.

**Why not** ``store.push`` **itself.** ``FeatureStore.push`` looks the push source's
views up in the registry on every call (every feature view deserialized, three times)
and converts through pandas: ~30-60 ms per call here, minutes over a year of hourly
pushes. :func:`push_frames` resolves the views once (again after Feast's own registry
cache TTL, ``cache_ttl_seconds``) and writes through the provider's ``ingest_df`` — the
call ``store.push(..., to=PushMode.ONLINE)`` ends in, so the same conversion and online
store write (``tests/pipeline/test_push.py`` checks both store the same bytes).

**Bad input.** Every frame is checked against the columns and types its feature views
declare (the contract ``validation.feast_contracts`` derives from them: join keys and
event timestamp present and non-null, each feature of its type) before anything is
written: a failure raises :class:`PushError` naming the push source and the column, and
no push source is written.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.settings import Settings
from core.usecase import UseCase
from pipeline.errors import PipelineError


class PushError(PipelineError):
    """A push source's rows cannot be pushed; the message names the push source and column."""


@dataclass(frozen=True)
class PushTarget:
    """One push source: the views it feeds, the table behind it, the columns they need."""

    name: str
    views: tuple  # the FeatureViews whose stream source it is
    path: Path  # its batch source's Parquet table
    timestamp_field: str
    #: column -> (dtype as in ``validation.contracts.ARROW_TYPES``, nullable)
    columns: Mapping[str, tuple[str, bool]]


def _resolve(store, settings: Settings, names: tuple[str, ...]) -> list[PushTarget]:
    from feast.data_source import PushSource

    from validation.feast_contracts import view_contract

    views = store.list_feature_views()
    entities = {e.name: e for e in store.list_entities()}
    targets = []
    for name in names:
        fed = tuple(v for v in views if isinstance(v.stream_source, PushSource) and v.stream_source.name == name)
        if not fed:
            raise PushError(f"push source {name!r}: no feature view in the registry reads it "
                            "(is it defined in feature_repo/ and applied?)")
        batch = fed[0].stream_source.batch_source
        path = Path(getattr(batch, "path", "") or "")
        if not str(path):
            raise PushError(f"push source {name!r}: its batch source {batch.name!r} is not a file table")
        if not path.is_absolute():  # Feast resolves relative file paths against the repository
            path = settings.feature_repo / path
        columns: dict[str, tuple[str, bool]] = {}
        for view in fed:
            for column, rule in view_contract(view, entities).columns.items():
                columns[column] = (rule.dtype, rule.nullable and columns.get(column, ("", True))[1])
        targets.append(PushTarget(name, fed, path, batch.timestamp_field, columns))
    return targets


_TARGETS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def push_targets(store, settings: Settings, names: tuple[str, ...]) -> list[PushTarget]:
    """The push sources ``names`` as resolved from ``store``'s registry; cached per store
    for as long as Feast caches its registry (``cache_ttl_seconds``; 0 = until restart)."""
    ttl = store.config.registry.cache_ttl_seconds
    now = time.monotonic()
    with _LOCK:
        cached = _TARGETS.get(store, {}).get(names)
        if cached is not None and (ttl == 0 or now - cached[0] < ttl):
            return cached[1]
    targets = _resolve(store, settings, names)
    with _LOCK:
        _TARGETS.setdefault(store, {})[names] = (now, targets)
    return targets


def _type_ok(field: pa.Field, dtype: str) -> bool:
    from validation.contracts import ARROW_TYPES

    if dtype == "timestamp":  # any unit, but an instant: timezone-aware
        return pa.types.is_timestamp(field.type) and field.type.tz is not None
    if dtype == "string":
        return pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    return field.type == ARROW_TYPES[dtype]


def check_rows(target: PushTarget, table: pa.Table) -> None:
    """Raise :class:`PushError` naming the push source and column if ``table`` lacks a
    column its views need, has one of another type, or a null key or timestamp."""
    schema = table.schema
    for column, (dtype, nullable) in target.columns.items():
        index = schema.get_field_index(column)
        if index < 0:
            raise PushError(f"push source {target.name!r}: column {column!r} is missing "
                            f"(needed by feature view(s) {[v.name for v in target.views]}; "
                            f"the rows have {schema.names})")
        field = schema.field(index)
        if not _type_ok(field, dtype):
            raise PushError(f"push source {target.name!r}: column {column!r} has type {field.type}, "
                            f"expected {dtype}" + (" with a time zone" if dtype == "timestamp" else ""))
        if not nullable and table.column(index).null_count:
            raise PushError(f"push source {target.name!r}: column {column!r} has "
                            f"{table.column(index).null_count} null value(s); it is a key or the event time")


def _as_arrow(frame) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pd.DataFrame):
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise TypeError(f"rows must be a pandas DataFrame or an Arrow table, not {type(frame).__name__}")


def push_frames(store, targets: list[PushTarget], frames: Mapping[str, object]) -> dict[str, int]:
    """Push each push source's rows online (``frames``: push source -> DataFrame or Arrow
    table); all are checked (:func:`check_rows`) before any is written. Returns rows per
    push source."""
    by_name = {t.name: t for t in targets}
    unknown = [name for name in frames if name not in by_name]
    if unknown:
        raise PushError(f"push source(s) {unknown} are not among {list(by_name)}")
    tables = {name: _as_arrow(frame) for name, frame in frames.items()}
    for name, table in tables.items():
        check_rows(by_name[name], table)
    provider = store._get_provider()
    counts = {}
    for name, table in tables.items():
        if table.num_rows:
            frame = table.to_pandas()
            for view in by_name[name].views:
                provider.ingest_df(view, frame)  # what store.push(name, frame, to=ONLINE) calls
        counts[name] = table.num_rows
    return counts


@dataclass
class _Loaded:
    signature: tuple
    table: pa.Table  # sorted by event time
    micros: np.ndarray  # event time, microseconds since the epoch (UTC), ascending


_TABLES: dict[tuple[str, Path], _Loaded] = {}


def _signature(path: Path) -> tuple:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PushError(f"{path} is missing: run the feature pipelines (`pipeline features`) first") from None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def source_rows(target: PushTarget) -> _Loaded:
    """The push source's table, read (and checked) once per version of the file."""
    key = (target.name, target.path)
    signature = _signature(target.path)
    with _LOCK:
        loaded = _TABLES.get(key)
    if loaded is not None and loaded.signature == signature:
        return loaded
    try:
        table = pq.read_table(target.path)
    except (OSError, pa.ArrowInvalid) as e:
        raise PushError(f"push source {target.name!r}: cannot read {target.path}: {e}") from e
    check_rows(target, table)
    table = table.take(pc.sort_indices(table, [(target.timestamp_field, "ascending")]))
    stamps = pc.cast(table.column(target.timestamp_field), pa.timestamp("us", tz="UTC"))
    loaded = _Loaded(signature, table, pc.cast(stamps, pa.int64()).to_numpy())
    with _LOCK:
        _TABLES[key] = loaded
    return loaded


def _micros(when: datetime, what: str) -> int:
    if when.tzinfo is None:
        raise PushError(f"push window {what} {when.isoformat()} has no time zone")
    return int(pd.Timestamp(when).value // 1000)


def window_rows(target: PushTarget, start: datetime, end: datetime) -> pa.Table:
    """The push source's rows with event time in ``(start, end]``."""
    loaded = source_rows(target)
    low, high = np.searchsorted(loaded.micros, [_micros(start, "start"), _micros(end, "end")], side="right")
    return loaded.table.slice(low, high - low)


def push_window(settings: Settings, use_case: UseCase, store, start: datetime, end: datetime,
                sources: Path | None = None) -> dict:
    """Push online, for every push source the use case declares, the rows with event time
    in ``(start, end]``, from its source table as built from the data available at
    ``end``. Returns ``{push source: rows pushed}``. Nothing is written if any source's
    rows are bad (:class:`PushError` names the push source and column).

    Call it as time passes, e.g. every hour with ``(h - 1 h, h]``, before answering
    requests after ``h``; the source tables must have been built from data reaching
    ``end`` (a window past a table's last row pushes nothing from it). ``sources``: read
    the tables of the same names from this directory instead of the registry's paths.
    """
    if end <= start:
        raise PushError(f"push window: end {end.isoformat()} is not after start {start.isoformat()}")
    targets = push_targets(store, settings, tuple(use_case.push_sources))
    if sources is not None:  # the same tables, built elsewhere (e.g. a replay's whole-history stream)
        targets = [replace(t, path=Path(sources) / t.path.name) for t in targets]
    frames = {t.name: window_rows(t, start, end) for t in targets}
    return push_frames(store, targets, frames)
