"""core/cluster.py: what it needs is checked before anything starts, stopping a service
stops everything it started, and the spark profile's settings follow the recorded cluster
(explicit variables win; a dead cluster's record is an error naming it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.cluster import (
    ClusterError,
    ClusterOptions,
    _start_time,
    _stop,
    find_tools,
    leftovers,
    record_path,
    session_members,
)
from core.errors import ConfigError
from core.settings import Settings


def test_missing_programs_fail_fast_naming_each_and_how_to_install(tmp_path):
    with pytest.raises(ClusterError) as error:
        find_tools({"PATH": str(tmp_path)})  # no java, no redis-server on this PATH
    message = str(error.value)
    assert "Java 17+" in message and "default-jre-headless" in message
    assert "redis-server" in message
    assert "make sysdeps" in message


def test_cluster_options_are_validated_naming_the_variable():
    assert ClusterOptions.from_env({"CLUSTER_WORKERS": "3", "CLUSTER_WORKER_MEMORY": "2g"}) == \
        ClusterOptions(workers=3, worker_memory="2g")
    with pytest.raises(ClusterError, match="CLUSTER_WORKERS='two'"):
        ClusterOptions.from_env({"CLUSTER_WORKERS": "two"})
    with pytest.raises(ClusterError, match="CLUSTER_WORKER_MEMORY='lots'"):
        ClusterOptions.from_env({"CLUSTER_WORKER_MEMORY": "lots"})


def test_stopping_a_service_stops_what_it_started_even_a_child_ignoring_sigterm():
    """A Spark worker starts executors, which start Python workers: stopping the worker
    must leave none of them. Here a 'service' starts a child that ignores SIGTERM; the stop
    finds it by its session and kills it."""
    script = ("import signal, subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(120)'])\n"
              "time.sleep(120)\n")
    service = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    record = {"processes": [{"name": "service", "pid": service.pid, "start": _start_time(service.pid)}]}

    def child_ignores_sigterm() -> bool:
        for pid in set(session_members([service.pid])) - {service.pid}:
            status = Path(f"/proc/{pid}/status").read_text()
            ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
            return bool(ignored & (1 << (signal.SIGTERM - 1)))
        return False

    deadline = time.monotonic() + 10
    while not child_ignores_sigterm() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child_ignores_sigterm(), "the service's child did not start ignoring SIGTERM"
    assert _stop(record["processes"], say=lambda _: None, timeout=1) == ["service"]
    service.wait(timeout=5)
    assert leftovers(record) == []


def _write_record(data_dir, pid, start):
    path = record_path(data_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"spark_master": "spark://127.0.0.1:7077", "registry_url": "postgresql+psycopg://f:p@h:5/f",
                                "redis_address": "127.0.0.1:6390",
                                "processes": [{"name": "spark-master", "pid": pid, "start": start}]}))


def test_spark_settings_follow_the_recorded_cluster_and_explicit_variables_win(tmp_path, monkeypatch):
    import os

    _write_record(tmp_path, os.getpid(), _start_time(os.getpid()))  # "alive": this very process
    for name in ("SPARK_MASTER", "REGISTRY_URL", "REDIS_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "PROFILE": "spark"})
    env = settings.environment()
    assert env["SPARK_MASTER"] == "spark://127.0.0.1:7077"
    assert env["REGISTRY_URL"] == "postgresql+psycopg://f:p@h:5/f"
    assert env["REDIS_ADDRESS"] == settings.redis_address == "127.0.0.1:6390"
    monkeypatch.setenv("SPARK_MASTER", "spark://elsewhere:7077")
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "PROFILE": "spark", "REDIS_ADDRESS": "redis.internal:6379"})
    env = settings.environment()
    assert env["SPARK_MASTER"] == "spark://elsewhere:7077"
    assert settings.redis_address == env["REDIS_ADDRESS"] == "redis.internal:6379"
    # Other profiles ignore the record.
    assert Settings.from_env({"DATA_DIR": str(tmp_path), "PROFILE": "redis"}).redis_address == "127.0.0.1:6379"


def test_a_dead_clusters_record_is_an_error_naming_it(tmp_path):
    _write_record(tmp_path, 2 ** 22 + 17, "1")  # no such process
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"DATA_DIR": str(tmp_path), "PROFILE": "spark"})
    assert str(record_path(tmp_path)) in str(error.value)
    assert "make cluster-down" in str(error.value) and "spark-master" in str(error.value)
