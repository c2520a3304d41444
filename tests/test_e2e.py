"""End to end on two months of real flights: raw -> validate -> features -> apply ->
materialize -> train -> promote -> serve, and the promise that serving agrees with training.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from pipeline.apply import apply
from pipeline.materialize import EPOCH, materialize
from serving.app import create_app
from training.dataset import load_events
from training.registry import ModelRegistry
from training.score import score_events

pytestmark = pytest.mark.e2e

HELD_OUT_DAY = "2013-02-27"
STORE_TYPES = {"sqlite": "feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore",
               "redis": "feast_plugins.windowed_redis.WindowedRedisOnlineStore"}  # a weekday inside the holdout window (after 2013-02-15)


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_pipeline_trained_and_promoted_a_model(slice_run):
    result, promotion = slice_run["result"], slice_run["promotion"]
    model = result["metrics"]["model"]
    assert promotion["promoted"], f"the slice model failed the gate: {promotion}"
    assert model["auc"] > result["metrics"]["baseline"]["auc"], "model does not beat the carrier baseline"
    assert 0 < model["rows"], "empty holdout"


@pytest.mark.parametrize("online_store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_served_probability_equals_offline_for_every_flight_of_a_held_out_day(slice_run, use_case, monkeypatch,
                                                                             request, online_store):
    settings = slice_run["settings"]
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    if online_store == "redis":
        # The same definitions and server over a real redis-server (its own Feast registry file).
        monkeypatch.setenv("PROFILE", "redis")
        monkeypatch.setenv("REDIS_ADDRESS", request.getfixturevalue("redis_server").address)
        settings = Settings.from_env()
        apply(settings)
    events = load_events(settings, use_case)
    local_day = events["scheduled_departure"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d")
    day = events[local_day == HELD_OUT_DAY].sort_values("scheduled_departure").reset_index(drop=True)
    assert len(day) > 500, f"expected a full day of flights on {HELD_OUT_DAY}, got {len(day)}"

    store = feature_store(settings)
    model = ModelRegistry(settings.models).load_champion()
    offline = score_events(store, use_case, model, day).set_index(use_case.id_column)

    # Within one UTC hour every flight sees the same source rows (weather is hourly, the
    # aggregates daily), so materializing up to the first departure of each hour puts the
    # online store exactly where the offline join looks for that hour's flights.
    app = create_app({"DATA_DIR": settings.data_dir, "FEATURE_LOG_SAMPLE_RATE": 0})
    client = app.test_client()
    state = app.extensions["serving"]
    assert state.store.config.online_store.type == STORE_TYPES[online_store], "the app is not reading the store under test"
    # SQLite: the packed store, read directly (not through get_online_features); Redis: Feast's read.
    assert (state.slot.current().online.direct is not None) == (online_store == "sqlite")
    first = True
    checked = present = 0
    for _, group in day.groupby(day["scheduled_departure"].dt.floor("h"), sort=True):
        end = group["scheduled_departure"].min().to_pydatetime()
        materialize(settings, end=end, start=EPOCH if first else None)
        first = False
        body = {"flights": [
            {"origin": r.origin, "dest": r.dest, "carrier": r.carrier,
             "tailnum": None if pd.isna(r.tailnum) else r.tailnum, "flight": int(r.flight),
             "scheduled_departure": r.scheduled_departure.isoformat()}
            for r in group.itertuples()
        ]}
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.get_json()
        predictions = response.get_json()["predictions"]
        vectors = state.online.lookup([
            {**f, "scheduled_departure": pd.Timestamp(f["scheduled_departure"]).to_pydatetime()}
            for f in body["flights"]
        ])
        for row, served, vector in zip(group.itertuples(), predictions, vectors):
            expected = offline.loc[getattr(row, use_case.id_column)]
            for feature in model.features:
                offline_value = expected[feature]
                offline_value = None if pd.isna(offline_value) else offline_value
                present += offline_value is not None
                assert _same(vector.values[feature], offline_value), (
                    f"{getattr(row, use_case.id_column)} {feature}: served {vector.values[feature]!r}, "
                    f"training row {offline_value!r}")
            assert served["model_version"] == model.version
            flight_id = getattr(row, use_case.id_column)
            assert abs(served["probability"] - expected["probability"]) <= 1e-9, (
                f"{flight_id}: served {served['probability']} vs offline {expected['probability']}")
            checked += 1
    print(f"checked {checked} flights, {present} present feature values")
    assert checked == len(day)


def test_serving_rejects_malformed_requests_naming_the_field(slice_run, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(slice_run["settings"].data_dir))
    client = create_app({"DATA_DIR": slice_run["settings"].data_dir}).test_client()
    good = {"origin": "JFK", "dest": "LAX", "carrier": "AA", "tailnum": "N335AA", "flight": 1,
            "scheduled_departure": "2013-02-27T08:00:00-05:00"}
    cases = [
        ({**good, "scheduled_departure": "2013-02-27T08:00:00"}, "scheduled_departure"),
        ({**good, "flight": "one"}, "flight"),
        ({k: v for k, v in good.items() if k != "origin"}, "origin"),
        ({"flights": [good, {**good, "carrier": 7}]}, "flights[1].carrier"),
        ({"flights": []}, "flights"),
        ({**good, "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        response = client.post("/predict", json=body)
        assert response.status_code == 400, f"{body} was accepted"
        assert response.get_json()["field"] == field, response.get_json()
    assert client.post("/predict", data="not json", content_type="application/json").status_code == 400
    assert client.get("/healthz").status_code == 200
    assert client.get("/model").get_json()["feature_service"] == "late_arrival_v1"
