"""The training component's error type."""

from core.errors import PlatformError


class TrainingError(PlatformError):
    """Training, evaluation, registration or promotion cannot go on; the message says why."""
