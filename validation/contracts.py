"""Schema contracts for raw tables: the first gate every snapshot passes."""

from __future__ import annotations

from typing import Mapping

INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                 "USMALLINT", "UINTEGER", "UBIGINT"}
NUMERIC_TYPES = INTEGER_TYPES | {"FLOAT", "DOUBLE", "REAL"}

#: Which DuckDB column types satisfy each declared type family. A timestamp must be
#: timezone-aware (TIMESTAMP WITH TIME ZONE) or an ISO 8601 string with an offset that
#: the table's normalisation casts; a naive TIMESTAMP is ambiguous and refused.
ACCEPTED = {
    "VARCHAR": {"VARCHAR"},
    "BIGINT": INTEGER_TYPES,
    "DOUBLE": NUMERIC_TYPES,
    "TIMESTAMP": {"TIMESTAMP WITH TIME ZONE", "VARCHAR"},
}


class ContractViolation(Exception):
    """Data broke its contract; the message names the table, the file and the column."""


def _family(duckdb_type: str) -> str:
    return "DOUBLE" if duckdb_type.startswith("DECIMAL") else duckdb_type


def check_schema(table: str, origin: str, actual: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Raise :class:`ContractViolation` listing every missing or mistyped column."""
    problems = []
    for column, family in expected.items():
        if column not in actual:
            close = [c for c in actual if c.lower() == column.lower()]
            hint = f" (found {close[0]!r})" if close else ""
            problems.append(f"column {column!r} is missing{hint}")
        elif _family(actual[column]) not in ACCEPTED[family]:
            problems.append(
                f"column {column!r} has type {actual[column]}, expected {family}"
                + (" (timezone-aware)" if family == "TIMESTAMP" else "")
            )
    if problems:
        raise ContractViolation(f"raw table {table!r} from {origin}: " + "; ".join(problems))
