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
from datetime import datetime
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
    #: The windowed views (StreamFeatureViews with aggregations) it feeds events to
    #: (``windowed_online.py``): their rows are events, checked and written apart.
    windowed: tuple = ()


def _resolve(store, settings: Settings, names: tuple[str, ...]) -> list[PushTarget]:
    """The push sources ``names`` as ``store``'s registry defines them (:class:`PushTarget`)."""
    from feast.data_source import PushSource

    from feast_plugins.windowed_online import is_windowed
    from validation.feast_contracts import view_contract

    views = store.list_feature_views()
    windowed = [v for v in store.list_stream_feature_views() if is_windowed(v)]
    entities = {e.name: e for e in store.list_entities()}
    targets = []
    for name in names:
        fed = tuple(v for v in views if isinstance(v.stream_source, PushSource) and v.stream_source.name == name)
        fed_events = tuple(v for v in windowed
                           if isinstance(v.stream_source, PushSource) and v.stream_source.name == name)
        if not fed and not fed_events:
            raise PushError(f"push source {name!r}: no feature view in the registry reads it "
                            "(is it defined in feature_repo/ and applied?)")
        batch = (fed or fed_events)[0].stream_source.batch_source
        path = Path(getattr(batch, "path", "") or "")
        if not str(path):
            raise PushError(f"push source {name!r}: its batch source {batch.name!r} is not a file table")
        if not path.is_absolute():  # Feast resolves relative file paths against the repository
            path = settings.feature_repo / path
        columns: dict[str, tuple[str, bool]] = {}
        for view in fed:
            for column, rule in view_contract(view, entities).columns.items():
                columns[column] = (rule.dtype, rule.nullable and columns.get(column, ("", True))[1])
        # A source of events only: its rows are selected by when they became known.
        timestamp_field = batch.timestamp_field if fed else "known_at"
        targets.append(PushTarget(name, fed, path, timestamp_field, columns, fed_events))
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


def windowed_sources(store) -> tuple[str, ...]:
    """The push sources feeding windowed views (their rows are events), by name; cached per
    store as :func:`push_targets` is."""
    ttl = store.config.registry.cache_ttl_seconds
    now = time.monotonic()
    with _LOCK:
        cached = _TARGETS.get(store, {}).get("windowed sources")
        if cached is not None and (ttl == 0 or now - cached[0] < ttl):
            return cached[1]
    from feast.data_source import PushSource

    from feast_plugins.windowed_online import is_windowed

    names = tuple(sorted({v.stream_source.name for v in store.list_stream_feature_views()
                          if is_windowed(v) and isinstance(v.stream_source, PushSource)}))
    with _LOCK:
        _TARGETS.setdefault(store, {})["windowed sources"] = (now, names)
    return names


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


def push_frames(store, targets: list[PushTarget], frames: Mapping[str, object],
                clock: datetime | None = None) -> dict[str, int]:
    """Push each push source's rows online (``frames``: push source -> DataFrame or Arrow
    table); all are checked (:func:`check_rows`, and :func:`check_events` for the events of
    windowed views) before any is written. Returns rows per push source.

    ``clock``: the push's instant (default: the wall clock; the replay passes its own): an
    event known after it is refused with its whole batch. The events of every windowed view
    are written in one transaction of the online store (``write_events``)."""
    by_name = {t.name: t for t in targets}
    unknown = [name for name in frames if name not in by_name]
    if unknown:
        raise PushError(f"push source(s) {unknown} are not among {list(by_name)}")
    tables = {name: _as_arrow(frame) for name, frame in frames.items()}
    for name, table in tables.items():
        check_rows(by_name[name], table)
        check_events(by_name[name], table, clock)
    provider = store._get_provider()
    events = [(view, table) for name, table in tables.items() if table.num_rows for view in by_name[name].windowed]
    if events:
        online = provider.online_store
        if not hasattr(online, "write_events"):
            raise PushError(f"online store {type(online).__name__} cannot hold windowed views "
                            f"({sorted({v.name for v, _ in events})}): use the packed SQLite store or "
                            "feast_plugins.windowed_redis.WindowedRedisOnlineStore")
        online.write_events(store.config, events)
    counts = {}
    for name, table in tables.items():
        if table.num_rows and by_name[name].views:
            frame = table.to_pandas()
            for view in by_name[name].views:
                provider.ingest_df(view, frame)  # what store.push(name, frame, to=ONLINE) calls
        counts[name] = table.num_rows
    return counts


# -- windowed views' events (feast_plugins/windowed_online.py) ------------------------------

def check_events(target: PushTarget, table: pa.Table, clock: datetime | None = None) -> None:
    """Raise :class:`PushError` naming the push source and column unless ``table``'s rows are
    events every windowed view of ``target`` can take (keys, ``event_timestamp``,
    ``known_at``, value types) and none is known after ``clock`` (default: now)."""
    if not target.windowed:
        return
    from feast_plugins import windowed_online

    now = windowed_online.micros(clock) if clock is not None else time.time_ns() // 1000
    layouts = [windowed_online.layout_of(view) for view in target.windowed]
    # Views of different keys: an event may lack one view's key (a departure without a tail
    # number counts for its origin), never every view's.
    several = len({layout.join_keys for layout in layouts}) > 1
    for layout in layouts:
        try:
            windowed_online.check_events(target.name, layout, table, now, null_keys=several)
        except windowed_online.EventError as e:
            raise PushError(str(e)) from None
    if several and table.num_rows:
        import pyarrow.compute as pc

        keyless = None
        for layout in layouts:
            missing = None
            for k in layout.join_keys:
                null = pc.is_null(table.column(k))
                missing = null if missing is None else pc.or_(missing, null)
            keyless = missing if keyless is None else pc.and_(keyless, missing)
        n = pc.sum(keyless).as_py() or 0
        if n:
            columns = sorted({k for layout in layouts for k in layout.join_keys})
            raise PushError(f"push source {target.name!r}: {n} event(s) have no key of any windowed view it "
                            f"feeds (columns {columns} are null); nothing of the batch was written")


def view_events(view, end: datetime, repo: Path, sources: Path | None = None) -> pa.Table:
    """The events of windowed ``view``'s batch source (its Parquet table; a relative path is
    under ``repo``; ``sources``: the table of the same name in this directory instead)
    known at or before ``end``, checked (:func:`check_events`)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from feast_plugins import windowed_online

    path = Path(getattr(view.batch_source, "path", "") or "")
    if not str(path):
        raise PushError(f"windowed view {view.name!r}: its batch source is not a file table")
    if not path.is_absolute():
        path = Path(repo) / path
    if sources is not None:
        path = Path(sources) / path.name
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise PushError(f"windowed view {view.name!r}: cannot read its events table {path}: {e}") from e
    target = PushTarget(view.stream_source.name, (), path, windowed_online.KNOWN_AT, {}, (view,))
    layout = windowed_online.layout_of(view)
    if all(k in table.column_names for k in layout.join_keys):  # events without this view's key are not its
        table = windowed_online.keyed(layout, table)
    if windowed_online.KNOWN_AT in table.column_names:
        known = pc.cast(table.column(windowed_online.KNOWN_AT), pa.timestamp("us", tz="UTC"))
        table = table.filter(pc.less_equal(known, pa.scalar(end, pa.timestamp("us", tz="UTC"))))
    check_events(target, table, end)
    return table


def materialize_events(settings: Settings, store, views, end: datetime, sources: Path | None = None) -> dict[str, int]:
    """Load windowed ``views``' events known up to ``end`` from their batch sources' tables
    into the online store, in one transaction: each key's state becomes what pushing every
    one of those events would leave (states depend on the events only, not on their
    batches), plus the events pushed since ``end``. Idempotent: an event already pushed, or
    materialized before, is counted once. ``sources``: read the tables of the same names from
    this directory instead of the registry's paths. Returns events per view."""
    batches = [(view, view_events(view, end, settings.feature_repo, sources)) for view in views]
    online = store._get_provider().online_store
    if not hasattr(online, "write_events"):
        raise PushError(f"online store {type(online).__name__} cannot hold windowed views "
                        f"{[v.name for v in views]}")
    online.write_events(store.config, batches, until=end)
    return {view.name: table.num_rows for view, table in batches}
