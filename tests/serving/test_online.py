"""Online vectors follow the offline join's time rules (TTL and no values from the future)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from serving.errors import StoreUnavailable
from serving.online import OnlineFeatures

T0 = datetime(2013, 6, 1, 12, 0, tzinfo=timezone.utc)


class FakeStore:
    """Just enough of FeatureStore: one view 'w' (TTL 3h), one 'a' (TTL 0), one on-demand 'od'."""

    def __init__(self, rows):
        self.rows = rows
        self.entity_rows = None

    def get_feature_service(self, name):
        projections = [SimpleNamespace(name=n, name_to_use=lambda n=n: n) for n in ("w", "a", "od")]
        return SimpleNamespace(feature_view_projections=projections)

    def list_feature_views(self):
        return [SimpleNamespace(name="w", ttl=timedelta(hours=3)), SimpleNamespace(name="a", ttl=timedelta(0))]

    def list_stream_feature_views(self):
        return []

    def list_on_demand_feature_views(self):
        return []  # 'od' is answered like a pandas-mode view: by get_online_features itself

    def get_online_features(self, features, entity_rows, full_feature_names):
        self.entity_rows = entity_rows
        out = {}
        for name, (value, ts) in self.rows.items():
            out[name] = [value] * len(entity_rows)
            out[name + "__ts"] = [ts] * len(entity_rows)
        return SimpleNamespace(to_dict=lambda include_event_timestamps: out)


def lookup(rows, as_of=T0, key="K1"):
    store = FakeStore(rows)
    online = OnlineFeatures(store, "svc", list(rows), ["key"], "when", direct=False)
    return online.lookup([{"key": key, "when": as_of}])[0], store


def ts(dt):
    return int(dt.timestamp())


def test_fresh_values_pass_and_ttl_zero_never_expires():
    vec, _ = lookup({"w__x": (1.5, ts(T0 - timedelta(hours=3))), "a__y": (7, 0), "od__h": (12, 0)})
    assert vec.values == {"w__x": 1.5, "a__y": 7, "od__h": 12} and vec.missing == [] and vec.stale == []


def test_value_older_than_ttl_is_stale_and_missing():
    vec, _ = lookup({"w__x": (1.5, ts(T0 - timedelta(hours=3, seconds=1)))})
    assert vec.values["w__x"] is None and vec.stale == ["w__x"] and vec.missing == ["w__x"]


def test_value_newer_than_the_request_time_is_not_used():
    vec, _ = lookup({"w__x": (1.5, ts(T0 + timedelta(seconds=1)))})
    assert vec.values["w__x"] is None and vec.stale == ["w__x"]


def test_null_entity_key_reads_as_missing_instead_of_crashing():
    vec, store = lookup({"w__x": (None, 0)}, key=None)
    assert store.entity_rows[0]["key"] == "", "a null key must not reach Feast (it raises TypeError)"
    assert vec.missing == ["w__x"] and vec.stale == []


class BrokenRegistryStore(FakeStore):
    """A registry that cannot be read (deleted or damaged by hand)."""

    def get_online_features(self, features, entity_rows, full_feature_names):
        from feast.errors import FeatureViewNotFoundException

        raise FeatureViewNotFoundException("w", "flights")


def test_an_unreadable_registry_is_a_503_not_a_500():
    store = BrokenRegistryStore({"w__x": (1.5, ts(T0))})
    online = OnlineFeatures(store, "svc", ["w__x"], ["key"], "when", direct=False)
    with pytest.raises(StoreUnavailable, match="registry"):
        online.lookup([{"key": "K1", "when": T0}])
