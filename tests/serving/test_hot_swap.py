"""Model hot swap on promotion: checked first, swapped atomically, bad models refused."""

from __future__ import annotations

import json

import pytest
import xgboost as xgb

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


def refusals(client) -> float:
    from tests.serving.test_server import samples

    return samples(client.get("/metrics").get_data(as_text=True), "serving_model_swaps_total").get(
        (("result", "refused"),), 0)


def outside_variant(registry: ModelRegistry, base: str, directory) -> str:
    """A model that would load and serve (``base``'s trees, another file) in ``directory``,
    outside the registry; its version."""
    version = register_variant(registry, base, "outside")
    (registry.root / version).rename(directory)
    return version


@pytest.mark.parametrize("content", ['{"version": 123}', "null", '"VERSION"', "[]", "{}",
                                     '{"version": "../../evil", "sha256": "SHA"}', "ABSOLUTE"])
def test_champion_json_that_is_not_a_champion_record_is_refused_and_cleared_when_restored(served, content):
    """Bad contents are refused (not a 500, not ignored), the old model keeps serving, and
    the refusal goes once champion.json names the served model again. A version that is a
    path never loads a model from outside the registry."""
    client, body, registry, base = served
    champion = registry.root / CHAMPION_FILE
    good = champion.read_text()
    evil = outside_variant(registry, base, registry.root.parent.parent / "evil")
    sha = json.loads((registry.root.parent.parent / "evil" / "metadata.json").read_text())["sha256"]
    if content == "ABSOLUTE":
        content = json.dumps({"version": str(registry.root.parent.parent / "evil"), "sha256": sha})
    content = content.replace("VERSION", base).replace("SHA", sha)
    before = refusals(client)
    predict(client, body)
    champion.write_text(content)
    answer = predict(client, body)
    assert answer["model_version"] == base, f"{content}: served {answer['model_version']} (outside model {evil})"
    refused = client.get("/model").get_json()["refused_promotion"]
    assert refused and "champion.json" in refused["error"], (content, refused)
    assert refusals(client) - before == 1
    readyz = client.get("/readyz")
    assert readyz.status_code == 200 and readyz.get_json()["status"] == "degraded", readyz.get_json()
    champion.write_text(good)  # restored: names the served model again
    assert predict(client, body)["model_version"] == base
    assert client.get("/model").get_json()["refused_promotion"] is None
    assert client.get("/readyz").get_json()["status"] == "ready"


def test_a_refusal_is_cleared_once_champion_json_names_the_served_model_again(served):
    client, body, registry, base = served
    champion = registry.root / CHAMPION_FILE
    good = champion.read_text()
    version = register_variant(registry, base, "f")
    path = registry.root / version / MODEL_FILE
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    write_champion(registry, version)
    assert predict(client, body)["model_version"] == base
    assert client.get("/model").get_json()["refused_promotion"]["version"] == version
    champion.write_text(good)  # the bad deploy rolled back
    assert predict(client, body)["model_version"] == base
    assert client.get("/model").get_json()["refused_promotion"] is None, "the refusal outlived the rollback"
    assert client.get("/readyz").get_json()["status"] == "ready"
