"""``/openapi.json``: the server's API, built from the validator's own field definitions."""

from __future__ import annotations

from core.usecase import UseCase
from serving.requests import entity_schema, field_schema

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "Malformed request; `field` names the offending field",
            401: "No valid token (`Authorization: Bearer <token>`)",
            413: "Body larger than the limit",
            503: "Online store unavailable (retry later)"}
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def _with_auth(paths: dict) -> dict:
    """Every operation but ``/healthz`` answers 401 without the token."""
    for path, item in paths.items():
        for operation in item.values():
            if path == "/healthz":
                operation["security"] = []
            else:
                operation["responses"].update(_errors(401))
    return paths


def openapi_spec(use_case: UseCase, max_batch: int, max_body_bytes: int, version: str = "0.1.0",
                 auth: bool = False) -> dict:
    """OpenAPI 3.1 for exactly the routes ``create_app`` registers; with ``auth``, the bearer
    token they require (all but ``/healthz``)."""
    fields = use_case.request_fields
    entity = {"$ref": "#/components/schemas/Entity"}
    batch = {
        "type": "object",
        "properties": {use_case.batch_key: {"type": "array", "items": entity, "minItems": 1, "maxItems": max_batch}},
        "required": [use_case.batch_key],
        "additionalProperties": False,
    }
    string_list = {"type": "array", "items": {"type": "string"}}
    features = {"type": "object", "additionalProperties": {"type": ["number", "null"]}}
    prediction = {
        "type": "object",
        "properties": {"probability": {"type": "number", "minimum": 0, "maximum": 1},
                       "model_version": {"type": "string"},
                       "missing_features": string_list, "stale_features": string_list},
        "required": ["probability", "model_version", "missing_features", "stale_features"],
    }
    query = []
    for f in fields:
        schema = field_schema(f)
        schema = next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)
        query.append({"name": f.name, "in": "query", "required": not f.nullable, "schema": schema,
                      "description": f.description + (" (leave out for null)" if f.nullable else "")})
    text = {"description": "Plain text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    spec = {
        "openapi": "3.1.0",
        "info": {"title": f"{use_case.name} prediction server", "version": version,
                 "description": "Online features through the model's FeatureService (TTL enforced as in "
                                "training) and the promoted model. Every response carries the "
                                "`X-Model-Version` header."},
        "paths": {
            "/predict": {"post": {
                "summary": f"Predict for one entity, or a batch of 1..{max_batch} under `{use_case.batch_key}`",
                "requestBody": {"required": True, "description": f"At most {max_body_bytes} bytes",
                                "content": {"application/json": {"schema": {"anyOf": [entity, batch]}}}},
                "responses": {"200": _json({
                    "type": "object",
                    "properties": {"model_version": {"type": "string"}, "feature_service": {"type": "string"},
                                   "predictions": {"type": "array", "items": prediction}},
                    "required": ["model_version", "feature_service", "predictions"]}, "One prediction per entity"),
                    **_errors(400, 413, 503)},
            }},
            "/precomputed": {"post": {
                "summary": "Static inference: the batch-scored probability of each entity (null: none "
                           "precomputed), same body as /predict",
                "requestBody": {"required": True, "description": f"At most {max_body_bytes} bytes",
                                "content": {"application/json": {"schema": {"anyOf": [entity, batch]}}}},
                "responses": {"200": _json({
                    "type": "object",
                    "properties": {"predictions": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"probability": {"type": ["number", "null"]},
                                       "model_version": {"type": ["string", "null"]}},
                        "required": ["probability", "model_version"]}}},
                    "required": ["predictions"]}, "One precomputed answer per entity"),
                    **_errors(400, 413)},
            }},
            "/features": {"get": {
                "summary": "The model's online feature vector for one entity, without predicting",
                "parameters": query,
                "responses": {"200": _json({
                    "type": "object",
                    "properties": {"model_version": {"type": "string"}, "feature_service": {"type": "string"},
                                   "features": features, "missing_features": string_list,
                                   "stale_features": string_list},
                    "required": ["model_version", "feature_service", "features", "missing_features",
                                 "stale_features"]}, "Feature values in the model's order (null: missing)"),
                    **_errors(400, 503)},
            }},
            "/model": {"get": {"summary": "The served model: version, hash, FeatureService, features, windows, "
                                          "metrics, trained-at, and the last refused promotion",
                               "responses": {"200": _json({"type": "object"}, "Model metadata")}}},
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": _json({"type": "object"}, "Alive")}}},
            "/readyz": {"get": {"summary": "Ready: a model is loaded and the online store answers a read",
                                "responses": {"200": _json({"type": "object"}, "Ready"),
                                              "503": _json({"type": "object"}, "Not ready, with the reason")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (all gunicorn workers)", "responses": {"200": text}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
        },
        "components": {"schemas": {
            "Entity": entity_schema(fields),
            "Error": {"type": "object", "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
                      "required": ["error"]},
        }},
    }
    if auth:
        spec["paths"] = _with_auth(spec["paths"])
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]
    return spec
