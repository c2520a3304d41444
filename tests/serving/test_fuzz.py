"""Fuzzing the server from its own /openapi.json (schemathesis): no 5xx, answers as documented."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.app import create_app
from tests.serving.test_server import samples

pytestmark = pytest.mark.serving

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Generated requests per (operation, mode): well-formed ones reach Feast and the model,
#: malformed ones the validator. Everything else gets a few.
EXAMPLES = {("POST", "/predict"): 300, ("GET", "/features"): 250}
OTHER_EXAMPLES = 8


def run_cases(operation, mode: GenerationMode, examples: int) -> None:
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call()
        case.validate_response(response, checks=CHECKS)

    check()


def total_requests(client) -> float:
    return sum(samples(client.get("/metrics").get_data(as_text=True), "serving_requests_total").values())


def test_at_least_a_thousand_generated_requests_get_no_5xx_and_match_the_schema(served_dir):
    app = create_app({"DATA_DIR": served_dir, "FEATURE_LOG_SAMPLE_RATE": 0})
    client = app.test_client()
    before = total_requests(client)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= set(EXAMPLES)
    for operation in operations:
        examples = EXAMPLES.get((operation.method.upper(), operation.path), OTHER_EXAMPLES)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and (operation.method.upper(), operation.path) not in EXAMPLES:
                continue  # no inputs to break
            run_cases(operation, mode, examples)
    sent = total_requests(client) - before - 1  # the /metrics call itself
    assert sent >= 1000, f"only {sent:.0f} generated requests reached the server"
