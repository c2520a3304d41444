"""One prediction server for the whole replay (gunicorn, serving's own config), and a
small client that batches requests and times them from the client side."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from pathlib import Path

from serving.process import free_port, gunicorn_argv, stop_process, wait_ready


class Server:
    """gunicorn on a free loopback port over ``data_dir``; one worker (the replay itself
    uses the other core), the champion checked on every request (a promotion is served
    from the next request on), every request's rows written to the feature log at once
    (monitoring reads whole files)."""

    def __init__(self, data_dir: Path, log_path: Path, workers: int = 1):
        self.port = free_port()
        self.base = f"127.0.0.1:{self.port}"
        env = {**os.environ, "DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "PORT": str(self.port),
               "WEB_CONCURRENCY": str(workers), "ACCESS_LOG": "", "MODEL_CHECK_SECONDS": "0",
               "FEATURE_LOG_BATCH_ROWS": "1", "FEATURE_LOG_SAMPLE_RATE": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            gunicorn_argv(),
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://{self.base}", self.process, timeout=120, path="/readyz")
        except BaseException:
            self.stop()
            raise

    def post(self, path: str, body: dict) -> tuple[int, dict, float]:
        """(status, JSON answer, seconds from sending to the whole answer read)."""
        data = json.dumps(body).encode()
        started = time.perf_counter()
        con = http.client.HTTPConnection(self.base, timeout=60)
        try:
            con.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            response = con.getresponse()
            payload = response.read()
        finally:
            con.close()
        return response.status, json.loads(payload or b"{}"), time.perf_counter() - started

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
