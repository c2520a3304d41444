"""Prometheus metrics for the server, correct under gunicorn's several worker processes.

Each app gets its own ``CollectorRegistry`` (tests build many apps in one process). Under
gunicorn, ``serving/gunicorn_conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports ``prometheus_client``: every worker then writes its samples to files there and
``/metrics`` (whichever worker answers it) adds up all workers' files, so the numbers are
the server's, not one worker's.

Feast quirk: importing ``feast.metrics`` (which Feast does on its first online read) sets
``PROMETHEUS_MULTIPROC_DIR`` to a temporary directory of its own for the whole process,
so whether prometheus_client runs in multiprocess mode depends on import order. The mode
is therefore read from prometheus_client itself (:func:`multiprocess_mode`), never from
the environment at exposition time. In multiprocess mode, apps built in one process
share their values (files are per process): tests compare before/after.

The last monitoring report's gauges (``serving/gauges.py``) are a collector read at
scrape time, registered in both modes.

A worker's own state is shown by gauges that count only live workers (``livemax`` /
``livesum``): ``serving_champion_refused``, ``serving_model_unavailable`` and
``serving_feature_log_buffered_rows``. The last one is how a worker killed outright
(``kill -9``, the OOM killer) still has its lost rows counted: gunicorn's master reads the
dead worker's gauge file before removing it (:func:`count_rows_of_dead_worker`) and adds
the rows to ``serving_feature_log_dropped_rows_total{reason="worker_died"}`` in a file of
its own, which every ``/metrics`` adds up with the workers'.

Missing and stale values are counted per feature: a request with stale weather has a dozen
of them, and in multiprocess mode each increment is a locked write to a memory-mapped
file. They are added up in memory (:class:`BufferedCounts`) and written to the counters
by a background thread every ``FEATURE_COUNTS_FLUSH_SECONDS``, before this process
answers ``/metrics``, and when the worker exits. Another worker's ``/metrics`` may
therefore miss up to a second of a worker's counts; all other metrics are written as
they happen.

The age of every served value (``serving_feature_value_age_seconds{view}``, a histogram per
time-stamped view; ``docs/freshness.md``) is buffered the same way (:class:`BufferedAges`):
a request only hands over its lookup's timestamps (``serving.online.AgeBatch``); the flush
thread computes the ages and their buckets with numpy and writes them. Ages
below 0 (a value newer than the request, not served) are left out; expired values (older
than the TTL, not served) are in, so an outage keeps showing. Each view's freshness
objective is exported as ``serving_feature_freshness_objective_seconds{view}`` (from its
Feast tag, when a model's views are first seen), for the alert that compares the two.
"""

from __future__ import annotations

import bisect
import collections
import functools
import json
import os
import threading
import time
import weakref
from typing import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The gauge of rows a worker holds for the feature log (:func:`count_rows_of_dead_worker` reads it).
BUFFERED_ROWS = "serving_feature_log_buffered_rows"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: Seconds, a minute to a week; the shipped objectives (90 min, 2 h, 26 h) are bounds, so a
#: p99 above one is decided by whole buckets, not interpolated within one.
AGE_BUCKETS = (60.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0, 14400.0, 21600.0,
               43200.0, 64800.0, 86400.0, 93600.0, 108000.0, 172800.0, 259200.0, 604800.0)
#: Seconds between writes of the buffered per-feature counts (:class:`BufferedCounts`).
FEATURE_COUNTS_FLUSH_SECONDS = 1.0
#: The label values of ``serving_model_swaps_total`` and ``serving_feature_log_dropped_rows_total``,
#: exported at 0 from the start (see :class:`Metrics`).
MODEL_SWAP_RESULTS = ("swapped", "refused", "fallback")
LOG_DROP_REASONS = ("buffer_full", "write_failed", "worker_died")


def multiprocess_mode() -> bool:
    """Whether prometheus_client stores values in files (decided once, at its import)."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


class Metrics:
    def __init__(self, monitoring_summary=None):
        self.registry = CollectorRegistry()
        r = self.registry
        #: Gauges from the last monitoring report (serving/gauges.py), read at scrape time.
        self.collectors = []
        if monitoring_summary is not None:
            from serving.gauges import MonitoringCollector

            self.collectors.append(MonitoringCollector(monitoring_summary))
            r.register(self.collectors[-1])
        self.latency = Histogram("serving_request_duration_seconds", "Request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("serving_requests_total", "Requests by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.entities = Counter("serving_entities_total", "Entities predicted or looked up",
                                ["endpoint"], registry=r)
        self.missing = Counter("serving_missing_features_total",
                               "Served feature values that were missing (absent, null or stale)",
                               ["feature"], registry=r)
        self.stale = Counter("serving_stale_features_total",
                             "Served feature values dropped as older than their TTL or newer than the request",
                             ["feature"], registry=r)
        self.predictions = Histogram("serving_prediction_probability", "Predicted probabilities",
                                     ["model_version"], buckets=PROBABILITY_BUCKETS, registry=r)
        self.model_swaps = Counter("serving_model_swaps_total",
                                   "Promoted models noticed by a worker: swapped in; refused (the model it "
                                   "had keeps serving); fallback (an earlier champion served instead)",
                                   ["result"], registry=r)
        self.champion_refused = Gauge("serving_champion_refused",
                                      "1 while a worker refuses the promoted champion (it serves the model it "
                                      "had, an earlier champion, or nothing)", registry=r, multiprocess_mode="livemax")
        self.model_unavailable = Gauge("serving_model_unavailable",
                                       "1 while a worker has no model to serve (it answers 503 and keeps trying)",
                                       registry=r, multiprocess_mode="livemax")
        self.store_errors = Counter("serving_online_store_errors_total",
                                    "Online reads that failed (answered 503)", registry=r)
        self.log_dropped = Counter("serving_feature_log_dropped_rows_total",
                                   "Served rows lost to the feature log, by reason: buffer_full (more than "
                                   "FEATURE_LOG_MAX_BUFFERED_ROWS waiting), write_failed (the file could not be "
                                   "written), worker_died (buffered in a worker that was killed)",
                                   ["reason"], registry=r)
        self.log_buffered = Gauge(BUFFERED_ROWS, "Served rows buffered for the feature log, not yet written",
                                  registry=r, multiprocess_mode="livesum")
        # Exported at 0 before the first event: Prometheus' increase() (the shipped alert rules,
        # monitoring/prometheus/alerts.yml) needs a sample before it, so a series born at 1
        # would hide the first refused swap or dropped row.
        for result in MODEL_SWAP_RESULTS:
            _child(self.model_swaps, result)
        for reason in LOG_DROP_REASONS:
            _child(self.log_dropped, reason)
        self.value_age = Histogram("serving_feature_value_age_seconds",
                                   "Age of the served feature values at the request instant (request time minus "
                                   "the value's event time), per feature view; values past their TTL included",
                                   ["view"], buckets=AGE_BUCKETS, registry=r)
        self.freshness_objective = Gauge("serving_feature_freshness_objective_seconds",
                                         "The p99 age each feature view's served values should stay within (its "
                                         "freshness_p99 tag in feature_repo/)", ["view"], registry=r,
                                         multiprocess_mode="livemax")
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) if multiprocess_mode() else None
        self.missing_counts = BufferedCounts(self.missing)
        self.stale_counts = BufferedCounts(self.stale)
        self.ages = BufferedAges(self.value_age)
        #: The AgeViews whose objectives are exported (serving.online.AgeViews, by identity).
        self._objectives_of: object = None

    def log_dropped_rows(self, rows: int, reason: str) -> None:
        """Count ``rows`` served rows the feature log lost, and why (see ``log_dropped``)."""
        _child(self.log_dropped, reason).inc(rows)

    def observe_vectors(self, vectors) -> None:
        """Count missing and stale values per feature (buffered: :class:`BufferedCounts`),
        and observe each view's value age (:class:`BufferedAges`; vectors without ages,
        ``serving.online.AgedVector``, have none to observe)."""
        self.missing_counts.add(f for v in vectors for f in v.missing)
        self.stale_counts.add(f for v in vectors for f in v.stale)
        if vectors:
            batch = getattr(vectors[0], "age_batch", None)
            if batch is not None:
                if batch.views is not self._objectives_of:
                    self._export_objectives(batch.views)
                # One lookup's vectors, all of them (the usual case): no indices to list.
                whole = len(vectors) == len(batch.as_of) and all(v.age_batch is batch for v in vectors)
                self.ages.add(batch, None if whole else [v.age_index for v in vectors])

    def _export_objectives(self, views) -> None:
        """``serving_feature_freshness_objective_seconds`` of a model's views (once per model)."""
        for name, objective in zip(views.names, views.objectives):
            if objective is not None:
                _child(self.freshness_objective, name).set(objective)
        self._objectives_of = views

    def flush(self) -> None:
        """Write the buffered counts now (before /metrics, and at worker exit)."""
        self.missing_counts.flush()
        self.stale_counts.flush()
        self.ages.flush()

    def observe_predictions(self, model_version: str, probabilities) -> None:
        """``predictions.labels(model_version).observe(p)`` for every ``p``, with one increment
        per bucket instead of one per value (relies on prometheus_client's ``Histogram``
        fields ``_upper_bounds``, ``_buckets``, ``_sum``; ``tests/serving/test_metrics.py``
        checks it against ``observe``)."""
        histogram = _child(self.predictions, model_version)
        values = [float(p) for p in probabilities]
        if any(v != v for v in values):  # NaN lands in no bucket: leave it to observe()
            for v in values:
                histogram.observe(v)
            return
        bounds = histogram._upper_bounds
        counts = collections.Counter(bisect.bisect_left(bounds, v) for v in values)
        histogram._sum.inc(sum(values))
        for i, n in counts.items():
            histogram._buckets[i].inc(n)

    def exposition(self) -> tuple[bytes, str]:
        """The text format: all workers' samples under gunicorn, this app's otherwise."""
        self.flush()
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            for collector in self.collectors:
                registry.register(collector)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def count_rows_of_dead_worker(pid: int) -> float:
    """In gunicorn's master, when worker ``pid`` has exited: count the rows it still held for
    the feature log (its :data:`BUFFERED_ROWS` gauge; 0 after a clean exit, which writes
    them) as ``serving_feature_log_dropped_rows_total{reason="worker_died"}``. Call it
    before ``mark_process_dead``, which deletes the gauge's file. Returns the rows counted."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or not multiprocess_mode():
        return 0.0
    from prometheus_client.mmap_dict import MmapedDict

    rows = 0.0
    for path in (os.path.join(directory, f"gauge_livesum_{pid}.db"),):
        try:
            values = MmapedDict.read_all_values_from_file(path)
        except (FileNotFoundError, ValueError, OSError):
            continue
        for key, value, _timestamp, _pos in values:
            if json.loads(key)[0] == BUFFERED_ROWS:
                rows += value
    if rows > 0:
        _lost_in_dead_workers().labels("worker_died").inc(rows)
    return rows


@functools.cache
def _lost_in_dead_workers() -> Counter:
    """The master's own dropped-rows counter (a file of its own, added up with the workers')."""
    return Counter("serving_feature_log_dropped_rows_total", "Served rows lost to the feature log, by reason",
                   ["reason"], registry=None)


def _child(metric, *labels):
    """``metric.labels(*labels)``, remembered on the metric (prometheus_client validates the
    labels and takes a lock on every call)."""
    cache = metric.__dict__.setdefault("_serving_children", {})
    child = cache.get(labels)
    if child is None:
        child = cache[labels] = metric.labels(*labels)
    return child


class BufferedCounts:
    """Increments of a one-label counter, added up in memory and written by :meth:`flush`:
    by a daemon thread (one per process, started on the first count and gone with this
    object) every ``seconds``, or by the caller."""

    def __init__(self, counter: Counter, seconds: float = FEATURE_COUNTS_FLUSH_SECONDS):
        self.counter = counter
        self.seconds = seconds
        self._pending: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._pid = 0

    def add(self, labels: Iterable[str]) -> None:
        with self._lock:
            self._pending.update(labels)
            if self._pid != os.getpid() and self._pending:  # first count here, or a forked child
                self._pid = os.getpid()
                threading.Thread(target=_flush_every, args=(weakref.ref(self), self.seconds),
                                 name="metrics-flush", daemon=True).start()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, collections.Counter()
        for label, n in pending.items():
            _child(self.counter, label).inc(n)


class BufferedAges:
    """Observations of a one-label histogram (the value ages), added up in memory per label
    and bucket and written by :meth:`flush`, like :class:`BufferedCounts` (relies on
    prometheus_client's ``Histogram`` fields ``_upper_bounds``, ``_buckets``, ``_sum``, as
    :meth:`Metrics.observe_predictions` does). A request only hands over its lookup
    (:meth:`add`); :meth:`flush` computes the ages of all of them at once. Negative and
    missing (NaN) ages are not observed."""

    def __init__(self, histogram: Histogram, seconds: float = FEATURE_COUNTS_FLUSH_SECONDS):
        self.histogram = histogram
        self.seconds = seconds
        import numpy as np

        self.bounds = list(histogram._upper_bounds)
        self._bounds = np.asarray(self.bounds, dtype=np.float64)
        #: Lookups not yet placed: (AgeBatch, entity indices or None).
        self._batches: list[tuple] = []
        #: label -> [count per bucket (numpy), sum]
        self._pending: dict[str, list] = {}
        self._lock = threading.Lock()
        self._pid = 0

    def add(self, batch, rows=None) -> None:
        """Keep a lookup's :class:`~serving.online.AgeBatch` (``rows``: the entity indices
        served from it; None: all) for the next :meth:`flush`: nothing computed here."""
        with self._lock:
            self._batches.append((batch, rows))
            if self._pid != os.getpid():  # first observation here, or a forked child
                self._pid = os.getpid()
                threading.Thread(target=_flush_every, args=(weakref.ref(self), self.seconds),
                                 name="metrics-flush-ages", daemon=True).start()

    def add_ages(self, labels: tuple[str, ...], ages) -> None:
        """Observe ``ages`` (an array, one row per entity, a column per label; NaN: none):
        added to the counts the next :meth:`flush` writes."""
        import numpy as np

        ages = np.asarray(ages, dtype=np.float64).reshape(-1, len(labels))
        keep = ages >= 0  # NaN and negative ages are not observed
        where = np.searchsorted(self._bounds, ages, side="left")
        with self._lock:
            for k, label in enumerate(labels):
                mask = keep[:, k]
                if not mask.any():
                    continue
                counts = np.bincount(where[mask, k], minlength=len(self.bounds))
                entry = self._pending.get(label)
                if entry is None:
                    self._pending[label] = [counts, float(ages[mask, k].sum())]
                else:
                    entry[0] = entry[0] + counts
                    entry[1] += float(ages[mask, k].sum())

    def _place_batches(self) -> None:
        """Turn the kept lookups into counts: their ages computed together per list of views."""
        import numpy as np

        with self._lock:
            batches, self._batches = self._batches, []
        by_views: dict = {}
        for batch, rows in batches:
            by_views.setdefault(batch.views.names, []).append(batch.matrix(rows))
        for labels, matrices in by_views.items():
            self.add_ages(labels, np.vstack(matrices))

    def flush(self) -> None:
        self._place_batches()
        with self._lock:
            pending, self._pending = self._pending, {}
        for label, (counts, total) in pending.items():
            if not counts.any():
                continue
            child = _child(self.histogram, label)
            child._sum.inc(total)
            for i, n in enumerate(counts):
                if n:
                    child._buckets[i].inc(n)


def _flush_every(ref: "weakref.ref[BufferedCounts | BufferedAges]", seconds: float) -> None:
    while True:
        time.sleep(seconds)
        counts = ref()
        if counts is None:
            return
        counts.flush()
        del counts
