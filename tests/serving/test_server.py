"""The production endpoints over a real Feast registry and SQLite online store."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from tests.serving.helpers import flights_after_serve_end, query_string, request_body, request_entity

pytestmark = pytest.mark.serving


@pytest.fixture
def app(served_dir):
    return create_app({"DATA_DIR": served_dir, "MODEL_CHECK_SECONDS": 0})


def samples(text: str, name: str) -> dict:
    """{labels-tuple: value} of metric samples called ``name``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_features_endpoint_returns_the_vector_predict_uses(app, served_dir, use_case):
    client = app.test_client()
    flights = flights_after_serve_end(served_dir, use_case, 5)
    state = app.extensions["serving"]
    for row in flights.itertuples():
        entity = request_entity(row)
        response = client.get("/features", query_string=query_string(entity))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert list(body["features"]) == state.model.features, "features must come in the model's order"
        predicted = client.post("/predict", json=entity).get_json()["predictions"][0]
        assert body["missing_features"] == predicted["missing_features"]
        assert body["model_version"] == predicted["model_version"] == response.headers["X-Model-Version"]
        assert any(v is not None for v in body["features"].values()), "no feature was found online"


@pytest.mark.parametrize("query, field", [
    ({"origin": "JFK"}, "dest"),
    ({"flight": "abc"}, "flight"),
    ({"flight": "1.5"}, "flight"),
    ({"scheduled_departure": "2013-02-27T08:00:00"}, "scheduled_departure"),
    ({"scheduled_departure": "0001-01-01T00:00:00+05:00"}, "scheduled_departure"),
    ({"colour": "red"}, "colour"),
    ({"tailnum": ""}, "tailnum"),
])
def test_features_endpoint_rejects_bad_queries_naming_the_field(app, query, field):
    good = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "flight": "1",
            "scheduled_departure": "2013-02-27T08:00:00-05:00"}
    base = {k: v for k, v in good.items() if k not in ("dest",)} if field == "dest" else good
    response = app.test_client().get("/features", query_string={**base, **query})
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field, response.get_json()


def test_repeated_query_parameter_is_rejected(app):
    response = app.test_client().get("/features?origin=JFK&origin=LGA&dest=LAX&carrier=AA&flight=1"
                                     "&scheduled_departure=2013-02-27T08:00:00Z")
    assert response.status_code == 400 and response.get_json()["field"] == "origin"


def test_body_over_the_limit_is_413_and_batch_over_the_limit_is_400(app, served_dir, use_case):
    client = app.test_client()
    response = client.post("/predict", data=b"{" + b" " * (300 * 1024) + b"}", content_type="application/json")
    assert response.status_code == 413 and "error" in response.get_json()
    entity = request_entity(next(flights_after_serve_end(served_dir, use_case, 1).itertuples()))
    response = client.post("/predict", json={"flights": [entity] * 101})
    assert response.status_code == 400 and response.get_json()["field"] == "flights"


def test_a_huge_integer_or_a_nan_in_a_request_is_a_400_naming_the_field(app, served_dir, use_case):
    """Requests are read by Flask's own JSON reader (only answers go through orjson)."""
    import json

    client = app.test_client()
    entity = request_entity(next(flights_after_serve_end(served_dir, use_case, 1).itertuples()))
    good = json.dumps(entity)
    for bad in (2**70, "NaN"):
        body = good.replace(f'"flight": {entity["flight"]}', f'"flight": {bad}')
        assert body != good
        response = client.post("/predict", data=body, content_type="application/json")
        assert response.status_code == 400 and response.get_json()["field"] == "flight", response.get_json()
    response = client.post("/predict", data=good, content_type="application/json")
    assert response.status_code == 200 and response.data.endswith(b"}\n")


def test_answers_are_what_flasks_own_json_provider_writes(app):
    """The orjson provider against Flask's default on what the endpoints return, and on
    what Flask writes through its ``default`` (dates, dataclasses, decimals)."""
    import dataclasses
    import json
    from datetime import date, datetime, timezone
    from decimal import Decimal

    import numpy as np
    from flask.json.provider import DefaultJSONProvider

    @dataclasses.dataclass
    class Point:
        x: int

    stock = DefaultJSONProvider(app)
    stock.sort_keys = False
    value = {"model_version": "abc", "predictions": [{"probability": 0.123456789012345, "missing_features": ["a__b"],
                                                     "stale_features": []}],
             "when": datetime(2013, 7, 4, 12, 30, tzinfo=timezone.utc), "day": date(2013, 1, 2),
             "numpy": np.float64(0.25), "amount": Decimal("1.10"), "point": Point(3), 7: "int key",
             "z": None, "a": [1, 2.5, True, "é"]}
    assert json.loads(app.json.dumps(value)) == json.loads(stock.dumps(value))
    assert list(json.loads(app.json.dumps(value))) == list(json.loads(stock.dumps(value))), "key order"
    with app.app_context():
        ours, theirs = app.json.response(value), stock.response(value)
        assert ours.mimetype == theirs.mimetype == "application/json"
        assert json.loads(ours.data) == json.loads(theirs.data) and ours.data.endswith(b"\n")
    assert json.loads(app.json.dumps({"x": float("nan")})) == {"x": None}  # stdlib: NaN, not JSON
    assert app.json.dumps({"b": 1}, indent=2) == stock.dumps({"b": 1}, indent=2)


def test_openapi_lists_exactly_the_routes_and_the_validators_fields(app, use_case):
    spec = app.test_client().get("/openapi.json").get_json()
    routes = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert documented == routes, f"undocumented {routes - documented}, stale {documented - routes}"
    entity = spec["components"]["schemas"]["Entity"]
    assert set(entity["properties"]) == {f.name for f in use_case.request_fields}
    assert set(entity["required"]) == {f.name for f in use_case.request_fields if not f.nullable}
    batch = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["anyOf"][1]
    assert batch["properties"][use_case.batch_key]["maxItems"] == 100


def test_healthz_readyz_and_model_name_the_version(app):
    client = app.test_client()
    version = app.extensions["serving"].model.version
    for path in ("/healthz", "/readyz", "/model"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_json())
        assert response.headers["X-Model-Version"] == version
    assert client.get("/readyz").get_json()["status"] == "ready"
    model = client.get("/model").get_json()
    assert model["version"] == version and model["trained_at"] and model["metrics"]["model"]["auc"] > 0.5


def test_metrics_count_requests_latency_missing_features_and_predictions(app, served_dir, use_case):
    client = app.test_client()
    body = request_body(flights_after_serve_end(served_dir, use_case, 4))
    body["flights"].append({**body["flights"][0], "tailnum": None})  # no aircraft features
    assert client.post("/predict", json=body).status_code == 200  # warm-up: Feast's first read
    before = client.get("/metrics").get_data(as_text=True)
    for _ in range(3):
        assert client.post("/predict", json=body).status_code == 200
    assert client.post("/predict", json={"nope": 1}).status_code == 400
    after = client.get("/metrics").get_data(as_text=True)

    def grew(name, labels):
        key = tuple(sorted(labels.items()))
        return samples(after, name).get(key, 0) - samples(before, name).get(key, 0)

    assert grew("serving_requests_total", {"endpoint": "/predict", "status": "200"}) == 3
    assert grew("serving_requests_total", {"endpoint": "/predict", "status": "400"}) == 1
    assert grew("serving_request_duration_seconds_count", {"endpoint": "/predict"}) == 4
    assert grew("serving_missing_features_total", {"feature": "aircraft__seats"}) >= 3, (
        "the null tailnum's aircraft features were not counted")
    version = app.extensions["serving"].model.version
    assert grew("serving_prediction_probability_count", {"model_version": version}) == 15
    from serving.metrics import multiprocess_mode

    if not multiprocess_mode():  # there, a labelled counter is listed only once it has a child
        assert "serving_stale_features_total" in after


def _break_sqlite_store(data_dir):
    """Put a directory where the SQLite file was: SQLite cannot open it."""
    path = data_dir / "online_store.db"
    path.rename(data_dir / "online_store.db.away")
    path.mkdir()
    return path


def _restore_sqlite_store(data_dir):
    path = data_dir / "online_store.db"
    path.rmdir()
    (data_dir / "online_store.db.away").rename(path)


def test_unreachable_sqlite_store_is_503_and_the_server_recovers_by_itself(served_dir, use_case):
    app = create_app({"DATA_DIR": served_dir})
    client = app.test_client()
    body = request_body(flights_after_serve_end(served_dir, use_case, 3))
    _break_sqlite_store(served_dir)
    started = time.monotonic()
    response = client.post("/predict", json=body)
    assert response.status_code == 503, response.get_json()
    assert time.monotonic() - started < 10, "a failing store must be answered within a bounded time"
    assert "online store unavailable" in response.get_json()["error"]
    assert response.headers["Retry-After"] == "1"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200, "alive even when not ready"
    _restore_sqlite_store(served_dir)
    assert client.get("/readyz").status_code == 200
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.get_json()
    metric = samples(client.get("/metrics").get_data(as_text=True), "serving_online_store_errors_total")
    assert metric[()] >= 2


@pytest.mark.parametrize("path", ["/predict", "/precomputed"])
@pytest.mark.parametrize("depth", [1000, 100_000])
def test_json_nested_too_deep_is_a_400(app, path, depth):
    """Deep enough for the standard library's JSON reader to hit Python's recursion limit."""
    body = b"[" * depth + b"]" * depth
    response = app.test_client().post(path, data=body, content_type="application/json")
    assert response.status_code == 400, response.data[:300]
    assert response.get_json()["field"] == "body"
    if depth > 1024:  # past orjson's nesting limit too
        assert response.get_json()["error"] == "is nested too deeply"
    body = b'{"flights": ' + b"[" * depth + b"]" * depth + b"}"
    response = app.test_client().post(path, data=body, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["field"] in ("body", "flights[0]"), response.data


@pytest.mark.parametrize("place", ["value", "key"])
def test_a_lone_surrogate_is_a_400_naming_the_field(app, served_dir, use_case, place):
    """JSON may spell a lone surrogate (``\\ud800``); it is no text a feature store can key on,
    and no answer can carry it back unescaped."""
    import json

    entity = request_entity(next(flights_after_serve_end(served_dir, use_case, 1).itertuples()))
    text = json.dumps(entity)
    text = (text.replace(f'"origin": "{entity["origin"]}"', '"origin": "JF\\ud800"') if place == "value"
            else text[:-1] + ', "\\ud800": 1}')
    for path in ("/predict", "/precomputed"):
        response = app.test_client().post(path, data=text, content_type="application/json")
        assert response.status_code == 400, response.data[:300]
        assert response.get_json()["field"] == ("origin" if place == "value" else "\\ud800"), response.get_json()


def test_an_integral_number_is_an_integer_as_the_published_schema_says(app, served_dir, use_case):
    entity = request_entity(next(flights_after_serve_end(served_dir, use_case, 1).itertuples()))
    client = app.test_client()
    as_int = client.post("/predict", json=entity).get_json()
    as_float = client.post("/predict", json={**entity, "flight": float(entity["flight"])}).get_json()
    assert as_float == as_int and "predictions" in as_int
    query = {**query_string(entity), "flight": f"{entity['flight']}.0"}
    assert client.get("/features", query_string=query).get_json() == client.get(
        "/features", query_string=query_string(entity)).get_json()


def test_a_streamed_body_over_the_limit_is_413(app):
    """A body without a Content-Length (chunked, as the server passes it on) is cut at the limit."""
    import io

    response = app.test_client().open(
        "/predict", method="POST", input_stream=io.BytesIO(b"[" + b" " * (300 * 1024) + b"]"),
        content_type="application/json", environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413, response.get_json()
