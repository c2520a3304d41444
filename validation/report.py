"""Validation reports: which check failed, on which column, how many rows, a few examples.

Every gate produces one :class:`Report`, prints it for a person (:meth:`Report.render`)
and writes the same content as JSON under ``DATA_DIR/reports/`` (:meth:`Report.write`),
whether it passed or not. A gate that fails raises :class:`GateFailed` carrying it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from core.errors import PlatformError
from core.files import atomic_write

#: How many example values a failure keeps.
MAX_EXAMPLES = 5


def _plain(value: Any) -> Any:
    """A JSON-friendly version of an example value (timestamps as ISO text, NaN as None)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy / pyarrow scalars
        try:
            return _plain(value.item())
        except (ValueError, AttributeError):
            pass
    if isinstance(value, (str, int, float, bool)):
        return value
    try:
        if value != value:  # pandas NA / NaT compare unequal to themselves or raise
            return None
    except (TypeError, ValueError):
        return None
    return str(value)


@dataclass(frozen=True)
class Failure:
    """One check that did not hold. ``failed_rows`` is None for table-level checks."""

    check: str
    table: str
    column: str | None
    message: str
    failed_rows: int | None = None
    examples: tuple = ()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["examples"] = [_plain(e) for e in self.examples[:MAX_EXAMPLES]]
        return out

    def line(self) -> str:
        where = self.table + (f".{self.column}" if self.column else "")
        rows = f" ({self.failed_rows:,} rows)" if self.failed_rows is not None else ""
        examples = ""
        if self.examples:
            examples = "; e.g. " + ", ".join(json.dumps(e, default=str) for e in self.to_dict()["examples"])
        return f"[{self.check}] {where}{rows}: {self.message}{examples}"


@dataclass
class Report:
    """The outcome of one gate run over one subject (a snapshot, a source dir, a model)."""

    gate: str
    subject: str
    failures: list[Failure] = field(default_factory=list)
    #: Checks that found problems but within a documented tolerance (not failures).
    tolerated: list[Failure] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def passed(self) -> bool:
        return not self.failures

    def ran(self, check: str) -> None:
        if check not in self.checks:
            self.checks.append(check)

    def extend(self, failures: Iterable[Failure]) -> None:
        self.failures.extend(failures)

    def to_dict(self) -> dict:
        return {
            "gate": self.gate,
            "subject": self.subject,
            "passed": self.passed,
            "created_at": self.created_at,
            "checks": self.checks,
            "failures": [f.to_dict() for f in self.failures],
            "tolerated": [f.to_dict() for f in self.tolerated],
            "stats": self.stats,
        }

    def render(self) -> str:
        """The report as text for a person: verdict, then one line per failure."""
        verdict = "PASSED" if self.passed else f"FAILED ({len(self.failures)} failing check(s))"
        lines = [f"{self.gate} gate on {self.subject}: {verdict}; {len(self.checks)} checks run"]
        lines += [f"  FAIL {f.line()}" for f in self.failures]
        lines += [f"  tolerated {f.line()}" for f in self.tolerated]
        return "\n".join(lines)

    def write(self, reports_dir: Path) -> Path:
        """Write ``<gate>-<UTC time>.json`` and ``<gate>-latest.json``; return the first."""
        reports_dir = Path(reports_dir)
        reports_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromisoformat(self.created_at).strftime("%Y%m%dT%H%M%S%fZ")
        data = json.dumps(self.to_dict(), indent=2, default=str).encode()
        path = reports_dir / f"{self.gate}-{stamp}.json"
        for target in (path, reports_dir / f"{self.gate}-latest.json"):
            atomic_write(target, data)
        return path


class GateFailed(PlatformError):
    """A gate refused its input. ``report`` says which checks, columns and rows; ``path``
    is where its JSON was written (None if it was not)."""

    def __init__(self, report: Report, path: Path | None = None):
        self.report = report
        self.path = path
        where = f"\n  report: {path}" if path else ""
        super().__init__(report.render() + where)

    @property
    def checks(self) -> list[str]:
        return [f.check for f in self.report.failures]
