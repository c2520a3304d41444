"""gunicorn settings for `make serve` / `make demo` / `serving serve`.

Environment, read and checked by ``core.settings.Settings`` (HOST, PORT, DATA_DIR) and
``serving.config.WebConfig`` (WEB_CONCURRENCY: workers, default 2; WEB_THREADS: threads
per worker, default 4; ACCESS_LOG). Metrics from all workers are added up through
prometheus_client's multiprocess mode, in ``PROMETHEUS_MULTIPROC_DIR`` (default
``DATA_DIR/metrics/<port>``, emptied at start).
"""

import os
import shutil
from pathlib import Path

from core.settings import Settings
from serving.config import WebConfig

# One OpenMP thread per worker: XGBoost's default of all cores makes small predictions
# slower on a busy 2-core machine (thread contention), and workers already give parallelism.
os.environ.setdefault("OMP_NUM_THREADS", "1")

_settings = Settings.from_env()
_web = WebConfig.from_env(os.environ)
bind = f"{_settings.host}:{_settings.port}"
workers = _web.workers
# Threads per worker: a sync worker sits idle while a client takes its time to read the answer
# and close the connection (gunicorn drains it before the next accept); with threads another
# request is served meanwhile. Request handling is thread-safe (one SQLite connection opened
# with check_same_thread=False, XGBoost's inplace_predict, locks around the model swap and
# the feature-log buffer). Python runs one thread at a time: workers give the parallelism.
worker_class = "gthread"
threads = _web.threads
timeout = 60
graceful_timeout = 10
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
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Write the worker's buffered feature-log rows and metric counts before it goes."""
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("serving") if app is not None else None
    if state is not None:
        state.metrics.flush()
        if state.feature_log is not None:
            state.feature_log.close()
