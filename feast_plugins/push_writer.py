"""Writing rows online through Feast push sources, the way ``FeatureStore.push`` does, faster.

:func:`push_targets` resolves push sources from the registry: the feature views each
feeds, its batch source's Parquet table, the columns and types those views declare.
:func:`push_frames` checks every push source's rows against those columns
(:func:`check_rows`) before any is written, then writes them through the provider's
``ingest_df``: the call ``store.push(..., to=PushMode.ONLINE)`` ends in, so the same
conversion and online store write (``tests/feast_plugins/test_push_writer.py`` checks both
store the same bytes).

**Why not** ``store.push`` **itself.** ``FeatureStore.push`` looks the push source's
views up in the registry on every call (every feature view deserialized, three times)
and converts through pandas: ~30-60 ms per call here, minutes over a year of hourly
pushes. Here the views are resolved once per store (again after Feast's own registry
cache TTL, ``cache_ttl_seconds``).

**Bad input.** Every frame is checked against the columns and types its feature views
declare (the contract ``validation.feast_contracts`` derives from them: join keys and
event timestamp present and non-null, each feature of its type): a failure raises
:class:`PushError` naming the push source and the column, and no push source is written.
The Feast internals used here are listed in ``compat.py``.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import pyarrow as pa

from core.errors import PlatformError
from core.settings import Settings


class PushError(PlatformError):
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
    """The push sources ``names`` as ``store``'s registry defines them (:class:`PushTarget`)."""
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
