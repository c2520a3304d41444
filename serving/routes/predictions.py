"""Answers about entities: ``POST /predict`` (online features + the served model),
``GET /features`` (the same vector, without predicting) and ``POST /precomputed``
(predictions batch-scored ahead of time, looked up: ``serving/precomputed.py``)."""

from __future__ import annotations

import math

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException

from serving.errors import RequestError
from serving.model import ServingModel
from serving.precomputed import entity_key, read_predictions
from serving.requests import parse_json, parse_predict_body, parse_query_entity
from serving.state import ServingState, serving_state

bp = Blueprint("predictions", __name__)


def _body_entities(state: ServingState) -> list[dict]:
    """The entities of a ``/predict``-shaped JSON body, validated (:class:`RequestError`
    names the field; a body over the limit is a 413, chunked or not)."""
    if not request.is_json:
        raise RequestError("body", "must be JSON (Content-Type: application/json)")
    try:
        data = request.get_data(cache=True)
    except HTTPException:
        raise  # 413: larger than the limit
    except Exception as e:  # the WSGI server's body reader refused it: a malformed chunked encoding
        raise RequestError("body", f"cannot be read ({type(e).__name__}): send a Content-Length, or valid "
                                   "chunks") from None
    use_case = state.config.use_case
    return parse_predict_body(parse_json(data), use_case.request_fields, use_case.batch_key, state.config.max_batch)


def _json_value(value):
    """NaN is not JSON: a missing value is null."""
    return None if isinstance(value, float) and math.isnan(value) else value


@bp.post("/predict")
def predict():
    state = serving_state()
    entities = _body_entities(state)
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


@bp.get("/features")
def features():
    state = serving_state()
    entity = parse_query_entity(request.args.to_dict(flat=False), state.config.use_case.request_fields)
    model: ServingModel = g.model
    [vector] = state.lookup(model, [entity])
    state.metrics.entities.labels("/features").inc()
    state.log_served("/features", model, [entity], [vector], None)
    return jsonify({"model_version": model.version, "feature_service": model.feature_service,
                    "features": {f: _json_value(vector.values[f]) for f in model.model.features},
                    "missing_features": vector.missing, "stale_features": vector.stale})


@bp.post("/precomputed")
def precomputed():
    """Static inference: each entity's probability as batch-scored ahead of time (null when
    nothing was); no features read, no model run."""
    state = serving_state()
    entities = _body_entities(state)
    fields = state.config.use_case.request_fields
    answers = read_predictions(state.precomputed_path, [entity_key(e, fields) for e in entities])
    return jsonify({"predictions": [{"probability": a.probability, "model_version": a.model_version}
                                    for a in answers]})
