"""Experiment tracking (training/tracking.py): every training run logged to MLflow, read back
through MLflow's own client, from the local SQLite store under DATA_DIR and from a real
tracking server started the way `make mlflow` starts it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from cli import training as training_cli
from core.errors import ConfigError
from core.settings import REPO_ROOT, Settings
from tests.conftest import copy_data_dir
from training import tracking
from training import train as train_module
from training.errors import TrainingError
from training.registry import ModelRegistry
from training.train import TrainConfig, run_training
from validation.report import Failure, GateFailed, Report


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tracked_run(client: MlflowClient, version: str):
    runs = tracking.runs_of(client, version)
    assert runs, f"no MLflow run tagged model_version={version}"
    return runs[0]


def assert_run_describes_the_model(client: MlflowClient, run, registry: ModelRegistry, version: str, tmp_path: Path,
                                   stages=("candidate",)):
    """The run holds what the registry holds for ``version``: parameters, metrics, tags,
    the feature list and the model file itself, byte for byte."""
    model = registry.load(version)
    meta = model.metadata
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and run.info.run_name == version
    assert tags["model_version"] == version and tags["model_sha256"] == meta["sha256"]
    assert tags["feature_service"] == meta["feature_service"] and tags["use_case"] == meta["use_case"]
    assert tags["stage"] in stages and tags["training_gate"] == "passed"
    assert params["features"] == ",".join(meta["features"]) and params["feature_count"] == str(len(meta["features"]))
    assert params["data_fingerprint"] == meta["data_fingerprint"] == tags["data_fingerprint"]
    assert params["config.seed"] == str(meta["params"]["seed"])
    assert params["config.num_boost_round"] == str(meta["params"]["num_boost_round"])
    assert params["holdout_window.start"] == meta["holdout_window"]["start"]
    for group in ("model", "baseline"):
        for name in ("auc", "log_loss", "brier", "rows"):
            assert metrics[f"{group}/{name}"] == pytest.approx(meta["metrics"][group][name]), f"{group}/{name}"
    assert metrics["calibration/ece"] == pytest.approx(meta["metrics"]["calibration"]["ece"])
    column, values = next((c, v) for c, v in meta["metrics"]["slices"].items() if v)
    value, per_value = next(iter(values.items()))
    assert metrics[tracking.metric_key("slice", column, value, "auc")] == pytest.approx(per_value["auc"])

    downloaded = Path(client.download_artifacts(run.info.run_id, "model/model.ubj", str(tmp_path)))
    assert downloaded.read_bytes() == model.model_bytes, "the tracked model file is not the registry's"
    listing = json.loads(Path(client.download_artifacts(run.info.run_id, "features.json", str(tmp_path)))
                         .read_text())
    assert listing == {"feature_service": meta["feature_service"], "features": meta["features"]}


# ---- the local store: the session's flow run was tracked -------------------------------------

def test_the_flow_training_run_is_tracked_in_the_local_store_under_data_dir(slice_run, tmp_path):
    settings: Settings = slice_run["settings"]
    version = slice_run["result"]["version"]
    assert settings.tracking_uri == f"sqlite:///{settings.data_dir}/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    run = tracked_run(client, version)
    # The flow's promotion step records the model gate's verdict on the run
    # (training.tracking.record_model_gate, called by training.promote.promote_if_better).
    promoted = slice_run["promotion"]["promoted"]
    assert_run_describes_the_model(client, run, ModelRegistry(settings.models), version, tmp_path,
                                   stages=("promoted",) if promoted else ("rejected",))
    assert run.data.tags["model_gate"] == ("passed" if promoted else "refused")
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith((settings.data_dir / "mlflow" / "artifacts").as_uri()), \
        "the local store's artifacts must live under DATA_DIR/mlflow, not the working directory"


# ---- bad input ---------------------------------------------------------------------------------

def test_an_unreachable_tracking_uri_fails_training_before_it_fits(slice_run, monkeypatch, capsys):
    settings: Settings = slice_run["settings"]
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    fitted = []
    monkeypatch.setattr(train_module, "fit", lambda *a, **k: fitted.append(a) or b"not a model")
    models_before = sorted(p.name for p in settings.models.iterdir())

    code = training_cli.main(["train", "--rounds", "5"])

    err = capsys.readouterr().err
    assert code == 2, err
    assert f"MLFLOW_TRACKING_URI={uri}" in err and "cannot be reached" in err and "Traceback" not in err
    assert not fitted, "training fitted a model although its tracking store was unreachable"
    assert sorted(p.name for p in settings.models.iterdir()) == models_before, "something was written"


@pytest.mark.parametrize("value, says", [
    ("file:///tmp/mlruns", "not an MLflow tracking URI"),
    ("/tmp/mlruns", "not an MLflow tracking URI"),
    ("redis://127.0.0.1:6379", "not an MLflow tracking URI"),
    ("sqlite:///relative.db", "absolute path"),
    ("http://:5000", "http(s)://host[:port]"),
    ("http://127.0.0.1:port", "http(s)://host[:port]"),
])
def test_a_malformed_tracking_uri_is_a_config_error_naming_it(tmp_path, value, says):
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"DATA_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": value})
    assert f"MLFLOW_TRACKING_URI={value!r}" in str(e.value) and says in str(e.value)


def test_the_tracking_uri_setting_and_its_default(tmp_path):
    default = Settings.from_env({"DATA_DIR": str(tmp_path)})
    assert default.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert not default.mlflow_tracking_uri_set
    # A run on a derived DATA_DIR (the replay's) logs to the store the settings resolved.
    assert replace(default, data_dir=tmp_path / "replay" / "data").tracking_uri == default.tracking_uri
    made = Settings(data_dir=tmp_path / "made")  # as the replay's tests make theirs
    assert replace(made, data_dir=tmp_path / "made" / "replay" / "data").tracking_uri == \
        f"sqlite:///{tmp_path}/made/mlflow/mlflow.db"
    server = Settings.from_env({"DATA_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": " http://127.0.0.1:5000 "})
    assert server.tracking_uri == "http://127.0.0.1:5000" and server.mlflow_tracking_uri_set


def test_without_mlflow_installed_tracking_is_a_clear_error(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(TrainingError, match=r"MLflow is not installed .*make install"):
        tracking.connect(Settings(data_dir=tmp_path))


def test_mlflow_ui_refuses_clearly_when_it_cannot_serve(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert training_cli.main(["mlflow-ui", "--mlflow", str(tmp_path / "no" / "mlflow")]) == 2
    err = capsys.readouterr().err
    assert "the MLflow UI is not installed" in err and "make install" in err and "Traceback" not in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert training_cli.main(["mlflow-ui"]) == 2
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000 is a tracking server" in capsys.readouterr().err


def test_the_model_gate_verdict_is_tracked_best_effort(tmp_path):
    """The verdict is decided and written before it is tracked: a store that cannot be
    reached is a warning, not a failed promotion."""
    uri = f"http://127.0.0.1:{free_port()}"
    settings = Settings(data_dir=tmp_path, mlflow_tracking_uri=uri, mlflow_tracking_uri_set=True)
    said: list[str] = []
    assert tracking.record_model_gate(settings, "0123456789abcdef", Report("model", "x"), say=said.append) == 0
    assert len(said) == 1 and said[0].startswith("warning: the model gate's verdict on 0123456789abcdef was not "
                                                 f"tracked: MLFLOW_TRACKING_URI={uri} cannot be reached")


def test_metric_keys_keep_to_what_mlflow_accepts():
    assert tracking.metric_key("slice", "carrier", "<null>", "auc") == "slice/carrier/_null_/auc"
    assert tracking.metric_key("slice", "dest", "..", "auc") == "slice/dest/_/auc"
    assert tracking.metric_key("slice", "hour", 7.0, "log_loss") == "slice/hour/7.0/log_loss"
    flat = tracking._flat_metrics({"model": {"auc": 0.7, "rows": 10, "positive_rate": None},
                                   "slices": {"c": {"a?": {"auc": 0.6}, "a!": {"auc": 0.5}}}})
    assert flat == {"model/auc": 0.7, "model/rows": 10.0, "slice/c/a_/auc": 0.6, "slice/c/a__/auc": 0.5}


def test_serving_and_the_command_lines_do_not_import_mlflow():
    """MLflow is imported when a run is tracked, never by the server or a command's --help."""
    code = ("import sys, serving.app, serving.gunicorn_conf, cli.training, cli.pipeline, training.train, "
            "flow.nightly; loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'); "
            "print(loaded); sys.exit(1 if loaded else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# ---- a real tracking server, started as `make mlflow` starts it ---------------------------------

@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`make mlflow` on a fresh DATA_DIR (the recipe as the Makefile has it; install is taken
    as done), answering on a free port; stopped with its whole process group afterwards."""
    data_dir = tmp_path_factory.mktemp("mlflow_ui") / "data"
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir), "HOST": "127.0.0.1", "MLFLOW_PORT": str(port)}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(data_dir.parent / "server.log", "wb")
    process = subprocess.Popen(["make", "-s", "-o", "install", "mlflow"], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"make mlflow exited {process.returncode}: " \
                                           f"{(data_dir.parent / 'server.log').read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"make mlflow did not answer on {url}: " \
                                                f"{(data_dir.parent / 'server.log').read_text()[-2000:]}"
            time.sleep(0.5)
        yield {"url": url, "data_dir": data_dir}
    finally:
        stop_group(process)
        log.close()


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group the fixture started (make, the command, mlflow server and
    its workers); SIGKILL what is still there after a grace period."""
    def alive() -> bool:
        try:
            os.killpg(process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    if alive():
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        process.poll()  # reap make itself, or the group never looks empty
        time.sleep(0.2)
    if alive():
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_make_mlflow_serves_the_ui_over_the_local_store(mlflow_server):
    with urllib.request.urlopen(mlflow_server["url"] + "/", timeout=10) as answer:
        page = answer.read().decode()
    assert answer.status == 200 and "<title>MLflow</title>" in page
    assert (mlflow_server["data_dir"] / "mlflow" / "mlflow.db").is_file(), "the UI is not over DATA_DIR/mlflow"


@pytest.fixture(scope="module")
def slice_copy(slice_run, tmp_path_factory) -> Settings:
    """A private copy of the slice run's DATA_DIR (its registry and reports stay apart)."""
    data = copy_data_dir(slice_run["settings"].data_dir, tmp_path_factory.mktemp("tracking") / "data", ignore=())
    return Settings(data_dir=data)


#: A short training run on the slice's last month (the tracking, not the model, is under test).
SMALL = TrainConfig(num_boost_round=10, window_start="2013-02-01", holdout_start="2013-02-20")


def test_a_training_run_is_logged_to_a_tracking_server(mlflow_server, slice_run, slice_copy, use_case, tmp_path):
    settings = replace(slice_copy, mlflow_tracking_uri=mlflow_server["url"], mlflow_tracking_uri_set=True)
    result = run_training(settings, use_case, slice_run["store"], SMALL, say=lambda m: None)

    client = MlflowClient(tracking_uri=mlflow_server["url"])
    run = tracked_run(client, result["version"])
    assert_run_describes_the_model(client, run, ModelRegistry(settings.models), result["version"], tmp_path)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts must go through the server"

    # The model gate's verdict joins the run of the version it judged.
    report = Report("model", f"candidate {result['version']}")
    for check in ("model_integrity", "floor_auc"):
        report.ran(check)
    report.failures.append(Failure("floor_auc", "model", None, "AUC 0.6 is not 0.02 above the baseline's 0.59"))
    assert tracking.record_model_gate(settings, result["version"], report) == 1
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["model_gate"] == "refused" and tags["stage"] == "rejected"
    assert "floor_auc" in tags["model_gate.failures"] and tags["model_gate.checks"] == "model_integrity,floor_auc"


def test_a_refused_training_run_is_tracked_as_failed_with_the_gate_verdict(slice_run, slice_copy, use_case,
                                                                          tmp_path):
    """A training gate that refuses still leaves a run: FAILED, with the failing checks."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    settings = replace(slice_copy, mlflow_tracking_uri=uri, mlflow_tracking_uri_set=True)
    # A holdout window after the last event: the training gate refuses an empty one.
    config = TrainConfig(num_boost_round=5, window_start="2013-02-27", holdout_start="2014-01-01")
    models_before = ModelRegistry(settings.models).versions()
    with pytest.raises(GateFailed) as refused:
        run_training(settings, use_case, slice_run["store"], config, say=lambda m: None)
    assert ModelRegistry(settings.models).versions() == models_before

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(use_case.name)
    (run,) = client.search_runs([experiment.experiment_id])
    tags = run.data.tags
    assert run.info.status == "FAILED" and tags["training_gate"] == "refused" and tags["stage"] == "refused"
    assert tags["training_gate.failed_checks"] == ",".join(dict.fromkeys(refused.value.checks))
    assert all(f.line() in tags["training_gate.failures"] for f in refused.value.report.failures)
    assert run.data.params["config.holdout_start"] == "2014-01-01"
    assert experiment.artifact_location.startswith((tmp_path / "store" / "artifacts").as_uri())
