"""The pipeline's one error type; the CLI maps it to exit code 2."""


class PipelineError(Exception):
    """A pipeline step cannot go on. The message names the file, table or column."""


def run_command(command, args, gate_stream=None) -> int:
    """Run a CLI command, mapping the platform's errors to exit code 2 and a message a
    person can act on (no traceback). A refusing gate prints its whole report, to
    ``gate_stream`` (default stderr)."""
    import sys

    from training.errors import TrainingError
    from validation.report import GateFailed

    try:
        return command(args)
    except GateFailed as e:
        print(f"refused by a validation gate; nothing was written downstream.\n{e}",
              file=gate_stream or sys.stderr)
        return 2
    except (PipelineError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
