"""Consistency metrics: how served values compare with the offline point-in-time values,
per feature, per request day and per slice.

Every served value (a cell: one logged row, one feature) falls in one class:

* ``exact``: both sides equal within the tolerance, or both missing;
* ``missing``: served null, offline present (the server had no usable value);
* ``extra``: served present, offline null (the server had a value the join would not give);
* ``differ``: both present, different.

Per feature: rows, the count and rate of each class, and, over the rows where both sides
have a number, the SMAPE (``|s - o| / ((|s| + |o|) / 2)``, 0 where both are 0) and
quantiles of the difference ``served - offline`` over the rows that differ. The same
counts per request day (UTC date of the request time) and per value of each of the use
case's slice columns. Everything is numpy over one class matrix, so a year of logged rows
costs a few bincounts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

#: Cell classes, in the class matrix's codes.
EXACT, MISSING, EXTRA, DIFFER = 0, 1, 2, 3
CLASSES = ("exact", "missing", "extra", "differ")
#: Quantiles of ``served - offline`` reported over the differing rows.
QUANTILES = (0.01, 0.5, 0.99)
#: Slice values with fewer rows are folded into ``other`` (a slice of 3 rows says nothing).
MIN_SLICE_ROWS = 50


def values(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The features as one float64 matrix (rows x features), NaN where missing."""
    out = np.empty((len(frame), len(features)), order="F")  # column by column: each feature's values contiguous
    for j, f in enumerate(features):
        column = frame[f]
        if pd.api.types.is_numeric_dtype(column.dtype):  # numbers already (nullable ones too): no parsing
            out[:, j] = column.to_numpy(dtype="float64", na_value=np.nan)
        else:
            out[:, j] = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()
    return out


def classify(served: np.ndarray, offline: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """The class matrix (int8, the module's codes) of two value matrices of one shape."""
    s_missing, o_missing = np.isnan(served), np.isnan(offline)
    with np.errstate(invalid="ignore"):
        close = np.abs(served - offline) <= tolerance
    codes = np.full(served.shape, DIFFER, dtype=np.int8, order="F")
    codes[close | (s_missing & o_missing)] = EXACT
    codes[s_missing & ~o_missing] = MISSING
    codes[~s_missing & o_missing] = EXTRA
    return codes


def _counts(codes: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, per feature, per class: counts (groups x features x classes)."""
    out = np.zeros((n_groups, codes.shape[1], len(CLASSES)), dtype=np.int64)
    for j in range(codes.shape[1]):
        out[:, j, :] = np.bincount(groups * len(CLASSES) + codes[:, j],
                                   minlength=n_groups * len(CLASSES)).reshape(n_groups, len(CLASSES))
    return out


def _rates(counts: np.ndarray) -> dict:
    """One feature's class counts as the summary's numbers."""
    rows = int(counts.sum())
    out = {"rows": rows}
    for k, name in enumerate(CLASSES):
        out[name] = int(counts[k])
        out[f"{name}_rate"] = round(float(counts[k]) / rows, 6) if rows else None
    return out


def _group_table(codes: np.ndarray, groups: np.ndarray, keys: Sequence[str], features: Sequence[str]) -> dict:
    """Per group (``groups``: each row's index into ``keys``): rows, the exact rate over all
    its cells, and per feature with any mismatch in it, its class counts and exact rate
    (matching features are left out: a year of days times 33 features would be mostly
    ones). Groups come out in the order of their keys."""
    counts = _counts(codes, groups, len(keys))
    out = {}
    for g in sorted(range(len(keys)), key=lambda g: keys[g]):
        key = keys[g]
        if not counts[g].any():
            continue  # a slice value folded into "other", or null when none is
        c = counts[g]
        rows = int(c[0].sum()) if len(features) else 0
        cells = int(c.sum())
        out[str(key)] = {
            "rows": rows, "exact_rate": round(float(c[:, EXACT].sum()) / cells, 6) if cells else None,
            "features": {f: _rates(c[j]) for j, f in enumerate(features) if c[j, EXACT] < c[j].sum()},
        }
    return out


def _slice_groups(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's group and the group names of a slice column (values of fewer than
    MIN_SLICE_ROWS rows fold into ``other``; nulls are ``null``)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    names = []
    for value in uniques:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)  # an on-demand int read back as float: 12.0 -> "12"
        names.append(str(value))
    names.append("null")
    codes = np.where(codes < 0, len(names) - 1, codes)
    sizes = np.bincount(codes, minlength=len(names))
    small = sizes < MIN_SLICE_ROWS
    if small.any():
        names.append("other")
        codes = np.where(small[codes], len(names) - 1, codes)
    return codes, names


def consistency(log: pd.DataFrame, offline: pd.DataFrame, features: Sequence[str], event_timestamp: str,
                slices: Sequence[str] = (), tolerance: float = 0.0, codes: np.ndarray | None = None,
                served: np.ndarray | None = None, offline_values: np.ndarray | None = None) -> dict:
    """The consistency section of the monitoring summary (the module doc): ``overall``
    (cells and the share in each class), ``features``, ``by_day``, ``by_slice``. ``codes``,
    ``served`` and ``offline_values``: already computed (:func:`classify`, :func:`values`)."""
    served = values(log, features) if served is None else served
    offline_values = values(offline, features) if offline_values is None else offline_values
    if codes is None:
        codes = classify(served, offline_values, tolerance)
    n = len(log)
    total = _counts(codes, np.zeros(n, dtype=np.int64), 1)[0] if n else np.zeros((len(features), len(CLASSES)))
    per_feature = {}
    for j, feature in enumerate(features):
        entry = _rates(total[j])
        both = ~np.isnan(served[:, j]) & ~np.isnan(offline_values[:, j])
        s, o = served[both, j], offline_values[both, j]
        denominator = (np.abs(s) + np.abs(o)) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            terms = np.where(denominator > 0, np.abs(s - o) / denominator, 0.0)
        entry["smape"] = round(float(terms.mean()), 6) if len(terms) else None
        differ = codes[:, j] == DIFFER
        diff = served[differ, j] - offline_values[differ, j]
        entry["difference_quantiles"] = (
            {f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(diff, QUANTILES))}
            if len(diff) else None)
        per_feature[feature] = entry
    cells = int(total.sum())
    overall = {"rows": int(n), "features": len(features), "cells": cells,
               **{f"{name}_rate": (round(float(total[:, k].sum()) / cells, 6) if cells else None)
                  for k, name in enumerate(CLASSES)},
               **{name: int(total[:, k].sum()) for k, name in enumerate(CLASSES)}}
    if not n:
        return {"overall": overall, "features": per_feature, "by_day": {}, "by_slice": {}}
    # Days as whole days since the epoch (a string per row costs seconds on a year of rows).
    day_numbers = pd.to_datetime(log[event_timestamp], utc=True).to_numpy(dtype="datetime64[D]").astype(np.int64)
    day_keys, days = np.unique(day_numbers, return_inverse=True)
    day_names = [str(d) for d in day_keys.astype("datetime64[D]")]
    by_slice = {}
    for column in slices:
        if column in log.columns:
            groups, names = _slice_groups(log[column])
            by_slice[column] = _group_table(codes, groups, names, features)
    return {"overall": overall, "features": per_feature,
            "by_day": _group_table(codes, days.reshape(-1), day_names, features), "by_slice": by_slice}


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(summary: dict) -> str:
    """The report's consistency and causes as Prometheus text (the node exporter's textfile
    collector format): per feature the share of served values in each class and the SMAPE,
    per cause the mismatching values (overall and per feature), and the served-log files
    skipped."""
    lines = []

    def family(name: str, help_: str, samples):
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {float(value)!r}" if text else f"{name} {float(value)!r}")

    c = summary.get("consistency") or {}
    features = c.get("features", {})
    family("monitoring_consistency_rate", "Share of served values per class (exact, missing, extra, differ) "
           "against the offline point-in-time value, per feature",
           [({"feature": f, "class": k}, m[f"{k}_rate"]) for f, m in features.items() for k in CLASSES
            if m[f"{k}_rate"] is not None])
    family("monitoring_consistency_smape", "SMAPE of served against offline values where both are present",
           [({"feature": f}, m["smape"]) for f, m in features.items() if m["smape"] is not None])
    causes = summary.get("causes") or {}
    family("monitoring_mismatch_values", "Mismatching served values per named cause",
           [({"cause": f["cause"]}, f["values"]) for f in causes.get("findings", [])])
    family("monitoring_mismatch_feature_values", "Mismatching served values per feature and named cause",
           [({"feature": f, "cause": k}, n) for f, counts in (causes.get("by_feature") or {}).items()
            for k, n in counts.items()])
    family("monitoring_mismatch_unexplained_values", "Mismatching served values no recorded fact explains",
           [({}, causes.get("unexplained", 0))])
    family("monitoring_served_log_skipped_files", "Served-log files skipped as unreadable",
           [({}, len(summary["log"].get("skipped_files") or []))])
    return "\n".join(lines) + "\n"
