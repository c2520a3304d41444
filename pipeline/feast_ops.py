"""Feast, used the way its CLI does: apply the repository, materialize the online store.

``import feast`` costs seconds of CPU, so it happens inside these functions, never at
module import (``--help`` stays instant).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from pipeline.config import Settings

#: The aircraft view's rows are valid from the epoch; a first materialization starts there.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def feature_store(settings: Settings):
    """A FeatureStore over ``feature_repo/`` with this run's DATA_DIR."""
    settings.export()
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo))


@contextmanager
def _cwd(path) -> Iterator[None]:
    # Feast's apply derives module names from the working directory and chdirs into the
    # repository; restore the caller's directory afterwards.
    before = os.getcwd()
    try:
        yield
    finally:
        os.chdir(before)


def apply(settings: Settings) -> None:
    """``feast apply``: register (and delete) objects so the registry matches feature_repo/."""
    settings.export()
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = settings.feature_repo
    config = load_repo_config(repo, repo / "feature_store.yaml")
    with _cwd(repo):
        apply_total(config, repo, skip_source_validation=False)


def materialize(settings: Settings, end: datetime, start: datetime | None = None) -> None:
    """Load feature values into the online store up to ``end``.

    With ``start`` it is ``feast materialize start end``; without, it continues from the
    last materialization of each view (``materialize-incremental``), or from the epoch on
    a fresh store.
    """
    store = feature_store(settings)
    views = store.list_feature_views()
    if start is None and any(v.most_recent_end_time is None for v in views):
        start = EPOCH
    if start is not None:
        store.materialize(start_date=start, end_date=end)
    else:
        store.materialize_incremental(end_date=end)
