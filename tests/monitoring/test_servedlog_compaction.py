"""Compacting the served-feature log (``monitoring.servedlog.compact_served_log``): the same
rows read back from fewer files, malformed files left in place and still named, and a
compaction stopped half-way never counting a row twice."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from monitoring.servedlog import COMPACTED_FROM, compact_served_log, read_served_log
from tests.monitoring.test_consistency import _log_file

DAY1, DAY2 = "date=2026-01-01", "date=2026-01-02"


def _read(root):
    log = read_served_log(root, ["v__a"], "event_timestamp")
    return log.sort_values(["request_id", "entity_index"]).reset_index(drop=True), log.attrs["skipped"]


def _parts(root, day, n, start=0):
    for i in range(start, start + n):
        _log_file(root / day / f"part-{i:04d}.parquet", request_id=[f"{day}-{i}-0", f"{day}-{i}-1"], v__a=float(i))


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "served"
    _parts(root, DAY1, 30)
    _parts(root, DAY2, 5)
    (root / DAY1 / "part-text.parquet").write_text("not parquet")
    _log_file(root / DAY2 / "part-strings.parquet", v__a="x")
    return root


def test_compaction_keeps_every_row_in_one_file_per_day_and_leaves_malformed_files(root):
    before, skipped_before = _read(root)
    out = compact_served_log(root, "event_timestamp")
    assert (out["files_in"], out["files_out"], out["rows"]) == (35, 2, 70)
    assert sorted(p.rsplit("/", 1)[-1] for p in out["left"]) == ["part-strings.parquet", "part-text.parquet"]
    assert sorted(p.name for p in root.glob("*/part-*.parquet")) == ["part-strings.parquet", "part-text.parquet"]
    assert len(list(root.glob("*/compact-*.parquet"))) == 2
    after, skipped_after = _read(root)
    pd.testing.assert_frame_equal(after, before)
    assert len(after) == 70
    assert {s["file"] for s in skipped_after} == {s["file"] for s in skipped_before}, "still named"
    compacted = next((root / DAY2).glob("compact-*.parquet"))
    assert len(pq.read_schema(compacted).metadata[COMPACTED_FROM]) > 0


def test_new_files_are_compacted_with_the_compacted_one(root):
    compact_served_log(root, "event_timestamp")
    _parts(root, DAY1, 3, start=100)
    before, _ = _read(root)
    out = compact_served_log(root, "event_timestamp")
    assert (out["files_in"], out["files_out"]) == (4, 1)  # the compacted file and the 3 new ones
    assert len(list((root / DAY1).glob("compact-*.parquet"))) == 1
    after, _ = _read(root)
    pd.testing.assert_frame_equal(after, before)
    assert compact_served_log(root, "event_timestamp")["files_in"] == 0, "nothing left to do"


def test_a_compaction_stopped_before_removing_its_inputs_counts_no_row_twice(root, monkeypatch):
    before, _ = _read(root)
    real_unlink = type(root).unlink

    def crash(self, *args, **kwargs):
        if self.name.startswith("part-"):
            raise KeyboardInterrupt("stopped")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(type(root), "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        compact_served_log(root, "event_timestamp")
    monkeypatch.undo()
    assert len(list(root.glob("*/part-0*.parquet"))) == 35 and list(root.glob(f"{DAY1}/compact-*.parquet"))
    after, _ = _read(root)
    pd.testing.assert_frame_equal(after, before)
    compact_served_log(root, "event_timestamp")  # finishes the job: the listed inputs go
    assert not list(root.glob("*/part-0*.parquet"))
    pd.testing.assert_frame_equal(_read(root)[0], before)


def test_files_of_different_schemas_are_compacted_apart(tmp_path):
    root = tmp_path / "served"
    _parts(root, DAY1, 2)
    for i in range(2):
        _log_file(root / DAY1 / f"part-b{i}.parquet", request_id=[f"b{i}-0", f"b{i}-1"], v__b=2.0)
    out = compact_served_log(root, "event_timestamp")
    assert (out["files_in"], out["files_out"]) == (4, 2)
    log = read_served_log(root, ["v__a"], "event_timestamp")
    assert len(log) == 8 and log["v__b"].notna().sum() == 4
