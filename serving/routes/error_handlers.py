"""How errors become answers: every error the server returns is a JSON body
``{"error", "field"?}`` with its HTTP status, made by :func:`error_response`.

:data:`HANDLERS` is the one place that maps an error type to its status (Flask answers
with the handler of the most specific type):

* ``HTTPException`` (404, 405, 413...): its own status and description;
* :class:`~serving.errors.RequestError`: 400, naming the field;
* :class:`~serving.errors.StoreUnavailable`: 503, with ``Retry-After: 1``;
* anything else: 500, logged with its traceback; the answer names only its type.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from serving.errors import RequestError, StoreUnavailable

log = logging.getLogger(__name__)


def error_response(status: int, message: str, field: str | None = None) -> Response:
    """The JSON error body ``{"error": message, "field"?: field}`` with ``status``: every
    error answer goes through here, so all of them have the same shape (``/openapi.json``'s
    ``Error``)."""
    body = {"error": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


def _http_error(e: HTTPException) -> Response:
    return error_response(e.code or 500, e.description or e.name)


def _request_error(e: RequestError) -> Response:
    return error_response(400, e.message, e.field)


def _store_unavailable(e: StoreUnavailable) -> Response:
    response = error_response(503, str(e))
    response.headers["Retry-After"] = "1"
    return response


def _unexpected(e: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, f"internal error: {type(e).__name__}")


#: Error type -> the handler that answers it (and so its HTTP status).
HANDLERS = {
    HTTPException: _http_error,
    RequestError: _request_error,
    StoreUnavailable: _store_unavailable,
    Exception: _unexpected,
}


def register_error_handlers(app: Flask) -> None:
    """Answer every error through :data:`HANDLERS`."""
    for error_type, handler in HANDLERS.items():
        app.register_error_handler(error_type, handler)
