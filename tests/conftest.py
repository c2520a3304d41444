"""Shared fixtures: a two-month slice of the real data, and one pipeline run over it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from core.settings import Settings
from core.usecase import load_use_case
from serving.process import free_port

#: The end-to-end slice: two winter months of real flights.
SLICE_MONTHS = (1, 2)


@pytest.fixture(scope="session")
def use_case():
    return load_use_case()


@pytest.fixture(scope="session")
def builtin_raw(use_case) -> dict[str, pd.DataFrame]:
    return use_case.load_builtin()


def write_raw_dir(tables: dict[str, pd.DataFrame], path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(path / f"{name}.parquet", index=False)
    return path


def slice_tables(tables: dict[str, pd.DataFrame], months=SLICE_MONTHS) -> dict[str, pd.DataFrame]:
    out = dict(tables)
    out["flights"] = tables["flights"][tables["flights"]["month"].isin(months)].reset_index(drop=True)
    out["weather"] = tables["weather"][tables["weather"]["month"].isin(months)].reset_index(drop=True)
    return out


@pytest.fixture(scope="session")
def raw_slice_dir(tmp_path_factory, builtin_raw) -> Path:
    """RAW_DIR with the slice as Parquet files, the way a user brings their own data."""
    return write_raw_dir(slice_tables(builtin_raw), tmp_path_factory.mktemp("raw_slice"))


@pytest.fixture
def settings_for(monkeypatch):
    """Build Settings for a data dir (and optional raw dir), with DATA_DIR exported."""

    def make(data_dir: Path, raw_dir: Path | None = None) -> Settings:
        monkeypatch.setenv("DATA_DIR", str(data_dir))
        if raw_dir is None:
            monkeypatch.delenv("RAW_DIR", raising=False)
        else:
            monkeypatch.setenv("RAW_DIR", str(raw_dir))
        return Settings.from_env()

    return make


@pytest.fixture(scope="session")
def slice_run(tmp_path_factory, raw_slice_dir, use_case):
    """The nightly flow once over the slice (flow.nightly): every stage but materialize.

    Materialization is left to each test, which needs it up to different instants.
    """
    from flow.nightly import FlowOptions, FlowRun
    from training.train import TrainConfig

    data_dir = tmp_path_factory.mktemp("slice_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(data_dir))
        mp.setenv("RAW_DIR", str(raw_slice_dir))
        settings = Settings.from_env()
        options = FlowOptions(stages=("ingest", "features", "apply", "train", "promote"),
                              train=TrainConfig(num_boost_round=80, holdout_start="2013-02-15"))
        flow = FlowRun(settings, use_case, options).run()
    yield {"settings": settings, "snapshot": flow.snapshot, "result": flow.model, "promotion": flow.promotion,
           "config": options.train, "store": flow.store}


def require_tool(name: str, environ=None) -> str:
    """The path of a system tool the tests need (redis-server, java, chromium). A missing
    tool FAILS the test, in CI and locally alike: a skip would let a run pass without
    testing what it claims to. `make test` installs them (Makefile `sysdeps`)."""
    env = os.environ if environ is None else environ
    path = shutil.which(name, path=env.get("PATH"))
    if path is None:
        pytest.fail(f"{name} is not installed: run `make sysdeps` as root "
                    f"(it installs it from Debian's packages), or install it yourself")
    return path


#: Serving tests read the online store as materialized up to this instant (a held-out day).
SERVE_END = pd.Timestamp("2013-02-27T23:00:00Z").to_pydatetime()


def copy_data_dir(source: Path, target: Path, ignore: tuple[str, ...] = ("logs", "metrics")) -> Path:
    """A private DATA_DIR: models, registry, snapshots and online store of ``source``
    (without the entries named ``ignore``: by default no logs).

    Feast's registry records the source tables' absolute paths, so the copy reads
    ``source``'s (read-only) Parquet files; everything it writes stays in ``target``.
    SQLite files (the online store, in WAL mode) are copied through SQLite's backup API
    (:func:`feast_plugins.packed_layout.copy_database`): a file copy could miss the commits
    still in its ``-wal`` file, or tear under a writer.
    """
    import shutil

    from feast_plugins.packed_layout import copy_database

    databases: list[Path] = []
    skip = shutil.ignore_patterns(*ignore)

    def ignored(directory: str, names: list[str]) -> set[str]:
        out = set(skip(directory, names))
        for name in names:
            path = Path(directory) / name
            if name not in out and is_sqlite(path):
                databases.append(path)
                out.add(name)
                out.update(name + suffix for suffix in ("-wal", "-shm", "-journal"))
        return out

    shutil.copytree(source, target, ignore=ignored)
    for database in databases:
        copy_database(database, target / database.relative_to(source))
    return target


def is_sqlite(path: Path) -> bool:
    """Whether ``path`` is a SQLite database file (its 16-byte header)."""
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


@pytest.fixture(scope="session")
def served_template(slice_run, tmp_path_factory) -> Path:
    """The slice's DATA_DIR with its SQLite online store materialized up to SERVE_END."""
    target = copy_data_dir(slice_run["settings"].data_dir, tmp_path_factory.mktemp("served") / "data")
    # Other tests may have materialized the slice's store past SERVE_END: start from an
    # empty registry and store (apply creates the tables only for new feature views).
    for name in ("online_store.db", "registry.db", "registry.redis.db"):
        (target / name).unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(target))
        materialize_into(Settings.from_env())
    return target


@pytest.fixture
def served_dir(served_template, tmp_path, monkeypatch) -> Path:
    """A DATA_DIR of its own for one test (promotions, logs and store changes stay there)."""
    target = copy_data_dir(served_template, tmp_path / "data")
    monkeypatch.setenv("DATA_DIR", str(target))
    monkeypatch.delenv("PROFILE", raising=False)
    return target


class RedisServer:
    """A real redis-server on a free loopback port, data in ``directory`` (RDB on SAVE)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "RedisServer":
        import shutil

        import redis

        binary = shutil.which("redis-server")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def save(self) -> None:
        import redis

        redis.Redis(host="127.0.0.1", port=self.port).save()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    """A started redis-server, stopped afterwards (a missing binary fails the test)."""
    require_tool("redis-server")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    yield server
    server.stop()


def materialize_into(settings: Settings, end=SERVE_END) -> None:
    """``feast apply`` + ``materialize`` from the epoch for ``settings``' online store profile."""
    from pipeline.apply import apply
    from pipeline.materialize import EPOCH, materialize
    apply(settings)
    materialize(settings, end=end, start=EPOCH)


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory):
    """One redis-server for a whole test session (for session-scoped fixtures, e.g. the
    spark profile's online store)."""
    require_tool("redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis-session")).start()
    yield server
    server.stop()


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """No test may pass the suite by skipping: any skipped test fails the run."""
    if _SKIPPED and session.exitstatus == 0:
        print(f"\nerror: {len(_SKIPPED)} test(s) skipped; this suite allows none: {_SKIPPED[:5]}")
        session.exitstatus = 1
