"""The packed store's layout: its version-3 key encoding is Feast's serialization, its
hand-written wire format uses Value.proto's field numbers, values round-trip, reads past
the per-statement key limit answer the same, and no other module spells the layout."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from feast_plugins import packed_layout

ROOT = Path(__file__).resolve().parents[2]


def test_fast_key_encoding_is_feasts_serialization():
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType

    cases = [
        [("origin", ValueType.STRING, ["JFK", "", "é€", "x" * 300])],
        [("n", ValueType.INT64, [0, -1, 2**63 - 1, -2**63])],
        [("origin", ValueType.STRING, ["JFK", "EWR"]), ("dest", ValueType.STRING, ["LAX", "SFO"]),
         ("n", ValueType.INT64, [5, -7])],
    ]
    for columns in cases:
        fast = packed_layout.encode_entity_keys(columns)
        assert fast == packed_layout.serialize_entity_keys(columns, 3)
        names = [name for name, _, _ in columns]
        for i, key in enumerate(fast):
            values = [Value(string_val=v) if t == ValueType.STRING else Value(int64_val=v) for _, t, vs in columns
                      for v in [vs[i]]]
            assert key == packed_layout.serialize_key(EntityKey(join_keys=names, entity_values=values), 3)
    # Anything else is left to Feast.
    assert packed_layout.encode_entity_keys([("origin", ValueType.STRING, ["JFK", None])]) is None
    assert packed_layout.encode_entity_keys([("n", ValueType.INT64, [1, True])]) is None
    assert packed_layout.encode_entity_keys([("x", ValueType.DOUBLE, [1.5])]) is None
    assert packed_layout.encode_entity_keys([]) is None


def test_wire_format_tags_are_value_protos_field_numbers():
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType

    fields = Value.DESCRIPTOR.fields_by_name
    assert {name: fields[name].number for name in ("string_val", "int32_val", "int64_val", "double_val",
                                                    "float_val", "bool_val", "map_val")} == {
        "string_val": 2, "int32_val": 3, "int64_val": 4, "double_val": 5, "float_val": 6, "bool_val": 7,
        "map_val": 20}
    assert (ValueType.STRING.value, ValueType.INT64.value) == (2, 4)


def test_pack_round_trips_nulls_and_types():
    from feast.protos.feast.types.Value_pb2 import Value

    values = {"d": Value(double_val=0.1), "i": Value(int64_val=-3), "s": Value(string_val="é"), "null": Value(),
              "f": Value(float_val=1.5), "b": Value(bool_val=False)}
    assert packed_layout.unpack(packed_layout.pack(values)) == values
    assert packed_layout.unpack(packed_layout.pack({})) == {}
    ts = datetime(2013, 2, 1, 5, 6, 7, 891011, tzinfo=timezone.utc)
    assert packed_layout.from_micros(packed_layout.to_micros(ts)) == ts
    assert packed_layout.from_micros(packed_layout.to_micros(ts.replace(tzinfo=None))) == ts


def test_decode_gives_python_values_in_order_and_none_for_an_empty_row():
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType

    packed = packed_layout.pack({"a": Value(int64_val=3), "b": Value(), "c": Value(string_val="x")})
    features = [("c", ValueType.STRING), ("a", ValueType.INT64), ("b", ValueType.DOUBLE), ("gone", ValueType.INT64)]
    assert packed_layout.decode(packed, features) == ("x", 3, None, None)
    assert packed_layout.decode(packed_layout.pack({}), features) is None


def test_reads_past_the_key_limit_answer_the_same(tmp_path, monkeypatch):
    assert packed_layout.KEYS_PER_STATEMENT < packed_layout.SQLITE_MAX_PARAMETERS
    conn = sqlite3.connect(tmp_path / "store.db")
    table = packed_layout.table_name("p", "v")
    packed_layout.create_table(conn, table)
    rows = [(f"k{i}".encode(), i, None, b"packed%d" % i) for i in range(25)]
    packed_layout.upsert(conn, table, rows)
    packed_layout.upsert(conn, table, [(b"k3", 99, 100, b"newer")])  # the last write wins
    keys = [f"k{i}".encode() for i in range(30)] + [b"k1"]
    whole = packed_layout.read_rows(conn, table, keys)
    monkeypatch.setattr(packed_layout, "KEYS_PER_STATEMENT", 4)
    assert packed_layout.read_rows(conn, table, keys) == whole
    assert len(whole) == 25 and whole[b"k3"] == (99, b"newer") and whole[b"k7"] == (7, b"packed7")
    sql = packed_layout.union_select([table, "other", table], [2, 0, 1])
    assert conn.execute(sql, [b"k1", b"k2", b"k9"]).fetchall() == [
        (0, b"k1", 1, b"packed1"), (0, b"k2", 2, b"packed2"), (2, b"k9", 9, b"packed9")]
    assert packed_layout.union_select([table], [0]) is None


def test_only_the_layout_module_spells_the_layout():
    """The table naming rule, the SQL over the packed tables and the limits are written once."""
    spelled = re.compile(r"_packed\b|entity_key IN|30_000|30,000|32_766|32,766|packed BLOB|ON CONFLICT\(entity_key\)")
    offenders = []
    for package in ("feast_plugins", "pipeline", "training", "flow", "serving", "monitoring", "replay", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "packed_layout.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if spelled.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders
