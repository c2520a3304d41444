"""The pipeline stages' error type."""

from core.errors import PlatformError


class PipelineError(PlatformError):
    """A pipeline stage cannot go on. The message names the file, table or column."""
