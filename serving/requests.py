"""Strict validation of request bodies and query strings against the use case's request fields.

The same constants give the JSON Schema of each field (:func:`field_schema`), from which
``/openapi.json`` is built: the published schema and the validator cannot drift apart.
They accept exactly the same values (``tests/serving/test_openapi.py`` checks both on the
same cases, and schemathesis in ``tests/serving/test_fuzz.py``), so every limit is one a
JSON Schema can state the same way for every regex engine:

* integers within ±(2**53 - 1), the range every JSON reader holds exactly; an integral
  number such as ``7.0`` is an integer, as in JSON Schema;
* strings of 1..:data:`MAX_STRING` characters, not all blank (:data:`BLANK`, spelt out:
  regex engines disagree on ``\\s``), and valid Unicode (no lone surrogate);
* instants as RFC 3339 date-times with an upper-case ``T`` and an offset (``Z`` or
  ``±hh:mm``), seconds to 6 decimals, a calendar date that exists, in the years 1970..2199
  (:data:`TIMESTAMP_PATTERN`: a regex, with the leap years spelt out).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import orjson

from core.usecase import RequestField
from serving.errors import RequestError

MAX_STRING = 64
INT_MIN, INT_MAX = -(2**53 - 1), 2**53 - 1
#: The characters a string field may not consist of alone: whitespace to Python
#: (``str.isspace``), to ECMA-262 and to Rust's regex (``\\s`` differs between them).
BLANK = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
         "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff")
_BLANK = frozenset(BLANK)

_YEAR = "(?:19[7-9][0-9]|2[01][0-9][0-9])"
#: Leap years in 1970..2199 (2100 is not one).
_LEAP_YEAR = "(?:19(?:7[26]|8[048]|9[26])|20(?:[02468][048]|[13579][26])|21(?:0[48]|[2468][048]|[13579][26]))"
_DATE = (f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
         f"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)")
_TIME = "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
#: An instant as :func:`_parse` accepts it (JSON Schema ``pattern``, anchored).
TIMESTAMP_PATTERN = f"^{_DATE}{_TIME}$"
_TIMESTAMP = re.compile(_DATE + _TIME)
TIMESTAMP_EXAMPLE = "2013-06-01T08:30:00-04:00"
#: Integers in a query string (``7`` or ``7.0``, as a JSON number would be written).
_INT_TEXT = re.compile(r"-?[0-9]{1,16}(?:\.0+)?")


def parse_json(data: bytes) -> Any:
    """The JSON document in ``data`` (a request body), or :class:`RequestError` on ``body``.

    orjson reads it when it can; what orjson refuses and the standard library reads (a
    ``NaN``, an integer past 64 bits, a lone surrogate) then reaches validation, which
    names the field. Nesting too deep for the standard library is refused here."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except RecursionError:
        raise RequestError("body", "is nested too deeply") from None
    except ValueError:
        raise RequestError("body", "is not valid JSON") from None


def _parse(field: RequestField, value: Any, path: str) -> Any:
    if value is None:
        if field.nullable:
            return None
        raise RequestError(path, "is required and may not be null")
    if field.kind == "string":
        if not isinstance(value, str) or _BLANK.issuperset(value):
            raise RequestError(path, "must be a non-empty string, not all blank")
        if len(value) > MAX_STRING:
            raise RequestError(path, f"must be at most {MAX_STRING} characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(path, "must be valid Unicode (it holds a lone surrogate such as \\ud800)") from None
        return value
    if field.kind == "int":
        if isinstance(value, float) and value.is_integer() and INT_MIN <= value <= INT_MAX:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(path, "must be an integer")
        if not INT_MIN <= value <= INT_MAX:
            raise RequestError(path, f"must lie in [{INT_MIN}, {INT_MAX}]")
        return value
    if field.kind == "timestamp":
        if not isinstance(value, str):
            raise RequestError(path, f"must be an RFC 3339 date-time string with an offset, e.g. {TIMESTAMP_EXAMPLE}")
        if not _TIMESTAMP.fullmatch(value):
            shown = value[:40].encode("utf-8", "backslashreplace").decode()
            raise RequestError(path, f"{shown!r} is not an RFC 3339 date-time with an offset in the years "
                                     f"1970..2199 (e.g. {TIMESTAMP_EXAMPLE}; a local time without an "
                                     "offset is ambiguous)")
        return datetime.fromisoformat(value).astimezone(timezone.utc)
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
            value = int(value.split(".", 1)[0])
        raw[name] = value
    return parse_entity(raw, fields, "")


def field_schema(field: RequestField) -> dict:
    """The JSON Schema (OpenAPI 3.1) of one request field, from the validator's own limits."""
    if field.kind == "string":
        schema = {"type": "string", "minLength": 1, "maxLength": MAX_STRING, "pattern": f"[^{BLANK}]"}
    elif field.kind == "int":
        schema = {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX}
    elif field.kind == "timestamp":
        schema = {"type": "string", "pattern": TIMESTAMP_PATTERN, "example": TIMESTAMP_EXAMPLE,
                  "description": "RFC 3339 date-time with an offset (Z or ±hh:mm), in the years 1970..2199"}
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
