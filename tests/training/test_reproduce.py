"""``training reproduce``: a registered model rebuilt from its recorded snapshot, parameters
and definitions gives the same bytes; when definitions changed since, it says which."""

from __future__ import annotations

import shutil

import pytest

from core.settings import REPO_ROOT, Settings
from tests.conftest import copy_data_dir
from training.registry import ModelRegistry
from training.reproduce import reproduce


@pytest.fixture
def data_dir(slice_run, tmp_path, monkeypatch):
    target = copy_data_dir(slice_run["settings"].data_dir, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(target))
    monkeypatch.delenv("PROFILE", raising=False)
    monkeypatch.delenv("FEATURE_REPO", raising=False)
    return target


def listing(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_reproduce_gives_the_same_bytes_on_the_slice(data_dir, use_case, tmp_path):
    settings = Settings.from_env()
    version = ModelRegistry(settings.models).champion()["version"]
    assert ModelRegistry(settings.models).metadata(version)["snapshot"]["snapshot"]
    before = listing(data_dir)
    result = reproduce(settings, use_case, version, say=lambda m: None)
    assert result["same_bytes"], result
    assert result["reproduced_sha256"] == result["sha256"]
    assert result["definitions_changed"] == []
    assert listing(data_dir) == before, "reproducing wrote into DATA_DIR"


def test_reproduce_says_which_definitions_changed_since(data_dir, use_case, tmp_path, monkeypatch):
    repo = tmp_path / "copy" / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    sql = repo / "pipelines" / "aircraft.sql"
    sql.write_text(sql.read_text().replace("CAST(year AS DOUBLE) AS plane_year",
                                           "CAST(year AS DOUBLE) + 1 AS plane_year"))
    monkeypatch.setenv("FEATURE_REPO", str(repo))
    settings = Settings.from_env()
    version = ModelRegistry(settings.models).champion()["version"]
    said: list[str] = []
    result = reproduce(settings, use_case, version, say=said.append)
    assert result["definitions_changed"] == [
        "feature view 'aircraft': the SQL building source table aircraft changed (features "
        "aircraft__engines, aircraft__plane_year, aircraft__seats)"]
    assert any("definitions changed since" in line and "aircraft" in line for line in said)
    assert not result["same_bytes"]


def test_a_model_without_a_recorded_snapshot_cannot_be_reproduced(data_dir, use_case):
    from tests.serving.test_hot_swap import register_variant
    from training.errors import TrainingError

    settings = Settings.from_env()
    registry = ModelRegistry(settings.models)
    old = register_variant(registry, registry.champion()["version"], "no-snapshot", snapshot=None)
    with pytest.raises(TrainingError, match=f"model {old} does not record the snapshot"):
        reproduce(settings, use_case, old, say=lambda m: None)
