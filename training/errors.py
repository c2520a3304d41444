"""The training component's one error type; the CLI maps it to exit code 2."""


class TrainingError(Exception):
    """Training, evaluation, registration or promotion cannot go on; the message says why."""
