"""Third-party noise a user cannot act on, silenced in this one place, and shown again with
``--verbose`` (or ``VERBOSE=1``, which the commands' processes and their children read).

Three kinds reach a user's terminal:

- Python warnings raised inside other packages (ibis' ``DeprecationWarning`` about a DuckDB
  API, Feast's "experimental feature" ``RuntimeWarning``\\s of the on-demand views and of the
  Spark store). Feast installs ``simplefilter("once", ...)`` filters when imported, which
  come before any filter installed earlier, so a filter cannot hide them: the warning
  *display* drops every warning whose code is not the platform's (its file is outside the
  checkout, or in an installed package). A warning from the platform's own code is shown.
- Feast's log records meant for its operators (``feast.repo_config``'s advice about
  ``serve_features_while_materializing``, which does take effect: see
  :class:`_DropServeWhileMaterializingAdvice`).
- Feast's ``print``\\s on stdout, written for its own CLI ("Applying changes", "Deploying
  infrastructure for ...", the coloured "Materializing ..." header and view names): the
  commands' stdout carries their result (JSON), and the platform reports its own progress
  (:mod:`core.progress`). :func:`feast_prints` hides them, or moves them to stderr when verbose.
- Spark's JVM (the ``spark`` profile): its log4j start-up lines and warnings, and its console
  progress bars, which interleave with ours. A Spark session a command starts (its
  ``spark-submit``) gets :data:`SPARK_SUBMIT_ARGS`: Spark's warnings and errors only, no
  console progress, and Python workers started by ``python -m core.quiet`` (quiet, then
  pyspark's daemon), so Feast's warnings in the workers are dropped too; unless
  PYSPARK_SUBMIT_ARGS is already set. The JVM's own line about incubator modules remains, and so do spark-submit's
  "Ignoring non-Spark config property" lines (Feast passes its engine's settings along).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

#: The environment variable that turns verbose output on (``--verbose`` sets it, so the
#: processes a command starts, e.g. gunicorn, are verbose too).
VERBOSE_ENV = "VERBOSE"
#: The checkout: a warning raised from a file under it (and not in an installed package) is ours.
ROOT = Path(__file__).resolve().parents[1]
_INSTALLED = ("site-packages", "dist-packages")
#: pyspark's ``spark-submit`` arguments while quiet: log4j as ``spark-log4j2.properties`` (next
#: to this file) says, no console progress bars.
SPARK_SUBMIT_ARGS = ("--conf spark.ui.showConsoleProgress=false --conf spark.python.daemon.module=core.quiet "
                     "--driver-java-options "
                     f"-Dlog4j2.configurationFile={Path(__file__).with_name('spark-log4j2.properties').as_uri()} "
                     "pyspark-shell")

_original_showwarning = warnings.showwarning
_state = {"verbose": False}


def is_verbose(environ=None) -> bool:
    """Whether VERBOSE asks for third-party output (1, true, yes, on)."""
    env = os.environ if environ is None else environ
    return (env.get(VERBOSE_ENV) or "").strip().lower() in ("1", "true", "yes", "on")


def is_ours(filename: str) -> bool:
    """Whether a warning raised from ``filename`` comes from the platform's own code."""
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return path.is_relative_to(ROOT) and not any(part in _INSTALLED or part.startswith(".venv")
                                                 for part in path.relative_to(ROOT).parts)


def _showwarning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` while quiet: only the platform's own warnings are shown."""
    if _state["verbose"] or is_ours(filename):
        _original_showwarning(message, category, filename, lineno, file, line)


class _DropServeWhileMaterializingAdvice(logging.Filter):
    """Feast logs, on every FeatureStore, that `serve_features_while_materializing` "typically
    has no effect" on a file registry. It does take effect (feast.infra.registry.registry
    reads it); tests/serving/test_concurrency.py fails without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _state["verbose"] or "serve_features_while_materializing" not in record.getMessage()


def quiet(verbose: bool | None = None, spark: bool = False) -> bool:
    """Install the filters (idempotent; safe to call again, e.g. to change ``verbose``).
    ``verbose`` None: from VERBOSE. ``verbose=True`` is also exported as VERBOSE=1 for the
    processes started from here. ``spark``: a Spark session this process starts will be
    quiet too (:data:`SPARK_SUBMIT_ARGS`; the commands ask for it, the server and the
    benchmarks do not). Returns whether output is verbose."""
    if verbose is None:
        verbose = is_verbose()
    elif verbose:
        os.environ[VERBOSE_ENV] = "1"
    _state["verbose"] = verbose
    if verbose:
        # Every warning once per place, the kinds Python hides by default included.
        warnings.simplefilter("default")
        if os.environ.get("PYSPARK_SUBMIT_ARGS") == SPARK_SUBMIT_ARGS:
            del os.environ["PYSPARK_SUBMIT_ARGS"]
    elif spark:
        os.environ.setdefault("PYSPARK_SUBMIT_ARGS", SPARK_SUBMIT_ARGS)
    if warnings.showwarning is not _showwarning:
        warnings.showwarning = _showwarning
    feast_config_log = logging.getLogger("feast.repo_config")
    if not any(isinstance(f, _DropServeWhileMaterializingAdvice) for f in feast_config_log.filters):
        feast_config_log.addFilter(_DropServeWhileMaterializingAdvice())
    return verbose


def quiet_third_party_warnings() -> None:
    """:func:`quiet`, verbose as VERBOSE says (the server and the benchmarks call this)."""
    quiet()


@contextlib.contextmanager
def feast_prints() -> Iterator[None]:
    """Around a Feast call that prints for Feast's own CLI: its stdout hidden, or on stderr
    when verbose (stdout stays the command's result either way)."""
    if _state["verbose"] or is_verbose():
        with contextlib.redirect_stdout(sys.stderr):
            yield
    else:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield


if __name__ == "__main__":  # Spark's Python worker daemon, quiet (SPARK_SUBMIT_ARGS)
    from pyspark.daemon import manager

    quiet()
    manager()
