"""Point-in-time lookups inside each Spark task against a small feature table: no shuffle.

Why: the sorted-window join (:func:`feast_plugins.spark_offline_store.view_answer`)
repartitions every entity row by each view's join keys and sorts it: one shuffle of the
whole entity set per view, and a view keyed by a column with few values (``origin``: 3)
leaves a few giant partitions on few cores. Most feature tables are small beside the
entity set (a row per key and hour or day), so this module sends the table to every task
instead, the way Spark broadcasts the small side of a hash join: the entity rows stay in
the partitions they were read in, and each task answers its rows with a binary search.

How: the driver has the executors write every view's feature rows (keys, time, created
time and the payload struct, already pruned to the entity set's time range) as Parquet in
the staging directory, in one job, a directory per view; :func:`asof_partition` (run by
``mapInArrow`` in each task) reads them once per Python worker, orders each table by (key,
event time, created time with a missing one first) and, per entity batch, finds the last feature row at or before each
entity time in the same key: exactly the row the sorted window would carry (ties on event
time to the newest created time), then applies the TTL. The answer struct has the same
fields, types and cells as the window join's.

Which views: those whose staged feature rows number at most ``broadcast_rows`` (an
offline store setting); a larger table takes the sorted-window join.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Feature tables with at most this many rows (after time pruning) go to every task.
DEFAULT_BROADCAST_ROWS = 5_000_000


@dataclass(frozen=True)
class AsofSpec:
    """One view's lookup: its staged feature rows and how to read an entity batch for it."""

    path: str                       # staged feature rows: <prefix>k0.., __ts, __c, <prefix>p (struct t, v0..)
    prefix: str                     # this view's column prefix in the staged files (other views' are null)
    entity_keys: tuple[str, ...]    # the entity batch's columns holding this view's keys (cast)
    ttl_us: Optional[int]
    outputs: tuple[tuple[str, str], ...]  # (payload field, output field) in output order
    column: str                     # the output struct column


class _Lookup:
    """A staged feature table ordered for binary search: rows sorted by (key code, event
    time, created time with a missing one first); ``keys`` the sorted search keys."""

    def __init__(self, table: pa.Table, n_keys: int) -> None:
        if n_keys:
            combined = _combined_key([table.column(f"__k{j}") for j in range(n_keys)])
            self.distinct = pc.unique(combined)
            code = pc.index_in(combined, value_set=self.distinct).to_numpy(zero_copy_only=False)
        else:
            self.distinct = None
            code = np.zeros(table.num_rows, dtype=np.int64)
        code = code.astype(np.int64)
        ts = table.column("__ts").to_numpy(zero_copy_only=False).astype(np.int64)
        created = table.column("__c")
        created = pc.fill_null(created, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.lexsort((created, ts, code))
        self.code, self.ts = code[order], ts[order]
        #: The distinct event times: comparing ranks is comparing times, in a range small
        #: enough that (code, rank) packs into one int64 key.
        self.times = np.unique(self.ts)
        self.width = len(self.times) + 1
        self.keys = self.code * self.width + np.searchsorted(self.times, self.ts) + 1
        self.payload = table.column("__p").take(pa.array(order))
        self.n_keys = n_keys

    def find(self, entity_keys: list[pa.Array], ts: pa.Array, ttl_us: Optional[int]) -> pa.Array:
        """Per entity row: the position of its feature row in ``payload``, null if none."""
        n = len(ts)
        if self.n_keys:
            combined = _combined_key([pc.cast(k, self.distinct.type if self.n_keys == 1 else k.type)
                                      for k in entity_keys])
            code = pc.index_in(combined, value_set=self.distinct)
        else:
            code = pa.array(np.zeros(n, dtype=np.int64))
        known = pc.and_(pc.is_valid(code), pc.is_valid(ts)).to_numpy(zero_copy_only=False)
        code = pc.fill_null(code, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        times = pc.fill_null(ts, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        # Rank of the newest distinct time <= the entity time (0: none), in the same packing.
        rank = np.searchsorted(self.times, times, side="right")
        position = np.searchsorted(self.keys, code * self.width + rank, side="right") - 1
        safe = np.clip(position, 0, max(len(self.keys) - 1, 0))
        found = known & (position >= 0) & (len(self.keys) > 0)
        if len(self.keys):
            found &= self.code[safe] == code
            found &= rank > 0
            if ttl_us is not None:
                found &= self.ts[safe] >= times - ttl_us
        return pa.array(safe, mask=~found, type=pa.int64())


def _combined_key(columns: list[pa.Array]) -> pa.Array:
    """One column standing for the join key: the key itself, or the keys as text joined
    by a unit separator (a null in any key gives a null: no match, as in Feast)."""
    if len(columns) == 1:
        column = columns[0]
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    parts = [pc.cast(c, pa.string()) for c in columns]
    return pc.binary_join_element_wise(*parts, "\x1f", null_handling="emit_null")


_CACHE: dict[str, _Lookup] = {}


def _lookup(spec: AsofSpec) -> _Lookup:
    """The lookup of one staged table, built once per Python worker process (Spark reuses
    workers between tasks); the staging path is unique per retrieval."""
    lookup = _CACHE.get(spec.path)
    if lookup is None:
        if len(_CACHE) > 16:
            _CACHE.clear()
        n = len(spec.entity_keys)
        table = pq.read_table(spec.path, columns=[*(f"{spec.prefix}k{j}" for j in range(n)), "__ts", "__c",
                                                  f"{spec.prefix}p"])
        table = table.rename_columns([*(f"__k{j}" for j in range(n)), "__ts", "__c", "__p"])
        lookup = _CACHE[spec.path] = _Lookup(table, n)
    return lookup


def asof_partition(batches: Iterator[pa.RecordBatch], specs: list[AsofSpec], row: str, ts: str,
                   schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: each entity batch (``row``, ``ts`` in microseconds, the
    cast key columns) to the row number and one answer struct per view, typed by ``schema``."""
    lookups = [_lookup(spec) for spec in specs]
    for batch in batches:
        times = batch.column(ts)
        arrays = [batch.column(row)]
        for spec, lookup, field in zip(specs, lookups, list(schema)[1:]):
            index = lookup.find([batch.column(k) for k in spec.entity_keys], times, spec.ttl_us)
            if len(lookup.payload):
                chosen = lookup.payload.take(index).combine_chunks()
            else:
                chosen = pa.nulls(len(index), lookup.payload.type)
            # flatten(): the children with the struct's own nulls (no row found) applied.
            children = dict(zip([f.name for f in chosen.type], chosen.flatten()))
            values = [children[name] for name, _ in spec.outputs]
            answer = pa.StructArray.from_arrays(values, names=[out for _, out in spec.outputs])
            arrays.append(answer.cast(field.type))
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
