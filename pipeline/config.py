"""Settings, built once at an entry point from the environment and passed down.

All state lives under ``DATA_DIR``; paths are resolved from the repository or the
configuration, never from the working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    """Where everything lives. ``from_env`` is the only constructor entry points use."""

    data_dir: Path
    raw_dir: Path | None = None
    repo_root: Path = REPO_ROOT

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("DATA_DIR") or REPO_ROOT / "data")
        if not data_dir.is_absolute():
            data_dir = REPO_ROOT / data_dir
        raw = env.get("RAW_DIR")
        raw_dir = Path(raw).resolve() if raw else None
        return cls(data_dir=data_dir.resolve(), raw_dir=raw_dir)

    @property
    def feature_repo(self) -> Path:
        return self.repo_root / "feature_repo"

    @property
    def raw_snapshots(self) -> Path:
        return self.data_dir / "raw"

    @property
    def sources(self) -> Path:
        return self.data_dir / "sources"

    @property
    def models(self) -> Path:
        return self.data_dir / "models"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def reports(self) -> Path:
        return self.data_dir / "reports"

    @property
    def reference_profile(self) -> Path:
        """The distribution profile new snapshots are compared with (validation)."""
        return self.data_dir / "validation" / "reference_profile.json"

    def export(self) -> None:
        """Publish DATA_DIR to the environment: ``feature_store.yaml`` and the Feast
        definitions read it (Feast expands ``${DATA_DIR}`` in its YAML)."""
        os.environ["DATA_DIR"] = str(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
