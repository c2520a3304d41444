"""Request validation: strict, and every error names its field."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from serving.errors import RequestError
from serving.requests import parse_predict_body

GOOD = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "tailnum": None, "flight": 1,
        "scheduled_departure": "2013-07-04T08:30:00-04:00"}


def parse(body, use_case, max_batch=3):
    return parse_predict_body(body, use_case.request_fields, use_case.batch_key, max_batch)


def test_single_and_batched_bodies(use_case):
    one = parse(GOOD, use_case)
    assert one[0]["scheduled_departure"] == datetime(2013, 7, 4, 12, 30, tzinfo=timezone.utc)
    assert one[0]["tailnum"] is None
    assert len(parse({"flights": [GOOD, GOOD]}, use_case)) == 2
    no_tail = {k: v for k, v in GOOD.items() if k != "tailnum"}
    assert parse(no_tail, use_case)[0]["tailnum"] is None, "a nullable field may be left out"
    assert parse({**GOOD, "scheduled_departure": "2013-07-04T12:30:00Z"}, use_case) == one


@pytest.mark.parametrize("body, field", [
    ([GOOD], "body"),
    ({**GOOD, "origin": ""}, "origin"),
    ({**GOOD, "origin": "X" * 65}, "origin"),
    ({**GOOD, "flight": True}, "flight"),
    ({**GOOD, "flight": 1.5}, "flight"),
    ({**GOOD, "flight": 2**70}, "flight"),
    ({**GOOD, "scheduled_departure": "tomorrow"}, "scheduled_departure"),
    ({**GOOD, "scheduled_departure": "2013-07-04T08:30:00"}, "scheduled_departure"),
    ({**GOOD, "scheduled_departure": 1372937400}, "scheduled_departure"),
    ({**GOOD, "carrier": None}, "carrier"),
    ({"flights": "JFK"}, "flights"),
    ({"flights": [GOOD] * 4}, "flights"),
    ({"flights": [GOOD, "x"]}, "flights[1]"),
    ({"flights": [GOOD], "extra": 1}, "extra"),
])
def test_bad_bodies_name_the_field(use_case, body, field):
    with pytest.raises(RequestError) as info:
        parse(body, use_case)
    assert info.value.field == field, info.value
