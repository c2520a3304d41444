"""The flights' windowed features: the events SQL's "when known" rules on hand-made flights
and the declarations of late_arrival_v3 (the events tables' checks: tests/validation/
test_events_contracts.py)."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pandas as pd
import pytest

from core.duck import connect
from feast_plugins.windows import window_specs

REPO = __import__("pathlib").Path(__file__).resolve().parents[2] / "feature_repo"
AS_OF = "2013-01-01 12:00:00+00"


def _events(sql_file: str, flights: pd.DataFrame) -> pd.DataFrame:
    con = connect()
    con.register("raw_flights_frame", flights)
    con.execute("CREATE VIEW raw_flights AS SELECT * EXCLUDE (scheduled_departure),"
                " CAST(scheduled_departure AS TIMESTAMPTZ) AS scheduled_departure FROM raw_flights_frame")
    con.execute(f"SET VARIABLE as_of = TIMESTAMPTZ '{AS_OF}'")
    return con.sql((REPO / "pipelines" / sql_file).read_text()).df()


@pytest.fixture
def flights() -> pd.DataFrame:
    at = lambda hhmm: pd.Timestamp(f"2013-01-01 {hhmm}", tz="UTC")  # noqa: E731
    return pd.DataFrame({
        "origin": ["JFK", "JFK", "LGA", "EWR", "JFK"],
        "carrier": ["AA", "B6", "AA", "UA", "AA"],
        "dest": ["LAX", "BOS", "ORD", "SFO", "MIA"],
        "tailnum": ["N1", None, "N2", "N3", "N4"],
        # early, on time but no tail number, cancelled, departs after the as-of, late
        "scheduled_departure": [at("10:00"), at("10:30"), at("11:00"), at("11:50"), at("09:00")],
        "dep_delay": [-5.0, 0.0, None, 20.0, 45.0],
        "air_time": [300.0, 40.0, None, 320.0, 150.0],
        "arr_delay": [-20.0, 2.0, None, 10.0, 50.0],
    })


def test_departure_events_are_known_when_the_flight_departs(flights):
    out = _events("departure_events.sql", flights)
    assert out["dest"].tolist() == ["MIA", "LAX", "BOS"]  # in known_at order; no cancelled or future one
    assert (out["event_timestamp"] == out["known_at"]).all()
    assert out["known_at"].dt.strftime("%H:%M").tolist() == ["09:45", "09:55", "10:30"]
    assert out["dep_delay"].tolist() == [45.0, -5.0, 0.0]
    assert out["tailnum"].isna().tolist() == [False, False, True]  # kept: it counts for its origin


def test_outcome_events_follow_the_labelled_events_rule(flights):
    out = _events("outcome_events.sql", flights)
    # MIA: 09:00 + 45 + 150 min = 12:15 arrival, known 12:45 > as-of: not yet an event.
    # Cancelled ORD: known 30 minutes after its scheduled departure (11:00), arr_delay null, late.
    assert out["dest"].tolist() == ["ORD", "BOS"]
    ord_, bos = out.iloc[0], out.iloc[1]
    assert ord_["event_timestamp"] == pd.Timestamp("2013-01-01 11:00", tz="UTC")
    assert ord_["known_at"] == pd.Timestamp("2013-01-01 11:30", tz="UTC")
    assert pd.isna(ord_["arr_delay"]) and ord_["cancelled"] == 1.0 and ord_["late"] == 1.0
    assert bos["event_timestamp"] == pd.Timestamp("2013-01-01 11:10", tz="UTC")
    assert bos["known_at"] == pd.Timestamp("2013-01-01 11:40", tz="UTC")
    assert (bos["cancelled"], bos["late"]) == (0.0, 0.0)
    # The LAX flight lands at 10:00 - 5 + 300 min = 14:55: unknown at the 12:00 as-of.


def test_the_shipped_declarations():
    from feature_repo.definitions.feature_services import late_arrival_v2, late_arrival_v3
    from feature_repo.definitions.windows import WINDOWED_VIEWS

    specs = [s for view in WINDOWED_VIEWS for s in window_specs(view)]
    assert len(specs) == 13
    assert {s.window for s in specs} == {timedelta(minutes=30), timedelta(hours=1), timedelta(hours=3),
                                         timedelta(hours=12), timedelta(hours=24)}
    names = lambda service: {(p.name, f.name) for p in service.feature_view_projections for f in p.features}  # noqa: E731
    v2, v3 = names(late_arrival_v2), names(late_arrival_v3)
    assert v2 < v3 and {s.name for s in specs} == {f for _, f in v3 - v2}


def test_the_events_sql_runs_in_duckdb_only_with_its_variables():
    """Guard against the SQL reading anything but raw_flights and as_of (the stage's contract)."""
    con = duckdb.connect()
    with pytest.raises(duckdb.Error):
        con.sql((REPO / "pipelines" / "departure_events.sql").read_text()).fetchall()


def test_the_features_stage_refuses_an_event_known_in_the_future_and_publishes_nothing(
        slice_run, use_case, tmp_path, monkeypatch):
    """The stage's wiring: a departure events SQL whose events are known 10 days late (past
    the as-of) fails the features gate (the events contract) naming the table and column;
    no source table changes."""
    import shutil

    from core.settings import REPO_ROOT, Settings
    from pipeline.features import build_sources
    from pipeline.ingest import latest_snapshot
    from tests.conftest import copy_data_dir

    data_dir = copy_data_dir(slice_run["settings"].data_dir, tmp_path / "data")
    repo = tmp_path / "copy" / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    sql = repo / "pipelines" / "departure_events.sql"
    text = sql.read_text()
    old = "scheduled_departure + to_minutes(CAST(dep_delay AS BIGINT)) AS known_at"
    assert text.count(old) == 1
    sql.write_text(text.replace(old, old.replace(" AS known_at", " + INTERVAL 10 DAY AS known_at")))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEATURE_REPO", str(repo))
    monkeypatch.delenv("PROFILE", raising=False)
    settings = Settings.from_env()
    before = {p.name: p.read_bytes() for p in sorted(settings.sources.glob("*.parquet"))}
    assert "departure_events.parquet" in before
    from validation.report import GateFailed

    with pytest.raises(GateFailed, match=r"not_after_as_of\] departure_events\.known_at"):
        build_sources(settings, use_case, latest_snapshot(settings))
    assert {p.name: p.read_bytes() for p in sorted(settings.sources.glob("*.parquet"))} == before
    assert not list(settings.sources.glob(".staging-*"))


def test_each_windowed_view_declares_a_freshness_objective():
    """Like every batch view (``docs/freshness.md``): a ``freshness_p99`` tag the one parser
    reads as a positive number of seconds."""
    from feature_repo.definitions.windows import WINDOWED_VIEWS
    from serving.online import freshness_objective

    assert {view.name: freshness_objective(view) for view in WINDOWED_VIEWS} == {
        "origin_departures_w": 300.0, "carrier_outcomes_w": 300.0, "aircraft_last_arrival_w": 300.0}
