"""`serving`: run the prediction server (gunicorn), or the demo that queries it once."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.entry import run

CONF = Path(__file__).with_name("gunicorn.conf.py")


def _gunicorn_argv() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(CONF), "serving.app:create_app()"]


def example_request() -> dict:
    from pipeline.config import Settings
    from pipeline.usecase import load_use_case
    from training.dataset import load_events

    settings = Settings.from_env()
    use_case = load_use_case()
    return use_case.example_request(load_events(settings, use_case))


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


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


def cmd_serve(args) -> int:
    os.execv(sys.executable, _gunicorn_argv())


def cmd_example(args) -> int:
    print(json.dumps(example_request(), indent=2))
    return 0


def cmd_demo(args) -> int:
    host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
    base = f"http://{host}:{port}"
    body = example_request()
    server = subprocess.Popen(_gunicorn_argv())
    try:
        wait_ready(base, server)
        status, answer = _post(f"{base}/predict", body)
        print("\nExample request:", file=sys.stderr)
        print(f"  curl -s -X POST {base}/predict -H 'Content-Type: application/json' \\\n"
              f"       -d '{json.dumps(body)}'", file=sys.stderr)
        print(f"Answer (HTTP {status}):", file=sys.stderr)
        print(json.dumps(answer, indent=2))
        if status != 200:
            return 1
        if args.exit:
            return 0
        print(f"\nServer running on {base} (Ctrl-C to stop).", file=sys.stderr, flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=20)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serving", description="Serve the promoted model over HTTP "
                                     "(HOST/PORT, default 127.0.0.1:8000; state under DATA_DIR).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the server under gunicorn").set_defaults(func=cmd_serve)
    sub.add_parser("example", help="print an example /predict body").set_defaults(func=cmd_example)
    demo = sub.add_parser("demo", help="start the server, send the example request, print the answer")
    demo.add_argument("--exit", action="store_true", help="stop the server after the example")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
