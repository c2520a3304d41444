"""Freshness and age: per feature view, how old the newest value in the online store is
at a given instant, against the view's TTL; how far materialization lags its source; and
how old the model is.

What the online store holds comes from Feast's registry: each view's materialization
intervals say up to when it was materialized, and the newest source row at or before that
end is the newest value online (materialization copies the newest row per entity in the
interval). Reading it this way works for every online store (SQLite, Redis).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from core.duck import connect


def _hours(delta) -> float | None:
    return None if delta is None else round(delta.total_seconds() / 3600, 2)


def _source_times(path: str, column: str, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """(newest event time in the source, newest at or before ``until``)."""
    con = connect()
    try:
        newest, upto = con.execute(
            f'SELECT max("{column}"), max("{column}") FILTER (WHERE "{column}" <= ?) FROM read_parquet(?)',
            [until, path]).fetchone()
    finally:
        con.close()
    return _utc(newest), _utc(upto)


def _utc(value):
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def view_freshness(store, feature_service: str, at: datetime) -> dict:
    """Per batch view of the FeatureService, at instant ``at``: materialized-until, the
    newest online value and its age, the TTL, whether it is stale (age > TTL; TTL 0 never
    is), and the lag of the online store behind its source."""
    service = store.get_feature_service(feature_service)
    views = {v.name: v for v in store.list_feature_views()}
    out = {}
    for projection in service.feature_view_projections:
        view = views.get(projection.name)
        if view is None:
            continue  # on-demand: computed per request, nothing to be stale
        intervals = view.materialization_intervals
        until = _utc(max(end for _, end in intervals)) if intervals else None
        source = view.batch_source
        newest_source, newest_online = _source_times(source.path, source.timestamp_field, until)
        if until is None:
            newest_online = None
        ttl = view.ttl if view.ttl and view.ttl.total_seconds() > 0 else None
        age = at - newest_online if newest_online is not None else None
        stale = newest_online is None or (ttl is not None and age > ttl)
        lag = max(newest_source - newest_online, pd.Timedelta(0)) if newest_online and newest_source else None
        out[view.name] = {
            "materialized_until": until.isoformat() if until else None,
            "newest_online_value": newest_online.isoformat() if newest_online else None,
            "newest_source_value": newest_source.isoformat() if newest_source else None,
            "age_hours": _hours(age), "ttl_hours": _hours(ttl), "stale": bool(stale),
            "materialization_lag_hours": _hours(lag),
        }
    return out


def model_age(metadata: dict, at: datetime, now: datetime | None = None) -> dict:
    """Days from the end of the model's training window to ``at`` (the data the model has
    not seen), and the wall-clock time since it was trained."""
    now = now or datetime.now(timezone.utc)
    trained_until = pd.Timestamp(metadata["training_window"]["end"])
    trained_at = pd.Timestamp(metadata["trained_at"])
    return {"version": metadata["version"], "training_window_end": trained_until.isoformat(),
            "trained_at": trained_at.isoformat(),
            "data_age_days": round((pd.Timestamp(at) - trained_until).total_seconds() / 86400, 2),
            "wall_clock_age_days": round((pd.Timestamp(now) - trained_at).total_seconds() / 86400, 2)}


def served_stale_rates(log: pd.DataFrame, features) -> dict:
    """Share of logged rows where the server dropped a feature as older than its TTL."""
    if log.empty:
        return {}
    from monitoring.servedlog import flat_lists

    counts = pd.Series(flat_lists(log["stale_features"])[1], dtype=object).value_counts()
    return {f: round(float(counts.get(f, 0)) / len(log), 4) for f in features if counts.get(f, 0)}


#: The served log's age columns: ``age__<view>`` (``serving/featurelog.py``).
AGE_PREFIX = "age__"


def objectives(store, feature_service: str) -> dict[str, float | None]:
    """Each batch view of the FeatureService with its freshness objective in seconds (None:
    it declares none), parsed by the one parser (``serving.online.freshness_objective``;
    :class:`~core.errors.ConfigError` names a bad tag)."""
    from serving.online import freshness_objective

    service = store.get_feature_service(feature_service)
    views = {v.name: v for v in store.list_feature_views()}
    return {p.name_to_use(): freshness_objective(views[p.name])
            for p in service.feature_view_projections if p.name in views}


def _quantile(values: pd.Series, q: float) -> float | None:
    """The nearest-rank quantile (a value that occurred: the ``ceil(q * n)``-th smallest), so
    a p99 breaks an objective exactly when more than 1% of the values do, as the
    Prometheus alert on the histogram decides it."""
    if values.empty:
        return None
    ordered = np.sort(values.to_numpy(dtype="float64"))
    return round(float(ordered[max(0, math.ceil(q * len(ordered)) - 1)]), 1)


def served_age(log: pd.DataFrame, view_objectives: dict[str, float | None]) -> dict:
    """Per view, the ages of the values the served log recorded (``age__<view>``; a value
    newer than its request, a negative age, is no age and left out): how many, p50, p99
    and max in seconds, the objective and whether the p99 breaks it. A view the log has no
    age column for (logs written before ages were) reports ``values`` 0."""
    out = {}
    for view, objective in view_objectives.items():
        column = AGE_PREFIX + view
        ages = pd.to_numeric(log[column], errors="coerce").dropna() if column in log.columns else pd.Series(
            dtype="float64")
        ages = ages[ages >= 0]
        p99 = _quantile(ages, 0.99)
        out[view] = {"values": int(len(ages)), "p50_seconds": _quantile(ages, 0.5), "p99_seconds": p99,
                     "max_seconds": None if ages.empty else round(float(ages.max()), 1),
                     "objective_seconds": objective,
                     "breached": bool(objective is not None and p99 is not None and p99 > objective)}
    return out


def objective_alerts(ages: dict) -> list[dict]:
    """One ``freshness_objective`` alert per view whose served p99 age breaks its objective
    (the monitoring summary's alert shape)."""
    return [{"rule": "freshness_objective", "subject": view, "value": a["p99_seconds"],
             "limit": a["objective_seconds"],
             "message": f"p99 age of {a['values']} served {view} values is {a['p99_seconds'] / 3600:.2f} h, over "
                        f"its objective of {a['objective_seconds'] / 3600:.2f} h (freshness_p99 in feature_repo/)"}
            for view, a in ages.items() if a["breached"]]


def write_lag(records: pd.DataFrame) -> dict:
    """Per view, from the write records (``pipeline.write_records.read_write_records``):
    writes and failed writes by kind, and the write lag of the successful ones that wrote
    something (``written_at - max_known_at``: how long the newest value of a write took
    to become servable once known), p50, p99 and max in seconds. The last failure is
    named (its time and error)."""
    out: dict = {}
    if records.empty:
        return out
    lag = (records["written_at"] - records["max_known_at"]).dt.total_seconds()
    for view, group in records.groupby(records["view"].fillna("(unresolved push source)"), sort=True):
        ok = group["ok"]
        lags = lag[group.index][ok & group["max_known_at"].notna()]
        failed = group[~ok]
        out[view] = {
            "writes": int(len(group)), "failed": int(len(failed)),
            "by_kind": {kind: int(n) for kind, n in group["kind"].value_counts().sort_index().items()},
            "lag_p50_seconds": _quantile(lags, 0.5), "lag_p99_seconds": _quantile(lags, 0.99),
            "lag_max_seconds": None if lags.empty else round(float(lags.max()), 1),
            "last_failure": None if failed.empty else {
                "written_at": failed["written_at"].iloc[-1].isoformat(), "kind": failed["kind"].iloc[-1],
                "error": failed["error"].iloc[-1]},
        }
    return out


def report_section(settings, store, feature_service: str, log: pd.DataFrame, start: datetime | None = None,
                   end: datetime | None = None) -> dict:
    """The monitoring summary's freshness additions: ``served_age`` (:func:`served_age`
    against each view's objective) and ``write_lag`` (:func:`write_lag` of the write records
    written in ``[start, end)``, with the lines skipped as unreadable)."""
    from pipeline.write_records import read_write_records

    records = read_write_records(settings, start, end)
    return {"served_age": served_age(log, objectives(store, feature_service)),
            "write_lag": {"views": write_lag(records), "records": int(len(records)),
                          "skipped_lines": records.attrs.get("skipped", [])}}
