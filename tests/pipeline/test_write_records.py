"""Write records (``pipeline/write_records.py``): every push batch and materialization
leaves one record per view, failed writes too; lines written concurrently never
interleave; a torn or foreign line is named and skipped, never silently dropped."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pytest

from core.settings import Settings
from feast_plugins.push_writer import PushError, push_targets
from feast_plugins.store import feature_store
from pipeline.apply import apply
from pipeline.materialize import EPOCH, materialize
from pipeline.push import push_window
from pipeline.write_records import (
    COLUMNS,
    append_records,
    read_write_records,
    record,
    records_dir,
    table_stats,
)
from tests.feast_plugins.helpers import empty_copy
from tests.pipeline.test_push import HOUR, PUSHED_VIEWS, START

T0 = datetime(2013, 2, 11, 5, tzinfo=timezone.utc)


def _record(i: int, view: str = "v", ok: bool = True) -> dict:
    return record("push", view, "s", T0, T0 + HOUR, rows=i, keys=1, min_event_timestamp=T0,
                  max_event_timestamp=T0 + HOUR, max_known_at=T0 + HOUR, written_at=T0 + HOUR + timedelta(seconds=i),
                  ok=ok, error=None if ok else "boom")


def _append_many(directory, worker: int, n: int) -> None:
    for i in range(n):
        append_records(directory, [_record(i, f"view{worker}"), _record(i, f"view{worker}")])


def test_concurrent_appends_never_interleave_and_read_back_whole(tmp_path):
    """Four processes append 2-record calls to one day file at once: every line reads back
    as a record, none is lost."""
    directory = tmp_path / "writes"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(directory, w, 150)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    frame = read_write_records(None, directory=directory)
    assert frame.attrs["skipped"] == []
    assert len(frame) == 4 * 150 * 2 and list(frame.columns) == list(COLUMNS)
    assert frame.groupby("view").size().to_dict() == {f"view{w}": 300 for w in range(4)}
    assert str(frame["written_at"].dtype) == "datetime64[ns, UTC]" and frame["written_at"].is_monotonic_increasing


def test_a_torn_line_and_foreign_lines_are_named_and_skipped(tmp_path):
    directory = tmp_path / "writes"
    path = append_records(directory, [_record(1), _record(2, ok=False)])
    with path.open("a") as f:
        f.write('{"kind": "push"}\n')  # not a whole record
        f.write("not json\n")
        f.write(json.dumps({**_record(3), "kind": "teleport"}) + "\n")
        f.write(json.dumps(_record(4))[:40])  # a write cut short: no newline
    frame = read_write_records(None, directory=directory)
    assert frame["rows"].tolist() == [1, 2]
    assert frame["ok"].tolist() == [True, False] and frame["error"].tolist() == [None, "boom"]
    skipped = frame.attrs["skipped"]
    assert [(s["file"], s["line"]) for s in skipped] == [(path.name, n) for n in (3, 4, 5, 6)], skipped
    assert "lacks field(s)" in skipped[0]["error"] and "teleport" in skipped[2]["error"]
    assert "unterminated" in skipped[3]["error"]
    assert read_write_records(None, directory=tmp_path / "none").empty


def test_table_stats_count_rows_keys_and_times():
    t = pd.Timestamp("2013-02-11T05:00:00Z")
    table = pa.table({"origin": ["EWR", "JFK", "EWR"], "event_timestamp": [t, t + HOUR, t + 2 * HOUR],
                      "x": [1.0, 2.0, 3.0]})
    stats = table_stats(table, "event_timestamp", ["origin"])
    assert stats == {"rows": 3, "keys": 2, "min_event_timestamp": t.to_pydatetime(),
                     "max_event_timestamp": (t + 2 * HOUR).to_pydatetime(),
                     "max_known_at": (t + 2 * HOUR).to_pydatetime()}


@pytest.fixture
def pushed(slice_run, tmp_path, monkeypatch):
    """A private DATA_DIR of the slice, applied, its online store empty: (settings, store)."""
    monkeypatch.setenv("DATA_DIR", str(empty_copy(slice_run["settings"].data_dir, tmp_path / "data")))
    monkeypatch.delenv("PROFILE", raising=False)
    settings = Settings.from_env()
    apply(settings)
    return settings, feature_store(settings)


def test_push_batches_leave_a_record_per_view_at_the_clock_passed_in(pushed, use_case):
    settings, store = pushed
    for h in range(3):
        start = START + h * HOUR
        push_window(settings, use_case, store, start, start + HOUR, written_at=start + HOUR + timedelta(minutes=5))
    frame = read_write_records(settings)
    assert frame.attrs["skipped"] == [] and len(frame) == 3 * len(PUSHED_VIEWS)
    assert set(frame["view"]) == set(PUSHED_VIEWS) and frame["ok"].all() and (frame["kind"] == "push").all()
    targets = {t.name: t for t in push_targets(store, settings, use_case.push_sources)}
    table = pd.read_parquet(targets["origin_recent_push"].path)
    last = frame[frame["view"] == "origin_recent"].iloc[-1]
    rows = table[(table["event_timestamp"] > START + 2 * HOUR) & (table["event_timestamp"] <= START + 3 * HOUR)]
    assert last["rows"] == len(rows) > 0 and last["keys"] == rows["origin"].nunique()
    assert last["max_event_timestamp"] == rows["event_timestamp"].max() == last["max_known_at"]
    assert last["window_start"] == START + 2 * HOUR and last["window_end"] == START + 3 * HOUR
    assert last["written_at"] == START + 3 * HOUR + timedelta(minutes=5)
    assert (records_dir(settings) / "writes-2013-02-11.jsonl").is_file()


def test_a_failed_push_is_recorded_failed_with_its_error(pushed, use_case, monkeypatch):
    """Two failures: a source table that breaks its contract (nothing written), and the
    online store failing mid-write (injected into Feast's provider)."""
    settings, store = pushed
    targets = {t.name: t for t in push_targets(store, settings, use_case.push_sources)}
    path = targets["origin_recent_push"].path
    good = pd.read_parquet(path)
    good.drop(columns="mean_dep_delay_3h").to_parquet(path, index=False)
    with pytest.raises(PushError, match="mean_dep_delay_3h"):
        push_window(settings, use_case, store, START, START + HOUR)
    good.to_parquet(path, index=False)

    provider = store._get_provider()

    def broken(view, frame):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(provider, "ingest_df", broken)
    with pytest.raises(sqlite3.OperationalError):
        push_window(settings, use_case, store, START + HOUR, START + 2 * HOUR)
    frame = read_write_records(settings)
    assert len(frame) == 2 * len(PUSHED_VIEWS) and not frame["ok"].any()
    refused, failed = frame.iloc[:2], frame.iloc[2:]
    assert refused["error"].str.contains("PushError: push source 'origin_recent_push': column "
                                         "'mean_dep_delay_3h' is missing").all()
    assert failed["error"].eq("OperationalError: disk I/O error").all()
    assert (failed["rows"] > 0).all(), "what was attempted is recorded"


def test_materializations_leave_a_record_per_view_and_a_failed_one_too(pushed, use_case, monkeypatch):
    settings, store = pushed
    night = datetime(2013, 2, 12, 5, tzinfo=timezone.utc)
    materialize(settings, end=night, start=EPOCH, use_case=use_case, check=False, written_at=night)
    frame = read_write_records(settings)
    views = {v.name: v for v in store.list_feature_views()}
    assert sorted(frame["view"]) == sorted(views) and frame["ok"].all() and (frame["kind"] == "materialize").all()
    weather = frame.set_index("view").loc["weather_hourly"]
    table = pd.read_parquet(views["weather_hourly"].batch_source.path)
    upto = table[table["event_timestamp"] <= night]
    newest = upto.groupby("origin")["event_timestamp"].max()
    assert weather["rows"] == weather["keys"] == len(newest)
    assert weather["max_event_timestamp"] == newest.max() and weather["min_event_timestamp"] == newest.min()
    assert weather["written_at"] == night and weather["window_start"] == EPOCH

    from feast import FeatureStore

    def broken(self, *args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(FeatureStore, "materialize_incremental", broken)
    later = night + timedelta(days=1)
    with pytest.raises(sqlite3.OperationalError):
        materialize(settings, end=later, use_case=use_case, check=False, written_at=later)
    failed = read_write_records(settings, start=later)
    assert len(failed) == len(views) and not failed["ok"].any()
    assert failed["error"].eq("OperationalError: database is locked").all()
    assert (failed["window_start"] == night).all() and (failed["window_end"] == later).all()


def test_a_record_that_cannot_be_kept_is_said_loudly(tmp_path):
    """The records directory cannot be created (a file is in its place): after a write that
    succeeded, WriteRecordError names the directory; after one that failed, its own error
    goes on."""
    from types import SimpleNamespace

    from pipeline.write_records import PushRecorder, WriteRecordError

    blocked = tmp_path / "writes"
    blocked.write_text("not a directory")
    view = SimpleNamespace(name="v", batch_source=SimpleNamespace(), entity_columns=[])
    target = SimpleNamespace(name="s", views=(view,), timestamp_field="ts")
    with pytest.raises(WriteRecordError, match="its record could not be appended under .*writes"):
        with PushRecorder(blocked, ["s"], T0, T0 + HOUR) as recorder:
            recorder.targets = [target]
    with pytest.raises(PushError, match="refused"):
        with PushRecorder(blocked, ["s"], T0, T0 + HOUR) as recorder:
            recorder.targets = [target]
            raise PushError("refused")
