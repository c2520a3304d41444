"""The training gate, in two halves around the training-set build: the events table's
contract before any feature is fetched, and the training set itself before anything is
trained. Either half refuses with :class:`~validation.report.GateFailed`; nothing is
trained or registered then.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from core.settings import Settings
from core.usecase import UseCase
from validation.contracts import Context, read_table
from validation.gates import finish, run_contracts, training_frame_failures
from validation.report import Report


def check_events(settings: Settings, use_case: UseCase, report: Report) -> None:
    """The training gate's first half, before any feature is fetched: the events table's
    contract. Raises :class:`~validation.report.GateFailed`."""
    from pipeline.errors import PipelineError
    from pipeline.ingest import latest_snapshot

    contract = use_case.source_rules.get(use_case.events_table)
    path = settings.sources / f"{use_case.events_table}.parquet"
    if contract is not None and path.is_file():  # a missing file: load_events says so
        try:  # the same context the features gate used: no event after the snapshot's as-of
            as_of = latest_snapshot(settings).as_of
        except PipelineError:
            as_of = None
        run_contracts(report, {contract.name: read_table(path)}, {contract.name: contract},
                      Context(now=datetime.now(timezone.utc), as_of=as_of))
    if not report.passed:
        finish(report, settings.reports)


def check_training_set(settings: Settings, use_case: UseCase, report: Report, frame: pd.DataFrame,
                       features: list[str], cut: pd.Timestamp) -> None:
    """The training gate's second half: a training set fit to learn from (both windows
    populated with both labels, every feature numeric and not all missing). Raises
    :class:`~validation.report.GateFailed`; nothing is trained or registered."""
    report.subject += f", holdout from {cut:%Y-%m-%d}"
    report.ran("training_set")
    report.extend(training_frame_failures(frame, features, use_case.label, use_case.event_timestamp, cut))
    finish(report, settings.reports)
