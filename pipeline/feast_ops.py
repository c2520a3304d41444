"""Feast, used the way its CLI does: apply the repository, materialize the online store.

``import feast`` costs seconds of CPU, so it happens inside these functions, never at
module import (``--help`` stays instant).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from pipeline.config import Settings

#: The aircraft view's rows are valid from the epoch; a first materialization starts there.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def feature_store(settings: Settings):
    """A FeatureStore over ``feature_repo/`` with this run's DATA_DIR and online store profile."""
    settings.export()
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=settings.feature_store_yaml)


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
    config = load_repo_config(repo, settings.feature_store_yaml)
    # The definitions read DATA_DIR when imported (source paths are recorded in the
    # registry); drop cached imports so they are evaluated against this run's DATA_DIR.
    for name in [m for m in sys.modules if m == "repo" or m.startswith("feature_repo.definitions")]:
        del sys.modules[name]
    if str(repo) not in sys.path:  # as the Feast CLI does: repo.py is imported as `repo`
        sys.path.append(str(repo))
    with _cwd(repo):
        apply_total(config, repo, skip_source_validation=False)


def materialize(settings: Settings, end: datetime, start: datetime | None = None) -> None:
    """Load feature values into the online store up to ``end``.

    With ``start`` it is ``feast materialize start end``; without, it continues from the
    last materialization of each view (``materialize-incremental``). It starts from the
    epoch instead when a view was never materialized, or was materialized past ``end``
    (a snapshot with an earlier as-of time): incremental would then load nothing and
    leave values from after ``end`` online.
    """
    store = feature_store(settings)
    views = store.list_feature_views()
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)

    def needs_full(view) -> bool:
        last = view.most_recent_end_time
        return last is None or (last if last.tzinfo else last.replace(tzinfo=timezone.utc)) > end

    if start is None and any(needs_full(v) for v in views):
        start = EPOCH
    if start is not None:
        store.materialize(start_date=start, end_date=end)
    else:
        store.materialize_incremental(end_date=end)
