"""The server's direct read of the packed SQLite store answers exactly as Feast's
``get_online_features`` does on the same store (values, event timestamps, the on-demand
view through Feast's own transformation), and so do the TTL-checked vectors built on it."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from serving.online import OnlineFeatures
from tests.conftest import SERVE_END
from training.dataset import load_events
from training.registry import ModelRegistry

JOIN_KEYS = ["origin", "dest", "carrier", "tailnum"]


@pytest.fixture
def both_paths(served_dir):
    settings = Settings.from_env()
    store = feature_store(settings)
    model = ModelRegistry(settings.models).load_champion()
    service = model.metadata["feature_service"]
    direct = OnlineFeatures(store, service, model.features, JOIN_KEYS, "scheduled_departure")
    feast = OnlineFeatures(store, service, model.features, JOIN_KEYS, "scheduled_departure", direct=False)
    assert direct.direct is not None and feast.direct is None
    return direct, feast, settings


def entities(settings, use_case) -> list[dict]:
    """Flights of the two days around SERVE_END (fresh, stale and not-yet-known values),
    a null tailnum, unknown keys and a repeated entity."""
    events = load_events(settings, use_case)
    when = events["scheduled_departure"]
    near = events[(when > SERVE_END - timedelta(days=1)) & (when < SERVE_END + timedelta(days=1))]
    near = near.sample(n=150, random_state=5)
    rows = [{"origin": r.origin, "dest": r.dest, "carrier": r.carrier,
             "tailnum": None if pd.isna(r.tailnum) else r.tailnum,
             "scheduled_departure": r.scheduled_departure.to_pydatetime()} for r in near.itertuples()]
    rows[0]["tailnum"] = None
    rows[1]["tailnum"] = "N-NOT-THERE"
    rows[2].update(origin="XXX", dest="YYY", carrier="ZZ")
    rows.append(dict(rows[3]))
    return rows


def test_direct_read_equals_get_online_features(both_paths, use_case):
    direct, feast, settings = both_paths
    rows = entities(settings, use_case)
    for batch in ([rows[0]], [rows[2]], [rows[5]], rows):
        request = [direct._entity_row(e) for e in batch]
        got, want = direct._read(request), feast._read(request)
        assert got == want
    # Not vacuous: found and missing values, real timestamps, on-demand values.
    assert any(v is None for v in want["aircraft__seats"]) and any(v is not None for v in want["aircraft__seats"])
    assert 0 in want["route_daily__departures_7d__ts"] and max(want["route_daily__departures_7d__ts"]) > 0
    assert None not in want["departure_time__dep_hour_local"] and len(set(want["departure_time__dep_hour_local"])) > 3


def test_ttl_checked_vectors_are_the_same_on_both_paths(both_paths, use_case):
    direct, feast, settings = both_paths
    rows = entities(settings, use_case)
    got, want = direct.lookup(rows), feast.lookup(rows)
    assert got == want
    assert any(v.stale for v in want), "no stale value among the flights: the comparison misses TTL"
    assert any(not v.missing for v in want)


def test_feast_drops_python_on_demand_outputs_so_the_server_computes_them(both_paths, use_case):
    """The Feast 0.67 quirk RequestViews works around: under full feature names,
    get_online_features leaves a python-mode view's outputs out of its response. The
    server's values are those of the same view applied offline by get_historical_features."""
    direct, feast, settings = both_paths
    batch = entities(settings, use_case)[:20]
    rows = [direct._entity_row(e) for e in batch]
    on_demand = [f for f in direct.features if f.startswith("departure_time__")]
    assert len(on_demand) == 3
    raw = feast.store.get_online_features(features=feast.service, entity_rows=rows,
                                          full_feature_names=True).to_dict()
    assert not set(on_demand) & set(raw), "Feast now returns python-mode outputs: drop the workaround"
    served = direct._read(rows)
    assert {k: served[k] for k in raw} == raw  # everything else is Feast's answer
    entity_df = pd.DataFrame({"event_timestamp": [e["scheduled_departure"] for e in batch],
                              "scheduled_departure": [e["scheduled_departure"] for e in batch]})
    offline = feast.store.get_historical_features(
        entity_df=entity_df, features=[f.replace("__", ":", 1) for f in on_demand],
        full_feature_names=True).to_df()
    for feature in on_demand:
        assert served[feature] == offline[feature].tolist()


def test_python_on_demand_view_offline_sees_only_its_declared_columns(both_paths, use_case):
    """The ASOF store hands a python-mode view only what it declares (DeclaredInputsOnly):
    same answer as Feast's transform_arrow on the whole joined table, from fewer columns."""
    import pyarrow as pa

    from feast_plugins.asof_offline_store import DeclaredInputsOnly

    _, feast, settings = both_paths
    batch = entities(settings, use_case)[:30]
    entity_df = pd.DataFrame({"event_timestamp": [e["scheduled_departure"] for e in batch],
                              "scheduled_departure": [e["scheduled_departure"] for e in batch],
                              "origin": [e["origin"] for e in batch], "unrelated": range(len(batch))})
    job = feast.store.get_historical_features(
        entity_df=entity_df, features=["departure_time:dep_hour_local", "weather_hourly:temp"],
        full_feature_names=True)
    [applied] = job.on_demand_feature_views
    assert isinstance(applied, DeclaredInputsOnly) and applied.name == "departure_time"
    assert applied.declared_columns == {"scheduled_departure", "origin"}
    joined = job._to_arrow_internal()
    assert {"unrelated", "weather_hourly__temp"} <= set(joined.column_names)
    stock = applied._odfv.transform_arrow(joined, True)  # Feast's own call, on every column
    assert applied.transform_arrow(joined, True).equals(stock)
    assert job.to_df()["departure_time__dep_hour_local"].tolist() == stock["departure_time__dep_hour_local"].to_pylist()
    assert isinstance(stock, pa.Table) and stock.num_rows == len(batch)
