"""Settings, built once at an entry point from the environment and passed down.

All state lives under ``DATA_DIR``; paths are resolved from the repository or the
configuration, never from the working directory.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Feature store profiles (PROFILE) and their Feast configuration in feature_repo/; the
#: feature definitions are the same for all. ``embedded``: DuckDB (ASOF store) + SQLite,
#: nothing to start. ``redis``: the same with Redis as the online store. ``spark``: Spark
#: offline store and batch engine, Redis online store, SQL registry.
PROFILES = {
    "embedded": "feature_store.yaml",
    "redis": "feature_store.redis.yaml",
    "spark": "feature_store.spark.yaml",
}

#: Defaults the ``spark`` profile's YAML reads through ``${VAR}`` when they are not set.
SPARK_DEFAULTS = {
    "SPARK_MASTER": "local[*]",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "SPARK_DRIVER_HOST": "127.0.0.1",
}


class ConfigError(ValueError):
    """A setting in the environment is invalid; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Where everything lives. ``from_env`` is the only constructor entry points use."""

    data_dir: Path
    raw_dir: Path | None = None
    repo_root: Path = REPO_ROOT
    #: Which feature_store YAML (see PROFILES), from PROFILE.
    profile: str = "embedded"
    #: host:port of Redis for the ``redis`` and ``spark`` profiles (REDIS_ADDRESS).
    redis_address: str = "127.0.0.1:6379"
    #: The FeatureService training, the model gate and monitoring use (FEATURE_SERVICE),
    #: instead of the use case's default; serving follows each model's own.
    feature_service: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("DATA_DIR") or REPO_ROOT / "data")
        if not data_dir.is_absolute():
            data_dir = REPO_ROOT / data_dir
        raw = env.get("RAW_DIR")
        raw_dir = Path(raw).resolve() if raw else None
        profile = env.get("PROFILE") or "embedded"
        if profile not in PROFILES:
            raise ConfigError(f"PROFILE={profile!r} is not one of {', '.join(PROFILES)}")
        return cls(data_dir=data_dir.resolve(), raw_dir=raw_dir, profile=profile,
                   redis_address=env.get("REDIS_ADDRESS") or "127.0.0.1:6379",
                   feature_service=env.get("FEATURE_SERVICE") or None)

    @property
    def feature_repo(self) -> Path:
        return self.repo_root / "feature_repo"

    @property
    def feature_store_yaml(self) -> Path:
        """The profile's Feast configuration (the definitions are shared by all profiles)."""
        return self.feature_repo / PROFILES[self.profile]

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
        """Publish DATA_DIR, PROFILE and REDIS_ADDRESS (and the spark profile's defaults) to
        the environment: the Feast YAMLs and definitions read them (Feast expands ``${VAR}``)."""
        os.environ["DATA_DIR"] = str(self.data_dir)
        os.environ["PROFILE"] = self.profile
        os.environ["REDIS_ADDRESS"] = self.redis_address
        if self.profile == "spark":
            for name, value in SPARK_DEFAULTS.items():
                os.environ.setdefault(name, value)
            os.environ.setdefault("REGISTRY_URL", f"sqlite:///{self.data_dir / 'registry-spark.db'}")
            # Spark's Python workers must import Feast: by default, this interpreter.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        self.data_dir.mkdir(parents=True, exist_ok=True)
