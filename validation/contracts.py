"""Data contracts: what a table must look like, checked with pandera.

A :class:`TableContract` names each column's :class:`ColumnRule` (storage type, nulls,
range, allowed values, timestamp bounds, drift tracking) and the table's key. The use case
declares its contracts (``feature_repo/expectations.py``); the types of the feature
source tables are derived from the Feast feature views (``validation.feast_contracts``),
so the contract and the served schema cannot drift apart.

:func:`validate_frame` turns a contract into a pandera ``DataFrameSchema``, runs it lazily
(every check, not just the first) and turns pandera's failure cases into
:class:`~validation.report.Failure` records: check, column, rows failed, examples.

:func:`check_schema` and :func:`timestamp_failures` run *before* pandera: the raw tables'
column types, read from DuckDB before ingest normalises them (normalising a mistyped column
would fail with a less helpful message), and whether every timestamp names its instant (the
normalisation would read a naive one as UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Mapping

import pandas as pd
import pyarrow as pa

from core.contracts import ColumnRule, TableContract
from validation.report import MAX_EXAMPLES, Failure

INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                 "USMALLINT", "UINTEGER", "UBIGINT"}
NUMERIC_TYPES = INTEGER_TYPES | {"FLOAT", "DOUBLE", "REAL"}

#: Which DuckDB column types satisfy each declared raw type family. A timestamp must name
#: its instant: timezone-aware at any precision (:func:`is_aware_timestamp`), or ISO 8601
#: text whose every value carries a UTC offset (:func:`timestamp_failures` reads them),
#: which the table's normalisation casts. A naive one (any precision) could be local time
#: or UTC; it is refused by :func:`timestamp_failures`, with examples.
ACCEPTED = {
    "VARCHAR": {"VARCHAR"},
    "BIGINT": INTEGER_TYPES,
    "DOUBLE": NUMERIC_TYPES,
    "TIMESTAMP": {"VARCHAR"},  # and every timezone-aware timestamp type (is_aware_timestamp)
}

#: ISO 8601 date and time with an explicit offset: ``Z``, ``+hh:mm``, ``+hhmm``, ``+hh``
#: (or a ``UTC``/``GMT`` suffix), as DuckDB casts text to TIMESTAMPTZ. Without one, DuckDB
#: reads the text in the session's zone (UTC): a silent shift for local times.
TIMESTAMP_WITH_OFFSET = (r"^\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
                         r"\s*([zZ]|[+-]\d{2}(:?\d{2})?|UTC|GMT)\s*$")

#: Storage types a :class:`ColumnRule` can require (Arrow types, as DuckDB writes them).
ARROW_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


@dataclass
class Context:
    """What checks compare against: the wall clock, the as-of instant, sibling tables."""

    now: datetime
    as_of: datetime | None = None
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)


def _family(duckdb_type: str) -> str:
    return "DOUBLE" if duckdb_type.startswith("DECIMAL") else duckdb_type


def is_aware_timestamp(duckdb_type: str) -> bool:
    """A DuckDB timestamp type holding instants, at any precision (``TIMESTAMP WITH TIME
    ZONE``, ``TIMESTAMPTZ``, ``TIMESTAMPTZ_NS`` as DuckDB reads pandas' default
    nanosecond, UTC Parquet)."""
    t = duckdb_type.upper()
    return t.startswith("TIMESTAMP") and ("WITH TIME ZONE" in t or t.startswith("TIMESTAMPTZ"))


def is_naive_timestamp(duckdb_type: str) -> bool:
    """A DuckDB timestamp type without a time zone (``TIMESTAMP``, ``TIMESTAMP_S``,
    ``TIMESTAMP_MS``, ``TIMESTAMP_NS``): wall-clock readings of an unknown zone."""
    return duckdb_type.upper().startswith("TIMESTAMP") and not is_aware_timestamp(duckdb_type)


def check_schema(table: str, origin: str, actual: Mapping[str, str], expected: Mapping[str, str]) -> list[Failure]:
    """Every missing or mistyped raw column, as failures naming the file and column. A
    naive timestamp is left to :func:`timestamp_failures`, which shows its values."""
    problems = []
    for column, family in expected.items():
        if column not in actual:
            close = [c for c in actual if c.lower() == column.lower()]
            hint = f" (found {close[0]!r})" if close else ""
            problems.append(Failure("column_present", table, column,
                                    f"column {column!r} is missing{hint} in {origin}"))
            continue
        if family == "TIMESTAMP" and (is_aware_timestamp(actual[column]) or is_naive_timestamp(actual[column])):
            continue
        if _family(actual[column]) not in ACCEPTED[family]:
            expected_text = ("a timezone-aware TIMESTAMP (any precision) or ISO 8601 text with a UTC offset"
                             if family == "TIMESTAMP" else family)
            problems.append(Failure(
                "column_type", table, column,
                f"column {column!r} has type {actual[column]}, expected {expected_text} in {origin}",
            ))
    return problems


def timestamp_failures(con, relation: str, table: str, origin: str, column: str, duckdb_type: str) -> list[Failure]:
    """A raw timestamp column must say which instant each value is: refuse a naive
    timestamp type, and text values without a UTC offset (:data:`TIMESTAMP_WITH_OFFSET`),
    naming the file and column with the first offending rows (their position in the file)
    and values. ``con`` is a DuckDB connection where ``relation`` reads the raw table."""
    import pyarrow.compute as pc

    from core.duck import sql_ident

    naive = is_naive_timestamp(duckdb_type)
    if not naive and duckdb_type.upper() != "VARCHAR":
        return []  # timezone-aware, or a type column_type already refused
    values = con.sql(f"SELECT {sql_ident(column)} AS v FROM {relation}").to_arrow_table().column("v")
    present = pc.is_valid(values)
    if naive:
        bad = present
    else:
        bad = pc.and_(present, pc.invert(pc.match_substring_regex(values, TIMESTAMP_WITH_OFFSET)))
    count = pc.sum(bad).as_py() or 0
    if not count:
        return []
    rows = pc.indices_nonzero(bad).slice(0, 3).to_pylist()
    examples = tuple({"row": r, column: str(values[r].as_py())} for r in rows)
    if naive:
        message = (f"column {column!r} in {origin} holds timestamps without a time zone ({duckdb_type}): each "
                   "could be local time or UTC. Store instants: timezone-aware timestamps (e.g. pandas "
                   "`.dt.tz_localize('America/New_York')` on local times), or ISO 8601 text with a UTC offset "
                   "('2013-01-01T06:00:00Z', '2013-01-01T01:00:00-05:00')")
    else:
        total = pc.sum(present).as_py()
        message = (f"column {column!r} in {origin}: {count:,} of {total:,} text timestamps carry no UTC "
                   "offset, so which instant each means is unknown (read as UTC, a local time would be "
                   "silently shifted). Write each with its offset ('2013-01-01T06:00:00Z', "
                   "'2013-01-01T01:00:00-05:00') or store timezone-aware timestamps")
    return [Failure("naive_timestamp", table, column, message, count, examples)]


def read_table(path: Path) -> pd.DataFrame:
    """A Parquet table with its stored (Arrow) types kept: int columns with nulls stay
    int, timestamps keep their time zone, so the type checks see what Feast will read."""
    return pd.read_parquet(path, dtype_backend="pyarrow")


def _schema(contract: TableContract, ctx: Context):
    import pandera.pandas as pda

    columns = {}
    for column, rule in contract.columns.items():
        checks = []
        if rule.min is not None or rule.max is not None:
            lo, hi = rule.min, rule.max

            def within(s, lo=lo, hi=hi):
                ok = pd.Series(True, index=s.index)
                if lo is not None:
                    ok &= s >= lo
                if hi is not None:
                    ok &= s <= hi
                return ok.fillna(False).astype(bool)

            checks.append(pda.Check(within, name="range"))
        allowed = rule.allowed
        if rule.allowed_from is not None:
            ref_table, ref_column = rule.allowed_from
            if ref_table in ctx.tables:
                allowed = tuple(ctx.tables[ref_table][ref_column].dropna().astype(str).unique())
        if allowed is not None:
            values = {str(v) for v in allowed}
            checks.append(pda.Check(lambda s, values=values: s.astype(str).isin(values).astype(bool),
                                    name="allowed_values"))
        if rule.not_after is not None:
            limit = {"now": ctx.now, "as_of": ctx.as_of}[rule.not_after]
            if limit is not None:  # no as-of instant known: nothing to compare with
                checks.append(pda.Check(lambda s, t=pd.Timestamp(limit): (s <= t).fillna(False).astype(bool),
                                        name=f"not_after_{rule.not_after}"))
        if rule.not_before is not None:
            checks.append(pda.Check(lambda s, t=pd.Timestamp(rule.not_before): (s >= t).fillna(False).astype(bool),
                                    name="not_before"))
        dtype = pd.ArrowDtype(ARROW_TYPES[rule.dtype]) if rule.dtype else None
        columns[column] = pda.Column(dtype, checks=checks, nullable=rule.nullable, required=True)
    return pda.DataFrameSchema(columns, unique=list(contract.key) or None, coerce=False)


def _check_name(raw: str) -> str:
    if raw.startswith("dtype("):
        return "dtype"
    return {"column_in_dataframe": "column_present", "multiple_fields_uniqueness": "unique_key",
            "field_uniqueness": "unique_key"}.get(raw, raw)


def validate_frame(contract: TableContract, frame: pd.DataFrame, ctx: Context) -> tuple[list[Failure], list[Failure]]:
    """Run the contract on ``frame``; return (failures, tolerated) as report records."""
    from pandera.errors import SchemaErrors

    table = contract.name
    if len(frame) < contract.min_rows:
        return [Failure("non_empty", table, None,
                        f"{len(frame):,} rows; the contract needs at least {contract.min_rows:,}",
                        failed_rows=None)], []
    frame = frame.reset_index(drop=True)
    try:
        _schema(contract, ctx).validate(frame, lazy=True)
        return [], []
    except SchemaErrors as e:
        cases = e.failure_cases
    failures, tolerated = [], []
    key = ", ".join(contract.key)
    cases = cases.assign(check_name=cases["check"].astype(str).map(_check_name))
    for check_name, group in cases.groupby("check_name", sort=False):
        if check_name == "unique_key":
            index = group["index"].dropna()
            failures.append(Failure("unique_key", table, key, f"key ({key}) is not unique",
                                    int(index.nunique()), _examples(frame, index, None, contract.key)))
            continue
        for column, rows in group.groupby("column", sort=False, dropna=False):
            column = None if pd.isna(column) else str(column)
            if check_name == "column_present":
                column = str(rows["failure_case"].iloc[0])
                failures.append(Failure("column_present", table, column, f"column {column!r} is missing"))
                continue
            if check_name == "dtype":
                actual = str(rows["failure_case"].iloc[0])
                failures.append(Failure("dtype", table, column,
                                        f"stored as {actual}, declared {contract.columns[column].dtype}"))
                continue
            indexed = rows["index"].notna()
            n = int(rows.loc[indexed, "index"].nunique()) if indexed.any() else len(frame)
            examples = _examples(frame, rows.loc[indexed, "index"], column, contract.key) if indexed.any() \
                else tuple(rows["failure_case"].head(MAX_EXAMPLES).tolist())
            rule = contract.columns.get(column) if column else None
            message = _error_text(check_name, rule, ctx)
            record = Failure(check_name, table, column, message, n, examples)
            value_check = check_name in ("range", "allowed_values")
            if value_check and rule is not None and n <= rule.tolerance * len(frame):
                tolerated.append(replace(record, message=record.message
                                         + f" (within the tolerance of {rule.tolerance:.2%} of rows)"))
            else:
                failures.append(record)
    return failures, tolerated


def _examples(frame: pd.DataFrame, index: pd.Series, column: str | None, key: tuple[str, ...]) -> tuple:
    """A few failing rows: their position in the file, the bad value, and the row's key."""
    rows = sorted(index.astype(int).unique().tolist())[:MAX_EXAMPLES]
    columns = [c for c in (*key, column) if c and c in frame.columns]
    columns = list(dict.fromkeys(columns))
    return tuple({"row": r, **frame.loc[r, columns].to_dict()} for r in rows)


def _error_text(check: str, rule: ColumnRule | None, ctx: Context) -> str:
    if check == "not_nullable":
        return "null values in a column that must not have any"
    if check == "range" and rule is not None:
        return f"values outside [{'' if rule.min is None else rule.min}, {'' if rule.max is None else rule.max}]"
    if check == "allowed_values" and rule is not None:
        source = f"{rule.allowed_from[0]}.{rule.allowed_from[1]}" if rule.allowed_from else repr(rule.allowed)
        return f"values not in {source}"
    if check == "not_after_now":
        return f"timestamps in the future (after the wall clock, {ctx.now.isoformat()})"
    if check == "not_after_as_of":
        return f"timestamps after the as-of instant {ctx.as_of.isoformat() if ctx.as_of else ''}"
    if check == "not_before" and rule is not None:
        return f"timestamps before {rule.not_before}"
    return f"check {check} failed"
