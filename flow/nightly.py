"""The nightly flow, declared once: its stages in order, each a function of the run's
state, and one options record holding everything its callers vary.

``pipeline run`` runs every stage; the replay runs ingest..materialize each night (apply
on its first night only) and train..promote when its policy retrains; the tests' slice
fixture runs every stage but materialize. What a stage does lives in ``pipeline/`` and
``training/``; this module only wires them: what each stage takes from the run and what
it leaves there for the next.

The stages import their modules when they run, so reading :data:`STAGES` (``pipeline
--help``) costs neither Feast nor XGBoost.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator, Mapping, Protocol

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.contracts import TableContract
    from core.settings import Settings
    from core.usecase import UseCase
    from pipeline.ingest import Snapshot
    from training.train import TrainConfig


class Sink(Protocol):
    """Where a run reports: around each stage (a line, a clock) and what the stages say on
    the way. :class:`core.progress.Progress` is one."""

    def say(self, message: str) -> None: ...

    def stage(self, name: str) -> ContextManager: ...


class Silent:
    """A sink that reports nothing."""

    def say(self, message: str) -> None:
        pass

    @contextmanager
    def stage(self, name: str) -> Iterator["Silent"]:
        yield self


# ---- the stages: each reads the run and leaves its result on it ----------------------------

def ingest(run: FlowRun) -> None:
    """The raw tables behind the ingest gate, landed as an immutable snapshot."""
    from pipeline.ingest import ingest as land

    o = run.options
    run.snapshot = land(run.settings, run.use_case, o.progress, accept=o.accept,
                        declared_as_of=o.declared_as_of, follow_reference=o.follow_reference)


def features(run: FlowRun) -> None:
    """The source tables built from the snapshot, behind the features gate."""
    from pipeline.features import build_sources

    run.sources = build_sources(run.settings, run.use_case, _snapshot(run), run.options.progress,
                                contracts=run.options.contracts)


def apply(run: FlowRun) -> None:
    """``feast apply``; the run's FeatureStore is then one over the registry just written."""
    from core.quiet import feast_prints
    from feast_plugins.store import feature_store
    from pipeline.apply import apply as feast_apply

    with feast_prints():  # Feast's CLI lines ("Deploying infrastructure for ..."), not ours
        feast_apply(run.settings)
    run.store = feature_store(run.settings)


def materialize(run: FlowRun) -> None:
    """The online store loaded up to the options' instant, else the snapshot's as-of."""
    from pipeline.materialize import materialize as load

    end = run.options.materialize_end or _snapshot(run).as_of
    # The sources' contracts are checked again only when this run did not just build them.
    load(run.settings, end, use_case=run.use_case, check=run.sources is None,
         written_at=run.options.materialize_end)


def train(run: FlowRun) -> None:
    """A model trained through the FeatureService behind the training gate, and registered."""
    from training.train import run_training

    run.model = run_training(run.settings, run.use_case, _store(run), run.options.train,
                             say=run.options.progress.say)


def promote(run: FlowRun) -> None:
    """The model just trained promoted if the model gate passes; the verdict either way."""
    from training.promote import promote_if_better

    run.promotion = promote_if_better(run.settings, run.use_case, _store(run), run.model["version"],
                                      say=run.options.progress.say)


#: The nightly flow: its stages, in the order they run.
NIGHTLY: tuple[tuple[str, Callable[[FlowRun], None]], ...] = (
    ("ingest", ingest), ("features", features), ("apply", apply), ("materialize", materialize),
    ("train", train), ("promote", promote),
)
STAGES: tuple[str, ...] = tuple(name for name, _ in NIGHTLY)


def _snapshot(run: FlowRun) -> Snapshot:
    """The snapshot this run ingested, else the newest one (a run that starts after ingest)."""
    if run.snapshot is None:
        from pipeline.ingest import latest_snapshot

        run.snapshot = latest_snapshot(run.settings)
    return run.snapshot


def _store(run: FlowRun):
    """The run's FeatureStore: the caller's, else the one apply left, else a new one."""
    if run.store is None:
        from feast_plugins.store import feature_store

        run.store = feature_store(run.settings)
    return run.store


def _default_train() -> TrainConfig:
    from training.train import TrainConfig

    return TrainConfig()


@dataclass(frozen=True)
class FlowOptions:
    """Everything the flow's callers vary; the defaults are ``pipeline run``'s."""

    #: The stages to run, in the flow's order (some of :data:`STAGES`). Without ``apply``
    #: the registry stays as it is (the replay applies on its first night only); without
    #: ``materialize`` so does the online store (the tests' slice fixture).
    stages: tuple[str, ...] = STAGES
    #: Ingest checks whose failures are reported without refusing the data (``--accept``).
    accept: tuple[str, ...] = ()
    #: The instant the delivery declares itself complete up to (a replayed night); see
    #: :func:`pipeline.ingest.ingest`.
    declared_as_of: datetime | None = None
    #: Every accepted snapshot becomes the ingest gate's distribution reference (the replay).
    follow_reference: bool = False
    #: The source tables' contracts, when the caller derived them once for many runs
    #: (None: derived from the Feast definitions in this run).
    contracts: Mapping[str, TableContract] | None = None
    #: Materialize up to this instant (None: the snapshot's as-of).
    materialize_end: datetime | None = None
    #: The training run's hyperparameters and time split (default: ``TrainConfig()``).
    train: TrainConfig = field(default_factory=_default_train)
    #: Where the run reports (``pipeline run``: a :class:`core.progress.Progress`).
    progress: Sink = field(default_factory=Silent)

    def __post_init__(self):
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ConfigError(f"flow stages {list(self.stages)}: each must be one of {', '.join(STAGES)}")
        if list(self.stages) != sorted(set(self.stages), key=STAGES.index):
            raise ConfigError(f"flow stages {list(self.stages)}: each at most once, in the flow's order "
                              f"({' -> '.join(STAGES)})")
        if "promote" in self.stages and "train" not in self.stages:
            raise ConfigError(f"flow stages {list(self.stages)}: promote judges the model this run trains; "
                              "add 'train'")


@dataclass
class FlowRun:
    """One run of the nightly flow: its inputs, then what each stage left (the result)."""

    settings: Settings
    use_case: UseCase
    options: FlowOptions = field(default_factory=FlowOptions)
    #: The FeatureStore train and promote use: the caller's, else the one apply leaves,
    #: else one made when first needed.
    store: object = None
    snapshot: Snapshot | None = None
    #: Rows per source table (features).
    sources: dict[str, int] | None = None
    #: :func:`training.train.run_training`'s result (train).
    model: dict | None = None
    #: :func:`training.promote.promote_if_better`'s verdict (promote).
    promotion: dict | None = None
    #: Wall seconds per stage run, the one that raised included.
    seconds: dict[str, float] = field(default_factory=dict)
    #: The stage running; after an exception, the one that raised it (None once all ran).
    running: str | None = None

    def run(self) -> FlowRun:
        """Run the options' stages in the flow's order; return this record. A stage's
        exception (a refusing gate, a training error) propagates unchanged."""
        for name, stage in NIGHTLY:
            if name not in self.options.stages:
                continue
            self.running = name
            started = time.perf_counter()
            try:
                with self.options.progress.stage(name):
                    stage(self)
            finally:
                self.seconds[name] = time.perf_counter() - started
        self.running = None
        return self
