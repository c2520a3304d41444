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
