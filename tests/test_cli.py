"""Every command answers --help without importing Feast (which costs seconds of CPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["pipeline.cli", "training.cli", "serving.cli"])
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
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "ingest"], capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert "flights.parquet" in result.stderr and "Traceback" not in result.stderr
