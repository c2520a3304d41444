"""Data collection: raw tables land as immutable, date-versioned Parquet snapshots.

A snapshot is a directory ``DATA_DIR/raw/<YYYY-MM-DD>[.N]/`` holding one Parquet file
per raw table and a ``manifest.json`` (row counts, SHA-256 of each file, the snapshot's
as-of instant). It is written to a temporary directory and renamed into place, so a
failed ingest leaves nothing behind, and it is never rewritten: ingesting identical data
again reuses the newest snapshot; different data makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from pipeline.config import Settings
from pipeline.duck import connect, copy_to_parquet, sql_str
from pipeline.errors import PipelineError
from pipeline.progress import Progress
from pipeline.usecase import UseCase
from validation.contracts import ContractViolation, check_schema

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Snapshot:
    id: str
    path: Path
    as_of: datetime
    tables: dict[str, int]

    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    @classmethod
    def load(cls, path: Path) -> "Snapshot":
        manifest = json.loads((path / MANIFEST).read_text())
        return cls(
            id=manifest["id"],
            path=path,
            as_of=datetime.fromisoformat(manifest["as_of"]),
            tables={name: t["rows"] for name, t in manifest["tables"].items()},
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_snapshots(settings: Settings) -> list[Path]:
    """Snapshot directories, oldest first (by manifest creation time)."""
    if not settings.raw_snapshots.is_dir():
        return []
    found = [p for p in settings.raw_snapshots.iterdir() if (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: json.loads((p / MANIFEST).read_text())["created_at"])


def latest_snapshot(settings: Settings) -> Snapshot:
    snapshots = list_snapshots(settings)
    if not snapshots:
        raise PipelineError(f"no raw snapshot under {settings.raw_snapshots}: run `pipeline ingest` first")
    return Snapshot.load(snapshots[-1])


def _register_input(con: duckdb.DuckDBPyConnection, settings: Settings, use_case: UseCase) -> dict[str, str]:
    """Expose each raw input as a DuckDB view ``input_<table>``; return where each came from."""
    origins = {}
    builtin = None if settings.raw_dir else use_case.load_builtin()
    for table in use_case.raw_tables:
        view = f"input_{table.name}"
        if settings.raw_dir is None:
            con.register(view, builtin[table.name])
            origins[table.name] = f"the built-in data ({table.name})"
            continue
        path = settings.raw_dir / f"{table.name}.parquet"
        if not path.is_file():
            raise PipelineError(f"RAW_DIR={settings.raw_dir}: missing raw table file {path.name}")
        try:
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({sql_str(path)})")
            con.execute(f"SELECT count(*) FROM {view}").fetchone()
        except duckdb.Error as e:
            raise PipelineError(f"{path}: cannot be read as Parquet: {e}") from e
        origins[table.name] = str(path)
    return origins


def _table_fingerprints(path: Path) -> dict[str, str]:
    manifest = json.loads((path / MANIFEST).read_text())
    return {name: t["sha256"] for name, t in manifest["tables"].items()}


def ingest(settings: Settings, use_case: UseCase, progress: Progress | None = None) -> Snapshot:
    """Validate the raw tables' schemas, normalise them and land them as a snapshot."""
    con = connect()
    origins = _register_input(con, settings, use_case)
    settings.raw_snapshots.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=settings.raw_snapshots))
    try:
        tables = {}
        for table in use_case.raw_tables:
            view = f"input_{table.name}"
            actual = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {view})").fetchall())
            try:
                check_schema(table.name, origins[table.name], actual, table.columns)
            except ContractViolation as e:
                raise PipelineError(str(e)) from e
            out = staging / f"{table.name}.parquet"
            try:
                copy_to_parquet(con, f"WITH raw AS (SELECT * FROM {view}) {table.normalize_sql}", out)
            except duckdb.Error as e:
                raise PipelineError(
                    f"raw table {table.name!r} from {origins[table.name]}: cannot normalise: {e}"
                ) from e
            rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_str(out)})").fetchone()[0]
            tables[table.name] = {"rows": rows, "sha256": _sha256(out), "origin": origins[table.name]}
            if progress:
                progress.say(f"{table.name}: {rows:,} rows")
        for name in tables:
            con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM read_parquet({sql_str(staging / f'{name}.parquet')})")
        as_of = con.execute(use_case.as_of_sql).fetchone()[0]
        if as_of is None:
            raise PipelineError("the raw data holds no events: cannot tell its as-of time")

        previous = list_snapshots(settings)
        fingerprints = {name: t["sha256"] for name, t in tables.items()}
        if (previous and _table_fingerprints(previous[-1]) == fingerprints
                and Snapshot.load(previous[-1]).as_of == as_of):
            if progress:
                progress.say(f"unchanged since snapshot {previous[-1].name}: reusing it")
            return Snapshot.load(previous[-1])

        now = datetime.now(timezone.utc)
        snapshot_id = now.strftime("%Y-%m-%d")
        n = 1
        while (settings.raw_snapshots / snapshot_id).exists():
            snapshot_id = f"{now:%Y-%m-%d}.{n}"
            n += 1
        manifest = {
            "id": snapshot_id,
            "created_at": now.isoformat(),
            "as_of": as_of.astimezone(timezone.utc).isoformat(),
            "tables": tables,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        final = settings.raw_snapshots / snapshot_id
        staging.rename(final)
        for p in final.iterdir():
            p.chmod(0o444)
        if progress:
            progress.say(f"new snapshot {snapshot_id} (as of {manifest['as_of']})")
        return Snapshot.load(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
