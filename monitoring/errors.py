"""Monitoring's error type."""

from core.errors import PlatformError


class MonitoringError(PlatformError):
    """Monitoring cannot produce a report; the message names the file, column or setting."""
