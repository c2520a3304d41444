"""Write records: one line per online write of a feature view, so the platform can say when
each value became servable (write lag) and which writes failed.

Every push batch (:func:`pipeline.push.push_window`) and every materialization
(:func:`pipeline.materialize.materialize`) appends one record per feature view it wrote, or
tried to write, to ``DATA_DIR/records/writes/writes-YYYY-MM-DD.jsonl`` (the UTC day of
``written_at``). A record is one JSON object on one line:

=====================  ===========================================================================
``record_id``          unique (hex)
``kind``               ``push`` or ``materialize``
``view``               the feature view (null only for a failed push whose push source could
                       not be resolved to its views)
``source``             the push source (push) or the view's batch source (materialize)
``window_start``       the event-time window written: a push writes ``(window_start,
``window_end``         window_end]``, a materialization ``[window_start, window_end]``
``rows``               rows written for the view (push: the batch's rows; materialize: the
                       entity keys given a value, Feast writing each key's newest row)
``keys``               distinct entity keys among them
``min_event_timestamp`` / ``max_event_timestamp``  of the rows written (null: none)
``max_known_at``       the newest instant a written value became known: the source's created
                       timestamp column when it declares one, else the event timestamp (this
                       project's tables hold at each event time only what was known then)
``written_at``         when the values became servable: the clock right after the write, the
                       wall clock or the clock the caller passes (the replay's)
``ok``                 false: the write failed and none of these values can be assumed online
``error``              why it failed (null when ok)
``seconds``            wall-clock seconds the write took
=====================  ===========================================================================

Instants are ISO-8601 strings in UTC. For a failed write, ``rows`` .. ``max_known_at``
describe what was attempted.

**Atomic.** The records of one call are appended with a single ``write`` on a file opened
``O_APPEND``: concurrent writers never interleave within a line. A crash mid-write can only
leave an unterminated last line; :func:`read_write_records` skips it (and any line that is
not a record), names the file and line, and counts it (``frame.attrs["skipped"]``).

Write lag of a record: ``written_at - max_known_at`` (``monitoring.freshness.write_lag``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from core.errors import PlatformError
from core.settings import Settings

log = logging.getLogger(__name__)

#: The kinds of write.
KINDS = ("push", "materialize")
#: The columns of a record, in order (:func:`read_write_records`' frame has exactly these).
COLUMNS = ("record_id", "kind", "view", "source", "window_start", "window_end", "rows", "keys",
           "min_event_timestamp", "max_event_timestamp", "max_known_at", "written_at", "ok", "error", "seconds")
#: The columns holding instants.
TIMES = ("window_start", "window_end", "min_event_timestamp", "max_event_timestamp", "max_known_at", "written_at")


class WriteRecordError(PlatformError):
    """A write succeeded but its record could not be appended (the records directory is
    unwritable, the disk full): said loudly rather than lost."""


def records_dir(settings: Settings) -> Path:
    """Where ``settings``' write records live."""
    return settings.data_dir / "records" / "writes"


def _iso(value) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat()


def record(kind: str, view: str | None, source: str | None, window_start, window_end, rows: int, keys: int,
           min_event_timestamp, max_event_timestamp, max_known_at, written_at: datetime, ok: bool,
           error: str | None = None, seconds: float = 0.0) -> dict:
    """One record (the module's fields), instants as ISO-8601 UTC strings."""
    if kind not in KINDS:
        raise ValueError(f"write record: kind {kind!r} must be one of {KINDS}")
    return {"record_id": uuid.uuid4().hex, "kind": kind, "view": view, "source": source,
            "window_start": _iso(window_start), "window_end": _iso(window_end), "rows": int(rows), "keys": int(keys),
            "min_event_timestamp": _iso(min_event_timestamp), "max_event_timestamp": _iso(max_event_timestamp),
            "max_known_at": _iso(max_known_at), "written_at": _iso(written_at), "ok": bool(ok),
            "error": None if ok else (error or "failed"), "seconds": round(float(seconds), 6)}


def append_records(directory: Path, records: Sequence[dict]) -> Path | None:
    """Append ``records`` (from :func:`record`) to the day file of the first one's
    ``written_at``, in one write (the module's atomicity). Returns the file (None: nothing
    to append)."""
    if not records:
        return None
    day = records[0]["written_at"][:10]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"writes-{day}.jsonl"
    data = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write (a signal, a nearly full disk): the rest follows
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
    return path


def now() -> datetime:
    """The wall clock, UTC (the default ``written_at``)."""
    return datetime.now(timezone.utc)


def _parse(line: str) -> dict:
    """A record from one line; ValueError naming what is wrong."""
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    missing = [c for c in COLUMNS if c not in value]
    if missing:
        raise ValueError(f"lacks field(s) {missing}")
    if value["kind"] not in KINDS:
        raise ValueError(f"kind {value['kind']!r} is not one of {KINDS}")
    if not isinstance(value["ok"], bool):
        raise ValueError(f"ok {value['ok']!r} is not true/false")
    if value["written_at"] is None:
        raise ValueError("written_at is null")
    for column in TIMES:
        if value[column] is not None and not isinstance(value[column], str):
            raise ValueError(f"{column} {value[column]!r} is not an instant")
    return value  # the instants' text is parsed for all lines at once (read_write_records)


def read_write_records(settings: Settings, start: datetime | None = None, end: datetime | None = None,
                       directory: Path | None = None) -> pd.DataFrame:
    """Every write record (of ``settings``, or under ``directory``) with ``written_at`` in
    ``[start, end)``, sorted by ``written_at``: the columns :data:`COLUMNS`, instants as
    UTC timestamps. Lines that are not records (a torn last line, a hand edit) are skipped
    and listed in ``frame.attrs["skipped"]`` (``{"file", "line", "error"}`` each)."""
    directory = Path(directory) if directory is not None else records_dir(settings)
    rows: list[dict] = []
    where: list[tuple[str, int]] = []
    skipped: list[dict] = []
    for path in sorted(directory.glob("writes-*.jsonl")) if directory.is_dir() else []:
        with path.open("rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            if number == len(lines):  # no newline after it: a write cut short
                skipped.append({"file": path.name, "line": number, "error": "unterminated (a write cut short)"})
                continue
            try:
                rows.append(_parse(raw.decode()))
                where.append((path.name, number))
            except (ValueError, UnicodeDecodeError) as e:
                skipped.append({"file": path.name, "line": number, "error": f"{type(e).__name__}: {e}"})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    # Instants parsed column by column (one call each, not one per line); a line with text
    # that is not an instant is skipped like any other foreign line.
    bad = pd.Series(False, index=frame.index)
    for column in TIMES:
        parsed = pd.to_datetime(frame[column], utc=True, format="ISO8601", errors="coerce")
        wrong = parsed.isna() & frame[column].notna() & ~bad
        for i in np.flatnonzero(wrong.to_numpy()):
            file, number = where[i]
            skipped.append({"file": file, "line": number,
                            "error": f"ValueError: {column} {frame[column].iloc[i]!r} is not an instant"})
        bad |= wrong
        frame[column] = parsed
    if bad.any():
        frame = frame[~bad.to_numpy()].reset_index(drop=True)
        skipped.sort(key=lambda s: (s["file"], s["line"]))
    frame["rows"] = frame["rows"].astype("int64")
    frame["keys"] = frame["keys"].astype("int64")
    frame["ok"] = frame["ok"].astype(bool)
    frame["seconds"] = frame["seconds"].astype("float64")
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= frame["written_at"] >= pd.Timestamp(start)
    if end is not None:
        keep &= frame["written_at"] < pd.Timestamp(end)
    frame = frame[keep].sort_values(["written_at", "record_id"], kind="stable").reset_index(drop=True)
    frame.attrs["skipped"] = skipped
    return frame


def table_stats(table, timestamp_field: str, join_keys: Iterable[str], created_field: str | None = None) -> dict:
    """``rows``, ``keys``, min/max event timestamp and ``max_known_at`` of an Arrow table of
    rows about to be written."""
    import pyarrow.compute as pc

    rows = table.num_rows
    if rows == 0:
        return {"rows": 0, "keys": 0, "min_event_timestamp": None, "max_event_timestamp": None, "max_known_at": None}
    keys = [k for k in join_keys if k in table.column_names]
    distinct = table.select(keys).group_by(keys).aggregate([]).num_rows if keys else 1
    low_high = pc.min_max(table.column(timestamp_field)).as_py()
    known = (pc.max(table.column(created_field)).as_py() if created_field and created_field in table.column_names
             else low_high["max"])
    return {"rows": rows, "keys": distinct, "min_event_timestamp": low_high["min"],
            "max_event_timestamp": low_high["max"], "max_known_at": known}


class PushRecorder:
    """Records one push call (:func:`pipeline.push.push_window`): set :attr:`targets` once
    the push sources are resolved and :attr:`frames` once their rows are read; on leaving
    the ``with`` block, one record per view fed, ``ok`` or failed with the error (which
    propagates). A call that fails before its targets are known records one failed record
    per push source, ``view`` null."""

    def __init__(self, directory: Path, push_sources: Sequence[str], start: datetime, end: datetime,
                 written_at: datetime | None = None):
        self.directory = directory
        self.push_sources = tuple(push_sources)
        self.start, self.end = start, end
        self.written_at = written_at
        self.targets: list | None = None
        self.frames: dict | None = None

    def __enter__(self) -> "PushRecorder":
        self._began = time.perf_counter()
        return self

    def __exit__(self, kind, error, tb) -> None:
        seconds = time.perf_counter() - self._began
        at = self.written_at or now()
        ok = error is None
        message = None if ok else f"{type(error).__name__}: {error}"
        out = []
        if self.targets is None:
            if not ok:
                out = [record("push", None, name, self.start, self.end, 0, 0, None, None, None, at, False, message,
                              seconds) for name in self.push_sources]
        else:
            for target in self.targets:
                table = (self.frames or {}).get(target.name)
                for view in target.views:
                    created = getattr(view.batch_source, "created_timestamp_column", None) or None
                    stats = (table_stats(table, target.timestamp_field, [c.name for c in view.entity_columns], created)
                             if table is not None else table_stats_empty())
                    out.append(record("push", view.name, target.name, self.start, self.end, written_at=at, ok=ok,
                                      error=message, seconds=seconds, **stats))
        _keep(self.directory, out, error)


def table_stats_empty() -> dict:
    """:func:`table_stats` of nothing (the rows were never read)."""
    return {"rows": 0, "keys": 0, "min_event_timestamp": None, "max_event_timestamp": None, "max_known_at": None}


def source_stats(view, start: datetime, end: datetime, con=None) -> dict:
    """What materializing ``view`` over ``[start, end]`` writes, from its batch source: one
    value per entity key (its newest row in the window), their event time range and the
    newest known time. Nothing (zeros) for a source that is not a local Parquet table."""
    from core.duck import connect, sql_ident

    source = view.batch_source
    path = getattr(source, "path", None)
    if not path or "://" in path.removeprefix("file://"):
        return table_stats_empty()
    path = path.removeprefix("file://")
    if Path(path).is_dir():
        path = str(Path(path) / "**" / "*.parquet")
    to_source = {new: old for old, new in (source.field_mapping or {}).items()}
    ts = sql_ident(to_source.get(source.timestamp_field, source.timestamp_field))
    created = getattr(source, "created_timestamp_column", None)
    known = sql_ident(to_source.get(created, created)) if created else ts
    keys = [sql_ident(to_source.get(c.name, c.name)) for c in view.entity_columns]
    group = f" GROUP BY {', '.join(keys)}" if keys else " HAVING count(*) > 0"
    own = con is None
    con = connect() if own else con
    try:
        rows, low, high, newest = con.execute(
            f"SELECT count(*), min(ts), max(ts), max(known) FROM (SELECT max({ts}) AS ts, max({known}) AS known "
            f"FROM read_parquet(?) WHERE {ts} >= ? AND {ts} <= ?{group})", [path, start, end]).fetchone()
    finally:
        if own:
            con.close()
    return {"rows": rows, "keys": rows, "min_event_timestamp": low, "max_event_timestamp": high,
            "max_known_at": newest}


class MaterializeRecorder:
    """Records a materialization (:func:`pipeline.materialize.materialize`): each
    ``with recorder.loading(views, start)`` block (one Feast load of those views over
    ``[start, end]``; ``start`` a datetime, or a dict view name -> datetime) appends one
    record per view when it ends, ``ok`` or failed with the error (which propagates);
    ``with recorder.refused(views, start)`` (the gate before loading) records only a failure."""

    def __init__(self, directory: Path, end: datetime, written_at: datetime | None = None):
        self.directory = directory
        self.end = end
        self.written_at = written_at

    def loading(self, views, start, record_success: bool = True):
        @contextlib.contextmanager
        def block():
            began = time.perf_counter()
            error: BaseException | None = None
            try:
                yield
            except BaseException as e:
                error = e
                raise
            finally:
                if error is not None or record_success:
                    self._record(views, start, error, time.perf_counter() - began)

        return block()

    def refused(self, views, start):
        return self.loading(views, start, record_success=False)

    def _record(self, views, start, error: BaseException | None, seconds: float) -> None:
        from core.duck import connect

        at = self.written_at or now()
        message = None if error is None else f"{type(error).__name__}: {error}"
        out = []
        con = connect()
        try:
            for view in views:
                begin = start.get(view.name) if isinstance(start, dict) else start
                try:
                    stats = source_stats(view, begin, self.end, con)
                except Exception as e:  # the source cannot be read: the record says what it can
                    log.warning("write record of %s: source not summarised: %s", view.name, e)
                    stats = table_stats_empty()
                out.append(record("materialize", view.name, view.batch_source.name, begin, self.end, written_at=at,
                                  ok=error is None, error=message, seconds=seconds, **stats))
        finally:
            con.close()
        _keep(self.directory, out, error)


def _keep(directory: Path, records: list[dict], error: BaseException | None) -> None:
    """Append the records of a write; when they cannot be appended: :class:`WriteRecordError`
    after a successful write, a logged error after a failed one (whose own error goes on)."""
    try:
        append_records(directory, records)
    except OSError as e:
        if error is None:
            raise WriteRecordError(f"the write succeeded, but its record could not be appended under "
                                   f"{directory}: {type(e).__name__}: {e.strerror or e}") from e
        log.error("write records: cannot append to %s: %s", directory, e)
