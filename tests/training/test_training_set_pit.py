"""Training sets on the real flights slice: equal to stock Feast's, and guarded against leakage."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from feast_plugins import asof_offline_store
from feast_plugins.store import feature_store, stock_feature_store
from training.dataset import entity_frame, load_events, training_set
from training.errors import TrainingError
from training.train import run_training


@pytest.fixture(scope="module")
def slice_store(slice_run):
    settings = slice_run["settings"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(settings.data_dir))
        yield settings, feature_store(settings)


def test_training_set_equals_stock_feast_cell_for_cell(slice_store, use_case):
    """Every flight of the slice through the FeatureService: the ASOF store named in
    feature_store.yaml and Feast's stock DuckDB store give the same frame, dtypes included.
    (The stock store's row order is its own; it is put in entity order before comparing.)"""
    settings, store = slice_store
    assert isinstance(store._get_provider().offline_store, asof_offline_store.AsofDuckDBOfflineStore), \
        "feature_store.yaml does not name the ASOF store"
    entity_df = entity_frame(load_events(settings, use_case), use_case)
    service = store.get_feature_service(use_case.feature_service)
    ours = store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=True).to_df()
    stock = stock_feature_store(settings).get_historical_features(
        entity_df=entity_df, features=service, full_feature_names=True).to_df()
    key = use_case.id_column
    assert ours[key].tolist() == entity_df[key].tolist(), "the ASOF store reordered entity rows"
    stock = stock.set_index(key).loc[entity_df[key]].reset_index()
    pd.testing.assert_frame_equal(ours, stock, check_exact=True)
    features = [c for c in ours.columns if "__" in c]
    assert ours[features].notna().mean().mean() > 0.8, "the comparison is vacuous: features mostly missing"


def test_parquet_and_sql_entity_sets_give_the_dataframe_result(slice_store, use_case, tmp_path):
    settings, store = slice_store
    entity_df = entity_frame(load_events(settings, use_case), use_case).head(3000)
    path = tmp_path / "entities.parquet"
    entity_df.to_parquet(path, index=False)
    service = store.get_feature_service(use_case.feature_service)
    frames = [store.get_historical_features(entity_df=e, features=service, full_feature_names=True).to_df()
              for e in (entity_df, str(path), f"SELECT * FROM read_parquet('{path}')")]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])


def _leaky_sql(*args, **kwargs) -> str:
    """The store's query with the weather join looking forward: the next observation, not the last."""
    sql = _REAL_SQL(*args, **kwargs)
    first_view = sql.index("ORDER BY e.__feast_row) m0")  # the weather view comes first
    leaky = sql[:first_view].replace("e.__feast_ts >= f.__ts", "e.__feast_ts <= f.__ts") + sql[first_view:]
    assert leaky != sql, "the leak was not injected"
    return leaky


_REAL_SQL = asof_offline_store.point_in_time_sql


def test_training_fails_naming_the_leaky_view_and_rows(slice_run, slice_store, use_case, monkeypatch):
    settings, store = slice_store
    monkeypatch.setattr(asof_offline_store, "point_in_time_sql", _leaky_sql)
    with pytest.raises(TrainingError) as error:
        run_training(settings, use_case, store, slice_run["config"], say=lambda m: None)
    message = str(error.value)
    assert "leakage guard" in message and "'weather_hourly'" in message, message
    assert "weather_hourly__temp" in message and "aircraft" not in message, message
    assert re.search(r"\d+ row\(s\) use values from after the row's timestamp", message), message
    ids = set(load_events(settings, use_case)[use_case.id_column].astype(str))
    named = [token.strip(";,") for token in message.split() if token.strip(";,") in ids]
    assert named, f"no flight named in: {message}"


def test_the_guard_passes_an_honest_join(slice_store, use_case):
    settings, store = slice_store
    events = load_events(settings, use_case).head(500)
    frame = training_set(store, use_case, events)
    assert not any(c.startswith(asof_offline_store.EVENT_TIMESTAMP_PREFIX) for c in frame.columns), \
        "the guard's event-time columns must not reach the model"
