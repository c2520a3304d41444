"""The materialize stage: load the online store up to an instant, behind the
materialization gate (every file a registered feature view reads matches its contract).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from core.settings import Settings
from feast_plugins.store import clear_online, feature_store

#: The aircraft view's rows are valid from the epoch; a first materialization starts there.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
        from core.usecase import load_use_case

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
        clear_online(store, ahead)
        start = EPOCH
    if start is None and any(last_end(v) is None for v in views):
        start = EPOCH
    if start is not None:
        store.materialize(start_date=start, end_date=end)
    else:
        store.materialize_incremental(end_date=end)
