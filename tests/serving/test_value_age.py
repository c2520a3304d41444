"""The age of every served value: in the feature log (``age__<view>``), in ``/metrics`` as a
histogram per view, with each view's freshness objective beside it.

The expected ages come from Feast's own ``get_online_features`` (event timestamps
included), not from the server's direct read path that computes them."""

from __future__ import annotations

import gc
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from core.settings import Settings
from feast_plugins.store import feature_store
from serving.app import create_app
from serving.metrics import AGE_BUCKETS, BufferedAges, Metrics
from tests.serving.helpers import flights_after_serve_end, request_body, request_entity
from tests.serving.test_feature_log import read_log

pytestmark = pytest.mark.serving

#: Time-stamped views of the served model and their objectives (feature_repo/definitions/features.py).
OBJECTIVES = {"weather_hourly": 5400.0, "origin_recent": 7200.0, "carrier_daily": 93600.0,
              "origin_daily": 93600.0, "route_daily": 93600.0}


def settle_other_apps() -> None:
    """Write what earlier tests' apps still hold: in prometheus_client's multiprocess mode
    (which Feast's import can turn on for the whole test process) every app shares the
    histogram's values, and an app of an earlier test that is not yet collected flushes its
    buffered ages on its own timer, which would land between this test's two samples."""
    for obj in gc.get_objects():
        if isinstance(obj, BufferedAges):
            obj.flush()


def samples(client) -> list:
    text = client.get("/metrics").get_data(as_text=True)
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def feast_ages(data_dir, features: list[str], entities: list[dict], views: list[str]) -> dict[str, list]:
    """Per view, request time minus the event timestamp Feast's stock online read returns
    for its first feature of ``features`` (None where it has no row)."""
    store = feature_store(Settings.from_env({"DATA_DIR": str(data_dir)}))
    first = {view: next(f for f in features if f.startswith(view + "__")) for view in views}
    rows = [{k: ("" if v is None else v) for k, v in e.items() if k in ("origin", "dest", "carrier", "tailnum")}
            for e in entities]
    out = store.get_online_features(features=[f.replace("__", ":", 1) for f in first.values()], entity_rows=rows,
                                    full_feature_names=True)
    answer = out.to_dict(include_event_timestamps=True)
    return {view: [None if not ts else pd.Timestamp(e["scheduled_departure"]).timestamp() - ts
                   for e, ts in zip(entities, answer[first[view] + "__ts"])] for view in views}


def test_served_ages_are_logged_and_exposed_per_view(served_dir, use_case):
    """Flights in the hour after SERVE_END (every view fresh) and the same flights a day and
    a half later (the hourly views expired, the daily ones too): the log holds each view's
    age as Feast's own read gives it, expired values included; /metrics counts them in the
    histogram per view, and exports the objectives of the views that declare one."""
    app = create_app({"DATA_DIR": served_dir})
    client = app.test_client()
    flights = flights_after_serve_end(served_dir, use_case, 6)
    fresh = request_body(flights)
    late_flights = flights.assign(scheduled_departure=flights["scheduled_departure"] + timedelta(hours=36))
    late = request_body(late_flights)
    settle_other_apps()
    before = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(client)}
    for body in (fresh, late):
        assert client.post("/predict", json=body).status_code == 200
    state = app.extensions["serving"]
    state.feature_log.close()
    log = read_log(served_dir).sort_values(["served_at", "entity_index"]).reset_index(drop=True)
    assert len(log) == 12
    entities = [request_entity(r) for r in pd.concat([flights, late_flights]).itertuples()]
    views = [v for v in [*OBJECTIVES, "aircraft"] if any(f.startswith(v + "__") for f in state.model.features)]
    assert {"weather_hourly", "route_daily", "aircraft"} <= set(views), state.model.features
    expected = feast_ages(served_dir, state.model.features, entities, views)
    for view in views:
        assert f"age__{view}" in log.columns, f"no age__{view} column: {sorted(log.columns)}"
        got = log[f"age__{view}"].tolist()
        want = [np.nan if a is None else float(a) for a in expected[view]]
        assert np.allclose(got, want, equal_nan=True), f"{view}: logged {got}, Feast's read gives {want}"
    # Aircraft rows are stamped at the epoch, which Feast reports as 0, as it does "no row": no age.
    assert log["age__aircraft"].isna().all()
    # Fresh: every hourly value within its hour; late: expired, not served, its age kept.
    assert (log.loc[:5, "age__weather_hourly"] <= 3600).all()
    assert (log.loc[6:, "age__weather_hourly"] > 3 * 3600).all()
    assert all("weather_hourly__temp" in s for s in log.loc[6:, "stale_features"]), "expired weather was served"

    after = samples(client)
    counts = {s.labels["view"]: s.value - before.get((s.name, tuple(sorted(s.labels.items()))), 0)
              for s in after if s.name == "serving_feature_value_age_seconds_count"}
    for view in views[:-1]:  # aircraft: none
        observed = int(log[f"age__{view}"].ge(0).sum())
        assert observed > 0 and counts.get(view) == observed, f"{view}: histogram counted {counts.get(view)}, " \
                                                              f"{observed} values had an age"
    within_hour = {s.labels["view"]: s.value - before.get((s.name, tuple(sorted(s.labels.items()))), 0)
                   for s in after if s.name == "serving_feature_value_age_seconds_bucket" and s.labels["le"] == "3600.0"}
    assert within_hour["weather_hourly"] == 6, "the six fresh weather values are under an hour old"
    objectives = {s.labels["view"]: s.value for s in after if s.name == "serving_feature_freshness_objective_seconds"}
    assert objectives == {v: OBJECTIVES[v] for v in views if v in OBJECTIVES}, "aircraft declares none"


def test_a_request_before_the_values_logs_negative_ages_and_observes_none(served_dir, use_case):
    """Requests dated before the store's newest values: Feast returns the newer value, the
    server drops it; the log keeps its (negative) age, the histogram observes nothing."""
    app = create_app({"DATA_DIR": served_dir})
    client = app.test_client()
    flights = flights_after_serve_end(served_dir, use_case, 2)
    early = flights.assign(scheduled_departure=flights["scheduled_departure"] - timedelta(days=3))
    settle_other_apps()
    before = {s.labels.get("view"): s.value for s in samples(client)
              if s.name == "serving_feature_value_age_seconds_count"}
    assert client.post("/predict", json=request_body(early)).status_code == 200
    app.extensions["serving"].feature_log.close()
    log = read_log(served_dir)
    assert (log["age__weather_hourly"] < 0).all()
    after = {s.labels["view"]: s.value for s in samples(client) if s.name == "serving_feature_value_age_seconds_count"}
    assert after.get("weather_hourly", 0) == before.get("weather_hourly", 0)
    assert after.get("route_daily", 0) == before.get("route_daily", 0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.integers(-10_000, 2_000_000)), min_size=2, max_size=2),
                min_size=1, max_size=30), st.integers(1, 3))
def test_buffered_ages_equal_observe_per_value(rows, lookups):
    """BufferedAges writes the very buckets and sum ``Histogram.observe`` would, leaving out
    missing and negative ages, for ages handed over as lookups (request instants and
    timestamps, as ``OnlineFeatures.lookup`` keeps them), some vectors only, or directly."""
    from serving.online import AgeBatch, AgeViews

    metrics = Metrics()
    # Labels of this example's own: in prometheus_client's multiprocess mode (which Feast's
    # import can turn on for the whole test process) every Metrics shares its values.
    tag = uuid.uuid4().hex
    views = AgeViews((f"a{tag}", f"b{tag}"), (None, None))
    buffered = BufferedAges(metrics.value_age, seconds=3600)
    as_of = 1_400_000_000.0
    # Timestamps as Feast gives them, whole seconds (0: no value).
    stamps = [[0 if r[k] is None else as_of - r[k] for r in rows] for k in range(2)]
    batch = AgeBatch(views, [as_of] * len(rows), stamps)
    for _ in range(lookups - 1):
        buffered.add(batch)
    buffered.add(batch, [0])
    buffered.flush()
    reference = Metrics()
    for r in [*rows * (lookups - 1), rows[0]]:
        for view, age in zip(views.names, r):
            if age is not None and age >= 0:
                reference.value_age.labels("r" + view).observe(age)

    def histogram(m: Metrics, prefix: str) -> dict:
        [family] = [f for f in m.registry.collect() if f.name == "serving_feature_value_age_seconds"]
        return {(s.name, s.labels["view"][len(prefix):], s.labels.get("le")): round(s.value, 3)
                for s in family.samples
                if not s.name.endswith("_created") and s.labels["view"].startswith(prefix)
                and s.labels["view"].endswith(tag)}

    assert histogram(metrics, "") == histogram(reference, "r")
    assert len(AGE_BUCKETS) == len(set(AGE_BUCKETS)) and list(AGE_BUCKETS) == sorted(AGE_BUCKETS)
    assert {5400.0, 7200.0, 93600.0} <= set(AGE_BUCKETS), "the shipped objectives are bucket bounds"
