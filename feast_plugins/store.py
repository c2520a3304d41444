"""Opening Feast's feature store for a run, applying ``feature_repo/`` to it, and the Feast
calls the platform makes that reach past its public API (listed in ``compat.py``).

``import feast`` costs seconds of CPU, so it happens inside these functions, never at
module import (``--help`` stays instant).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
from contextlib import contextmanager
from typing import Iterator

from core.errors import DefinitionError
from core.settings import Settings
from feast_plugins.sources import bind_sources


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


def definitions(settings: Settings):
    """``feature_repo/``'s Feast objects (Feast's ``RepoContents``), found as the Feast CLI
    finds them, with every Parquet source reading this run's source tables under this
    run's profile (``sources.bind_sources``).

    The definitions are imported once per process (the first call's environment is in
    the module-level objects, which nothing here changes); each call binds them anew."""
    from feast.repo_operations import parse_repo

    settings.export()
    repo = settings.feature_repo
    if repo != settings.repo_root / "feature_repo":  # a copy (FEATURE_REPO): imported afresh
        with _imported_from(repo), repo_cwd(repo):
            contents = parse_repo(repo)
        return bind_sources(contents, settings.sources, settings.profile)
    if str(repo) not in sys.path:  # as the Feast CLI does: repo.py is imported as `repo`
        sys.path.append(str(repo))
    with repo_cwd(repo):
        contents = parse_repo(repo)
    return bind_sources(contents, settings.sources, settings.profile)


@contextmanager
def _imported_from(repo) -> Iterator[None]:
    """Import ``repo.py`` and the ``feature_repo`` package from the copy ``repo`` (a
    directory named feature_repo), then put the process's own modules back: the copy's
    objects live on in what was parsed, the rest of the process keeps the shipped ones."""
    import importlib

    def ours(name: str) -> bool:
        return name in ("repo", "feature_repo") or name.startswith("feature_repo.")

    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    saved_path = list(sys.path)
    for name in saved:
        del sys.modules[name]
    sys.path[:0] = [str(repo), str(repo.parent)]
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path[:] = saved_path


def apply_definitions(settings: Settings) -> None:
    """``feast apply`` of :func:`definitions`: register (and delete) objects so the registry
    matches ``feature_repo/`` for this run, and create the online store's tables."""
    from feast import FeatureStore
    from feast.project import Project
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total_with_repo_instance

    contents = definitions(settings)
    repo = settings.feature_repo
    config = load_repo_config(repo, settings.feature_store_yaml)
    if not contents.projects:  # as the Feast CLI: the project named in the YAML
        contents.projects.append(Project(name=config.project, description=config.project_description or ""))
    names = [project.name for project in contents.projects]
    if names != [config.project]:
        raise DefinitionError(f"feature_repo/ defines the Feast project(s) {names}, "
                              f"{settings.feature_store_yaml.name} names {config.project!r}: they must be that one")
    with repo_cwd(repo):
        store = FeatureStore(config=config)
        print(f"Applying changes for project {config.project}")
        apply_total_with_repo_instance(store, config.project, store.registry, contents, skip_source_validation=False)


def clear_online(store, views) -> None:
    """Drop ``views``' online data and recreate their empty tables (any online store)."""
    online = store._get_provider().online_store
    online.update(config=store.config, tables_to_delete=views, tables_to_keep=[],
                  entities_to_delete=[], entities_to_keep=[], partial=True)
    online.update(config=store.config, tables_to_delete=[], tables_to_keep=views,
                  entities_to_delete=[], entities_to_keep=[], partial=True)


def reset_online_connection(store) -> None:
    """Make Feast open a new online-store connection on the next read.

    Feast's SQLite online store caches ``_conn`` forever; a connection that failed (file
    missing, replaced, unreadable) would fail every later request too.
    """
    online_store = store._get_provider().online_store
    conn = getattr(online_store, "_conn", None)
    if conn is not None:
        online_store._conn = None
        try:
            conn.close()
        except sqlite3.Error:
            pass


@functools.cache
def registry_errors() -> tuple[type[BaseException], ...]:
    """What reading a missing or broken Feast registry raises (imported on first need:
    importing Feast takes seconds)."""
    from feast.errors import FeatureServiceNotFoundException, FeatureViewNotFoundException
    from google.protobuf.message import DecodeError

    return (FeatureViewNotFoundException, FeatureServiceNotFoundException, DecodeError)
