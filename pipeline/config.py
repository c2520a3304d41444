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
#: Online store profile -> its feature_store YAML in feature_repo/.
ONLINE_STORES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}


@dataclass(frozen=True)
class Settings:
    """Where everything lives. ``from_env`` is the only constructor entry points use."""

    data_dir: Path
    raw_dir: Path | None = None
    repo_root: Path = REPO_ROOT
    #: The online store profile: ``sqlite`` (feature_store.yaml) or ``redis``
    #: (feature_store.redis.yaml), from ONLINE_STORE. Same definitions either way.
    online_store: str = "sqlite"
    #: host:port of Redis for the ``redis`` profile (REDIS_ADDRESS).
    redis_address: str = "127.0.0.1:6379"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("DATA_DIR") or REPO_ROOT / "data")
        if not data_dir.is_absolute():
            data_dir = REPO_ROOT / data_dir
        raw = env.get("RAW_DIR")
        raw_dir = Path(raw).resolve() if raw else None
        online_store = env.get("ONLINE_STORE") or "sqlite"
        if online_store not in ONLINE_STORES:
            from pipeline.errors import PipelineError

            raise PipelineError(f"ONLINE_STORE={online_store!r}: expected one of {sorted(ONLINE_STORES)}")
        return cls(data_dir=data_dir.resolve(), raw_dir=raw_dir, online_store=online_store,
                   redis_address=env.get("REDIS_ADDRESS") or "127.0.0.1:6379")

    @property
    def feature_repo(self) -> Path:
        return self.repo_root / "feature_repo"

    @property
    def feature_store_yaml(self) -> Path:
        """The Feast configuration of this online store profile."""
        return self.feature_repo / ONLINE_STORES[self.online_store]

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

    def export(self) -> None:
        """Publish DATA_DIR and REDIS_ADDRESS to the environment: the
        feature_store YAMLs and the Feast definitions read them (Feast expands ``${VAR}``)."""
        os.environ["DATA_DIR"] = str(self.data_dir)
        os.environ["REDIS_ADDRESS"] = self.redis_address
        self.data_dir.mkdir(parents=True, exist_ok=True)
