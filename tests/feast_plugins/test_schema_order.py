"""feast_plugins.schema_order: a windowed (stream) view's fields reach the registry in the
declaration's order whatever the process's string hashing; stock Feast 0.67 writes them in
set order, which changes with ``PYTHONHASHSEED`` (without the module's import in
``feast_plugins/windows.py`` this test fails)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from core.settings import REPO_ROOT

FIELDS = """
import json
from feature_repo.definitions.windows import WINDOWED_VIEWS
print(json.dumps({v.name: [f.name for f in v.to_proto().spec.features] for v in WINDOWED_VIEWS}))
"""


def start(seed: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(REPO_ROOT), "DATA_DIR": "/nonexistent"}
    return subprocess.Popen([sys.executable, "-W", "ignore", "-c", FIELDS], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_windowed_views_keep_their_declared_field_order_under_any_hash_seed():
    from feature_repo.definitions.windows import WINDOWED_VIEWS

    declared = {v.name: [v.entity_columns[0].name, *(a.name for a in v.aggregations)] for v in WINDOWED_VIEWS}
    processes = {seed: start(seed) for seed in (1, 2, 3)}  # side by side: each spends its time importing Feast
    for seed, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1]) == declared, seed
