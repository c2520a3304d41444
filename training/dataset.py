"""Point-in-time training sets, always through the model's FeatureService.

The same helpers turn an offline training row and an online feature vector into the
model's input matrix, so both sides share one conversion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from core.progress import working
from core.settings import Settings
from core.usecase import UseCase
from training.errors import TrainingError


def service_features(store, feature_service_name: str) -> list[str]:
    """The FeatureService's ordered feature list, as ``view__feature`` column names."""
    from feast.errors import FeatureServiceNotFoundException

    try:
        service = store.get_feature_service(feature_service_name)
    except FeatureServiceNotFoundException:
        known = [s.name for s in store.list_feature_services()]
        raise TrainingError(f"FeatureService {feature_service_name!r} is not in the Feast registry "
                            f"(it has {known}; run `pipeline apply` after defining it)") from None
    return [
        f"{projection.name_to_use()}__{feature.name}"
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


def service_view_features(service) -> dict[str, list[str]]:
    """Each batch view of a FeatureService and its ``view__feature`` columns."""
    return {
        projection.name: [f"{projection.name_to_use()}__{f.name}" for f in projection.features]
        for projection in service.feature_view_projections
    }


def without_leakage(frame: pd.DataFrame, timestamp_column: str, id_column: str,
                    view_features: dict[str, list[str]]) -> pd.DataFrame:
    """The leakage guard: fail if any feature value's event time is after its row's timestamp.

    ``frame`` carries, per feature view, the event time of the row its values came from
    (``__event_timestamp__<view>``, added by the ASOF offline store). A value from the
    future can only come from a broken join or source; the error names the view, its
    features and the first offending rows. Returns ``frame`` without those columns.
    """
    from feast_plugins.asof_offline_store import EVENT_TIMESTAMP_PREFIX

    entity_ts = pd.to_datetime(frame[timestamp_column], utc=True)
    problems = []
    for view, features in view_features.items():
        column = EVENT_TIMESTAMP_PREFIX + view
        if column not in frame.columns:
            continue  # an on-demand view: computed from the row itself
        event_ts = pd.to_datetime(frame[column], utc=True)
        leaked = (event_ts > entity_ts).to_numpy()
        if leaked.any():
            examples = "; ".join(
                f"{row_id} at {at} got values from {when}"
                for row_id, at, when in list(zip(frame.loc[leaked, id_column], entity_ts[leaked],
                                                  event_ts[leaked]))[:5])
            problems.append(f"feature view {view!r} ({', '.join(features)}): {int(leaked.sum())} row(s) "
                            f"use values from after the row's timestamp, e.g. {examples}")
    if problems:
        raise TrainingError("leakage guard: " + " | ".join(problems))
    return frame.drop(columns=[c for c in frame.columns if c.startswith(EVENT_TIMESTAMP_PREFIX)])


def _utc(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def load_events(settings: Settings, use_case: UseCase, start=None, end=None,
                include_end: bool = False) -> pd.DataFrame:
    """The labelled events table built by the feature pipelines, optionally only the rows
    whose event timestamp is in [start, end) ([start, end] with ``include_end``; naive
    times are UTC). The window is applied while reading the Parquet file, so a week of
    events does not cost a year's conversion to pandas."""
    path = settings.sources / f"{use_case.events_table}.parquet"
    if not path.is_file():
        raise TrainingError(f"{path} is missing: run the feature pipelines (`pipeline features`) first")
    ts = use_case.event_timestamp
    filters = ([(ts, ">=", _utc(start))] if start is not None else []) + \
              ([(ts, "<=" if include_end else "<", _utc(end))] if end is not None else [])
    return pd.read_parquet(path, filters=filters or None)


def entity_frame(events: pd.DataFrame, use_case: UseCase, extra_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The entity dataframe Feast gets: id, timestamp, join keys, request inputs, label
    (and ``extra_columns``, carried through untouched, e.g. for the invariance checks)."""
    columns = [use_case.id_column, use_case.event_timestamp, *use_case.entity_columns, use_case.label,
               *[c for c in extra_columns if c not in use_case.entity_columns]]
    missing = [c for c in columns if c and c not in events.columns]
    if missing:
        raise TrainingError(f"events table {use_case.events_table!r} lacks column(s) {missing}")
    return events[[c for c in columns if c]].reset_index(drop=True)


def training_set(store, use_case: UseCase, events: pd.DataFrame, extra_columns: Sequence[str] = (),
                 guard: dict | None = None) -> pd.DataFrame:
    """Point-in-time-correct features for each event row, in the input row order.

    Feast may return rows in any order; they are put back in the entity frame's order by
    the use case's id column, and a lost or duplicated row is an error, not a surprise.
    The leakage guard runs when the offline store can report feature event times (the
    ASOF store can; Feast's Spark store cannot): ``guard["leakage_guard"]``, when a dict is
    given, says which happened, so training can record it. A command shows a clock while
    Feast joins (``core.progress.working``: the join reports nothing on the way).
    """
    entity_df = entity_frame(events, use_case, extra_columns)
    key = use_case.id_column
    if entity_df[key].duplicated().any():
        dupes = entity_df.loc[entity_df[key].duplicated(), key].head(5).tolist()
        raise TrainingError(f"events table: {key} is not unique, e.g. {dupes}")
    service = store.get_feature_service(use_case.feature_service)
    status = guard if guard is not None else {}
    with working("training set", f"{len(entity_df):,} rows through FeatureService "
                                 f"{use_case.feature_service!r}") as clock:
        job = store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=True)
        if hasattr(job, "include_event_timestamps"):
            job.include_event_timestamps = True
            frame = without_leakage(job.to_df(), use_case.event_timestamp, key, service_view_features(service))
            status["leakage_guard"] = "passed"
        else:
            frame = job.to_df()
            status["leakage_guard"] = (f"not run: {type(job).__name__} cannot report feature event times "
                                       "(only feast_plugins.asof_offline_store.AsofDuckDBOfflineStore can)")
        clock.note = f"{len(frame):,} rows x {len(frame.columns)} columns"
    if len(frame) != len(entity_df):
        raise TrainingError(
            f"Feast returned {len(frame)} rows for {len(entity_df)} entity rows: rows were dropped or duplicated"
        )
    frame = frame.set_index(key).loc[entity_df[key]].reset_index()
    return _utc_timestamps(frame)


def _utc_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """Feast's Spark offline store returns timestamps as naive UTC in nanoseconds; the
    DuckDB store as aware UTC in microseconds. Make every timestamp column aware UTC in
    nanoseconds so both profiles give equal frames."""
    for column in frame.columns:
        dtype = frame[column].dtype
        if pd.api.types.is_datetime64_dtype(dtype) and getattr(dtype, "tz", None) is None:
            frame[column] = frame[column].dt.tz_localize("UTC")
        if isinstance(frame[column].dtype, pd.DatetimeTZDtype):
            frame[column] = frame[column].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
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


def rows_matrix(rows: Sequence[Sequence], features: Sequence[str]) -> np.ndarray:
    """:func:`feature_matrix` for rows of values already in ``features`` order (online
    vectors, :meth:`serving.vector.OnlineVector.row_for`): NumPy converts them at once
    (None -> NaN, numbers and numeric strings -> float64); anything else is the same error
    as :func:`feature_matrix`, naming the feature."""
    try:
        matrix = np.array(rows, dtype="float64") if len(rows) else np.empty((0, len(features)))
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.shape != (len(rows), len(features)):
        features = list(features)
        return _vectors_matrix([dict(zip(features, row)) if len(row) == len(features) else {} for row in rows],
                               features)
    return matrix


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
