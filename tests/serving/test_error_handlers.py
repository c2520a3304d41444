"""Every error answer is the same JSON shape with the status of its error type."""

from __future__ import annotations

import pytest
from flask import Flask

from serving.errors import RequestError, StoreUnavailable
from serving.json_provider import OrjsonProvider
from serving.routes.error_handlers import register_error_handlers


@pytest.fixture
def client():
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    register_error_handlers(app)

    @app.get("/raise/<kind>")
    def raise_(kind):
        raise {"request": RequestError("flight", "must be an integer"),
               "surrogate": RequestError("\ud800", "is not a known field"),
               "store": StoreUnavailable("online store unavailable: OperationalError: unable to open "
                                         "/srv/data/online_store.db: no such table: flights_aircraft"),
               "path": RequestError("body", "cannot be read from /srv/data/x.json (see /srv/data/y)"),
               "bug": KeyError("oops")}[kind]

    return app.test_client()


@pytest.mark.parametrize("path, method, status, body", [
    ("/raise/request", "get", 400, {"error": "must be an integer", "field": "flight"}),
    ("/raise/surrogate", "get", 400, {"error": "is not a known field", "field": "\\ud800"}),
    ("/raise/store", "get", 503, {"error": "online store unavailable (retry later)"}),
    ("/raise/path", "get", 400, {"error": "cannot be read from x.json (see y)", "field": "body"}),
    ("/raise/bug", "get", 500, {"error": "internal error: KeyError"}),
    ("/nowhere", "get", 404, None),
    ("/raise/request", "post", 405, None),
])
def test_status_and_body_by_error_type(client, path, method, status, body):
    response = getattr(client, method)(path)
    assert response.status_code == status and response.is_json, response.data
    answer = response.get_json()
    if body is None:
        assert set(answer) == {"error"} and answer["error"]
    else:
        assert answer == body
    assert ("Retry-After" in response.headers) == (status == 503)
    assert ("Allow" in response.headers) == (status == 405)
    if status == 405:
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
