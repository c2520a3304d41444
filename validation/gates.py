"""Running contracts as gates: collect every failure, write the report, fail closed.

A gate never changes data. The stage that calls it writes its output to a staging place
first and publishes it only after :func:`finish` returned, so a failure leaves nothing
downstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from core.contracts import TableContract
from validation.contracts import Context, read_table, validate_frame
from validation.report import Failure, GateFailed, Report


def run_contracts(report: Report, frames: Mapping[str, pd.DataFrame],
                  contracts: Mapping[str, TableContract], ctx: Context) -> None:
    """Check every frame that has a contract; a contract without its frame is a failure."""
    for name, contract in contracts.items():
        report.ran(f"contract:{name}")
        if name not in frames:
            report.failures.append(Failure("table_present", name, None, f"table {name!r} was not produced"))
            continue
        failures, tolerated = validate_frame(contract, frames[name], ctx)
        report.extend(failures)
        report.tolerated.extend(tolerated)


def check_files(report: Report, paths: Mapping[str, Path], contracts: Mapping[str, TableContract],
                ctx: Context) -> None:
    """Read each table's Parquet file and check it against its contract. An unreadable file
    (missing, or not Parquet: pyarrow raises ArrowInvalid, a ValueError) is one
    ``readable_parquet`` failure naming the file, and its contract is not run."""
    frames = {}
    for name, path in paths.items():
        try:
            frames[name] = read_table(path)
        except (OSError, ValueError) as e:
            report.failures.append(Failure("readable_parquet", name, None, f"{path}: {e}"))
    run_contracts(report, frames, {n: c for n, c in contracts.items() if n in frames or n not in paths}, ctx)


def accept_checks(report: Report, accept: Iterable[str]) -> None:
    """Demote failures of the named checks (e.g. ``volume_change`` after an intended
    change of source) to tolerated ones: still reported, no longer blocking."""
    accept = set(accept)
    if not accept:
        return
    kept = []
    for failure in report.failures:
        (report.tolerated if failure.check in accept else kept).append(failure)
    report.failures = kept
    report.stats["accepted_checks"] = sorted(accept)


def finish(report: Report, reports_dir: Path) -> Path:
    """Write the report; raise :class:`GateFailed` if any check failed."""
    path = report.write(reports_dir)
    if not report.passed:
        raise GateFailed(report, path)
    return path


def training_frame_failures(frame: pd.DataFrame, features: list[str], label: str,
                            event_timestamp: str, cut: pd.Timestamp, min_rows: int = 100) -> list[Failure]:
    """The training set a model will learn from: enough rows on both sides of the time
    split, both label values on each side, every feature present, numeric and not all
    missing (an all-missing feature is a broken join, not a signal)."""
    table = "training_set"
    failures = []
    missing = [f for f in features if f not in frame.columns]
    for column in missing:
        failures.append(Failure("column_present", table, column, "feature absent from the training set"))
    if label not in frame.columns:
        return failures + [Failure("column_present", table, label, "label absent from the training set")]
    y = frame[label]
    bad = ~y.isin([0, 1])
    if bad.any():
        failures.append(Failure("label_values", table, label, "labels must be 0 or 1", int(bad.sum()),
                                tuple(y[bad].head(5).tolist())))
    ts = frame[event_timestamp]
    for side, mask in (("training", ts < cut), ("holdout", ts >= cut)):
        n = int(mask.sum())
        if n < min_rows:
            failures.append(Failure("window_rows", table, event_timestamp,
                                    f"{side} window has {n:,} rows; needs at least {min_rows:,}", n))
        elif y[mask].nunique() < 2:
            failures.append(Failure("label_values", table, label, f"{side} window has a single label value", n))
    for column in [f for f in features if f in frame.columns]:
        values = pd.to_numeric(frame[column], errors="coerce")
        not_numeric = values.isna() & frame[column].notna()
        if not_numeric.any():
            failures.append(Failure("numeric_feature", table, column, "non-numeric values",
                                    int(not_numeric.sum()), tuple(frame.loc[not_numeric, column].head(5).tolist())))
        elif values.isna().all():
            failures.append(Failure("feature_all_missing", table, column,
                                    "every value is missing: the feature's join found nothing", len(frame)))
        elif np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).any():
            failures.append(Failure("finite_feature", table, column, "infinite values",
                                    int(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).sum())))
    return failures
