"""Windowed views through the ASOF offline store's ``get_historical_features``, against the
brute-force reference of the contract (``windows_reference.py``), and their declaration.

A small Feast repository is applied once: an events table (keys ``k`` and ``j``,
``event_timestamp``, ``known_at``, values ``v`` and ``w``) behind a push source, and two
windowed ``StreamFeatureView`` s (one key, two keys) declaring every function over
windows of 1 minute to 1 day. Each hypothesis example rewrites the events file and asks
for every feature: events on a 30-second grid and entity rows on a 15-second grid hit the
window's edges exactly (``known_at = t - window``, excluded; ``known_at = t``, included);
event times before, equal to and after ``known_at``; rows out of order and duplicated;
keys without events; null keys, instants and values.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.errors import DefinitionError
from feast_plugins.windows import WindowSpec, parse_function, window_specs
from tests.feast_plugins.windows_reference import Event, reference_rows, values_equal

BASE = datetime(2024, 3, 10, 12, 0, 0, tzinfo=timezone.utc)
KEYS = ["x", "y", "z", "w"]  # "w" never has events
J_KEYS = ["p", "q"]
MIN = timedelta(minutes=1)

# No shrinking: an example costs a Feast retrieval, and the assertion names the row, the
# feature and both values already (shrinking a failure took minutes).
PROFILE = settings(max_examples=40, deadline=None, derandomize=True,
                   phases=(Phase.explicit, Phase.reuse, Phase.generate),
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _aggregations():
    from feast.aggregation import Aggregation

    one = [Aggregation(column="v", function=f, time_window=w, slide_interval=tile, name=f"{n}_{label}")
           for w, tile, label in ((MIN, timedelta(seconds=30), "1m"), (5 * MIN, MIN, "5m"))
           for f, n in (("count", "n"), ("sum", "s"), ("mean", "avg"), ("min", "lo"), ("max", "hi"),
                        ("last", "last"), ("share_gt:2", "share"))]
    one += [Aggregation(column="w", function="mean", time_window=2 * MIN, slide_interval=MIN, name="w_avg_2m"),
            Aggregation(column="w", function="last", time_window=2 * MIN, slide_interval=MIN, name="w_last_2m"),
            Aggregation(column="v", function="count", time_window=timedelta(days=1),
                        slide_interval=timedelta(hours=1), name="n_1d"),
            Aggregation(column="v", function="last", time_window=timedelta(days=1),
                        slide_interval=timedelta(hours=1), name="last_1d")]
    two = [Aggregation(column="v", function="count", time_window=2 * MIN, slide_interval=MIN, name="kj_n_2m"),
           Aggregation(column="v", function="sum", time_window=2 * MIN, slide_interval=MIN, name="kj_s_2m")]
    return one, two


def _sfv(name, entities, source, aggregations, outputs=None):
    from feast.field import Field
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import Float64, Int64, String

    schema = [Field(name=e.join_key, dtype=String) for e in entities]
    schema += [Field(name=a.name, dtype=Int64 if a.function == "count" else Float64) for a in aggregations]
    if outputs is not None:  # a declaration to refuse: these output fields instead
        schema = schema[:len(entities)] + outputs
    with warnings.catch_warnings():  # Feast: stream feature views are experimental
        warnings.simplefilter("ignore", RuntimeWarning)
        return StreamFeatureView(name=name, entities=entities, source=source, schema=schema,
                                 aggregations=aggregations, timestamp_field="known_at", online=False)


def _build_repo(root: Path):
    from feast import Entity, FeatureStore, FileSource, PushSource, ValueType
    from feast.repo_config import RepoConfig

    k = Entity(name="k", join_keys=["k"], value_type=ValueType.STRING)
    j = Entity(name="j", join_keys=["j"], value_type=ValueType.STRING)
    source = FileSource(name="events_src", path=str(root / "events.parquet"), timestamp_field="event_timestamp")
    push = PushSource(name="events_push", batch_source=source)
    one, two = _aggregations()
    views = [_sfv("wk", [k], push, one), _sfv("wkj", [k, j], push, two)]
    config = RepoConfig(project="win", provider="local", registry=str(root / "registry.db"),
                        online_store={"type": "sqlite", "path": str(root / "online.db")},
                        offline_store={"type": "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"},
                        entity_key_serialization_version=3, repo_path=str(root))
    store = FeatureStore(repo_path=str(root), config=config)
    _write_events(root, [])
    with warnings.catch_warnings():  # Feast: stream feature views are experimental
        warnings.simplefilter("ignore", RuntimeWarning)
        store.apply([k, j, push, *views])
    return store, views


def _write_events(root: Path, events: list[Event], tz: str = "UTC") -> None:
    frame = pd.DataFrame({
        "k": pd.array([e.keys["k"] for e in events], dtype="string"),
        "j": pd.array([e.keys["j"] for e in events], dtype="string"),
        "event_timestamp": pd.to_datetime([e.event_timestamp for e in events], utc=True),
        "known_at": pd.to_datetime([e.known_at for e in events], utc=True),
        "v": pd.array([e.values["v"] for e in events], dtype="Float64"),
        "w": pd.array([e.values["w"] for e in events], dtype="Float64"),
    })
    for col in ("event_timestamp", "known_at"):
        frame[col] = frame[col].dt.tz_convert(tz)
    frame.to_parquet(root / "events.parquet", index=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("win_repo")
    store, views = _build_repo(root)
    specs = {v.name: window_specs(store.get_stream_feature_view(v.name)) for v in views}
    return root, store, specs


def _at(seconds: int) -> datetime:
    return BASE + timedelta(seconds=seconds)


@st.composite
def scenarios(draw):
    """Events on a 30 s grid (a day earlier now and then: the 1-day window's edge), late
    or early event times, null values, duplicates; entity rows on a 15 s grid."""
    rare = st.integers(min_value=0, max_value=12).map(lambda n: n == 0)
    grid = st.integers(min_value=0, max_value=20).map(lambda n: 30 * n)
    value = st.one_of(st.integers(min_value=-4, max_value=6).map(lambda n: n / 2), st.none())
    events = []
    for _ in range(draw(st.integers(min_value=0, max_value=25))):
        known = draw(grid) - (86400 if draw(rare) else 0)
        lag = draw(st.sampled_from([0, 0, 30, 90, -30]))  # happened before, at, or "after" known
        key = {"k": draw(st.sampled_from(KEYS[:3])), "j": None if draw(rare) else draw(st.sampled_from(J_KEYS))}
        events.append(Event(key, _at(known - lag), _at(known), {"v": draw(value), "w": draw(value)}))
        if draw(rare):
            events.append(events[-1])  # an exact duplicate: two events
    rows = []
    for i in range(draw(st.integers(min_value=1, max_value=12))):
        k = draw(st.one_of(st.sampled_from(KEYS), st.none()))
        j = draw(st.one_of(st.sampled_from(J_KEYS), st.none()))
        t = None if draw(rare) else _at(15 * draw(st.integers(min_value=0, max_value=44)))
        rows.append({"row_id": f"r{i}", "k": k, "j": j, "event_timestamp": t})
    tz = draw(st.sampled_from(["UTC", "America/New_York"]))
    return events, rows, tz


def _entity_frame(rows: list[dict], tz: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["row_id", "k", "j", "event_timestamp"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).dt.tz_convert(tz)
    return frame


def _refs(specs) -> list[str]:
    return [f"{view}:{s.name}" for view, view_specs in specs.items() for s in view_specs]


def _assert_reference(result: pd.DataFrame, specs, events, rows, full_names: bool) -> None:
    assert result["row_id"].tolist() == [r["row_id"] for r in rows], "entity rows reordered or lost"
    for view, view_specs in specs.items():
        requests = [(tuple(r[k] for k in view_specs[0].join_keys), r["event_timestamp"]) for r in rows]
        expected = reference_rows(view_specs, events, requests)
        for spec in view_specs:
            column = f"{view}__{spec.name}" if full_names else spec.name
            got = result[column].tolist()
            for i, (g, want) in enumerate(zip(got, expected)):
                g = None if g is None or g is pd.NA or (isinstance(g, float) and math.isnan(g)) else g
                assert values_equal(spec, g, want[spec.name]), (
                    f"row {i} {rows[i]} {view}.{spec.name}: got {g}, reference {want[spec.name]}")


@PROFILE
@given(scenario=scenarios(), full_names=st.booleans(), form=st.sampled_from(["pandas", "parquet", "sql"]))
def test_every_value_equals_the_brute_force_reference(repo, tmp_path, scenario, full_names, form):
    root, store, specs = repo
    events, rows, tz = scenario
    _write_events(root, events, tz)
    frame = _entity_frame(rows, tz)
    if form == "pandas":
        entity_set = frame
    else:
        path = tmp_path / "entities.parquet"
        frame.to_parquet(path, index=False)
        entity_set = str(path) if form == "parquet" else f"SELECT * FROM read_parquet('{path}')"
    job = store.get_historical_features(entity_df=entity_set, features=_refs(specs),
                                        full_feature_names=full_names)
    result = job.to_df()
    _assert_reference(result, specs, events, rows, full_names)
    # Types: count Int64, everything else Float64, whatever the rows.
    arrow = job.to_arrow()
    for view, view_specs in specs.items():
        for spec in view_specs:
            column = f"{view}__{spec.name}" if full_names else spec.name
            assert str(arrow.schema.field(column).type) == ("int64" if spec.function == "count" else "double")


def test_hand_checked_window_edges(repo):
    """One key, three events: the values at the window's edges, worked out by hand."""
    root, store, specs = repo
    e = lambda s, v, et=None: Event({"k": "x", "j": "p"}, _at(et if et is not None else s), _at(s), {"v": v, "w": None})  # noqa: E731
    events = [e(0, 1.0), e(60, 3.0, et=0), e(60, 2.0, et=30), e(61, None)]
    _write_events(root, events)
    rows = [{"row_id": f"r{i}", "k": "x", "j": "p", "event_timestamp": _at(s)}
            for i, s in enumerate((-1, 0, 59, 60, 120, 121))]
    rows.append({"row_id": "r6", "k": None, "j": "p", "event_timestamp": _at(60)})
    out = store.get_historical_features(entity_df=_entity_frame(rows, "UTC"),
                                        features=["wk:n_1m", "wk:s_1m", "wk:last_1m", "wk:avg_1m"]).to_df()
    assert out["n_1m"].tolist()[:6] == [0, 1, 1, 2, 0, 0]       # (t-60, t]: 0 is out at t=60
    assert out["s_1m"].tolist()[:6] == [0.0, 1.0, 1.0, 5.0, 0.0, 0.0]
    # At 60 both events share known_at: the later event_timestamp (30 s) wins.
    assert [None if pd.isna(x) else x for x in out["last_1m"]][:6] == [None, 1.0, 1.0, 2.0, None, None]
    assert pd.isna(out["avg_1m"][0]) and out["avg_1m"][3] == 2.5
    assert out.iloc[6][["n_1m", "s_1m", "last_1m"]].isna().all()  # a null key: null, count included


def test_event_before_known_at_is_never_used(repo):
    """An event that happened long ago but became known at 60 s is invisible before 60 s."""
    root, store, _ = repo
    _write_events(root, [Event({"k": "x", "j": "p"}, _at(-3600), _at(60), {"v": 7.0, "w": 1.0})])
    rows = [{"row_id": f"r{i}", "k": "x", "j": "p", "event_timestamp": _at(s)} for i, s in enumerate((59, 60))]
    out = store.get_historical_features(entity_df=_entity_frame(rows, "UTC"), features=["wk:n_1d"]).to_df()
    assert out["n_1d"].tolist() == [0, 1]


@pytest.mark.parametrize("column,frame_change,message", [
    ("known_at", lambda f: f.drop(columns=["known_at"]), "no 'known_at' column"),
    ("event_timestamp", lambda f: f.assign(event_timestamp="yesterday"), "'event_timestamp' must be a timestamp"),
    ("k", lambda f: f.drop(columns=["k"]), "no key column 'k'"),
    ("v", lambda f: f.assign(v="a lot"), "value column 'v' must be numeric"),
])
def test_a_bad_events_table_is_refused_naming_source_and_column(repo, column, frame_change, message):
    root, store, _ = repo
    _write_events(root, [Event({"k": "x", "j": "p"}, _at(0), _at(0), {"v": 1.0, "w": 1.0})])
    frame = frame_change(pd.read_parquet(root / "events.parquet"))
    frame.to_parquet(root / "events.parquet", index=False)
    rows = _entity_frame([{"row_id": "r0", "k": "x", "j": "p", "event_timestamp": _at(0)}], "UTC")
    with pytest.raises(ValueError, match=f"events source 'events_src'.*{message}"):
        store.get_historical_features(entity_df=rows, features=["wk:n_1m", "wk:avg_1m", "wkj:kj_n_2m"]).to_df()


def test_the_stock_store_path_refuses_windowed_views(repo):
    """A retrieval the ASOF store hands to Feast's stock store (here: because another view
    reads a remote file) fails naming the windowed view instead of silently dropping it."""
    from feast import FeatureView, Field, FileSource
    from feast.types import Float64

    from feast_plugins.asof_offline_store import AsofDuckDBOfflineStore

    root, store, _ = repo
    view = store.get_stream_feature_view("wk")
    remote = FeatureView(name="remote", entities=[], schema=[Field(name="r", dtype=Float64)],
                         source=FileSource(name="remote_src", path="s3://bucket/r.parquet", timestamp_field="ts"))
    rows = _entity_frame([{"row_id": "r0", "k": "x", "j": "p", "event_timestamp": _at(0)}], "UTC")
    with pytest.raises(ValueError, match=r"windowed view\(s\) \['wk'\] cannot be joined here"):
        AsofDuckDBOfflineStore.get_historical_features(
            store.config, [view, remote], ["wk:n_1m", "remote:r"], rows, store.registry, "win", False)
    from feast_plugins.windowed_offline import WindowedSourceError, windowed_view_plan
    with pytest.raises(WindowedSourceError, match="not a local Parquet file"):
        windowed_view_plan(view, ["wk:n_1m"], False, None)


# --- the declaration (feast_plugins.windows) ---------------------------------------------

def test_parse_function():
    assert parse_function("mean") == ("mean", None)
    assert parse_function("share_gt:15") == ("share_gt", 15.0)
    assert parse_function("share_gt:-2.5") == ("share_gt", -2.5)
    for bad, message in (("median", "unknown function"), ("share_gt", "finite threshold"),
                         ("share_gt:x", "finite threshold"), ("share_gt:inf", "finite threshold"),
                         ("mean:3", "takes no argument")):
        with pytest.raises(DefinitionError, match=message):
            parse_function(bad, "view 'v'")


def _one(**changes):
    from feast import Entity, FileSource, PushSource, ValueType
    from feast.aggregation import Aggregation

    k = Entity(name="k", join_keys=["k"], value_type=ValueType.STRING)
    push = PushSource(name="p", batch_source=FileSource(name="s", path="/x.parquet", timestamp_field="event_timestamp"))
    agg = dict(column="v", function="mean", time_window=timedelta(hours=1), slide_interval=timedelta(minutes=5),
               name="m")
    agg.update(changes.pop("agg", {}))
    view = _sfv("vw", [k], push, [Aggregation(**agg)], changes.pop("outputs", None))
    for attr, value in changes.items():
        setattr(view, attr, value)
    return view


def test_window_specs_of_a_good_declaration():
    view = _one()
    assert window_specs(view) == [WindowSpec("vw", ("k",), "v", "mean", timedelta(hours=1),
                                             timedelta(minutes=5), "m", None)]


@pytest.mark.parametrize("change,message", [
    ({"agg": {"function": "median"}}, "unknown function"),
    ({"agg": {"slide_interval": timedelta(minutes=7)}}, "must be at least 0:00:01 and divide"),
    ({"agg": {"time_window": timedelta(seconds=30), "slide_interval": timedelta(seconds=10)}},
     "time_window must be at least"),
    ({"agg": {"column": "k"}}, "is a join key"),
    ({"timestamp_field": "event_timestamp"}, "timestamp_field must be 'known_at'"),
])
def test_window_specs_refuse_a_bad_declaration(change, message):
    view = _one(**change)
    with pytest.raises(DefinitionError, match=f"windowed view 'vw'.*{message}"):
        window_specs(view)


def test_window_specs_refuse_an_undeclared_or_mistyped_output():
    from feast.field import Field
    from feast.types import Float64, Int64

    with pytest.raises(DefinitionError, match="output 'm' is not in the view's schema"):
        window_specs(_one(outputs=[Field(name="other", dtype=Float64)]))
    with pytest.raises(DefinitionError, match="declared Int64; mean gives Float64"):
        window_specs(_one(outputs=[Field(name="m", dtype=Int64)]))
    assert window_specs(_one(outputs=[Field(name="m", dtype=Float64)]))[0].dtype == "Float64"
