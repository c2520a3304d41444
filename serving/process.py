"""The server as a process: gunicorn with serving's own configuration, a free port for it,
and waiting until it answers (used by ``serving serve``/``demo``, the replay, the tests and
the benchmarks, so all of them start the server the way ``make serve`` does)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CONF = Path(__file__).with_name("gunicorn_conf.py")


def gunicorn_argv() -> list[str]:
    """The command line that runs the server (gunicorn, ``serving/gunicorn_conf.py``)."""
    return [sys.executable, "-m", "gunicorn", "-c", str(CONF), "serving.app:create_app()"]


def free_port() -> int:
    """A free TCP port on the loopback interface (for servers started by tests, benchmarks
    and the replay)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, process: subprocess.Popen, timeout: float = 120, path: str = "/healthz") -> None:
    """Wait until ``base + path`` answers 200 (or the process exits, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {base} not ready after {timeout:.0f}s")




def stop_process(process: subprocess.Popen | None, timeout: float = 30, group: bool = False) -> None:
    """Stop a server started here (SIGTERM, then SIGKILL after ``timeout`` seconds); with
    ``group``, its whole process group (one started with ``start_new_session``)."""
    if process is None or process.poll() is not None:
        return

    def send(sig: int) -> None:
        try:
            os.killpg(process.pid, sig) if group else process.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
