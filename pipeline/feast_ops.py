"""Feast, used the way its CLI does: apply the repository, materialize the online store.

``import feast`` costs seconds of CPU, so it happens inside these functions, never at
module import (``--help`` stays instant).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from pipeline.config import Settings

#: The aircraft view's rows are valid from the epoch; a first materialization starts there.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
def _cwd(path) -> Iterator[None]:
    # Feast derives module names from the working directory (apply also chdirs into the
    # repository itself): work from ``path``, then restore the caller's directory.
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _fresh_definitions(settings: Settings) -> Path:
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


def apply(settings: Settings) -> None:
    """``feast apply``: register (and delete) objects so the registry matches feature_repo/."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = _fresh_definitions(settings)
    config = load_repo_config(repo, settings.feature_store_yaml)
    with _cwd(repo):
        apply_total(config, repo, skip_source_validation=False)


def source_contracts(settings: Settings, use_case) -> dict:
    """The source tables' contracts: types from the feature views in feature_repo/ (what
    ``apply`` will register), value rules from the use case."""
    from feast.repo_operations import parse_repo

    from validation.feast_contracts import source_contracts as derive

    repo = _fresh_definitions(settings)
    with _cwd(repo):
        contents = parse_repo(repo)
    return derive(contents.feature_views, contents.entities, use_case.source_rules)


def check_sources(settings: Settings, use_case, store, end: datetime) -> Path:
    """The materialization gate: every file a registered feature view reads must match
    that view's declared schema and the use case's value rules, with no row after the
    newest snapshot's as-of instant. Raises :class:`~validation.report.GateFailed` before
    anything is loaded. (Rows after ``end`` are fine: Feast loads up to ``end`` only.)"""
    from pipeline.errors import PipelineError
    from pipeline.ingest import latest_snapshot
    from validation.contracts import Context
    from validation.feast_contracts import source_contracts as derive
    from validation.feast_contracts import source_table_name
    from validation.gates import check_files, finish
    from validation.report import Report

    views = [v for v in store.list_feature_views() if getattr(v.batch_source, "path", None)]
    paths = {source_table_name(v): Path(v.batch_source.path) for v in views}
    contracts = {name: c for name, c in derive(views, store.list_entities(), use_case.source_rules).items()
                 if name in paths}
    report = Report("materialize", f"online store up to {end.isoformat()}")
    try:
        as_of = latest_snapshot(settings).as_of
    except PipelineError:
        as_of = None
    check_files(report, paths, contracts, Context(now=datetime.now(timezone.utc), as_of=as_of))
    return finish(report, settings.reports)


def _clear_online(store, views) -> None:
    """Drop ``views``' online data and recreate their empty tables (any online store)."""
    online = store._get_provider().online_store
    online.update(config=store.config, tables_to_delete=views, tables_to_keep=[],
                  entities_to_delete=[], entities_to_keep=[], partial=True)
    online.update(config=store.config, tables_to_delete=[], tables_to_keep=views,
                  entities_to_delete=[], entities_to_keep=[], partial=True)


def materialize(settings: Settings, end: datetime, start: datetime | None = None, use_case=None,
                check: bool = True) -> None:
    """Load feature values into the online store up to ``end``, after the source tables
    passed their contracts (:func:`check_sources`; nothing is loaded otherwise).
    ``check=False`` only right after :func:`pipeline.features.build_sources` checked
    the very same files against the same contracts (as ``pipeline run`` does).

    With ``start`` it is ``feast materialize start end``; without, it continues from the
    last materialization of each view (``materialize-incremental``). It starts from the
    epoch instead when a view was never materialized, or was materialized past ``end`` (a
    snapshot with an earlier as-of time); in that case those views are emptied online
    first, so no value from after ``end`` stays there.
    """
    if use_case is None:
        from pipeline.usecase import load_use_case

        use_case = load_use_case()
    store = feature_store(settings)
    views = store.list_feature_views()
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    if check:
        check_sources(settings, use_case, store, end)

    def last_end(view):
        last = view.most_recent_end_time
        return None if last is None else (last if last.tzinfo else last.replace(tzinfo=timezone.utc))

    ahead = [v for v in views if last_end(v) is not None and last_end(v) > end]
    if ahead:
        # Rolling back: a reload alone would leave newer values online (Redis skips writes
        # older than what it holds; any store keeps keys that have no row up to ``end``).
        # Empty those views in the online store first, then load them from the epoch.
        _clear_online(store, ahead)
        start = EPOCH
    if start is None and any(last_end(v) is None for v in views):
        start = EPOCH
    if start is not None:
        store.materialize(start_date=start, end_date=end)
    else:
        store.materialize_incremental(end_date=end)
