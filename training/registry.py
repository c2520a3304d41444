"""The model registry: XGBoost UBJSON files addressed by their SHA-256, plus metadata.

Layout under ``DATA_DIR/models``::

    <version>/model.ubj        the booster, never pickled
    <version>/metadata.json    FeatureService, ordered features, window, metrics, sha256, ...
    champion.json              {"version", "sha256", "promoted_at"}: what serving loads

A version is the first 16 hex digits of the model file's SHA-256, so the same data and
config give the same version. Loading always re-hashes the file and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.files import atomic_write
from training.errors import TrainingError

MODEL_FILE = "model.ubj"
METADATA_FILE = "metadata.json"
CHAMPION_FILE = "champion.json"


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model_bytes: bytes
    metadata: dict

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def register(self, model_bytes: bytes, metadata: dict) -> str:
        """Store a model and its metadata; return its version. Idempotent for equal bytes."""
        sha = hashlib.sha256(model_bytes).hexdigest()
        version = sha[:16]
        target = self.root / version
        metadata = {**metadata, "version": version, "sha256": sha}
        atomic_write(target / MODEL_FILE, model_bytes)
        atomic_write(target / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True).encode())
        return version

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / METADATA_FILE).is_file())

    def metadata(self, version: str) -> dict:
        path = self.root / version / METADATA_FILE
        if not path.is_file():
            raise TrainingError(f"model {version!r} is not in the registry at {self.root}")
        return json.loads(path.read_text())

    def load(self, version: str) -> LoadedModel:
        """The model bytes of ``version``, after checking them against the registered SHA-256."""
        metadata = self.metadata(version)
        path = self.root / version / MODEL_FILE
        if not path.is_file():
            raise TrainingError(f"{path}: model file is missing")
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha != metadata["sha256"]:
            raise TrainingError(f"{path}: SHA-256 {sha[:16]}… does not match the registry's {metadata['sha256'][:16]}…")
        return LoadedModel(version, data, metadata)

    def promote(self, version: str) -> dict:
        """Make ``version`` the champion that serving loads. An explicit, separate step."""
        model = self.load(version)
        record = {"version": version, "sha256": model.metadata["sha256"],
                  "promoted_at": datetime.now(timezone.utc).isoformat()}
        atomic_write(self.root / CHAMPION_FILE, json.dumps(record, indent=2).encode())
        return record

    def champion(self) -> dict | None:
        path = self.root / CHAMPION_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def load_promoted(self, record: dict) -> LoadedModel:
        """The model a champion record names, refused if the registry's SHA-256 is not the
        one recorded at promotion."""
        model = self.load(record["version"])
        if model.metadata["sha256"] != record.get("sha256"):
            raise TrainingError(f"champion {record['version']}: registry hash differs from the promoted one")
        return model

    def load_champion(self) -> LoadedModel:
        record = self.champion()
        if record is None:
            raise TrainingError(f"no promoted model in {self.root}: run `training promote VERSION`")
        return self.load_promoted(record)
