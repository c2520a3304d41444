"""A worker always starts: on the champion, on the last good one when the champion is
broken, or with nothing to serve (not ready, trying again) when the Feast registry cannot
be read; readiness says which. In process here; with a real gunicorn whose worker is
killed in ``test_resilience_server.py``."""

from __future__ import annotations

import random

import pytest

from serving.app import create_app
from tests.serving.helpers import flights_after_serve_end, request_body
from tests.serving.test_gunicorn import wait_for
from tests.serving.test_hot_swap import register_variant, write_champion
from tests.serving.test_server import samples
from training.registry import MODEL_FILE, ModelRegistry

pytestmark = pytest.mark.serving


def corrupt_model(registry: ModelRegistry, base: str, tag: str) -> str:
    """A registered variant of ``base`` whose file was damaged afterwards (its SHA-256 no
    longer matches); its version."""
    version = register_variant(registry, base, tag)
    path = registry.root / version / MODEL_FILE
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    return version


def corrupt_registry(data_dir) -> bytes:
    """Random bytes over Feast's registry file; returns what it held."""
    path = data_dir / "registry.db"
    good = path.read_bytes()
    path.write_bytes(random.Random(19).randbytes(len(good)))
    return good


def restore_registry(data_dir, good: bytes) -> None:
    (data_dir / "registry.db").write_bytes(good)


def test_a_worker_starts_on_the_last_good_champion_when_the_promoted_one_is_corrupt(served_dir, use_case):
    registry = ModelRegistry(served_dir / "models")
    base = registry.champion()["version"]
    bad = corrupt_model(registry, base, "corrupt")
    write_champion(registry, bad)
    app = create_app({"DATA_DIR": served_dir, "MODEL_CHECK_SECONDS": 0})  # raised ServingError before
    client = app.test_client()
    body = request_body(flights_after_serve_end(served_dir, use_case, 3))
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200 and answer.get_json()["model_version"] == base
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    ready = ready.get_json()
    assert ready["status"] == "degraded" and ready["fallback"] is True
    assert ready["refused_promotion"]["version"] == bad and "SHA-256" in ready["refused_promotion"]["error"]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert samples(metrics, "serving_model_swaps_total").get((("result", "fallback"),), 0) >= 1
    assert samples(metrics, "serving_champion_refused")[()] == 1
    # A good promotion ends the fallback.
    good = register_variant(registry, base, "good")
    registry.promote(good)
    assert client.post("/predict", json=body).get_json()["model_version"] == good
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["fallback"] is False and ready["refused_promotion"] is None
    assert samples(client.get("/metrics").get_data(as_text=True), "serving_champion_refused")[()] == 0


def test_a_worker_without_a_readable_registry_starts_not_ready_and_recovers(served_dir, use_case, monkeypatch):
    monkeypatch.setattr("serving.model.RETRY_SECONDS", 0.2, raising=False)
    base = ModelRegistry(served_dir / "models").champion()["version"]
    good = corrupt_registry(served_dir)
    app = create_app({"DATA_DIR": served_dir, "MODEL_CHECK_SECONDS": 0})  # raised DecodeError before
    client = app.test_client()
    body = request_body(flights_after_serve_end(served_dir, use_case, 3))
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["model_version"] is None
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "unavailable" and "registry" in ready.get_json()["error"]
    assert str(served_dir) not in ready.get_data(as_text=True), "answers name no absolute path"
    answer = client.post("/predict", json=body)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1", answer.get_json()
    assert "no model" in answer.get_json()["error"]
    assert samples(client.get("/metrics").get_data(as_text=True), "serving_model_unavailable")[()] == 1
    restore_registry(served_dir, good)
    wait_for(lambda: client.get("/readyz").status_code == 200, 15, "ready once the registry is restored")
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200 and answer.get_json()["model_version"] == base
    assert samples(client.get("/metrics").get_data(as_text=True), "serving_model_unavailable")[()] == 0


def test_readiness_says_when_the_registry_became_unreadable_while_serving(served_dir, use_case):
    app = create_app({"DATA_DIR": served_dir})
    client = app.test_client()
    body = request_body(flights_after_serve_end(served_dir, use_case, 3))
    assert client.get("/readyz").get_json()["status"] == "ready"
    good = corrupt_registry(served_dir)
    ready = client.get("/readyz")
    assert ready.status_code == 503, "a worker started now could not load anything: not ready"
    assert "registry.db" in ready.get_json()["error"] and "pipeline apply" in ready.get_json()["error"]
    assert client.post("/predict", json=body).status_code == 200, "still answered from Feast's cached registry"
    restore_registry(served_dir, good)
    assert client.get("/readyz").status_code == 200
