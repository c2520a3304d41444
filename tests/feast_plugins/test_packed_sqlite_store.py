"""The packed SQLite online store answers exactly as Feast's stock SQLite store does.

Both stores are materialized from the same registry and source tables (the Jan–Feb slice),
in two steps (a full load, then a later window that overwrites many keys), and compared
after each: every stored key of every view through ``online_read`` (event timestamp and
every feature's ``Value``), keys that are not there, and ``get_online_features`` for real
and missing entities.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from pipeline.apply import apply
from pipeline.materialize import EPOCH
from tests.feast_plugins.helpers import empty_copy

FIRST_END = datetime(2013, 2, 10, tzinfo=timezone.utc)
SECOND_END = datetime(2013, 2, 20, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def two_stores(slice_run, tmp_path_factory):
    """(packed FeatureStore, stock FeatureStore) over one registry, both empty."""
    from feast import FeatureStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import load_repo_config

    target = empty_copy(slice_run["settings"].data_dir, tmp_path_factory.mktemp("packed") / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(target))
        mp.delenv("PROFILE", raising=False)
        settings = Settings.from_env()
        apply(settings)
        packed = feature_store(settings)
        config = load_repo_config(settings.feature_repo, settings.feature_store_yaml)
        config._online_store = SqliteOnlineStoreConfig(path=str(target / "stock_online.db"))
        stock = FeatureStore(repo_path=str(settings.feature_repo), config=config)
        views = stock.list_feature_views()
        stock._get_provider().online_store.update(stock.config, [], views, [], [], partial=False)
        yield packed, stock


def stored_keys(store, view):
    from feast.infra.key_encoding_utils import deserialize_entity_key

    from feast_plugins.packed_layout import table_name

    conn = store._get_provider().online_store._get_conn(store.config)
    blobs = [k for (k,) in conn.execute(f'SELECT entity_key FROM "{table_name(store.project, view.name)}"')]
    version = store.config.entity_key_serialization_version
    return [deserialize_entity_key(b, entity_key_serialization_version=version) for b in blobs]


def missing_key(like):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    values = [Value(string_val="no-such-key") if v.HasField("string_val") else Value(int64_val=-987654)
              for v in like.entity_values]
    return EntityKey(join_keys=list(like.join_keys), entity_values=values)


def assert_same_reads(packed, stock):
    compared = 0
    for view in packed.list_feature_views():
        keys = stored_keys(packed, view)
        assert keys, f"view {view.name}: nothing materialized"
        keys = keys + [missing_key(keys[0])]
        got = packed._get_provider().online_store.online_read(packed.config, view, keys)
        want = stock._get_provider().online_store.online_read(stock.config, view, keys)
        assert len(got) == len(want) == len(keys)
        for key, (ts, values), (want_ts, want_values) in zip(keys, got, want):
            assert ts == want_ts, (view.name, key)
            if want_values is None:
                assert values is None
                continue
            assert values.keys() == want_values.keys(), (view.name, key)
            for name, value in want_values.items():
                assert values[name] == value, (view.name, key, name)
                compared += 1
        assert got[-1] == (None, None)
    assert compared > 10_000


def entity_rows(slice_run, n=300):
    from core.usecase import load_use_case
    from training.dataset import load_events

    events = load_events(slice_run["settings"], load_use_case()).sample(n=n, random_state=3)
    rows = [{"origin": r.origin, "dest": r.dest, "carrier": r.carrier, "tailnum": r.tailnum if isinstance(r.tailnum, str) else "",
             "scheduled_departure": r.scheduled_departure.to_pydatetime()} for r in events.itertuples()]
    rows[0]["tailnum"] = "N-NOT-THERE"
    rows[1]["origin"] = "XXX"
    return rows


def test_packed_store_reads_what_the_stock_store_reads(two_stores, slice_run):
    packed, stock = two_stores
    for end in (FIRST_END, SECOND_END):
        for store in (packed, stock):
            # The batch views: the stock store cannot hold the windowed (stream) views.
            store.materialize(start_date=EPOCH, end_date=end,
                              feature_views=[v.name for v in store.list_feature_views()])
        assert_same_reads(packed, stock)
    rows = entity_rows(slice_run)
    service = packed.get_feature_service("late_arrival_v1")
    got = packed.get_online_features(features=service, entity_rows=rows, full_feature_names=True)
    want = stock.get_online_features(features=service, entity_rows=rows, full_feature_names=True)
    got, want = got.to_dict(include_event_timestamps=True), want.to_dict(include_event_timestamps=True)
    assert got == want
    assert any(v is None for v in want["aircraft__seats"]) and any(v is not None for v in want["aircraft__seats"])


def test_one_row_per_entity_and_view(two_stores):
    from feast_plugins.packed_layout import table_name

    packed, stock = two_stores
    conn = packed._get_provider().online_store._get_conn(packed.config)
    stock_conn = stock._get_provider().online_store._get_conn(stock.config)
    for view in packed.list_feature_views():
        ours = conn.execute(f'SELECT count(*) FROM "{table_name(packed.project, view.name)}"').fetchone()[0]
        theirs = stock_conn.execute(f'SELECT count(*), count(DISTINCT entity_key) FROM "flights_{view.name}"').fetchone()
        assert ours == theirs[1] and theirs[0] == ours * len(view.features)


def test_arrow_write_stores_the_bytes_feasts_conversion_gives(tmp_path):
    """The engine's Arrow path and Feast's own conversion + online_write_batch store the
    same rows, for every packed type, nulls, NaN, a created timestamp and a repeated key."""
    import pyarrow as pa
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Bool, Float32, Float64, Int32, Int64, String
    from feast.utils import _convert_arrow_to_proto

    from feast_plugins.packed_layout import table_name
    from feast_plugins.packed_sqlite_store import PackedSqliteOnlineStore

    entity = Entity(name="k", join_keys=["k"], value_type=ValueType.STRING)
    number = Entity(name="n", join_keys=["n"], value_type=ValueType.INT64)
    source = FileSource(path=str(tmp_path / "x.parquet"), timestamp_field="ts", created_timestamp_column="created")
    view = FeatureView(name="v", entities=[entity, number], source=source, schema=[
        Field(name="d", dtype=Float64), Field(name="f", dtype=Float32), Field(name="i", dtype=Int64),
        Field(name="j", dtype=Int32), Field(name="s", dtype=String), Field(name="b", dtype=Bool),
        Field(name="k", dtype=String), Field(name="n", dtype=Int64)])
    ts = pa.array([1_356_998_400_123_456_789, 1_356_998_401_000_000_000, 0, 1_356_998_402_000_000_001],
                  pa.timestamp("ns", tz="UTC"))
    data = pa.table({
        "k": ["a", "b", "c", "a"], "n": [5, -2**40, 5, 5],
        "d": [0.1, None, float("nan"), -2.5], "f": pa.array([1.5, None, 2.25, 0.0], pa.float32()),
        "i": [1, None, -3, 2**40], "j": pa.array([7, -1, None, 0], pa.int32()),
        "s": ["x", None, "é", ""], "b": [True, False, None, True],
        "ts": ts, "created": ts})
    results = []
    for name, write in (("arrow", lambda store, config: store.online_write_arrow(config, view, data)),
                        ("feast", lambda store, config: store.online_write_batch(
                            config, view, _convert_arrow_to_proto(data, view, {"k": ValueType.STRING, "n": ValueType.INT64}), None))):
        config = RepoConfig(project="p", provider="local", registry=str(tmp_path / f"{name}.registry"),
                            online_store={"type": "feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore",
                                          "path": str(tmp_path / f"{name}.db")},
                            entity_key_serialization_version=3, repo_path=str(tmp_path))
        store = PackedSqliteOnlineStore()
        store.update(config, [], [view], [], [], partial=False)
        write(store, config)
        conn = store._get_conn(config)
        rows = conn.execute(f'SELECT * FROM "{table_name("p", "v")}" ORDER BY entity_key').fetchall()
        results.append([(key, ts, created, unpack_sorted(packed)) for key, ts, created, packed in rows])
    assert results[0] == results[1]
    assert len(results[0]) == 3


def unpack_sorted(blob):
    from feast_plugins.packed_layout import unpack

    return sorted((name, value.SerializeToString()) for name, value in unpack(blob).items())


@pytest.mark.parametrize("offline_store", ["feast_plugins.asof_offline_store.AsofDuckDBOfflineStore", "duckdb"])
def test_a_nanosecond_timezone_aware_source_materializes_as_with_the_stock_engine(tmp_path, offline_store):
    """pandas writes timezone-aware timestamps in nanoseconds; DuckDB reads them as
    TIMESTAMPTZ_NS and Feast's pull hands them on as text with an offset ('...000Z'). The
    packed engine stores what the stock engine and store store: the same event times, the
    same values, the newest row per key. (The newest rows are on whole seconds: the stock
    store keeps whole seconds, the packed one microseconds; the older rows' nanoseconds
    still have to parse, and order them.)"""
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    when = pd.to_datetime(["2013-01-03T01:00:00.999999999Z", "2013-01-02T07:00:00.000000999Z",
                           "2013-01-02T08:00:00Z", "2013-01-03T01:00:01Z", "2013-01-02T07:00:01Z"],
                          utc=True, format="ISO8601")
    frame = pd.DataFrame({"k": [1, 2, 3, 1, 2], "x": [0.5, 1.5, None, 2.5, 3.5], "ts": when, "created": when})
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    frame.to_parquet(tmp_path / "source.parquet")
    entity = Entity(name="k", join_keys=["k"], value_type=ValueType.INT64)
    source = FileSource(path=str(tmp_path / "source.parquet"), timestamp_field="ts", created_timestamp_column="created")
    view = FeatureView(name="v", entities=[entity], source=source,
                       schema=[Field(name="x", dtype=Float64), Field(name="k", dtype=Int64)])
    keys = [{"k": k} for k in (1, 2, 3, 9)]
    answers = []
    for name, online, engine in (
            ("packed", "feast_plugins.packed_sqlite_store.PackedSqliteOnlineStore",
             "feast_plugins.packed_sqlite_store.PackedLocalComputeEngine"),
            ("stock", "sqlite", "local")):
        config = RepoConfig(project="p", provider="local", registry=str(tmp_path / f"{name}.registry"),
                            online_store={"type": online, "path": str(tmp_path / f"{name}.db")},
                            offline_store={"type": offline_store}, batch_engine={"type": engine},
                            entity_key_serialization_version=3, repo_path=str(tmp_path))
        store = FeatureStore(config=config)
        store.apply([entity, view])
        store.materialize(start_date=datetime(2012, 1, 1, tzinfo=timezone.utc),
                          end_date=datetime(2014, 1, 1, tzinfo=timezone.utc))
        served = store.get_online_features(features=["v:x"], entity_rows=keys).to_dict(include_event_timestamps=True)
        stored = store._get_provider().online_store.online_read(
            store.config, store.get_feature_view("v"), [_int_key("k", k["k"]) for k in keys])
        answers.append((served, [(ts, values and {n: v.SerializeToString() for n, v in values.items()})
                                 for ts, values in stored]))
    assert answers[0] == answers[1]
    assert answers[0][0]["x"] == [2.5, 3.5, None, None]
    assert answers[0][1][1][0] == datetime(2013, 1, 2, 7, 0, 1, tzinfo=timezone.utc)


def test_event_times_given_as_text_are_read_with_their_offset():
    """The engine's timestamps as Feast's pull may hand them on: text with any offset (to
    the microsecond; nanoseconds dropped), text without one (UTC), or Arrow timestamps."""
    import pyarrow as pa

    from feast_plugins.packed_layout import arrow_micros

    t = 1_357_174_800_123_456  # 2013-01-03T01:00:00.123456Z
    texts = ["2013-01-03 01:00:00.123456789Z", "2013-01-03T01:00:00.123456+00:00", "2013-01-02 20:00:00.123456-05:00"]
    assert arrow_micros(pa.array(texts)) == [t] * 3
    assert arrow_micros(pa.array(["2013-01-03 01:00:00.123456"])) == [t]
    assert arrow_micros(pa.array([t * 1000 + 789], pa.timestamp("ns", tz="UTC"))) == [t]
    assert arrow_micros(pa.array([None, texts[0]])) == [None, t]


def _int_key(name: str, value: int):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[name], entity_values=[Value(int64_val=value)])
