"""Redis as the online store: a real redis-server, stopped and hung under a running app."""

from __future__ import annotations

import os
import signal
import time

import pytest

from core.settings import Settings
from serving.app import create_app
from tests.conftest import copy_data_dir, materialize_into
from tests.serving.helpers import flights_after_serve_end, query_string, request_body

pytestmark = [pytest.mark.serving, pytest.mark.redis]


@pytest.fixture
def redis_dir(served_template, redis_server, tmp_path, monkeypatch):
    """A DATA_DIR whose ``redis`` profile is applied and materialized up to SERVE_END."""
    data_dir = copy_data_dir(served_template, tmp_path / "data")
    for name, value in {"DATA_DIR": str(data_dir), "PROFILE": "redis",
                        "REDIS_ADDRESS": redis_server.address}.items():
        monkeypatch.setenv(name, value)
    materialize_into(Settings.from_env())
    return data_dir


def timed_predict(client, body) -> tuple[int, float]:
    started = time.monotonic()
    status = client.post("/predict", json=body).status_code
    return status, time.monotonic() - started


def test_redis_serves_exactly_what_sqlite_serves(redis_dir, served_template, use_case):
    on_redis = create_app({"DATA_DIR": redis_dir, "FEATURE_LOG_SAMPLE_RATE": 0}).test_client()
    on_sqlite = create_app({"DATA_DIR": served_template, "PROFILE": "embedded",
                            "FEATURE_LOG_SAMPLE_RATE": 0}).test_client()
    flights = flights_after_serve_end(redis_dir, use_case)
    body = request_body(flights)
    for entity in body["flights"][:10]:
        a = on_redis.get("/features", query_string=query_string(entity)).get_json()
        b = on_sqlite.get("/features", query_string=query_string(entity)).get_json()
        assert a["features"] == b["features"] and a["stale_features"] == b["stale_features"], entity
    a = on_redis.post("/predict", json={"flights": body["flights"][:100]}).get_json()
    b = on_sqlite.post("/predict", json={"flights": body["flights"][:100]}).get_json()
    assert a == b


def test_redis_down_or_hung_is_503_quickly_and_the_server_recovers_by_itself(redis_dir, redis_server, use_case):
    app = create_app({"DATA_DIR": redis_dir, "FEATURE_LOG_SAMPLE_RATE": 0})
    client = app.test_client()
    body = request_body(flights_after_serve_end(redis_dir, use_case, 5))
    healthy = client.post("/predict", json=body).get_json()
    redis_server.save()  # so a restarted server has the same data

    os.kill(redis_server.process.pid, signal.SIGSTOP)  # hung: accepts nothing, answers nothing
    try:
        status, took = timed_predict(client, body)
        assert status == 503, "a hung Redis must give 503"
        assert took < 5, f"a hung Redis must be given up on within the socket timeout, took {took:.1f}s"
        assert client.get("/readyz").status_code == 503
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert client.post("/predict", json=body).get_json() == healthy, "did not recover after Redis resumed"

    redis_server.stop()  # down: connection refused
    status, took = timed_predict(client, body)
    assert status == 503 and took < 5
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    redis_server.start()
    assert client.get("/readyz").status_code == 200
    assert client.post("/predict", json=body).get_json() == healthy, "did not recover after Redis restarted"
