"""Monitoring's one error type: a PipelineError, so the shared CLI runner maps it to exit 2."""

from pipeline.errors import PipelineError


class MonitoringError(PipelineError):
    """Monitoring cannot produce a report; the message names the file, column or setting."""
