"""`serving`: run the prediction server (gunicorn), or the demo that queries it once."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

from cli.entry import parse, run
from serving.process import gunicorn_argv, wait_ready


def example_request() -> dict:
    from core.settings import Settings
    from core.usecase import load_use_case
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


def checked_settings():
    """Every setting the server reads (:class:`~serving.config.ServingConfig`), checked
    here, before gunicorn starts: a bad one is a one-line error and exit code 2, never a
    traceback from inside gunicorn."""
    from serving.config import ServingConfig

    return ServingConfig.from_env(os.environ).settings


def cmd_serve(args) -> int:
    checked_settings()
    os.execv(sys.executable, gunicorn_argv())


def cmd_example(args) -> int:
    print(json.dumps(example_request(), indent=2))
    return 0


def cmd_demo(args) -> int:
    settings = checked_settings()
    base = f"http://{settings.host}:{settings.port}"
    body = example_request()
    # The server's access log to stderr: stdout carries only the example's answer.
    server = subprocess.Popen(gunicorn_argv(), stdout=sys.stderr)
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
    return run(parse(build_parser(), argv))


if __name__ == "__main__":
    sys.exit(main())
