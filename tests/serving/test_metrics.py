"""The server's bulk histogram update counts exactly what one ``observe`` per value counts."""

from __future__ import annotations

import uuid

import pytest

from serving.metrics import Metrics


def histogram_samples(metrics: Metrics, version: str) -> dict[str, float]:
    [family] = [m for m in metrics.registry.collect() if m.name == "serving_prediction_probability"]
    return {f"{s.name}{s.labels.get('le', '')}": s.value for s in family.samples
            if s.labels.get("model_version") == version and not s.name.endswith("_created")}


@pytest.mark.parametrize("values", [
    [0.0, 0.05, 0.050001, 0.3, 0.3, 0.999, 1.0, 1.5, -0.1],  # bucket edges, above the last, below the first
    [0.42],
    [0.2, float("nan"), 0.7],  # NaN: left to observe()
])
def test_observe_predictions_equals_observe_per_value(values):
    metrics = Metrics()
    one_by_one, in_bulk = f"one-{uuid.uuid4().hex}", f"bulk-{uuid.uuid4().hex}"
    for v in values:
        metrics.predictions.labels(one_by_one).observe(v)
    metrics.observe_predictions(in_bulk, values)
    want, got = histogram_samples(metrics, one_by_one), histogram_samples(metrics, in_bulk)
    assert want.keys() == got.keys() and len(want) > 3
    for name in want:
        if name.endswith("_sum"):
            assert got[name] == pytest.approx(want[name], nan_ok=True)
        else:
            assert got[name] == want[name], name


def counter_value(metrics: Metrics, name: str, feature: str) -> float:
    return sum(s.value for m in metrics.registry.collect() for s in m.samples
               if s.name == name and s.labels.get("feature") == feature)


def test_missing_and_stale_counts_reach_the_counters_without_a_scrape():
    """Per-feature counts are buffered, then written by the background thread (within the
    flush period) or at once by exposition(); nothing is lost or counted twice."""
    import gc
    import threading
    import time

    from serving.metrics import BufferedCounts
    from serving.vector import OnlineVector

    metrics = Metrics()
    feature = f"view__f{uuid.uuid4().hex[:8]}"
    metrics.missing_counts.seconds = 0.05
    vectors = [OnlineVector({feature: None}, [feature], [feature]), OnlineVector({feature: None}, [feature], [])]
    metrics.observe_vectors(vectors)
    metrics.observe_vectors(vectors[:1])
    deadline = time.monotonic() + 5
    while counter_value(metrics, "serving_missing_features_total", feature) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counter_value(metrics, "serving_missing_features_total", feature) == 3, "not written by the thread"
    stale = counter_value(metrics, "serving_stale_features_total", feature)
    assert stale in (0, 2)  # its thread runs every second: maybe not yet
    metrics.exposition()
    assert counter_value(metrics, "serving_stale_features_total", feature) == 2
    assert counter_value(metrics, "serving_missing_features_total", feature) == 3
    # The thread goes with its counts.
    before = set(threading.enumerate())
    counts = BufferedCounts(metrics.missing, seconds=0.01)
    counts.add([feature])
    [flusher] = [t for t in set(threading.enumerate()) - before if t.name == "metrics-flush"]
    del counts
    gc.collect()
    flusher.join(timeout=2)
    assert not flusher.is_alive()
