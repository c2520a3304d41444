"""Reading the served-feature log (``serving/featurelog.py``) back as one frame."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import pandas as pd

from monitoring.errors import MonitoringError

#: Columns every log file has besides the request fields and the features.
LOG_COLUMNS = ("request_id", "entity_index", "served_at", "endpoint", "model_version", "feature_service",
               "missing_features", "stale_features", "probability")


def read_served_log(root: Path, features: Sequence[str], event_timestamp: str,
                    start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
    """Every logged row (whole files only: ``*.parquet``) whose request time lies in
    [start, end), sorted by serving time. The frame is empty when nothing was logged.

    A file that lacks a feature of the current FeatureService, or a fixed column, is an
    error naming the file: its rows cannot be compared feature by feature.
    """
    files = sorted(root.glob("date=*/*.parquet")) if root.is_dir() else []
    frames = []
    for path in files:
        frame = pd.read_parquet(path)
        missing = [c for c in (*LOG_COLUMNS, event_timestamp, *features) if c not in frame.columns]
        if missing:
            raise MonitoringError(f"{path}: served-feature log file lacks column(s) {missing}")
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*LOG_COLUMNS, event_timestamp, *features])
    log = pd.concat(frames, ignore_index=True)
    when = pd.to_datetime(log[event_timestamp], utc=True)
    keep = pd.Series(True, index=log.index)
    if start is not None:
        keep &= when >= pd.Timestamp(start)
    if end is not None:
        keep &= when < pd.Timestamp(end)
    log = log[keep]
    return log.sort_values(["served_at", "request_id", "entity_index"]).reset_index(drop=True)
