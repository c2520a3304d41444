"""Windowed aggregations: a view's declaration parsed into plain specs, and their semantics.

This is the one place that reads a windowed view's declaration; the offline join
(:mod:`feast_plugins.windowed_offline`), the online tiles and the tests' brute-force
reference all work from the :class:`WindowSpec` objects it returns, so they cannot read
the same declaration differently.

Declaration (Feast's own vocabulary, see ``feature_repo/definitions/windows.py``): a
:class:`~feast.StreamFeatureView` over a ``PushSource`` whose batch source is an events
table with the entity key column(s), ``event_timestamp`` (when the event happened),
``known_at`` (when it became known: the first instant the platform could have seen it)
and the value columns. Its ``timestamp_field`` is ``known_at``, and each
``feast.aggregation.Aggregation(column, function, time_window, slide_interval, name)`` is
one output feature: ``slide_interval`` is the tile size online (it must divide the window),
``name`` the feature's name, declared in the view's schema as ``Int64`` for ``count`` and
``Float64`` for every other function.

Functions (:data:`FUNCTIONS`): ``count``, ``sum``, ``mean``, ``min``, ``max``, ``last`` and
``share_gt:<threshold>`` (the share of values strictly over the threshold, e.g.
``share_gt:15``).

Semantics, identical offline, online and in the reference
(``tests/feast_plugins/windows_reference.py``):

* The value for key ``k`` at instant ``t`` is computed over the events of ``k`` whose
  ``known_at`` lies in the half-open interval ``(t - window, t]``: exact, no sawtooth. An
  event is never visible before its ``known_at``; ``event_timestamp`` only breaks ties for
  ``last``.
* Null values in the column are ignored by every function (``count`` counts non-null values).
* Over no (non-null) values: ``count`` = 0, ``sum`` = 0.0, every other function null. A null
  key (entity row or request) or a null instant gives null for every windowed feature,
  ``count`` included.
* ``last`` is the value of the event with the greatest ``(known_at, event_timestamp, value)``.
* Duplicate event rows are separate events (counted twice).
* Types: ``count`` is Int64, everything else Float64.
* Windows from minutes to days (at least :data:`MIN_WINDOW`); the tile must divide the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import feast_plugins.schema_order  # noqa: F401  (windowed views' fields in declaration order)
from core.errors import DefinitionError
from validation import events_contracts

#: The aggregation functions a windowed view may declare (``share_gt`` takes ``:<threshold>``).
FUNCTIONS = ("count", "sum", "mean", "min", "max", "last", "share_gt")

#: The functions whose output is Int64; every other one is Float64.
INT_FUNCTIONS = frozenset({"count"})

#: Columns of an events table (named by its contract, ``validation.events_contracts``):
#: when the event became known (the window runs on it) and when it happened (breaks ties
#: for ``last``).
KNOWN_AT, EVENT_TIMESTAMP = events_contracts.KNOWN_AT, events_contracts.EVENT_TIMESTAMP

#: The shortest window and tile accepted: windows run "from minutes to days".
MIN_WINDOW = timedelta(minutes=1)
MIN_TILE = timedelta(seconds=1)

_ONE_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class WindowSpec:
    """One windowed aggregation of one view: ``function`` of ``column`` over the events of
    ``join_keys`` known in ``(t - window, t]``, served as feature ``name``; ``tile`` is the
    online tile size (divides ``window``); ``threshold`` only for ``share_gt``."""

    view: str
    join_keys: tuple[str, ...]
    column: str
    function: str
    window: timedelta
    tile: timedelta
    name: str
    threshold: Optional[float] = None

    @property
    def dtype(self) -> str:
        """The Feast type name of the output: ``Int64`` for count, ``Float64`` otherwise."""
        return "Int64" if self.function in INT_FUNCTIONS else "Float64"

    @property
    def window_us(self) -> int:
        """The window in whole microseconds (the resolution of every timestamp here)."""
        return self.window // _ONE_US

    @property
    def tile_us(self) -> int:
        return self.tile // _ONE_US

    @property
    def function_text(self) -> str:
        """The function as declared (``share_gt:15`` for a share)."""
        if self.function == "share_gt":
            return f"share_gt:{format_threshold(self.threshold)}"
        return self.function


def format_threshold(value: Optional[float]) -> str:
    """``15`` for 15.0, ``2.5`` for 2.5: the spelling a declaration would use."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_function(text: str, where: str = "aggregation") -> tuple[str, Optional[float]]:
    """``"mean"`` -> ``("mean", None)``; ``"share_gt:15"`` -> ``("share_gt", 15.0)``.

    Raises :class:`~core.errors.DefinitionError` naming ``where`` for an unknown function,
    a share without a finite threshold, or a threshold on another function."""
    name, sep, arg = (text or "").strip().partition(":")
    name = name.strip().lower()
    if name not in FUNCTIONS:
        raise DefinitionError(f"{where}: unknown function {text!r}; use one of "
                              f"{', '.join(f for f in FUNCTIONS if f != 'share_gt')} or share_gt:<threshold>")
    if name != "share_gt":
        if sep:
            raise DefinitionError(f"{where}: function {name!r} takes no argument, got {text!r}")
        return name, None
    try:
        threshold = float(arg)
    except ValueError:
        threshold = math.nan
    if not sep or not math.isfinite(threshold):
        raise DefinitionError(f"{where}: share_gt needs a finite threshold, e.g. 'share_gt:15'; got {text!r}")
    return name, threshold


def is_windowed(feature_view) -> bool:
    """Whether ``feature_view`` declares windowed aggregations (a StreamFeatureView with any)."""
    from feast.stream_feature_view import StreamFeatureView

    return isinstance(feature_view, StreamFeatureView) and events_contracts.is_windowed(feature_view)


def _join_keys(feature_view) -> tuple[str, ...]:
    keys = tuple(field.name for field in getattr(feature_view, "entity_columns", []) or [])
    if not keys:
        raise DefinitionError(
            f"windowed view {feature_view.name!r}: no entity columns; declare each entity's join "
            "key in its schema (a windowed aggregation is per key)")
    return keys


def window_specs(feature_view) -> list[WindowSpec]:
    """The view's aggregations as :class:`WindowSpec` objects, in declaration order.

    Checked here, with a :class:`~core.errors.DefinitionError` naming the view and the
    aggregation: a known function (a share with its threshold), a column, a window of at
    least :data:`MIN_WINDOW`, a tile (``slide_interval``) of at least :data:`MIN_TILE`
    dividing it, a unique output name declared in the view's schema with its type
    (``Int64`` for count, ``Float64`` otherwise), and ``timestamp_field`` = ``known_at``.
    A view that is not windowed gives an empty list."""
    if not is_windowed(feature_view):
        return []
    view = feature_view.name
    if feature_view.timestamp_field != KNOWN_AT:
        raise DefinitionError(f"windowed view {view!r}: timestamp_field must be {KNOWN_AT!r} (windows "
                              f"run on when an event became known), got {feature_view.timestamp_field!r}")
    join_keys = _join_keys(feature_view)
    declared = {field.name: field.dtype for field in feature_view.schema}
    specs: list[WindowSpec] = []
    for agg in feature_view.aggregations:
        where = f"windowed view {view!r}, aggregation {agg.name or agg.column!r}"
        function, threshold = parse_function(agg.function, where)
        if not agg.column:
            raise DefinitionError(f"{where}: no column")
        if agg.column in join_keys:
            raise DefinitionError(f"{where}: column {agg.column!r} is a join key")
        window, tile = agg.time_window, agg.slide_interval
        if window is None or window < MIN_WINDOW:
            raise DefinitionError(f"{where}: time_window must be at least {MIN_WINDOW}, got {window}")
        if tile is None or tile < MIN_TILE or window % tile or tile % _ONE_US:
            raise DefinitionError(f"{where}: slide_interval (the tile) must be at least {MIN_TILE} "
                                  f"and divide the time_window {window}, got {tile}")
        if window % _ONE_US:
            raise DefinitionError(f"{where}: time_window must be whole microseconds, got {window}")
        name = agg.name or agg.resolved_name(window)
        spec = WindowSpec(view=view, join_keys=join_keys, column=agg.column, function=function,
                          window=window, tile=tile, name=name, threshold=threshold)
        if any(s.name == name for s in specs):
            raise DefinitionError(f"{where}: output name {name!r} is used twice")
        if name not in declared:
            raise DefinitionError(f"{where}: output {name!r} is not in the view's schema; add "
                                  f"Field(name={name!r}, dtype={spec.dtype})")
        if str(declared[name]) != spec.dtype:
            raise DefinitionError(f"{where}: output {name!r} is declared {declared[name]}; "
                                  f"{function} gives {spec.dtype}")
        specs.append(spec)
    return specs


def max_window(specs: list[WindowSpec]) -> timedelta:
    """The longest window among ``specs`` (what online state must keep); 0 for none."""
    return max((s.window for s in specs), default=timedelta(0))


def value_columns(specs: list[WindowSpec]) -> list[str]:
    """The events-table value columns ``specs`` read, each once, in first-use order."""
    return list(dict.fromkeys(s.column for s in specs))
