"""The Flask app: :func:`create_app` builds everything; nothing happens on import.

The routes are blueprints (``serving/routes/``), the state they share is
``serving/state.py``, the settings ``serving/config.py``. Every request is pinned to the
model current when it starts (``g.model``), so its answer comes from one model even if a
promotion swaps it meanwhile; every answer is counted and names that model's version.

With an access token configured (``SERVING_TOKEN`` or ``SERVING_TOKEN_FILE``, required
when ``HOST`` is beyond loopback: ``serving/config.py``), every request but ``/healthz``
must send it as ``Authorization: Bearer <token>``, compared in constant time; otherwise
the answer is 401.
"""

from __future__ import annotations

import atexit
import hmac
import os
import time
import weakref

from flask import Flask, Response, g, request

from serving.config import MAX_BODY_BYTES, ServingConfig
from serving.json_provider import OrjsonProvider
from serving.openapi import openapi_spec
from serving.routes import operations, predictions
from serving.routes.error_handlers import error_response, register_error_handlers
from serving.state import EXTENSION, ServingState, serving_state

#: Paths answered without the token: liveness, for probes that cannot send headers.
OPEN_PATHS = frozenset({"/healthz"})


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
    if config.auth is not None:
        app.before_request(_token_check(config.auth.token))
        # The published API says so (ServingState builds it without the token).
        state.openapi = openapi_spec(config.use_case, config.max_batch, MAX_BODY_BYTES, auth=True)
    app.before_request(_pin_model)
    app.after_request(_count)
    register_error_handlers(app)
    app.register_blueprint(predictions.bp)
    app.register_blueprint(operations.bp)
    return app


def _token_check(token: str):
    """A ``before_request`` function: 401 unless the request carries ``token`` (or its path
    is open). The comparison takes the same time wherever the tokens differ."""
    expected = token.encode()

    def check() -> Response | None:
        if request.path in OPEN_PATHS:
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
            return None
        response = error_response(401, "a valid token is required: send it as 'Authorization: Bearer <token>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="serving"'
        return response

    return check


def _pin_model() -> None:
    """Start the request's clock and pin the model it is answered with."""
    g.started = time.perf_counter()
    g.model = serving_state().slot.current()


def _count(response: Response) -> Response:
    """Count the answer and its latency by route, and name the model that gave it (not to
    a request refused for its token)."""
    state = serving_state()
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    started = g.get("started")
    if started is not None:
        state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
    model = g.get("model")
    if model is None and response.status_code != 401:  # no model version for the unauthenticated
        model = state.slot.current()
    if model is not None:
        response.headers["X-Model-Version"] = model.version
    return response


def _close_log_at_exit(ref: "weakref.ref[ServingState]") -> None:
    state = ref()
    if state is not None and state.feature_log is not None:
        state.feature_log.close()


__all__ = ["create_app"]
