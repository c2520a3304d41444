"""gunicorn settings for `make serve` / `make demo` (HOST, PORT, WEB_CONCURRENCY from the environment)."""

import os

# One OpenMP thread per worker: XGBoost's default of all cores makes small predictions
# slower on a busy 2-core machine (thread contention), and workers already give parallelism.
os.environ.setdefault("OMP_NUM_THREADS", "1")

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = 60
graceful_timeout = 10
accesslog = "-"
