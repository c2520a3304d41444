"""The in-task point-in-time lookup (:mod:`feast_plugins.spark_asof`) against a brute-force
search, without Spark: every entity row gets the newest feature row of its key at or before
its time (ties on event time to the newest created time, a missing one losing), within the
TTL, or nothing."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from feast_plugins.spark_asof import AsofSpec, _Lookup, asof_partition

KEYS = st.sampled_from(["x", "y", "z", None])
TIMES = st.integers(0, 12)
CREATED = st.one_of(st.none(), st.integers(0, 3))


def _brute(features: list[dict], key, ts, ttl):
    """(ts, created) of the row Feast picks for one entity row, or None."""
    if key is None or ts is None:
        return None
    rows = [f for f in features if f["k0"] == key and f["ts"] <= ts]
    if not rows:
        return None
    best = max(rows, key=lambda f: (f["ts"], -1 if f["c"] is None else f["c"]))
    if ttl is not None and best["ts"] < ts - ttl:
        return None
    return best["ts"], best["c"]


def _table(features: list[dict]) -> pa.Table:
    return pa.table({
        "__k0": pa.array([f["k0"] for f in features], pa.string()),
        "__ts": pa.array([f["ts"] for f in features], pa.int64()),
        "__c": pa.array([f["c"] for f in features], pa.int64()),
        "__p": pa.StructArray.from_arrays(
            [pa.array([f["ts"] for f in features], pa.int64()), pa.array([f["c"] for f in features], pa.int64())],
            names=["t", "v0"]),
    })


@settings(max_examples=100, deadline=None)
@given(features=st.lists(st.fixed_dictionaries({"k0": KEYS.filter(bool), "ts": TIMES, "c": CREATED}), max_size=12),
       entities=st.lists(st.tuples(KEYS, st.one_of(st.none(), st.integers(-2, 14))), min_size=1, max_size=12),
       ttl=st.one_of(st.none(), st.integers(0, 5)))
def test_the_lookup_picks_the_row_feast_picks(features, entities, ttl):
    lookup = _Lookup(_table(features), n_keys=1)
    index = lookup.find([pa.array([k for k, _ in entities], pa.string())],
                        pa.array([t for _, t in entities], pa.int64()), ttl)
    chosen = lookup.payload.take(index).combine_chunks() if len(lookup.payload) else None
    for i, (key, ts) in enumerate(entities):
        expected = _brute(features, key, ts, ttl)
        if expected is None:
            assert not index[i].is_valid, f"entity {key!r}@{ts}: expected no row"
        else:
            got = chosen[i].as_py()
            assert (got["t"], got["v0"]) == expected, f"entity {key!r}@{ts}: {got} != {expected}"


def test_the_partition_function_answers_each_batch_typed_by_the_schema(tmp_path):
    """Two keys (one cast from the entity side), a TTL, rows in several batches; an output
    struct per view with the row's fields (and nulls, not stale values, past the TTL or with
    no match: as the sorted window's answer, a struct of nulls)."""
    features = pa.table({"__v3k0": ["x", "x", "y"], "__v3k1": pa.array([1, 1, 2], pa.int32()),
                         "__ts": pa.array([10, 20, 10], pa.int64()), "__c": pa.array([None, None, 5], pa.int64()),
                         "__v3p": pa.StructArray.from_arrays([pa.array([10, 20, 10], pa.int64()),
                                                            pa.array([1.5, 2.5, 3.5])], names=["t", "v0"])})
    pq.write_table(features, tmp_path / "f.parquet")
    spec = AsofSpec(path=str(tmp_path / "f.parquet"), prefix="__v3", entity_keys=("a", "b"), ttl_us=15,
                    outputs=(("v0", "view__f"), ("t", "__event_timestamp__view")), column="__o0")
    schema = pa.schema([("r", pa.int64()), ("__o0", pa.struct([("view__f", pa.float64()),
                                                                ("__event_timestamp__view", pa.int64())]))])
    batches = [pa.record_batch({"r": [0, 1], "a": ["x", "x"], "b": pa.array([1, 1], pa.int32()), "ts": [15, 40]}),
               pa.record_batch({"r": [2, 3], "a": ["y", "x"], "b": pa.array([2, 2], pa.int32()), "ts": [24, 25]})]
    out = list(asof_partition(iter(batches), [spec], row="r", ts="ts", schema=schema))
    assert [b.schema for b in out] == [schema, schema]
    answers = pa.Table.from_batches(out).column("__o0").to_pylist()
    nothing = {"view__f": None, "__event_timestamp__view": None}
    assert answers == [{"view__f": 1.5, "__event_timestamp__view": 10}, nothing,
                       {"view__f": 3.5, "__event_timestamp__view": 10}, nothing]
