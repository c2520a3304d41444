"""Token authentication: required beyond loopback (the server refuses to start without one),
checked on every endpoint but /healthz; no answer shows a server path. (A real server bound
beyond loopback, with its token: ``tests/serving/test_fuzz.py``.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.errors import ConfigError
from serving.app import create_app
from serving.config import AuthConfig, ServingConfig, is_loopback
from serving.process import free_port, gunicorn_argv
from tests.serving.helpers import flights_after_serve_end, request_body

TOKEN = "test-token-0123456789abcdef"
PROTECTED = ("/readyz", "/model", "/metrics", "/openapi.json")


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.org", False),
])
def test_which_hosts_are_loopback(host, loopback):
    assert is_loopback(host) == loopback


def test_a_host_beyond_loopback_needs_a_token(tmp_path):
    with pytest.raises(ConfigError, match=r"^HOST='0.0.0.0' is beyond loopback: .*SERVING_TOKEN"):
        ServingConfig.from_env({"DATA_DIR": str(tmp_path), "HOST": "0.0.0.0"})
    assert ServingConfig.from_env({"DATA_DIR": str(tmp_path)}).auth is None
    config = ServingConfig.from_env({"DATA_DIR": str(tmp_path), "HOST": "0.0.0.0", "SERVING_TOKEN": TOKEN})
    assert config.auth.token == TOKEN and TOKEN not in repr(config), "the token must not show in a repr"


def test_the_token_from_a_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    assert AuthConfig.from_env({"SERVING_TOKEN_FILE": str(path)}, "0.0.0.0").token == TOKEN


@pytest.mark.parametrize("env, message", [
    ({"SERVING_TOKEN": "short"}, r"^SERVING_TOKEN: the token has 5 characters, fewer than 16"),
    ({"SERVING_TOKEN": "with a space 0123456789"}, r"^SERVING_TOKEN: the token must be printable ASCII"),
    ({"SERVING_TOKEN": TOKEN, "SERVING_TOKEN_FILE": "/x"}, r"^SERVING_TOKEN and SERVING_TOKEN_FILE are both set"),
    ({"SERVING_TOKEN_FILE": "{missing}"}, r"^SERVING_TOKEN_FILE='.*missing' cannot be read"),
    ({"SERVING_TOKEN_FILE": "{empty}"}, r"^SERVING_TOKEN_FILE='.*empty' holds no token"),
])
def test_a_bad_token_setting_names_its_variable(tmp_path, env, message):
    (tmp_path / "empty").write_text("\n")
    env = {k: v.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for k, v in env.items()}
    with pytest.raises(ConfigError, match=message):
        AuthConfig.from_env(env, "127.0.0.1")


@pytest.fixture
def client(served_dir):
    return create_app({"DATA_DIR": served_dir, "SERVING_TOKEN": TOKEN, "FEATURE_LOG_SAMPLE_RATE": 0}).test_client()


def test_every_endpoint_but_healthz_needs_the_token(client, served_dir, use_case):
    body = request_body(flights_after_serve_end(served_dir, use_case, 2))
    assert client.get("/healthz").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789ab"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        for path in PROTECTED:
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers, response.status_code)
            assert response.get_json()["error"].startswith("a valid token is required")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "X-Model-Version" not in response.headers
        assert client.post("/predict", json=body, headers=headers).status_code == 401
        assert client.post("/precomputed", json=body, headers=headers).status_code == 401
        assert client.get("/features", query_string={"origin": "JFK"}, headers=headers).status_code == 401
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        for path in PROTECTED:
            assert client.get(path, headers=headers).status_code == 200, path
        assert client.post("/predict", json=body, headers=headers).status_code == 200
    spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert spec["security"] == [{"bearer": []}], "the published API must say it needs the token"


def test_no_answer_shows_a_server_path_or_table(served_dir, use_case):
    """A broken online store: the 503 says what is unavailable; files and tables go to the log."""
    client = create_app({"DATA_DIR": served_dir, "FEATURE_LOG_SAMPLE_RATE": 0}).test_client()
    body = request_body(flights_after_serve_end(served_dir, use_case, 2))
    store = served_dir / "online_store.db"
    store.write_bytes(b"")  # an empty database: no tables
    answers = [client.post("/predict", json=body), client.get("/features", query_string={
        k: v for k, v in body["flights"][0].items() if v is not None}), client.post("/predict", json={"x": 1})]
    assert [a.status_code for a in answers] == [503, 503, 400], [a.get_json() for a in answers]
    for answer in answers:
        text = answer.get_data(as_text=True)
        assert str(served_dir) not in text and "/" not in answer.get_json()["error"], text
        assert "table" not in text.lower(), text


def test_a_server_bound_beyond_loopback_refuses_to_start_without_a_token(tmp_path):
    """Through ``serving serve`` (HOST) and through gunicorn given another bind directly."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVING_TOKEN", "PROMETHEUS_MULTIPROC"))}
    env.update(DATA_DIR=str(tmp_path / "data"), PORT=str(port))
    result = subprocess.run([sys.executable, "-m", "cli.serving", "serve"], env={**env, "HOST": "0.0.0.0"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: HOST='0.0.0.0' is beyond loopback"), (
        result.stderr[-2000:])
    result = subprocess.run(gunicorn_argv(), env={**env, "HOST": "0.0.0.0"}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "error: HOST='0.0.0.0' is beyond loopback" in result.stderr, (
        result.stderr[-2000:])
    result = subprocess.run(gunicorn_argv(), env={**env, "GUNICORN_CMD_ARGS": f"--bind 0.0.0.0:{port}"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "refusing to serve on" in result.stderr, result.stderr[-2000:]
