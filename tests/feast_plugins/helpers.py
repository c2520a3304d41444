"""Helpers shared by the tests of the Feast plugins (and of the stages over them)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import copy_data_dir


def empty_copy(data_dir: Path, target: Path) -> Path:
    """A copy of ``data_dir`` (see ``copy_data_dir``) without its registries and online
    store: after ``apply``, whatever is online was written by the test."""
    copy_data_dir(data_dir, target)
    for name in ("online_store.db", "registry.db", "registry.redis.db"):
        (target / name).unlink(missing_ok=True)
    return target


def packed_rows(data_dir: Path, view: str, project: str = "flights") -> list[tuple]:
    """Every row of ``view``'s packed table in ``data_dir``'s online store, by key."""
    import sqlite3

    from feast_plugins.packed_layout import table_name

    with sqlite3.connect(data_dir / "online_store.db") as conn:
        return conn.execute(f'SELECT entity_key, event_ts, created_ts, packed FROM "{table_name(project, view)}" '
                            "ORDER BY entity_key").fetchall()
