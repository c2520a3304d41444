"""The real server: gunicorn with two workers, as `make serve` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.process import free_port, gunicorn_argv, stop_process, wait_ready
from tests.serving.helpers import flights_after_serve_end, request_body
from tests.serving.test_feature_log import read_log
from tests.serving.test_server import samples

pytestmark = pytest.mark.serving


def gunicorn_env(data_dir, port: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PROMETHEUS_MULTIPROC")}
    env.update(DATA_DIR=str(data_dir), HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", ACCESS_LOG="")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_gunicorn(env: dict) -> subprocess.Popen:
    return subprocess.Popen(gunicorn_argv(),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen) -> None:
    stop_process(process)


def worker_pids(master: int) -> set[int]:
    """The gunicorn master's worker processes (Linux: /proc)."""
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return {int(pid) for pid in f.read().split()}
    except OSError:
        return set()


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    """Poll ``condition()`` until it returns something truthy (returned), else fail naming
    ``what`` (at once if ``process`` exits meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the server exited (code {process.returncode}) while waiting for {what}: "
                        f"{process.stderr.read().decode()[-1500:]}")
        result = condition()
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"not within {timeout:.0f}s: {what}")


def status_of(url: str) -> int | None:
    """The HTTP status of a GET (None: no answer: refused, reset, timed out)."""
    try:
        return http("GET", url)[0]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_gunicorn_serves_adds_up_all_workers_metrics_and_flushes_logs_on_shutdown(served_dir, use_case):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_gunicorn(gunicorn_env(served_dir, port))
    try:
        wait_ready(base, server, timeout=180)
        body = request_body(flights_after_serve_end(served_dir, use_case, 3))
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: http("POST", f"{base}/predict", body), range(40)))
        assert all(status == 200 for status, _, _ in answers), [a for a in answers if a[0] != 200][:2]
        versions = {headers["X-Model-Version"] for _, headers, _ in answers}
        assert len(versions) == 1
        status, _, text = http("GET", f"{base}/metrics")
        assert status == 200
        served = samples(text, "serving_requests_total")[(("endpoint", "/predict"), ("status", "200"))]
        assert served == 40, f"/metrics must add up every worker's requests, got {served}"
        assert http("GET", f"{base}/readyz")[0] == 200
        assert read_log(served_dir).empty, "rows are buffered until a batch fills or the worker exits"
    finally:
        stop(server)
    assert server.returncode == 0, server.stderr.read().decode()[-2000:]
    log = read_log(served_dir)
    assert len(log) == 40 * 3, f"expected every served row flushed at shutdown, got {len(log)}"
