"""Point-in-time training sets, always through the model's FeatureService.

The same helpers turn an offline training row and an online feature vector into the
model's input matrix, so both sides share one conversion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.config import Settings
from pipeline.usecase import UseCase
from training.errors import TrainingError


def service_features(store, feature_service_name: str) -> list[str]:
    """The FeatureService's ordered feature list, as ``view__feature`` column names."""
    service = store.get_feature_service(feature_service_name)
    return [
        f"{projection.name_to_use()}__{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


def load_events(settings: Settings, use_case: UseCase) -> pd.DataFrame:
    """The labelled events table built by the feature pipelines."""
    path = settings.sources / f"{use_case.events_table}.parquet"
    if not path.is_file():
        raise TrainingError(f"{path} is missing: run the feature pipelines (`pipeline features`) first")
    return pd.read_parquet(path)


def entity_frame(events: pd.DataFrame, use_case: UseCase) -> pd.DataFrame:
    """The entity dataframe Feast gets: id, timestamp, join keys, request inputs, label."""
    columns = [use_case.id_column, use_case.event_timestamp, *use_case.entity_columns, use_case.label]
    missing = [c for c in columns if c and c not in events.columns]
    if missing:
        raise TrainingError(f"events table {use_case.events_table!r} lacks column(s) {missing}")
    return events[[c for c in columns if c]].reset_index(drop=True)


def training_set(store, use_case: UseCase, events: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time-correct features for each event row, in the input row order.

    Feast may return rows in any order; they are put back in the entity frame's order by
    the use case's id column, and a lost or duplicated row is an error, not a surprise.
    """
    entity_df = entity_frame(events, use_case)
    key = use_case.id_column
    if entity_df[key].duplicated().any():
        dupes = entity_df.loc[entity_df[key].duplicated(), key].head(5).tolist()
        raise TrainingError(f"events table: {key} is not unique, e.g. {dupes}")
    service = store.get_feature_service(use_case.feature_service)
    frame = store.get_historical_features(
        entity_df=entity_df, features=service, full_feature_names=True
    ).to_df()
    if len(frame) != len(entity_df):
        raise TrainingError(
            f"Feast returned {len(frame)} rows for {len(entity_df)} entity rows: rows were dropped or duplicated"
        )
    frame = frame.set_index(key).loc[entity_df[key]].reset_index()
    return frame


def feature_matrix(frame: pd.DataFrame | Sequence[dict], features: Sequence[str]) -> np.ndarray:
    """The model input: float64, columns in the model's order, missing values as NaN."""
    if not isinstance(frame, pd.DataFrame):
        return _vectors_matrix(list(frame), list(features))
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise TrainingError(f"feature column(s) {missing} are absent")
    columns = [pd.to_numeric(frame[f], errors="raise").astype("float64").to_numpy() for f in features]
    if not columns:
        return np.empty((len(frame), 0))
    return np.column_stack(columns)


def _vectors_matrix(rows: list[dict], features: list[str]) -> np.ndarray:
    """:func:`feature_matrix` for online vectors (dicts), without pandas: per request, a
    DataFrame and a ``to_numeric`` per column cost milliseconds. Same result: None -> NaN,
    numbers (and numeric strings) -> float64, anything else an error naming the feature."""
    wanted = set(features)
    out = np.empty((len(rows), len(features)), dtype="float64")
    for i, row in enumerate(rows):
        if not wanted <= row.keys():
            raise TrainingError(f"feature column(s) {sorted(wanted - row.keys())} are absent")
        for j, name in enumerate(features):
            value = row[name]
            try:
                out[i, j] = np.nan if value is None else float(value)
            except (TypeError, ValueError):
                raise TrainingError(f"feature {name!r}: {value!r} is not a number") from None
    return out
