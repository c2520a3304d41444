"""The offline join of windowed views: for each entity row at ``t``, each aggregation over
the events of its key known in ``(t - window, t]``, in one DuckDB query, no per-row Python.

Called by :mod:`feast_plugins.asof_offline_store` for every view
:func:`feast_plugins.windows.is_windowed` recognises; the semantics are those of
:mod:`feast_plugins.windows` (its docstring), proven against a brute-force reference in
``tests/feast_plugins/test_windowed_offline.py``.

How (:func:`windowed_sql`, one part of the store's query per view): the view's events are
grouped by (key, ``known_at``) and summed cumulatively per key; ``count``, ``sum``, ``mean``
and ``share_gt`` are the difference of two ASOF JOIN lookups, at ``t`` and at ``t - window``
(exactly the events known in ``(t - window, t]``); ``last`` is one ASOF JOIN on the newest
group at or before ``t``, kept if known after ``t - window``; ``min`` and ``max`` run over
window frames (``RANGE window - 1 µs PRECEDING`` on microseconds). Each walks the sorted
rows once, whatever the window, where a range join touches every (row, event) pair.

Checked before any join (:func:`check_events_schema`): the events source must have the
view's key columns, ``known_at`` and ``event_timestamp`` as timestamps, and numeric value
columns; otherwise a :class:`WindowedSourceError` names the source and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import duckdb

from core.duck import sql_ident
from feast_plugins.windows import EVENT_TIMESTAMP, KNOWN_AT, WindowSpec, window_specs

_TIMESTAMP_TYPES = ("TIMESTAMP", "DATE")
_NUMERIC_TYPES = ("DOUBLE", "FLOAT", "REAL", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT",
                  "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT", "DECIMAL", "BOOLEAN")


class WindowedSourceError(ValueError):
    """An events source unfit for a windowed view; the message names the source and column."""


@dataclass(frozen=True)
class WindowedViewPlan:
    """What one windowed view contributes to a point-in-time join."""

    name: str
    source_name: str                         # the events source, for messages
    source_sql: str                          # a FROM item: read_parquet('...')
    join_keys: tuple[tuple[str, str], ...]   # (events column, entity column)
    specs: tuple[WindowSpec, ...]            # the requested aggregations
    outputs: tuple[str, ...]                 # output column of each spec
    created_timestamp_column: Optional[str] = None  # windows count every event: never filtered


def windowed_view_plan(feature_view, feature_refs: Sequence[str], full_feature_names: bool,
                       source_sql: Optional[str]) -> WindowedViewPlan:
    """The plan of a windowed view for the requested ``feature_refs``. ``source_sql`` is the
    ``read_parquet(...)`` of its events table, None if this store cannot read the source,
    which is refused: no other offline store computes windowed aggregations."""
    source = feature_view.batch_source
    if source_sql is None:
        raise WindowedSourceError(
            f"windowed view {feature_view.name!r}: its events source "
            f"{getattr(source, 'name', None)!r} is not a local Parquet file; windowed aggregations "
            "are computed only by feast_plugins.asof_offline_store over Parquet events")
    prefix = feature_view.projection.name_to_use()
    requested = [ref.split(":", 1)[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
    by_name = {s.name: s for s in window_specs(feature_view)}
    unknown = [r for r in requested if r not in by_name]
    if unknown:
        raise WindowedSourceError(f"windowed view {feature_view.name!r} has no aggregation named "
                                  f"{unknown}; it has {list(by_name)}")
    specs = tuple(by_name[r] for r in requested)
    base_name = feature_view.projection.name_alias or feature_view.name
    outputs = tuple(f"{base_name}__{s.name}" if full_feature_names else s.name for s in specs)
    to_source = {new: old for old, new in source.field_mapping.items()}
    declared_keys = next(iter(by_name.values())).join_keys if by_name else ()
    join_key_map = feature_view.projection.join_key_map or {k: k for k in declared_keys}
    join_keys = tuple((to_source.get(k, k), v) for k, v in join_key_map.items())
    return WindowedViewPlan(name=feature_view.name, source_name=source.name, source_sql=source_sql,
                            join_keys=join_keys, specs=specs, outputs=outputs)


def _type_ok(dtype: str, allowed: tuple[str, ...]) -> bool:
    return dtype.upper().startswith(allowed)


def check_events_schema(con: duckdb.DuckDBPyConnection, plan: WindowedViewPlan) -> None:
    """Refuse an events source without the view's key columns, ``known_at`` and
    ``event_timestamp`` as timestamps, or with a non-numeric value column, naming both."""
    try:
        schema = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {plan.source_sql}").fetchall()}
    except duckdb.Error as e:
        raise WindowedSourceError(f"events source {plan.source_name!r} of windowed view "
                                  f"{plan.name!r}: unreadable: {e}") from e
    check_columns(schema, plan.source_name, [k for k, _ in plan.join_keys],
                  [s.column for s in plan.specs])


def check_columns(schema: dict[str, str], source: str, keys: Sequence[str], values: Sequence[str]) -> None:
    """The schema rules of an events table (``{column: DuckDB type}``); raises
    :class:`WindowedSourceError` naming ``source`` and the first offending column."""
    for key in keys:
        if key not in schema:
            raise WindowedSourceError(f"events source {source!r}: no key column {key!r}; it has {list(schema)}")
    for column in (KNOWN_AT, EVENT_TIMESTAMP):
        if column not in schema:
            raise WindowedSourceError(f"events source {source!r}: no {column!r} column; it has {list(schema)}")
        if not _type_ok(schema[column], _TIMESTAMP_TYPES):
            raise WindowedSourceError(f"events source {source!r}: column {column!r} must be a timestamp, "
                                      f"not {schema[column]}")
    for column in dict.fromkeys(values):
        if column not in schema:
            raise WindowedSourceError(f"events source {source!r}: no value column {column!r}; "
                                      f"it has {list(schema)}")
        if not _type_ok(schema[column], _NUMERIC_TYPES):
            raise WindowedSourceError(f"events source {source!r}: value column {column!r} must be "
                                      f"numeric, not {schema[column]}")


def _us(expr: str) -> str:
    return f"epoch_us(CAST({expr} AS TIMESTAMPTZ))"


#: Functions computed from cumulative sums per key (subtractable); ``last`` by an ASOF
#: lookup; ``min`` and ``max`` over window frames.
_CUMULATIVE = frozenset({"count", "sum", "mean", "share_gt"})
_FRAMED = frozenset({"min", "max"})


def _measures(spec: WindowSpec, value: str) -> dict[str, str]:
    """The per-event-group measures a cumulative spec needs, ``{role: SQL aggregate}``:
    ``n`` (non-null values), ``s`` (their sum), ``g`` (those over the threshold)."""
    n = f"count({value})"
    if spec.function == "count":
        return {"n": n}
    if spec.function in ("sum", "mean"):
        return {"n": n, "s": f"coalesce(sum({value}), 0.0)"}
    return {"n": n, "g": f"count({value}) FILTER (WHERE {value} > {float(spec.threshold)!r})"}


def _framed(spec: WindowSpec, value: str, frame: str) -> str:
    return f"{spec.function}({value}) OVER {frame}"


def windowed_sql(entity_relation: str, ts_entity: str, plan: WindowedViewPlan, index: int,
                 event_timestamps: bool = False, event_timestamp_column: str = "") -> str:
    """A query giving, for each row of ``entity_relation`` (which has ``__feast_row``) in
    ``__feast_row`` order, ``__r<index>`` (the row number) and one column per spec.

    ``ts_entity`` is the SQL of the row's instant as TIMESTAMPTZ. A row with a null key
    or instant gets null for every output, ``count`` included. With ``event_timestamps``,
    ``event_timestamp_column`` is added: the newest ``known_at`` among the events inside the
    row's longest window (null if none), for training's leakage guard.

    Plan: events are grouped by (key, ``known_at``); count, sum and share run on the
    cumulative sums of those groups per key, read by one ASOF JOIN at ``t`` and one at
    ``t - window`` per window (the difference is the events known in ``(t - window, t]``,
    exact for counts; for sums as exact as the values' partial sums are representable, as
    for integers); ``last`` is one ASOF JOIN on the newest group at or before ``t`` (kept if
    known after ``t - window``), its value the greatest ``(event_timestamp, value)`` of the
    group; ``min`` and ``max`` run over window frames (``RANGE window - 1 µs PRECEDING``)."""
    keys = [src for src, _ in plan.join_keys]
    ents = [ent for _, ent in plan.join_keys]
    k_alias = [f"__k{j}" for j in range(len(keys))]
    columns = list(dict.fromkeys(s.column for s in plan.specs))
    value_of = {c: f"__c{j}" for j, c in enumerate(columns)}
    ev_where = " AND ".join([f"{sql_ident(k)} IS NOT NULL" for k in keys] + [f"{sql_ident(KNOWN_AT)} IS NOT NULL"])
    events = (f"SELECT {', '.join(f'{sql_ident(k)} AS {a}' for k, a in zip(keys, k_alias))},"
              f" {_us(sql_ident(KNOWN_AT))} AS __t, {_us(sql_ident(EVENT_TIMESTAMP))} AS __et,"
              f" {', '.join(f'CAST({sql_ident(c)} AS DOUBLE) AS {value_of[c]}' for c in columns)}"
              f" FROM {plan.source_sql} WHERE {ev_where}")
    on_keys = lambda alias: " AND ".join(f"e.__e{j} = {alias}.{a}" for j, a in enumerate(k_alias))  # noqa: E731
    ctes = [f"__ev AS MATERIALIZED ({events})"]
    joins: list[str] = []
    outputs: list[str] = []
    present = " AND ".join([f"e.__e{j} IS NOT NULL" for j in range(len(keys))] + ["e.__t IS NOT NULL"])

    # Cumulative sums: one table of groups, ASOF at t (c) and at t - window (c<w>).
    measures = {"__a": "count(*)"}      # alias -> SQL aggregate over a group
    alias_of: dict[tuple, str] = {}      # (spec column, spec threshold, role) -> alias
    for spec in plan.specs:
        if spec.function in _CUMULATIVE:
            for role, sql in _measures(spec, value_of[spec.column]).items():
                key = (spec.column, spec.threshold if role == "g" else None, role)
                if key not in alias_of:
                    alias_of[key] = f"__m{len(measures)}"
                    measures[alias_of[key]] = sql
    group_keys = ", ".join([*k_alias, "__t"])
    cum_cols = ", ".join(f"sum({m}) OVER (PARTITION BY {', '.join(k_alias)} ORDER BY __t"
                         f" ROWS UNBOUNDED PRECEDING) AS {m}" for m in measures)
    ctes.append(f"__cum AS MATERIALIZED (SELECT {group_keys}, {cum_cols} FROM (SELECT {group_keys},"
                f" {', '.join(f'{sql} AS {m}' for m, sql in measures.items())} FROM __ev GROUP BY {group_keys}))")
    joins.append(f"ASOF LEFT JOIN __cum c ON {on_keys('c')} AND e.__t >= c.__t")
    window_alias: dict[int, str] = {}
    needs_cum = {s.window_us for s in plan.specs if s.function in _CUMULATIVE}
    for us in sorted(needs_cum):
        alias = window_alias[us] = f"c{len(window_alias)}"
        joins.append(f"ASOF LEFT JOIN __cum {alias} ON {on_keys(alias)} AND e.__t - {us} >= {alias}.__t")

    def diff(spec: WindowSpec, role: str, zero: str) -> str:
        measure = alias_of[(spec.column, spec.threshold if role == "g" else None, role)]
        w = window_alias[spec.window_us]
        return f"(coalesce(c.{measure}, {zero}) - coalesce({w}.{measure}, {zero}))"

    # last: the newest group of non-null values at or before t, per column.
    last_alias: dict[str, str] = {}
    for spec in plan.specs:
        if spec.function == "last" and spec.column not in last_alias:
            alias = last_alias[spec.column] = f"l{len(last_alias)}"
            v = value_of[spec.column]
            ctes.append(f"__{alias} AS MATERIALIZED (SELECT {group_keys}, max({{'e': __et, 'v': {v}}}).v AS __v"
                        f" FROM __ev WHERE {v} IS NOT NULL GROUP BY {group_keys})")
            joins.append(f"ASOF LEFT JOIN __{alias} {alias} ON {on_keys(alias)} AND e.__t >= {alias}.__t")

    # min and max: window frames over the events and the entity rows stacked.
    framed = [(j, s) for j, s in enumerate(plan.specs) if s.function in _FRAMED]
    if framed:
        frames = {}
        for _, spec in framed:
            frames.setdefault(spec.window_us, f"__w{len(frames)}")
        stacked = (f"SELECT {', '.join(k_alias)}, __t, CAST(NULL AS BIGINT) AS __row,"
                   f" {', '.join(value_of[c] for c in columns)} FROM __ev UNION ALL BY NAME"
                   f" SELECT {', '.join(f'{sql_ident(e)} AS {a}' for e, a in zip(ents, k_alias))},"
                   f" epoch_us({ts_entity}) AS __t, __feast_row AS __row FROM {entity_relation}"
                   f" WHERE {' AND '.join(f'{sql_ident(e)} IS NOT NULL' for e in ents)} AND {ts_entity} IS NOT NULL")
        windows = ", ".join(f"{name} AS (PARTITION BY {', '.join(k_alias)} ORDER BY __t"
                            f" RANGE BETWEEN {us - 1} PRECEDING AND CURRENT ROW)" for us, name in frames.items())
        aggs = ", ".join(f"{_framed(s, value_of[s.column], frames[s.window_us])} AS __m{j}" for j, s in framed)
        ctes.append(f"__framed AS (SELECT __row, {aggs} FROM ({stacked}) u WINDOW {windows}"
                    f" QUALIFY __row IS NOT NULL)")
        joins.append("LEFT JOIN __framed f ON f.__row = e.__feast_row")

    for j, (spec, out) in enumerate(zip(plan.specs, plan.outputs)):
        f, us = spec.function, spec.window_us
        if f == "count":
            value = diff(spec, "n", "0")
        elif f == "sum":
            value = diff(spec, "s", "0.0")
        elif f == "mean":
            value = f"{diff(spec, 's', '0.0')} / nullif({diff(spec, 'n', '0')}, 0)"
        elif f == "share_gt":
            value = f"CAST({diff(spec, 'g', '0')} AS DOUBLE) / nullif({diff(spec, 'n', '0')}, 0)"
        elif f == "last":
            alias = last_alias[spec.column]
            value = f"CASE WHEN {alias}.__t > e.__t - {us} THEN {alias}.__v END"
        else:
            value = f"f.__m{j}"
        cast = "BIGINT" if f == "count" else "DOUBLE"
        outputs.append(f"CASE WHEN {present} THEN CAST({value} AS {cast}) END AS {sql_ident(out)}")
    if event_timestamps:
        longest = max(s.window_us for s in plan.specs)
        outputs.append(f"CASE WHEN c.__t > e.__t - {longest} THEN make_timestamp(c.__t) AT TIME ZONE 'UTC' END"
                       f" AS {sql_ident(event_timestamp_column)}")
    entity = (f"SELECT __feast_row, {', '.join(f'{sql_ident(e)} AS __e{j}' for j, e in enumerate(ents))},"
              f" epoch_us({ts_entity}) AS __t FROM {entity_relation}")
    return (f"WITH {', '.join(ctes)}\n"
            f"SELECT e.__feast_row AS __r{index}, {', '.join(outputs)}\n"
            f"  FROM ({entity}) e\n  " + "\n  ".join(joins) + "\n  ORDER BY e.__feast_row")
