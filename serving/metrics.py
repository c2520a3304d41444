"""Prometheus metrics for the server, correct under gunicorn's several worker processes.

Each app gets its own ``CollectorRegistry`` (tests build many apps in one process). Under
gunicorn, ``serving/gunicorn.conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports ``prometheus_client``: every worker then writes its samples to files there and
``/metrics`` (whichever worker answers it) adds up all workers' files, so the numbers are
the server's, not one worker's.

Feast quirk: importing ``feast.metrics`` (which Feast does on its first online read) sets
``PROMETHEUS_MULTIPROC_DIR`` to a temporary directory of its own for the whole process,
so whether prometheus_client runs in multiprocess mode depends on import order. The mode
is therefore read from prometheus_client itself (:func:`multiprocess_mode`), never from
the environment at exposition time. In multiprocess mode, apps built in one process
share their values (files are per process): tests compare before/after.

The last monitoring report's gauges (``monitoring/gauges.py``) are a collector read at
scrape time, registered in both modes.
"""

from __future__ import annotations

import bisect
import collections
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


def multiprocess_mode() -> bool:
    """Whether prometheus_client stores values in files (decided once, at its import)."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


class Metrics:
    def __init__(self, monitoring_summary=None):
        self.registry = CollectorRegistry()
        r = self.registry
        #: Gauges from the last monitoring report (monitoring/gauges.py), read at scrape time.
        self.collectors = []
        if monitoring_summary is not None:
            from monitoring.gauges import MonitoringCollector

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
                                   "Promotions noticed: swapped in, or refused (old model kept)",
                                   ["result"], registry=r)
        self.store_errors = Counter("serving_online_store_errors_total",
                                    "Online reads that failed (answered 503)", registry=r)
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) if multiprocess_mode() else None

    def observe_vectors(self, vectors) -> None:
        """Count missing and stale values per feature (one increment per feature and request:
        a label lookup per value costs a millisecond on a 100-entity batch)."""
        missing = collections.Counter(f for v in vectors for f in v.missing)
        stale = collections.Counter(f for v in vectors for f in v.stale)
        for feature, n in missing.items():
            _child(self.missing, feature).inc(n)
        for feature, n in stale.items():
            _child(self.stale, feature).inc(n)

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
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            for collector in self.collectors:
                registry.register(collector)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _child(metric, *labels):
    """``metric.labels(*labels)``, remembered on the metric (prometheus_client validates the
    labels and takes a lock on every call)."""
    cache = metric.__dict__.setdefault("_serving_children", {})
    child = cache.get(labels)
    if child is None:
        child = cache[labels] = metric.labels(*labels)
    return child
