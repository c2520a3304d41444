"""The apply stage: ``feast apply`` of ``feature_repo/`` (the registry and the online
store's tables), and the source-table contracts its feature views declare.

Before anything is applied, the definitions are checked (:mod:`pipeline.definitions`): a
FeatureService must name defined views, one version of each; a change to a view the
champion model is pinned to is refused unless allowed. After a successful apply, the
fingerprints of what was applied are recorded for training and serving.
"""

from __future__ import annotations

from core.settings import Settings
from feast_plugins.store import apply_definitions, definitions


def apply(settings: Settings, use_case=None, say=None) -> dict:
    """``feast apply``: register (and delete) objects so the registry matches feature_repo/,
    its Parquet sources reading this run's source tables (``settings.sources``). Refused
    first (nothing applied) if a FeatureService is inconsistent or a change would alter what
    the champion sees (:func:`pipeline.definitions.check_champion`). ``use_case``: whose
    SQL pipelines build the sources (default: the configured one). Returns the fingerprints
    recorded, by view."""
    from core.usecase import load_use_case
    from pipeline import definitions as pinned

    use_case = use_case or load_use_case()
    contents = definitions(settings)
    pinned.check_services(contents)
    views = pinned.current(settings, use_case, contents)
    pinned.check_champion(settings, views, "apply", say=say)
    apply_definitions(settings)
    pinned.write_applied(settings, views)
    return views


def source_contracts(settings: Settings, use_case) -> dict:
    """The source tables' contracts: types from the feature views in feature_repo/ (what
    ``apply`` will register), value rules from the use case."""
    from validation.events_contracts import events_contracts
    from validation.feast_contracts import source_contracts as derive

    contents = definitions(settings)
    out = derive(contents.feature_views, contents.entities, use_case.source_rules)
    out.update(events_contracts(contents.stream_feature_views, contents.entities))  # the windowed views' events
    return out
