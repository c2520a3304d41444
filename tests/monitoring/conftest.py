"""Served traffic replayed hour by hour through the Flask app, as monitoring sees it."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from serving.app import create_app
from tests.conftest import SERVE_END, copy_data_dir
from tests.serving.helpers import request_entity
from training.dataset import load_events

#: Hours of traffic replayed after SERVE_END (the evening and night of 2013-02-27 in New
#: York and the morning of the 28th: every batch view's rows change at least once).
REPLAY_HOURS = 16


def replay(data_dir, use_case, start: datetime, hours: int, materialize: bool = True) -> int:
    """Serve every flight departing in [start, start + hours) through ``/predict``, one hour
    at a time; with ``materialize``, the online store is first brought up to each hour (as an
    hourly materialization job would), so the server sees what the offline join sees."""
    settings = Settings.from_env({"DATA_DIR": str(data_dir)})
    events = load_events(settings, use_case)
    store = feature_store(settings)
    app = create_app({"DATA_DIR": data_dir, "MODEL_CHECK_SECONDS": 0})
    client = app.test_client()
    served = 0
    for h in range(hours):
        begin = start + timedelta(hours=h)
        if materialize:
            store.materialize_incremental(end_date=begin)
        when = events["scheduled_departure"]
        flights = events[(when >= begin) & (when < begin + timedelta(hours=1))]
        entities = [request_entity(r) for r in flights.itertuples()]
        for i in range(0, len(entities), 100):
            answer = client.post("/predict", json={"flights": entities[i:i + 100]})
            assert answer.status_code == 200, answer.get_json()
        served += len(entities)
    app.extensions["serving"].feature_log.close()
    return served


@pytest.fixture(scope="module")
def replayed(served_template, tmp_path_factory, use_case):
    """A DATA_DIR of its own with REPLAY_HOURS of traffic served and logged."""
    data_dir = copy_data_dir(served_template, tmp_path_factory.mktemp("monitoring") / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(data_dir))
        mp.delenv("PROFILE", raising=False)
        served = replay(data_dir, use_case, SERVE_END, REPLAY_HOURS)
    return {"data_dir": data_dir, "served": served, "end": SERVE_END + timedelta(hours=REPLAY_HOURS),
            "served_until": pd.Timestamp.now(tz="UTC")}
