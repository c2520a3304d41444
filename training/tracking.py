"""Experiment tracking: every training run logged to MLflow, so runs can be compared.

Each :func:`training.train.run_training` opens a run (:func:`open_run`) before it reads any
data, and closes it either way:

- a registered model: its parameters (the training config, XGBoost's, the windows, the data
  fingerprint), its holdout metrics next to the baseline's (``model/auc``,
  ``baseline/auc``, ...), calibration (``calibration/ece``) and slice metrics
  (``slice/<column>/<value>/<metric>``), the training gate's verdict, and as artifacts the
  model file (``model/model.ubj``, the very bytes the registry holds), its metadata and the
  FeatureService's feature list (``features.json``). Tags name it: ``model_version`` (16 hex
  digits, also the run's name), ``model_sha256``, ``feature_service``, ``stage``.
- a refused or failed run: status FAILED, ``training_gate`` ``refused`` and the failing
  checks (``training_gate.failures``), or the error.

The model gate's verdict is added to the run of the version it judged
(:func:`record_model_gate`: ``model_gate``, ``stage`` ``promoted`` or ``rejected``).

The store is ``MLFLOW_TRACKING_URI`` (:attr:`core.settings.Settings.tracking_uri`), by
default a SQLite database under ``DATA_DIR/mlflow/`` with the artifacts of its experiments
next to it (``DATA_DIR/mlflow/artifacts``). Tracking is not best-effort: a store that cannot
be reached fails the run before anything is fitted (:func:`open_run`), naming the URI.
The hash-addressed registry stays what serving loads; MLflow holds a copy for comparison.

MLflow is imported only here and only when a run is tracked: the server and ``--help`` never
load it. Its own INFO logging (database creation and migrations) is kept quiet.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from training.errors import TrainingError

if TYPE_CHECKING:
    from core.settings import Settings
    from core.usecase import UseCase

#: The reachability check's budget: one attempt, a short timeout (MLflow's defaults retry
#: for minutes before giving up on an unreachable server).
CHECK_TIMEOUT_SECONDS = 5
#: MLflow's batch limits (``mlflow.utils.validation``): metrics, and params or tags, per request.
_METRICS_PER_BATCH = 1000
_PARAMS_TAGS_PER_BATCH = 100
_PARAM_MAX = 6000
_TAG_MAX = 8000
_KEY_PART = re.compile(r"[^\w.\- :]")
#: Where the model file goes among a run's artifacts.
MODEL_ARTIFACT_DIR = "model"


def _client_class():
    """MlflowClient, imported on first use; a clear error if MLflow is not installed."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise TrainingError(f"MLflow is not installed ({e}): experiment tracking needs the mlflow-skinny "
                            "package of the base install; run `make install`") from None
    for name in ("mlflow", "alembic"):  # database creation and migration notices, every first run
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow's SQLite store, on import, uses a SQLAlchemy loader option that SQLAlchemy 2.1 deprecates.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.store\..*")
    return MlflowClient


def describe(settings: Settings) -> str:
    """How messages name the store: the setting when it was set, else the default's place."""
    uri = settings.tracking_uri
    if settings.mlflow_tracking_uri_set:
        return f"MLFLOW_TRACKING_URI={uri}"
    return f"the local MLflow store {uri} (MLFLOW_TRACKING_URI unset)"


def local_artifact_root(uri: str) -> Path | None:
    """For a SQLite store, the directory next to its database that holds its experiments'
    artifacts (None for any other store: the server decides)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).parent / "artifacts"


@contextmanager
def _one_quick_attempt() -> Iterator[None]:
    """MLflow's HTTP requests with no retry and a short timeout, for the duration."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_SECONDS)}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(settings: Settings):
    """An MlflowClient on the settings' store, once it answered; :class:`TrainingError`
    naming the store if it does not (nothing else is tried: a training run stops here)."""
    uri = settings.tracking_uri
    client_class = _client_class()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        with _one_quick_attempt():
            client = client_class(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except Exception as e:  # MLflow raises its own, requests' and SQLAlchemy's errors alike
        raise TrainingError(f"{describe(settings)} cannot be reached: {_short(e)}. Start the tracking "
                            "server or fix MLFLOW_TRACKING_URI (unset: a local store under DATA_DIR/mlflow); "
                            "nothing was trained") from None
    return client


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def metric_key(*parts: object) -> str:
    """A metric name MLflow accepts, from parts joined by ``/`` (a slice value may hold any
    character: those MLflow refuses become ``_``)."""
    out = []
    for part in parts:
        text = _KEY_PART.sub("_", str(part))
        out.append("_" if text in ("", ".", "..") else text)
    return "/".join(out)


def _flat_metrics(metrics: dict) -> dict[str, float]:
    """The registry's metrics record as MLflow metrics (undefined values left out)."""
    out: dict[str, float] = {}

    def put(key: str, value) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)

    for group in ("model", "baseline"):
        for name, value in metrics.get(group, {}).items():
            put(metric_key(group, name), value)
    put("calibration/ece", metrics.get("calibration", {}).get("ece"))
    for column, values in metrics.get("slices", {}).items():
        used: set[str] = set()
        for value, per_value in values.items():
            key = metric_key(value)
            while key in used:  # two values that differ only in characters MLflow refuses
                key += "_"
            used.add(key)
            for name, number in per_value.items():
                put(metric_key("slice", column, key, name), number)
    return out


def _text(value, limit: int) -> str:
    """A parameter or tag value: scalars as ``str`` gives them (MLflow's own convention),
    lists and mappings as JSON; cut to MLflow's length limit."""
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class TrackedRun:
    """One training run's MLflow run: opened before the work, closed by :meth:`finish` or
    :meth:`fail`."""

    def __init__(self, client, run_id: str, settings: Settings):
        self.client = client
        self.run_id = run_id
        self.settings = settings

    def _log(self, metrics: dict[str, float] | None = None, params: dict | None = None,
             tags: dict | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_rows = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
        param_rows = [Param(k, _text(v, _PARAM_MAX)) for k, v in (params or {}).items()]
        tag_rows = [RunTag(k, _text(v, _TAG_MAX)) for k, v in (tags or {}).items()]
        for i in range(0, len(metric_rows), _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metric_rows[i:i + _METRICS_PER_BATCH])
        for i in range(0, len(param_rows), _PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=param_rows[i:i + _PARAMS_TAGS_PER_BATCH])
        for i in range(0, len(tag_rows), _PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=tag_rows[i:i + _PARAMS_TAGS_PER_BATCH])

    def finish(self, version: str) -> None:
        """Log the registered model ``version`` (read back from the registry, so the run holds
        exactly what serving would load) and end the run FINISHED."""
        from training.registry import METADATA_FILE, MODEL_FILE, ModelRegistry

        try:
            model = ModelRegistry(self.settings.models).load(version)
            meta = model.metadata
            params = {
                "label": meta["label"],
                "features": ",".join(meta["features"]),
                "feature_count": len(meta["features"]),
                "data_fingerprint": meta["data_fingerprint"],
                "training_window.start": meta["training_window"]["start"],
                "training_window.end": meta["training_window"]["end"],
                "training_window.rows": meta["training_window"]["rows"],
                "holdout_window.start": meta["holdout_window"]["start"],
                "holdout_window.end": meta["holdout_window"]["end"],
                "holdout_window.rows": meta["holdout_window"]["rows"],
                **{f"xgboost.{k}": v for k, v in meta["xgboost_params"].items()},
            }
            tags = {
                "model_version": version,
                "model_sha256": meta["sha256"],
                "stage": "candidate",
                "training_gate": "passed",
                "data_fingerprint": meta["data_fingerprint"],
                "leakage_guard": meta.get("leakage_guard", ""),
                **{f"library.{k}": v for k, v in meta.get("library_versions", {}).items()},
            }
            self._log(metrics={**_flat_metrics(meta["metrics"]), "train_seconds": meta["train_seconds"]},
                      params=params, tags=tags)
            folder = self.settings.models / version
            self.client.log_artifact(self.run_id, str(folder / MODEL_FILE), MODEL_ARTIFACT_DIR)
            self.client.log_artifact(self.run_id, str(folder / METADATA_FILE), MODEL_ARTIFACT_DIR)
            with tempfile.TemporaryDirectory() as tmp:
                listing = Path(tmp) / "features.json"
                listing.write_text(json.dumps({"feature_service": meta["feature_service"],
                                               "features": meta["features"]}, indent=2))
                self.client.log_artifact(self.run_id, str(listing))
            self.client.update_run(self.run_id, status="FINISHED", name=version)
        except Exception as e:
            self._abandon()
            if isinstance(e, TrainingError):  # the registry refused to load it (its hash)
                raise
            raise TrainingError(f"model {version} is registered, but its run could not be logged to "
                                f"{describe(self.settings)}: {_short(e)}") from None

    def fail(self, error: BaseException) -> None:
        """End the run FAILED (KILLED for an interrupt) with the reason: a refusing training
        gate's verdict and failing checks, else the error. Never raises: the caller is
        already raising ``error``."""
        from validation.report import GateFailed

        if isinstance(error, GateFailed):
            tags = {"training_gate": "refused", "stage": "refused",
                    "training_gate.failures": "\n".join(f.line() for f in error.report.failures),
                    "training_gate.failed_checks": ",".join(dict.fromkeys(error.checks))}
        else:
            tags = {"error": f"{type(error).__name__}: {_short(error)}"}
        try:
            self._log(tags=tags)
            status = "FAILED" if isinstance(error, Exception) else "KILLED"
            self.client.update_run(self.run_id, status=status, name=f"{tags.get('stage', 'failed')}")
        except Exception:
            self._abandon()

    def _abandon(self) -> None:
        try:
            self.client.set_terminated(self.run_id, status="FAILED")
        except Exception:
            pass


def experiment_id(client, settings: Settings, name: str) -> str:
    """The experiment ``name``, created if missing (for a SQLite store, with its artifacts
    next to the database rather than under the working directory)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrainingError(f"MLflow experiment {name!r} is deleted in {settings.tracking_uri}: restore it "
                                "(MLflow UI or `mlflow experiments restore`) or delete it for good")
        return found.experiment_id
    root = local_artifact_root(settings.tracking_uri)
    location = (root / (re.sub(r"[^\w.-]+", "-", name).strip("-.") or "experiment")).as_uri() if root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def open_run(settings: Settings, use_case: UseCase, config) -> TrackedRun:
    """Check the store answers (:func:`connect`), then start this training run's MLflow run in
    the use case's experiment with the config as parameters. :class:`TrainingError` naming the
    store if it cannot be reached: nothing has been read or fitted then."""
    from dataclasses import asdict

    client = connect(settings)
    try:
        experiment = experiment_id(client, settings, use_case.name)
        run = client.create_run(experiment, run_name=f"{use_case.feature_service} (training)", tags={
            "use_case": use_case.name, "feature_service": use_case.feature_service,
            "stage": "training", "data_dir": str(settings.data_dir)})
    except TrainingError:
        raise
    except Exception as e:
        raise TrainingError(f"{describe(settings)}: cannot start "
                            f"a run: {_short(e)}; nothing was trained") from None
    tracked = TrackedRun(client, run.info.run_id, settings)
    try:
        tracked._log(params={"use_case": use_case.name, "feature_service": use_case.feature_service,
                             **{f"config.{k}": v for k, v in asdict(config).items()}})
    except Exception as e:
        tracked._abandon()
        raise TrainingError(f"{describe(settings)}: cannot log "
                            f"to a run: {_short(e)}; nothing was trained") from None
    return tracked


def runs_of(client, version: str) -> list:
    """The tracked runs that registered ``version`` (newest first), across experiments."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    return client.search_runs(experiments, filter_string=f"tags.model_version = '{version}'",
                              order_by=["attributes.start_time DESC"])


def record_model_gate(settings: Settings, version: str, report, say=print) -> int:
    """Add the model gate's verdict on ``version`` (a :class:`validation.report.Report`) to
    the runs that registered it: ``model_gate`` passed/refused, the checks run and the
    failing ones, and ``stage`` promoted or rejected. Returns how many runs were updated
    (0: the version was trained before tracking, or elsewhere).

    Best-effort, unlike a training run: the verdict is already decided and written
    (``gate_report.json``), so a store that cannot be reached is a warning (``say``), never
    a reason to keep the champion or to promote."""
    tags = {"model_gate": "passed" if report.passed else "refused",
            "model_gate.checks": ",".join(report.checks),
            "model_gate.failures": "\n".join(f.line() for f in report.failures),
            "stage": "promoted" if report.passed else "rejected"}
    try:
        client = connect(settings)
        runs = runs_of(client, version)
        for run in runs:
            TrackedRun(client, run.info.run_id, settings)._log(tags=tags)
    except Exception as e:
        say(f"warning: the model gate's verdict on {version} was not tracked: {_short(e)}")
        return 0
    return len(runs)


def ui_executable() -> Path:
    """Where ``make install`` puts the MLflow UI: a venv of its own inside the project's
    (``.venv/mlflow-ui``), since the full ``mlflow`` package pins a gunicorn older than the
    one serving needs; the project itself uses the client (``mlflow-skinny``)."""
    import sys

    return Path(sys.prefix) / "mlflow-ui" / "bin" / "mlflow"


def ui_command(settings: Settings, host: str, port: int, executable: Path | None = None) -> list[str]:
    """The ``mlflow server`` command line that serves the UI over the settings' local store
    (:class:`TrainingError` if the UI is not installed, or the store is a server: it has
    its own UI)."""
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://", "databricks")):
        raise TrainingError(f"MLFLOW_TRACKING_URI={uri} is a tracking server: open its own UI "
                            "(unset MLFLOW_TRACKING_URI to browse the local store under DATA_DIR/mlflow)")
    executable = Path(executable) if executable else ui_executable()
    if not os.access(executable, os.X_OK):
        raise TrainingError(f"the MLflow UI is not installed ({executable} is missing): run `make install`, "
                            "which installs it in a venv of its own")
    command = [str(executable), "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
               "--workers", "1"]
    root = local_artifact_root(uri)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        # Runs logged through this server (MLFLOW_TRACKING_URI=http://host:port) upload their
        # artifacts to it; they land next to the database like the local runs' own.
        command += ["--artifacts-destination", str(root)]
    return command
