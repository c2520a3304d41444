"""Serving and definitions pinned to models: a model trained on definitions that differ from
the ones applied is not loaded (the hot swap is refused and counted, the old model keeps
serving); ``/model`` shows the fingerprints and how the served model's definitions drifted."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from core.settings import REPO_ROOT, Settings
from pipeline.apply import apply
from pipeline.definitions import applied, pins
from serving.app import create_app
from tests.serving.test_hot_swap import predict, refusals, register_variant, write_champion
from training.errors import TrainingError

pytestmark = pytest.mark.serving


def apply_weather_ttl_change(served_dir, tmp_path, monkeypatch, use_case) -> None:
    """A deliberate change under the champion, applied: weather_hourly's TTL 3 h -> 4 h in a
    copy of feature_repo/ (--allow-definition-change weather_hourly)."""
    repo = tmp_path / "copy" / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    path = repo / "definitions" / "features.py"
    path.write_text(path.read_text().replace("ttl=timedelta(hours=3)", "ttl=timedelta(hours=4)"))
    monkeypatch.setenv("FEATURE_REPO", str(repo))
    settings = Settings.from_env({"DATA_DIR": str(served_dir), "FEATURE_REPO": str(repo)})
    apply(dataclasses.replace(settings, allow_definition_change=("weather_hourly",)), use_case)


def test_model_shows_the_fingerprints_of_every_feature(served):
    client, body, registry, base = served
    model = client.get("/model").get_json()
    assert sorted(model["definitions"]["features"]) == sorted(model["features"])
    assert model["definitions"] == registry.metadata(base)["definitions"]
    assert model["definitions_drift"] == []


def test_a_model_trained_on_other_definitions_is_refused_and_the_old_one_keeps_serving(
        served, served_dir, tmp_path, monkeypatch, use_case):
    client, body, registry, base = served
    assert predict(client, body)["model_version"] == base
    apply_weather_ttl_change(served_dir, tmp_path, monkeypatch, use_case)
    # The loaded champion keeps serving; /model says its definitions drifted.
    assert predict(client, body)["model_version"] == base
    drift = client.get("/model").get_json()["definitions_drift"]
    assert len(drift) == 1 and "'weather_hourly'" in drift[0] and "the TTL changed" in drift[0]

    # A model trained on the old definitions: the registry refuses to promote it; pointed
    # at anyway (champion.json written by hand), serving refuses it, counts it, serves on.
    before = refusals(client)
    stale = register_variant(registry, base, "old-definitions")
    with pytest.raises(TrainingError, match=f"model {stale} was trained on feature definitions that differ.*"
                                            "'weather_hourly': the TTL changed"):
        registry.promote(stale)
    write_champion(registry, stale)
    assert predict(client, body)["model_version"] == base
    refused = client.get("/model").get_json()["refused_promotion"]
    assert refused["version"] == stale
    assert "weather_hourly" in refused["error"] and "the TTL changed" in refused["error"]
    assert refusals(client) - before == 1

    # One trained on the definitions applied now is swapped in.
    meta = registry.metadata(base)
    current = pins(applied(Settings.from_env({"DATA_DIR": str(served_dir)})),
                   [(v, v, [p["feature"] for p in meta["definitions"]["features"].values() if p["view"] == v])
                    for v in meta["definitions"]["views"]])
    fresh = register_variant(registry, base, "new-definitions", definitions=current)
    registry.promote(fresh)
    assert predict(client, body)["model_version"] == fresh
    assert client.get("/model").get_json()["definitions_drift"] == []


def test_a_server_starting_after_the_change_does_not_serve_the_drifted_champion(
        served, served_dir, tmp_path, monkeypatch, use_case):
    client, body, registry, base = served
    apply_weather_ttl_change(served_dir, tmp_path, monkeypatch, use_case)
    restarted = create_app({"DATA_DIR": served_dir, "MODEL_CHECK_SECONDS": 0}).test_client()
    response = restarted.post("/predict", json=body)
    assert response.status_code == 503, response.get_json()
    model = restarted.get("/model").get_json()
    assert model["refused_promotion"]["version"] == base
    assert "weather_hourly" in model["refused_promotion"]["error"]
