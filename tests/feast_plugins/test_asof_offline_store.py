"""The ASOF offline store against a brute-force point-in-time join written plainly in Python,
and against Feast's stock DuckDB store.

A small Feast repository (five feature views: one key, two keys, none, and an on-demand
view) is applied once; each hypothesis example rewrites the views' Parquet files and asks
``get_historical_features``. Every cell is compared with :func:`reference_join`, which
reads the rule straight from Feast's documentation: the newest row with the same keys (any
row, for a view without entities) and ``event_ts <= entity_ts``, ties on event time to the
newest created time, used only if ``event_ts + ttl >= entity_ts``. The stock store is held
to the same reference on the views it accepts, so the reference is Feast's rule, not ours.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BASE = datetime(2024, 3, 10, 12, 0, 0, tzinfo=timezone.utc)
KEYS = ["x", "y", "z", "w"]  # "w" never has feature rows: a missing entity
J_KEYS = ["p", "q"]

# view -> (join keys, ttl, has a created column, features, day shift of its timestamps)
VIEWS = {
    "a": (("k",), timedelta(seconds=10), True, ("a1", "a2"), 0),
    "b": (("k", "j"), timedelta(0), False, ("b1",), 0),
    # A TTL mixing days and seconds (the stock store rejects it); its rows sit a day
    # earlier so the boundary (entity_ts - 1 day - 5 s) is hit on both sides.
    "c": (("k",), timedelta(days=1, seconds=5), False, ("c1",), -1),
    # Views without entities (global statistics): Feast gives them its placeholder entity
    # and every entity row, whatever its keys, takes the view's newest row.
    "g": ((), timedelta(seconds=10), True, ("g1",), 0),
    "h": ((), timedelta(0), False, ("h1",), 0),
}
#: The views Feast's stock DuckDB store accepts (not c's TTL).
STOCK_VIEWS = ("a", "b", "g", "h")

PROFILE = settings(max_examples=100, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _build_repo(root: Path, offline_store: dict):
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.repo_config import RepoConfig
    from feast.types import Float64, Int64

    entities = {k: Entity(name=k, join_keys=[k], value_type=ValueType.STRING) for k in ("k", "j")}
    views = []
    for name, (keys, ttl, created, features, _) in VIEWS.items():
        source = FileSource(name=f"{name}_src", path=str(root / f"{name}.parquet"),
                            timestamp_field="ts", created_timestamp_column="created" if created else "")
        schema = [Field(name=f, dtype=Int64 if f == "a1" else Float64) for f in features]
        views.append(FeatureView(name=name, entities=[entities[k] for k in keys], ttl=ttl,
                                 schema=schema, source=source, online=False))

    @on_demand_feature_view(sources=[views[0]], schema=[Field(name="a1_plus", dtype=Float64)], mode="pandas")
    def a_odfv(inputs: pd.DataFrame) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"a1_plus": inputs["a1"].astype("float64") + 0.5}, index=inputs.index)

    config = RepoConfig(project="pit", provider="local", registry=str(root / "registry.db"),
                        online_store={"type": "sqlite", "path": str(root / "online.db")},
                        offline_store=offline_store, entity_key_serialization_version=3,
                        repo_path=str(root))
    store = FeatureStore(repo_path=str(root), config=config)
    _write_sources(root, {name: [] for name in VIEWS})
    store.apply([*entities.values(), *views, a_odfv])
    return store


def _write_sources(root: Path, rows: dict[str, list[dict]], tz: str = "UTC") -> None:
    """Each view's rows to its Parquet file; a view missing from ``rows`` gets none."""
    for name, (keys, _, created, features, _) in VIEWS.items():
        columns = [*keys, "ts", *(["created"] if created else []), *features]
        frame = pd.DataFrame(rows.get(name, []), columns=columns)
        for col in ("ts", "created"):
            if col in frame:
                frame[col] = pd.to_datetime(frame[col], utc=True)
                frame[col] = frame[col].dt.tz_localize(None) if tz == "naive" else frame[col].dt.tz_convert(tz)
        frame["a1" if name == "a" else features[0]] = frame[features[0]].astype(
            "int64" if name == "a" else "float64")
        for col in keys:
            frame[col] = frame[col].astype("string")
        frame.to_parquet(root / f"{name}.parquet", index=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pit_repo")
    store = _build_repo(root, {"type": "feast_plugins.asof_offline_store.AsofDuckDBOfflineStore"})
    return root, store


FEATURE_REFS = ["a:a1", "a:a2", "b:b1", "c:c1", "g:g1", "h:h1", "a_odfv:a1_plus"]


def reference_join(entities: list[dict], rows: dict[str, list[dict]]) -> list[dict[str, set]]:
    """For each entity row and view: the set of acceptable feature tuples (one element unless
    rows tie on event *and* created time, which Feast leaves unordered); {None} if none.
    A view without keys compares none: all its rows are candidates for every entity row.
    A null key or timestamp equals nothing, as in SQL."""
    out = []
    for ent in entities:
        answer = {}
        for name, (keys, ttl, created, features, _) in VIEWS.items():
            candidates = []
            for row in rows[name]:
                if any(ent[k] is None or row[k] is None or row[k] != ent[k] for k in keys):
                    continue
                if ent["event_timestamp"] is None or row["ts"] is None or row["ts"] > ent["event_timestamp"]:
                    continue
                if ttl and row["ts"] + ttl < ent["event_timestamp"]:
                    continue
                candidates.append(row)
            if not candidates:
                answer[name] = {None}
                continue
            newest = max(r["ts"] for r in candidates)
            candidates = [r for r in candidates if r["ts"] == newest]
            if created:
                rank = lambda r: r["created"] or datetime.min.replace(tzinfo=timezone.utc)  # noqa: E731
                best = max(rank(r) for r in candidates)
                candidates = [r for r in candidates if rank(r) == best]
            answer[name] = {tuple(r[f] for f in features) for r in candidates}
        out.append(answer)
    return out


def _value(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _assert_matches_reference(result: pd.DataFrame, entities: list[dict], rows, full_names: bool,
                              views=tuple(VIEWS), ordered: bool = True):
    """Every cell of ``views`` (and the on-demand view) is one the reference allows.
    ``ordered=False`` (the stock store: its row order is its own) puts rows in entity order first."""
    expected = reference_join(entities, rows)
    assert len(result) == len(entities), f"{len(result)} rows back for {len(entities)} entity rows"
    if not ordered:
        result = result.assign(__order=result["row_id"].str[1:].astype(int)).sort_values("__order")
    assert result["row_id"].tolist() == [e["row_id"] for e in entities], "entity rows reordered"
    for i, (ent, want) in enumerate(zip(entities, expected)):
        got_row = result.iloc[i]
        for name in views:
            features = VIEWS[name][3]
            cols = [f"{name}__{f}" if full_names else f for f in features]
            got = tuple(_value(got_row[c]) for c in cols)
            ok = {tuple(None for _ in features)} if want[name] == {None} else want[name]
            assert got in ok, f"row {i} ({ent}) view {name}: got {got}, reference allows {ok}"
        if "a" not in views:
            continue
        a1 = _value(got_row["a_odfv__a1_plus" if full_names else "a1_plus"])
        a1_ref = _value(got_row["a__a1" if full_names else "a1"])
        assert a1 == (None if a1_ref is None else a1_ref + 0.5), f"row {i}: on-demand value {a1}"


def _ts(day_shift: int, seconds: int) -> datetime:
    return BASE + timedelta(days=day_shift, seconds=seconds)


@st.composite
def scenarios(draw):
    """Small event data built to hit ties, equal timestamps and both sides of each TTL."""
    # Feature rows on a coarse grid, so equal event times (ties) are common; entity rows on
    # every second, so each TTL boundary (row + 10 s, row + 1 day 5 s) is met exactly.
    offsets = st.sampled_from([0, 5, 10, 15, 20, 25, 30])
    # Now and then a row without a key or an event time: it matches nothing.
    key_values = {"k": st.sampled_from(KEYS[:3]), "j": st.sampled_from(J_KEYS)}
    rare_none = st.integers(min_value=0, max_value=15).map(lambda n: n == 0)
    rows = {}
    for name, (keys, _, created, features, shift) in VIEWS.items():
        n = draw(st.integers(min_value=0, max_value=12))
        view_rows = []
        for _ in range(n):
            row = {k: None if draw(rare_none) else draw(key_values[k]) for k in keys}
            row["ts"] = None if draw(rare_none) else _ts(shift, draw(offsets))
            if created:
                # Few distinct created times, so event-time ties often tie on created too;
                # sometimes missing (it then loses every tie, as in Feast's NULLS LAST order).
                created_s = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=3)))
                row["created"] = None if created_s is None else _ts(0, 100 + created_s)
            for f in features:
                row[f] = draw(st.integers(min_value=-50, max_value=50))
                row[f] = row[f] if f == "a1" else float(row[f]) + 0.25
            view_rows.append(row)
        rows[name] = view_rows  # list order is file order: out of order and late rows included
    m = draw(st.integers(min_value=1, max_value=10))
    entities = []
    for i in range(m):
        entities.append({
            "row_id": f"r{i}",
            "k": draw(st.one_of(st.sampled_from(KEYS), st.none())),
            "j": draw(st.one_of(st.sampled_from(J_KEYS), st.none())),
            "event_timestamp": None if draw(rare_none) else _ts(0, draw(st.integers(min_value=0, max_value=45))),
        })
    if draw(st.booleans()):  # duplicate entity rows, kept as duplicates
        entities.append(dict(entities[0], row_id=f"r{m}"))
    tz_in = draw(st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata"]))
    tz_src = draw(st.sampled_from(["UTC", "Europe/Berlin", "naive"]))
    return rows, entities, tz_in, tz_src


def _entity_frame(entities: list[dict], tz: str) -> pd.DataFrame:
    frame = pd.DataFrame(entities, columns=["row_id", "k", "j", "event_timestamp"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).dt.tz_convert(tz)
    return frame


@PROFILE
@given(scenario=scenarios(), full_names=st.booleans(), form=st.sampled_from(["pandas", "parquet", "sql"]))
def test_every_cell_equals_the_brute_force_reference(repo, scenario, full_names, form):
    root, store = repo
    rows, entities, tz_in, tz_src = scenario
    _write_sources(root, rows, tz_src)
    frame = _entity_frame(entities, tz_in)
    if form == "pandas":
        entity_set = frame
    else:
        path = root / "entities.parquet"
        frame.to_parquet(path, index=False)
        entity_set = str(path) if form == "parquet" else f"SELECT * FROM read_parquet('{path}')"
    result = store.get_historical_features(entity_df=entity_set, features=FEATURE_REFS,
                                           full_feature_names=full_names).to_df()
    _assert_matches_reference(result, entities, rows, full_names)


def test_entity_sets_from_parquet_and_sql_give_the_pandas_result(repo, tmp_path):
    root, store = repo
    rows = {"a": [{"k": "x", "ts": _ts(0, 5), "created": _ts(0, 100), "a1": 1, "a2": 2.25}],
            "b": [{"k": "x", "j": "p", "ts": _ts(0, 1), "b1": 3.25}],
            "c": [{"k": "x", "ts": _ts(-1, 9), "c1": 4.25}]}
    _write_sources(root, rows)
    entities = [{"row_id": f"r{i}", "k": k, "j": "p", "event_timestamp": _ts(0, s)}
                for i, (k, s) in enumerate([("x", 20), ("x", 4), ("w", 9), ("x", 14), ("x", 15)])]
    frame = _entity_frame(entities, "UTC")
    path = tmp_path / "entities.parquet"
    frame.to_parquet(path, index=False)
    results = [store.get_historical_features(entity_df=e, features=FEATURE_REFS).to_df()
               for e in (frame, str(path), path, f"SELECT * FROM read_parquet('{path}')")]
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other)
    got = results[0].set_index("row_id")
    # Hand-checked: a's TTL is 10 s (valid at 15 s, gone at 20 s: 5 + 10 < 20), c's 1 day 5 s.
    assert got.loc["r3", "a1"] == 1 and got.loc["r4", "a1"] == 1 and pd.isna(got.loc["r0", "a1"])
    assert pd.isna(got.loc["r1", "a1"]) and pd.isna(got.loc["r2", "b1"]), "future or missing values leaked in"
    assert got.loc["r3", "c1"] == 4.25 and pd.isna(got.loc["r4", "c1"]), "c's TTL boundary: 9 + 5 s"


def test_bad_entity_sets_fail_naming_the_problem(repo):
    _, store = repo
    with pytest.raises(ValueError, match="lacks join key column"):
        store.get_historical_features(
            entity_df="SELECT 'x' AS k, TIMESTAMPTZ '2024-03-10 12:00:00+00' AS event_timestamp",
            features=FEATURE_REFS)
    with pytest.raises(ValueError, match="missing.parquet"):
        store.get_historical_features(entity_df="/nonexistent/missing.parquet", features=FEATURE_REFS)
    null_ts = store.get_historical_features(
        entity_df="SELECT 'r0' AS row_id, 'x' AS k, 'p' AS j, NULL::TIMESTAMPTZ AS event_timestamp",
        features=FEATURE_REFS).to_df()
    assert len(null_ts) == 1 and null_ts[["a1", "b1", "c1"]].isna().all(axis=None), \
        "a row without a timestamp must be kept, with no features"
    with pytest.raises(ValueError, match="event timestamp column"):
        store.get_historical_features(entity_df="SELECT 'x' AS k, 'p' AS j", features=["a:a1"])


@pytest.fixture(scope="module")
def stock(repo):
    """Feast's stock DuckDB offline store over the same registry and files."""
    from feast import FeatureStore
    from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig

    root, store = repo
    stock_config = store.config.model_copy()
    stock_config._offline_store = DuckDBOfflineStoreConfig()
    return FeatureStore(repo_path=str(root), config=stock_config)


def _refs(views) -> list[str]:
    """FEATURE_REFS of ``views``, with the on-demand view when its source ``a`` is there."""
    return [r for r in FEATURE_REFS if r.split(":")[0] in views or (r.startswith("a_odfv:") and "a" in views)]


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios(), full_names=st.booleans(),
       views=st.sampled_from([("g",), ("g", "h"), ("a", "g"), STOCK_VIEWS]))
def test_stock_feast_obeys_the_same_reference(repo, stock, scenario, full_names, views):
    """Feast's stock DuckDB store, on the views it accepts (without entities alone, mixed
    with keyed ones), answers what the reference allows, and so does the ASOF store: the
    reference models Feast, not this store's SQL. Same columns, in the same order."""
    root, store = repo
    rows, entities, tz_in, tz_src = scenario
    _write_sources(root, rows, tz_src)
    frame = _entity_frame(entities, tz_in)
    refs = _refs(views)
    ours = store.get_historical_features(entity_df=frame, features=refs, full_feature_names=full_names).to_df()
    theirs = stock.get_historical_features(entity_df=frame.copy(), features=refs,
                                           full_feature_names=full_names).to_df()
    _assert_matches_reference(ours, entities, rows, full_names, views)
    _assert_matches_reference(theirs, entities, rows, full_names, views, ordered=False)
    assert list(ours.columns) == list(theirs.columns)


#: Tie-free rows for the views without entities (and a keyed one), to compare whole frames.
ENTITYLESS_ROWS = {
    "a": [{"k": "x", "ts": _ts(0, 5), "created": _ts(0, 100), "a1": 1, "a2": 2.25},
          {"k": "y", "ts": _ts(0, 12), "created": None, "a1": 3, "a2": 4.25}],
    # Out of file order; two rows tie on event time, the newer created time wins.
    "g": [{"ts": _ts(0, 20), "created": _ts(0, 100), "g1": 20.25},
          {"ts": _ts(0, 5), "created": _ts(0, 101), "g1": 5.25},
          {"ts": _ts(0, 5), "created": _ts(0, 103), "g1": 5.5},
          {"ts": _ts(0, 5), "created": None, "g1": 5.75},
          {"ts": None, "created": _ts(0, 104), "g1": 99.25}],
    "h": [{"ts": _ts(0, 30), "h1": 30.25}, {"ts": _ts(0, 0), "h1": 0.25}],
}


#: h's values for the entity rows of :func:`_entityless_entities` (no TTL: the newest row so far).
H1_EXPECTED = [None, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 30.25, 30.25]


def _entityless_entities(columns=("row_id", "k", "j")) -> pd.DataFrame:
    """Entity rows around g's and h's rows: before any, at a row, at g's TTL boundary (5 + 10 s)
    and just past it, with null and unknown keys, and a null timestamp."""
    seconds = [None, 0, 4, 5, 15, 16, 20, 29, 30, 45]
    keys = ["x", None, "w", "y", "x", "x", "y", "w", None, "x"]
    entities = [{"row_id": f"r{i}", "k": k, "j": "p", "event_timestamp": None if s is None else _ts(0, s)}
                for i, (s, k) in enumerate(zip(seconds, keys))]
    return _entity_frame(entities, "UTC")[[*columns, "event_timestamp"]]


def test_views_without_entities_answer_as_hand_checked(repo):
    """Every entity row, whatever its keys (null, unknown), takes the newest row of g or h at
    or before its time; g's TTL of 10 s holds at 15 s and expires at 16 s; h has no TTL."""
    root, store = repo
    _write_sources(root, ENTITYLESS_ROWS)
    got = store.get_historical_features(entity_df=_entityless_entities(),
                                        features=["g:g1", "h:h1", "a:a1"]).to_df().set_index("row_id")
    assert [_value(v) for v in got["g1"]] == [None, None, None, 5.5, 5.5, None, 20.25, 20.25, 20.25, None]
    assert [_value(v) for v in got["h1"]] == H1_EXPECTED
    assert [_value(v) for v in got["a1"]] == [None, None, None, None, 1, None, 3, None, None, None], \
        "the keyed view still joins on its key"


@pytest.mark.parametrize("full_names", [False, True])
@pytest.mark.parametrize("refs", [["g:g1"], ["g:g1", "h:h1"], ["a:a1", "g:g1", "h:h1", "b:b1", "a_odfv:a1_plus"]],
                         ids=["one", "two", "mixed"])
def test_views_without_entities_give_the_stock_frame(repo, stock, refs, full_names):
    """The whole frame (values, dtypes, names) equals stock Feast's, in entity order."""
    root, store = repo
    _write_sources(root, ENTITYLESS_ROWS)
    frame = _entityless_entities()
    ours = store.get_historical_features(entity_df=frame, features=refs, full_feature_names=full_names).to_df()
    theirs = stock.get_historical_features(entity_df=frame.copy(), features=refs,
                                           full_feature_names=full_names).to_df()
    theirs = theirs.set_index("row_id").loc[frame["row_id"]].reset_index()
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert ours.filter(like="g1").notna().any(axis=None), "vacuous: no value of g found"


def test_an_entity_set_without_keys_reads_views_without_entities(repo, stock):
    """Only a timestamp column: enough for views without entities, in both stores."""
    root, store = repo
    _write_sources(root, ENTITYLESS_ROWS)
    frame = _entityless_entities(columns=())
    ours = store.get_historical_features(entity_df=frame, features=["g:g1", "h:h1"]).to_df()
    theirs = stock.get_historical_features(entity_df=frame.copy(), features=["g:g1", "h:h1"]).to_df()
    assert [_value(v) for v in ours["h1"]] == H1_EXPECTED
    as_rows = [sorted((str(r[0]), *map(_value, r[1:])) for r in f.itertuples(index=False)) for f in (ours, theirs)]
    assert as_rows[0] == as_rows[1]
    with pytest.raises(ValueError, match="lacks join key column"):
        store.get_historical_features(entity_df=frame, features=["g:g1", "a:a1"])


def test_a_view_without_entities_plans_no_join_key(repo):
    """Read straight from the registry, the view still names Feast's placeholder entity and
    its key column ``__dummy_id``; get_historical_features strips it. Both plan no key."""
    from feast.feature_view import DUMMY_ENTITY_ID

    from feast_plugins.asof_offline_store import view_plan

    _, store = repo
    as_registered = store.registry.get_feature_view("g", store.project)
    assert [c.name for c in as_registered.entity_columns] == [DUMMY_ENTITY_ID], "not the case under test"
    for full_names in (False, True):
        plan = view_plan(as_registered, ["g:g1"], full_names)
        assert plan is not None and plan.join_keys == ()
        assert plan == view_plan(store.get_feature_view("g"), ["g:g1"], full_names)


def test_stock_store_rejects_a_ttl_mixing_days_and_seconds(repo, stock):
    """The one deliberate difference: view ``c`` (TTL 1 day 5 s) works here, not in stock Feast."""
    root, store = repo
    _write_sources(root, {"c": [{"k": "x", "ts": _ts(-1, 9), "c1": 4.25}]})
    frame = _entity_frame([{"row_id": "r0", "k": "x", "j": "p", "event_timestamp": _ts(0, 10)}], "UTC")
    with pytest.raises(Exception, match="mixed units"):
        stock.get_historical_features(entity_df=frame, features=["c:c1"]).to_df()
    assert store.get_historical_features(entity_df=frame, features=["c:c1"]).to_df()["c1"].tolist() == [4.25]


def test_to_parquet_and_persist_write_the_joined_rows(repo, tmp_path):
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

    root, store = repo
    _write_sources(root, {"a": [{"k": "x", "ts": _ts(0, 5), "created": _ts(0, 100), "a1": 1, "a2": 2.25}],
                          "b": [], "c": []})
    frame = _entity_frame([{"row_id": f"r{i}", "k": "x", "j": "p", "event_timestamp": _ts(0, s)}
                           for i, s in enumerate([3, 8, 30])], "UTC")
    batch = ["a:a1", "a:a2", "b:b1", "c:c1"]
    expected = store.get_historical_features(entity_df=frame, features=batch).to_df()
    written = store.get_historical_features(entity_df=frame, features=batch).to_parquet(tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(written), expected, check_dtype=False)
    assert expected["a1"].isna().tolist() == [True, False, True], "before the row, in TTL, past TTL"
    with pytest.raises(ValueError, match="on-demand"):
        store.get_historical_features(entity_df=frame, features=FEATURE_REFS).to_parquet(tmp_path / "x.parquet")
    job = store.get_historical_features(entity_df=frame, features=FEATURE_REFS)
    job.persist(SavedDatasetFileStorage(path=str(tmp_path / "saved.parquet")))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "saved.parquet"), job.to_df(), check_dtype=False)


def test_a_view_fed_by_a_push_source_joins_its_batch_source(repo, tmp_path):
    """Feast gives a view whose source is a PushSource the push source's ``batch_source``
    as ``batch_source``: the ASOF store plans the same join over the same Parquet file."""
    from feast import FeatureView, PushSource

    from feast_plugins.asof_offline_store import view_plan

    _, store = repo
    plain = store.get_feature_view("a")
    pushed = FeatureView(name="a", entities=[store.get_entity("k")], ttl=plain.ttl, schema=plain.schema,
                         source=PushSource(name="a_push", batch_source=plain.batch_source), online=False)
    refs = ["a:a1", "a:a2"]
    for full_names in (False, True):
        assert view_plan(pushed, refs, full_names) == view_plan(plain, refs, full_names) is not None


def test_python_columns_equal_to_pydict_with_utc_timestamps_from_pandas():
    """The python-mode on-demand input conversion: the same values as pyarrow's to_pydict
    (nulls, microseconds, other zones, strings), UTC instants carrying datetime.timezone.utc."""
    import pyarrow as pa

    from feast_plugins.asof_offline_store import python_columns

    micros = [None, 1_357_034_400_000_001, -5, None, 1_700_000_000_123_456]
    table = pa.table({
        "utc": pa.array(micros, pa.timestamp("us", tz="UTC")),
        "utc_dense": pa.array([m or 0 for m in micros], pa.timestamp("us", tz="UTC")),
        "new_york": pa.array(micros, pa.timestamp("us", tz="America/New_York")),
        "naive": pa.array(micros, pa.timestamp("us")),
        "text": pa.array(["a", None, "c", "d", "e"]),
    })
    got, expected = python_columns(table), table.to_pydict()
    assert got == expected
    assert [v is None for v in got["utc"]] == [m is None for m in micros]
    assert all(v.tzinfo is timezone.utc for v in got["utc"] + got["utc_dense"] if v is not None)
