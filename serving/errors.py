"""The serving component's error types (mapped to HTTP statuses in ``serving/routes/error_handlers.py``)."""

from core.errors import PlatformError


class RequestError(Exception):
    """A request is malformed: HTTP 400 with a JSON body naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ServingError(PlatformError):
    """The server cannot serve (no model, or a model that does not fit its FeatureService)."""


class StoreUnavailable(ServingError):
    """The online store could not be read: HTTP 503; the request may be retried."""
