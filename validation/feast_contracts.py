"""Source-table contracts derived from the Feast feature views, so they cannot drift.

Each batch feature view over a file source says which columns its Parquet table must
have and with which types: the entities' join keys, the timestamp field, every declared
feature. The use case adds value rules (ranges, nulls) by table and column name on top;
it may not restate a type Feast declares.

Feast 0.67 does not check this itself: with ``enable_validation`` it raises on a missing
column but only warns on a type mismatch, and an Int64 feature over a double column is
served truncated online while the offline join keeps the fraction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from core.contracts import ColumnRule, TableContract
from core.errors import DefinitionError

#: Feast primitive types -> the Arrow storage type a source column must have.
FEAST_TO_DTYPE = {
    "Float64": "float64", "Float32": "float32", "Int64": "int64", "Int32": "int32",
    "String": "string", "Bool": "bool", "UnixTimestamp": "timestamp",
}
_VALUE_TYPE_TO_DTYPE = {"STRING": "string", "INT64": "int64", "INT32": "int32"}


def source_table_name(view) -> str | None:
    """The source table a view reads (its file's stem), or None if it is not file-backed."""
    path = getattr(view.batch_source, "path", None)
    return Path(path).stem if path else None


def _entity_columns(view, entities: Mapping[str, object]) -> dict[str, ColumnRule]:
    if view.entity_columns:  # filled in once the view has been applied
        return {f.name: ColumnRule(dtype=FEAST_TO_DTYPE.get(str(f.dtype)), nullable=False)
                for f in view.entity_columns}
    out = {}
    for name in view.entities:
        entity = entities[name]
        out[entity.join_key] = ColumnRule(dtype=_VALUE_TYPE_TO_DTYPE.get(entity.value_type.name), nullable=False)
    return out


def view_contract(view, entities: Mapping[str, object]) -> TableContract:
    """The columns and key one feature view needs from its source table."""
    columns = _entity_columns(view, entities)
    keys = tuple(columns)
    ts = view.batch_source.timestamp_field
    columns[ts] = ColumnRule(dtype="timestamp", nullable=False, not_after="as_of")
    for feature in view.features:
        dtype = FEAST_TO_DTYPE.get(str(feature.dtype))
        if dtype is None:
            raise DefinitionError(f"feature view {view.name!r}: no contract type for Feast type {feature.dtype}")
        columns[feature.name] = ColumnRule(dtype=dtype)
    return TableContract(source_table_name(view), columns, key=(*keys, ts), volume=False)


def source_contracts(views: Iterable, entities: Iterable,
                     rules: Mapping[str, TableContract]) -> dict[str, TableContract]:
    """Contracts for every source table: derived from the views, refined by the use case's
    ``rules``; tables no view reads (e.g. the labelled events) come from ``rules`` alone."""
    by_name = {e.name: e for e in entities}
    derived: dict[str, TableContract] = {}
    for view in views:
        table = source_table_name(view)
        if table is None:
            continue
        contract = view_contract(view, by_name)
        derived[table] = derived[table].merged(contract) if table in derived else contract
    out = dict(derived)
    for table, rule in rules.items():
        if table in derived:
            restated = [c for c, r in rule.columns.items()
                        if r.dtype and c in derived[table].columns and r.dtype != derived[table].columns[c].dtype]
            if restated:
                raise DefinitionError(f"source table {table!r}: the use case's types for {restated} contradict "
                                 "the Feast feature view; declare types in the view only")
            out[table] = derived[table].merged(rule)
        else:
            out[table] = rule
    return out
