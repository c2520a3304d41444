"""The Flask app: :func:`create_app` builds everything; nothing happens on import.

The routes are blueprints (``serving/routes/``), the state they share is
``serving/state.py``, the settings ``serving/config.py``. Every request is pinned to the
model current when it starts (``g.model``), so its answer comes from one model even if a
promotion swaps it meanwhile; every answer is counted and names that model's version.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref

from flask import Flask, Response, g, request

from serving.config import MAX_BODY_BYTES, ServingConfig
from serving.json_provider import OrjsonProvider
from serving.routes import operations, predictions
from serving.routes.error_handlers import register_error_handlers
from serving.state import EXTENSION, ServingState, serving_state


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` entries override it (``DATA_DIR``,
    ``MAX_BATCH``, ``MODEL_CHECK_SECONDS``, ``FEATURE_LOG_*``). An invalid setting raises
    :class:`~core.errors.ConfigError` naming it."""
    from core.quiet import quiet_third_party_warnings

    quiet_third_party_warnings()
    env = {**os.environ, **{k: str(v) for k, v in (test_config or {}).items()}}
    config = ServingConfig.from_env(env)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False  # feature vectors keep the model's order
    state = ServingState(config)
    app.extensions[EXTENSION] = state
    atexit.register(_close_log_at_exit, weakref.ref(state))
    app.before_request(_pin_model)
    app.after_request(_count)
    register_error_handlers(app)
    app.register_blueprint(predictions.bp)
    app.register_blueprint(operations.bp)
    return app


def _pin_model() -> None:
    """Start the request's clock and pin the model it is answered with."""
    g.started = time.perf_counter()
    g.model = serving_state().slot.current()


def _count(response: Response) -> Response:
    """Count the answer and its latency by route, and name the model that gave it."""
    state = serving_state()
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    started = g.get("started")
    if started is not None:
        state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
    model = g.get("model") or state.slot.current()
    response.headers["X-Model-Version"] = model.version
    return response


def _close_log_at_exit(ref: "weakref.ref[ServingState]") -> None:
    state = ref()
    if state is not None and state.feature_log is not None:
        state.feature_log.close()


__all__ = ["create_app"]
