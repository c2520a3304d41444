"""Brute-force reference of the windowed-aggregation contract, for the offline and online tests.

Written from the contract (``/feast_plugins/windows.py``'s docstring), independently of any
SQL or tile code: for each (key, instant) it scans every event. Slow, obvious, and the
judge of both the offline join and the online store.

An event is an :class:`Event`: its keys by join-key column (it may carry more keys than
a view uses: each view reads its own), ``event_timestamp``, ``known_at`` (aware datetimes)
and its values by column name. A request is ``(key, t)``: the tuple of the view's join-key
values in ``spec.join_keys`` order (None or a tuple with a None: a null key) and an aware
datetime (None: a null instant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional, Sequence

from feast_plugins.windows import WindowSpec


@dataclass(frozen=True)
class Event:
    keys: Mapping[str, Any]
    event_timestamp: datetime
    known_at: datetime
    values: Mapping[str, Optional[float]] = field(default_factory=dict)


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def reference_value(spec: WindowSpec, events: Iterable[Event], key: Optional[Sequence],
                    t: Optional[datetime]):
    """The contract's value of ``spec`` for ``key`` at instant ``t`` over ``events``."""
    if t is None or key is None or any(_is_null(k) for k in key):
        return None
    key = tuple(key)
    low = t - spec.window
    seen = [e for e in events
            if tuple(e.keys.get(k) for k in spec.join_keys) == key and low < e.known_at <= t and not _is_null(e.values.get(spec.column))]
    values = [float(e.values[spec.column]) for e in seen]
    if spec.function == "count":
        return len(values)
    if spec.function == "sum":
        return float(sum(values)) if values else 0.0
    if not values:
        return None
    if spec.function == "mean":
        return sum(values) / len(values)
    if spec.function == "min":
        return min(values)
    if spec.function == "max":
        return max(values)
    if spec.function == "share_gt":
        return sum(1 for v in values if v > spec.threshold) / len(values)
    if spec.function == "last":
        newest = max(seen, key=lambda e: (e.known_at, e.event_timestamp, float(e.values[spec.column])))
        return float(newest.values[spec.column])
    raise AssertionError(f"unknown function {spec.function}")


def reference_rows(specs: Sequence[WindowSpec], events: Sequence[Event],
                   requests: Sequence[tuple[Optional[Sequence], Optional[datetime]]]
                   ) -> list[dict[str, Any]]:
    """For each request ``(key, t)``, ``{spec.name: value}`` over every spec."""
    return [{s.name: reference_value(s, events, key, t) for s in specs} for key, t in requests]


def values_equal(spec: WindowSpec, got, expected, rel: float = 1e-9) -> bool:
    """The contract's comparison: exact for count, sum, min, max and last; ``rel`` for
    mean and share (their division order may differ); null only equals null."""
    if _is_null(expected) or _is_null(got):
        return _is_null(expected) and _is_null(got)
    if spec.function == "count":
        return int(got) == expected
    if spec.function in ("mean", "share_gt"):
        return abs(float(got) - expected) <= rel * max(abs(expected), 1e-300) or float(got) == expected
    return float(got) == expected
