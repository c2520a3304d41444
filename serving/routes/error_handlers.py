"""How errors become answers: every error the server returns is a JSON body
``{"error", "field"?}`` with its HTTP status, made by :func:`error_response`.

:data:`HANDLERS` is the one place that maps an error type to its status (Flask answers
with the handler of the most specific type):

* ``HTTPException`` (404, 405, 413...): its own status, description and headers
  (``Allow`` on a 405);
* :class:`~serving.errors.RequestError`: 400, naming the field;
* :class:`~serving.errors.StoreUnavailable`: 503, with ``Retry-After: 1``; the answer says
  what is unavailable, the details (files, tables) go to the server's log;
* anything else: 500, logged with its traceback; the answer names only its type.

No answer shows a path of the server's file system (:func:`public_text`).
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from serving.errors import RequestError, StoreUnavailable

log = logging.getLogger(__name__)

#: Seconds between two log lines for the same 503 reason (an outage under load would
#: otherwise write one per request).
LOG_EVERY_SECONDS = 10.0
_last_logged: dict[str, float] = {}

#: An absolute path of two or more parts (``/srv/data/online_store.db``): its last part is kept.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/-])/(?:[^\s/'\"`]+/)+([^\s/'\"`]*)")


def public_text(text: str) -> str:
    """``text`` as an answer may show it: an absolute path becomes its file name, and what
    JSON cannot carry (a lone surrogate from a client's ``\\ud800``) a backslash escape."""
    text = _ABSOLUTE_PATH.sub(r"\1", text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(status: int, message: str, field: str | None = None) -> Response:
    """The JSON error body ``{"error": message, "field"?: field}`` with ``status``: every
    error answer goes through here, so all of them have the same shape (``/openapi.json``'s
    ``Error``), and none shows a server path (:func:`public_text`)."""
    body = {"error": public_text(message)}
    if field is not None:
        body["field"] = public_text(field)
    response = jsonify(body)
    response.status_code = status
    return response


def _http_error(e: HTTPException) -> Response:
    response = error_response(e.code or 500, e.description or e.name)
    for name, value in e.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _request_error(e: RequestError) -> Response:
    return error_response(400, e.message, e.field)


def _store_unavailable(e: StoreUnavailable) -> Response:
    """503: what is unavailable (the message up to its first colon), and retry; the whole
    message, which may name files and tables, goes to the log."""
    now = time.monotonic()
    if now - _last_logged.get(str(e), -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
        if len(_last_logged) > 100:
            _last_logged.clear()
        _last_logged[str(e)] = now
        log.warning("503 on %s %s: %s", request.method, request.path, e)
    summary = str(e).split(": ", 1)[0].strip() or "the online store is unavailable"
    response = error_response(503, f"{summary} (retry later)")
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
