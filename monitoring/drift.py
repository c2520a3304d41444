"""Drift of served features and predictions: against the training set, day by day, and
recent served traffic against earlier traffic.

The statistic is validation.drift's Population Stability Index over the reference's decile
bins (nulls are a bin of their own), so drift means the same here as at the data gates.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import pandas as pd

from core.usecase import UseCase
from training.dataset import load_events
from training.registry import LoadedModel
from training.score import score_events
from validation.drift import column_profile, load_reference, profile_proportions, psi, write_reference

PREDICTION = "probability"


def training_reference(settings, store, use_case: UseCase, model: LoadedModel) -> dict:
    """Profiles of each feature and of the model's predictions over its training window.

    Computed once per model version through the FeatureService (the same point-in-time
    join as training) and kept in ``DATA_DIR/monitoring/reference-<version>.json``: later
    changes to the sources must not move the reference they are measured against.
    """
    path = reference_path(settings.data_dir, model.version)
    cached = load_reference(path)
    if cached is not None:
        return cached
    window = model.metadata["training_window"]
    events = load_events(settings, use_case, window["start"], window["end"])
    scored = score_events(store, use_case, model, events)
    reference = {
        "model_version": model.version, "window": window, "rows": int(len(scored)),
        "columns": {c: column_profile(scored[c]) for c in [*model.features, PREDICTION]},
    }
    write_reference(path, reference)
    return reference


def psi_against(profiles: dict, frame: pd.DataFrame, columns: Sequence[str], min_rows: int) -> dict:
    """PSI of each column of ``frame`` against its profile; None for a window too small."""
    out = {}
    for column in columns:
        values = frame[column] if column != PREDICTION else frame[column].dropna()
        if len(values) < min_rows:
            out[column] = None
            continue
        out[column] = round(psi(profiles[column]["proportions"], profile_proportions(profiles[column], values)), 4)
    return out


def drift_summary(reference: dict, log: pd.DataFrame, features: Sequence[str], event_timestamp: str,
                  min_rows: int, psi_max: float, recent_since: datetime | None = None) -> dict:
    """Served traffic against the training reference (whole window and per request day),
    and the recent served window against the earlier one.

    ``recent_since`` splits the log by serving time; by default at the start of the last
    UTC day anything was served, when the log spans more than one.
    """
    columns = [*features, PREDICTION]
    profiles = reference["columns"]
    vs_training = psi_against(profiles, log, columns, min_rows)
    days = pd.to_datetime(log[event_timestamp], utc=True).dt.strftime("%Y-%m-%d")
    by_day = {day: psi_against(profiles, log[days == day], columns, min_rows) for day in sorted(days.unique())}
    served_at = pd.to_datetime(log["served_at"], utc=True)
    if recent_since is None and served_at.dt.date.nunique() > 1:
        recent_since = served_at.max().floor("D").to_pydatetime()
    recent = {"since": None, "psi": {}, "drifted": {}, "note": "the log spans one serving day: no earlier window"}
    if recent_since is not None:
        cut = pd.Timestamp(recent_since)
        earlier, later = log[served_at < cut], log[served_at >= cut]
        recent = {"since": cut.isoformat(), "earlier_rows": int(len(earlier)), "recent_rows": int(len(later)),
                  "note": None}
        if len(earlier) >= min_rows and len(later) >= min_rows:
            earlier_profiles = {c: column_profile(earlier[c] if c != PREDICTION else earlier[c].dropna())
                                for c in columns}
            recent["psi"] = psi_against(earlier_profiles, later, columns, min_rows)
        else:
            recent["psi"] = {}
            recent["note"] = f"a window has fewer than {min_rows} rows"
        recent["drifted"] = _drifted(recent["psi"], psi_max)
    return {
        "reference_rows": reference["rows"], "reference_window": reference["window"], "psi_max": psi_max,
        "vs_training": vs_training, "vs_training_drifted": _drifted(vs_training, psi_max),
        "by_day": by_day, "recent_vs_earlier": recent,
    }


def _drifted(values: dict, psi_max: float) -> dict:
    """The columns above the threshold, largest first."""
    moved = {c: v for c, v in values.items() if v is not None and v > psi_max}
    return dict(sorted(moved.items(), key=lambda kv: -kv[1]))


def reference_path(data_dir: Path, version: str) -> Path:
    return data_dir / "monitoring" / f"reference-{version}.json"
