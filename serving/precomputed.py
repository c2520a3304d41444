"""Static inference: predictions batch-scored ahead of time, served by lookup.

A batch job (e.g. the nightly scoring of tomorrow's scheduled events, ``replay/``) writes
each entity's probability into a SQLite table under ``DATA_DIR/predictions/``; the
server's ``POST /precomputed`` (``serving/routes/predictions.py``) takes the same body as
``/predict`` and answers each entity from that table (``probability`` null when nothing
was precomputed for it). No features are read and no model runs at request time: that is
the point of static inference, and its cost.

An entity's key is its non-nullable request fields (the same fields monitoring joins
labels on), timestamps as UTC ISO text, so the writer and the server agree on it.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from core.usecase import RequestField

TABLE = "precomputed"


class Precomputed(NamedTuple):
    """One entity's precomputed answer (both None: nothing was precomputed for it)."""

    probability: float | None
    model_version: str | None


NOT_PRECOMPUTED = Precomputed(None, None)


def lookup_path(data_dir: Path) -> Path:
    return Path(data_dir) / "predictions" / "precomputed.sqlite"


def entity_key(entity: dict, fields: Sequence[RequestField]) -> str:
    """The lookup key of one entity (a parsed request, or a row of scheduled events)."""
    values = []
    for f in fields:
        if f.nullable:
            continue
        value = entity[f.name]
        if f.kind == "timestamp":
            value = value.astimezone(timezone.utc).isoformat() if isinstance(value, datetime) else \
                datetime.fromisoformat(str(value)).astimezone(timezone.utc).isoformat()
        elif f.kind == "int":
            value = int(value)
        values.append(value)
    return json.dumps(values, separators=(",", ":"))


def write_predictions(path: Path, rows: Iterable[tuple[str, float, str]]) -> int:
    """Insert or replace ``(key, probability, model_version)`` rows in one transaction;
    a reader sees all of them or none. Returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=5)
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} "
                    "(key TEXT PRIMARY KEY, probability REAL NOT NULL, model_version TEXT NOT NULL)")
        with con:
            cursor = con.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?)", list(rows))
        return cursor.rowcount
    finally:
        con.close()


def read_predictions(path: Path, keys: Sequence[str]) -> list[Precomputed]:
    """The answer per key, in order (:data:`NOT_PRECOMPUTED` where there is none)."""
    if not path.is_file() or not keys:
        return [NOT_PRECOMPUTED] * len(keys)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        found = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update((k, Precomputed(p, v)) for k, p, v in con.execute(
                f"SELECT key, probability, model_version FROM {TABLE} WHERE key IN ({marks})", chunk))
    except sqlite3.OperationalError:  # the table is not there yet
        found = {}
    finally:
        con.close()
    return [found.get(k, NOT_PRECOMPUTED) for k in keys]
