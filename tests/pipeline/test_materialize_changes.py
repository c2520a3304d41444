"""A change to rows the online store already holds reaches it in the same run.

Incremental materialization reads only rows newer than each view's last end. A slowly
changing table whose rows sit at the epoch (the aircraft registry) or a corrected row
from before the last end would never be read again, so the online store kept the old
value while training already used the new one. ``pipeline.materialize`` now reloads from
the epoch exactly the views whose already-loaded part changed (``loaded_digest``).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from pipeline.features import build_sources
from pipeline.ingest import ingest
from pipeline.materialize import EPOCH, LoadedState, loaded_digest, materialize

UTC = timezone.utc


class _View:
    """What ``loaded_digest`` reads of a Feast feature view."""

    def __init__(self, path, keys=("k",), ttl=timedelta(0)):
        from types import SimpleNamespace

        self.name, self.ttl = "v", ttl
        self.batch_source = SimpleNamespace(path=str(path), timestamp_field="ts", field_mapping={})
        self.entity_columns = [SimpleNamespace(name=k) for k in keys]


def _digest(tmp_path, rows: list[dict], until: datetime, keys=("k",), ttl=timedelta(0)) -> str:
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return loaded_digest(_View(path, keys, ttl), until)


def _t(hour: int) -> datetime:
    return datetime(2013, 1, 1, hour, tzinfo=UTC)


BASE = [{"k": "a", "ts": _t(1), "x": 1.0}, {"k": "a", "ts": _t(2), "x": 2.0},
        {"k": "b", "ts": _t(1), "x": 5.0}, {"k": "b", "ts": _t(9), "x": 6.0}]


def test_the_digest_changes_exactly_when_the_loaded_rows_do(tmp_path):
    until = _t(5)
    base = _digest(tmp_path, BASE, until)
    assert _digest(tmp_path, list(reversed(BASE)), until) == base, "row order must not matter"
    assert _digest(tmp_path, BASE[1:], until) == base, "an older row leaving the table is not a change"
    assert _digest(tmp_path, [*BASE, {"k": "b", "ts": _t(7), "x": 0.0}], until) == base, \
        "a row after the loaded end is the incremental window's job"
    assert _digest(tmp_path, [*BASE, {"k": "a", "ts": until, "x": 0.0}], until) == base, \
        "so is a row at the loaded end: the next window starts there, both ends included"
    edited = [dict(r, x=99.0) if (r["k"], r["ts"]) == ("a", _t(2)) else r for r in BASE]
    assert _digest(tmp_path, edited, until) != base, "an edited newest row must change the digest"
    assert _digest(tmp_path, [*BASE, {"k": "a", "ts": _t(3), "x": 3.0}], until) != base, \
        "a late row newer than the loaded one must change the digest"
    assert _digest(tmp_path, [r for r in BASE if r["k"] != "a"], until) != base, "a removed key must change it"
    assert _digest(tmp_path, [*BASE, {"k": "c", "ts": _t(1), "x": 1.0}], until) != base, "a new key must change it"


def test_with_a_ttl_the_digest_covers_what_can_still_be_served(tmp_path):
    """A key whose newest row is older than the TTL is stale online and offline alike: its
    rows may change (a sliding history recomputes its oldest days) without a reload."""
    until, ttl = _t(5), timedelta(hours=3)
    base = _digest(tmp_path, BASE, until, ttl=ttl)
    stale_edited = [dict(r, x=-1.0) if r["k"] == "b" else r for r in BASE]  # b: newest up to 5h at 1h, older than 2h
    assert _digest(tmp_path, stale_edited, until, ttl=ttl) == base, "a stale key's edit must not reload"
    fresh_edited = [dict(r, x=-1.0) if (r["k"], r["ts"]) == ("a", _t(2)) else r for r in BASE]
    assert _digest(tmp_path, fresh_edited, until, ttl=ttl) != base, "a servable row's edit must change it"
    assert _digest(tmp_path, fresh_edited, until) != _digest(tmp_path, BASE, until), "TTL 0: no limit"


def test_the_digest_of_a_view_without_entities_follows_its_newest_row(tmp_path):
    until = _t(5)
    base = _digest(tmp_path, BASE, until, keys=())
    assert _digest(tmp_path, BASE[:1] + BASE[1:], until, keys=()) == base
    assert _digest(tmp_path, [dict(r, x=7.0) if r["ts"] == _t(2) else r for r in BASE], until, keys=()) != base


def _aircraft_seats(settings: Settings, tailnum: str) -> int | None:
    store = feature_store(settings)
    online = store.get_online_features(features=["aircraft:seats"], entity_rows=[{"tailnum": tailnum}])
    return online.to_dict()["seats"][0]


@pytest.mark.e2e
@pytest.mark.parametrize("profile", ["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def test_an_edited_reference_row_reaches_the_online_store_after_the_window_moved(
        slice_run, raw_slice_dir, use_case, tmp_path, monkeypatch, applied_copy, profile):
    """Materialize twice (the window moves past the epoch-stamped aircraft rows), then edit
    one aircraft's seats in RAW_DIR and run ingest -> features -> materialize: the online
    store answers the new seats, and only the aircraft view was reloaded."""
    raw = tmp_path / "raw"
    shutil.copytree(raw_slice_dir, raw)
    settings = applied_copy(profile, raw_dir=raw)
    as_of = slice_run["snapshot"].as_of
    first, second = as_of - timedelta(days=2), as_of - timedelta(days=1)
    materialize(settings, end=first, start=EPOCH)
    materialize(settings, end=second)

    planes = pd.read_parquet(raw / "planes.parquet")
    tailnum = "N10156"
    before = int(planes.loc[planes["tailnum"] == tailnum, "seats"].iloc[0])
    assert _aircraft_seats(settings, tailnum) == before, "the store does not hold the aircraft rows to start with"
    planes.loc[planes["tailnum"] == tailnum, "seats"] = before + 7
    planes.to_parquet(raw / "planes.parquet", index=False)

    snapshot = ingest(settings, use_case)
    build_sources(settings, use_case, snapshot)
    views = [v.name for v in feature_store(settings).list_feature_views()]
    digests_before = dict(LoadedState(settings).views)
    calls = _record_materializations(monkeypatch)
    materialize(settings, end=as_of)
    assert _aircraft_seats(settings, tailnum) == before + 7, "the edited row did not reach the online store"

    # Only the aircraft view was reloaded from the epoch; every other view continued from its last end.
    assert calls == [("from the epoch", ["aircraft"]),
                     ("incremental", sorted(v for v in views if v != "aircraft"))], calls
    state = LoadedState(settings).views
    assert state["aircraft"]["digest"] != digests_before["aircraft"]["digest"]
    assert all(datetime.fromisoformat(state[name]["until"]) == as_of for name in views), state
    assert _aircraft_seats(settings, "N10575") is not None, "reloading the view lost its other rows"


def _record_materializations(monkeypatch) -> list:
    """Record each FeatureStore.materialize(_incremental) call's kind and views, then run it."""
    from feast import FeatureStore

    calls = []
    stock, incremental = FeatureStore.materialize, FeatureStore.materialize_incremental

    def from_start(self, start_date, end_date, feature_views=None, **kwargs):
        calls.append(("from the epoch" if start_date == EPOCH else str(start_date), sorted(feature_views or [])))
        return stock(self, start_date, end_date, feature_views=feature_views, **kwargs)

    def onwards(self, end_date, feature_views=None, **kwargs):
        calls.append(("incremental", sorted(feature_views or [])))
        return incremental(self, end_date, feature_views=feature_views, **kwargs)

    monkeypatch.setattr(FeatureStore, "materialize", from_start)
    monkeypatch.setattr(FeatureStore, "materialize_incremental", onwards)
    return calls
