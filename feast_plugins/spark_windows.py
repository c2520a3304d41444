"""The offline join of windowed views on Spark: for each entity row at ``t``, each
aggregation over the events of its key known in ``(t - window, t]``, as the DuckDB store
computes it (:mod:`feast_plugins.windowed_offline`; the semantics: :mod:`feast_plugins.windows`).

Called by :class:`feast_plugins.spark_offline_store.SparkPitRetrievalJob` for every view
:func:`feast_plugins.windows.is_windowed` recognises, over its events ``SparkSource``.

How (one Spark plan per view, no per-row Python): the view's events (key and ``known_at``
present) and the entity rows are unioned, partitioned by the join keys and ordered by
``known_at`` / the row's instant in microseconds; each aggregation is a window function
over ``RANGE BETWEEN window - 1 µs PRECEDING AND CURRENT ROW`` (exactly the events known
in ``(t - window, t]``: an event known at ``t`` is a peer of the row, one known at
``t - window`` is outside). Entity rows carry no values, so they add nothing to any
aggregate. ``count`` counts non-null values; ``sum`` is 0 without any; ``mean`` and
``share_gt`` are null without any; ``last`` is the greatest (``known_at``,
``event_timestamp``, value) among non-null values, the DuckDB store's rule. A row with a
null key or instant gets null for every output, ``count`` included.

The DuckDB store computes sums as differences of running sums; here they are summed over
the frame: equal for values whose partial sums are exact (integers, halves: every value
the flights have), within rounding otherwise.
"""

from __future__ import annotations

from typing import Any

from feast_plugins.windowed_offline import WindowedSourceError, WindowedViewPlan, check_columns
from feast_plugins.windows import EVENT_TIMESTAMP, KNOWN_AT

#: Spark type names as the DuckDB names :func:`~feast_plugins.windowed_offline.check_columns` judges.
_DUCK_TYPE = {"timestamp": "TIMESTAMP WITH TIME ZONE", "timestamp_ntz": "TIMESTAMP", "date": "DATE",
              "double": "DOUBLE", "float": "FLOAT", "bigint": "BIGINT", "int": "INTEGER", "smallint": "SMALLINT",
              "tinyint": "TINYINT", "boolean": "BOOLEAN"}


def _duck_type(data_type) -> str:
    name = data_type.simpleString()
    return "DECIMAL" if name.startswith("decimal") else _DUCK_TYPE.get(name, name.upper())


def windowed_answer(spark, plan: WindowedViewPlan, entities, row: str, ts: str,
                    event_timestamp_column: str | None = None) -> Any:
    """A Spark DataFrame with ``row`` and one column per output of ``plan`` (count BIGINT,
    the others DOUBLE) and, with ``event_timestamp_column``, the newest ``known_at`` (UTC
    microseconds) among the events inside the row's longest window, for training's leakage
    guard. ``entities``: the staged entity rows (``row``, the join key columns, ``ts`` as
    UTC microseconds)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from feast_plugins.spark_offline_store import _q, entity_key_columns, micros_expr

    try:
        events = spark.sql(f"SELECT * FROM {plan.source_sql}")
    except Exception as e:  # noqa: BLE001 - Spark's analysis errors name the cause
        raise WindowedSourceError(f"events source {plan.source_name!r} of windowed view {plan.name!r}: "
                                  f"unreadable: {e}") from e
    types = {f.name: f.dataType for f in events.schema.fields}
    check_columns({name: _duck_type(t) for name, t in types.items()}, plan.source_name,
                  [k for k, _ in plan.join_keys], [s.column for s in plan.specs])

    keys = [f"__k{j}" for j in range(len(plan.join_keys))]
    columns = list(dict.fromkeys(s.column for s in plan.specs))
    value_of = {c: f"__c{j}" for j, c in enumerate(columns)}
    present = F.col(_q(KNOWN_AT)).isNotNull()
    for src, _ in plan.join_keys:
        present &= F.col(_q(src)).isNotNull()
    event_rows = events.where(present).select(
        *[F.col(_q(src)).alias(k) for (src, _), k in zip(plan.join_keys, keys)],
        micros_expr(KNOWN_AT, types[KNOWN_AT]).alias("__t"),
        micros_expr(EVENT_TIMESTAMP, types[EVENT_TIMESTAMP]).alias("__et"),
        *[F.col(_q(c)).cast("double").alias(value_of[c]) for c in columns],
        F.lit(None).cast("bigint").alias("__row"))
    # Keys as the events' types (an unconvertible key matches nothing), no values.
    entity_rows = entities.select(*entity_key_columns(entities, plan, types), F.col(ts).alias("__t"),
                                  F.lit(None).cast("bigint").alias("__et"),
                                  *[F.lit(None).cast("double").alias(value_of[c]) for c in columns],
                                  F.col(row).alias("__row"))
    stacked = event_rows.unionByName(entity_rows)

    base = Window.partitionBy(*keys) if keys else Window
    frames = {us: base.orderBy("__t").rangeBetween(-(us - 1), 0) for us in {s.window_us for s in plan.specs}}
    valid = F.col("__t").isNotNull()
    for k in keys:
        valid &= F.col(k).isNotNull()
    outputs = []
    for spec, out in zip(plan.specs, plan.outputs):
        v, frame = F.col(value_of[spec.column]), frames[spec.window_us]
        n = F.count(v).over(frame)
        if spec.function == "count":
            value = n
        elif spec.function == "sum":
            value = F.coalesce(F.sum(v).over(frame), F.lit(0.0))
        elif spec.function == "mean":
            value = F.when(n > 0, F.sum(v).over(frame) / n)
        elif spec.function == "share_gt":
            over = F.sum(F.when(v > F.lit(float(spec.threshold)), 1).otherwise(0)).over(frame)
            value = F.when(n > 0, over.cast("double") / n)
        elif spec.function == "last":
            newest = F.max(F.when(v.isNotNull(), F.struct(F.col("__t"), F.col("__et"), v.alias("v")))).over(frame)
            value = newest.getField("v")
        elif spec.function in ("min", "max"):
            value = getattr(F, spec.function)(v).over(frame)
        else:  # window_specs refuses any other function at declaration
            raise WindowedSourceError(f"windowed view {plan.name!r}: function {spec.function!r} is not computed")
        outputs.append(F.when(valid, value.cast("bigint" if spec.function == "count" else "double")).alias(out))
    if event_timestamp_column:
        longest = frames[max(s.window_us for s in plan.specs)]
        newest = F.max(F.when(F.col("__row").isNull(), F.col("__t"))).over(longest)
        outputs.append(F.when(valid, newest).alias(event_timestamp_column))
    return stacked.select("__row", *outputs).where(F.col("__row").isNotNull()).withColumnRenamed("__row", row)
