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


def _outside_model(directory, data: bytes = b"evil-bytes") -> str:
    """A model with a well-formed metadata.json in ``directory``, outside any registry."""
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True)
    (directory / "model.ubj").write_bytes(data)
    (directory / "metadata.json").write_text(json.dumps({"version": sha[:16], "sha256": sha, "features": []}))
    return sha


@pytest.mark.parametrize("version", ["../evil", "PATH", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0",
                                     "", None, 123])
def test_a_version_is_the_registrys_hash_name_never_a_path(tmp_path, version):
    registry = ModelRegistry(tmp_path / "models")
    registry.register(b"a", {"features": []})
    _outside_model(tmp_path / "evil")
    if version == "PATH":
        version = str(tmp_path / "evil")  # an absolute path
    for call in (registry.load, registry.metadata, registry.promote):
        with pytest.raises(TrainingError, match="is not a model version"):
            call(version)
    assert registry.champion() is None


def test_a_directory_not_named_after_its_models_hash_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path)
    version = registry.register(b"a", {"features": []})
    other = "0123456789abcdef"
    (tmp_path / version).rename(tmp_path / other)
    with pytest.raises(TrainingError, match="does not name version"):
        registry.load(other)


@pytest.mark.parametrize("content", ['{"version": 123}', "null", '"0123456789abcdef"', "[]", "{}", "{oops",
                                     '{"version": "../../evil", "sha256": "%s"}' % ("0" * 64),
                                     '{"version": "0123456789abcdef", "sha256": "%s"}' % ("1" * 64)])
def test_champion_json_that_is_not_a_champion_record_is_an_error_naming_it(tmp_path, content):
    registry = ModelRegistry(tmp_path)
    (tmp_path / "champion.json").write_text(content)
    with pytest.raises(TrainingError, match="champion.json"):
        registry.champion()
    with pytest.raises(TrainingError, match="champion.json"):
        registry.load_champion()


def test_promotions_are_kept_and_fallbacks_go_newest_first_without_the_failed_one(tmp_path):
    registry = ModelRegistry(tmp_path)
    a, b, c = (registry.register(bytes([n]), {"features": []}) for n in range(3))
    assert registry.fallbacks() == []
    for version in (a, b, a, c):
        registry.promote(version)
    assert [r["version"] for r in registry.promotions()] == [a, b, a, c]
    assert [r["version"] for r in registry.fallbacks(c)] == [a, b]
    assert all(r["sha256"].startswith(r["version"]) for r in registry.fallbacks())
    # A broken history is no way back, but no failure either; a bad entry is skipped.
    history = tmp_path / "history.json"
    records = json.loads(history.read_text())["promotions"]
    history.write_text(json.dumps({"promotions": [{"version": "../../evil"}, *records[-2:]]}))
    assert [r["version"] for r in registry.fallbacks(c)] == [a]
    history.write_text("\x00 not json")
    assert registry.fallbacks(c) == []


def test_the_first_promotion_with_a_history_keeps_the_champion_before_it(tmp_path):
    """A registry from before the history: its champion was a good promotion, a fallback."""
    registry = ModelRegistry(tmp_path)
    a, b = (registry.register(bytes([n]), {"features": []}) for n in range(2))
    registry.promote(a)
    (tmp_path / "history.json").unlink()
    registry.promote(b)
    assert [r["version"] for r in registry.fallbacks(b)] == [a]


@pytest.mark.parametrize("command", [["promote", "PATH", "--force"], ["promote", "../../evil", "--force"],
                                     ["show", "../x"], ["score", "--version", "/tmp", "--output", "x.parquet"]])
def test_training_commands_refuse_a_version_that_is_not_one(tmp_path, monkeypatch, capsys, command):
    from cli.training import main

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    _outside_model(tmp_path / "evil")
    command = [str(tmp_path / "evil") if part == "PATH" else part for part in command]
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    assert "is not a model version" in capsys.readouterr().err
    assert not (tmp_path / "data" / "models" / "champion.json").exists()
