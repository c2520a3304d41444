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

from core.errors import ConfigError

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

#: Defaults the ``spark`` profile's YAML reads through ``${VAR}`` when they are not set (and no
#: local cluster is recorded under DATA_DIR: ``make cluster-up``, ``core/cluster.py``).
SPARK_DEFAULTS = {
    "SPARK_MASTER": "local[*]",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "SPARK_DRIVER_HOST": "127.0.0.1",
}


@dataclass(frozen=True)
class Settings:
    """Where everything lives. ``from_env`` is the only constructor entry points use; it
    validates every variable it reads (:class:`~core.errors.ConfigError` names it)."""

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
    #: Where the server listens (HOST, PORT).
    host: str = "127.0.0.1"
    port: int = 8000
    #: The Feast definitions, SQL pipelines and use case directory (FEATURE_REPO; default
    #: the repository's ``feature_repo/``): a copy lets a change be planned and tried
    #: without touching the shipped one. Its modules import themselves as the package
    #: ``feature_repo``, so the directory must be named that.
    feature_repo_dir: Path | None = None
    #: Feature views whose definitions may change under the champion this run
    #: (``--allow-definition-change VIEW``): apply records the change, and models pinned
    #: to the old definition must be retrained (``pipeline/definitions.py``).
    allow_definition_change: tuple[str, ...] = ()
    #: The MLflow store every training run is logged to (MLFLOW_TRACKING_URI; None: a SQLite
    #: store under DATA_DIR/mlflow, fixed when the settings are made, so settings derived for
    #: another DATA_DIR, e.g. the replay's, still log to it). See :attr:`tracking_uri`.
    mlflow_tracking_uri: str | None = None
    #: Whether MLFLOW_TRACKING_URI was set (messages name the setting, else the default store).
    mlflow_tracking_uri_set: bool = False
    #: The spark profile's defaults from the local cluster ``make cluster-up`` recorded under
    #: DATA_DIR (``core/cluster.py``): SPARK_MASTER, REGISTRY_URL, REDIS_ADDRESS, as pairs.
    cluster: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        """Fix the default MLflow store now, from this DATA_DIR (see ``mlflow_tracking_uri``)."""
        if self.mlflow_tracking_uri is None:
            object.__setattr__(self, "mlflow_tracking_uri", local_tracking_uri(Path(self.data_dir).absolute()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("DATA_DIR") or REPO_ROOT / "data")
        if not data_dir.is_absolute():
            data_dir = REPO_ROOT / data_dir
        if data_dir.exists() and not data_dir.is_dir():
            raise ConfigError(f"DATA_DIR={data_dir} is a file, not a directory: point DATA_DIR at a "
                              "directory (it is created if missing)")
        raw = env.get("RAW_DIR")
        raw_dir = Path(raw).resolve() if raw else None
        if raw_dir is not None and raw_dir.exists() and not raw_dir.is_dir():
            raise ConfigError(f"RAW_DIR={raw_dir} is a file: point RAW_DIR at the directory holding "
                              "your raw tables as <table>.parquet")
        profile = env.get("PROFILE") or "embedded"
        if profile not in PROFILES:
            raise ConfigError(f"PROFILE={profile!r} is not one of {', '.join(PROFILES)}")
        cluster = _cluster_settings(data_dir, env) if profile == "spark" else {}
        redis_address = env.get("REDIS_ADDRESS") or cluster.get("REDIS_ADDRESS") or "127.0.0.1:6379"
        host, _, redis_port = redis_address.rpartition(":")
        if not host or _port(redis_port) is None:
            raise ConfigError(f"REDIS_ADDRESS={redis_address!r} must be host:port, e.g. 127.0.0.1:6379")
        port = _port(env.get("PORT") or "8000")
        if port is None:
            raise ConfigError(f"PORT={env.get('PORT')!r} must be a TCP port number (1-65535)")
        host = env.get("HOST") or "127.0.0.1"
        tracking_uri = _tracking_uri(env.get("MLFLOW_TRACKING_URI"))
        return cls(data_dir=data_dir.resolve(), raw_dir=raw_dir, profile=profile, redis_address=redis_address,
                   feature_service=env.get("FEATURE_SERVICE") or None, host=host, port=port,
                   feature_repo_dir=_feature_repo(env.get("FEATURE_REPO")),
                   mlflow_tracking_uri=tracking_uri,
                   mlflow_tracking_uri_set=tracking_uri is not None,
                   cluster=tuple(sorted(cluster.items())))

    @property
    def feature_repo(self) -> Path:
        return self.feature_repo_dir or self.repo_root / "feature_repo"

    @property
    def feature_store_yaml(self) -> Path:
        """The profile's Feast configuration (the definitions are shared by all profiles)."""
        return self.feature_repo / PROFILES[self.profile]

    @property
    def tracking_uri(self) -> str:
        """The MLflow store training runs are logged to (``training/tracking.py``)."""
        return self.mlflow_tracking_uri or local_tracking_uri(self.data_dir)

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

    def environment(self) -> dict[str, str]:
        """What the Feast YAMLs read through ``${VAR}``: DATA_DIR, PROFILE, REDIS_ADDRESS,
        and for the spark profile its defaults (a variable already set wins)."""
        env = {"DATA_DIR": str(self.data_dir), "PROFILE": self.profile, "REDIS_ADDRESS": self.redis_address}
        if self.profile == "spark":
            defaults = {**SPARK_DEFAULTS,
                        "REGISTRY_URL": f"sqlite:///{self.data_dir / 'registry-spark.db'}",
                        # Spark's Python workers must import Feast: by default, this interpreter.
                        "PYSPARK_PYTHON": sys.executable,
                        # REDIS_ADDRESS is resolved already (self.redis_address: the variable, else the cluster's).
                        **{name: value for name, value in self.cluster if name != "REDIS_ADDRESS"}}
            env.update({name: os.environ.get(name) or value for name, value in defaults.items()})
        return env

    def export(self) -> None:
        """Publish :meth:`environment` to this process's environment (Feast expands
        ``${VAR}`` in the YAMLs from it) and create DATA_DIR."""
        os.environ.update(self.environment())
        self.data_dir.mkdir(parents=True, exist_ok=True)


def _cluster_settings(data_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The recorded local cluster's addresses the spark profile uses where the variable is
    not set (``make cluster-up`` records them; explicit variables win)."""
    from core.cluster import RECORDED_SETTINGS, ClusterError, recorded_settings

    if all(env.get(name) for name in RECORDED_SETTINGS):
        return {}
    try:
        return recorded_settings(data_dir)
    except ClusterError as e:
        raise ConfigError(str(e)) from None


def _feature_repo(value: str | None) -> Path | None:
    """FEATURE_REPO as a directory holding Feast definitions, or None when unset."""
    if not value:
        return None
    path = Path(value).resolve()
    if not (path / "repo.py").is_file() or not (path / "feature_store.yaml").is_file():
        raise ConfigError(f"FEATURE_REPO={value}: not a feature repository (it needs repo.py and "
                          "feature_store.yaml, as the shipped feature_repo/ has)")
    if path.name != "feature_repo":
        raise ConfigError(f"FEATURE_REPO={value}: the directory must be named feature_repo (its modules "
                          "import themselves as the package feature_repo)")
    return path


def local_tracking_uri(data_dir: Path) -> str:
    """The default MLflow store: a SQLite database under ``DATA_DIR/mlflow`` (its
    experiments' artifacts go next to it, in ``DATA_DIR/mlflow/artifacts``)."""
    return f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"


#: MLFLOW_TRACKING_URI schemes: a tracking server, or a database MLflow stores runs in.
#: (MLflow 3 deprecates its plain file store: not accepted.)
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def _tracking_uri(value: str | None) -> str | None:
    """MLFLOW_TRACKING_URI checked for its form (whether it answers is checked before a
    training run fits: ``training/tracking.py``), or None when unset."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    scheme = value.partition(":")[0].partition("+")[0].lower()
    if "://" not in value and scheme != "databricks" or scheme not in TRACKING_SCHEMES:
        raise ConfigError(f"MLFLOW_TRACKING_URI={value!r} is not an MLflow tracking URI: use a server "
                          "(http://host:5000), a database (sqlite:////absolute/path/mlflow.db, postgresql://...), "
                          "or leave it unset for the local store under DATA_DIR/mlflow")
    if scheme in ("http", "https"):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value)
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            parts = None
        if parts is None or not parts.hostname:
            raise ConfigError(f"MLFLOW_TRACKING_URI={value!r}: a server URI is http(s)://host[:port], e.g. http://127.0.0.1:5000")
    if scheme == "sqlite" and not value.startswith("sqlite:////"):
        raise ConfigError(f"MLFLOW_TRACKING_URI={value!r}: a SQLite store needs an absolute path "
                          "(sqlite:////absolute/path/mlflow.db), never one relative to the working directory")
    return value


def _port(text: str) -> int | None:
    """``text`` as a TCP port number, or None if it is not one."""
    text = text.strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        return None
    return int(text)


def shell_exports(settings: Settings) -> str:
    """``export NAME=value`` lines for a shell: :meth:`Settings.environment` and
    ``FEAST_YAML``, the profile's Feast configuration (the Makefile's ``feast`` target
    evaluates them before it runs the Feast CLI)."""
    import shlex

    values = {**settings.environment(), "FEAST_YAML": str(settings.feature_store_yaml)}
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in values.items())


def main(argv: list[str] | None = None) -> int:
    """``python -m core.settings shell``: the settings as shell exports (see
    :func:`shell_exports`); an invalid setting is an error on stderr and exit code 2."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.settings",
                                     description="The platform's settings, validated, as shell exports.")
    parser.add_argument("what", choices=["shell"])
    parser.parse_args(argv)
    try:
        print(shell_exports(Settings.from_env()))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
