"""The bad-input corpus: corruptions of the real raw data, each refused by the right check.

Three real days of flights and weather (2013-01-01..03) are ingested once into a data dir
(the previous snapshot and the reference profile). Every corruption then runs ingest on a
copy of that data dir with RAW_DIR pointing at the corrupted tables, and must fail with
the named check on the named table and column, write its JSON report, and leave no new
snapshot and no staging directory behind. The clean data, ingested the same way, passes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.ingest import ingest, list_snapshots
from tests.conftest import write_raw_dir
from validation.report import GateFailed

DAYS = (1, 2, 3)


@pytest.fixture(scope="module")
def clean(builtin_raw) -> dict[str, pd.DataFrame]:
    f, w = builtin_raw["flights"], builtin_raw["weather"]
    return {
        **builtin_raw,
        "flights": f[(f.month == 1) & f.day.isin(DAYS)].reset_index(drop=True),
        "weather": w[(w.month == 1) & w.day.isin(DAYS)].reset_index(drop=True),
    }


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, clean, use_case) -> Path:
    """A data dir holding one accepted snapshot of the clean slice and its reference profile."""
    from core.settings import Settings

    root = tmp_path_factory.mktemp("corpus")
    raw = write_raw_dir(clean, root / "raw")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(root / "data"))
        mp.setenv("RAW_DIR", str(raw))
        ingest(Settings.from_env(), use_case)
    return root / "data"


def _rows(frame: pd.DataFrame, fraction: float = 0.05, seed: int = 0) -> pd.Index:
    rng = np.random.default_rng(seed)
    return frame.index[rng.random(len(frame)) < fraction]


def _set(table: str, column: str, value, fraction: float = 0.05):
    def mutate(t):
        frame = t[table].copy()
        frame.loc[_rows(frame, fraction), column] = value
        return {**t, table: frame}
    return mutate


def _frame(table: str, fn):
    return lambda t: {**t, table: fn(t[table].copy())}


def _null_int(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    frame[column] = pd.array(frame[column], dtype="Int64")
    frame.loc[frame.index[:7], column] = None
    return frame


def _rotate_origin(frame: pd.DataFrame) -> pd.DataFrame:
    nxt = {"EWR": "JFK", "JFK": "LGA", "LGA": "EWR"}
    once = frame.assign(origin=frame["origin"].map(nxt))
    twice = once.assign(origin=once["origin"].map(nxt))
    return pd.concat([frame, once, twice], ignore_index=True)


def _naive(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(time_hour=pd.to_datetime(frame["time_hour"]).dt.tz_localize(None))


def _local_time_text(frame: pd.DataFrame) -> pd.DataFrame:
    local = pd.to_datetime(frame["time_hour"], utc=True).dt.tz_convert("America/New_York")
    return frame.assign(time_hour=local.dt.strftime("%Y-%m-%d %H:%M:%S"))


def _a_year_later(frame: pd.DataFrame) -> pd.DataFrame:
    later = pd.to_datetime(frame["time_hour"], utc=True) + pd.DateOffset(years=1)
    return frame.assign(time_hour=later.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))


def _future_weather(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[:4], "time_hour"] = "2099-01-01T12:00:00Z"
    return frame


def _drop_last_day(t):
    return {**t,
            "flights": t["flights"][t["flights"].day < 3].reset_index(drop=True),
            "weather": t["weather"][t["weather"].day < 3].reset_index(drop=True)}


# (id, corruption, table, check, column); written Parquet unless the corruption writes bytes.
CORRUPTIONS = [
    ("missing-column", _frame("flights", lambda f: f.drop(columns=["dep_delay"])), "flights", "column_present", "dep_delay"),
    ("renamed-column", _frame("flights", lambda f: f.rename(columns={"origin": "Origin"})), "flights", "column_present", "origin"),
    ("wrong-type-text-delay", _frame("flights", lambda f: f.assign(arr_delay=f["arr_delay"].astype(str))), "flights", "column_type", "arr_delay"),
    ("wrong-type-text-temp", _frame("weather", lambda w: w.assign(temp=w["temp"].astype(str))), "weather", "column_type", "temp"),
    ("wrong-type-float-flight-number", _frame("flights", lambda f: f.assign(flight=f["flight"] + 0.5)), "flights", "column_type", "flight"),
    ("naive-timestamp", _frame("flights", _naive), "flights", "naive_timestamp", "time_hour"),
    ("local-time-text", _frame("weather", _local_time_text), "weather", "naive_timestamp", "time_hour"),
    ("date-only-text", _frame("weather", lambda w: w.assign(time_hour=w["time_hour"].str[:10])), "weather", "naive_timestamp", "time_hour"),
    ("weather-a-year-ahead", _frame("weather", _a_year_later), "weather", "as_of_lead", "time_hour"),
    ("negative-delay", _set("flights", "dep_delay", -5000.0), "flights", "range", "dep_delay"),
    ("negative-distance", _set("flights", "distance", -10), "flights", "range", "distance"),
    ("absurd-air-time", _set("flights", "air_time", 10_000.0), "flights", "range", "air_time"),
    ("ancient-year", _set("flights", "year", 1950), "flights", "range", "year"),
    ("impossible-month", _set("flights", "month", 13), "flights", "normalise", None),
    ("humidity-over-100", _set("weather", "humid", 150.0), "weather", "range", "humid"),
    ("zero-pressure", _set("weather", "pressure", 0.0), "weather", "range", "pressure"),
    ("negative-visibility", _set("weather", "visib", -1.0), "weather", "range", "visib"),
    ("absurd-wind-beyond-tolerance", _set("weather", "wind_speed", 900.0), "weather", "range", "wind_speed"),
    ("zero-seats", _set("planes", "seats", 0), "planes", "range", "seats"),
    ("latitude-200", _set("airports", "lat", 200.0), "airports", "range", "lat"),
    ("null-carrier", _set("flights", "carrier", None), "flights", "not_nullable", "carrier"),
    ("null-flight-number", _frame("flights", lambda f: _null_int(f, "flight")), "flights", "not_nullable", "flight"),
    ("null-weather-origin", _set("weather", "origin", None), "weather", "not_nullable", "origin"),
    ("null-tailnum-key", _set("planes", "tailnum", None), "planes", "not_nullable", "tailnum"),
    ("unknown-carrier", _set("flights", "carrier", "ZZ"), "flights", "allowed_values", "carrier"),
    ("origin-outside-nyc", _set("flights", "origin", "BOS"), "flights", "allowed_values", "origin"),
    ("duplicate-flights", _frame("flights", lambda f: pd.concat([f, f.head(10)], ignore_index=True)), "flights", "unique_key", "carrier, flight, origin, scheduled_departure"),
    ("duplicate-weather-hours", _frame("weather", lambda w: pd.concat([w, w.tail(3)], ignore_index=True)), "weather", "unique_key", "origin, time_hour"),
    ("duplicate-tailnum", _frame("planes", lambda p: pd.concat([p, p.head(2)], ignore_index=True)), "planes", "unique_key", "tailnum"),
    ("duplicate-airline", _frame("airlines", lambda a: pd.concat([a, a.head(1)], ignore_index=True)), "airlines", "unique_key", "carrier"),
    ("flights-in-the-future", _set("flights", "year", 2099, fraction=0.01), "flights", "not_after_now", "scheduled_departure"),
    ("weather-in-the-future", _frame("weather", _future_weather), "weather", "not_after_now", "time_hour"),
    ("volume-tripled", _frame("flights", _rotate_origin), "flights", "volume_change", None),
    ("volume-cut-to-a-fifth", _frame("flights", lambda f: f.sample(frac=0.2, random_state=1)), "flights", "volume_change", None),
    ("delays-shifted-an-hour", _frame("flights", lambda f: f.assign(dep_delay=f["dep_delay"] + 60)), "flights", "distribution_psi", "dep_delay"),
    ("temperature-in-celsius", _frame("weather", lambda w: w.assign(temp=(w["temp"] - 32) * 5 / 9)), "weather", "distribution_psi", "temp"),
    ("as-of-moves-backwards", _drop_last_day, "snapshot", "as_of_forward", None),
]

# Corruptions of the files themselves: (id, table, writer, check)
FILE_CORRUPTIONS = [
    ("truncated-file", "flights", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "readable_parquet"),
    ("not-parquet", "planes", lambda p: p.write_text("tailnum,year\nN1,2001\n"), "readable_parquet"),
    ("empty-file", "weather", lambda p: p.write_bytes(b""), "readable_parquet"),
    ("missing-file", "airlines", lambda p: p.unlink(), "file_present"),
    # A valid Parquet file with the right columns and types, and no rows.
    ("empty-table", "flights", lambda p: pq.write_table(pq.read_table(p).slice(0, 0), p), "non_empty"),
]


def _run(tmp_path, baseline_dir, tables, use_case, settings_for, damage=None):
    data = tmp_path / "data"
    shutil.copytree(baseline_dir, data)
    raw = write_raw_dir(tables, tmp_path / "raw")
    if damage:
        damage(raw)
    settings = settings_for(data, raw)
    before = sorted(p.name for p in settings.raw_snapshots.iterdir())
    with pytest.raises(GateFailed) as info:
        ingest(settings, use_case)
    after = sorted(p.name for p in settings.raw_snapshots.iterdir())
    assert after == before, f"a refused ingest changed the snapshots: {before} -> {after}"
    assert info.value.path and info.value.path.is_file(), "the refusal wrote no JSON report"
    assert json.loads(info.value.path.read_text())["passed"] is False
    return info.value.report


@pytest.mark.parametrize("name, corrupt, table, check, column", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corruption_is_refused_by_the_named_check(tmp_path, baseline_dir, clean, use_case, settings_for,
                                                  name, corrupt, table, check, column):
    report = _run(tmp_path, baseline_dir, corrupt(dict(clean)), use_case, settings_for)
    found = [(f.check, f.table, f.column) for f in report.failures]
    assert (check, table, column) in found, f"{name}: expected [{check}] {table}.{column}; got {found}"
    failure = next(f for f in report.failures if (f.check, f.table, f.column) == (check, table, column))
    if failure.failed_rows is not None and check not in ("non_empty", "volume_change"):
        assert failure.failed_rows > 0 and failure.examples, f"{name}: no row count or examples in {failure}"


@pytest.mark.parametrize("name, table, damage, check", FILE_CORRUPTIONS, ids=[c[0] for c in FILE_CORRUPTIONS])
def test_damaged_file_is_refused_and_named(tmp_path, baseline_dir, clean, use_case, settings_for,
                                           name, table, damage, check):
    report = _run(tmp_path, baseline_dir, dict(clean), use_case, settings_for,
                  damage=lambda raw: damage(raw / f"{table}.parquet"))
    found = [(f.check, f.table) for f in report.failures]
    if check == "non_empty":  # an empty table also changes volume; it must be named first
        assert found[0] == (check, table), report.render()
    else:
        assert found == [(check, table)], report.render()
        assert f"{table}.parquet" in report.failures[0].message, "the message does not name the file"


def test_corpus_is_large_enough():
    assert len(CORRUPTIONS) + len(FILE_CORRUPTIONS) >= 30
    assert len({c[0] for c in CORRUPTIONS} | {c[0] for c in FILE_CORRUPTIONS}) == len(CORRUPTIONS) + len(FILE_CORRUPTIONS)


def test_clean_data_passes_with_no_false_alarm(tmp_path, baseline_dir, clean, use_case, settings_for):
    data = tmp_path / "data"
    shutil.copytree(baseline_dir, data)
    settings = settings_for(data, write_raw_dir(clean, tmp_path / "raw"))
    snapshot = ingest(settings, use_case)
    report = json.loads((settings.reports / "ingest-latest.json").read_text())
    assert report["passed"] and report["failures"] == [], report
    assert {"distribution_psi", "volume_change", "as_of_forward", "as_of_step", "as_of_lead", "contract:flights",
            "naive_timestamp:weather.time_hour"} <= set(report["checks"])
    assert max(report["stats"]["psi"].values()) == 0.0 and set(report["stats"]["volume_ratio"].values()) == {1.0}
    assert snapshot.path.parent == settings.raw_snapshots


def test_full_real_data_passes_and_the_known_bad_wind_reading_is_tolerated(tmp_path, use_case, settings_for):
    settings = settings_for(tmp_path / "data")
    ingest(settings, use_case)
    report = json.loads((settings.reports / "ingest-latest.json").read_text())
    assert report["passed"], report["failures"]
    assert [(t["table"], t["column"], t["failed_rows"]) for t in report["tolerated"]] == [("weather", "wind_speed", 1)]
    assert Path(settings.reference_profile).is_file(), "the first snapshot did not write the reference profile"


def test_an_accepted_check_is_reported_but_does_not_block(tmp_path, baseline_dir, clean, use_case, settings_for):
    data = tmp_path / "data"
    shutil.copytree(baseline_dir, data)
    tripled = _frame("flights", _rotate_origin)(dict(clean))
    settings = settings_for(data, write_raw_dir(tripled, tmp_path / "raw"))
    snapshot = ingest(settings, use_case, accept=("volume_change",))
    assert len(list_snapshots(settings)) == 2 and snapshot.tables["flights"] == 3 * len(clean["flights"])
    report = json.loads((settings.reports / "ingest-latest.json").read_text())
    assert [t["check"] for t in report["tolerated"]] == ["volume_change"]
