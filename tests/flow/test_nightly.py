"""The nightly flow declared once (flow.nightly): its stages run in order, each taking what
the one before left on the run, with the options its callers vary; and the callers
(`pipeline run`, the replay, the slice fixture) run it instead of wiring stages by hand.

The stage functions are replaced by recording fakes: what a stage does is tested with the
stage; here only the wiring is."""

from __future__ import annotations

import ast
import io
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.errors import ConfigError
from core.progress import Progress
from core.settings import REPO_ROOT, Settings
from flow.nightly import STAGES, FlowOptions, FlowRun
from training.errors import TrainingError
from training.train import TrainConfig

AS_OF = datetime(2013, 3, 1, 5, tzinfo=timezone.utc)


class Stages:
    """Fakes of every stage function, recording (name, arguments) in call order."""

    def __init__(self, monkeypatch, fail: str | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail
        self.snapshot = SimpleNamespace(id="s1", as_of=AS_OF, tables={"events": 3})
        self.latest = SimpleNamespace(id="s0", as_of=datetime(2013, 2, 1, tzinfo=timezone.utc), tables={})
        self.stores: list[object] = []
        fakes = {
            ("pipeline.ingest", "ingest"): self.ingest, ("pipeline.ingest", "latest_snapshot"): self.latest_snapshot,
            ("pipeline.features", "build_sources"): self.build_sources, ("pipeline.apply", "apply"): self.apply,
            ("feast_plugins.store", "feature_store"): self.feature_store,
            ("pipeline.materialize", "materialize"): self.materialize,
            ("training.train", "run_training"): self.run_training,
            ("training.promote", "promote_if_better"): self.promote_if_better,
        }
        for (module, name), fake in fakes.items():
            monkeypatch.setattr(f"{module}.{name}", fake)

    def _record(self, name, **kwargs):
        self.calls.append((name, kwargs))
        if name == self.fail:
            raise TrainingError(f"{name} cannot go on")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def args(self, name: str) -> dict:
        return next(kwargs for n, kwargs in self.calls if n == name)

    def ingest(self, settings, use_case, progress=None, **kwargs):
        self._record("ingest", progress=progress, **kwargs)
        return self.snapshot

    def latest_snapshot(self, settings):
        self._record("latest_snapshot")
        return self.latest

    def build_sources(self, settings, use_case, snapshot, progress=None, contracts=None):
        self._record("build_sources", snapshot=snapshot, contracts=contracts)
        return {"source_a": 10}

    def apply(self, settings):
        self._record("apply")

    def feature_store(self, settings):
        self._record("feature_store")
        store = object()
        self.stores.append(store)
        return store

    def materialize(self, settings, end, start=None, use_case=None, check=True, written_at=None):
        self._record("materialize", end=end, check=check, written_at=written_at)

    def run_training(self, settings, use_case, store, config, say=print):
        self._record("run_training", store=store, config=config)
        say("trained")
        return {"version": "v1", "metrics": {}}

    def promote_if_better(self, settings, use_case, store, version, say=print):
        self._record("promote_if_better", store=store, version=version)
        return {"promoted": True, "version": version}


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")


def test_every_stage_runs_in_order_on_what_the_one_before_left(monkeypatch, settings, use_case):
    stages = Stages(monkeypatch)
    config = TrainConfig(num_boost_round=5)
    contracts = {"source_a": object()}
    stream = io.StringIO()
    progress = Progress(total=len(STAGES), stream=stream)
    options = FlowOptions(accept=("volume_change",), declared_as_of=AS_OF, follow_reference=True,
                          contracts=contracts, train=config, progress=progress)
    flow = FlowRun(settings, use_case, options).run()

    assert stages.names() == ["ingest", "build_sources", "apply", "feature_store", "materialize", "run_training",
                              "promote_if_better"]
    assert stages.args("ingest") == {"progress": progress, "accept": ("volume_change",), "declared_as_of": AS_OF,
                                     "follow_reference": True}
    assert stages.args("build_sources") == {"snapshot": stages.snapshot, "contracts": contracts}
    assert stages.args("materialize") == {"end": AS_OF, "check": False, "written_at": None}, \
        "up to the snapshot's as-of, unchecked: the features stage has just checked those files"
    [store] = stages.stores
    assert stages.args("run_training") == {"store": store, "config": config}, "trained on the store apply left"
    assert stages.args("promote_if_better") == {"store": store, "version": "v1"}
    assert (flow.snapshot, flow.sources, flow.model, flow.promotion, flow.store) == (
        stages.snapshot, {"source_a": 10}, {"version": "v1", "metrics": {}}, {"promoted": True, "version": "v1"},
        store)
    assert list(flow.seconds) == list(STAGES) and flow.running is None
    assert list(progress.timings) == list(STAGES), "the sink saw every stage"
    assert "[1/6] ingest ..." in stream.getvalue() and "      trained" in stream.getvalue()


def test_only_the_chosen_stages_run(monkeypatch, settings, use_case):
    """The replay's nights after the first: no apply, and materialize to the night's instant."""
    stages = Stages(monkeypatch)
    night = datetime(2013, 1, 23, 5, tzinfo=timezone.utc)
    flow = FlowRun(settings, use_case, FlowOptions(stages=("ingest", "features", "materialize"),
                                                   materialize_end=night)).run()
    assert stages.names() == ["ingest", "build_sources", "materialize"]
    # The replay's writes are stamped with its clock (write lag, monitoring's causes).
    assert stages.args("materialize") == {"end": night, "check": False, "written_at": night}
    assert flow.store is None and flow.model is None and list(flow.seconds) == ["ingest", "features", "materialize"]


def test_a_run_that_starts_after_ingest_takes_the_newest_snapshot_and_checks_before_loading(
        monkeypatch, settings, use_case):
    stages = Stages(monkeypatch)
    FlowRun(settings, use_case, FlowOptions(stages=("materialize",))).run()
    assert stages.names() == ["latest_snapshot", "materialize"]
    assert stages.args("materialize") == {"end": stages.latest.as_of, "check": True, "written_at": None}, \
        "sources this run did not build are checked against their contracts first"


def test_train_and_promote_use_the_callers_store_else_one_made_once(monkeypatch, settings, use_case):
    stages = Stages(monkeypatch)
    given = object()
    FlowRun(settings, use_case, FlowOptions(stages=("train", "promote")), store=given).run()
    assert stages.names() == ["run_training", "promote_if_better"]
    assert stages.args("run_training")["store"] is given and stages.args("promote_if_better")["store"] is given

    stages = Stages(monkeypatch)
    flow = FlowRun(settings, use_case, FlowOptions(stages=("train", "promote"))).run()
    assert stages.names() == ["feature_store", "run_training", "promote_if_better"]
    assert flow.store is stages.stores[0] is stages.args("promote_if_better")["store"]


def test_a_stage_that_raises_stops_the_run_and_names_itself(monkeypatch, settings, use_case):
    """What the replay needs to tell a refused training (recorded) from a failed promotion."""
    stages = Stages(monkeypatch, fail="run_training")
    flow = FlowRun(settings, use_case, FlowOptions(stages=("train", "promote")), store=object())
    with pytest.raises(TrainingError, match="run_training cannot go on"):
        flow.run()
    assert flow.running == "train" and list(flow.seconds) == ["train"], "its wall time is kept"
    assert "promote_if_better" not in stages.names() and flow.model is None


@pytest.mark.parametrize("stages, message", [
    (("ingest", "transform"), "each must be one of"),
    ((), "each must be one of"),
    (("features", "ingest"), "in the flow's order"),
    (("ingest", "ingest"), "at most once"),
    (("ingest", "promote"), "add 'train'"),
])
def test_bad_stages_are_refused_by_name(stages, message):
    with pytest.raises(ConfigError, match=message):
        FlowOptions(stages=stages)


def test_the_default_options_are_pipeline_runs():
    options = FlowOptions()
    assert options.stages == STAGES == ("ingest", "features", "apply", "materialize", "train", "promote")
    assert options.train == TrainConfig() and options.accept == () and options.contracts is None
    assert options.declared_as_of is None and not options.follow_reference and options.materialize_end is None


#: The stage functions: called by flow.nightly only, never wired by hand again.
STAGE_FUNCTIONS = {"ingest", "build_sources", "apply", "materialize", "run_training", "promote_if_better"}


def _calls(path: Path, function: str | None = None) -> set[str]:
    tree = ast.parse(path.read_text())
    if function is not None:
        tree = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


@pytest.mark.parametrize("path, function", [("cli/pipeline.py", "cmd_run"), ("replay/run.py", None),
                                            ("tests/conftest.py", "slice_run")])
def test_the_callers_run_the_declaration_instead_of_wiring_stages(path, function):
    calls = _calls(REPO_ROOT / path, function)
    assert "FlowRun" in calls, f"{path} does not run flow.nightly"
    assert not calls & STAGE_FUNCTIONS, f"{path} calls stage functions itself: {sorted(calls & STAGE_FUNCTIONS)}"
