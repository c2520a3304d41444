"""A real gunicorn server whose worker is killed (``kill -9``): under gunicorn a worker
that fails to boot stops the whole server, so a worker must always boot. One server, one
kill, for the cases together (each worker boot imports Feast: the slow part):

* the rows the killed worker buffered for the feature log are counted as lost;
* with random bytes in Feast's registry (and a corrupt champion promoted), the new worker
  boots with nothing to serve: ``/healthz`` answers, ``/readyz`` and ``/predict`` answer
  503 saying why;
* once the registry is restored it serves the last good model (the champion is still
  corrupt), and readiness says so (``degraded``, ``fallback``).

A worker booting on the last good model straight away, and recovering from an unreadable
registry, are tested in process in ``test_resilience_model.py``.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from serving.process import free_port, wait_ready
from tests.serving.helpers import flights_after_serve_end, request_body
from tests.serving.test_feature_log import read_log
from tests.serving.test_gunicorn import gunicorn_env, http, start_gunicorn, status_of, stop, wait_for, worker_pids
from tests.serving.test_hot_swap import write_champion
from tests.serving.test_resilience_model import corrupt_model, corrupt_registry, restore_registry
from tests.serving.test_server import samples
from training.registry import ModelRegistry

pytestmark = pytest.mark.serving

LOST = ("serving_feature_log_dropped_rows_total", (("reason", "worker_died"),))
BUFFERED = ("serving_feature_log_buffered_rows", ())


def test_a_killed_worker_comes_back_on_a_broken_registry_and_champion_and_its_rows_are_counted(served_dir, use_case):
    registry = ModelRegistry(served_dir / "models")
    good_version = registry.champion()["version"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # One worker; rows stay buffered (batch and flush interval far off) until it exits.
    server = start_gunicorn(gunicorn_env(served_dir, port, WEB_CONCURRENCY=1, FEATURE_LOG_FLUSH_SECONDS=600))
    body = request_body(flights_after_serve_end(served_dir, use_case, 3))

    def metric(name: str, labels: tuple = ()) -> float:
        return samples(http("GET", f"{base}/metrics")[2], name).get(labels, 0)

    def kill_the_worker() -> None:
        [pid] = wait_for(lambda: worker_pids(server.pid), 30, "a worker process", server)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: (worker_pids(server.pid) - {pid}) and status_of(f"{base}/healthz") == 200,
                 120, "a new worker answering /healthz after kill -9", server)

    def readyz() -> tuple[int, dict]:
        status, _, text = http("GET", f"{base}/readyz")
        return status, json.loads(text)

    try:
        wait_ready(base, server, timeout=180)
        for _ in range(20):
            assert http("POST", f"{base}/predict", body)[0] == 200
        assert metric(*BUFFERED) == 60
        # A corrupt model is promoted: the running worker refuses it and keeps its model.
        bad = corrupt_model(registry, good_version, "corrupt")
        write_champion(registry, bad)
        wait_for(lambda: (readyz()[1].get("refused_promotion") or {}).get("version") == bad, 15,
                 "the running worker refusing the corrupt champion", server)
        # Random bytes in Feast's registry: the running worker still answers from its cached
        # copy, but one started now could not load anything, so it is not ready.
        good_registry = corrupt_registry(served_dir)
        assert http("POST", f"{base}/predict", body)[0] == 200
        status, ready = readyz()
        assert status == 503 and "registry" in ready["error"], ready

        kill_the_worker()  # the new worker boots with nothing to serve (before: gunicorn shut down)
        assert metric(*LOST) == 63, "the killed worker's buffered rows are counted as lost"
        assert metric(*BUFFERED) == 0
        assert json.loads(http("GET", f"{base}/healthz")[2])["model_version"] is None
        status, ready = readyz()
        assert status == 503 and ready["status"] == "unavailable" and "registry" in ready["error"], ready
        status, headers, _ = http("POST", f"{base}/predict", body)
        assert status == 503 and headers["Retry-After"] == "1"
        assert metric("serving_model_unavailable") == 1

        # Registry restored: the worker serves again, the last good model (the champion is corrupt).
        restore_registry(served_dir, good_registry)
        wait_for(lambda: status_of(f"{base}/readyz") == 200, 30, "ready once the registry is restored", server)
        status, _, text = http("POST", f"{base}/predict", body)
        assert status == 200 and json.loads(text)["model_version"] == good_version, text
        status, ready = readyz()
        assert ready["status"] == "degraded" and ready["fallback"] is True, ready
        assert ready["refused_promotion"]["version"] == bad
        assert metric("serving_model_unavailable") == 0
    finally:
        stop(server)
    assert server.returncode == 0, server.stderr.read().decode()[-2000:]
    assert len(read_log(served_dir)) == 3, "the last worker's rows are written at shutdown"
