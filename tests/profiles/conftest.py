"""The local cluster (core/cluster.py), started once per test session: a Spark standalone
master and two workers, PostgreSQL and redis-server, each a real process.

Its state lives in a directory of its own under /tmp (not pytest's tmp_path, which only
root may enter: PostgreSQL runs as the ``postgres`` system user when the tests run as
root). Stopping it at the end of the session is checked: no process of any service's
session may be left, and no port may still answer.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from core.cluster import ClusterOptions, down, leftovers, up
from tests.conftest import require_tool


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def cluster_addresses(record: dict) -> list[str]:
    """host:port of every service the record names (Spark master, PostgreSQL, Redis)."""
    registry = record["registry_url"].rpartition("@")[2].partition("/")[0]
    return [record["spark_master"].removeprefix("spark://"), registry, record["redis_address"]]


@pytest.fixture(scope="session")
def cluster():
    """The started cluster: ``{"data_dir": ..., "record": ...}`` (its record names the
    addresses: spark_master, registry_url, redis_address). Stopped after the session, and
    the stop checked."""
    for tool in ("java", "redis-server"):
        require_tool(tool)
    base = Path(tempfile.mkdtemp(prefix="test-cluster-"))
    os.chmod(base, 0o755)  # reachable by the postgres system user
    try:
        record = up(base, ClusterOptions(workers=2, worker_cores=1, worker_memory="1g"), say=lambda _: None)
        yield {"data_dir": base, "record": record}
        down(base, say=lambda _: None)
        assert not leftovers(record), f"cluster processes left after cluster-down: {leftovers(record)}"
        still = [a for a in cluster_addresses(record) if _answers(a)]
        assert not still, f"addresses still answering after cluster-down: {still}"
        assert not (base / "cluster").exists(), "cluster-down left DATA_DIR/cluster behind"
    finally:
        down(base, say=lambda _: None)  # after a failed start or check: nothing may outlive the session
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster_env(cluster, monkeypatch):
    """The cluster's addresses as the variables the spark profile reads (explicit, so they
    win over anything recorded under another DATA_DIR)."""
    record = cluster["record"]
    monkeypatch.setenv("SPARK_MASTER", record["spark_master"])
    monkeypatch.setenv("REGISTRY_URL", record["registry_url"])
    monkeypatch.setenv("REDIS_ADDRESS", record["redis_address"])
    return record
