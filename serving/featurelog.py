"""The served-feature log: what each sampled request was answered with, as Parquet.

One row per served entity, under ``DATA_DIR/logs/served/date=YYYY-MM-DD/`` (the UTC day
it was served), with

* ``request_id``, ``served_at`` (UTC), ``endpoint``, ``model_version``, ``feature_service``;
* the request's fields (entity keys and request-time inputs) as sent, the request time
  also as ``event_timestamp``: the log is an entity dataframe for
  ``get_historical_features``, so monitoring can recompute the offline values and
  compare them column by column;
* one float64 column per model feature (``view__feature``; null where missing),
  ``missing_features`` and ``stale_features`` (lists), and ``probability`` (null for
  ``/features``);
* one float64 column ``age__<view>`` per time-stamped feature view of the model: seconds
  from the value's event time to the request instant, null when the online store had no
  value for the entity (or one stamped at the epoch); kept for a value not served because it expired (older than the
  TTL) or is newer than the request (negative): ``serving/online.py``, ``docs/freshness.md``.

A request only appends a reference to what it served to an in-memory buffer; a writer
thread (one per process, started on the first append) turns the buffer into rows and
Parquet off the request path, once ``FEATURE_LOG_BATCH_ROWS`` rows are buffered or the
oldest is ``FEATURE_LOG_FLUSH_SECONDS`` old; shutdown writes the rest. A file is
written under a dot-name and renamed into place, so readers never see half a file (read
``*.parquet``). ``FEATURE_LOG_SAMPLE_RATE`` (0..1) samples whole requests with a seeded
generator.

Every served row that does not reach a file is counted, by reason (``on_dropped``:
``serving_feature_log_dropped_rows_total``): ``buffer_full`` (the writer is behind),
``write_failed`` (the file could not be written: the directory is unwritable, the disk
full), and ``worker_died``: the rows held in memory (``on_buffered``:
``serving_feature_log_buffered_rows``) by a worker killed before it could write them,
counted by gunicorn's master (``serving/gunicorn_conf.py``). :meth:`FeatureLogger.problem`
says what is going wrong, for ``/readyz``.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

from serving.config import LogConfig

if TYPE_CHECKING:
    from core.usecase import RequestField

log = logging.getLogger(__name__)

#: Seconds a loss of rows keeps being reported by :meth:`FeatureLogger.problem`.
PROBLEM_SECONDS = 600.0

#: How much nicer (lower CPU priority) the writer thread is than the request threads: on a
#: busy machine the scheduler serves requests first, and the writer catches up in between
#: (the serving benchmark's 100-entity p99 is where it shows).
WRITER_NICE = 10


def _lower_this_threads_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux schedules threads one by
    one, so ``setpriority`` on a thread id leaves the other threads as they are). A no-op
    elsewhere, or when not allowed."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as e:
        log.debug("feature log writer: could not lower its priority: %s", e)


class ServedRequest(NamedTuple):
    """One sampled request as buffered by :meth:`FeatureLogger.append`: references to what
    was served, turned into rows by the writer thread (:meth:`FeatureLogger._table`)."""

    served_at: datetime
    request_id: str
    endpoint: str
    model_version: str
    feature_service: str
    #: The model's feature names, in its order (requests are written one file per list).
    features: tuple[str, ...]
    entities: Sequence[dict]
    vectors: Sequence  # serving.vector.OnlineVector
    #: None for ``/features`` (nothing predicted).
    probabilities: Sequence[float] | None
    #: The model input built for ``vectors`` (None: built by the writer).
    matrix: object


class FeatureLogger:
    """The served-feature log of one process (the module doc). ``on_dropped(rows, reason)``
    hears of every row lost; ``on_buffered(rows)`` of the rows held in memory, whenever
    that changes (both are called with the logger's lock held: keep them quick)."""

    def __init__(self, config: LogConfig, request_fields: Sequence[RequestField], time_field: str,
                 event_timestamp: str = "event_timestamp",
                 on_dropped: Callable[[int, str], None] = lambda rows, reason: None,
                 on_buffered: Callable[[int], None] = lambda rows: None):
        self.config = config
        self._on_dropped = on_dropped
        self._on_buffered = on_buffered
        self.request_fields = list(request_fields)
        self.time_field = time_field
        self.event_timestamp = event_timestamp
        self._time_is_request_timestamp = any(f.name == time_field and f.kind == "timestamp"
                                              for f in self.request_fields)
        self._random = random.Random(config.seed)
        #: Served requests not yet written.
        self._pending: list[ServedRequest] = []
        self._pending_rows = 0
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._writing = 0  # batches taken by a writer and not yet on disk
        self._writing_rows = 0  # their rows
        self._writer: threading.Thread | None = None
        self._writer_pid = 0
        self._id_prefix = ""
        self._requests = 0
        self._files = 0
        #: Rows not logged, by reason (also ``on_dropped``).
        self.dropped: dict[str, int] = {}
        #: The last loss: (monotonic time, what happened), or None.
        self._last_loss: tuple[float, str] | None = None
        #: The last write's error (None: it succeeded, or nothing was written yet).
        self.write_error: str | None = None
        self.closed = False

    @property
    def dropped_rows(self) -> int:
        """Rows not logged, for any reason."""
        return sum(self.dropped.values())

    def _drop(self, rows: int, reason: str, what: str) -> None:
        """(Under the lock.) Count ``rows`` lost."""
        self.dropped[reason] = self.dropped.get(reason, 0) + rows
        self._last_loss = (time.monotonic(), what)
        self._on_dropped(rows, reason)

    def _buffered_changed(self) -> None:
        """(Under the lock.) Tell ``on_buffered`` the rows held in memory now."""
        self._on_buffered(self._pending_rows + self._writing_rows)

    def status(self) -> dict:
        """Rows held and lost by this process, and the last write's error (``/readyz``)."""
        with self._lock:
            return {"buffered_rows": self._pending_rows + self._writing_rows, "dropped_rows": dict(self.dropped),
                    "write_error": self.write_error}

    def problem(self) -> str | None:
        """What is going wrong with the log (None: nothing): its writes fail, or rows were
        lost in the last :data:`PROBLEM_SECONDS`."""
        with self._lock:
            if self.write_error is not None:
                return f"feature log: {self.write_error}"
            if self._last_loss is not None and time.monotonic() - self._last_loss[0] < PROBLEM_SECONDS:
                return f"feature log: {self._last_loss[1]}"
        return None

    def sampled(self) -> bool:
        rate = self.config.sample_rate
        if rate >= 1.0:
            return True
        with self._lock:
            return self._random.random() < rate

    def append(self, endpoint: str, model_version: str, feature_service: str, features: Sequence[str],
               entities: Sequence[dict], vectors, probabilities: Sequence[float] | None,
               matrix=None) -> bool:
        """Buffer one request (call only when :meth:`sampled` said so): no rows built, nothing
        written here. ``matrix`` is the model input already built for ``vectors`` (float64,
        ``features`` order; None: built by the writer). None of them may change afterwards.
        False: not buffered, because ``max_buffered_rows`` are waiting (the caller counts it)."""
        served_at = datetime.now(timezone.utc)
        with self._lock:
            if self._pending_rows + self._writing_rows + len(entities) > self.config.max_buffered_rows:
                self._drop(len(entities), "buffer_full", f"rows dropped: more than FEATURE_LOG_MAX_BUFFERED_ROWS="
                           f"{self.config.max_buffered_rows} waiting to be written")
                return False
            if self._writer is None or self._writer_pid != os.getpid():  # first append, or a forked child
                self._writer_pid = os.getpid()
                self._id_prefix = uuid.uuid4().hex[:20]
                self._writer = threading.Thread(target=self._run_writer, name="feature-log-writer", daemon=True)
                self._writer.start()  # waits for the lock held here
            # A random prefix per process and a sequence: unique like a uuid4, without a
            # system call for random bytes on every request.
            self._requests += 1
            record = ServedRequest(served_at, f"{self._id_prefix}{self._requests:012x}", endpoint, model_version,
                                   feature_service, tuple(features), entities, vectors, probabilities, matrix)
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.append(record)
            self._pending_rows += len(entities)
            self._buffered_changed()
            if self._pending_rows >= self.config.batch_rows:
                self._wake.notify_all()
        return True

    def _take(self) -> list[ServedRequest]:
        """(Under the lock.) The buffered requests; the caller writes them (:meth:`_write_batch`)."""
        batch, rows, self._pending, self._pending_rows = self._pending, self._pending_rows, [], 0
        if batch:
            self._writing += 1
            self._writing_rows += rows
        return batch

    def _run_writer(self) -> None:
        _lower_this_threads_priority(WRITER_NICE)
        while True:
            with self._lock:
                while not self.closed:
                    if self._pending_rows >= self.config.batch_rows:
                        break
                    wait = None
                    if self._pending:
                        wait = self._oldest + self.config.flush_seconds - time.monotonic()
                        if wait <= 0:
                            break
                    self._wake.wait(wait)
                if self.closed:
                    return
                batch = self._take()
            self._write_batch(batch)

    def _write_batch(self, batch: list[ServedRequest], raise_errors: bool = False) -> Path | None:
        """Write a batch :meth:`_take` took; rows that cannot be written are counted
        (``write_failed``) and the error kept for :meth:`problem`."""
        rows = sum(len(record.entities) for record in batch)
        error: Exception | None = None
        written = None
        left = rows  # not written yet
        try:
            # One file per feature list (a model swap may change it within a batch).
            by_features: dict[tuple[str, ...], list[ServedRequest]] = {}
            for record in batch:
                by_features.setdefault(record.features, []).append(record)
            for records in by_features.values():
                written = self._write(self._table(records), records[0].served_at)
                left -= sum(len(record.entities) for record in records)
        except Exception as e:
            error = e
            # In the writer thread: a full disk must not stop the writer (requests never wait on it).
            log.exception("feature log: could not write %d row(s)", left)
        if batch:
            with self._lock:
                self._writing -= 1
                self._writing_rows -= rows
                if error is None:
                    self.write_error = None
                else:
                    self.write_error = f"{left} row(s) not written: {_describe(error, self.config.directory)}"
                    self._drop(left, "write_failed", self.write_error)
                self._buffered_changed()
                self._wake.notify_all()
        if error is not None and raise_errors:
            raise error
        return written

    def wait_written(self, timeout: float = 10.0) -> bool:
        """Wait until no full batch is buffered or being written (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._writing or self._pending_rows >= self.config.batch_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(remaining)
        return True

    def flush(self) -> Path | None:
        """Write whatever is buffered now, in this thread; return the file written (None if nothing was)."""
        with self._lock:
            batch = self._take()
        return self._write_batch(batch, raise_errors=True)

    def close(self) -> None:
        """Flush on shutdown (gunicorn's worker_exit, or atexit) and stop the writer; safe to call twice."""
        if self.closed:
            return
        with self._lock:
            self.closed = True
            self._wake.notify_all()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread() and self._writer_pid == os.getpid():
            writer.join(timeout=30)
        with self._lock:
            batch = self._take()
        self._write_batch(batch)  # what cannot be written is counted, not raised: the worker is leaving

    def _table(self, records: list[ServedRequest]):
        """The rows of ``records`` (one feature list) as an Arrow table, column by column: the
        per-request values once per request and repeated by Arrow, the features straight
        from the model input matrices (None -> NaN -> null). This runs beside the requests
        and holds the interpreter while it does: per-row Python work is kept to the
        request fields and the missing/stale lists."""
        import numpy as np
        import pyarrow as pa

        from training.dataset import rows_matrix

        features = list(records[0].features)
        utc = pa.timestamp("us", "UTC")
        kinds = {"string": pa.string(), "int": pa.int64(), "timestamp": utc}
        counts = np.array([len(record.entities) for record in records], dtype=np.int64)
        rows = int(counts.sum())
        # Row i belongs to request ``owner[i]``; its index within that request follows.
        owner = pa.array(np.repeat(np.arange(len(records)), counts))
        starts = np.cumsum(counts) - counts
        entity_index = np.arange(rows) - np.repeat(starts, counts)

        def per_request(field: str, kind):
            return pa.array([getattr(record, field) for record in records], type=kind).take(owner)

        entities = [entity for record in records for entity in record.entities]
        vectors = [vector for record in records for vector in record.vectors]
        arrays = {"request_id": per_request("request_id", pa.string()),
                  "entity_index": pa.array(entity_index, type=pa.int32()),
                  "served_at": per_request("served_at", utc),
                  "endpoint": per_request("endpoint", pa.string()),
                  "model_version": per_request("model_version", pa.string()),
                  "feature_service": per_request("feature_service", pa.string())}
        for field in self.request_fields:
            arrays[field.name] = pa.array([entity.get(field.name) for entity in entities], type=kinds[field.kind])
        if self._time_is_request_timestamp:  # the same values: one array
            arrays[self.event_timestamp] = arrays[self.time_field]
        else:
            arrays[self.event_timestamp] = pa.array([entity[self.time_field] for entity in entities], type=utc)
        matrices = [rows_matrix([v.row_for(features) for v in record.vectors], features) if record.matrix is None
                    else record.matrix for record in records]
        values = np.vstack(matrices) if matrices else np.empty((0, len(features)))
        arrays.update({f: pa.array(values[:, j], type=pa.float64(), from_pandas=True)
                       for j, f in enumerate(features)})
        arrays.update(_age_columns(records, rows))
        names = pa.list_(pa.string())
        arrays["missing_features"] = pa.array([v.missing for v in vectors], type=names)
        arrays["stale_features"] = pa.array([v.stale for v in vectors], type=names)
        arrays["probability"] = pa.array(
            [p for record in records
             for p in ([None] * len(record.entities) if record.probabilities is None
                       else map(float, record.probabilities))],
            type=pa.float64())
        return pa.table(arrays)

    def _write(self, table, served_at: datetime) -> Path:
        import pyarrow.parquet as pq

        day = served_at.strftime("%Y-%m-%d")
        directory = self.config.directory / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._files += 1
            seq = self._files
        name = f"part-{served_at:%Y%m%dT%H%M%S}-{os.getpid()}-{seq:06d}-{uuid.uuid4().hex[:8]}.parquet"
        final = directory / name
        tmp = directory / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final


def _age_columns(records: list[ServedRequest], rows: int) -> dict:
    """``age__<view>`` columns (float64) of ``records``' rows: each request's vectors come
    from one lookup (``AgedVector.age_batch``, whose ages are computed here, in the writer
    thread); vectors without ages (none of the request's views is time-stamped) give nulls."""
    import numpy as np
    import pyarrow as pa

    columns: dict[str, np.ndarray] = {}
    at = 0
    for record in records:
        n = len(record.entities)
        batch = getattr(record.vectors[0], "age_batch", None) if n else None
        if batch is not None:
            ages = batch.matrix([v.age_index for v in record.vectors])
            for k, view in enumerate(batch.views.names):
                column = columns.get(view)
                if column is None:
                    column = columns[view] = np.full(rows, np.nan)
                column[at:at + n] = ages[:, k]
        at += n
    return {f"age__{view}": pa.array(column, type=pa.float64(), from_pandas=True) for view, column in columns.items()}


def _describe(error: Exception, root: Path) -> str:
    """An error of writing under ``root``, with paths relative to it (answers name no
    absolute paths)."""
    if isinstance(error, OSError):
        where = error.filename
        if where is not None:
            try:
                where = Path(where).relative_to(root.parent)
            except ValueError:
                where = Path(where).name
        reason = error.strerror or str(error)
        return f"{type(error).__name__}: {reason}" + (f": {where}" if where is not None else "")
    return f"{type(error).__name__}: {error}"
