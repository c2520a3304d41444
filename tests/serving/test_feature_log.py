"""The served-feature log: complete rows, whole files only, joinable to offline features."""

from __future__ import annotations

import random

import pandas as pd
import pyarrow.dataset as ds
import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from serving.app import create_app
from tests.serving.helpers import flights_after_serve_end, query_string, request_body, request_entity
from training.dataset import training_set

pytestmark = pytest.mark.serving


def read_log(data_dir) -> pd.DataFrame:
    root = data_dir / "logs" / "served"
    if not root.exists():
        return pd.DataFrame()
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()


def test_rows_are_buffered_flushed_in_batches_and_on_close(served_dir, use_case):
    app = create_app({"DATA_DIR": served_dir, "FEATURE_LOG_BATCH_ROWS": 6})
    client = app.test_client()
    flights = flights_after_serve_end(served_dir, use_case, 4)
    body = request_body(flights)
    assert client.post("/predict", json=body).status_code == 200
    assert read_log(served_dir).empty, "4 rows < batch of 6: nothing written yet"
    assert client.post("/predict", json=body).status_code == 200
    # The writer thread writes a full batch off the request path.
    assert app.extensions["serving"].feature_log.wait_written(timeout=30)
    assert len(read_log(served_dir)) == 8, "the batch was not flushed once it reached 6 rows"
    # The writer runs at a lower CPU priority than the request threads (Linux: per thread).
    import os
    import sys

    from serving.featurelog import WRITER_NICE

    writer = app.extensions["serving"].feature_log._writer
    if sys.platform.startswith("linux"):
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, writer.native_id) == min(19, mine + WRITER_NICE)
        assert os.getpriority(os.PRIO_PROCESS, 0) == mine, "the request thread's priority changed"
    assert client.get("/features", query_string=query_string(body["flights"][0])).status_code == 200
    app.extensions["serving"].feature_log.close()
    log = read_log(served_dir)
    assert len(log) == 9
    files = list((served_dir / "logs" / "served").rglob("*"))
    assert not [f for f in files if f.name.startswith(".")], f"temporary files left: {files}"


def test_logged_rows_hold_what_was_served_and_join_back_to_offline_features(served_dir, use_case):
    app = create_app({"DATA_DIR": served_dir})
    client = app.test_client()
    flights = flights_after_serve_end(served_dir, use_case, 8)
    body = request_body(flights)
    answer = client.post("/predict", json=body).get_json()
    state = app.extensions["serving"]
    state.feature_log.close()
    log = read_log(served_dir).sort_values("entity_index").reset_index(drop=True)
    features = state.model.features
    assert len(log) == len(flights)
    assert (log["model_version"] == answer["model_version"]).all()
    assert log["probability"].tolist() == [p["probability"] for p in answer["predictions"]]
    assert log["missing_features"].map(list).tolist() == [p["missing_features"] for p in answer["predictions"]]
    assert log["flight"].tolist() == flights["flight"].astype(int).tolist()
    assert (log[use_case.event_timestamp] == flights["scheduled_departure"]).all()

    # The log is an entity dataframe: the point-in-time join over it gives the logged values.
    store = feature_store(Settings.from_env({"DATA_DIR": str(served_dir)}))
    entity_log = log.assign(**{use_case.id_column: range(len(log)), use_case.label: 0})
    offline = training_set(store, use_case, entity_log)
    for feature in features:
        served_values = log[feature].astype("float64")
        offline_values = pd.to_numeric(offline[feature]).astype("float64")
        same = (served_values == offline_values) | (served_values.isna() & offline_values.isna())
        assert same.all(), f"{feature}: logged {served_values[~same].tolist()} vs offline {offline_values[~same].tolist()}"


def test_sample_rate_samples_whole_requests_with_a_seeded_generator(served_dir, use_case):
    app = create_app({"DATA_DIR": served_dir, "FEATURE_LOG_SAMPLE_RATE": 0.3, "FEATURE_LOG_SEED": 7})
    client = app.test_client()
    entity = request_entity(next(flights_after_serve_end(served_dir, use_case, 1).itertuples()))
    for _ in range(40):
        assert client.post("/predict", json={"flights": [entity, entity]}).status_code == 200
    app.extensions["serving"].feature_log.close()
    rng = random.Random(7)
    expected = sum(rng.random() < 0.3 for _ in range(40))
    log = read_log(served_dir)
    assert len(log) == 2 * expected, f"expected {expected} sampled requests of 2 rows, got {len(log)} rows"
    assert 0 < expected < 40
    assert log.groupby("request_id").size().eq(2).all(), "a request must be logged whole or not at all"


def test_bad_sample_rate_is_refused_naming_the_setting(served_dir):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="FEATURE_LOG_SAMPLE_RATE"):
        create_app({"DATA_DIR": served_dir, "FEATURE_LOG_SAMPLE_RATE": 1.5})
    with pytest.raises(ConfigError, match="FEATURE_LOG_MAX_BUFFERED_ROWS"):
        create_app({"DATA_DIR": served_dir, "FEATURE_LOG_BATCH_ROWS": 10, "FEATURE_LOG_MAX_BUFFERED_ROWS": 5})


def test_a_writer_that_falls_behind_drops_whole_requests_and_counts_them(served_dir, use_case, monkeypatch):
    """With the writer stalled (here: never woken, as if the disk hung), the buffer stops at
    FEATURE_LOG_MAX_BUFFERED_ROWS: later requests are still answered, their rows counted as
    dropped, whole requests only; what was buffered is written at close."""
    from prometheus_client.parser import text_string_to_metric_families

    from serving.featurelog import FeatureLogger

    monkeypatch.setattr(FeatureLogger, "_run_writer", lambda self: None)  # a writer that never writes
    app = create_app({"DATA_DIR": served_dir, "FEATURE_LOG_BATCH_ROWS": 4, "FEATURE_LOG_MAX_BUFFERED_ROWS": 5})
    client = app.test_client()
    body = request_body(flights_after_serve_end(served_dir, use_case, 2))

    def dropped():
        text = client.get("/metrics").get_data(as_text=True)
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "serving_feature_log_dropped_rows_total")

    before = dropped()
    for _ in range(4):
        assert client.post("/predict", json=body).status_code == 200
    state = app.extensions["serving"]
    assert state.feature_log._pending_rows == 4 and state.feature_log.dropped_rows == 4
    assert dropped() - before == 4
    state.feature_log.close()
    log = read_log(served_dir)
    assert len(log) == 4 and log.groupby("request_id").size().eq(2).all()


def dropped_by_reason(client) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").get_data(as_text=True)
    return {s.labels.get("reason"): s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "serving_feature_log_dropped_rows_total"}


def test_rows_that_cannot_be_written_are_counted_and_readiness_says_so(served_dir, use_case):
    """An unwritable day directory (here: a file where it should be; root may write anywhere)
    loses rows: every one is counted, readiness reports it without an absolute path, and
    the next write that succeeds clears it."""
    from datetime import datetime, timedelta, timezone

    app = create_app({"DATA_DIR": served_dir, "FEATURE_LOG_BATCH_ROWS": 4})
    client = app.test_client()
    state = app.extensions["serving"]
    root = served_dir / "logs" / "served"
    root.mkdir(parents=True)
    today = datetime.now(timezone.utc)
    blocked = [root / f"date={day:%Y-%m-%d}" for day in (today, today + timedelta(days=1))]
    for path in blocked:
        path.write_text("not a directory")
    body = request_body(flights_after_serve_end(served_dir, use_case, 2))
    before = dropped_by_reason(client).get("write_failed", 0)
    for _ in range(2):  # a batch of 4 rows: the writer fails to write it
        assert client.post("/predict", json=body).status_code == 200
    assert state.feature_log.wait_written(timeout=30)
    assert client.post("/predict", json=body).status_code == 200  # 2 rows stay buffered
    assert dropped_by_reason(client).get("write_failed", 0) - before == 4
    ready = client.get("/readyz")
    assert ready.status_code == 200, "predictions are right: the log's loss degrades, it does not stop serving"
    body_json = ready.get_json()
    assert body_json["status"] == "degraded", body_json
    assert any("4 row(s) not written" in w and "served/date=" in w for w in body_json["warnings"]), body_json
    assert str(served_dir) not in ready.get_data(as_text=True), "answers name no absolute path"
    assert body_json["feature_log"]["dropped_rows"] == {"write_failed": 4}
    for path in blocked:
        path.unlink()
    state.feature_log.close()  # the 2 buffered rows are written now
    assert len(read_log(served_dir)) == 2
    assert state.feature_log.problem() is not None, "a loss stays reported for a while after it"
    assert state.feature_log.write_error is None
    assert dropped_by_reason(client).get("write_failed", 0) - before == 4
