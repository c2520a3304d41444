"""Training/serving skew: the served-feature log joined back to the offline point-in-time
features for the same entities and request times, feature by feature.

The log is an entity dataframe as it stands (request fields + ``event_timestamp``), so the
offline side is exactly what training would have seen: ``training.dataset.training_set``
through the model's FeatureService (the ASOF store, leakage guard included).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from core.usecase import UseCase
from feast_plugins.asof_offline_store import EVENT_TIMESTAMP_PREFIX
from monitoring.errors import MonitoringError
from training.dataset import entity_frame, training_set

#: Examples kept per feature with mismatches.
EXAMPLES = 3


def offline_features(store, use_case: UseCase, log: pd.DataFrame) -> pd.DataFrame:
    """The offline point-in-time features for every logged row, in the log's order, with,
    per time-stamped view, the event time of the row its values came from
    (``__event_timestamp__<view>``, null where missing) when the offline store reports it
    (the ASOF store does): the causes (``monitoring.causes``) compare it with the served
    value's age and the write records."""
    entities = log.assign(**{use_case.id_column: np.arange(len(log)), use_case.label: 0})
    if log.empty:
        return training_set(store, use_case, entities)
    entity_df = entity_frame(entities, use_case)
    service = store.get_feature_service(use_case.feature_service)
    job = store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=True)
    if not hasattr(job, "include_event_timestamps"):  # a store that cannot report them: values only
        return training_set(store, use_case, entities)
    job.include_event_timestamps = True
    frame = job.to_df()
    key = use_case.id_column
    if len(frame) != len(entity_df) or frame[key].duplicated().any():
        raise MonitoringError(f"offline join returned {len(frame)} rows for {len(entity_df)} logged rows")
    if not np.array_equal(frame[key].to_numpy(), entity_df[key].to_numpy()):  # the ASOF store keeps the order
        frame = frame.set_index(key).loc[entity_df[key]].reset_index()
    for column in frame.columns:
        if column.startswith(EVENT_TIMESTAMP_PREFIX) and not isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def feature_skew(log: pd.DataFrame, offline: pd.DataFrame, features: Sequence[str], keys: Sequence[str],
                 tolerance: float = 0.0) -> dict:
    """Per feature: rows compared, mismatches (a value on one side only counts too), their
    rate, and a few examples with the request's keys and both values."""
    out = {}
    for feature in features:
        served = pd.to_numeric(log[feature]).astype("float64").to_numpy()
        offline_values = pd.to_numeric(offline[feature]).astype("float64").to_numpy()
        both_missing = np.isnan(served) & np.isnan(offline_values)
        with np.errstate(invalid="ignore"):
            close = np.abs(served - offline_values) <= tolerance
        mismatch = ~(both_missing | close)
        rows = np.flatnonzero(mismatch)
        examples = [
            {**{k: _plain(log[k].iloc[i]) for k in keys},
             "served": _plain(served[i]), "offline": _plain(offline_values[i])}
            for i in rows[:EXAMPLES]
        ]
        out[feature] = {"rows": int(len(served)), "mismatches": int(mismatch.sum()),
                        "rate": float(mismatch.mean()) if len(served) else 0.0,
                        "served_missing": int(np.isnan(served).sum()), "examples": examples}
    return out


def _plain(value):
    """A JSON-friendly scalar (NaN -> None, timestamps -> ISO text)."""
    if value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
