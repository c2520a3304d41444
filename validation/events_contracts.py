"""Contracts of the events tables the windowed views read, derived from their declarations.

A windowed view (a Feast ``StreamFeatureView`` with aggregations, ``feature_repo/
definitions/windows.py``; semantics in ``feast_plugins/windows.py``) reads an events table:
its entity join keys, ``event_timestamp`` (when the event happened), ``known_at`` (when it
became known) and the columns its aggregations read. Like the batch views' source tables
(``validation.feast_contracts``), each events table gets a :class:`TableContract` from the
views over it, so the features gate (``validation.gates.check_files``) refuses a bad one
naming the table and the column, before anything is published:

* ``event_timestamp`` and ``known_at``: timestamps with a time zone, never null, and
  ``known_at`` not after the snapshot's as-of (an event known in the future is a leak);
* the join keys: strings; null is allowed (an event belongs to no key of the views keyed
  by that column: a flight without a tail number still departs from its origin);
* each aggregated column: ``float64`` (the pipelines cast to DOUBLE); a column only
  ``count``-ed may have any type.

No key: duplicate events are separate events (the contract counts both). Not read
through ``feast_plugins`` (a higher layer): the declaration's attributes are read here
directly, as ``validation.feast_contracts`` reads the batch views'.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from core.contracts import ColumnRule, TableContract
from core.errors import DefinitionError
from validation.feast_contracts import FEAST_TO_DTYPE, source_table_name

#: Columns of every events table: when the event became known, when it happened.
KNOWN_AT = "known_at"
EVENT_TIMESTAMP = "event_timestamp"
_VALUE_TYPE_TO_DTYPE = {"STRING": "string", "INT64": "int64", "INT32": "int32"}


def is_windowed(view) -> bool:
    """A view with windowed aggregations (a stream feature view declaring any)."""
    return bool(getattr(view, "aggregations", None))


def _keys(view, entities: Mapping[str, object]) -> dict[str, ColumnRule]:
    if view.entity_columns:
        return {f.name: ColumnRule(dtype=FEAST_TO_DTYPE.get(str(f.dtype))) for f in view.entity_columns}
    out = {}
    for name in view.entities:
        entity = entities[name]
        out[entity.join_key] = ColumnRule(dtype=_VALUE_TYPE_TO_DTYPE.get(entity.value_type.name))
    return out


def events_contract(view, entities: Mapping[str, object]) -> TableContract:
    """The columns one windowed view needs from its events table (see the module doc)."""
    table = source_table_name(view)
    if table is None:
        raise DefinitionError(f"windowed view {view.name!r}: its batch source is not a file table")
    columns = _keys(view, entities)
    for column in (EVENT_TIMESTAMP, KNOWN_AT):
        columns[column] = ColumnRule(dtype="timestamp", nullable=False,
                                     not_after="as_of" if column == KNOWN_AT else None)
    for aggregation in view.aggregations:
        if aggregation.function.strip().lower() != "count":
            columns[aggregation.column] = ColumnRule(dtype="float64")
        else:
            columns.setdefault(aggregation.column, ColumnRule())
    return TableContract(table, columns, key=(), min_rows=0, volume=False)


def events_contracts(views: Iterable, entities: Iterable) -> dict[str, TableContract]:
    """One contract per events table read by the windowed ones among ``views`` (several
    views over one table: their columns together)."""
    by_name = {e.name: e for e in entities}
    out: dict[str, TableContract] = {}
    for view in views:
        if not is_windowed(view):
            continue
        contract = events_contract(view, by_name)
        out[contract.name] = out[contract.name].merged(contract) if contract.name in out else contract
    return out
