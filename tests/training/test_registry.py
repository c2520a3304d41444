"""The model registry: hash-addressed, tamper-evident, promotion explicit."""

from __future__ import annotations

import json

import pytest

from training.errors import TrainingError
from training.registry import ModelRegistry


def test_version_is_the_hash_and_registering_twice_is_idempotent(tmp_path):
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(b"model-bytes", {"feature_service": "fs", "features": ["a"]})
    v2 = registry.register(b"model-bytes", {"feature_service": "fs", "features": ["a"]})
    assert v1 == v2 and registry.versions() == [v1]
    assert registry.load(v1).model_bytes == b"model-bytes"


def test_tampered_model_file_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    version = registry.register(b"model-bytes", {"features": []})
    (tmp_path / version / "model.ubj").write_bytes(b"other bytes")
    with pytest.raises(TrainingError, match="SHA-256"):
        registry.load(version)
    with pytest.raises(TrainingError, match="SHA-256"):
        registry.promote(version)
    assert registry.champion() is None, "a tampered model was promoted"


def test_promotion_is_explicit_and_champion_is_loaded_by_hash(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(TrainingError, match="no promoted model"):
        registry.load_champion()
    a = registry.register(b"a", {"features": []})
    b = registry.register(b"b", {"features": []})
    registry.promote(a)
    assert registry.load_champion().version == a
    registry.promote(b)
    assert registry.load_champion().version == b
    record = json.loads((tmp_path / "champion.json").read_text())
    assert record["sha256"].startswith(b), "champion pointer does not carry the model hash"
