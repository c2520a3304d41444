"""Answers about the server itself: liveness (``/healthz``: the process answers, even with
nothing to serve), readiness (``/readyz``: ready, degraded or unavailable, with the reason:
``ServingState.readiness``), the served model (``/model``), Prometheus metrics
(``/metrics``) and this API's description (``/openapi.json``)."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from serving.model import ServingModel, definition_drift
from serving.routes.error_handlers import public_text
from serving.state import serving_state

bp = Blueprint("operations", __name__)

#: What ``/model`` tells of the model's metadata.
MODEL_KEYS = ("version", "sha256", "feature_service", "features", "trained_at", "training_window",
              "holdout_window", "metrics", "library_versions", "definitions")


@bp.get("/healthz")
def healthz():
    model: ServingModel = g.model
    return jsonify({"status": "ok", "model_version": model.version if model.loaded else None})


def _public(value):
    """``value`` with every string as an answer may show it (no server paths: the refusals
    and errors reported here come from file operations)."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


@bp.get("/readyz")
def readyz():
    body, status = serving_state().readiness(g.model)
    return jsonify(_public(body)), status


@bp.get("/model")
def model():
    model: ServingModel = g.model
    slot = serving_state().slot
    meta = model.model.metadata if model.loaded else {}
    # definitions: per feature, the fingerprint of what defines its values at training;
    # definitions_drift: how the definitions applied since differ from them (none: [])
    drifted = definition_drift(serving_state().registry, meta) if model.loaded else []
    return jsonify({**{k: meta.get(k) for k in MODEL_KEYS}, "definitions_drift": drifted,
                    **_public({"refused_promotion": slot.refused, "fallback": slot.fallback,
                               "unavailable": slot.unavailable})})


@bp.get("/metrics")
def metrics():
    body, content_type = serving_state().metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi():
    return jsonify(serving_state().openapi)
