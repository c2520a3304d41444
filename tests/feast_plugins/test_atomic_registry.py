"""The registry store named in feature_store.yaml writes atomically: a write that fails
half-way leaves the old registry (Feast's own store leaves a truncated file), and a reader
racing many writes always parses a complete registry."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.repo_config import RegistryConfig

from core.settings import Settings
from feast_plugins.atomic_registry import AtomicFileRegistryStore

ROOT = Path(__file__).resolve().parents[2]


def registry_with(n: int) -> RegistryProto:
    proto = RegistryProto()
    for i in range(n):
        proto.project_metadata.add(project=f"p{i}", project_uuid="x" * 200)
    return proto


class FailsMidWrite:
    """A registry whose bytes cannot be produced (as a full disk fails a write part-way)."""

    version_id = ""

    def __init__(self):
        from google.protobuf.timestamp_pb2 import Timestamp

        self.last_updated = Timestamp()

    def SerializeToString(self, **kwargs):  # noqa: N802 (protobuf's name)
        raise OSError("disk full")


@pytest.mark.parametrize("kind", [FileRegistryStore, AtomicFileRegistryStore])
def test_a_failed_write_leaves_the_old_registry_only_with_the_atomic_store(tmp_path, kind):
    path = tmp_path / "registry.db"
    store = kind(RegistryConfig(path=str(path)), tmp_path)
    store.update_registry_proto(registry_with(3))
    with pytest.raises(OSError, match="disk full"):
        store.update_registry_proto(FailsMidWrite())
    if kind is FileRegistryStore:
        assert path.read_bytes() == b"", "Feast's store no longer truncates first: the workaround may go"
    else:
        assert len(store.get_registry_proto().project_metadata) == 3
        assert [p.name for p in tmp_path.iterdir()] == ["registry.db"], "temporary file left"


def test_a_reader_racing_writes_always_sees_a_whole_registry(tmp_path):
    store = AtomicFileRegistryStore(RegistryConfig(path=str(tmp_path / "registry.db")), tmp_path)
    store.update_registry_proto(registry_with(200))
    done, bad = threading.Event(), []

    def read():
        while not done.is_set():
            n = len(store.get_registry_proto().project_metadata)
            if n not in (200, 201):
                bad.append(n)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            store.update_registry_proto(registry_with(200 + i % 2))
    finally:
        done.set()
        reader.join()
    assert bad == []


@pytest.mark.parametrize("yaml", ["feature_store.yaml", "feature_store.redis.yaml"])
def test_the_file_registry_profiles_use_the_atomic_store(yaml, monkeypatch, tmp_path):
    from feast import FeatureStore

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = Settings.from_env()
    store = FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=ROOT / "feature_repo" / yaml)
    assert isinstance(store.registry._registry_store, AtomicFileRegistryStore)
