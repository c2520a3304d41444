"""Definitions pinned to models: each kind of change under the champion is refused by apply
(and by the features stage, for SQL) naming the view, the change and the model, before
anything is written; cosmetic edits are not changes; a deliberate change is allowed by name;
a FeatureService naming a missing or a second version of a view is refused.

Every change is made to a COPY of feature_repo/ (FEATURE_REPO), over a copy of the slice's
DATA_DIR whose champion was trained (and pinned) by the session's flow run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import DefinitionError
from core.settings import REPO_ROOT, Settings
from pipeline.apply import apply
from pipeline.definitions import (
    DefinitionChangeRefused,
    applied,
    current,
    normalize_code,
    normalize_sql,
    plan,
    view_version,
)
from tests.conftest import copy_data_dir
from training.registry import ModelRegistry


@pytest.fixture
def pinned(slice_run, tmp_path, monkeypatch):
    """(settings, repo): a private DATA_DIR (the slice's, applied, its champion pinned) and
    a private copy of feature_repo/ that the settings read."""
    data_dir = copy_data_dir(slice_run["settings"].data_dir, tmp_path / "data")
    repo = tmp_path / "copy" / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEATURE_REPO", str(repo))
    monkeypatch.delenv("PROFILE", raising=False)
    return Settings.from_env(), repo


def edit(repo: Path, relative: str, old: str, new: str) -> None:
    path = repo / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{relative}: {old!r} must occur once"
    path.write_text(text.replace(old, new))


def untouched(settings: Settings) -> dict[str, bytes]:
    """The bytes of what apply and the features stage write: registry, record, sources."""
    files = [settings.data_dir / "registry.db", settings.models / "definitions.json",
             *sorted(settings.sources.glob("*.parquet"))]
    return {str(f): f.read_bytes() for f in files}


# (file in feature_repo/, text, replacement, a view it changes, what the refusal says)
CHANGES = {
    "sql_formula": ("pipelines/daily_stats.sql", "CAST(n_late AS DOUBLE) / nullif(n, 0) AS late_rate_1d",
                    "CAST(n_late AS DOUBLE) / nullif(n + 1, 0) AS late_rate_1d",
                    "route_daily", "the SQL building source table route_daily changed"),
    "sql_aggregation_window": ("pipelines/daily_stats.sql", "ROWS BETWEEN 6 PRECEDING AND CURRENT ROW",
                               "ROWS BETWEEN 13 PRECEDING AND CURRENT ROW",
                               "route_daily", "the SQL building source table route_daily changed"),
    "sql_upstream_table": ("pipelines/labelled_events.sql", "coalesce(air_time, 0) + 30",
                           "coalesce(air_time, 0) + 45", "route_daily",
                           "the SQL building source table labelled_events changed"),
    "sql_column_type": ("pipelines/aircraft.sql", "CAST(seats AS BIGINT) AS seats",
                        "CAST(seats AS INTEGER) AS seats", "aircraft",
                        "the SQL building source table aircraft changed"),
    "ttl": ("definitions/features.py", "_DAILY_TTL = timedelta(days=1)", "_DAILY_TTL = timedelta(days=2)",
            "route_daily", "the TTL changed"),
    "on_demand_code": ("definitions/on_demand.py", "hours.append(local.hour)",
                       "hours.append((local.hour + 1) % 24)", "departure_time",
                       "the on-demand function's code changed"),
    "feature_type": ("definitions/features.py", 'Field(name="seats", dtype=Int64)',
                     'Field(name="seats", dtype=Float64)', "aircraft", "feature seats's definition (type) changed"),
    "entity": ("definitions/entities.py", 'join_keys=["dest"]', 'join_keys=["arr_faa"]', "route_daily",
               "entity dest changed"),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_a_change_under_the_champion_is_refused_by_apply_naming_view_change_and_model(pinned, use_case, kind):
    settings, repo = pinned
    relative, old, new, view, said = CHANGES[kind]
    champion = ModelRegistry(settings.models).champion()["version"]
    before = untouched(settings)
    edit(repo, relative, old, new)
    with pytest.raises(DefinitionChangeRefused) as refused:
        apply(settings, use_case)
    message = str(refused.value)
    assert f"feature view {view!r}" in message and said in message and champion in message
    assert f"--allow-definition-change {view}" in message or "--allow-definition-change" in message
    assert refused.value.exit_code == 2
    assert untouched(settings) == before  # nothing applied, nothing recorded


@pytest.mark.parametrize("kind", ["sql_formula", "sql_upstream_table"])
def test_the_features_stage_refuses_new_sql_under_the_champion_before_building(pinned, use_case, kind):
    from pipeline.features import build_sources
    from pipeline.ingest import latest_snapshot

    settings, repo = pinned
    relative, old, new, view, said = CHANGES[kind]
    before = untouched(settings)
    edit(repo, relative, old, new)
    with pytest.raises(DefinitionChangeRefused, match=f"features refused.*{view}.*{said}"):
        build_sources(settings, use_case, latest_snapshot(settings))
    assert untouched(settings) == before
    assert not list(settings.sources.glob(".staging-*"))


def test_a_ttl_change_does_not_stop_the_features_stage(pinned, use_case):
    """The features stage builds tables: only their SQL is its business (apply refuses the TTL)."""
    from pipeline.definitions import guard_sources

    settings, repo = pinned
    edit(repo, *CHANGES["ttl"][:3])
    guard_sources(settings, use_case)  # no refusal


def test_cosmetic_changes_are_not_changes(pinned, use_case):
    settings, repo = pinned
    recorded = applied(settings)
    edit(repo, "pipelines/daily_stats.sql", "WITH outcomes AS (",
         "-- a new comment\n/* and a block\n   comment */\nWITH    outcomes\n  AS (")
    edit(repo, "pipelines/aircraft.sql", "FROM raw_planes", "FROM raw_planes  -- the registry")
    edit(repo, "definitions/features.py", 'tags={"cadence": "daily", "freshness_p99": "26h"},',
         'tags={"cadence": "daily", "freshness_p99": "26h", "team": "ops"}, description="Daily history", '
         'owner="ops@example.com",')
    edit(repo, "definitions/entities.py", 'description="Arrival airport (FAA code)"',
         'description="Where the flight lands"')
    edit(repo, "definitions/on_demand.py", "    new_york = ZoneInfo(\"America/New_York\")\n",
         "    # the schedule's zone\n\n    new_york = ZoneInfo( \"America/New_York\" )\n")
    edit(repo, "definitions/on_demand.py", "Local (America/New_York) hour", "The local hour")
    views = apply(settings, use_case)
    assert {name: v["fingerprint"] for name, v in views.items()} == \
        {name: v["fingerprint"] for name, v in recorded.items()}
    assert plan(settings, views)["changes"] == []


def test_an_allowed_change_is_applied_and_recorded_and_not_refused_again(pinned, use_case, capsys):
    import dataclasses

    settings, repo = pinned
    before = applied(settings)["weather_hourly"]["fingerprint"]
    edit(repo, "definitions/features.py", "ttl=timedelta(hours=3)", "ttl=timedelta(hours=4)")
    views = apply(dataclasses.replace(settings, allow_definition_change=("weather_hourly",)), use_case)
    assert views["weather_hourly"]["fingerprint"] != before
    assert applied(settings)["weather_hourly"]["fingerprint"] == views["weather_hourly"]["fingerprint"]
    assert "allowed by --allow-definition-change" in capsys.readouterr().err
    apply(settings, use_case)  # the next nightly run: applied already, reported, not refused
    assert "applied earlier" in capsys.readouterr().err


def test_allowing_a_view_that_does_not_exist_is_a_config_error(pinned, use_case):
    import dataclasses

    from core.errors import ConfigError

    settings, _ = pinned
    with pytest.raises(ConfigError, match="route_dialy"):
        apply(dataclasses.replace(settings, allow_definition_change=("route_dialy",)), use_case)


def test_a_new_version_side_by_side_is_not_refused(pinned, use_case):
    """route_daily_v2 with another TTL, in a FeatureService of its own: the champion's
    route_daily is untouched, so apply goes through and both versions are registered."""
    settings, repo = pinned
    publish_v2(repo)
    views = apply(settings, use_case)
    assert views["route_daily"] == applied(settings)["route_daily"]
    assert "route_daily_v2" in views
    from feast_plugins.store import feature_store

    store = feature_store(settings)
    assert {"route_daily", "route_daily_v2"} <= {v.name for v in store.list_feature_views()}


def publish_v2(repo: Path, service: str = "late_arrival_v3", views: str = "route_daily_v2") -> None:
    """Version 2 of route_daily (TTL 2 days) beside version 1, and a FeatureService on ``views``."""
    with (repo / "definitions" / "features.py").open("a") as f:
        f.write("\nroute_daily_v2 = FeatureView(name=\"route_daily_v2\", entities=[origin, dest], "
                "ttl=timedelta(days=2), schema=list(_DAILY_SCHEMA), source=src.route_daily_source, online=True)\n")
    with (repo / "definitions" / "feature_services.py").open("a") as f:
        f.write("\nfrom feature_repo.definitions.features import route_daily_v2  # noqa: E402\n"
                f"{service} = FeatureService(name={service!r}, features=[weather_hourly, aircraft, carrier_daily, "
                f"origin_daily, {views}, departure_time])\n")
    with (repo / "repo.py").open("a") as f:
        f.write(f"from feature_repo.definitions.features import route_daily_v2  # noqa: F401,E402\n"
                f"from feature_repo.definitions.feature_services import {service}  # noqa: F401,E402\n")


def test_a_service_with_two_versions_of_a_view_is_refused_and_nothing_applied(pinned, use_case):
    settings, repo = pinned
    publish_v2(repo, views="route_daily, route_daily_v2")
    before = untouched(settings)
    with pytest.raises(DefinitionError, match=r"'late_arrival_v3' names 2 versions of feature view 'route_daily' "
                                              r"\(route_daily, route_daily_v2\).*Nothing was applied"):
        apply(settings, use_case)
    assert untouched(settings) == before


def test_a_service_naming_a_version_that_does_not_exist_is_refused_and_nothing_applied(pinned, use_case):
    settings, repo = pinned
    publish_v2(repo)
    # route_daily_v2 defined but not exported by repo.py: Feast does not see it.
    edit(repo, "repo.py", "from feature_repo.definitions.features import route_daily_v2  # noqa: F401,E402\n", "")
    before = untouched(settings)
    with pytest.raises(DefinitionError, match=r"'late_arrival_v3' names feature view 'route_daily_v2', which "
                                              r"feature_repo/ does not define \(defined versions of 'route_daily': "
                                              r"\['route_daily'\]"):
        apply(settings, use_case)
    assert untouched(settings) == before


def test_plan_lists_the_pending_change_and_the_champion_it_affects(pinned, use_case):
    settings, repo = pinned
    champion = ModelRegistry(settings.models).champion()["version"]
    edit(repo, *CHANGES["ttl"][:3])
    result = plan(settings, current(settings, use_case))
    changed = {c["view"]: c for c in result["changes"]}
    assert set(changed) == {"carrier_daily", "origin_daily", "route_daily"}  # _DAILY_TTL is shared
    route = changed["route_daily"]
    assert route["change"] == "changed" and route["parts"] == ["ttl"] and route["refused"]
    assert route["models"][champion]["champion"] is True
    assert "route_daily__late_rate_7d" in route["models"][champion]["features"]


def test_pipeline_plan_and_apply_commands(pinned, use_case, capsys):
    """The commands: plan says what apply would refuse (exit 0); apply refuses with exit 2
    and the message on stderr; --allow-definition-change lets it through."""
    from cli.pipeline import main

    settings, repo = pinned
    edit(repo, *CHANGES["on_demand_code"][:3])
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "departure_time: changed: the on-demand function's code changed" in out
    assert "apply will refuse it" in out
    assert main(["apply"]) == 2
    assert "apply refused" in capsys.readouterr().err
    assert main(["apply", "--allow-definition-change", "departure_time"]) == 0
    assert main(["plan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == []


def test_the_champion_is_pinned_per_feature(slice_run):
    """The flow's training recorded, for every feature of the model, its view and fingerprint."""
    registry = ModelRegistry(slice_run["settings"].models)
    model = registry.load_champion()
    pins = model.metadata["definitions"]
    assert sorted(pins["features"]) == sorted(model.features)
    assert pins["features"]["route_daily__late_rate_7d"]["view"] == "route_daily"
    assert "sql:labelled_events" in pins["views"]["route_daily"]["parts"]  # upstream SQL, transitively
    assert "udf" in pins["views"]["departure_time"]["parts"]


def test_normalize_sql_drops_comments_and_layout_but_not_strings():
    assert normalize_sql("SELECT  a, -- x\n\t'--not a comment'  /* c */ FROM t") == \
        "SELECT a, '--not a comment' FROM t"
    assert normalize_sql("SELECT 'a  b'") != normalize_sql("SELECT 'a b'")
    assert normalize_sql("SELECT a + 1") != normalize_sql("SELECT a + 2")


def test_normalize_code_drops_docstrings_and_comments_not_code():
    one = 'def f(x):\n    """Doc."""\n    return x + 1  # add one\n'
    assert normalize_code(one) == normalize_code("def f(x):\n\n    return x+1\n")
    assert normalize_code(one) != normalize_code("def f(x):\n    return x + 2\n")


def test_view_versions():
    assert view_version("route_daily_v2") == ("route_daily", 2)
    assert view_version("route_daily") == ("route_daily", 1)


@pytest.mark.parametrize("kind, stage", [("sql_formula", "features"), ("ttl", "apply")])
def test_the_nightly_flow_stops_at_the_first_stage_that_would_change_what_the_champion_sees(
        pinned, use_case, kind, stage):
    """``pipeline run``'s stages in order: new SQL stops at features (before any table is
    built), a TTL change at apply (the tables it rebuilt are the same); nothing after runs."""
    from flow.nightly import FlowOptions, FlowRun

    settings, repo = pinned
    edit(repo, *CHANGES[kind][:3])
    registry = (settings.data_dir / "registry.db").read_bytes()
    record = (settings.models / "definitions.json").read_bytes()
    run = FlowRun(settings, use_case, FlowOptions(stages=("features", "apply", "train")))
    with pytest.raises(DefinitionChangeRefused, match=f"{stage} refused"):
        run.run()
    assert run.running == stage and "train" not in run.seconds
    assert (settings.data_dir / "registry.db").read_bytes() == registry
    assert (settings.models / "definitions.json").read_bytes() == record
