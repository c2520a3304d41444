"""`replay run` refuses a bad option or REPLAY_* variable by name with exit code 2, never a
traceback, before any work (nothing is imported from Feast, nothing replayed)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _replay(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.replay", "run", *args], capture_output=True, text=True,
                          env={"DATA_DIR": str(tmp_path / "data"), "PATH": "", **env}, timeout=120)


@pytest.mark.parametrize("variable, value, says", [
    ("REPLAY_DAYS", "two weeks", "is not a whole number"),
    ("REPLAY_DAYS", "0", "must be at least 1"),
    ("REPLAY_POLICY", "weekly", "is not one of static, periodic, triggered"),
    ("REPLAY_FEED", "kafka", "is not one of events, none, push"),
])
def test_a_bad_variable_is_a_config_error_naming_it(tmp_path, variable, value, says):
    result = _replay(tmp_path, **{variable: value})
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"error: {variable}={value!r} {says}"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "replay").exists(), "a replay started"


@pytest.mark.parametrize("option, value, says", [
    ("--days", "x", "is not a whole number"),
    ("--warmup-days", "0", "must be at least 1"),
    ("--rounds", "-5", "must be at least 1"),
    ("--start", "January", "is not an ISO 8601 date"),
    ("--bad-day", "2013-02-30", "is not an ISO 8601 date"),
    ("--seed", "seven", "invalid int value"),
    ("--policy", "weekly", "invalid choice"),
])
def test_a_bad_option_is_a_usage_error_naming_it(tmp_path, option, value, says):
    result = _replay(tmp_path, option, value)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"argument {option}: " in result.stderr and says in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_an_option_wins_over_its_variable(tmp_path):
    """``--days`` given, REPLAY_DAYS is not read: the run goes on to the settings (here a bad
    PROFILE, so it stops there)."""
    result = _replay(tmp_path, "--days", "1", REPLAY_DAYS="x", REPLAY_POLICY="", PROFILE="cluster")
    assert result.returncode == 2 and "PROFILE='cluster'" in result.stderr, result.stderr[-2000:]
    assert "REPLAY_DAYS" not in result.stderr and "Traceback" not in result.stderr
