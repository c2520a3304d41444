"""The platform's one error base and the exit codes every command shares.

Every error a person can act on (a bad setting, a refused gate, a model that cannot be
trained, a replay that cannot start) is a :class:`PlatformError`: its message names the
file, table, column, setting or check and what was expected, and a command prints it
without a traceback and exits with the error's ``exit_code`` (``cli/entry.py``).
Each component has its own subclass (``PipelineError``, ``TrainingError``,
``ServingError``, ``MonitoringError``, ``ReplayError``; a refusing gate raises
``validation.report.GateFailed``).
"""

#: Exit codes of every command.
EXIT_OK = 0
#: ``monitoring report``: at least one alert rule was breached.
EXIT_ALERT = 1
#: A setting is invalid, a gate refused its input, or a step cannot go on.
EXIT_REFUSED = 2
#: The candidate model failed the model gate; the champion keeps serving.
EXIT_NOT_PROMOTED = 3


class PlatformError(Exception):
    """An error a person can act on; the message says what to fix. Exit code ``exit_code``."""

    exit_code = EXIT_REFUSED


class ConfigError(PlatformError):
    """A setting (an environment variable or a command option) is invalid; the message names it."""


class DefinitionError(PlatformError):
    """The use case's definitions contradict each other (a Feast view and a contract, a
    declared table the data does not have); the message names both sides."""
