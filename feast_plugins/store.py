"""Opening Feast's feature store for a run, and the Feast calls the stages make that reach
past its public API (listed in ``feast_plugins/compat.py``).

``import feast`` costs seconds of CPU, so it happens inside these functions, never at
module import (``--help`` stays instant).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.settings import Settings


def feature_store(settings: Settings):
    """A FeatureStore over ``feature_repo/`` with this run's DATA_DIR and profile."""
    settings.export()
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=settings.feature_store_yaml)


def stock_feature_store(settings: Settings):
    """The same FeatureStore with Feast's stock DuckDB offline store instead of the ASOF one
    named in ``feature_store.yaml``: the reference that tests and benchmarks compare with."""
    settings.export()
    from feast import FeatureStore
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
    from feast.repo_config import load_repo_config

    repo = settings.feature_repo
    config = load_repo_config(repo, repo / "feature_store.yaml")
    config._offline_store = DuckDBOfflineStoreConfig()
    return FeatureStore(repo_path=str(repo), config=config)


@contextmanager
def repo_cwd(path) -> Iterator[None]:
    # Feast derives module names from the working directory (apply also chdirs into the
    # repository itself): work from ``path``, then restore the caller's directory.
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def fresh_definitions(settings: Settings) -> Path:
    """Prepare to import feature_repo/ as the Feast CLI does; return the repo path.

    The definitions read DATA_DIR when imported (source paths are recorded in the
    registry); drop cached imports so they are evaluated against this run's DATA_DIR.
    """
    settings.export()
    repo = settings.feature_repo
    for name in [m for m in sys.modules if m == "repo" or m.startswith("feature_repo.definitions")]:
        del sys.modules[name]
    if str(repo) not in sys.path:  # as the Feast CLI does: repo.py is imported as `repo`
        sys.path.append(str(repo))
    return repo


def clear_online(store, views) -> None:
    """Drop ``views``' online data and recreate their empty tables (any online store)."""
    online = store._get_provider().online_store
    online.update(config=store.config, tables_to_delete=views, tables_to_keep=[],
                  entities_to_delete=[], entities_to_keep=[], partial=True)
    online.update(config=store.config, tables_to_delete=[], tables_to_keep=views,
                  entities_to_delete=[], entities_to_keep=[], partial=True)


