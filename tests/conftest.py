"""Shared fixtures: a two-month slice of the real data, and one pipeline run over it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import Settings
from pipeline.usecase import load_use_case

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
    """The whole pipeline once over the slice: ingest -> features -> apply -> train -> promote.

    Materialization is left to each test, which needs it up to different instants.
    """
    from pipeline import feast_ops
    from pipeline.features import build_sources
    from pipeline.ingest import ingest
    from training.gate import promote_if_better
    from training.train import TrainConfig, run_training

    data_dir = tmp_path_factory.mktemp("slice_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(data_dir))
        mp.setenv("RAW_DIR", str(raw_slice_dir))
        settings = Settings.from_env()
        snapshot = ingest(settings, use_case)
        build_sources(settings, use_case, snapshot)
        feast_ops.apply(settings)
        store = feast_ops.feature_store(settings)
        config = TrainConfig(num_boost_round=80, holdout_start="2013-02-15")
        result = run_training(settings, use_case, store, config, say=lambda m: None)
        promotion = promote_if_better(settings, use_case, store, result["version"], say=lambda m: None)
    yield {"settings": settings, "snapshot": snapshot, "result": result, "promotion": promotion,
           "config": config, "store": store}


def require_tool(name: str) -> str:
    """The path of a system tool the test needs. In CI (CI=true) a missing tool fails the
    run: the project's own files (Makefile `sysdeps`) must install it. Elsewhere it skips."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (`make sysdeps` installs it from Debian's packages)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port for the whole test session."""
    binary = require_tool("redis-server")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
