"""Feature pipelines: DuckDB SQL from a raw snapshot to the source Parquet tables.

Each :class:`~core.usecase.SourceTable` is one SQL file in ``feature_repo/pipelines``
run against views ``raw_<table>`` of the snapshot and the tables built before it, with
``getvariable('as_of')`` bound to the snapshot's as-of instant. All tables are written to a
staging directory first, checked against their contracts (types from the Feast feature
views, value rules from the use case), and moved into ``DATA_DIR/sources`` only when every
one succeeded and passed. A refused build also refuses its snapshot
(:func:`pipeline.ingest.refuse_snapshot`): the next ingest is not compared with it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import duckdb

from core.contracts import TableContract
from core.duck import connect, copy_to_parquet, sql_str
from core.files import atomic_write
from core.progress import Progress
from core.settings import Settings
from core.usecase import UseCase
from pipeline.errors import PipelineError
from pipeline.ingest import Snapshot, refuse_snapshot
from validation.contracts import Context
from validation.gates import check_files, finish
from validation.report import GateFailed, Report

#: In ``DATA_DIR/sources``: which snapshot the tables were built from.
BUILT_FROM = "built_from.json"


def built_from(settings: Settings) -> dict | None:
    """The snapshot the published source tables were built from (``{"snapshot": id,
    "as_of"}``), None if unknown (tables built before this was recorded)."""
    try:
        return json.loads((settings.sources / BUILT_FROM).read_text())
    except (OSError, ValueError):
        return None


def source_sql(settings: Settings, sql_file: str, params) -> str:
    path = settings.feature_repo / "pipelines" / sql_file
    try:
        return path.read_text().format_map(dict(params))
    except KeyError as e:
        raise PipelineError(f"{path}: placeholder {e} has no value in the use case's params") from e


def build_sources(
    settings: Settings, use_case: UseCase, snapshot: Snapshot, progress: Progress | None = None,
    contracts: Mapping[str, TableContract] | None = None,
) -> dict[str, int]:
    """Build every source table, check each against its contract, and only then publish
    them all; return the row count of each. A failed contract raises
    :class:`~validation.report.GateFailed`, leaves the published tables as they were and
    moves ``snapshot`` out of the chain later ingests compare with. A change to the SQL of
    a view the champion model is pinned to is refused first, before anything is built
    (:func:`pipeline.definitions.guard_sources`). ``contracts`` defaults to those derived from the Feast definitions."""
    from pipeline.definitions import guard_sources

    # Before anything is written: new SQL under the champion's views is refused here.
    guard_sources(settings, use_case, say=progress.say if progress else None)
    if contracts is None:
        from pipeline.apply import source_contracts

        contracts = source_contracts(settings, use_case)
    con = connect()
    con.execute(f"SET VARIABLE as_of = CAST({sql_str(snapshot.as_of.isoformat())} AS TIMESTAMPTZ)")
    for name in snapshot.tables:
        con.execute(f"CREATE VIEW raw_{name} AS SELECT * FROM read_parquet({sql_str(snapshot.table_path(name))})")
    settings.sources.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=settings.sources))
    counts = {}
    try:
        for source in use_case.sources:
            sql = source_sql(settings, source.sql_file, source.params)
            try:
                con.execute(f"CREATE TABLE {source.name} AS {sql}")
                copy_to_parquet(con, f"SELECT * FROM {source.name}", staging / f"{source.name}.parquet")
            except duckdb.Error as e:
                raise PipelineError(f"feature pipeline {source.sql_file} (table {source.name}): {e}") from e
            counts[source.name] = con.execute(f"SELECT count(*) FROM {source.name}").fetchone()[0]
            if progress:
                progress.say(f"{source.name}: {counts[source.name]:,} rows")
        report = Report("features", f"snapshot {snapshot.id}")
        check_files(report, {name: staging / f"{name}.parquet" for name in counts}, contracts,
                    Context(now=datetime.now(timezone.utc), as_of=snapshot.as_of))
        try:
            path = finish(report, settings.reports)
        except GateFailed as e:
            # Data the ingest gate let through but whose features are refused must not be
            # what the next delivery is compared with (its as-of, volume, reference).
            refuse_snapshot(settings, snapshot, e.report, e.path, progress)
            raise
        if progress:
            progress.say(f"contracts passed ({len(report.checks)} tables; report {path.name})")
        for source in use_case.sources:
            os.replace(staging / f"{source.name}.parquet", settings.sources / f"{source.name}.parquet")
        # Which snapshot the published tables describe: training records it with the model
        # (``training reproduce`` rebuilds from it).
        atomic_write(settings.sources / BUILT_FROM, json.dumps(
            {"snapshot": snapshot.id, "as_of": snapshot.as_of.isoformat()}).encode())
        return counts
    finally:
        shutil.rmtree(staging, ignore_errors=True)
