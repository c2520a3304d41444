"""Model hot swap on promotion: checked first, swapped atomically, bad models refused."""

from __future__ import annotations

import json

import pytest
import xgboost as xgb

from serving.app import create_app
from tests.serving.helpers import flights_after_serve_end, request_body
from training.registry import CHAMPION_FILE, MODEL_FILE, ModelRegistry

pytestmark = pytest.mark.serving


def register_variant(registry: ModelRegistry, base: str, tag: str, **metadata_changes) -> str:
    """Register a different file of ``base``'s trees (a booster attribute differs): a new
    version whose predictions are ``base``'s."""
    champion = registry.load(base)
    booster = xgb.Booster()
    booster.load_model(bytearray(champion.model_bytes))
    booster.set_attr(variant=tag)
    metadata = {k: v for k, v in champion.metadata.items() if k not in ("version", "sha256")}
    return registry.register(bytes(booster.save_raw("ubj")), {**metadata, **metadata_changes})


def write_champion(registry: ModelRegistry, version: str) -> None:
    """Point champion.json at ``version`` without the registry's checks (as a bad deploy would)."""
    sha = registry.metadata(version)["sha256"]
    (registry.root / CHAMPION_FILE).write_text(json.dumps({"version": version, "sha256": sha}))


@pytest.fixture
def served(served_dir, use_case):
    app = create_app({"DATA_DIR": served_dir, "MODEL_CHECK_SECONDS": 0})
    body = request_body(flights_after_serve_end(served_dir, use_case, 5))
    registry = ModelRegistry(served_dir / "models")
    return app.test_client(), body, registry, registry.champion()["version"]


def predict(client, body):
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_promotion_is_picked_up_and_every_response_names_the_new_version(served):
    client, body, registry, base = served
    old = predict(client, body)
    new_version = register_variant(registry, base, "b")
    assert new_version != old["model_version"]
    registry.promote(new_version)
    new = predict(client, body)
    assert new["model_version"] == new_version
    assert all(p["model_version"] == new_version for p in new["predictions"])
    assert [p["probability"] for p in new["predictions"]] == [p["probability"] for p in old["predictions"]]
    assert client.get("/model").get_json()["version"] == new_version
    assert client.get("/healthz").headers["X-Model-Version"] == new_version


@pytest.mark.parametrize("breakage", ["corrupt_file", "not_a_model", "feature_list", "unknown_version"])
def test_a_bad_promotion_is_refused_and_the_old_model_keeps_serving(served, breakage):
    client, body, registry, base = served
    old = predict(client, body)["model_version"]
    if breakage == "corrupt_file":
        version = register_variant(registry, base, "c")
        path = registry.root / version / MODEL_FILE
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")  # no longer its registered SHA-256
        write_champion(registry, version)
    elif breakage == "not_a_model":
        meta = {k: v for k, v in registry.load_champion().metadata.items() if k not in ("version", "sha256")}
        version = registry.register(b"this is not an XGBoost model", meta)  # hash matches, load fails
        write_champion(registry, version)
    elif breakage == "feature_list":
        features = registry.load_champion().features
        version = register_variant(registry, base, "d", features=list(reversed(features)))
        registry.promote(version)  # the registry's own checks pass; serving must refuse it
    else:
        version = "0123456789abcdef"
        (registry.root / CHAMPION_FILE).write_text(json.dumps({"version": version, "sha256": "0" * 64}))
    answer = predict(client, body)
    assert answer["model_version"] == old, f"{breakage}: the server swapped to a bad model"
    refused = client.get("/model").get_json()["refused_promotion"]
    assert refused and refused["version"] == version, refused
    assert client.get("/readyz").status_code == 200, "a refused promotion must not make the server unready"
    # A good promotion afterwards is still picked up.
    good = register_variant(registry, base, "e")
    registry.promote(good)
    assert predict(client, body)["model_version"] == good
    assert client.get("/model").get_json()["refused_promotion"] is None
