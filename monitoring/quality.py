"""Model quality once labels arrive: logged predictions joined to the labelled events,
scored with training's own evaluation (AUC, log loss, Brier, calibration, slices)."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from core.usecase import UseCase
from training.evaluate import calibration, holdout_metrics, slice_metrics


def labelled_predictions(log: pd.DataFrame, events: pd.DataFrame, use_case: UseCase) -> pd.DataFrame:
    """Each logged prediction with its label, once per request and model version (the
    newest served answer), for requests that match a labelled event on every non-nullable
    request field (nullable ones, e.g. a missing tail number, cannot identify an event)."""
    keys = [f.name for f in use_case.request_fields if not f.nullable]
    predictions = log[log["probability"].notna()]
    predictions = predictions.drop_duplicates([*keys, "model_version"], keep="last")
    labels = events[[*keys, use_case.label]].drop_duplicates(keys)
    time_field = use_case.request_time_field
    predictions = predictions.assign(**{time_field: pd.to_datetime(predictions[time_field], utc=True)})
    labels = labels.assign(**{time_field: pd.to_datetime(labels[time_field], utc=True)})
    return predictions.merge(labels, on=keys, how="inner", validate="many_to_one")


def quality_summary(joined: pd.DataFrame, label: str, event_timestamp: str, slices: Sequence[str]) -> dict:
    """Overall, per request day, and per slice value; calibration over all labelled rows."""
    if joined.empty:
        return {"rows": 0, "overall": None, "by_day": {}, "calibration": None, "slices": {}}
    y = joined[label].to_numpy(dtype=float)
    p = joined["probability"].to_numpy(dtype=float)
    days = pd.to_datetime(joined[event_timestamp], utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    by_day = {day: holdout_metrics(y[days == day], p[days == day]) for day in sorted(set(days))}
    return {"rows": int(len(joined)), "overall": holdout_metrics(y, p), "by_day": by_day,
            "calibration": calibration(y, p), "slices": slice_metrics(joined, y, p, slices)}

