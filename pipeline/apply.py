"""The apply stage: ``feast apply`` of ``feature_repo/`` (the registry and the online
store's tables), and the source-table contracts its feature views declare.
"""

from __future__ import annotations

from core.settings import Settings
from feast_plugins.store import apply_definitions, definitions


def apply(settings: Settings) -> None:
    """``feast apply``: register (and delete) objects so the registry matches feature_repo/,
    its Parquet sources reading this run's source tables (``settings.sources``)."""
    apply_definitions(settings)


def source_contracts(settings: Settings, use_case) -> dict:
    """The source tables' contracts: types from the feature views in feature_repo/ (what
    ``apply`` will register), value rules from the use case."""
    from validation.feast_contracts import source_contracts as derive

    contents = definitions(settings)
    return derive(contents.feature_views, contents.entities, use_case.source_rules)
