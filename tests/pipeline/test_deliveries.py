"""Deliveries in a row: a bad one is refused, and the corrected one after it is accepted
with no clean-up by hand.

Three real days of flights and weather (2013-01-01..03) are the original delivery. The bad
one is the same data with weather dated a year later: the as-of (where flights and
weather end together) then moves only to the flights' end, so every other ingest check
passes it, and the features gate refuses what it builds (no weather before the as-of).
The ingest gate refuses it by ``as_of_lead`` (weather reaching a year past the as-of);
let through by ``--accept as_of_lead``, the features gate refuses it and the snapshot
leaves the chain, so the corrected delivery is judged against the last good one.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flow.nightly import FlowOptions, FlowRun
from pipeline.ingest import REFUSAL, REFUSED, ingest, latest_snapshot, list_snapshots
from tests.conftest import write_raw_dir
from validation.drift import load_reference
from validation.report import GateFailed

DAYS = (1, 2, 3)


@pytest.fixture(scope="module")
def deliveries(builtin_raw, tmp_path_factory):
    """RAW_DIRs: the original three days, and the same with weather a year later."""
    f, w = builtin_raw["flights"], builtin_raw["weather"]
    clean = {**builtin_raw,
             "flights": f[(f.month == 1) & f.day.isin(DAYS)].reset_index(drop=True),
             "weather": w[(w.month == 1) & w.day.isin(DAYS)].reset_index(drop=True)}
    weather = clean["weather"].copy()
    later = pd.to_datetime(weather["time_hour"], utc=True) + pd.DateOffset(years=1)
    weather["time_hour"] = later.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    root = tmp_path_factory.mktemp("deliveries")
    return {"clean": write_raw_dir(clean, root / "clean"),
            "shifted": write_raw_dir({**clean, "weather": weather}, root / "shifted")}


def _night(settings, use_case, **options):
    """The nightly flow's ingest and features stages, as ``pipeline run`` runs them."""
    return FlowRun(settings, use_case, FlowOptions(stages=("ingest", "features"), **options)).run()


def _failures(info) -> set[tuple]:
    return {(f.check, f.table, f.column) for f in info.value.report.failures}


@pytest.mark.parametrize("follow_reference", [False, True], ids=["fixed-reference", "follow-reference"])
def test_a_refused_delivery_does_not_block_the_corrected_one(tmp_path, deliveries, use_case, settings_for,
                                                             follow_reference):
    data = tmp_path / "data"
    settings = settings_for(data, deliveries["clean"])
    good = _night(settings, use_case, follow_reference=follow_reference).snapshot
    sources = {p.name: p.read_bytes() for p in settings.sources.glob("*.parquet")}

    # The shifted weather is refused at ingest, by the check that names it.
    settings = settings_for(data, deliveries["shifted"])
    with pytest.raises(GateFailed) as info:
        _night(settings, use_case, follow_reference=follow_reference)
    assert info.value.report.gate == "ingest"
    assert ("as_of_lead", "weather", "time_hour") in _failures(info), info.value.report.render()
    assert list_snapshots(settings) == [good.path]

    # Let through the ingest gate by hand, it is refused by the features gate, and leaves
    # the chain of snapshots: kept under raw/refused/ with the refusal, reference restored.
    with pytest.raises(GateFailed) as info:
        _night(settings, use_case, follow_reference=follow_reference, accept=("as_of_lead",))
    assert info.value.report.gate == "features", info.value.report.render()
    refused = [p for p in (settings.raw_snapshots / REFUSED).iterdir()]
    assert len(refused) == 1 and json.loads((refused[0] / REFUSAL).read_text())["gate"] == "features"
    assert json.loads((refused[0] / "manifest.json").read_text())["as_of"] > good.as_of.isoformat()
    assert list_snapshots(settings) == [good.path] and latest_snapshot(settings).id == good.id
    assert load_reference(settings.reference_profile)["snapshot"] == good.id
    assert {p.name: p.read_bytes() for p in settings.sources.glob("*.parquet")} == sources

    # The corrected delivery (the original data again) passes with nothing removed by hand:
    # compared with the last good snapshot, it is that snapshot, reused.
    settings = settings_for(data, deliveries["clean"])
    again = _night(settings, use_case, follow_reference=follow_reference)
    assert again.snapshot.id == good.id and again.sources
    assert list_snapshots(settings) == [good.path]


def test_the_built_in_data_follows_a_refused_delivery(tmp_path, deliveries, use_case, settings_for):
    """A refused *first* snapshot takes its reference profile with it; the next delivery
    (here the whole built-in year) is then a first snapshot again and writes its own."""
    data = tmp_path / "data"
    settings = settings_for(data, deliveries["shifted"])
    with pytest.raises(GateFailed) as info:
        _night(settings, use_case, accept=("as_of_lead",))
    assert info.value.report.gate == "features"
    assert not settings.reference_profile.exists() and list_snapshots(settings) == []

    settings = settings_for(data)
    snapshot = ingest(settings, use_case)
    assert load_reference(settings.reference_profile)["snapshot"] == snapshot.id
    assert snapshot.id != json.loads(next((settings.raw_snapshots / REFUSED).iterdir()).joinpath(
        "manifest.json").read_text())["id"], "a new snapshot took a refused one's id"


def test_a_year_long_jump_of_the_as_of_is_refused(tmp_path, deliveries, builtin_raw, use_case, settings_for):
    """Every table a year later: the as-of moves a year past the previous snapshot's
    (``as_of_step``), which ``--accept as_of_step`` lets through."""
    data = tmp_path / "data"
    ingest(settings_for(data, deliveries["clean"]), use_case)
    tables = {name: pd.read_parquet(deliveries["shifted"] / f"{name}.parquet") for name in builtin_raw}
    flights = tables["flights"]
    flights["time_hour"] = (pd.to_datetime(flights["time_hour"], utc=True) + pd.DateOffset(years=1)) \
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    flights["year"] = flights["year"] + 1
    settings = settings_for(data, write_raw_dir(tables, tmp_path / "later"))
    with pytest.raises(GateFailed) as info:
        ingest(settings, use_case)
    assert _failures(info) == {("as_of_step", "snapshot", None)}, info.value.report.render()
    assert "as_of_max_step" in info.value.report.failures[0].message
    assert ingest(settings, use_case, accept=("as_of_step",)).as_of.year == 2014
