"""gunicorn settings for `make serve` / `make demo` / `serving serve`.

Environment, read and checked by ``core.settings.Settings`` (HOST, PORT, DATA_DIR) and
``serving.config`` (WEB_CONCURRENCY: workers, default 2; WEB_THREADS: threads per worker,
default 4; REQUEST_READ_TIMEOUT; ACCESS_LOG; SERVING_TOKEN or SERVING_TOKEN_FILE, required
when HOST is beyond loopback): a bad value stops gunicorn here with a one-line error and
exit code 2. Metrics from all workers are added up through prometheus_client's
multiprocess mode, in ``PROMETHEUS_MULTIPROC_DIR`` (default ``DATA_DIR/metrics/<port>``,
emptied at start).
"""

import os
import shutil
import sys
from pathlib import Path

from core.errors import ConfigError
from core.settings import Settings
from serving.config import AuthConfig, WebConfig

# One OpenMP thread per worker: XGBoost's default of all cores makes small predictions
# slower on a busy 2-core machine (thread contention), and workers already give parallelism.
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    _settings = Settings.from_env()
    _web = WebConfig.from_env(os.environ)
    AuthConfig.from_env(os.environ, _settings.host)
except ConfigError as _error:
    print(f"error: {_error}", file=sys.stderr)
    raise SystemExit(2) from None
# An IPv6 address goes in brackets (gunicorn reads "host:port").
_host = f"[{_settings.host}]" if ":" in _settings.host and not _settings.host.startswith("[") else _settings.host
bind = f"{_host}:{_settings.port}"
workers = _web.workers
# gthread's thread pool, with each request read by the worker's event loop before a thread
# takes it, within REQUEST_READ_TIMEOUT (serving/worker.py): slow or idle clients cost a
# buffer, not a thread. Request handling is thread-safe (one SQLite connection opened with
# check_same_thread=False, XGBoost's inplace_predict, locks around the model swap and the
# feature-log buffer). Python runs one thread at a time: workers give the parallelism.
worker_class = "serving.worker.ReadFirstWorker"
threads = _web.threads
# Seconds an idle kept-alive connection stays open: longer than gunicorn's 2 s, so the
# connection pools of calling services reuse their connections between bursts (an idle
# connection costs the worker a socket, no thread).
keepalive = 30
timeout = 60
graceful_timeout = 10
# The workers' heartbeat files: in memory where there is /dev/shm, so that a heartbeat never
# waits on a disk's journal (gunicorn's own advice for container filesystems).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
accesslog = _web.access_log
# Never recycle workers by request count (Feast's `feast serve` does so every 1,000).
max_requests = 0
# gunicorn 27 opens a control socket at one fixed path in $HOME: two servers on one
# machine (tests, bench, a second PORT) would take it from each other.
control_socket_disable = True


# Must be in the environment before any worker imports prometheus_client.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = (os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                                          or str(_settings.data_dir / "metrics" / str(_settings.port)))


def on_starting(server):
    """A fresh server starts with empty counters (old workers' files would be added in)."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker):
    """Once the app is loaded: move everything it allocated (Feast's registry, protobufs, the
    model: hundreds of thousands of objects) out of the garbage collector's reach. Otherwise
    every full collection walks them all, a pause in the middle of some request that dwarfs
    the request itself."""
    import gc

    gc.collect()
    gc.freeze()


def child_exit(server, worker):
    """In the master, when a worker has exited (cleanly or killed): count the feature-log rows
    it still held as lost (a clean exit wrote them: 0), then drop its live gauges."""
    from prometheus_client import multiprocess

    from serving.metrics import count_rows_of_dead_worker

    try:
        lost = count_rows_of_dead_worker(worker.pid)
    except Exception:  # a hook that raises must not take the master down with it
        server.log.exception("could not count the feature-log rows of worker %s", worker.pid)
    else:
        if lost:
            server.log.error("worker %s exited holding %d feature-log row(s): counted as lost "
                             "(serving_feature_log_dropped_rows_total{reason=\"worker_died\"})", worker.pid, lost)
    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Write the worker's buffered feature-log rows and metric counts before it goes."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("serving") if app is not None else None
    if state is not None:
        state.metrics.flush()
        if state.feature_log is not None:
            state.feature_log.close()
