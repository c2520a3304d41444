"""Views without entities (global statistics) online: materialized into the packed SQLite
store and read back, they answer as Feast's stock SQLite store does, with the newest row.

Feast stores such a view under its placeholder entity (join key ``__dummy_id``, value
``""``), which every online request reads. Feast's stock DuckDB offline store cannot
materialize one (it never adds the placeholder key column Feast then reads); the ASOF store
adds it (``feast_plugins.asof_offline_store._keyless_pull``), and both online stores are
filled through it here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

BASE = datetime(2024, 3, 10, 12, 0, 0, tzinfo=timezone.utc)
START, END = BASE - timedelta(days=1), BASE + timedelta(days=1)
ASOF = {"type": "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"}
PACKED = ({"type": "feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore"},
          {"type": "feast_plugins.packed_sqlite_store.PackedLocalComputeEngine"})
STOCK = ({"type": "sqlite"}, {"type": "local"})


def _ts(seconds: int) -> datetime:
    return BASE + timedelta(seconds=seconds)


def _write_sources(data: Path) -> None:
    """Out of time order in the files, with an event-time tie the newer created time wins."""
    def write(name, frame):
        for col in ("ts", "created"):
            if col in frame:
                frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
        frame.to_parquet(data / f"{name}.parquet", index=False)

    write("g", pd.DataFrame({"ts": [_ts(20), _ts(30), _ts(5), _ts(30), _ts(30)],
                             "created": [_ts(100), _ts(101), _ts(109), _ts(104), _ts(90)],
                             "g1": [20.25, 30.25, 5.25, 30.5, 30.75], "g2": [20, 30, 5, 31, 32]}))
    write("h", pd.DataFrame({"ts": [_ts(40), _ts(0)], "h1": [40.25, 0.25]}))
    write("a", pd.DataFrame({"k": ["x", "y", "x"], "ts": [_ts(10), _ts(10), _ts(0)], "a1": [1.25, 2.25, 0.25]}))


#: What the newest rows say: g's row at 30 s created at 104 s, h's row at 40 s, a's at 10 s.
NEWEST = {"g__g1": 30.5, "g__g2": 31, "h__h1": 40.25}


def _definitions(data: Path):
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    k = Entity(name="k", join_keys=["k"], value_type=ValueType.STRING)

    def view(name, entities, fields, created=""):
        source = FileSource(name=f"{name}_src", path=str(data / f"{name}.parquet"), timestamp_field="ts",
                            created_timestamp_column=created)
        return FeatureView(name=name, entities=entities, ttl=timedelta(days=2), schema=fields, source=source,
                           online=True)

    views = [view("g", [], [Field(name="g1", dtype=Float64), Field(name="g2", dtype=Int64)], created="created"),
             view("h", [], [Field(name="h1", dtype=Float64)]),
             view("a", [k], [Field(name="a1", dtype=Float64)])]
    return [k, *views, FeatureService(name="svc", features=views)]


def _store(root: Path, data: Path, offline: dict, online_and_engine: tuple, pull_latest: bool = False):
    """A FeatureStore with its own registry and online file, over the shared sources."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    online, engine = online_and_engine
    root.mkdir(parents=True)
    config = RepoConfig(project="gl", provider="local", registry=str(root / "registry.db"),
                        online_store={**online, "path": str(root / "online.db")}, batch_engine=engine,
                        offline_store=offline, entity_key_serialization_version=3, repo_path=str(root),
                        materialization={"pull_latest_features": pull_latest})
    store = FeatureStore(repo_path=str(root), config=config)
    store.apply(_definitions(data))
    return store


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("entityless_data")
    _write_sources(path)
    return path


def test_stock_duckdb_store_cannot_materialize_a_view_without_entities(data, tmp_path):
    """Why the ASOF store adds the placeholder key: without it Feast cannot build the keys."""
    store = _store(tmp_path / "stock", data, {"type": "duckdb"}, STOCK)
    with pytest.raises(Exception, match="__dummy_id"):
        store.materialize(START, END, feature_views=["g"])


@pytest.mark.parametrize("pull_latest", [False, True], ids=["pull_all", "pull_latest"])
def test_packed_store_answers_views_without_entities_as_the_stock_store(data, tmp_path, pull_latest):
    """Materialized by each store's engine, every request (known, unknown keys) gets the same
    response from both stores: the newest row of each view without entities, whatever the key."""
    from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    packed = _store(tmp_path / "packed", data, ASOF, PACKED, pull_latest)
    stock = _store(tmp_path / "stock", data, ASOF, STOCK, pull_latest)
    for store in (packed, stock):
        store.materialize(START, END)
    rows = [{"k": "x"}, {"k": "y"}, {"k": "no-such-key"}]
    responses = [store.get_online_features(features=store.get_feature_service("svc"), entity_rows=rows,
                                           full_feature_names=True).to_dict(include_event_timestamps=True)
                 for store in (packed, stock)]
    assert responses[0] == responses[1]
    got = responses[0]
    for name, value in NEWEST.items():
        assert got[name] == [value] * len(rows), name
    assert got["g__g1__ts"] == [int(_ts(30).timestamp())] * len(rows)
    assert got["a__a1"] == [1.25, 2.25, None], "the keyed view still reads by key"

    placeholder = EntityKey(join_keys=[DUMMY_ENTITY_ID], entity_values=[Value(string_val=DUMMY_ENTITY_VAL)])
    for name in ("g", "h"):
        view = packed.get_feature_view(name)
        reads = [store._get_provider().online_store.online_read(store.config, view, [placeholder])
                 for store in (packed, stock)]
        assert reads[0] == reads[1] and reads[0][0][1], f"view {name}: stored rows differ"


def test_online_values_equal_the_point_in_time_join_after_the_newest_row(data, tmp_path):
    """Materialized online values are what get_historical_features gives an entity row
    timestamped after every source row."""
    packed = _store(tmp_path / "packed", data, ASOF, PACKED)
    packed.materialize(START, END)
    online = packed.get_online_features(features=["g:g1", "g:g2", "h:h1"], entity_rows=[{"k": "x"}],
                                        full_feature_names=True).to_dict()
    entity_df = pd.DataFrame({"k": ["x"], "event_timestamp": [_ts(60)]})
    offline = packed.get_historical_features(entity_df=entity_df, features=["g:g1", "g:g2", "h:h1"],
                                             full_feature_names=True).to_df()
    for name, value in NEWEST.items():
        assert online[name] == [value] == offline[name].tolist(), name


def test_the_servers_direct_read_answers_views_without_entities_as_feast(data, tmp_path):
    """The server's direct read of the packed store (``feast_plugins.packed_reader``) gives
    what Feast's ``get_online_features`` gives: the placeholder row for every request."""
    from feast_plugins.packed_reader import DirectRead

    packed = _store(tmp_path / "packed", data, ASOF, PACKED)
    packed.materialize(START, END)
    service = packed.get_feature_service("svc")
    rows = [{"k": "x"}, {"k": "no-such-key"}, {"k": "y"}]
    direct = DirectRead.for_store(packed, service)
    assert direct is not None, "the service does not qualify for the direct read"
    want = packed.get_online_features(features=service, entity_rows=rows,
                                      full_feature_names=True).to_dict(include_event_timestamps=True)
    assert direct.read(rows) == want
    assert want["g__g1"] == [NEWEST["g__g1"]] * len(rows)
