"""Causes: every served value that differs from the offline point-in-time value, attributed
to one named cause from what the platform itself records, and grouped into findings.

A mismatch is judged per logged row and feature view (all features of a view come from one
online row, so they share a cause). The evidence:

* the view's kind and TTL (the registry);
* the served value's age at the request instant, ``age__<view>`` in the feature log
  (``docs/freshness.md``: also recorded for values the server dropped, negative for a value
  newer than the request), and ``stale_features``;
* the event time of the offline value, ``__event_timestamp__<view>`` from the ASOF offline
  store (``monitoring.skew.offline_features``);
* the write records (``pipeline.write_records``): when each push or materialization of the
  view made values up to which event time servable, and which writes failed;
* the definitions each serving model was trained on against the ones applied now
  (``monitoring.definitions``).

The first rule that holds names the cause (:data:`CAUSES`, in this order):

1. ``request_time``: an on-demand view (computed from the request itself);
2. ``definition_changed``: the model that served the row pins a definition of the view
   that differs from the one applied now (the offline side is computed the new way);
3. ``request_before_online_value``: the online store held a value newer than the request
   (negative age): it keeps only each key's newest value, so a request dated before it
   cannot be answered online;
4. with write records for the view, for an offline value the server did not have (served
   missing, or older than the offline value's event time):

   * ``failed_write``: a write meant to carry it (its event-time range holds it) failed
     before the request;
   * ``write_late``: the first write reaching its event time came after the request (by
     how much), or none came at all;
   * ``late_source_row``: writes reaching its event time were done before the request, yet
     the server did not have it: the row was not in the source when its time was written
     (it arrived late);

5. ``late_source_row`` too when the served value is the offline row itself (same event
   time) with other values: the row changed after it was served (late data added to it);
6. ``ttl_expired``: the server dropped its value as older than the view's TTL (by how much),
   and no write record says why;
7. ``unexplained``: none of these; an alert of its own.

Findings group by cause: one cause behind 33 features is one finding, with its counts per
view and feature, how late (p50, max), and examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from monitoring.consistency import EXACT, MISSING
from monitoring.servedlog import flat_lists

CAUSES = ("request_time", "definition_changed", "request_before_online_value", "failed_write", "write_late",
          "late_source_row", "ttl_expired", "unexplained")
#: What each cause means, as the report says it.
TITLES = {
    "request_time": "request-time (on-demand) feature differs: computed from the request itself",
    "definition_changed": "the view's definition changed between serving and now (the serving model pins another)",
    "request_before_online_value": "request dated before the value online: the store keeps only each key's "
                                   "newest value, newer than the request, so none could be served",
    "failed_write": "an online write (push or materialization) carrying the value failed",
    "write_late": "the value was written online (pushed or materialized) only after the request",
    "late_source_row": "the source row arrived after its time was written online (late data)",
    "ttl_expired": "the online value was older than the view's TTL (no write record explains why)",
    "unexplained": "no recorded fact explains the difference",
}
#: What the ``seconds`` of a cause measure (None: nothing).
MEASURES = {"request_before_online_value": "online value newer than the request by",
            "write_late": "written after the request by", "ttl_expired": "expired beyond the TTL by",
            "late_source_row": "row time before the request by"}
UNEXPLAINED = CAUSES.index("unexplained")
#: Examples kept per finding.
EXAMPLES = 3
EVENT_PREFIX = "__event_timestamp__"
AGE_PREFIX = "age__"


@dataclass(frozen=True)
class View:
    name: str
    #: Seconds; 0: no limit.
    ttl: float
    on_demand: bool


def service_views(store, feature_service: str) -> dict[str, View]:
    """The views of the FeatureService, from the registry. Windowed views are stream feature
    views, which Feast lists apart from the batch ones: they are read from the store like
    any view, not computed from the request (only a view in neither list is on-demand)."""
    service = store.get_feature_service(feature_service)
    batch = {v.name: v for v in [*store.list_feature_views(), *store.list_stream_feature_views()]}
    out = {}
    for p in service.feature_view_projections:
        view = batch.get(p.name)
        ttl = view.ttl.total_seconds() if view is not None and view.ttl else 0.0
        out[p.name_to_use()] = View(p.name_to_use(), ttl, view is None)
    return out


def _ns(values) -> np.ndarray:
    """Instants as int64 nanoseconds since the epoch (UTC); NaT as the int64 minimum."""
    return pd.to_datetime(pd.Series(values), utc=True, cache=False).to_numpy(dtype="datetime64[ns]").view("int64")


NAT = np.iinfo(np.int64).min


def _stale_mask(log: pd.DataFrame, views: Sequence[str]) -> dict[str, np.ndarray]:
    """Per view: whether the server dropped its values in each row (``stale_features``)."""
    out = {v: np.zeros(len(log), dtype=bool) for v in views}
    if "stale_features" not in log.columns or log.empty:
        return out
    rows, items = flat_lists(log["stale_features"])
    if not len(items):
        return out
    view_of = pd.Series(items, dtype=object).str.split("__", n=1).str[0].to_numpy()
    for view in out:
        out[view][rows[view_of == view]] = True
    return out


def _records_for(records: pd.DataFrame | None, view: str):
    """(written_at, reach, known_at) of the view's good writes in written order, ``reach``
    being the newest event time any write up to it made servable; and its failed writes'
    (min, max event, written_at)."""
    empty = np.empty(0, dtype=np.int64)
    if records is None or records.empty:
        return None
    mine = records[records["view"] == view]
    if mine.empty:
        return None
    good = mine[mine["ok"] & mine["max_event_timestamp"].notna()].sort_values("written_at", kind="stable")
    written = _ns(good["written_at"]) if len(good) else empty
    reach = np.maximum.accumulate(_ns(good["max_event_timestamp"])) if len(good) else empty
    failed = mine[~mine["ok"] & mine["max_event_timestamp"].notna()]
    low = _ns(failed["min_event_timestamp"].fillna(failed["max_event_timestamp"])) if len(failed) else empty
    return {"written": written, "reach": reach,
            "failed": (low, _ns(failed["max_event_timestamp"]) if len(failed) else empty,
                       _ns(failed["written_at"]) if len(failed) else empty)}


def attribute(log: pd.DataFrame, offline: pd.DataFrame, codes: np.ndarray, features: Sequence[str],
              views: dict[str, View], event_timestamp: str, drifted: dict[str, set[str]] | None = None,
              records: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of the class matrix ``codes`` (``monitoring.consistency``): the index of its
    cause in :data:`CAUSES` (-1 where served and offline agree) and the seconds the cause
    measures (:data:`MEASURES`; NaN where none)."""
    n = len(log)
    cause = np.full(codes.shape, -1, dtype=np.int8)
    seconds = np.full(codes.shape, np.nan)
    if n == 0:
        return cause, seconds
    by_view: dict[str, list[int]] = {}
    for j, f in enumerate(features):
        by_view.setdefault(f.split("__", 1)[0], []).append(j)
    t = _ns(log[event_timestamp])
    versions = log["model_version"].astype(str).to_numpy() if "model_version" in log.columns else None
    stale = _stale_mask(log, list(by_view))
    drifted = drifted or {}
    for view, positions in by_view.items():
        sub = codes[:, positions]
        mismatched = (sub != EXACT).any(axis=1)
        if not mismatched.any():
            continue
        info = views.get(view, View(view, 0.0, False))
        c = np.full(n, UNEXPLAINED, dtype=np.int8)
        s = np.full(n, np.nan)
        open_ = mismatched.copy()

        def decide(mask, name, by=None):
            mask = mask & open_
            c[mask] = CAUSES.index(name)
            if by is not None:
                s[mask] = by[mask]
            open_[mask] = False

        if info.on_demand:
            decide(np.ones(n, dtype=bool), "request_time")
        if versions is not None:
            stale_versions = [v for v, names in drifted.items() if view in names]
            if stale_versions:
                decide(np.isin(versions, stale_versions), "definition_changed")
        age_column = AGE_PREFIX + view
        age = (pd.to_numeric(log[age_column], errors="coerce").to_numpy(dtype=float)
               if age_column in log.columns else np.full(n, np.nan))
        with np.errstate(invalid="ignore"):
            decide(age < 0, "request_before_online_value", -age)
        event_column = EVENT_PREFIX + view
        e_o = _ns(offline[event_column]) if event_column in offline.columns else np.full(n, NAT)
        has_offline = e_o != NAT
        served_missing = (sub == MISSING).any(axis=1) | np.isnan(
            np.column_stack([pd.to_numeric(log[features[j]], errors="coerce").to_numpy(dtype=float)
                             for j in positions])).all(axis=1)
        served_event = np.where(np.isnan(age), np.nan, t / 1e9 - np.nan_to_num(age))  # seconds
        older = ~np.isnan(served_event) & (served_event < e_o / 1e9)
        same_row = ~np.isnan(served_event) & has_offline & (np.abs(served_event - e_o / 1e9) < 1.0)
        writes = _records_for(records, view)
        if writes is not None:
            needs = has_offline & (served_missing | older | np.isnan(served_event))
            k = np.searchsorted(writes["reach"], e_o, side="left")
            written = np.where(k < len(writes["written"]), writes["written"][np.minimum(k, len(writes["written"]) - 1)]
                               if len(writes["written"]) else NAT, NAT)
            never = written == NAT
            late = never | (written > t)
            low, high, failed_at = writes["failed"]
            failed = np.zeros(n, dtype=bool)
            for lo, hi, at in zip(low, high, failed_at):
                failed |= (e_o >= lo) & (e_o <= hi) & (at <= t)
            decide(needs & failed, "failed_write")
            decide(needs & late, "write_late", np.where(never, np.nan, (written - t) / 1e9))
            decide(needs & ~late, "late_source_row", (t - e_o) / 1e9)
        decide(same_row & ~served_missing, "late_source_row", (t - e_o) / 1e9)
        expired = stale[view] & (np.isnan(age) | (info.ttl > 0) & (age > info.ttl))
        decide(expired, "ttl_expired", np.where(np.isnan(age), np.nan, age - info.ttl))
        for k_, j in enumerate(positions):
            cell = sub[:, k_] != EXACT
            cause[cell, j] = c[cell]
            seconds[cell, j] = s[cell]
    return cause, seconds


def _plain(value):
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def findings(log: pd.DataFrame, offline: pd.DataFrame, cause: np.ndarray, seconds: np.ndarray,
             features: Sequence[str], keys: Sequence[str], event_timestamp: str) -> list[dict]:
    """One finding per cause with mismatches, the most values first (``unexplained`` last
    among equals): the cause and what it means, values, rows, per view and per feature
    counts, how late or how far (p50, max, in hours) where the cause measures it, and
    examples from different views."""
    out = []
    n = len(log)
    for k, name in enumerate(CAUSES):
        hit = cause == k
        values = int(hit.sum())
        if not values:
            continue
        rows = np.flatnonzero(hit.any(axis=1))
        per_feature = {features[j]: int(hit[:, j].sum()) for j in range(len(features)) if hit[:, j].any()}
        per_view: dict[str, int] = {}
        for f, count in per_feature.items():
            view = f.split("__", 1)[0]
            per_view[view] = per_view.get(view, 0) + count
        measured = seconds[hit]
        measured = measured[~np.isnan(measured)]
        by = ({"what": MEASURES[name], "p50_hours": round(float(np.median(measured)) / 3600, 3),
               "max_hours": round(float(measured.max()) / 3600, 3), "measured": int(len(measured))}
              if name in MEASURES and len(measured) else None)
        examples, seen = [], set()
        for i in rows:
            js = np.flatnonzero(hit[i])
            j = next((j for j in js if features[j].split("__", 1)[0] not in seen), None)
            if j is None:
                continue
            feature = features[j]
            view = feature.split("__", 1)[0]
            seen.add(view)
            example = {**{key: _plain(log[key].iloc[i]) for key in keys if key in log.columns},
                       "request_time": _plain(pd.Timestamp(log[event_timestamp].iloc[i])),
                       "feature": feature, "served": _plain(log[feature].iloc[i]),
                       "offline": _plain(pd.to_numeric(pd.Series([offline[feature].iloc[i]]),
                                                       errors="coerce").iloc[0])}
            if EVENT_PREFIX + view in offline.columns:
                example["offline_event_time"] = _plain(pd.Timestamp(offline[EVENT_PREFIX + view].iloc[i])
                                                       if pd.notna(offline[EVENT_PREFIX + view].iloc[i]) else None)
            if AGE_PREFIX + view in log.columns:
                example["served_age_hours"] = (None if pd.isna(log[AGE_PREFIX + view].iloc[i])
                                               else round(float(log[AGE_PREFIX + view].iloc[i]) / 3600, 3))
            if "model_version" in log.columns:
                example["model_version"] = _plain(log["model_version"].iloc[i])
            if not np.isnan(seconds[i, j]):
                example["hours"] = round(float(seconds[i, j]) / 3600, 3)
            examples.append(example)
            if len(examples) == EXAMPLES:
                break
        out.append({"cause": name, "title": TITLES[name], "values": values, "rows": int(len(rows)),
                    "row_rate": round(len(rows) / n, 6) if n else 0.0,
                    "features": per_feature, "views": per_view, "by": by, "examples": examples})
    out.sort(key=lambda f: (-f["values"], f["cause"] == "unexplained"))
    return out


def cause_counts(cause: np.ndarray, features: Sequence[str]) -> dict:
    """Per feature: mismatching values per cause (causes with none left out)."""
    out = {}
    for j, f in enumerate(features):
        counts = np.bincount(cause[:, j][cause[:, j] >= 0], minlength=len(CAUSES))
        if counts.any():
            out[f] = {CAUSES[k]: int(v) for k, v in enumerate(counts) if v}
    return out
