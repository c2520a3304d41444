"""The pipeline's one error type; the CLI maps it to exit code 2."""


class PipelineError(Exception):
    """A pipeline step cannot go on. The message names the file, table or column."""
