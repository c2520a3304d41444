"""DuckDB connections configured the same way everywhere (UTC session time zone)."""

from __future__ import annotations

from pathlib import Path

import duckdb


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def sql_ident(name: str) -> str:
    """Quote an identifier (a table or column name) for SQL (DuckDB and SQLite alike)."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_str(value: str | Path) -> str:
    """Quote a string (e.g. a file path) as a SQL literal."""
    return "'" + str(value).replace("'", "''") + "'"


def copy_to_parquet(con: duckdb.DuckDBPyConnection, relation_sql: str, path: Path) -> None:
    con.execute(f"COPY ({relation_sql}) TO {sql_str(path)} (FORMAT parquet, COMPRESSION zstd)")
