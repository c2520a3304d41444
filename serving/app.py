"""The Flask app: ``create_app()`` builds everything; nothing happens on import."""

from __future__ import annotations

import atexit
import logging
import math
import os
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

import orjson
from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from core.settings import Settings
from core.usecase import UseCase, load_use_case
from serving import precomputed
from serving.errors import RequestError, ServingError, StoreUnavailable
from serving.featurelog import FeatureLogger, LogConfig
from serving.metrics import Metrics
from serving.model import ModelSlot, ServingModel, load_serving_model
from serving.openapi import openapi_spec
from serving.requests import parse_predict_body, parse_query_entity

log = logging.getLogger(__name__)

#: Entities per /predict request, and bytes per request body.
MAX_BATCH = 100
MAX_BODY_BYTES = 256 * 1024
#: How often (seconds, at most) a request checks whether champion.json changed.
MODEL_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class ServingConfig:
    settings: Settings
    use_case: UseCase
    max_batch: int = MAX_BATCH
    model_check_seconds: float = MODEL_CHECK_SECONDS
    log: LogConfig | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "ServingConfig":
        settings = Settings.from_env(env)
        return cls(settings=settings, use_case=load_use_case(),
                   max_batch=int(env.get("MAX_BATCH", MAX_BATCH)),
                   model_check_seconds=float(env.get("MODEL_CHECK_SECONDS", MODEL_CHECK_SECONDS)),
                   log=LogConfig.from_env(settings.logs / "served", env))


class ServingState:
    """The model slot (hot-swappable), the Feast store, metrics and the feature log."""

    def __init__(self, config: ServingConfig):
        from feast_plugins.store import feature_store
        from training.registry import CHAMPION_FILE, ModelRegistry

        self.config = config
        self.metrics = Metrics(monitoring_summary=config.settings.reports / "monitoring" / "summary.json")
        self.registry = ModelRegistry(config.settings.models)
        self.store = feature_store(config.settings)
        time_field = config.use_case.request_time_field
        initial = load_serving_model(self.registry, self.store, time_field)
        self.slot = ModelSlot(
            load=lambda record: load_serving_model(self.registry, self.store, time_field, record),
            read_champion=self.registry.champion,
            champion_path=self.registry.root / CHAMPION_FILE,
            initial=initial,
            check_seconds=config.model_check_seconds,
            on_swap=lambda result, version: self.metrics.model_swaps.labels(result).inc(),
        )
        self.feature_log = (FeatureLogger(config.log, config.use_case.request_fields, time_field,
                                          config.use_case.event_timestamp)
                            if config.log is not None else None)

    @property
    def model(self):
        """The registry model being served now (``training.registry.LoadedModel``)."""
        return self.slot.current().model

    @property
    def online(self):
        """The current model's online feature path."""
        return self.slot.current().online

    def lookup(self, model: ServingModel, entities: list[dict]):
        try:
            vectors = model.online.lookup(entities)
        except StoreUnavailable:
            self.metrics.store_errors.inc()
            raise
        self.metrics.observe_vectors(vectors)
        return vectors

    def predict(self, entities: list[dict],
                model: ServingModel | None = None) -> tuple[ServingModel, list, object, list]:
        """(model, vectors, model input matrix, probabilities) for ``entities``, all from one model."""
        from training.dataset import rows_matrix
        from training.model import predict_proba

        model = model or self.slot.current()
        vectors = self.lookup(model, entities)
        features = model.model.features
        matrix = rows_matrix([v.row_for(features) for v in vectors], features)
        probabilities = predict_proba(model.booster, matrix)
        self.metrics.observe_predictions(model.version, probabilities)
        return model, vectors, matrix, probabilities

    def log_served(self, endpoint: str, model: ServingModel, entities, vectors, probabilities, matrix=None) -> None:
        if self.feature_log is not None and self.feature_log.sampled():
            if not self.feature_log.append(endpoint, model.version, model.feature_service, model.model.features,
                                           entities, vectors, probabilities, matrix):
                self.metrics.log_dropped.inc(len(entities))

    def probe_entity(self) -> dict:
        """A made-up entity for the readiness read (keys match nothing)."""
        placeholder = {"string": "__readyz__", "int": 0, "timestamp": datetime.now(timezone.utc)}
        return {f.name: None if f.nullable else placeholder[f.kind] for f in self.config.use_case.request_fields}


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with responses written by orjson: a 100-prediction answer (each
    naming its missing and stale features) took ~0.35 ms with the standard library, ~0.06 ms
    here. What orjson does not write itself (dates, dataclasses, decimals, ``__html__``)
    goes to Flask's own ``default``, so answers are Flask's, except that NaN and infinities
    (invalid JSON) become null. Reading stays Flask's: a huge integer or a NaN in a request
    reaches validation, which names the field (``tests/serving/test_requests.py``)."""

    OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
               | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)

    def _orjson(self, obj) -> bytes:
        options = self.OPTIONS | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        return orjson.dumps(obj, default=self.default, option=options)

    def dumps(self, obj, **kwargs) -> str:
        if kwargs:  # indent, separators...: the standard library's
            return super().dumps(obj, **kwargs)
        return self._orjson(obj).decode()

    def response(self, *args, **kwargs) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        if self.compact is False or (self.compact is None and self._app.debug):
            return super().response(obj)  # pretty-printed: the standard library's
        return self._app.response_class(self._orjson(obj) + b"\n", mimetype=self.mimetype)


def error_response(status: int, message: str, field: str | None = None) -> Response:
    """A JSON error body ``{"error", "field"?}`` with ``status``; every error goes through here."""
    body = {"error": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


def _json_value(value):
    """NaN is not JSON: a missing value is null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _close_log_at_exit(ref) -> None:
    state = ref()
    if state is not None and state.feature_log is not None:
        state.feature_log.close()


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app from the environment; ``test_config`` entries override it (``DATA_DIR``,
    ``MAX_BATCH``, ``MODEL_CHECK_SECONDS``, ``FEATURE_LOG_*``)."""
    from core.quiet import quiet_third_party_warnings

    quiet_third_party_warnings()
    env = {**os.environ, **{k: str(v) for k, v in (test_config or {}).items()}}
    config = ServingConfig.from_env(env)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False  # feature vectors keep the model's order
    state = ServingState(config)
    app.extensions["serving"] = state
    atexit.register(_close_log_at_exit, weakref.ref(state))
    spec = openapi_spec(config.use_case, config.max_batch, MAX_BODY_BYTES)

    @app.before_request
    def _start_clock():
        g.started = time.perf_counter()
        g.model = state.slot.current()

    @app.after_request
    def _count(response: Response):
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = g.get("started")
        if started is not None:
            state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        model = g.get("model") or state.slot.current()
        response.headers["X-Model-Version"] = model.version
        return response

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return error_response(e.code or 500, e.description or e.name)

    @app.errorhandler(RequestError)
    def _request_error(e: RequestError):
        return error_response(400, e.message, e.field)

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(e: StoreUnavailable):
        response = error_response(503, str(e))
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, f"internal error: {type(e).__name__}")

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "model_version": g.model.version})

    @app.get("/readyz")
    def readyz():
        model: ServingModel = g.model
        body = {"model_version": model.version, "refused_promotion": state.slot.refused}
        try:
            model.online.probe(state.probe_entity())
        except StoreUnavailable as e:
            state.metrics.store_errors.inc()
            return jsonify({**body, "status": "unavailable", "error": str(e)}), 503
        return jsonify({**body, "status": "ready"})

    @app.get("/model")
    def model():
        meta = g.model.model.metadata
        keys = ("version", "sha256", "feature_service", "features", "trained_at", "training_window",
                "holdout_window", "metrics", "library_versions")
        return jsonify({**{k: meta.get(k) for k in keys}, "refused_promotion": state.slot.refused})

    @app.get("/metrics")
    def metrics():
        body, content_type = state.metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/openapi.json")
    def openapi():
        return jsonify(spec)

    @app.post("/predict")
    def predict():
        if not request.is_json:
            raise RequestError("body", "must be JSON (Content-Type: application/json)")
        body = request.get_json(silent=True)
        if body is None:
            raise RequestError("body", "is not valid JSON")
        use_case = config.use_case
        entities = parse_predict_body(body, use_case.request_fields, use_case.batch_key, config.max_batch)
        model, vectors, matrix, probabilities = state.predict(entities, g.model)
        state.metrics.entities.labels("/predict").inc(len(entities))
        state.log_served("/predict", model, entities, vectors, probabilities, matrix)
        return jsonify({
            "model_version": model.version,
            "feature_service": model.feature_service,
            "predictions": [
                {"probability": float(p), "model_version": model.version,
                 "missing_features": v.missing, "stale_features": v.stale}
                for p, v in zip(probabilities, vectors)
            ],
        })

    @app.get("/features")
    def features():
        entity = parse_query_entity(request.args.to_dict(flat=False), config.use_case.request_fields)
        model: ServingModel = g.model
        [vector] = state.lookup(model, [entity])
        state.metrics.entities.labels("/features").inc()
        state.log_served("/features", model, [entity], [vector], None)
        return jsonify({"model_version": model.version, "feature_service": model.feature_service,
                        "features": {f: _json_value(vector.values[f]) for f in model.model.features},
                        "missing_features": vector.missing, "stale_features": vector.stale})

    precomputed.register(app, config)  # POST /precomputed: static inference by lookup
    return app


__all__ = ["create_app", "error_response", "ServingError", "ServingState", "MAX_BATCH", "MAX_BODY_BYTES"]
