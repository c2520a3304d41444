"""Gates after ingest fail closed: features, materialization, training, and a whole
``pipeline run`` over a corrupted RAW_DIR leave everything downstream as it was."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from feast_plugins.store import feature_store
from pipeline.apply import apply
from pipeline.features import build_sources
from pipeline.ingest import latest_snapshot, list_snapshots
from pipeline.materialize import EPOCH, materialize
from tests.conftest import copy_data_dir, is_sqlite, write_raw_dir
from training.registry import ModelRegistry
from training.train import TrainConfig, run_training
from validation.report import GateFailed


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative path -> hash). A SQLite database (the
    online store, in WAL mode) is hashed by its content (:func:`store_digest`), and its
    ``-wal``/``-shm`` files are part of it: a commit may sit in the log, the file unchanged."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.endswith(("-wal", "-shm")):
            continue
        out[str(p.relative_to(root))] = store_digest(p) if is_sqlite(p) else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def store_digest(path: Path) -> str:
    """SHA-256 of a SQLite database's content (its SQL dump), read through its WAL."""
    import sqlite3

    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        for line in conn.iterdump():
            digest.update(line.encode())
        return digest.hexdigest()
    finally:
        conn.close()


def _rewrite(path: Path, frame: pd.DataFrame) -> None:
    path.chmod(0o644)
    frame.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def applied(slice_run, tmp_path_factory):
    """A copy of the slice run's data dir, applied and materialized on its own paths."""
    data = tmp_path_factory.mktemp("stages") / "data"
    copy_data_dir(slice_run["settings"].data_dir, data, ignore=())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(data))
        mp.delenv("RAW_DIR", raising=False)
        from core.settings import Settings

        settings = Settings.from_env()
        apply(settings)
        materialize(settings, end=latest_snapshot(settings).as_of, start=EPOCH)
    return data


def test_features_gate_publishes_nothing_when_a_source_breaks_its_contract(applied, use_case, settings_for, tmp_path):
    data = tmp_path / "data"
    copy_data_dir(applied, data, ignore=())
    settings = settings_for(data)
    snapshot = latest_snapshot(settings)
    weather = pd.read_parquet(snapshot.table_path("weather"))
    weather.loc[weather.index[:9], "humid"] = 500.0  # tampered with after ingest
    _rewrite(snapshot.table_path("weather"), weather)
    before = _digest(settings.sources)
    with pytest.raises(GateFailed) as info:
        build_sources(settings, use_case, snapshot)
    failures = {(f.check, f.table, f.column, f.failed_rows) for f in info.value.report.failures}
    assert ("range", "weather_hourly", "humid", 9) in failures, info.value.report.render()
    assert _digest(settings.sources) == before, "a refused feature build changed the published sources"
    # The snapshot leaves the chain later ingests compare with, kept with its refusal.
    assert (settings.raw_snapshots / "refused" / snapshot.id / "refusal.json").is_file()
    assert snapshot.id not in [p.name for p in list_snapshots(settings)]


def test_materialize_gate_refuses_a_source_whose_type_differs_from_the_feature_view(applied, use_case, settings_for):
    """The gate refuses fractional seat counts under an Int64 feature; stock Feast (the
    gate bypassed) loads them, truncated online while the offline join keeps the fraction."""
    settings = settings_for(applied)
    path = settings.sources / "aircraft.parquet"
    original = path.read_bytes()
    online = settings.data_dir / "online_store.db"
    online_before = store_digest(online)
    aircraft = pd.read_parquet(path)
    bad = aircraft.assign(seats=aircraft["seats"] + 0.5)
    _rewrite(path, bad)
    end = latest_snapshot(settings).as_of
    try:
        with pytest.raises(GateFailed) as info:
            materialize(settings, end=end, start=EPOCH)
        failures = [(f.check, f.table, f.column) for f in info.value.report.failures]
        assert failures == [("dtype", "aircraft", "seats")], info.value.report.render()
        message = info.value.report.failures[0].message
        assert "int64" in message and "double" in message, message
        assert store_digest(online) == online_before, "the online store changed"

        # The difference the gate makes: Feast alone materializes the file without a word.
        store = feature_store(settings)
        store.materialize(start_date=EPOCH, end_date=end, feature_views=["aircraft"])
        tailnum, seats = bad["tailnum"].iloc[0], bad["seats"].iloc[0]
        served = store.get_online_features(features=["aircraft:seats"], entity_rows=[{"tailnum": tailnum}]).to_dict()
        entity = pd.DataFrame({"tailnum": [tailnum], "event_timestamp": [end]})
        offline = store.get_historical_features(entity_df=entity, features=["aircraft:seats"]).to_df()
        assert offline["seats"].tolist() == [seats] and served["seats"] == [int(seats)] != [seats], \
            f"file {seats}, offline {offline['seats'].tolist()}, online {served['seats']}"
    finally:
        path.write_bytes(original)


def test_training_gate_registers_nothing_from_a_bad_events_table(applied, use_case, settings_for, tmp_path):
    data = tmp_path / "data"
    copy_data_dir(applied, data, ignore=())
    settings = settings_for(data)
    events_path = settings.sources / "labelled_events.parquet"
    events = pd.read_parquet(events_path)
    events.loc[events.index[:3], "is_late"] = 2
    _rewrite(events_path, events)
    versions = ModelRegistry(settings.models).versions()
    with pytest.raises(GateFailed) as info:
        run_training(settings, use_case, feature_store(settings), TrainConfig(num_boost_round=5),
                     say=lambda m: None)
    assert ("allowed_values", "labelled_events", "is_late") in [
        (f.check, f.table, f.column) for f in info.value.report.failures], info.value.report.render()
    assert ModelRegistry(settings.models).versions() == versions, "a refused training registered a model"


def test_pipeline_run_on_a_corrupted_raw_dir_fails_and_leaves_production_untouched(
        applied, raw_slice_dir, builtin_raw, tmp_path):
    data = tmp_path / "data"
    copy_data_dir(applied, data, ignore=())
    corrupted = {name: pd.read_parquet(raw_slice_dir / f"{name}.parquet") for name in builtin_raw}
    flights = corrupted["flights"]
    flights.loc[flights.index[::100], "carrier"] = None
    raw = write_raw_dir(corrupted, tmp_path / "raw")
    before = _digest(data)
    env = {"DATA_DIR": str(data), "RAW_DIR": str(raw), "PATH": ""}
    result = subprocess.run([sys.executable, "-m", "cli.pipeline", "run"], capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "[not_nullable] flights.carrier" in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    after = _digest(data)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k.startswith("reports/") for k in changed), f"files outside reports/ changed: {sorted(changed)}"
    for kept in ("online_store.db", "models/champion.json", "registry.db"):
        assert kept in before and before[kept] == after[kept], f"{kept} changed"
    assert any(k.startswith("reports/ingest-") for k in changed - set(before)), "no ingest report was written"


def test_check_files_names_the_unreadable_file_and_still_checks_the_others(tmp_path):
    """One reader for every stage gate over Parquet files: a missing or corrupt file is a
    readable_parquet failure naming it, a readable file is still held to its contract, and a
    contract whose table was not produced at all fails as table_present."""
    from datetime import datetime, timezone

    from core.contracts import ColumnRule, TableContract
    from validation.contracts import Context
    from validation.gates import check_files
    from validation.report import Report

    contract = TableContract("t", {"x": ColumnRule(dtype="int64", nullable=False, min=0)}, volume=False)
    good = tmp_path / "good.parquet"
    pd.DataFrame({"x": [1, -5]}).to_parquet(good)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_text("x\n1\n")
    contracts = {name: TableContract(name, contract.columns, volume=False)
                 for name in ("good", "corrupt", "missing", "unproduced")}
    report = Report("sources", "test")
    check_files(report, {"good": good, "corrupt": corrupt, "missing": tmp_path / "missing.parquet"},
                contracts, Context(now=datetime.now(timezone.utc)))
    by_table = {(f.check, f.table) for f in report.failures}
    assert ("readable_parquet", "corrupt") in by_table and ("readable_parquet", "missing") in by_table
    assert any(f.table == "good" and f.column == "x" for f in report.failures)  # -5 < min
    assert ("table_present", "unproduced") in by_table
    assert all(str(tmp_path) in f.message for f in report.failures if f.check == "readable_parquet")
