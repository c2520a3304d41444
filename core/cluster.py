"""A local cluster for ``PROFILE=spark``: a Spark standalone master and workers, PostgreSQL
(the SQL registry) and redis-server (the online store), each a process of its own.

``make cluster-up`` (``python -m core.cluster up``) starts them on free loopback ports,
prints their addresses and records them in ``DATA_DIR/cluster/cluster.json``; the spark
profile's settings read that record (``core/settings.py``: an explicit SPARK_MASTER,
REGISTRY_URL or REDIS_ADDRESS still wins), so ``PROFILE=spark make pipeline`` and
``PROFILE=spark make serve`` run against the cluster with nothing else set.
``make cluster-down`` stops every process the record names, waits until none of their
process groups has a process left, and removes ``DATA_DIR/cluster``.

What runs:

- Spark's own deploy classes from the pyspark package (``bin/spark-class
  org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), the daemons' heap bounded
  by ``SPARK_DAEMON_MEMORY``; each worker offers ``--cores``/``--memory`` to executors (whose
  heap is the application's ``spark.executor.memory``, set in feature_store.spark.yaml).
- PostgreSQL from Debian's packages: ``initdb`` into ``DATA_DIR/cluster/postgres`` with a
  generated password, then ``postgres`` listening on loopback only. PostgreSQL refuses to run
  as root: as root, it runs as the ``postgres`` system user Debian's package creates, which
  must be able to reach ``DATA_DIR`` (the check says so when it cannot).
- redis-server, nothing persisted.

This module sits in ``core`` because the settings read its record and nothing here needs
more than the standard library (no Feast, no Spark import): the tests, the benchmarks and
any layer can start the same cluster.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.errors import PlatformError

#: The cluster's directory under DATA_DIR, and its record (addresses, processes).
CLUSTER_DIR = "cluster"
RECORD_NAME = "cluster.json"
#: PostgreSQL's user, database and the registry URL's driver (psycopg 3, via SQLAlchemy).
PG_USER = "feast"
PG_DATABASE = "feast"
#: The system user PostgreSQL runs as when we are root (created by Debian's postgresql package).
PG_SYSTEM_USER = "postgres"
#: How long a service may take to answer after it is started, and to exit when stopped.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0


class ClusterError(PlatformError):
    """The cluster cannot start or stop; the message says what is missing or what failed."""


@dataclass(frozen=True)
class ClusterOptions:
    """How big the local cluster is (``make cluster-up`` reads CLUSTER_WORKERS,
    CLUSTER_WORKER_CORES, CLUSTER_WORKER_MEMORY, CLUSTER_DAEMON_MEMORY)."""

    workers: int = 2
    worker_cores: int = 1
    #: What each worker offers to executors (an executor's heap is spark.executor.memory).
    worker_memory: str = "1g"
    #: The heap of the master and worker daemons themselves.
    daemon_memory: str = "256m"
    host: str = "127.0.0.1"

    @classmethod
    def from_env(cls, env=None) -> "ClusterOptions":
        env = os.environ if env is None else env
        values = {}
        for name, field, kind in (("CLUSTER_WORKERS", "workers", int), ("CLUSTER_WORKER_CORES", "worker_cores", int),
                                  ("CLUSTER_WORKER_MEMORY", "worker_memory", str),
                                  ("CLUSTER_DAEMON_MEMORY", "daemon_memory", str)):
            text = (env.get(name) or "").strip()
            if not text:
                continue
            if kind is int:
                if not text.isdigit() or int(text) < 1:
                    raise ClusterError(f"{name}={text!r} must be a whole number >= 1")
                values[field] = int(text)
            else:
                if not (text[:-1].isdigit() and text[-1].lower() in "mg"):
                    raise ClusterError(f"{name}={text!r} must be a JVM memory size such as 512m or 2g")
                values[field] = text
        return cls(**values)


def cluster_dir(data_dir: Path) -> Path:
    return Path(data_dir) / CLUSTER_DIR


def record_path(data_dir: Path) -> Path:
    return cluster_dir(data_dir) / RECORD_NAME


def read_record(data_dir: Path) -> dict | None:
    """The running cluster's record under ``data_dir``, or None when there is none."""
    path = record_path(data_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ClusterError(f"{path} is not a readable cluster record ({e}): run `make cluster-down`, "
                           "then `make cluster-up`") from None


#: The settings the spark profile takes from a recorded cluster, and the record's keys.
RECORDED_SETTINGS = {"SPARK_MASTER": "spark_master", "REGISTRY_URL": "registry_url", "REDIS_ADDRESS": "redis_address"}


def recorded_settings(data_dir: Path) -> dict[str, str]:
    """SPARK_MASTER, REGISTRY_URL and REDIS_ADDRESS of the cluster recorded under
    ``data_dir`` (empty when none is); a :class:`ClusterError` when the record names
    processes that are gone (a cluster that died or a machine that rebooted)."""
    record = read_record(data_dir)
    if record is None:
        return {}
    gone = [f"{p['name']} (pid {p['pid']})" for p in record.get("processes", []) if not alive(p)]
    if gone:
        raise ClusterError(f"{record_path(data_dir)} records a local cluster that is no longer running "
                           f"({', '.join(gone)} gone): run `make cluster-down`, then `make cluster-up` (or set "
                           "SPARK_MASTER, REGISTRY_URL and REDIS_ADDRESS yourself)")
    return {name: record[key] for name, key in RECORDED_SETTINGS.items()}


# ---- processes ---------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (index 0 is the state), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22 of stat: start time since boot


def alive(process: dict) -> bool:
    """Whether the recorded process still runs (the same pid *and* start time: not a reused pid)."""
    fields = _stat(process["pid"])
    return fields is not None and fields[0] != "Z" and fields[19] == process["start"]


def session_members(session_ids) -> list[int]:
    """Every live process whose session is one of ``session_ids`` (each service is started
    in a session of its own, so its children, e.g. Spark's executors, are found too)."""
    wanted = set(session_ids)
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[3]) in wanted:
                found.append(int(entry.name))
    return found


def leftovers(record: dict) -> list[int]:
    """Processes still running in the sessions the record names (empty after a clean down)."""
    return session_members(p["pid"] for p in record.get("processes", []))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _spawn(name: str, argv: list[str], log: Path, env=None, user: str | None = None) -> tuple[subprocess.Popen, dict]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True, user=user, group=_group(user),
                                   extra_groups=[] if user else None)
    return process, {"name": name, "pid": process.pid, "start": _start_time(process.pid), "log": str(log)}


def _group(user: str | None):
    return pwd.getpwnam(user).pw_gid if user else None


def _wait(what: str, ready, process: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ClusterError(f"{what} exited with code {process.returncode} while starting: see {log}\n"
                               + _tail(log))
        try:
            if ready():
                return
        except (OSError, ValueError):  # not listening yet, or a half-started web UI's answer
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not become ready within {timeout:.0f}s: see {log}\n" + _tail(log))
        time.sleep(0.2)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _redis_ping(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def _port_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


def _master_state(ui: str) -> dict:
    with urllib.request.urlopen(f"{ui}/json/", timeout=2) as response:
        return json.loads(response.read())


# ---- what the cluster needs ----------------------------------------------------------------

@dataclass(frozen=True)
class Tools:
    java: str
    spark_home: Path
    pg_bin: Path
    redis_server: str


def find_tools(env=None) -> Tools:
    """The programs the cluster runs; a missing one is a :class:`ClusterError` naming it and
    how to install it, raised before anything starts."""
    env = os.environ if env is None else env
    path = env.get("PATH")
    missing = []
    java = shutil.which("java", path=path)
    if java is None:
        missing.append("Java 17+ (Spark's master and workers): apt-get install default-jre-headless")
    spec = importlib.util.find_spec("pyspark")
    spark_home = Path(spec.origin).parent if spec and spec.origin else None
    if spark_home is None or not (spark_home / "bin" / "spark-class").is_file():
        missing.append("pyspark with its bin/spark-class: install the project's spark extra (make install)")
    pg_bin = _postgres_bin(path)
    if pg_bin is None:
        missing.append("PostgreSQL's server (initdb, postgres): apt-get install postgresql")
    redis_server = shutil.which("redis-server", path=path)
    if redis_server is None:
        missing.append("redis-server: apt-get install redis-server")
    if missing:
        raise ClusterError("cluster-up needs: " + "; ".join(missing)
                           + " (`make sysdeps` as root installs the system packages)")
    return Tools(java=java, spark_home=spark_home, pg_bin=pg_bin, redis_server=redis_server)


def _postgres_bin(path: str | None) -> Path | None:
    """The directory holding PostgreSQL's server programs: on PATH, else Debian's
    ``/usr/lib/postgresql/<version>/bin`` (the newest), which Debian keeps off PATH."""
    found = shutil.which("initdb", path=path)
    if found and (Path(found).resolve().parent / "postgres").is_file():
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return versions[-1].parent if versions else None


# ---- up and down -------------------------------------------------------------------------

def up(data_dir: Path, options: ClusterOptions = ClusterOptions(), say=print) -> dict:
    """Start the cluster and record it under ``data_dir``; returns the record. A cluster
    already running there is reused; a stale record (its processes gone) is cleaned first.
    If any service fails to start, whatever was started is stopped again."""
    data_dir = Path(data_dir).absolute()
    existing = read_record(data_dir)
    if existing is not None:
        if all(alive(p) for p in existing["processes"]):
            say(f"cluster already running (record {record_path(data_dir)})")
            return existing
        say("a previous cluster's record names processes that are gone: cleaning it up first")
        down(data_dir, say=lambda _: None)
    tools = find_tools()
    root = cluster_dir(data_dir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    logs = root / "logs"
    host = options.host
    record: dict = {"version": 1, "host": host, "processes": []}
    try:
        _start_redis(record, tools, root, logs, host)
        _start_postgres(record, tools, root, logs, host)
        _start_spark(record, tools, root, logs, host, options)
    except BaseException:
        _stop(record["processes"], say=lambda _: None)
        raise
    _write_record(data_dir, record)
    say(f"spark master   {record['spark_master']}   (web UI {record['spark_master_ui']}, "
        f"{options.workers} workers x {options.worker_cores} core(s), {options.worker_memory})")
    say(f"registry       {_redacted(record['registry_url'])}")
    say(f"redis          {record['redis_address']}")
    say(f"recorded in    {record_path(data_dir)}: PROFILE=spark commands with this DATA_DIR use it; "
        "`make cluster-down` stops it")
    return record


def _redacted(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    return f"{scheme}://{credentials.partition(':')[0]}:***@{location}" if at else url


def _write_record(data_dir: Path, record: dict) -> None:
    path = record_path(data_dir)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the database password
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(temporary, path)


def _start_redis(record: dict, tools: Tools, root: Path, logs: Path, host: str) -> None:
    port = free_port(host)
    directory = root / "redis"
    directory.mkdir()
    process, entry = _spawn("redis", [tools.redis_server, "--port", str(port), "--bind", host, "--dir", str(directory),
                                      "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
                            logs / "redis.log")
    record["processes"].append(entry)
    _wait("redis-server", lambda: _redis_ping(host, port), process, logs / "redis.log")
    record["redis_address"] = f"{host}:{port}"


def _postgres_user() -> str | None:
    """The user PostgreSQL runs as: ourselves, or as root the ``postgres`` system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise ClusterError(f"PostgreSQL refuses to run as root and there is no {PG_SYSTEM_USER!r} system user to "
                           "run it as: install Debian's postgresql package (apt-get install postgresql), or run "
                           "`make cluster-up` as a normal user") from None
    return PG_SYSTEM_USER


def _start_postgres(record: dict, tools: Tools, root: Path, logs: Path, host: str) -> None:
    user = _postgres_user()
    directory = root / "postgres"
    directory.mkdir(mode=0o700)
    password = secrets.token_urlsafe(18)
    password_file = root / "pg-password"
    password_file.write_text(password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (directory, password_file):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(password_file, 0o600)
        reach = subprocess.run(["test", "-w", str(directory)], user=user, group=entry.pw_gid, extra_groups=[])
        if reach.returncode != 0:
            raise ClusterError(f"PostgreSQL runs as the system user {user!r} (it refuses root), which cannot "
                               f"reach {directory}: give every directory above it search permission for others "
                               f"(chmod o+x), or choose a DATA_DIR under such a directory (e.g. /tmp/...)")
    log = logs / "postgres.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        log.touch()
        os.chown(log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    init = subprocess.run([str(tools.pg_bin / "initdb"), "-D", str(directory), "-U", PG_USER, "-E", "UTF8",
                           "--auth=scram-sha-256", f"--pwfile={password_file}", "--no-instructions"],
                          capture_output=True, text=True, user=user, group=_group(user),
                          extra_groups=[] if user else None)
    password_file.unlink()
    if init.returncode != 0:
        raise ClusterError(f"initdb failed (exit {init.returncode}) in {directory}:\n{init.stderr[-2000:]}")
    port = free_port(host)
    process, entry = _spawn("postgres", [str(tools.pg_bin / "postgres"), "-D", str(directory), "-p", str(port),
                                         "-h", host, "-k", str(directory), "-c", "shared_buffers=64MB"],
                            log, user=user)
    record["processes"].append(entry)
    env = {**os.environ, "PGPASSWORD": password}

    def database_created() -> bool:
        created = subprocess.run([str(tools.pg_bin / "createdb"), "-h", host, "-p", str(port), "-U", PG_USER,
                                  PG_DATABASE], env=env, capture_output=True, text=True)
        return created.returncode == 0

    _wait("PostgreSQL", database_created, process, log)
    record["registry_url"] = f"postgresql+psycopg://{PG_USER}:{password}@{host}:{port}/{PG_DATABASE}"


def _start_spark(record: dict, tools: Tools, root: Path, logs: Path, host: str, options: ClusterOptions) -> None:
    spark_dir = root / "spark"
    spark_class = str(tools.spark_home / "bin" / "spark-class")
    env = {**os.environ, "SPARK_HOME": str(tools.spark_home), "SPARK_DAEMON_MEMORY": options.daemon_memory,
           "SPARK_LOCAL_DIRS": str(spark_dir / "local"), "SPARK_LOG_DIR": str(logs), "SPARK_LOCAL_IP": host,
           "JAVA_HOME": str(Path(tools.java).resolve().parents[1]),
           # No REST submission server: it would take the fixed port 6066 (and nothing here submits through it).
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    port, ui_port = free_port(host), free_port(host)
    master = f"spark://{host}:{port}"
    ui = f"http://{host}:{ui_port}"
    log = logs / "spark-master.log"
    process, entry = _spawn("spark-master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", host,
                                             "--port", str(port), "--webui-port", str(ui_port)], log, env=env)
    record["processes"].append(entry)
    # The workers start once the master's RPC port answers; they register while its web UI comes up.
    _wait("the Spark master", lambda: _port_open(host, port), process, log)
    workers = []
    for n in range(1, options.workers + 1):
        work = spark_dir / f"worker-{n}"
        work.mkdir(parents=True)
        log = logs / f"spark-worker-{n}.log"
        worker, entry = _spawn(f"spark-worker-{n}", [
            spark_class, "org.apache.spark.deploy.worker.Worker", "--host", host, "--webui-port",
            str(free_port(host)), "--cores", str(options.worker_cores), "--memory", options.worker_memory,
            "--work-dir", str(work), master], log, env=env)
        record["processes"].append(entry)
        workers.append((worker, log))

    _wait("the Spark master", lambda: _master_state(ui).get("status") == "ALIVE", process, logs / "spark-master.log")

    def registered() -> bool:
        return sum(w.get("state") == "ALIVE" for w in _master_state(ui).get("workers", [])) >= options.workers

    for worker, log in workers:
        _wait(f"{options.workers} Spark workers registered with the master", registered, worker, log)
    record.update(spark_master=master, spark_master_ui=ui, workers=options.workers)


def down(data_dir: Path, say=print) -> list[str]:
    """Stop every process the record under ``data_dir`` names (and everything they
    started), then remove ``DATA_DIR/cluster``. Returns the names of the services stopped."""
    data_dir = Path(data_dir).absolute()
    record = read_record(data_dir)
    stopped = _stop(record["processes"], say) if record else []
    if record is None:
        say(f"no cluster recorded in {record_path(data_dir)}")
    left = leftovers(record) if record else []
    if left:
        raise ClusterError(f"processes {left} of the cluster are still running after SIGKILL")
    shutil.rmtree(cluster_dir(data_dir), ignore_errors=True)
    return stopped


def _stop(processes: list[dict], say, timeout: float = STOP_TIMEOUT) -> list[str]:
    """Signal each service's process group (PostgreSQL: SIGINT, its fast shutdown; the others
    SIGTERM), the last started first, wait up to ``timeout`` for their sessions to empty,
    SIGKILL what remains."""
    stopped = []
    for process in reversed(processes):
        if not alive(process):
            continue
        sig = signal.SIGINT if process["name"] == "postgres" else signal.SIGTERM
        try:
            os.killpg(process["pid"], sig)
        except ProcessLookupError:
            continue
        stopped.append(process["name"])
    deadline = time.monotonic() + timeout
    sessions = [p["pid"] for p in processes]
    while session_members(sessions) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in session_members(sessions):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while session_members(sessions) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name in stopped:
        say(f"stopped {name}")
    return stopped


def main(argv: list[str] | None = None) -> int:
    """``python -m core.cluster up|down|status`` for DATA_DIR (make cluster-up / cluster-down)."""
    parser = argparse.ArgumentParser(prog="python -m core.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    from core.settings import Settings

    try:
        # The embedded profile: only DATA_DIR matters here, and the spark profile's settings
        # would read (and judge) the very record this command manages.
        data_dir = Settings.from_env({**os.environ, "PROFILE": "embedded"}).data_dir
        if args.action == "up":
            up(data_dir, ClusterOptions.from_env())
        elif args.action == "down":
            down(data_dir)
        else:
            record = read_record(data_dir)
            if record is None:
                print(f"no cluster recorded in {record_path(data_dir)}")
                return 1
            for p in record["processes"]:
                print(f"{p['name']:16} pid {p['pid']:>7}  {'running' if alive(p) else 'GONE'}")
    except PlatformError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
