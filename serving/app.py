"""The Flask app: ``create_app()`` builds everything; nothing happens on import."""

from __future__ import annotations

import os
from dataclasses import dataclass

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from pipeline.config import Settings
from pipeline.usecase import UseCase, load_use_case
from serving.errors import RequestError, ServingError
from serving.online import OnlineFeatures
from serving.requests import parse_predict_body

#: Entities per /predict request, and bytes per request body.
MAX_BATCH = 100
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class ServingConfig:
    settings: Settings
    use_case: UseCase
    max_batch: int = MAX_BATCH


class ServingState:
    """The promoted model and the online feature path, loaded and checked once."""

    def __init__(self, config: ServingConfig):
        from pipeline.feast_ops import feature_store
        from training.dataset import service_features
        from training.errors import TrainingError
        from training.model import booster_from_bytes
        from training.registry import ModelRegistry

        self.config = config
        try:
            self.model = ModelRegistry(config.settings.models).load_champion()
        except TrainingError as e:
            raise ServingError(str(e)) from e
        self.store = feature_store(config.settings)
        service_name = self.model.metadata["feature_service"]
        current = service_features(self.store, service_name)
        if current != self.model.features:
            raise ServingError(
                f"model {self.model.version} was trained on FeatureService {service_name!r} with features "
                f"{self.model.features}, but the registry now lists {current}: refusing to serve it"
            )
        self.booster = booster_from_bytes(self.model.model_bytes, nthread=1)
        join_keys = []
        for view in self.store.list_feature_views():
            for column in view.entity_columns:
                if column.name not in join_keys:
                    join_keys.append(column.name)
        self.online = OnlineFeatures(self.store, service_name, self.model.features, join_keys,
                                     config.use_case.request_time_field)

    def predict(self, entities: list[dict]) -> list[dict]:
        from training.dataset import feature_matrix
        from training.model import predict_proba

        vectors = self.online.lookup(entities)
        probabilities = predict_proba(self.booster, feature_matrix([v.values for v in vectors], self.model.features))
        return [
            {"probability": float(p), "model_version": self.model.version,
             "missing_features": v.missing, "stale_features": v.stale, "features": v.values}
            for p, v in zip(probabilities, vectors)
        ]


def error_response(status: int, message: str, field: str | None = None) -> Response:
    """A JSON error body ``{"error", "field"?}`` with ``status``; every error goes through here."""
    body = {"error": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


def _state() -> ServingState:
    return current_app.extensions["serving"]


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app. ``test_config`` may set ``DATA_DIR`` and ``MAX_BATCH``."""
    from pipeline.quiet import quiet_third_party_warnings

    quiet_third_party_warnings()
    test_config = test_config or {}
    env = dict(os.environ)
    if "DATA_DIR" in test_config:
        env["DATA_DIR"] = str(test_config["DATA_DIR"])
    config = ServingConfig(
        settings=Settings.from_env(env),
        use_case=load_use_case(),
        max_batch=int(test_config.get("MAX_BATCH", MAX_BATCH)),
    )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["serving"] = ServingState(config)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return error_response(e.code or 500, e.description or e.name)

    @app.errorhandler(RequestError)
    def _request_error(e: RequestError):
        return error_response(400, e.message, e.field)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "model_version": _state().model.version})

    @app.get("/model")
    def model():
        meta = _state().model.metadata
        keys = ("version", "sha256", "feature_service", "features", "trained_at", "training_window",
                "holdout_window", "metrics", "library_versions")
        return jsonify({k: meta.get(k) for k in keys})

    @app.post("/predict")
    def predict():
        state = _state()
        if not request.is_json:
            raise RequestError("body", "must be JSON (Content-Type: application/json)")
        body = request.get_json(silent=True)
        if body is None:
            raise RequestError("body", "is not valid JSON")
        use_case = state.config.use_case
        entities = parse_predict_body(body, use_case.request_fields, use_case.batch_key, state.config.max_batch)
        results = state.predict(entities)
        for result in results:
            result.pop("features")
        return jsonify({"model_version": state.model.version,
                        "feature_service": state.model.metadata["feature_service"],
                        "predictions": results})

    return app
