"""Data collection: raw tables land as immutable, date-versioned Parquet snapshots.

Every ingest passes the raw-data gate first (``validation``): nothing that fails a
contract becomes a snapshot. A snapshot is a directory ``DATA_DIR/raw/<YYYY-MM-DD>[.N]/``
holding one Parquet file per raw table and a ``manifest.json`` (row counts, SHA-256 of
each file, the snapshot's as-of instant, the gate's report). It is written to a temporary
directory and renamed into place, so a failed ingest leaves nothing behind, and it is
never rewritten: ingesting identical data again reuses the newest snapshot; different
data makes a new one.

A snapshot the ingest gate accepted can still be refused by a later gate (the features
gate, on the tables built from it): :func:`refuse_snapshot` then moves it to
``DATA_DIR/raw/refused/<id>/`` with the refusal recorded, and restores the reference
profile it replaced. Every later ingest is judged against the newest snapshot *not*
refused (as-of, volume, reuse, reference profile), so one bad delivery does not block
the corrected one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import duckdb

from core.duck import connect, copy_to_parquet, sql_str
from core.progress import Progress
from core.settings import Settings
from core.usecase import UseCase
from pipeline.errors import PipelineError
from validation.contracts import Context, check_schema, read_table, timestamp_failures
from validation.drift import (
    as_of_failures,
    as_of_lead_failures,
    as_of_step_failures,
    distribution_failures,
    load_reference,
    profile,
    volume_failures,
    write_reference,
)
from validation.gates import accept_checks, finish, run_contracts
from validation.report import Failure, Report

MANIFEST = "manifest.json"
#: Under ``DATA_DIR/raw``: the snapshots a later gate refused (:func:`refuse_snapshot`),
#: kept for inspection, out of the chain later ingests compare with.
REFUSED = "refused"
#: In a snapshot that became the reference profile: the profile it replaced (JSON
#: ``{"reference": profile or null}``), restored if a later gate refuses the snapshot.
REPLACED_REFERENCE = "replaced_reference.json"
#: In a refused snapshot: which gate refused it, when, and its report.
REFUSAL = "refusal.json"


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
    """Snapshot directories, oldest first (by manifest creation time); refused ones
    (``raw/refused/``) are not among them."""
    if not settings.raw_snapshots.is_dir():
        return []
    found = [p for p in settings.raw_snapshots.iterdir() if (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: json.loads((p / MANIFEST).read_text())["created_at"])


def latest_snapshot(settings: Settings) -> Snapshot:
    snapshots = list_snapshots(settings)
    if not snapshots:
        refused = settings.raw_snapshots / REFUSED
        hint = f" (the ones under {refused} were refused by a gate)" if refused.is_dir() else ""
        raise PipelineError(f"no raw snapshot under {settings.raw_snapshots}{hint}: run `pipeline ingest` first")
    return Snapshot.load(snapshots[-1])


def refuse_snapshot(settings: Settings, snapshot: Snapshot, report: Report, report_path: Path | None,
                    progress: Progress | None = None) -> Path | None:
    """A later gate refused the tables built from ``snapshot``: take it out of the chain
    later ingests compare with. It moves (one rename) to ``raw/refused/<id>/`` with a
    ``refusal.json`` naming the gate and its report, and the reference profile it became
    is replaced by the one it replaced. Return where it went (None: not one of this data
    dir's snapshots, or already refused)."""
    if snapshot.path.parent != settings.raw_snapshots or not (snapshot.path / MANIFEST).is_file():
        return None
    refused = settings.raw_snapshots / REFUSED
    refused.mkdir(exist_ok=True)
    record = {"refused_at": datetime.now(timezone.utc).isoformat(), "gate": report.gate,
              "report": str(report_path) if report_path else None,
              "failures": [f.line() for f in report.failures]}
    (snapshot.path / REFUSAL).write_text(json.dumps(record, indent=2))
    target = refused / snapshot.id
    os.rename(snapshot.path, target)
    _reference_profile(settings)  # restores the profile it replaced, if it had become the reference
    if progress:
        progress.say(f"snapshot {snapshot.id} refused by the {report.gate} gate: moved to {target}; "
                     "the next ingest is judged against the last snapshot not refused")
    return target


def _reference_profile(settings: Settings, write: bool = True) -> dict | None:
    """The reference profile ingest compares with. One made from a refused snapshot gives
    way to the profile that snapshot replaced (none: the next accepted snapshot writes
    one), written back unless ``write`` is false (``validation raw`` writes nothing), so a
    refusal interrupted between its two steps heals here."""
    reference = load_reference(settings.reference_profile)
    snapshot_id = (reference or {}).get("snapshot")
    if not snapshot_id or not (settings.raw_snapshots / REFUSED / str(snapshot_id) / MANIFEST).is_file():
        return reference
    saved = settings.raw_snapshots / REFUSED / str(snapshot_id) / REPLACED_REFERENCE
    replaced = json.loads(saved.read_text())["reference"] if saved.is_file() else None
    if write and replaced is None:
        settings.reference_profile.unlink(missing_ok=True)
    elif write:
        write_reference(settings.reference_profile, replaced)
    return replaced


def _register_input(con: duckdb.DuckDBPyConnection, settings: Settings, use_case: UseCase,
                    report: Report) -> dict[str, str]:
    """Expose each raw input as a DuckDB view ``input_<table>``; return where each came from.
    A missing or unreadable file is a failure in ``report``, not an exception, so one run
    names every bad file."""
    origins = {}
    builtin = None if settings.raw_dir else use_case.load_builtin()
    for table in use_case.raw_tables:
        view = f"input_{table.name}"
        if settings.raw_dir is None:
            con.register(view, builtin[table.name])
            origins[table.name] = f"the built-in data ({table.name})"
            continue
        path = settings.raw_dir / f"{table.name}.parquet"
        report.ran(f"file_present:{table.name}")
        if not path.is_file():
            report.failures.append(Failure("file_present", table.name, None,
                                           f"RAW_DIR={settings.raw_dir}: missing raw table file {path.name}"))
            continue
        try:
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({sql_str(path)})")
            con.execute(f"SELECT count(*) FROM {view}").fetchone()
        except duckdb.Error as e:
            con.execute(f"DROP VIEW IF EXISTS {view}")
            report.failures.append(Failure("readable_parquet", table.name, None,
                                           f"{path}: cannot be read as Parquet: {e}"))
            continue
        origins[table.name] = str(path)
    return origins


def _table_fingerprints(path: Path) -> dict[str, str]:
    manifest = json.loads((path / MANIFEST).read_text())
    return {name: t["sha256"] for name, t in manifest["tables"].items()}


def write_reference_profile(settings: Settings, use_case: UseCase, frames, snapshot_id: str, as_of: str,
                            progress: Progress | None) -> None:
    """The first accepted snapshot becomes the reference later ones are compared with
    (``validation profile`` replaces it deliberately; ``ingest(follow_reference=True)``
    replaces it with every accepted snapshot)."""
    write_reference(settings.reference_profile, profile(frames, use_case.raw_contracts,
                                                        snapshot=snapshot_id, as_of=as_of))
    if progress:
        progress.say(f"reference profile written from snapshot {snapshot_id}: {settings.reference_profile}")


def ingest(settings: Settings, use_case: UseCase, progress: Progress | None = None,
           accept: Iterable[str] = (), dry_run: bool = False,
           declared_as_of: datetime | None = None, follow_reference: bool = False) -> Snapshot | None:
    """Check the raw tables against their contracts and land them as a snapshot.

    The gate runs on the normalised tables in a staging directory: file and column types
    first (a timestamp must be timezone-aware, at any precision, or text with a UTC offset:
    ``naive_timestamp``), then the use case's contracts (nulls, ranges, allowed values, keys, timestamps
    not in the future), the as-of instant against the previous snapshot's (forward, by at
    most the use case's ``as_of_max_step``) and against the tables (none reaching more than
    ``as_of_max_lead`` past it), the row counts against the previous snapshot's, and the
    distributions against the reference profile. The previous snapshot is the newest one
    no later gate refused (:func:`refuse_snapshot`). Any failure raises
    :class:`~validation.report.GateFailed` and no snapshot is written; the report is
    written under ``DATA_DIR/reports`` either way. ``accept`` names checks (e.g.
    ``volume_change``) whose failures are reported but do not block this run. With
    ``dry_run`` only the gate runs (``validation raw``): nothing is written but the report.

    ``declared_as_of``: a delivery that says it is complete up to an instant (a replayed
    day ends at its midnight, after its last event) gets that instant as its as-of, so the
    features published at that midnight exist; data newer than it is a failure
    (``as_of_declared``).

    ``follow_reference``: every accepted snapshot becomes the distribution reference (a
    seasonal history replayed day by day drifts from any fixed one), so each delivery is
    judged against the last accepted one; by default only the first snapshot sets it.
    """
    report = Report("ingest", str(settings.raw_dir) if settings.raw_dir else "the built-in data")
    con = connect()
    origins = _register_input(con, settings, use_case, report)
    for table in use_case.raw_tables:
        if table.name in origins:
            report.ran(f"column_types:{table.name}")
            actual = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE input_{table.name})").fetchall())
            report.extend(check_schema(table.name, origins[table.name], actual, table.columns))
            # Timestamps must name their instant: a naive one, or text without a UTC
            # offset, would be read as UTC by the normalisation, hours off if it was local.
            for column, family in table.columns.items():
                if family == "TIMESTAMP" and column in actual:
                    report.ran(f"naive_timestamp:{table.name}.{column}")
                    report.extend(timestamp_failures(con, f"input_{table.name}", table.name, origins[table.name],
                                                     column, actual[column]))
    if not report.passed:
        finish(report, settings.reports)
    settings.raw_snapshots.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=settings.raw_snapshots))
    try:
        tables = {}
        for table in use_case.raw_tables:
            out = staging / f"{table.name}.parquet"
            try:
                copy_to_parquet(con, f"WITH raw AS (SELECT * FROM input_{table.name}) {table.normalize_sql}", out)
            except duckdb.Error as e:
                report.failures.append(Failure("normalise", table.name, None,
                                               f"{origins[table.name]}: cannot normalise: {e}"))
                continue
            rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_str(out)})").fetchone()[0]
            tables[table.name] = {"rows": rows, "sha256": _sha256(out), "origin": origins[table.name]}
            if progress:
                progress.say(f"{table.name}: {rows:,} rows")
        if not report.passed:
            finish(report, settings.reports)
        for name in tables:
            con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM read_parquet({sql_str(staging / f'{name}.parquet')})")
        as_of = con.execute(use_case.as_of_sql).fetchone()[0]
        beyond_declared = False
        if declared_as_of is not None and as_of is not None:
            report.ran("as_of_declared")
            beyond_declared = as_of > declared_as_of
            if beyond_declared:
                report.failures.append(Failure(
                    "as_of_declared", "snapshot", None,
                    f"the data reaches {as_of.isoformat()}, after the delivery's declared as-of "
                    f"{declared_as_of.isoformat()}"))
            as_of = declared_as_of
        frames = {name: read_table(staging / f"{name}.parquet") for name in tables}
        now = datetime.now(timezone.utc)
        run_contracts(report, frames, use_case.raw_contracts, Context(now=now, as_of=as_of, tables=frames))
        # The previous snapshot: the newest one no gate refused (refused ones are not listed).
        previous = list_snapshots(settings)
        last = Snapshot.load(previous[-1]) if previous else None
        report.ran("as_of_forward")
        if as_of is None:
            report.failures.append(Failure("non_empty", "snapshot", None,
                                           "the raw data holds no events: cannot tell its as-of time"))
        else:
            report.stats["as_of"] = as_of.isoformat()
            report.extend(as_of_failures(as_of, last.as_of if last else None, last.id if last else None))
            report.ran("as_of_step")
            report.extend(as_of_step_failures(as_of, last.as_of if last else None, last.id if last else None,
                                              use_case.as_of_max_step))
            if not beyond_declared:  # data past a declared as-of: as_of_declared said so already
                report.ran("as_of_lead")
                failures, report.stats["as_of_lead_hours"] = as_of_lead_failures(frames, as_of,
                                                                                  use_case.as_of_max_lead)
                report.extend(failures)
        report.ran("volume_change")
        failures, report.stats["volume_ratio"] = volume_failures(
            {n: t["rows"] for n, t in tables.items()}, last.tables if last else None, use_case.raw_contracts)
        report.extend(failures)
        reference = _reference_profile(settings, write=not dry_run)
        if reference is not None:
            report.ran("distribution_psi")
            failures, report.stats["psi"] = distribution_failures(frames, reference)
            report.extend(failures)
        accept_checks(report, accept)
        report_path = finish(report, settings.reports)
        if progress:
            progress.say(f"contracts passed ({len(report.checks)} checks; report {report_path.name})")
        if dry_run:
            return None

        fingerprints = {name: t["sha256"] for name, t in tables.items()}
        if previous and _table_fingerprints(previous[-1]) == fingerprints and last.as_of == as_of:
            if progress:
                progress.say(f"unchanged since snapshot {previous[-1].name}: reusing it")
            if reference is None or follow_reference:
                write_reference_profile(settings, use_case, frames, last.id, last.as_of.isoformat(), progress)
            return last

        snapshot_id = now.strftime("%Y-%m-%d")
        n = 1
        while any((root / snapshot_id).exists() for root in (settings.raw_snapshots, settings.raw_snapshots / REFUSED)):
            snapshot_id = f"{now:%Y-%m-%d}.{n}"
            n += 1
        manifest = {
            "id": snapshot_id,
            "created_at": now.isoformat(),
            "as_of": as_of.astimezone(timezone.utc).isoformat(),
            "tables": tables,
            "validation_report": str(report_path),
        }
        becomes_reference = reference is None or follow_reference
        if becomes_reference:  # kept, to be restored if a later gate refuses this snapshot
            (staging / REPLACED_REFERENCE).write_text(json.dumps({"reference": reference}, default=str))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        final = settings.raw_snapshots / snapshot_id
        staging.rename(final)
        for p in final.iterdir():
            p.chmod(0o444)
        if becomes_reference:
            write_reference_profile(settings, use_case, frames, snapshot_id, manifest["as_of"], progress)
        if progress:
            progress.say(f"new snapshot {snapshot_id} (as of {manifest['as_of']})")
        return Snapshot.load(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
