"""The commands as a user meets them: --help without importing Feast (which costs seconds
of CPU), and every bad setting or option refused with exit code 2 and a message naming it,
never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["cli.pipeline", "cli.training", "cli.serving", "cli.validation", "cli.monitoring",
                                    "cli.replay"])
def test_help_is_instant_and_does_not_import_feast(module):
    code = (
        f"import sys, contextlib, io\n"
        f"from {module} import main\n"
        f"out = io.StringIO()\n"
        f"with contextlib.redirect_stdout(out):\n"
        f"    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        f"assert 'usage' in out.getvalue(), out.getvalue()\n"
        f"heavy = [m for m in ('feast', 'xgboost', 'sklearn') if m in sys.modules]\n"
        f"assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_pipeline_reports_a_bad_raw_dir_with_exit_code_2(tmp_path):
    env = {"DATA_DIR": str(tmp_path / "data"), "RAW_DIR": str(tmp_path / "nothing-here"), "PATH": ""}
    result = subprocess.run([sys.executable, "-m", "cli.pipeline", "ingest"], capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert "flights.parquet" in result.stderr and "Traceback" not in result.stderr


def test_validation_raw_names_the_check_exits_2_and_writes_json(tmp_path, builtin_raw):
    import json

    from tests.conftest import write_raw_dir

    tables = dict(builtin_raw)
    f, w = tables["flights"], tables["weather"]
    tables["flights"] = f[(f.month == 5) & (f.day == 2)].assign(distance=-1)
    tables["weather"] = w[(w.month == 5) & (w.day == 2)]
    raw = write_raw_dir(tables, tmp_path / "raw")
    env = {"DATA_DIR": str(tmp_path / "data"), "RAW_DIR": str(raw), "PATH": ""}
    result = subprocess.run([sys.executable, "-m", "cli.validation", "raw"], capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[range] flights.distance" in result.stdout and "Traceback" not in result.stderr, result.stdout
    report = json.loads((tmp_path / "data" / "reports" / "ingest-latest.json").read_text())
    failure = report["failures"][0]
    assert (failure["check"], failure["column"], failure["failed_rows"]) == ("range", "distance", len(tables["flights"]))
    assert not (tmp_path / "data" / "raw").exists() or not any((tmp_path / "data" / "raw").iterdir()), \
        "validation raw wrote a snapshot"
    shown = subprocess.run([sys.executable, "-m", "cli.validation", "show", "ingest"], capture_output=True,
                           text=True, env=env)
    assert shown.returncode == 2 and "[range] flights.distance" in shown.stdout, shown.stdout + shown.stderr


#: One cheap invocation of every command (each builds the settings before any work).
COMMANDS = [["cli.pipeline", "ingest"], ["cli.training", "list"], ["cli.validation", "show", "ingest"],
            ["cli.monitoring", "report"], ["cli.monitoring", "compact"], ["cli.replay", "run", "--days", "1"],
            ["cli.serving", "example"]]


def _bad_settings(tmp_path) -> dict[str, tuple[dict, str]]:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    data = str(tmp_path / "data")
    return {
        "unknown PROFILE": ({"DATA_DIR": data, "PROFILE": "cluster"}, "PROFILE='cluster'"),
        "non-numeric PORT": ({"DATA_DIR": data, "PORT": "eighty"}, "PORT='eighty'"),
        "DATA_DIR is a file": ({"DATA_DIR": str(a_file)}, f"DATA_DIR={a_file}"),
        "bad REDIS_ADDRESS": ({"DATA_DIR": data, "REDIS_ADDRESS": "localhost"}, "REDIS_ADDRESS='localhost'"),
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_refuses_bad_settings_with_exit_2_and_the_variable_named(tmp_path, command):
    for case, (env, named) in _bad_settings(tmp_path).items():
        result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True,
                                env={**env, "PATH": ""}, timeout=120)
        assert result.returncode == 2, f"{case}: exit {result.returncode}\n{result.stderr[-2000:]}"
        assert named in result.stderr and "Traceback" not in result.stderr, f"{case}: {result.stderr[-2000:]}"


@pytest.mark.parametrize("command", [["cli.training", "train", "--holdout-start", "mid-June"],
                                     ["cli.monitoring", "report", "--start", "yesterday"]])
def test_a_bad_instant_option_is_a_usage_error_naming_the_option(command):
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert command[-2] in result.stderr and "ISO 8601" in result.stderr and "Traceback" not in result.stderr, \
        result.stderr


def test_monitoring_compact_merges_the_served_logs_small_files(tmp_path):
    from tests.monitoring.test_consistency import _log_file

    served = tmp_path / "data" / "logs" / "served" / "date=2026-01-01"
    for i in range(3):
        _log_file(served / f"part-{i}.parquet", request_id=[f"a{i}", f"b{i}"])
    env = {"DATA_DIR": str(tmp_path / "data"), "PATH": ""}
    result = subprocess.run([sys.executable, "-m", "cli.monitoring", "compact"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3 file(s) compacted into 1 (6 rows)" in result.stderr, result.stderr
    assert [p.name.split("-")[0] for p in served.glob("*.parquet")] == ["compact"]
    again = subprocess.run([sys.executable, "-m", "cli.monitoring", "compact"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert again.returncode == 0 and "nothing to compact" in again.stderr, again.stderr


def test_make_feast_uses_the_profile_the_settings_name(tmp_path):
    """`make feast` takes the YAML and the variables Feast expands from the settings:
    PROFILE=redis reads feature_store.redis.yaml; a bad PROFILE stops before Feast runs."""
    from core.settings import REPO_ROOT

    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PROFILE": "redis", "REDIS_ADDRESS": "127.0.0.1:1"}
    shown = subprocess.run([sys.executable, "-m", "core.settings", "shell"], capture_output=True, text=True,
                           env=env, cwd=REPO_ROOT)
    assert shown.returncode == 0, shown.stderr
    assert "export FEAST_YAML=" + str(REPO_ROOT / "feature_repo" / "feature_store.redis.yaml") in shown.stdout
    assert "export REDIS_ADDRESS=127.0.0.1:1" in shown.stdout, shown.stdout
    bad = subprocess.run(["make", "--no-print-directory", "feast", "ARGS=--help"], capture_output=True, text=True,
                         env={**env, "PROFILE": "cluster"}, cwd=REPO_ROOT, timeout=300)
    assert bad.returncode != 0 and "PROFILE='cluster' is not one of" in bad.stderr, bad.stdout + bad.stderr
