"""Answers about the server itself: liveness (``/healthz``), readiness (``/readyz``: the
online store answers a read), the served model (``/model``), Prometheus metrics
(``/metrics``) and this API's description (``/openapi.json``)."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from serving.errors import StoreUnavailable
from serving.model import ServingModel
from serving.state import serving_state

bp = Blueprint("operations", __name__)

#: What ``/model`` tells of the model's metadata.
MODEL_KEYS = ("version", "sha256", "feature_service", "features", "trained_at", "training_window",
              "holdout_window", "metrics", "library_versions")


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok", "model_version": g.model.version})


@bp.get("/readyz")
def readyz():
    state = serving_state()
    model: ServingModel = g.model
    body = {"model_version": model.version, "refused_promotion": state.slot.refused}
    try:
        model.online.probe(state.probe_entity())
    except StoreUnavailable as e:
        state.metrics.store_errors.inc()
        return jsonify({**body, "status": "unavailable", "error": str(e)}), 503
    return jsonify({**body, "status": "ready"})


@bp.get("/model")
def model():
    meta = g.model.model.metadata
    return jsonify({**{k: meta.get(k) for k in MODEL_KEYS}, "refused_promotion": serving_state().slot.refused})


@bp.get("/metrics")
def metrics():
    body, content_type = serving_state().metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi():
    return jsonify(serving_state().openapi)
