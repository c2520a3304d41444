"""Batch-to-batch checks: volume against the previous snapshot, distribution against a
reference profile (Population Stability Index), and as-of instants that only move forward,
a plausible step at a time, with no table reaching far past them.

The thresholds are documented, with what justifies them, in ``docs/validation.md``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from core.contracts import TableContract
from core.files import atomic_write
from validation.report import Failure

#: PSI above this fails. The usual reading: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a
#: major shift. On the shipped use case's data, a snapshot growing by months of the same
#: season stays well under it, while a unit or offset error (Celsius for Fahrenheit, a
#: constant added to every delay) scores far above (``tests/validation/test_drift.py``).
PSI_MAX = 0.25
#: A cumulative snapshot grows a little at a time; halving or doubling means a lost or a
#: duplicated export. The allowed ratio new/previous rows is [VOLUME_MIN, VOLUME_MAX].
VOLUME_MIN, VOLUME_MAX = 0.5, 2.0
BINS = 10
_EPS = 1e-4
_OTHER, _NULL = "<other>", "<null>"


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _numeric_proportions(values: pd.Series, edges: list[float]) -> list[float]:
    x = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
    missing = np.isnan(x)
    counts = np.bincount(np.searchsorted(edges, x[~missing], side="right"), minlength=len(edges) + 1)
    counts = np.append(counts.astype(float), missing.sum())
    return (counts / max(counts.sum(), 1)).tolist()


def _categorical_proportions(values: pd.Series, categories: list[str]) -> list[float]:
    v = values.astype("string").fillna(_NULL)
    counts = v.value_counts()
    out = [float(counts.get(c, 0)) for c in categories]
    known = set(categories) | {_NULL}
    out.append(float(counts[[k for k in counts.index if k not in known]].sum()))
    out.append(float(counts.get(_NULL, 0)))
    total = max(sum(out), 1.0)
    return [c / total for c in out]


def column_profile(values: pd.Series) -> dict:
    """Decile bin edges and proportions (numeric), or category shares (text); nulls are a bin."""
    if _is_numeric(values):
        x = pd.to_numeric(values, errors="coerce").astype("float64").dropna().to_numpy()
        edges = sorted(set(np.quantile(x, np.linspace(0, 1, BINS + 1)[1:-1]).tolist())) if len(x) else []
        return {"kind": "numeric", "edges": edges, "proportions": _numeric_proportions(values, edges)}
    categories = sorted(values.dropna().astype(str).unique().tolist())
    return {"kind": "categorical", "categories": categories,
            "proportions": _categorical_proportions(values, categories)}


def profile_proportions(reference: dict, values: pd.Series) -> list[float]:
    """The proportions of ``values`` in the bins (or categories) of a :func:`column_profile`."""
    if reference["kind"] == "numeric":
        return _numeric_proportions(values, reference["edges"])
    return _categorical_proportions(values, reference["categories"])


def psi(expected: list[float], actual: list[float]) -> float:
    """Population Stability Index, sum((a - e) * ln(a / e)), empty bins floored at 1e-4."""
    e = np.clip(np.asarray(expected, dtype=float), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def profile(frames: Mapping[str, pd.DataFrame], contracts: Mapping[str, TableContract], **meta) -> dict:
    """The reference profile of a batch: row counts and each drift-tracked column's shape."""
    tables = {}
    for name, contract in contracts.items():
        if name not in frames:
            continue
        frame = frames[name]
        tables[name] = {
            "rows": int(len(frame)),
            "columns": {c: column_profile(frame[c]) for c, rule in contract.columns.items()
                        if rule.drift and c in frame.columns},
        }
    return {**meta, "bins": BINS, "psi_max": PSI_MAX, "tables": tables}


def distribution_failures(frames: Mapping[str, pd.DataFrame], reference: dict) -> tuple[list[Failure], dict]:
    """PSI of every profiled column against the reference; failures above PSI_MAX."""
    failures, stats = [], {}
    for table, ref in reference.get("tables", {}).items():
        if table not in frames:
            continue
        frame = frames[table]
        if frame.empty:
            continue  # the non_empty check reports it; an empty table has no distribution
        for column, col_ref in ref["columns"].items():
            if column not in frame.columns:
                continue  # the column contract reports a missing column
            actual = profile_proportions(col_ref, frame[column])
            value = psi(col_ref["proportions"], actual)
            stats[f"{table}.{column}"] = round(value, 4)
            if value > PSI_MAX or not math.isfinite(value):
                failures.append(Failure(
                    "distribution_psi", table, column,
                    f"PSI {value:.3f} against the reference profile exceeds {PSI_MAX}", None,
                    ({"reference": [round(p, 4) for p in col_ref["proportions"]],
                      "now": [round(p, 4) for p in actual]},),
                ))
    return failures, stats


def volume_failures(rows: Mapping[str, int], previous: Mapping[str, int] | None,
                    contracts: Mapping[str, TableContract]) -> tuple[list[Failure], dict]:
    """Row count of each table against the previous snapshot's."""
    if not previous:
        return [], {}
    failures, stats = [], {}
    for table, n in rows.items():
        contract = contracts.get(table)
        before = previous.get(table)
        if contract is None or not contract.volume or not before:
            continue
        ratio = n / before
        stats[table] = round(ratio, 4)
        if not VOLUME_MIN <= ratio <= VOLUME_MAX:
            failures.append(Failure(
                "volume_change", table, None,
                f"{n:,} rows vs {before:,} in the previous snapshot (x{ratio:.2f}; "
                f"allowed x{VOLUME_MIN}-x{VOLUME_MAX})", n,
            ))
    return failures, stats


def as_of_failures(as_of: datetime, previous_as_of: datetime | None, previous_id: str | None) -> list[Failure]:
    """A new snapshot must not describe an earlier instant than the previous one."""
    if previous_as_of is None or as_of >= previous_as_of:
        return []
    return [Failure("as_of_forward", "snapshot", None,
                    f"as-of {as_of.isoformat()} is before the previous snapshot {previous_id}'s "
                    f"{previous_as_of.isoformat()}: snapshots only move forward")]


def as_of_step_failures(as_of: datetime, previous_as_of: datetime | None, previous_id: str | None,
                        max_step: timedelta | None) -> list[Failure]:
    """A new snapshot must not move the as-of further past the previous one's than
    ``max_step`` (the use case's ``as_of_max_step``; None: no bound)."""
    if max_step is None or previous_as_of is None or as_of - previous_as_of <= max_step:
        return []
    return [Failure("as_of_step", "snapshot", None,
                    f"as-of {as_of.isoformat()} is {_days(as_of - previous_as_of)} after the previous snapshot "
                    f"{previous_id}'s {previous_as_of.isoformat()}; the use case's as_of_max_step allows "
                    f"{_days(max_step)}: a shifted export? (--accept as_of_step if the jump is intended)")]


def as_of_lead_failures(frames: Mapping[str, pd.DataFrame], as_of: datetime,
                        max_lead: timedelta) -> tuple[list[Failure], dict]:
    """Every timezone-aware timestamp column of every table against the as-of: none may
    reach further than ``max_lead`` (the use case's ``as_of_max_lead``) past it. The as-of
    is where the time-stamped tables end together; one table reaching far beyond is a
    shifted or mislabelled export (the as-of itself then looks plausible). Stats: each
    column's lead past the as-of, in hours."""
    failures, stats = [], {}
    limit = pd.Timestamp(as_of) + max_lead
    for table, frame in frames.items():
        for column in frame.columns:
            dtype = frame[column].dtype
            if getattr(getattr(dtype, "pyarrow_dtype", None), "tz", None) is None \
                    and getattr(dtype, "tz", None) is None:
                continue  # not a timezone-aware timestamp
            values = frame[column].dropna()
            if values.empty:
                continue
            newest = pd.Timestamp(values.max())
            stats[f"{table}.{column}"] = round((newest - pd.Timestamp(as_of)) / pd.Timedelta(hours=1), 2)
            if newest > limit:
                beyond = values[values > limit]
                failures.append(Failure(
                    "as_of_lead", table, column,
                    f"timestamps up to {newest.isoformat()}, {_days(newest - pd.Timestamp(as_of))} past the "
                    f"snapshot's as-of {pd.Timestamp(as_of).isoformat()} (where the time-stamped tables end "
                    f"together); the use case's as_of_max_lead allows {_days(max_lead)}: a shifted or "
                    f"mislabelled export?", int(len(beyond)),
                    tuple({"row": int(i), column: v} for i, v in beyond.head(3).items())))
    return failures, stats


def _days(delta) -> str:
    """A duration for a message: days with one decimal, hours below a day."""
    seconds = pd.Timedelta(delta).total_seconds()
    return f"{seconds / 86400:.1f} days" if abs(seconds) >= 86400 else f"{seconds / 3600:.1f} hours"


def load_reference(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_reference(path: Path, reference: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(reference, indent=2, default=str))
