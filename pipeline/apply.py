"""The apply stage: ``feast apply`` of ``feature_repo/`` (the registry and the online
store's tables), and the source-table contracts its feature views declare.
"""

from __future__ import annotations

from core.settings import Settings
from feast_plugins.store import fresh_definitions, repo_cwd


def apply(settings: Settings) -> None:
    """``feast apply``: register (and delete) objects so the registry matches feature_repo/."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = fresh_definitions(settings)
    config = load_repo_config(repo, settings.feature_store_yaml)
    with repo_cwd(repo):
        apply_total(config, repo, skip_source_validation=False)


def source_contracts(settings: Settings, use_case) -> dict:
    """The source tables' contracts: types from the feature views in feature_repo/ (what
    ``apply`` will register), value rules from the use case."""
    from feast.repo_operations import parse_repo

    from validation.feast_contracts import source_contracts as derive

    repo = fresh_definitions(settings)
    with repo_cwd(repo):
        contents = parse_repo(repo)
    return derive(contents.feature_views, contents.entities, use_case.source_rules)


