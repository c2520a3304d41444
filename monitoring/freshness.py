"""Freshness and age: per feature view, how old the newest value in the online store is
at a given instant, against the view's TTL; how far materialization lags its source; and
how old the model is.

What the online store holds comes from Feast's registry: each view's materialization
intervals say up to when it was materialized, and the newest source row at or before that
end is the newest value online (materialization copies the newest row per entity in the
interval). Reading it this way works for every online store (SQLite, Redis).
"""

from __future__ import annotations

from datetime import datetime, timezone

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
    counts = pd.Series([f for row in log["stale_features"] for f in row]).value_counts()
    return {f: round(float(counts.get(f, 0)) / len(log), 4) for f in features if counts.get(f, 0)}
