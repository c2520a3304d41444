"""The layering contract (pyproject.toml, `lint-imports` in `make test`) holds, and it
really catches an arrow that points up: the same check on a copy of the packages with one
inverted import fails, naming the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from core.settings import REPO_ROOT

LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("core", "validation", "feast_plugins", "pipeline", "training", "flow", "serving", "monitoring",
            "replay", "cli", "feature_repo")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layers_hold():
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout, result.stdout[-2000:]


def test_an_upward_import_breaks_the_layering_contract(tmp_path):
    for name in PACKAGES:
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    files = tmp_path / "core" / "files.py"
    files.write_text(files.read_text() + "\n\ndef _upward():\n    from serving import app  # noqa: F401\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, "an import of serving from core passed the layering contract"
    assert "BROKEN" in result.stdout and "core.files -> serving.app" in result.stdout, result.stdout[-3000:]
