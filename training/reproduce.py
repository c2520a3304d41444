"""``training reproduce VERSION``: rebuild a registered model from what its metadata records
and check that the same model bytes come out.

The model's metadata records the snapshot its source tables were built from, its
hyperparameters and time split (``params``: training window, holdout start) and the
fingerprints of its features' definitions. Reproducing builds, in a scratch directory
(nothing of ``DATA_DIR`` is written but the scratch directory itself, removed at the
end), the source tables from that snapshot with the SQL of ``feature_repo/``, applies the
definitions to a scratch Feast registry, builds the training set through the model's
FeatureService and trains with the recorded parameters. Training is seeded and
single-process deterministic, so the same inputs give the same bytes.

Only today's ``feature_repo/`` can be rebuilt: when its definitions differ from the
model's fingerprints, the result says which views changed and how (the likely reason
for different bytes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from core.settings import Settings
from core.usecase import UseCase
from training.errors import TrainingError
from training.registry import ModelRegistry


def reproduce(settings: Settings, use_case: UseCase, version: str, say=print, keep: Path | None = None) -> dict:
    """Rebuild model ``version`` (see the module doc); return ``{"version", "same_bytes",
    "sha256", "reproduced_sha256", "snapshot", "definitions_changed"}``. ``keep``: build
    in this directory and leave it (for inspection) instead of a removed temporary one."""
    from feast_plugins.store import feature_store
    from pipeline.apply import apply
    from pipeline.definitions import current, drift
    from pipeline.features import build_sources
    from pipeline.ingest import Snapshot
    from training.train import TrainConfig, _train_and_register

    registry = ModelRegistry(settings.models)
    metadata = registry.metadata(version)
    use_case = use_case.with_feature_service(metadata.get("feature_service"))
    recorded = metadata.get("snapshot") or {}
    if not recorded.get("snapshot"):
        raise TrainingError(f"model {version} does not record the snapshot it was built from (trained before "
                            "snapshots were recorded): it cannot be reproduced")
    snapshot_dir = settings.raw_snapshots / recorded["snapshot"]
    if not snapshot_dir.is_dir():
        raise TrainingError(f"model {version} was built from snapshot {recorded['snapshot']}, which is no longer "
                            f"under {settings.raw_snapshots}: it cannot be reproduced")
    snapshot = Snapshot.load(snapshot_dir)
    pinned = metadata.get("definitions") or {}
    changed = [d.describe() for d in drift(pinned, current(settings, use_case))] if pinned else []
    for line in changed:
        say(f"definitions changed since model {version} was trained: {line}")
    params = {k: v for k, v in (metadata.get("params") or {}).items()
              if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    scratch = keep or Path(tempfile.mkdtemp(prefix=f"reproduce-{version}-"))
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        # A DATA_DIR of its own: its sources, registry, online store and models; the
        # snapshot is read where it is. Nothing is pinned there, nothing refused.
        work = dataclasses.replace(settings, data_dir=scratch, allow_definition_change=())
        quiet = _Quiet(say)
        say(f"rebuilding the source tables from snapshot {snapshot.id} (as of {snapshot.as_of.isoformat()})")
        build_sources(work, use_case, snapshot, None)
        with contextlib.redirect_stdout(sys.stderr):  # Feast's apply prints; stdout is the result's
            apply(work, use_case, say=quiet)
        result = _train_and_register(work, use_case, feature_store(work), TrainConfig(**params), quiet)
        reproduced = ModelRegistry(work.models).load(result["version"])
    finally:
        settings.export()  # the scratch run exported its DATA_DIR for Feast: put the real one back
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    sha = metadata["sha256"]
    again = hashlib.sha256(reproduced.model_bytes).hexdigest()
    same = again == sha
    say(f"model {version}: " + ("reproduced, same bytes" if same else
                                f"NOT reproduced: the rebuilt model is {again[:16]}, not {sha[:16]}"))
    return {"version": version, "same_bytes": same, "sha256": sha, "reproduced_sha256": again,
            "snapshot": snapshot.id, "definitions_changed": changed}


class _Quiet:
    """What the scratch run says, passed on (Feast's own prints go to stdout regardless)."""

    def __init__(self, say):
        self._say = say

    def __call__(self, message: str) -> None:
        self._say(f"  {message}")
