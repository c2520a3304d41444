"""`serving serve` and `serving demo` check every setting before gunicorn starts: a bad one
is a one-line error naming the variable and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command, variable, value", [
    ("serve", "PORT", "abc"),
    ("serve", "WEB_THREADS", "x"),
    ("serve", "WEB_CONCURRENCY", "0"),
    ("serve", "MAX_BATCH", "0"),
    ("serve", "MODEL_CHECK_SECONDS", "soon"),
    ("serve", "FEATURE_LOG_SAMPLE_RATE", "2"),
    ("serve", "REQUEST_READ_TIMEOUT", "0"),
    ("demo", "PORT", "abc"),
    ("demo", "WEB_THREADS", "x"),
])
def test_a_bad_setting_exits_2_naming_it_before_gunicorn_starts(tmp_path, command, variable, value):
    env = {"DATA_DIR": str(tmp_path / "data"), "PATH": "", variable: value}
    result = subprocess.run([sys.executable, "-m", "cli.serving", command], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {variable}={value!r} must be "), result.stderr
    assert "Traceback" not in result.stderr and "gunicorn" not in result.stderr.lower(), result.stderr
