"""Strict validation of /predict bodies against the use case's request fields."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from pipeline.usecase import RequestField
from serving.errors import RequestError

MAX_STRING = 64


def _parse(field: RequestField, value: Any, path: str) -> Any:
    if value is None:
        if field.nullable:
            return None
        raise RequestError(path, "is required and may not be null")
    if field.kind == "string":
        if not isinstance(value, str) or not value.strip():
            raise RequestError(path, "must be a non-empty string")
        if len(value) > MAX_STRING:
            raise RequestError(path, f"must be at most {MAX_STRING} characters")
        return value
    if field.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(path, "must be an integer")
        if not -(2**63) <= value < 2**63:
            raise RequestError(path, "is out of the 64-bit integer range")
        return value
    if field.kind == "timestamp":
        if not isinstance(value, str):
            raise RequestError(path, "must be an ISO 8601 string with a UTC offset, e.g. 2013-06-01T08:30:00-04:00")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise RequestError(path, f"{value!r} is not ISO 8601 (e.g. 2013-06-01T08:30:00-04:00)") from None
        if parsed.tzinfo is None:
            raise RequestError(path, "must carry a UTC offset (e.g. -04:00 or Z): a local time is ambiguous")
        return parsed.astimezone(timezone.utc)
    raise ValueError(f"unknown request field kind {field.kind!r}")


def parse_entity(raw: Any, fields: Sequence[RequestField], path: str) -> dict:
    if not isinstance(raw, dict):
        raise RequestError(path, "must be a JSON object")
    known = {f.name for f in fields}
    unknown = sorted(set(raw) - known)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise RequestError(where, f"is not a known field (expected {sorted(known)})")
    out = {}
    for field in fields:
        where = f"{path}.{field.name}" if path else field.name
        if field.name not in raw and not field.nullable:
            raise RequestError(where, "is required")
        out[field.name] = _parse(field, raw.get(field.name), where)
    return out


def parse_predict_body(body: Any, fields: Sequence[RequestField], batch_key: str, max_batch: int) -> list[dict]:
    """One entity (a bare object) or ``{batch_key: [entity, ...]}`` with 1..max_batch entities."""
    if not isinstance(body, dict):
        raise RequestError("body", f"must be a JSON object: one entity, or {{{batch_key!r}: [...]}}")
    if batch_key not in body:
        return [parse_entity(body, fields, "")]
    if set(body) != {batch_key}:
        extra = sorted(set(body) - {batch_key})[0]
        raise RequestError(extra, f"is not a known field (expected only {batch_key!r})")
    items = body[batch_key]
    if not isinstance(items, list) or not items:
        raise RequestError(batch_key, "must be a non-empty list")
    if len(items) > max_batch:
        raise RequestError(batch_key, f"holds {len(items)} entities; at most {max_batch} per request")
    return [parse_entity(item, fields, f"{batch_key}[{i}]") for i, item in enumerate(items)]
