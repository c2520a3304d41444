"""Windowed features online: the per-key state (tiles and the events exactness needs), its
bytes, the merge at a request instant, and the checks of pushed events. The one place.

The semantics are :mod:`feast_plugins.windows`' (its docstring): for key ``k`` at instant
``t``, an aggregation covers the events of ``k`` whose ``known_at`` is in ``(t - window, t]``,
exactly. The packed SQLite store (``packed_sqlite_store.py``, ``packed_reader.py``) and the
Redis store (``windowed_redis.py``) keep one :class:`State` per (windowed view, key) as one
blob (:meth:`Layout.encode`) and go through this module for everything else.

**State.** Per key: the events (``known_at``, ``event_timestamp``, one float per value
column, NaN for null), sorted by ``known_at``, and per (column, tile size) the partial
aggregates of every tile ``(i * tile, (i + 1) * tile]`` holding events: count of non-null
values, their sum, min, max, the newest ``(known_at, event_timestamp, value)`` and, per
``share_gt`` threshold, the count of values over it. A write merges new events into the
key's state and recomputes its tiles (:meth:`Layout.add`).

**Why the events too.** ``t`` is arbitrary, so ``(t - window, t]`` starts and ends inside
a tile: the tiles fully inside are merged from their partials, and the two edge tiles'
events are read one by one. Any tile can be an edge for some instant, so the events of the
retained span are kept (the tiles make a read cost O(tiles in the window + events in two
tiles) instead of O(events in the window)).

**Small states.** A state of at most :data:`SMALL_STATE` events (most keys of a view keyed
by aircraft: a few legs a day) keeps no tiles: a read scans its events, a write sorts them,
and a state that grows past the size gets its tiles built from scratch. Tiles only pay
when there are many events per key (an origin's departures); for a handful, building,
storing and reading them costs more than the scan they save.

**Pruning.** A key keeps the events known after ``newest known_at - (largest window +
RETAIN_SLACK)``: a read at any ``t >= newest known_at - RETAIN_SLACK`` is exact (requests
come at or after the newest event they may see; the slack admits requests for an earlier
instant, e.g. a departure asked about after the fact). Older instants may miss pruned events.

**Reads.** :meth:`Layout.values_at` gives the contract's values (count an ``int``, the rest
``float`` or None); a null key or instant gives None for every feature (the callers pass
None state for a key without events: count 0, sum 0.0, others None). The aggregations of
a (column, window, tile) without ``min``, ``max`` or ``last`` (``count``, ``sum``, ``mean``,
``share_gt``) are read from running totals of the column over the state's events instead,
made once per decoded state (the server keeps a key's decoded state until its stored bytes
change): two binary searches and a few subtractions per window, the same numbers as the
tiles give. Running sums are kept only when every partial sum is exact (values on a grid
of 1/1024, their magnitudes adding up to less than 2**52 / 1024: the flights' delays are
whole minutes); otherwise those sums come from the tiles.

**The instant of Feast's reads.** Feast's ``get_online_features`` hands an online store
only entity keys. Its windowed reads use :func:`read_instant`'s instant when one is set
(``with read_instant(t): store.get_online_features(...)``), else the wall clock. The
server's direct read takes each request's own instant (``packed_reader.py``).

**Pushes.** :func:`check_events` refuses a whole batch (naming the source and the column)
with an event missing its key, ``event_timestamp`` or ``known_at``, a column of the wrong
type, or an event known after the push's clock (an event is never visible before it is
known: pushing it early would let a request see it). The stores write a batch in one
transaction.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import struct
import time
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from operator import itemgetter
from typing import Iterator, NamedTuple, Optional, Sequence

from core.errors import PlatformError
from validation.events_contracts import EVENT_TIMESTAMP, KNOWN_AT

#: Extra span a key keeps beyond its largest window (see the module doc, Pruning).
RETAIN_SLACK = timedelta(hours=6)
#: A state of at most this many events keeps no tiles: a read scans its events, a write
#: sorts them (cheaper than tiles for the many small states: an aircraft's few legs).
SMALL_STATE = 32
#: The state's format version (first byte of every blob).
FORMAT = 1

_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INF = math.inf
_NAN = math.nan
_HEAD = struct.Struct("<B8sII")  # format, layout digest, events, tile sets
_PAIR = itemgetter(0, 1)
#: Running sums are kept for a column whose values are all multiples of 1/_GRID and whose
#: absolute values add up to less than _EXACT / _GRID: then every partial sum is exact, and
#: a difference of two running sums is the very number adding up the values gives (in any order).
_GRID = 1024.0
_EXACT = float(2 ** 52)


class EventError(PlatformError):
    """A batch of events cannot be pushed; the message names the source and the column."""


class StateError(ValueError):
    """A stored state does not fit the view's declaration (it changed): materialize it again."""


def micros(when: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - _EPOCH) // _US


# -- the instant of Feast's reads ---------------------------------------------------------

_INSTANT: contextvars.ContextVar[Optional[int]] = contextvars.ContextVar("windowed_read_instant", default=None)


@contextlib.contextmanager
def read_instant(when: datetime) -> Iterator[None]:
    """Windowed reads through Feast's ``get_online_features`` in this block answer at
    ``when`` (else at the wall clock)."""
    token = _INSTANT.set(micros(when))
    try:
        yield
    finally:
        _INSTANT.reset(token)


def current_instant() -> int:
    """The instant (microseconds) of a windowed read through Feast: :func:`read_instant`'s or now."""
    instant = _INSTANT.get()
    return instant if instant is not None else time.time_ns() // 1000


# -- the layout of one view -----------------------------------------------------------------

@dataclass(frozen=True)
class _Agg:
    index: int  # the output's position
    function: str
    threshold: Optional[float]


@dataclass(frozen=True)
class _Group:
    """The aggregations sharing a column, a window and a tile: one merge serves them all."""

    column: int  # index in Layout.columns
    window: int  # microseconds
    tile: int
    tileset: int  # index in Layout.tilesets
    thresholds: tuple[int, ...]  # indexes in that tile set's thresholds, per share_gt agg (-1 otherwise)
    aggs: tuple[_Agg, ...]
    last: bool  # whether an aggregation is ``last`` (the newest value is looked for only then)
    total: bool = True  # whether an aggregation needs the sum (``sum``, ``mean``)
    extremes: bool = True  # whether an aggregation is ``min`` or ``max``
    #: The tile set's thresholds this group's ``share_gt`` aggregations read (indexes).
    shares: tuple[int, ...] = ()
    #: Whether running totals answer the group (no ``min``, ``max`` or ``last``: :meth:`Layout.values_at`).
    running: bool = False


@dataclass(frozen=True)
class _Needs:
    """What a tile set's groups read of a run of events, the union over them: a run's
    partials (the layout's ``_run``) are computed once per read and shared by the groups."""

    total: bool
    extremes: bool
    last: bool


class Layout:
    """A windowed view's state layout, built from its specs (``windows.window_specs``)."""

    def __init__(self, specs: Sequence, small_state: Optional[int] = None, running: bool = True):
        if not specs:
            raise ValueError("a windowed layout needs at least one aggregation")
        self.specs = tuple(specs)
        self.view = specs[0].view
        self.join_keys = tuple(specs[0].join_keys)
        #: Output feature names, in declaration order.
        self.names = tuple(s.name for s in specs)
        self.int_outputs = tuple(s.function == "count" for s in specs)
        self.columns = tuple(dict.fromkeys(s.column for s in specs))
        tilesets: dict[tuple[int, int], list[float]] = {}
        for s in specs:
            thresholds = tilesets.setdefault((self.columns.index(s.column), s.tile_us), [])
            if s.function == "share_gt" and s.threshold not in thresholds:
                thresholds.append(float(s.threshold))
        #: (column index, tile microseconds, thresholds) per tile set, in first-use order.
        self.tilesets = tuple((c, t, tuple(th)) for (c, t), th in tilesets.items())
        groups: dict[tuple[int, int, int], list[_Agg]] = {}
        for i, s in enumerate(specs):
            groups.setdefault((self.columns.index(s.column), s.window_us, s.tile_us), []).append(
                _Agg(i, s.function, None if s.threshold is None else float(s.threshold)))
        self.groups = []
        for (column, window, tile), aggs in groups.items():
            k = next(j for j, (c, t, _) in enumerate(self.tilesets) if c == column and t == tile)
            thresholds = tuple(self.tilesets[k][2].index(a.threshold) if a.function == "share_gt" else -1
                               for a in aggs)
            last = any(a.function == "last" for a in aggs)
            extremes = any(a.function in ("min", "max") for a in aggs)
            self.groups.append(_Group(
                column, window, tile, k, thresholds, tuple(aggs), last,
                any(a.function in ("sum", "mean") for a in aggs), extremes,
                tuple(sorted({th for th in thresholds if th >= 0})), running and not (last or extremes)))
        #: Per column, what the running totals of the groups they answer hold, ``(column, whether
        #: a sum, the thresholds)``: also their key in a state (:meth:`_running`).
        self._running_needs: dict[int, tuple] = {}
        for g in self.groups:
            if g.running:
                _c, total, over = self._running_needs.get(g.column, (g.column, False, ()))
                shared = tuple(self.tilesets[g.tileset][2][k] for k in g.shares)
                self._running_needs[g.column] = (g.column, total or g.total, tuple(dict.fromkeys(over + shared)))
        #: Per tile set, what its groups read of a run of events (:meth:`_run`).
        self._needs = tuple(_Needs(any(g.total for g in self.groups if g.tileset == k),
                                   any(g.extremes for g in self.groups if g.tileset == k),
                                   any(g.last for g in self.groups if g.tileset == k))
                            for k in range(len(self.tilesets)))
        #: Events known at or before newest known_at - retain are pruned (microseconds).
        self.retain = max(s.window_us for s in specs) + RETAIN_SLACK // _US
        text = repr((self.columns, self.tilesets)).encode()
        self.digest = hashlib.sha256(text).digest()[:8]
        self.nulls = (None,) * len(self.names)
        #: The values over an empty window (a key without events): count 0, sum 0.0, the rest null.
        self.empty = tuple(0 if s.function == "count" else 0.0 if s.function == "sum" else None for s in specs)
        #: A state of at most this many events keeps no tiles (:data:`SMALL_STATE` by default).
        self.small_state = SMALL_STATE if small_state is None else small_state
        # A small state's tiles (none; shared: tiles are never changed in place) and their bytes.
        self._no_tiles = tuple(_no_tiles(len(thresholds)) for _c, _t, thresholds in self.tilesets)
        self._no_tiles_bytes = struct.pack("<I", 0) * len(self.tilesets)

    @classmethod
    def of_view(cls, feature_view) -> "Layout":
        from feast_plugins.windows import window_specs

        return cls(window_specs(feature_view))

    # -- state ----------------------------------------------------------------------------

    def add(self, state: Optional["State"], events: Sequence[tuple]) -> "State":
        """``state`` (None: none yet) with ``events`` added: ``(known_at us, event_timestamp us,
        values)`` with one float (NaN: null) per column of :attr:`columns`. Pruned, tiles
        recomputed: none for a small state (at most :attr:`small_state` events: reads scan
        them), from scratch for a state that was small (or decoded without its tiles,
        :meth:`decode_events`), else only those the write changed (the same numbers either
        way: a tile's partials depend on its events only)."""
        tiled = state is not None and state.tiles is not None and len(state.known) > self.small_state
        if tiled and events:
            new = _sorted(list(events))
            if _PAIR(new[0]) > (state.known[-1], state.ets[-1]):  # all after the state's events: append
                return self._append(state, new)
        if state is None or not state.known:
            merged = _sorted(list(events))
        else:
            merged = _sorted([*zip(state.known, state.ets, zip(*state.values)), *events])
        if merged:
            floor = merged[-1][0] - self.retain
            start = bisect_right([e[0] for e in merged], floor)
            merged = merged[start:]
        known = array("q", [e[0] for e in merged])
        ets = array("q", [e[1] for e in merged])
        values = tuple(array("d", [e[2][c] for e in merged]) for c in range(len(self.columns)))
        if not tiled or not events or len(known) <= self.small_state:
            return self._state(known, ets, values)
        fresh_known = min(e[0] for e in events)
        return State(known, ets, values, tuple(
            self._retile(old, known, ets, values[c], tile, thresholds, fresh_known)
            for (c, tile, thresholds), old in zip(self.tilesets, state.tiles)))

    def _append(self, state: "State", new: list) -> "State":
        """:meth:`add` of events all later than the state's (the usual stream): the arrays
        extended and cut, not rebuilt (the same result)."""
        known = state.known + array("q", [e[0] for e in new])
        ets = state.ets + array("q", [e[1] for e in new])
        values = tuple(v + array("d", [e[2][c] for e in new]) for c, v in enumerate(state.values))
        start = bisect_right(known, known[-1] - self.retain)
        if start:
            known, ets, values = known[start:], ets[start:], tuple(v[start:] for v in values)
            if len(known) <= self.small_state:
                return self._state(known, ets, values)
        fresh_known = new[0][0]
        return State(known, ets, values, tuple(
            self._retile(old, known, ets, values[c], tile, thresholds, fresh_known)
            for (c, tile, thresholds), old in zip(self.tilesets, state.tiles)))

    def _state(self, known: array, ets: array, values: tuple) -> "State":
        """A state of these events with its tiles computed from scratch (none if it is small)."""
        if len(known) <= self.small_state:
            return State(known, ets, values, self._no_tiles)
        return State(known, ets, values, tuple(self._tiles(known, ets, values[c], tile, thresholds)
                                               for c, tile, thresholds in self.tilesets))

    def _retile(self, old: "Tiles", known, ets, values, tile: int, thresholds, fresh_known: int) -> "Tiles":
        """The tiles after a write, recomputing only what it changed: the first retained tile
        (pruning may have cut it) and the tiles from the first one holding a new event on;
        the tiles in between keep their partials (same events: the same numbers)."""
        first = (known[0] - 1) // tile
        fresh = (fresh_known - 1) // tile
        if first + 1 >= fresh:
            return self._tiles(known, ets, values, tile, thresholds)
        j0, j1 = bisect_left(old.index, first + 1), bisect_left(old.index, fresh)
        head = bisect_right(known, (first + 1) * tile)
        tail = bisect_right(known, fresh * tile)
        parts = (self._tiles(known[:head], ets[:head], values[:head], tile, thresholds), old.slice(j0, j1),
                 self._tiles(known[tail:], ets[tail:], values[tail:], tile, thresholds))
        return Tiles(*(sum((getattr(p, f) for p in parts[1:]), getattr(parts[0], f))
                       for f in ("index", "cnt", "sums", "mins", "maxs", "lk", "le", "lv")),
                     tuple(a + b + c for a, b, c in zip(*(p.gts for p in parts))))

    @staticmethod
    def _tiles(known, ets, values, tile: int, thresholds: tuple[float, ...]) -> "Tiles":
        index: list[int] = []
        cnt: list[int] = []
        sums: list[float] = []
        mins: list[float] = []
        maxs: list[float] = []
        lk: list[int] = []
        le: list[int] = []
        lv: list[float] = []
        gts: list[list[int]] = [[] for _ in thresholds]
        current = None
        for k, e, v in zip(known, ets, values):
            i = (k - 1) // tile  # tile i is (i * tile, (i + 1) * tile]
            if i != current:
                current = i
                index.append(i)
                cnt.append(0)
                sums.append(0.0)
                mins.append(_INF)
                maxs.append(-_INF)
                lk.append(-1)
                le.append(-1)
                lv.append(_NAN)
                for g in gts:
                    g.append(0)
            if v != v:  # null
                continue
            cnt[-1] += 1
            sums[-1] += v
            if v < mins[-1]:
                mins[-1] = v
            if v > maxs[-1]:
                maxs[-1] = v
            if (k, e, v) > (lk[-1], le[-1], lv[-1] if lv[-1] == lv[-1] else -_INF):
                lk[-1], le[-1], lv[-1] = k, e, v
            for g, threshold in zip(gts, thresholds):
                if v > threshold:
                    g[-1] += 1
        return Tiles(array("q", index), array("q", cnt), array("d", sums), array("d", mins), array("d", maxs),
                     array("q", lk), array("q", le), array("d", lv), tuple(array("q", g) for g in gts))

    # -- bytes ------------------------------------------------------------------------------

    def encode(self, state: "State") -> bytes:
        n = len(state.known)
        parts = [_HEAD.pack(FORMAT, self.digest, n, len(state.tiles)),
                 state.known.tobytes(), state.ets.tobytes(), *(v.tobytes() for v in state.values)]
        if state.tiles is self._no_tiles:
            parts.append(self._no_tiles_bytes)
            return b"".join(parts)
        for tiles in state.tiles:
            parts.append(struct.pack("<I", len(tiles.index)))
            parts += [a.tobytes() for a in (tiles.index, tiles.cnt, tiles.sums, tiles.mins, tiles.maxs,
                                             tiles.lk, tiles.le, tiles.lv, *tiles.gts)]
        return b"".join(parts)

    def _head(self, blob: bytes) -> int:
        """The number of events of a stored state (its header checked against the layout)."""
        fmt, digest, n, n_sets = _HEAD.unpack_from(blob)
        if fmt != FORMAT or digest != self.digest or n_sets != len(self.tilesets):
            raise StateError(f"windowed view {self.view!r}: its online state was written for another "
                             "declaration of the view; materialize it again")
        return n

    def stored_events(self, blob: bytes) -> int:
        """How many events a stored state holds (its header only: a write picks its path by it)."""
        return self._head(blob)

    def decode_events(self, blob: bytes) -> "State":
        """A stored state's events without its tiles (``tiles`` None; the blob's length is
        still checked): what :meth:`add` needs when it recomputes the tiles anyway."""
        n = self._head(blob)
        pos = _HEAD.size
        width = 8 * n
        known, ets = array("q"), array("q")
        known.frombytes(blob[pos:pos + width])
        ets.frombytes(blob[pos + width:pos + 2 * width])
        pos += 2 * width
        values = []
        for _ in self.columns:
            column = array("d")
            column.frombytes(blob[pos:pos + width])
            values.append(column)
            pos += width
        for _c, _t, thresholds in self.tilesets:
            (m,) = struct.unpack_from("<I", blob, pos)
            pos += 4 + 8 * m * (8 + len(thresholds))
        if pos != len(blob) or len(known) != n:
            raise StateError(f"windowed view {self.view!r}: a stored state has {len(blob) - pos} stray bytes")
        return State(known, ets, tuple(values), None)

    def decode(self, blob: bytes) -> "State":
        n = self._head(blob)
        pos = _HEAD.size
        view = memoryview(blob)

        def take(code: str, count: int) -> array:
            nonlocal pos
            out = array(code)
            out.frombytes(view[pos:pos + 8 * count])
            pos += 8 * count
            return out

        known, ets = take("q", n), take("q", n)
        values = tuple(take("d", n) for _ in self.columns)
        tiles = []
        for _c, _t, thresholds in self.tilesets:
            (m,) = struct.unpack_from("<I", blob, pos)
            pos += 4
            tiles.append(Tiles(take("q", m), take("q", m), take("d", m), take("d", m), take("d", m),
                               take("q", m), take("q", m), take("d", m),
                               tuple(take("q", m) for _ in thresholds)))
        if pos != len(blob):
            raise StateError(f"windowed view {self.view!r}: a stored state has {len(blob) - pos} stray bytes")
        return State(known, ets, values, tuple(tiles))

    # -- reads ------------------------------------------------------------------------------

    def values_at(self, state: Optional["State"], instant: Optional[int]) -> tuple:
        """Every output's value at ``instant`` (microseconds; None: all null) over ``state``
        (None: a key without events), in :attr:`names` order."""
        if instant is None:
            return self.nulls
        if state is None or not state.known:
            return self.empty
        out: list = [None] * len(self.names)
        runs: dict = {}  # (tile set, a, b) -> the partials of the events known in (a, b], shared by groups
        known = state.known
        stop = None  # the events known at or before instant: known[:stop]
        for group in self.groups:
            running = None
            if group.running:
                needs = self._running_needs[group.column]
                running = state.running.get(needs) or self._running(state, needs)
                if group.total and running.sums is None:
                    running = None
            if running is not None:
                # The events known in (instant - window, instant] are known[start:stop]: their
                # values from the running totals, the same numbers as merging tiles and edges.
                if stop is None:
                    stop = bisect_right(known, instant)
                start = bisect_right(known, instant - group.window, 0, stop)
                counts = running.counts
                cnt = counts[stop] - counts[start]
                total = running.sums[stop] - running.sums[start] if group.total else 0.0
                low, high, last = _INF, -_INF, None
                gts = [0] * len(self.tilesets[group.tileset][2])
                for k in group.shares:
                    over = running.over[self.tilesets[group.tileset][2][k]]
                    gts[k] = over[stop] - over[start]
            else:
                cnt, total, low, high, gts, last = self._merge(state, group, instant, runs)
            for agg, th in zip(group.aggs, group.thresholds):
                f = agg.function
                if f == "count":
                    value = cnt
                elif f == "sum":
                    value = total if cnt else 0.0
                elif not cnt:
                    value = None
                elif f == "mean":
                    value = total / cnt
                elif f == "min":
                    value = low
                elif f == "max":
                    value = high
                elif f == "last":
                    value = last
                else:  # share_gt
                    value = gts[th] / cnt
                out[agg.index] = value
        return tuple(out)

    def _running(self, state: "State", needs: tuple) -> "_Running":
        """The running totals of a column over ``state``'s events, ``needs``: ``(column, whether
        a sum, the thresholds)`` (kept in the state under it: a state is decoded once per
        stored bytes and read many times). The sums only when every partial sum is exact
        (:data:`_GRID`), so that a difference of two is what adding up the values gives; else
        the groups needing a sum are merged from tiles and edges."""
        column, total, thresholds = needs
        values = state.values[column]
        present = [v == v for v in values]  # NaN: null
        sums = None
        if total:
            clean = [v if p else 0.0 for v, p in zip(values, present)]
            grid = [v * _GRID for v in clean]
            if all(map(float.is_integer, grid)) and sum(map(abs, grid)) < _EXACT:
                sums = list(accumulate(clean, initial=0.0))
        running = _Running(list(accumulate(present, initial=0)), sums,
                           {th: list(accumulate([v > th for v in values], initial=0)) for th in thresholds})
        state.running[needs] = running
        return running

    def _merge(self, state: "State", group: _Group, instant: int, runs: dict):
        """(count, sum, min, max, [count over each threshold], newest value) over the events of
        ``(instant - window, instant]``: the tiles fully inside and the edge tiles' events (a
        small state's events all; it keeps no tiles). Sums are exact for the contract's
        values in any order (integers and halves), so slices are summed whole. Only what the
        group's aggregations read is computed (a sum, the extremes, the thresholds it
        shares over, the newest value); the others keep their empty values. ``runs``: the
        edges' partials already computed by this read (groups of a tile set share the edge
        ending at ``instant``), the same numbers either way."""
        lo, hi, tile = instant - group.window, instant, group.tile
        first = -((-lo) // tile)  # the first tile starting at or after lo
        stop = hi // tile  # tiles before this one end at or before hi
        known = state.known
        cnt, total, low, high = 0, 0.0, _INF, -_INF
        gts = [0] * len(self.tilesets[group.tileset][2])
        newest = None  # (known_at, event_timestamp, value) of the newest value
        if first < stop and len(known) > self.small_state:
            edges = ((lo, first * tile), (stop * tile, hi))
            tiles = state.tiles[group.tileset]
            index = tiles.index
            j0 = bisect_left(index, first)
            j1 = bisect_left(index, stop, j0)
            if j0 < j1:
                cnt = sum(tiles.cnt[j0:j1])
                if cnt:
                    if group.total:
                        total = sum(tiles.sums[j0:j1])
                    if group.extremes:
                        low = min(tiles.mins[j0:j1])
                        high = max(tiles.maxs[j0:j1])
                    for k in group.shares:
                        gts[k] = sum(tiles.gts[k][j0:j1])
                    if group.last:  # the newest tile with a value holds the newest value
                        tile_cnt = tiles.cnt
                        for j in range(j1 - 1, j0 - 1, -1):
                            if tile_cnt[j]:
                                newest = (tiles.lk[j], tiles.le[j], tiles.lv[j])
                                break
        else:
            edges = ((lo, hi),)
        for a, b in edges:  # events known in (a, b]
            key = (group.tileset, a, b)
            if key in runs:
                run = runs[key]
            else:
                run = runs[key] = self._run(state, group.tileset, bisect_right(known, a), b)
            if run is None:
                continue
            n, run_total, run_low, run_high, run_gts, run_newest = run
            cnt += n
            total += run_total
            if run_low < low:
                low = run_low
            if run_high > high:
                high = run_high
            for k in group.shares:
                gts[k] += run_gts[k]
            if group.last and (newest is None or run_newest > newest):
                newest = run_newest
        return cnt, total, low, high, gts, None if newest is None else newest[2]

    def _run(self, state: "State", tileset: int, i0: int, b: int):
        """The partials of the non-null values of a tile set's column over the events from
        index ``i0`` known at or before ``b``: (count, sum, min, max, counts over each
        threshold, newest ``(known_at, event_timestamp, value)``), what the tile set's groups
        read of them (:class:`_Needs`; the rest: 0.0, inf, -inf, None); None: no value."""
        known = state.known
        i1 = bisect_right(known, b, i0)
        if i0 == i1:
            return None
        column, _tile, thresholds = self.tilesets[tileset]
        values = state.values[column]
        present = [v for v in values[i0:i1] if v == v]  # NaN: null
        if not present:
            return None
        needs = self._needs[tileset]
        newest = None
        if needs.last:
            ets = state.ets
            newest = max((known[i], ets[i], values[i]) for i in range(i0, i1) if values[i] == values[i])
        return (len(present), sum(present) if needs.total else 0.0,
                min(present) if needs.extremes else _INF, max(present) if needs.extremes else -_INF,
                [len([v for v in present if v > threshold]) for threshold in thresholds], newest)


def _tie_key(event: tuple) -> tuple:
    return tuple((v == v, v if v == v else 0.0) for v in event[2])


def _sorted(events: list) -> list:
    """Events in ``(known_at, event_timestamp)`` order, equal pairs by their values (nulls
    first): a fixed order, so a state's bytes depend on its events only, not on how they
    were batched. (Sorting on the pairs first keeps the common case in C.)"""
    events.sort(key=_PAIR)
    i, n = 0, len(events)
    while i < n - 1:
        if _PAIR(events[i]) != _PAIR(events[i + 1]):
            i += 1
            continue
        j = i + 1
        while j < n and _PAIR(events[j]) == _PAIR(events[i]):
            j += 1
        events[i:j] = sorted(events[i:j], key=_tie_key)
        i = j
    return events


@dataclass(frozen=True)
class Tiles:
    """One tile set's partials, one entry per tile holding events (``index`` ascending)."""

    index: array
    cnt: array
    sums: array
    mins: array
    maxs: array
    lk: array
    le: array
    lv: array
    gts: tuple  # per threshold: counts of values over it

    def slice(self, start: int, stop: int) -> "Tiles":
        return Tiles(self.index[start:stop], self.cnt[start:stop], self.sums[start:stop], self.mins[start:stop],
                     self.maxs[start:stop], self.lk[start:stop], self.le[start:stop], self.lv[start:stop],
                     tuple(g[start:stop] for g in self.gts))


def _no_tiles(thresholds: int) -> Tiles:
    """The tiles of a small state: none."""
    return Tiles(array("q"), array("q"), array("d"), array("d"), array("d"), array("q"), array("q"), array("d"),
                 tuple(array("q") for _ in range(thresholds)))


@dataclass(frozen=True)
class State:
    """A key's events (sorted by known_at) and tiles (see the module doc)."""

    known: array
    ets: array
    values: tuple  # one array of floats per column (NaN: null)
    tiles: Optional[tuple]  # one Tiles per tile set (None: decoded without them, Layout.decode_events)
    #: Running totals (:class:`_Running`) by what they hold (the layout's ``_running``), made by the
    #: first read needing them.
    running: dict = field(default_factory=dict, compare=False, repr=False)


class _Running(NamedTuple):
    """A column's running totals over a state's events: ``counts[i]``, the non-null values
    among the first ``i`` events; ``sums[i]``, their sum (None: the column's values are not
    all exactly summable, see :data:`_GRID`); ``over[threshold][i]``, how many are over it."""

    counts: list
    sums: Optional[list]
    over: dict


# -- pushed events --------------------------------------------------------------------------

def _float_column(column) -> list:
    """Values as floats, null (and NaN) as NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_boolean(column.type) or pa.types.is_integer(column.type) or pa.types.is_decimal(column.type):
        column = pc.cast(column, pa.float64())
    if pa.types.is_floating(column.type):
        return [_NAN if v is None else float(v) for v in column.to_pylist()]
    # Any other type (text): only its presence counts (count); every value is 1.0.
    return [_NAN if v is None else 1.0 for v in column.to_pylist()]


def _numeric(field) -> bool:
    import pyarrow as pa

    t = field.type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def check_events(source: str, layout: Layout, table, clock: Optional[int], null_keys: bool = False) -> None:
    """Raise :class:`EventError` (naming ``source`` and the column) unless every row of the
    Arrow ``table`` has its join keys, ``event_timestamp`` and ``known_at`` (timestamps with
    a time zone), value columns of a usable type (numbers; any type for a column only
    counted), and ``known_at`` at or before ``clock`` (microseconds; None: no check).

    ``null_keys``: a null join key is allowed (the event is not this view's: a source
    feeding views of different keys, e.g. a departure without a tail number still counts
    for its origin; :func:`keyed` drops it for this view)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = table.schema
    for column in (*layout.join_keys, EVENT_TIMESTAMP, KNOWN_AT):
        index = schema.get_field_index(column)
        if index < 0:
            raise EventError(f"push source {source!r}: column {column!r} is missing (the events of windowed "
                             f"view {layout.view!r} need it; the rows have {schema.names})")
        field = schema.field(index)
        if column in (EVENT_TIMESTAMP, KNOWN_AT) and not (pa.types.is_timestamp(field.type) and field.type.tz):
            raise EventError(f"push source {source!r}: column {column!r} has type {field.type}, "
                             "expected a timestamp with a time zone")
        if column in layout.join_keys and not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
                                                or pa.types.is_integer(field.type)):
            raise EventError(f"push source {source!r}: column {column!r} has type {field.type}, "
                             "expected a string or an integer key")
        nulls = table.column(index).null_count
        if nulls and not (null_keys and column in layout.join_keys):
            raise EventError(f"push source {source!r}: column {column!r} has {nulls} null value(s); "
                             "every event needs its key, event_timestamp and known_at")
    counted_only = {s.column for s in layout.specs if s.function != "count"}
    for column in layout.columns:
        index = schema.get_field_index(column)
        if index < 0:
            raise EventError(f"push source {source!r}: column {column!r} is missing (read by windowed view "
                             f"{layout.view!r}; the rows have {schema.names})")
        field = schema.field(index)
        if column in counted_only and not _numeric(field):
            raise EventError(f"push source {source!r}: column {column!r} has type {field.type}, expected a "
                             "number (windowed view {layout.view!r} aggregates it)".replace(
                                 "{layout.view!r}", repr(layout.view)))
    if clock is not None and table.num_rows:
        known = pc.cast(pc.cast(table.column(KNOWN_AT), pa.timestamp("us", tz="UTC")), pa.int64())
        newest = pc.max(known).as_py()
        if newest > clock:
            late = _EPOCH + timedelta(microseconds=newest)
            now = _EPOCH + timedelta(microseconds=clock)
            raise EventError(f"push source {source!r}: column {KNOWN_AT!r} holds {late.isoformat()}, after the "
                             f"push's clock {now.isoformat()}: an event cannot be pushed before it is known; "
                             "nothing of the batch was written")


def keyed(layout: Layout, table):
    """The rows of ``table`` with every join key of the view non-null (its events)."""
    import pyarrow.compute as pc

    if not any(table.column(k).null_count for k in layout.join_keys):
        return table
    mask = None
    for k in layout.join_keys:
        valid = pc.is_valid(table.column(k))
        mask = valid if mask is None else pc.and_(mask, valid)
    return table.filter(mask)


def events_by_key(layout: Layout, table, keys: Sequence) -> dict:
    """``{key: [(known_at us, event_timestamp us, values)]}`` of a checked Arrow ``table``;
    ``keys``: each row's key as the store names it (e.g. its serialized entity key)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def us(name: str) -> list[int]:
        return pc.cast(pc.cast(table.column(name), pa.timestamp("us", tz="UTC")), pa.int64()).to_pylist()

    columns = [_float_column(table.column(c)) for c in layout.columns]
    grouped: dict = {}
    for key, k, e, values in zip(keys, us(KNOWN_AT), us(EVENT_TIMESTAMP), zip(*columns) if columns
                                 else ((),) * table.num_rows):
        grouped.setdefault(key, []).append((k, e, values))
    return grouped


# -- the stores' side ------------------------------------------------------------------------

#: Why a windowed view takes no feature rows (Feast's materialization and push write rows).
NOT_ROWS = ("windowed view {view!r} holds events, not feature rows: push its events "
            "(feast_plugins.push_writer.push_frames) or materialize it through the platform "
            "(feast_plugins.push_writer.materialize_events)")

_LAYOUTS: dict = {}


def is_windowed(feature_view) -> bool:
    from feast_plugins.windows import is_windowed as declared

    return declared(feature_view)


def layout_of(feature_view) -> Layout:
    """The view's :class:`Layout`, built once per declaration."""
    signature = (feature_view.name, tuple(f.name for f in feature_view.entity_columns),
                 tuple((a.column, a.function, a.time_window, a.slide_interval, a.name)
                       for a in feature_view.aggregations))
    layout = _LAYOUTS.get(signature)
    if layout is None:
        layout = _LAYOUTS[signature] = Layout.of_view(feature_view)
    return layout


def merger(layout: Layout, grouped: dict):
    """``merge(key, stored bytes or None) -> (newest known_at, bytes)`` adding ``grouped[key]``."""
    def merge(key, stored: Optional[bytes]) -> tuple[int, bytes]:
        events = grouped[key]
        if stored is None:
            state = None
        elif layout.stored_events(stored) <= layout.small_state:  # no tiles stored, none to patch
            state = layout.decode_events(stored)
        else:
            state = layout.decode(stored)
        state = layout.add(state, events)
        return state.known[-1], layout.encode(state)

    return merge


def rebuilder(layout: Layout, grouped: dict, until: int):
    """``merge`` for a materialization up to ``until`` (microseconds): a key's state becomes
    ``grouped[key]`` (its events known at or before ``until``, from the events table) plus
    the stored events known after ``until`` (pushed since); None (delete) if nothing is
    left. Idempotent: materializing again, or after pushes of the same events, counts each
    event once. ``merge.keys``: the keys the table holds."""
    def merge(key, stored: Optional[bytes]):
        events = list(grouped.get(key, ()))
        if stored is not None:
            state = layout.decode(stored)
            start = bisect_right(state.known, until)
            events += list(zip(state.known[start:], state.ets[start:], zip(*(v[start:] for v in state.values))))
        if not events:
            return None
        state = layout.add(None, events)
        return state.known[-1], layout.encode(state)

    merge.keys = list(grouped)
    return merge


def feast_read(feature_view, entity_keys: Sequence, stored: Sequence[Optional[tuple]]) -> list:
    """What an online store's ``online_read`` returns for a windowed view: per key,
    ``(instant, {feature: Value})`` at :func:`current_instant` (a key without events gets
    its empty-window values), ``(None, None)`` for a null key (Feast: every feature null).
    ``stored``: per key, ``(event_ts, state bytes)`` or None."""
    layout = layout_of(feature_view)
    instant = current_instant()
    when = _EPOCH + timedelta(microseconds=instant)
    out = []
    for key, row in zip(entity_keys, stored):
        if is_null_key(key):
            out.append((None, None))
            continue
        state = None if row is None else layout.decode(row[1])
        out.append((when, to_protos(layout, layout.values_at(state, instant))))
    return out


# -- Feast values -----------------------------------------------------------------------------

def to_protos(layout: Layout, values: tuple) -> dict:
    """``{feature: Value}`` of :meth:`Layout.values_at`'s values (null: an empty Value)."""
    from feast.protos.feast.types.Value_pb2 import Value

    out = {}
    for name, is_int, v in zip(layout.names, layout.int_outputs, values):
        if v is None:
            out[name] = Value()
        elif is_int:
            out[name] = Value(int64_val=int(v))
        else:
            out[name] = Value(double_val=float(v))
    return out


def is_null_key(entity_key) -> bool:
    """Whether a Feast ``EntityKey`` holds a null (or empty-string) value: the serving layer
    sends a null join key as ``""``, which the contract answers with nulls."""
    for value in entity_key.entity_values:
        field = value.WhichOneof("val")
        if field is None or field == "null_val" or (field == "string_val" and value.string_val == ""):
            return True
    return False
