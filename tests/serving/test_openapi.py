"""The published request schema and the validator accept exactly the same values: each case
is judged by both, the schema as schemathesis judges it (jsonschema_rs, formats checked)."""

from __future__ import annotations

import jsonschema_rs
import pytest

from serving.errors import RequestError
from serving.openapi import openapi_spec
from serving.requests import parse_predict_body, parse_query_entity

GOOD = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "tailnum": None, "flight": 1,
        "scheduled_departure": "2013-07-04T08:30:00-04:00"}

#: (field, value, accepted): the values the issue found disputed, and the edges of each limit.
CASES = [
    ("flight", -7930.0, True), ("flight", 7930, True), ("flight", 1.5, False), ("flight", True, False),
    ("flight", "1", False), ("flight", 2**53 - 1, True), ("flight", -(2**53 - 1), True), ("flight", 2**53, False),
    ("flight", 2**70, False), ("flight", 9007199254740991.0, True), ("flight", 1e300, False),
    ("origin", "", False), ("origin", " ", False), ("origin", "\x1c", False), ("origin", "\u3000", False),
    ("origin", "\ufeff", False), ("origin", "\x85", False), ("origin", "\t\nA", True), ("origin", "é", True),
    ("origin", "X" * 64, True), ("origin", "X" * 65, False), ("origin", "\x00", True), ("origin", 3, False),
    ("tailnum", None, True), ("tailnum", "N14228", True),
    ("scheduled_departure", "2013-07-04T12:30:00Z", True),
    ("scheduled_departure", "2013-07-04T08:30:00.123456-04:00", True),
    ("scheduled_departure", "2013-07-04T08:30:00.1234567Z", False),
    ("scheduled_departure", "2013-07-04t12:30:00z", False),
    ("scheduled_departure", "2013-07-04 12:30:00Z", False),
    ("scheduled_departure", "2013-07-04T08:30:00", False),
    ("scheduled_departure", "2013-07-04T23:59:60Z", False),
    ("scheduled_departure", "2013-07-04T08:30:00+24:00", False),
    ("scheduled_departure", "2013-07-04T12:30:00Z\n", False),
    ("scheduled_departure", "2000-02-29T00:00:00Z", True),
    ("scheduled_departure", "2012-02-29T00:00:00Z", True),
    ("scheduled_departure", "2100-02-29T00:00:00Z", False),
    ("scheduled_departure", "2013-02-29T00:00:00Z", False),
    ("scheduled_departure", "2013-04-31T00:00:00Z", False),
    ("scheduled_departure", "1970-01-01T00:00:00+01:00", True),
    ("scheduled_departure", "2199-12-31T23:59:59-23:59", True),
    ("scheduled_departure", "1969-12-31T23:59:59Z", False),
    ("scheduled_departure", "2200-01-01T00:00:00Z", False),
    ("scheduled_departure", "0001-01-01T00:00:00Z", False),
    ("scheduled_departure", "\uff12\uff10\uff11\uff13-07-04T12:30:00Z", False),
    ("scheduled_departure", 1372937400, False),
]


@pytest.fixture(scope="module")
def spec(use_case):
    return openapi_spec(use_case, 3, 1024)


def body_validator(spec):
    """The /predict body schema with its references resolved, as schemathesis checks it."""
    return jsonschema_rs.validator_for(
        {**spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"],
         "components": spec["components"]}, validate_formats=True)


def accepted(use_case, body) -> bool:
    try:
        parse_predict_body(body, use_case.request_fields, use_case.batch_key, 3)
    except RequestError:
        return False
    return True


@pytest.mark.parametrize("field, value, expected", CASES)
def test_the_schema_and_the_validator_agree_on_each_value(spec, use_case, field, value, expected):
    entity = {**GOOD, field: value}
    validator = body_validator(spec)
    assert (validator.is_valid(entity), accepted(use_case, entity)) == (expected, expected)
    batch = {use_case.batch_key: [GOOD, entity]}
    assert (validator.is_valid(batch), accepted(use_case, batch)) == (expected, expected)


@pytest.mark.parametrize("body", [
    [GOOD], {}, {"instances": []}, {"flights": []}, {"flights": [GOOD] * 4}, {"flights": [GOOD], "origin": "JFK"},
    {**GOOD, "colour": "red"}, {k: v for k, v in GOOD.items() if k != "dest"},
    {k: v for k, v in GOOD.items() if k != "tailnum"}, {"flights": [GOOD] * 3},
])
def test_the_schema_and_the_validator_agree_on_each_shape(spec, use_case, body):
    assert body_validator(spec).is_valid(body) == accepted(use_case, body)


@pytest.mark.parametrize("field, value, expected", [
    ("flight", "7930", True), ("flight", "-7930.0", True), ("flight", "7930.", False), ("flight", "1.5", False),
    ("flight", "0x10", False), ("flight", " 7", False), ("origin", "\u3000", False),
    ("scheduled_departure", "2013-02-27T08:00:00Z", True), ("scheduled_departure", "2013-02-27T08:00:00", False),
])
def test_query_parameters_follow_the_same_rules(spec, use_case, field, value, expected):
    """``/features`` takes the same fields as text; each parameter's schema is the field's."""
    query = {k: [str(v)] for k, v in GOOD.items() if v is not None}
    query[field] = [value]
    [parameter] = [p for p in spec["paths"]["/features"]["get"]["parameters"] if p["name"] == field]
    wire = int(float(value)) if parameter["schema"]["type"] == "integer" and expected else value
    schema_says = jsonschema_rs.validator_for(parameter["schema"], validate_formats=True).is_valid(wire)
    try:
        parse_query_entity(query, use_case.request_fields)
        validator_says = True
    except RequestError:
        validator_says = False
    assert validator_says == expected
    if expected:
        assert schema_says


def test_a_token_makes_every_operation_but_healthz_document_it(use_case):
    plain, secured = openapi_spec(use_case, 3, 1024), openapi_spec(use_case, 3, 1024, auth=True)
    assert "security" not in plain and "securitySchemes" not in plain["components"]
    assert secured["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert secured["security"] == [{"bearer": []}]
    for path, item in secured["paths"].items():
        for operation in item.values():
            if path == "/healthz":
                assert operation["security"] == [] and "401" not in operation["responses"]
            else:
                assert "401" in operation["responses"] and "security" not in operation
