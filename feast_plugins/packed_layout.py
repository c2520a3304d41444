"""The packed SQLite online store's layout, in one place: its tables, its entity keys, the
bytes of its values and its limits. The store (``packed_sqlite_store.py``: Feast's
``online_write_batch``/``online_read``, the materialization engine) and the server's
direct read (``packed_reader.py``) both go through this module; no other module spells
the SQL, the bytes or the limits.

**Tables.** One per feature view, named ``<project>_<view>_packed`` (:func:`table_name`;
never a stock store's name, so the two cannot be confused in one file), one row per
entity (:data:`PackedRow`): ``entity_key`` (primary key), ``event_ts`` and
``created_ts`` (integer microseconds since the epoch, UTC; Feast 0.67's stock store keeps
whole seconds, so only a sub-second event time reads back finer here) and ``packed``. A
batch is written by :func:`upsert`, one ``executemany`` in one transaction (a reader sees
all of a batch or none of it; for a repeated key the last row wins, as the stock store's
upsert does per feature).

**Entity keys.** Feast's own serialization (``serialize_entity_key``, the project's
``entity_key_serialization_version``). :func:`encode_entity_keys` writes version 3 for
many string or int64 keys at once; anything else goes through Feast
(:func:`serialize_entity_keys`). ``tests/feast_plugins/test_packed_layout.py`` compares
the two.

**Values.** ``packed`` is one serialized Feast ``Value`` whose ``map_val`` holds every
feature's ``Value`` by name (:func:`pack`, :func:`unpack`), so every type Feast has
round-trips exactly. Materialization writes the same bytes straight from Arrow in
protobuf's wire format (:func:`arrow_rows`), with Feast's conversion rules: null and NaN
-> an empty ``Value``; ``float``/``int``/``str``/``bool`` into the view type's field.

**The file.** :func:`configure` puts a writer's connection in WAL mode with ``synchronous
= NORMAL`` (the store's settings); :func:`copy_database` copies a store consistently.

**Limits.** A statement binds at most :data:`KEYS_PER_STATEMENT` keys, under SQLite's
:data:`SQLITE_MAX_PARAMETERS`; :func:`read_rows` reads more in several statements.

Importing this module does not import Feast (the server imports it at start-up; Feast is
imported on first use).
"""

from __future__ import annotations

import functools
import os
import sqlite3
import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Sequence

from core.duck import sql_ident

#: SQLite's default limit on the parameters of one statement (SQLITE_MAX_VARIABLE_NUMBER).
SQLITE_MAX_PARAMETERS = 32_766
#: Entity keys one statement binds (one parameter each), under SQLITE_MAX_PARAMETERS.
KEYS_PER_STATEMENT = 30_000

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


#: One row of a view's table, the view's values for one entity: ``(entity_key, event_ts,
#: created_ts, packed)``: Feast's serialization of the entity key; the event and created
#: timestamps in microseconds since the epoch, UTC (created: or None); one serialized
#: ``Value`` holding every feature (:func:`pack`). Plain tuples: materialization builds
#: one per row.
PackedRow = tuple[bytes, int, Optional[int], bytes]
#: What a read finds for one key: ``(event_ts, packed)``. Plain tuples: the server's read
#: builds one per row found.
Stored = tuple[int, bytes]


def table_name(project: str, view_name: str) -> str:
    return f"{project}_{view_name}_packed"


def create_table(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {sql_ident(table)} ("
        "entity_key BLOB PRIMARY KEY, event_ts INTEGER NOT NULL, created_ts INTEGER, "
        "packed BLOB NOT NULL) WITHOUT ROWID")


def drop_table(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {sql_ident(table)}")


def upsert(conn: sqlite3.Connection, table: str, rows: Sequence[PackedRow]) -> None:
    """Write ``rows`` in one transaction (readers see all of them or none); a key's last row wins."""
    with conn:
        conn.executemany(
            f"INSERT INTO {sql_ident(table)} (entity_key, event_ts, created_ts, packed) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(entity_key) DO UPDATE SET "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts, packed = excluded.packed",
            rows)


# -- the file: journal, durability, copies -----------------------------------------------

#: The files SQLite keeps next to a database in WAL mode (the log and its shared index).
SIDE_FILES = ("-wal", "-shm")
#: The WAL file is truncated to this size after a checkpoint (a materialization's big
#: transaction otherwise leaves a log as large as itself on disk).
JOURNAL_SIZE_LIMIT = 64 << 20


def configure(conn: sqlite3.Connection, journal_mode: str, synchronous: str) -> None:
    """Set a writer connection's journal mode (``WAL`` is stored in the file: every later
    connection, the server's read-only ones too, reads it through the log) and its
    ``synchronous`` level. Run before the connection's first transaction."""
    modes = {"WAL", "DELETE", "TRUNCATE", "PERSIST"}
    levels = {"OFF", "NORMAL", "FULL", "EXTRA"}
    if journal_mode.upper() not in modes or synchronous.upper() not in levels:
        raise ValueError(f"packed store: journal_mode {journal_mode!r} (one of {sorted(modes)}), "
                         f"synchronous {synchronous!r} (one of {sorted(levels)})")
    (mode,) = conn.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone()
    if mode.upper() != journal_mode.upper():
        raise sqlite3.OperationalError(f"packed store: journal_mode {journal_mode} was refused (the file is "
                                       f"in {mode} mode; is another process holding it?)")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")


def copy_database(source, target) -> None:
    """A consistent copy of the SQLite file ``source`` at ``target``, through SQLite's backup
    API: one committed state however busy its writers are, with the commits still in its
    ``-wal`` file (copying the file alone can miss them, and copying it during a write can
    tear it). The copy is written next to ``target`` and renamed into place; its journal mode
    is the source's. ``source`` is opened read-only: a missing file is an error."""
    from pathlib import Path

    source, target = Path(source), Path(target)
    partial = target.with_name(f".{target.name}.copying")
    for leftover in [partial, *(partial.with_name(partial.name + s) for s in (*SIDE_FILES, "-journal"))]:
        leftover.unlink(missing_ok=True)
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
            # The copied header says WAL if the source was: leave the copy checkpointed
            # and its log removed, a single self-contained file.
            dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            dst.close()
    finally:
        src.close()
    for suffix in SIDE_FILES:
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    os.replace(partial, target)


def keyed_select(table: str, keys: int, branch: Optional[int] = None) -> str:
    """``SELECT [branch,] entity_key, event_ts, packed`` of the rows of ``keys`` keys (one
    parameter each, at most :data:`KEYS_PER_STATEMENT`); ``branch`` tags each row with
    that number (to tell apart the tables of one ``UNION ALL``, :func:`union_select`)."""
    tag = "" if branch is None else f"{branch}, "
    return (f"SELECT {tag}entity_key, event_ts, packed FROM {sql_ident(table)} "
            f"WHERE entity_key IN ({','.join('?' * keys)})")


def union_select(tables: Sequence[str], keys: Sequence[int]) -> Optional[str]:
    """One statement reading ``keys[i]`` keys from ``tables[i]``, each row tagged ``i``
    (tables with 0 keys are left out); None if no table has a key."""
    branches = [keyed_select(table, n, i) for i, (table, n) in enumerate(zip(tables, keys)) if n]
    return " UNION ALL ".join(branches) if branches else None


def read_rows(conn: sqlite3.Connection, table: str, keys: Sequence[bytes]) -> dict[bytes, Stored]:
    """``{serialized entity key: Stored}`` for the keys found (repeats read once)."""
    unique = list(dict.fromkeys(keys))
    found: dict[bytes, Stored] = {}
    for start in range(0, len(unique), KEYS_PER_STATEMENT):
        chunk = unique[start:start + KEYS_PER_STATEMENT]
        for key, ts, packed in conn.execute(keyed_select(table, len(chunk)), chunk):
            found[key] = (ts, packed)
    return found


# -- entity keys ------------------------------------------------------------------------

#: Feast's ValueType numbers that version 3 writes before each value (``ValueType.STRING``,
#: ``ValueType.INT64``); the join key names are tagged STRING.
_STRING, _INT64 = 2, 4


def encode_entity_keys(columns: Sequence[tuple[str, Any, Sequence]]) -> Optional[list[bytes]]:
    """Feast's entity key serialization (version 3, ``serialize_entity_key``) of many keys at
    once, for ``(join key, Feast ValueType, values)`` columns of str (STRING) or int (INT64)
    values; None for anything else (nulls, other types): then Feast serializes
    (:func:`serialize_entity_keys`)."""
    if not columns:
        return None
    head = [struct.pack("<I", len(columns))]
    parts = []
    pack_q = struct.Struct("<q").pack
    for name, value_type, values in sorted(columns, key=lambda c: c[0]):
        encoded_name = name.encode("utf8")
        head += [struct.pack("<I", _STRING), struct.pack("<I", len(encoded_name)), encoded_name]
        if value_type.name == "STRING" and all(type(v) is str for v in values):
            encoded = [v.encode("utf8") for v in values]
            tag = struct.pack("<I", _STRING)
        elif value_type.name == "INT64" and all(type(v) is int for v in values):
            encoded = [pack_q(v) for v in values]
            tag = struct.pack("<I", _INT64)
        else:
            return None
        parts.append([tag + struct.pack("<I", len(b)) + b for b in encoded])
    prefix = b"".join(head)
    return [prefix + b"".join(p) for p in zip(*parts)]


def serialize_entity_keys(columns: Sequence[tuple[str, Any, Sequence]], version: int) -> list[bytes]:
    """The keys of ``(join key, Feast ValueType, values)`` columns as Feast serializes them:
    its own conversion of each value to a ``Value``, then ``serialize_entity_key``."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    names = [name for name, _, _ in columns]
    converted = [python_values_to_proto_values(values, value_type) for _, value_type, values in columns]
    return [serialize_key(EntityKey(join_keys=names, entity_values=list(values)), version)
            for values in zip(*converted)]


def placeholder_key(version: int) -> bytes:
    """The key Feast stores a view without entities under (its placeholder join key
    ``__dummy_id`` with the value ``""``): every request reads that one row."""
    from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL
    from feast.value_type import ValueType

    [key] = serialize_entity_keys([(DUMMY_ENTITY_ID, ValueType.STRING, [DUMMY_ENTITY_VAL])], version)
    return key


def serialize_key(entity_key, version: int) -> bytes:
    """Feast's serialization of one ``EntityKey`` proto."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    return serialize_entity_key(entity_key, entity_key_serialization_version=version)


# -- values -----------------------------------------------------------------------------

@functools.cache
def _value_class():
    """Feast's ``Value`` message class (imported on first need: importing Feast takes seconds)."""
    from feast.protos.feast.types.Value_pb2 import Value

    return Value


def to_micros(ts: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is UTC (as Feast treats it)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return (ts - EPOCH) // _US


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def pack(values: dict) -> bytes:
    """All feature values (``{feature: Value}``) of one entity in one view: one serialized
    ``Value`` (``map_val``)."""
    packed = _value_class()()
    target = packed.map_val.val
    for name, value in values.items():
        target[name].CopyFrom(value)
    if not values:
        packed.map_val.SetInParent()
    return packed.SerializeToString()


def unpack(blob: bytes) -> dict:
    """``{feature: Value}`` of a packed row."""
    value = _value_class()()
    value.ParseFromString(blob)
    return dict(value.map_val.val)


#: ``Value`` fields whose Python value is the field itself (as Feast's
#: ``feast_value_type_to_python_type`` returns it).
SCALAR_FIELDS = frozenset({"double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val", "bytes_val"})


def python_value(value, value_type):
    """Feast's ``feast_value_type_to_python_type``, without its checks for the scalar fields."""
    field = value.WhichOneof("val")
    if field is None:
        return None
    if field in SCALAR_FIELDS:
        return getattr(value, field)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value, value_type)


def decode(packed: bytes, features: Sequence[tuple[str, Any]]) -> Optional[tuple]:
    """The Python values of ``(feature, Feast ValueType)`` in that order (None for a
    feature without a value); None for a row without any value (as Feast reads it: not found)."""
    values = unpack(packed)
    if not values:
        return None
    return tuple(None if (v := values.get(f)) is None else python_value(v, t) for f, t in features)


# Protocol Buffers wire format (https://protobuf.dev/programming-guides/encoding/) of
# ``Value{map_val: Map{val: map<string, Value>}}``, written directly: building a message per
# cell costs more than the rest of materialization. Field numbers from Feast's Value.proto
# (``tests/feast_plugins/test_packed_layout.py`` checks them).
_MAP_TAG = b"\xa2\x01"  # Value.map_val = 20, length-delimited
_MASK64 = (1 << 64) - 1

#: Feature value types (Feast ``ValueType`` names) :func:`arrow_rows` packs straight from Arrow.
ARROW_TYPES = frozenset({"DOUBLE", "FLOAT", "INT64", "INT32", "STRING", "BOOL"})


def packs_from_arrow(value_types) -> bool:
    """Whether :func:`arrow_rows` can pack features of these Feast ``ValueType`` s."""
    return all(t.name in ARROW_TYPES for t in value_types)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _wire_value(type_name: str):
    """The bytes of a non-null ``Value`` of this type, as protobuf serializes it."""
    # (DOUBLE and FLOAT columns never get here: _wire_entries packs them vectorised.)
    if type_name == "INT64":
        return lambda v: b"\x20" + _varint(int(v) & _MASK64)  # int64_val = 4, varint
    if type_name == "INT32":
        return lambda v: b"\x18" + _varint(int(v) & _MASK64)  # int32_val = 3 (negatives: 10 bytes)
    if type_name == "STRING":
        def string(v):
            encoded = str(v).encode("utf8")
            return b"\x12" + _varint(len(encoded)) + encoded  # string_val = 2
        return string
    if type_name == "BOOL":
        return lambda v: b"\x38\x01" if v else b"\x38\x00"  # bool_val = 7
    raise KeyError(type_name)


def _wire_entries(name: str, type_name: str, column) -> list[bytes]:
    """One map entry (``Map.val = 1``: key = 1, value = 2) per row of an Arrow column, around
    its :func:`wire_values` bytes; null and NaN -> an empty Value."""
    key = name.encode("utf8")
    key_part = b"\x0a" + _varint(len(key)) + key
    seen: dict = {b"": b"\x0a" + _varint(len(key_part) + 2) + key_part + b"\x12\x00"}

    def entry(encoded: bytes) -> bytes:
        body = key_part + b"\x12" + _varint(len(encoded)) + encoded
        return b"\x0a" + _varint(len(body)) + body

    values = wire_values(type_name, column)
    if type_name in ("DOUBLE", "FLOAT"):  # fixed width: one head for every non-null value
        width = 8 if type_name == "DOUBLE" else 4
        head = entry(b"\x00" * (1 + width))[:-(1 + width)]
        null = seen[b""]
        return [head + v if v else null for v in values]
    out = []
    for v in values:
        cached = seen.get(v)
        if cached is None:
            cached = seen[v] = entry(v)
        out.append(cached)
    return out


def wire_values(type_name: str, column) -> list[bytes]:
    """Each row of an Arrow column as one serialized ``Value`` of that Feast type (what
    ``Value.SerializeToString`` gives for Feast's conversion of it: null and NaN -> an empty
    ``Value``, ``b""``): the bytes a stock Redis store writes per feature."""
    if type_name in ("DOUBLE", "FLOAT"):
        import numpy as np

        width, tag, dtype = (8, b"\x29", "<f8") if type_name == "DOUBLE" else (4, b"\x35", "<f4")
        values = column.to_numpy(zero_copy_only=False).astype("<f8")  # null -> NaN
        missing = np.isnan(values).tolist()
        raw = values.astype(dtype).tobytes()
        return [b"" if missing[i] else tag + raw[i * width:(i + 1) * width] for i in range(len(missing))]
    encode = _wire_value(type_name)
    seen: dict = {}
    out = []
    for v in column.to_pylist():
        if v is None or v != v:
            out.append(b"")
        else:
            cached = seen.get(v)
            if cached is None:
                cached = seen[v] = encode(v)
            out.append(cached)
    return out


def timestamp_bytes(micros: int) -> bytes:
    """A serialized ``google.protobuf.Timestamp`` of an instant in microseconds since the
    epoch (``Timestamp.FromDatetime`` then ``SerializeToString``: seconds = 1 and nanos = 2,
    each left out when 0)."""
    seconds, us = divmod(micros, 1_000_000)
    out = b""
    if seconds:
        out += b"\x08" + _varint(seconds & _MASK64)
    if us:
        out += b"\x10" + _varint(us * 1000)
    return out


def arrow_micros(column) -> list:
    """An Arrow timestamp column (or text castable to one) as microseconds since the epoch, UTC.

    Text is what Feast's pull hands on for a source DuckDB reads as ``TIMESTAMPTZ_NS``
    (nanosecond, timezone-aware: pandas' default): ISO strings with their offset,
    ``'2013-01-01 05:00:00.000000000Z'``. They are parsed with the offset (text without
    one is UTC, as Feast treats naive timestamps); sub-microsecond digits are dropped (the
    store keeps microseconds)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            column = pc.cast(column, pa.timestamp("ns", tz="UTC"))  # Arrow applies each value's offset
        except pa.ArrowInvalid:  # text without offsets: UTC
            column = pc.cast(column, pa.timestamp("ns"))
    elif not pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us"))
    return pc.cast(pc.cast(column, pa.timestamp("us", tz=column.type.tz), safe=False), pa.int64()).to_pylist()


def arrow_rows(keys: Sequence[bytes], data, timestamp_field: str, created_field: Optional[str],
               features: Sequence[tuple[str, Any]]) -> list[PackedRow]:
    """The rows of an Arrow table (``keys``: each row's serialized entity key), each row's
    ``(feature, Feast ValueType)`` values packed as :func:`pack` packs Feast's conversion of
    them (types: :func:`packs_from_arrow`), sorted by key: SQLite's B-tree writes stay
    sequential, and the sort is stable, so for a repeated key the last row still wins."""
    event_us = arrow_micros(data.column(timestamp_field))
    created_us = arrow_micros(data.column(created_field)) if created_field else [None] * data.num_rows
    entries = [_wire_entries(name, value_type.name, data.column(name)) for name, value_type in features]
    rows = []
    append = rows.append
    for i, cells in enumerate(zip(*entries)):
        body = b"".join(cells)
        append((keys[i], event_us[i], created_us[i], _MAP_TAG + _varint(len(body)) + body))
    rows.sort(key=lambda row: row[0])
    return rows


# -- windowed views: one state per key (``windowed_online.py``) ----------------------------
# A windowed view's table has the columns of a packed one: ``event_ts`` holds the key's
# newest ``known_at`` and ``packed`` its state's bytes (``windowed_online.Layout.encode``),
# so the server's one ``SELECT`` (:func:`union_select`) reads both kinds.

def windowed_table_name(project: str, view_name: str) -> str:
    return f"{project}_{view_name}_windowed"


def update_states(conn: sqlite3.Connection, changes: Sequence[tuple[str, Optional[Sequence[bytes]], Any]]) -> None:
    """Read-modify-write of windowed states in ONE transaction (``BEGIN IMMEDIATE``: no other
    writer between the read and the write; readers see all of it or none). ``changes``: per
    table, its keys (None: every stored key and the ones ``merge`` names in ``merge.keys``)
    and ``merge(key, stored bytes or None) -> (event_ts, bytes)``, or None to delete the key."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, keys, merge in changes:
            if keys is None:
                stored = {key: packed for key, _ts, packed in
                          conn.execute(f"SELECT entity_key, event_ts, packed FROM {sql_ident(table)}")}
                keys = list(dict.fromkeys([*stored, *merge.keys]))
            else:
                stored = {key: packed for key, (_ts, packed) in read_rows(conn, table, keys).items()}
            rows, gone = [], []
            for key in dict.fromkeys(keys):
                merged = merge(key, stored.get(key))
                if merged is None:
                    gone.append((key,))
                else:
                    rows.append((key, *merged))
            conn.executemany(f"DELETE FROM {sql_ident(table)} WHERE entity_key = ?", gone)
            conn.executemany(
                f"INSERT INTO {sql_ident(table)} (entity_key, event_ts, created_ts, packed) "
                "VALUES (?, ?, NULL, ?) ON CONFLICT(entity_key) DO UPDATE SET "
                "event_ts = excluded.event_ts, packed = excluded.packed",
                sorted(rows))
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
