"""Strict validation of request bodies and query strings against the use case's request fields.

The same constants give the JSON Schema of each field (:func:`field_schema`), from which
``/openapi.json`` is built: the published schema and the validator cannot drift apart.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from core.usecase import RequestField
from serving.errors import RequestError

MAX_STRING = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Accepted instants: pandas (and so Feast's on-demand views) cannot represent much beyond.
TIME_MIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
TIME_MAX = datetime(2200, 1, 1, tzinfo=timezone.utc)
_INT_TEXT = re.compile(r"-?[0-9]{1,19}")


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
        if not INT_MIN <= value <= INT_MAX:
            raise RequestError(path, "is out of the 64-bit integer range")
        return value
    if field.kind == "timestamp":
        if not isinstance(value, str):
            raise RequestError(path, "must be an ISO 8601 string with a UTC offset, e.g. 2013-06-01T08:30:00-04:00")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise RequestError(path, f"{value[:40]!r} is not ISO 8601 (e.g. 2013-06-01T08:30:00-04:00)") from None
        if parsed.tzinfo is None:
            raise RequestError(path, "must carry a UTC offset (e.g. -04:00 or Z): a local time is ambiguous")
        try:
            parsed = parsed.astimezone(timezone.utc)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00
            parsed = None
        if parsed is None or not TIME_MIN <= parsed < TIME_MAX:
            raise RequestError(path, f"must lie in [{TIME_MIN.isoformat()}, {TIME_MAX.isoformat()})")
        return parsed
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


def parse_query_entity(args: Mapping[str, Sequence[str]], fields: Sequence[RequestField]) -> dict:
    """One entity from a query string (``{name: [values]}``), validated like a JSON entity.

    Query values are text: an ``int`` field must be decimal digits; a nullable field is
    null when left out. Each parameter may appear once.
    """
    raw: dict[str, Any] = {}
    kinds = {f.name: f.kind for f in fields}
    for name, values in args.items():
        if len(values) != 1:
            raise RequestError(name, "must be given once")
        value = values[0]
        if kinds.get(name) == "int":
            if not _INT_TEXT.fullmatch(value):
                raise RequestError(name, "must be an integer")
            value = int(value)
        raw[name] = value
    return parse_entity(raw, fields, "")


def field_schema(field: RequestField) -> dict:
    """The JSON Schema (OpenAPI 3.1) of one request field, from the validator's own limits."""
    if field.kind == "string":
        schema = {"type": "string", "minLength": 1, "maxLength": MAX_STRING, "pattern": r"\S"}
    elif field.kind == "int":
        schema = {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX}
    elif field.kind == "timestamp":
        schema = {"type": "string", "format": "date-time",
                  "description": f"ISO 8601 with a UTC offset, in [{TIME_MIN.isoformat()}, {TIME_MAX.isoformat()})"}
    else:
        raise ValueError(f"unknown request field kind {field.kind!r}")
    if field.description:
        schema["description"] = field.description + (f"; {schema['description']}" if "description" in schema else "")
    if field.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def entity_schema(fields: Sequence[RequestField]) -> dict:
    """The JSON Schema of one entity object as :func:`parse_entity` accepts it."""
    return {
        "type": "object",
        "properties": {f.name: field_schema(f) for f in fields},
        "required": [f.name for f in fields if not f.nullable],
        "additionalProperties": False,
    }
