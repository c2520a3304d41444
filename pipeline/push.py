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

The rows are written by ``feast_plugins.push_writer`` (checked against the views'
contracts first; bad rows raise :class:`~feast_plugins.push_writer.PushError` naming the
push source and column, and nothing is written).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.settings import Settings
from core.usecase import UseCase
from feast_plugins.push_writer import PushError, PushTarget, check_rows, push_frames, push_targets, windowed_sources
from pipeline.write_records import PushRecorder, records_dir

_LOCK = threading.Lock()


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
                sources: Path | None = None, written_at: datetime | None = None,
                records: Path | None = None) -> dict:
    """Push online, for every push source the use case declares, the rows with event time
    in ``(start, end]``, from its source table as built from the data available at
    ``end``. Returns ``{push source: rows pushed}``. Nothing is written if any source's
    rows are bad (:class:`PushError` names the push source and column).

    Call it as time passes, e.g. every hour with ``(h - 1 h, h]``, before answering
    requests after ``h``; the source tables must have been built from data reaching
    ``end`` (a window past a table's last row pushes nothing from it). ``sources``: read
    the tables of the same names from this directory instead of the registry's paths.

    Each call appends a write record per view fed, failed or not (``pipeline/write_records.py``),
    under ``records`` (default: ``settings``' DATA_DIR), stamped ``written_at`` (default:
    the wall clock after the write; the replay passes its clock).
    """
    if end <= start:
        raise PushError(f"push window: end {end.isoformat()} is not after start {start.isoformat()}")
    with PushRecorder(records or records_dir(settings), use_case.push_sources, start, end, written_at) as recorder:
        targets = recorder.targets = push_targets(store, settings, tuple(use_case.push_sources))
        if sources is not None:  # the same tables, built elsewhere (e.g. a replay's whole-history stream)
            targets = recorder.targets = [replace(t, path=Path(sources) / t.path.name) for t in targets]
        frames = recorder.frames = {t.name: window_rows(t, start, end) for t in targets}
        return push_frames(store, targets, frames)


# -- events of windowed views (feast_plugins/windowed_online.py) -----------------------------

def push_events(settings: Settings, store, start: datetime, end: datetime, sources: Path | None = None) -> dict:
    """Push online every windowed view's events known in ``(start, end]``, at the clock
    ``end`` (an event known later is refused), from the events tables (``sources``: the
    tables of the same names in this directory instead of the registry's paths). One
    transaction for all of them; nothing is written if any is bad
    (:class:`~feast_plugins.push_writer.PushError` names the source and column). Returns
    ``{push source: events pushed}``."""
    if end <= start:
        raise PushError(f"push events: end {end.isoformat()} is not after start {start.isoformat()}")
    names = windowed_sources(store)
    if not names:
        return {}
    targets = push_targets(store, settings, names)
    if sources is not None:
        targets = [replace(t, path=Path(sources) / t.path.name) for t in targets]
    frames = {t.name: window_rows(t, start, end) for t in targets}
    return push_frames(store, targets, frames, clock=end)
