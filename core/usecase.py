"""The contract between the platform and one use case.

The platform code (ingest, feature pipelines, training, serving) speaks of entities and
events only: everything specific to a use case is an instance of :class:`UseCase`,
defined next to its Feast definitions in ``feature_repo/usecase.py``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Callable, Mapping

import pandas as pd

from core.contracts import ModelExpectations, TableContract


@dataclass(frozen=True)
class RawTable:
    """One raw input table.

    ``columns`` maps each required column to the DuckDB type family it must have
    (``VARCHAR``, ``BIGINT``, ``DOUBLE``, ``TIMESTAMP``). ``normalize_sql`` is a DuckDB
    SELECT over the relation ``raw`` that yields the snapshot rows (timestamps made
    timezone-aware UTC, derived time columns added).
    """

    name: str
    columns: Mapping[str, str]
    normalize_sql: str = "SELECT * FROM raw"


@dataclass(frozen=True)
class SourceTable:
    """A table built by DuckDB SQL from raw snapshots (and earlier source tables).

    ``sql_file`` lives in ``feature_repo/pipelines/``; ``params`` fill its ``{name}``
    placeholders, so one SQL template can build several tables.
    """

    name: str
    sql_file: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestField:
    """A field of a prediction request: ``kind`` is ``string``, ``int`` or ``timestamp``."""

    name: str
    kind: str
    nullable: bool = False
    description: str = ""


@dataclass(frozen=True)
class UseCase:
    name: str
    raw_tables: tuple[RawTable, ...]
    load_builtin: Callable[[], dict[str, pd.DataFrame]]
    #: DuckDB SQL over the ``raw_<table>`` views returning one TIMESTAMPTZ: the instant
    #: the snapshot describes. Nothing after it is turned into a feature.
    as_of_sql: str
    sources: tuple[SourceTable, ...]
    #: Source table holding one row per labelled event (the training entity rows).
    events_table: str
    label: str
    feature_service: str
    #: Columns of the events table that Feast needs: join keys and request-time inputs.
    entity_columns: tuple[str, ...]
    request_fields: tuple[RequestField, ...]
    #: The request field whose instant is the entity timestamp ("as of") of a request.
    request_time_field: str
    slices: tuple[str, ...]
    baseline_key: str
    #: Renders the example request ``make demo`` sends, from the events table.
    example_request: Callable[[pd.DataFrame], dict]
    event_timestamp: str = "event_timestamp"
    #: Feast PushSources whose rows ``pipeline.push.push_window`` pushes online as time
    #: passes (fresher than the nightly materialization). Each one's ``batch_source`` is a
    #: source table holding only what was known at each row's event time.
    push_sources: tuple[str, ...] = ()
    id_column: str | None = None
    #: The key of the list of entities in a /predict body: ``{batch_key: [entity, ...]}``.
    batch_key: str = "instances"
    #: Data contracts (validation): value rules per raw table, and per source table on top
    #: of the types the Feast feature views declare.
    raw_contracts: Mapping[str, TableContract] = field(default_factory=dict)
    source_rules: Mapping[str, TableContract] = field(default_factory=dict)
    #: What the model gate expects of any model's behaviour.
    model_expectations: ModelExpectations = field(default_factory=ModelExpectations)
    #: Replay (``replay/``): per raw table, the UTC timestamp column at which its rows
    #: arrive (ISO text or timestamp); tables not named are reference tables that arrive
    #: whole. ``timezone`` draws the day boundaries of a live day; ``feature_lookback`` is
    #: how much history the features read back (aggregate windows + TTL), kept in a replay's
    #: sliding snapshot so every feature is computed as it would be on the whole history.
    arrival_columns: Mapping[str, str] = field(default_factory=dict)
    timezone: str = "UTC"
    feature_lookback: timedelta = timedelta(0)
    #: Ingest's plausibility of the as-of instant (checks ``as_of_lead`` and ``as_of_step``,
    #: ``validation/drift.py``). The as-of is where the time-stamped tables end together, so
    #: one table may end a little later than it (a feed that closes later), never far:
    #: a timestamp more than ``as_of_max_lead`` past the as-of is a shifted or mislabelled
    #: export (weather dated a year ahead moves the as-of to the other tables' end and would
    #: pass every other check). ``as_of_max_step`` bounds how far one delivery may move the
    #: as-of past the previous snapshot's (None: no bound): deliveries extend a history a
    #: little at a time, and a jump of months is every table shifted, not news. Both are
    #: failures ``--accept`` can tolerate for one run, like the other ingest checks.
    as_of_max_lead: timedelta = timedelta(days=7)
    as_of_max_step: timedelta | None = timedelta(days=92)

    def with_feature_service(self, name: str | None) -> "UseCase":
        """This use case with another FeatureService (one of its Feast definitions) for
        training, the model gate and monitoring; ``None`` keeps the default."""
        return replace(self, feature_service=name) if name else self


def load_use_case(spec: str = "feature_repo.usecase:USE_CASE") -> UseCase:
    """Import the use case named ``module:attribute``."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)
