"""What a use case declares about its data and its models: column rules, table contracts,
behavioural expectations of a model. Plain frozen dataclasses; ``validation/`` checks data
against them and the model gate (``training/model_gate.py``) checks models."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class ColumnRule:
    """What one column must satisfy. Unset fields check nothing.

    ``tolerance`` is the fraction of rows allowed to break the value checks (range,
    allowed values) before it is a failure: real sources carry a few known-bad readings.
    ``not_after`` bounds a timestamp by ``"now"`` (the wall clock) or ``"as_of"`` (the
    snapshot's as-of instant); ``drift`` puts the column in the reference profile.
    """

    dtype: str | None = None
    nullable: bool = True
    min: Any = None
    max: Any = None
    allowed: tuple | None = None
    allowed_from: tuple[str, str] | None = None
    not_after: str | None = None
    not_before: str | None = None
    tolerance: float = 0.0
    drift: bool = False

    def merged(self, other: "ColumnRule") -> "ColumnRule":
        """This rule with every field ``other`` sets (non-default) taken from ``other``."""
        changes = {f.name: getattr(other, f.name) for f in fields(other)
                   if getattr(other, f.name) != f.default}
        return replace(self, **changes)


@dataclass(frozen=True)
class TableContract:
    name: str
    columns: Mapping[str, ColumnRule]
    #: Columns whose combination must be unique (null keys are caught by ``nullable``).
    key: tuple[str, ...] = ()
    min_rows: int = 1
    #: Compare the row count with the previous snapshot's (raw tables).
    volume: bool = True

    def merged(self, other: "TableContract") -> "TableContract":
        """Column rules of both (``other`` refining this one's), ``other``'s key if it has one."""
        columns = dict(self.columns)
        for name, rule in other.columns.items():
            columns[name] = columns[name].merged(rule) if name in columns else rule
        return replace(self, columns=columns, key=other.key or self.key,
                       min_rows=max(self.min_rows, other.min_rows))


@dataclass(frozen=True)
class Direction:
    """Raising ``feature`` from ``low`` to ``high`` must move the mean prediction by ``sign``."""

    feature: str
    sign: int
    low: float
    high: float


@dataclass(frozen=True)
class ModelExpectations:
    """A use case's behavioural expectations of any model it promotes."""

    #: Request fields that must not change a prediction (e.g. an identifier with no meaning).
    invariant_fields: tuple[str, ...] = ()
    directions: tuple[Direction, ...] = ()
