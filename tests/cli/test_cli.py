"""Every command answers --help without importing Feast (which costs seconds of CPU)."""

from __future__ import annotations

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
