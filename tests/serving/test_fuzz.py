"""The real server as an attacker finds it: gunicorn bound beyond loopback (every interface,
so a token is required), reached over HTTP.

* Without the token only ``/healthz`` answers; with it, everything does.
* schemathesis, from the server's own /openapi.json, through its ``st run`` command line
  with every check (``--checks all``: no 5xx; statuses, headers, content types and bodies
  as documented; valid input accepted and invalid input refused; unsupported methods
  answered 405 with ``Allow``; the token enforced) and every phase (examples, coverage,
  fuzzing), over at least :data:`MIN_CASES` cases, in two runs side by side (one per core:
  generating cases is the slow part), the second fuzzing only with another seed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from serving.process import free_port, wait_ready
from tests.conftest import copy_data_dir
from tests.serving.test_gunicorn import gunicorn_env, start_gunicorn, stop
from tests.serving.test_server import samples

pytestmark = pytest.mark.serving

TOKEN = "fuzz-token-0123456789abcdef"
PROTECTED = ("/readyz", "/model", "/metrics", "/openapi.json")
#: (phases, seed) of each `st run`, run side by side.
RUNS = (("examples,coverage,fuzzing", 0), ("fuzzing", 1))
#: Cases per operation and generation mode in each run's fuzzing (``--max-examples``).
MAX_EXAMPLES = 800
MIN_CASES = 5000


@pytest.fixture(scope="module")
def server(served_template, tmp_path_factory):
    """gunicorn on every interface (``HOST=0.0.0.0``) with a token, reached over loopback;
    batches of at most 3 entities (each entity is validated alike, and shorter bodies let
    schemathesis generate more cases in the time)."""
    data_dir = copy_data_dir(served_template, tmp_path_factory.mktemp("fuzz") / "data")
    port = free_port()
    process = start_gunicorn(gunicorn_env(data_dir, port, HOST="0.0.0.0", SERVING_TOKEN=TOKEN, MAX_BATCH=3,
                                          FEATURE_LOG_SAMPLE_RATE=0))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, timeout=180)
        yield base
    finally:
        stop(process)
    assert process.returncode == 0, process.stderr.read().decode()[-2000:]


def status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_server_beyond_loopback_answers_only_with_the_token(server):
    for path in PROTECTED:
        assert (status(server + path, None), status(server + path, "nope-nope-nope-nope"),
                status(server + path, TOKEN)) == (401, 401, 200), path
    assert status(server + "/healthz", None) == 200


def test_schemathesis_with_every_check_finds_nothing_in_5000_cases(server, tmp_path):
    runs: list[subprocess.Popen] = []
    try:
        for phases, seed in RUNS:
            with (tmp_path / f"run{seed}.txt").open("w") as output:
                runs.append(subprocess.Popen(
                    [str(Path(sys.executable).with_name("st")), "run", f"{server}/openapi.json", "--checks", "all",
                     "--phases", phases, "--header", f"Authorization: Bearer {TOKEN}",
                     "--max-examples", str(MAX_EXAMPLES), "--seed", str(seed),
                     # No example database: keeping it costs half the generating time.
                     "--generation-database", "none",
                     "--report", "json", "--report-json-path", str(tmp_path / f"run{seed}.json"), "--no-color"],
                    cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT))
        for run in runs:
            run.wait(timeout=600)
        request = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            metrics = response.read().decode()
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    cases = 0
    for phases, seed in RUNS:
        report = json.loads((tmp_path / f"run{seed}.json").read_text())
        output = (tmp_path / f"run{seed}.txt").read_text()
        assert report["exit_code"] == 0 and report["complete"], output[-6000:]
        assert not report["failures"] and not report["errors"], output[-6000:]
        ran = {name for name, phase in report["phases"].items() if phase["status"] == "success"}
        assert ran == set(phases.split(",")), report["phases"]
        cases += report["test_cases"]["generated"]
    assert cases >= MIN_CASES, f"only {cases} cases generated"
    errors = {labels: n for labels, n in samples(metrics, "serving_requests_total").items()
              if dict(labels)["status"].startswith("5")}
    assert not errors, f"5xx answers counted by the server: {errors}"
