"""Faults injected into a replay (``replay run --inject SPEC``), so monitoring's causes
(``monitoring/causes.py``) can be checked against a known truth.

A SPEC is ``NAME[=VALUE][@DAY]``; ``@DAY`` (ISO date, the use case's local calendar) limits
the fault to one served day (for ``skip-materialize``: to the night that ends it), without
it the fault holds on every served day (``skip-materialize``: the night after the first).

========================  ==================================================================
``push-delay=2h``         the intraday push feed runs late: before the requests of hour h it
                          pushes the window that closed at h - delay (needs ``--feed push``).
                          Expected cause: ``write_late``.
``late-rows[=4]``         every N-th hour (UTC, default 4) the rows of the first entity of
                          each push source (smallest join key) are missing from the source
                          when their hour is pushed: they arrive with the night's delivery
                          (needs ``--feed push``). Expected cause: ``late_source_row``.
``skip-materialize``      the night's materialization does not run; the next night's
                          catches up. Expected cause: ``write_late`` (the daily views).
``transform-change``      a feature pipeline's SQL changes (``=TABLE.COLUMN``, default
``[=TABLE.COLUMN]``       ``aircraft.plane_year``: that source table's column becomes
                          ``COLUMN + 1``) on the night before ``@DAY`` (default: the night
                          after the first served day), deliberately, as the definition
                          fingerprints demand: the nightly flow rebuilds the sources with
                          ``--allow-definition-change`` for the views it changes, applies,
                          materializes (a changed loaded part is reloaded whole), and a model
                          trained on the new definition is promoted before the day's
                          traffic. The values served before it were computed the old way;
                          the offline join computes them the new way. Expected cause:
                          ``definition_changed`` (the changed views, the days before ``@DAY``).
========================  ==================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Fault names, and the cause monitoring must attribute their mismatches to.
EXPECTED_CAUSE = {"push-delay": "write_late", "late-rows": "late_source_row", "skip-materialize": "write_late",
                  "transform-change": "definition_changed"}
#: transform-change without a value: the source table and column changed.
DEFAULT_TRANSFORM_CHANGE = "aircraft.plane_year"
_COLUMN = re.compile(r"^(?P<table>[A-Za-z_][A-Za-z0-9_]*)\.(?P<column>[A-Za-z_][A-Za-z0-9_]*)$")
NAMES = tuple(EXPECTED_CAUSE)
#: Faults that act on the intraday push feed.
FEED_FAULTS = ("push-delay", "late-rows")
_SPEC = re.compile(r"^(?P<name>[a-z-]+)(=(?P<value>[^@]+))?(@(?P<day>\d{4}-\d{2}-\d{2}))?$")
_DURATION = re.compile(r"^(?P<number>\d+(\.\d+)?)(?P<unit>[smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class FaultError(ValueError):
    """A fault spec that cannot be read; the message names it and says what is allowed."""


@dataclass(frozen=True)
class Fault:
    name: str
    #: push-delay: how late the feed runs.
    delay: timedelta | None = None
    #: late-rows: every how many hours a late row.
    every_hours: int | None = None
    #: The served day it holds on (None: every day; skip-materialize: the first night;
    #: transform-change: the first day served with the change, None: the second).
    day: date | None = None
    #: transform-change: ``TABLE.COLUMN`` of the source table whose SQL changes.
    column: str | None = None

    def spec(self) -> str:
        value = (f"={int(self.delay.total_seconds() // 60)}m" if self.delay is not None
                 else f"={self.every_hours}" if self.every_hours is not None
                 else f"={self.column}" if self.column is not None else "")
        return f"{self.name}{value}" + (f"@{self.day.isoformat()}" if self.day else "")

    def on(self, day: date) -> bool:
        return self.day is None or self.day == day


def parse(text: str) -> Fault:
    """A :class:`Fault` from ``NAME[=VALUE][@DAY]`` (the module doc)."""
    m = _SPEC.match(text.strip())
    if not m or m["name"] not in NAMES:
        raise FaultError(f"{text!r} is not a fault: use one of push-delay=DURATION, late-rows[=HOURS], "
                         "skip-materialize, transform-change[=TABLE.COLUMN], each optionally @YYYY-MM-DD")
    try:
        day = date.fromisoformat(m["day"]) if m["day"] else None
    except ValueError:
        raise FaultError(f"{text!r}: {m['day']!r} is not a date") from None
    name, value = m["name"], m["value"]
    if name == "push-delay":
        d = _DURATION.match(value or "")
        if not d or float(d["number"]) <= 0:
            raise FaultError(f"{text!r}: push-delay needs a positive duration, e.g. push-delay=2h")
        return Fault(name, delay=timedelta(seconds=float(d["number"]) * _UNITS[d["unit"]]), day=day)
    if name == "late-rows":
        if value is not None and (not value.isdigit() or int(value) < 1):
            raise FaultError(f"{text!r}: late-rows takes every how many hours, a whole number of at least 1")
        return Fault(name, every_hours=int(value) if value else 4, day=day)
    if name == "transform-change":
        if value is not None and not _COLUMN.match(value):
            raise FaultError(f"{text!r}: transform-change takes the source table and column it changes, "
                             f"TABLE.COLUMN (default {DEFAULT_TRANSFORM_CHANGE})")
        return Fault(name, day=day, column=value or DEFAULT_TRANSFORM_CHANGE)
    if value is not None:
        raise FaultError(f"{text!r}: {name} takes no value")
    return Fault(name, day=day)


def check(faults, feed) -> None:
    """Faults that need the push feed refuse a replay without one."""
    needs = [f.spec() for f in faults if f.name in FEED_FAULTS]
    if needs and feed is None:
        raise FaultError(f"--inject {', '.join(needs)}: needs the intraday push feed (--feed push)")
    names = [f.name for f in faults]
    if "push-delay" in names and "late-rows" in names:
        days = {f.name: f.day for f in faults}
        if days["push-delay"] is None or days["late-rows"] is None or days["push-delay"] == days["late-rows"]:
            raise FaultError("--inject push-delay and late-rows on the same day: a late push hides the late "
                             "rows (give them different @DAYs)")


def skips_materialize(faults, day: date, first_day: date) -> bool:
    """Whether the night ending served ``day`` skips its materialization."""
    return any(f.name == "skip-materialize" and (f.day or first_day) == day for f in faults)


def transform_change_on(faults, day: date, first_day: date) -> Fault | None:
    """The transform-change that takes effect on served ``day`` (its night is the one before)."""
    for f in faults:
        if f.name == "transform-change" and (f.day or first_day + timedelta(days=1)) == day:
            return f
    return None


def change_transform(settings, use_case, fault: Fault, workdir: Path):
    """(settings, views): ``settings`` with a copy of its ``feature_repo/`` (under ``workdir``) in which the
    source table ``fault.column`` names is built with ``COLUMN + 1``, and with
    ``allow_definition_change`` naming every view whose definition that changes (the views
    reading the table, directly or through another source table): the deliberate change
    the definition fingerprints ask for (``pipeline/definitions.py``). The SQL is the old
    query wrapped, so the table keeps its columns, types and row order."""
    import shutil
    from dataclasses import replace

    from pipeline.definitions import current

    table, column = fault.column.split(".", 1)
    tables = {t.name: t for t in use_case.sources}
    if table not in tables:
        raise FaultError(f"--inject {fault.spec()}: no source table {table!r} (use case {use_case.name}: "
                         f"{', '.join(sorted(tables))})")
    repo = Path(workdir) / f"transform-change-{fault.day or 'second-day'}" / "feature_repo"
    if repo.parent.exists():
        shutil.rmtree(repo.parent)
    shutil.copytree(settings.feature_repo, repo, ignore=shutil.ignore_patterns("__pycache__"))
    sql = repo / "pipelines" / tables[table].sql_file
    shared = sorted(t.name for t in use_case.sources if t.sql_file == tables[table].sql_file and t.name != table)
    if shared:
        raise FaultError(f"--inject {fault.spec()}: {sql.name} builds {table} and {', '.join(shared)} too: "
                         "pick a table with a SQL file of its own")
    old = sql.read_text().rstrip().rstrip(";")
    sql.write_text(f'SELECT * REPLACE ("{column}" + 1 AS "{column}") FROM (\n{old}\n)\n')
    changed_settings = replace(settings, feature_repo_dir=repo)
    before, after = current(settings, use_case), current(changed_settings, use_case)
    changed = tuple(sorted(v for v in after if before.get(v, {}).get("fingerprint") != after[v]["fingerprint"]))
    if not changed:
        raise FaultError(f"--inject {fault.spec()}: changing {sql.name} changes no feature view's definition")
    return replace(changed_settings, allow_definition_change=changed), changed


class FaultyFeed:
    """The replay's intraday feed with the feed faults applied (``day_of`` maps the
    replay clock to the local served day)."""

    def __init__(self, feed, faults, day_of, workdir: Path):
        self.feed, self.faults, self.day_of, self.workdir = feed, tuple(faults), day_of, Path(workdir)
        self.__name__ = getattr(feed, "__name__", "feed")
        self._on_time: dict[int, Path] = {}

    def __call__(self, stream, use_case, store, start: datetime, end: datetime, **kwargs):
        from pipeline.push import push_window

        day = self.day_of(end)
        active = {f.name: f for f in self.faults if f.name in FEED_FAULTS and f.on(day)}
        if not active:
            return self.feed(stream, use_case, store, start, end, **kwargs)
        sources = stream.sources
        if "late-rows" in active:
            sources = self._without_late_rows(stream, use_case, store, active["late-rows"].every_hours)
        if "push-delay" in active:
            delay = active["push-delay"].delay
            if start - delay < end - delay:
                start, end_pushed = start - delay, end - delay
            else:
                return {}
        else:
            end_pushed = end
        return push_window(stream, use_case, store, start, end_pushed, sources=sources, written_at=end,
                           records=kwargs.get("records"))

    def _without_late_rows(self, stream, use_case, store, every: int) -> Path:
        """A copy of the push sources' tables without their late rows (built once)."""
        if every in self._on_time:
            return self._on_time[every]
        from feast_plugins.push_writer import push_targets

        target_dir = self.workdir / f"on-time-every-{every}h"
        target_dir.mkdir(parents=True, exist_ok=True)
        for target in push_targets(store, stream, tuple(use_case.push_sources)):
            source = Path(stream.sources) / target.path.name
            table = pq.read_table(source)
            keep = ~late_mask(table, target.timestamp_field, _join_keys(target), every)
            pq.write_table(table.filter(pa.array(keep)), target_dir / target.path.name)
        self._on_time[every] = target_dir
        return target_dir


def _join_keys(target) -> list[str]:
    keys = []
    for view in target.views:
        for key in getattr(view, "join_keys", None) or [c.name for c in getattr(view, "entity_columns", [])]:
            if key not in keys:
                keys.append(key)
    return keys


def late_mask(table: pa.Table, timestamp_field: str, keys: list[str], every: int):
    """The late rows of a push source's table: those of its first entity (smallest join key
    values) whose event time falls on a whole hour divisible by ``every`` (UTC)."""
    frame = table.select([timestamp_field, *keys]).to_pandas()
    when = pd.to_datetime(frame[timestamp_field], utc=True)
    late = ((when.dt.hour % every) == 0) & (when.dt.minute == 0) & (when.dt.second == 0)
    if keys:
        first = frame[keys].dropna().drop_duplicates().sort_values(keys).iloc[:1]
        if first.empty:
            return late.to_numpy() & False
        late &= (frame[keys] == first.iloc[0]).all(axis=1)
    return late.to_numpy()



def attribution(work, use_case, faults, served_days, store=None) -> dict:
    """How monitoring's causes (``monitoring/causes.py``) attribute a replay's mismatches:
    every served value of the replay's archived feature log (``work``: the replay's
    Settings) compared with its offline value and attributed, then split by the injected
    fault whose served day and feature views it falls on (push faults: the views fed by
    push sources; ``skip-materialize``: the other views with a TTL, on the day after the
    skipped night; ``transform-change``: the views whose definitions the serving models
    pinned differ from the ones applied now, on the days before the change). Per fault:
    ``mismatches``, ``attributed`` (to its expected cause), ``share``, ``causes``; for all
    the rest: ``values``, ``exact``, ``exact_rate``, ``causes``; and ``unexplained`` overall."""
    import numpy as np

    from feast_plugins.push_writer import push_targets
    from feast_plugins.store import feature_store
    from monitoring.causes import CAUSES, attribute, service_views
    from monitoring.consistency import EXACT, classify, values
    from monitoring.definitions import definition_drift
    from monitoring.servedlog import read_served_log
    from monitoring.skew import offline_features
    from pipeline.write_records import read_write_records
    from training.registry import ModelRegistry

    store = store or feature_store(work)
    features = ModelRegistry(work.models).load_champion().features
    parts = [read_served_log(work.logs / name, features, use_case.event_timestamp)
             for name in ("served-archive", "served")]
    log = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    offline = offline_features(store, use_case, log)
    codes = classify(values(log, features), values(offline, features))
    views = service_views(store, use_case.feature_service)
    versions = sorted(log["model_version"].dropna().astype(str).unique().tolist())
    drifted = {version: {e["view"] for e in entries} for version, entries in definition_drift(work, versions).items()}
    cause, _ = attribute(log, offline, codes, features, views, use_case.event_timestamp, drifted,
                         records=read_write_records(work))
    days = pd.to_datetime(log[use_case.event_timestamp], utc=True).dt.tz_convert(use_case.timezone).dt.date.to_numpy()
    view_of = np.array([f.split("__", 1)[0] for f in features])
    pushed = {v.name for t in push_targets(store, work, tuple(use_case.push_sources)) for v in t.views}
    batch = {v for v, info in views.items() if not info.on_demand and info.ttl > 0}
    served_days = list(served_days)
    touched = np.zeros(cause.shape, dtype=bool)
    out: dict = {"faults": {}}

    def counts(cells) -> dict:
        named = cells[cells >= 0]
        return {CAUSES[k]: int(v) for k, v in enumerate(np.bincount(named, minlength=len(CAUSES))) if v}

    for fault in faults:
        if fault.name == "skip-materialize":
            night = fault.day or served_days[0]
            on_days, on_views = [night + timedelta(days=1)], batch - pushed
        elif fault.name == "transform-change":
            changed_on = fault.day or served_days[0] + timedelta(days=1)
            on_days = [d for d in served_days if d < changed_on]
            on_views = set().union(*drifted.values()) if drifted else set()
        else:
            on_days, on_views = ([fault.day] if fault.day else served_days), pushed
        mask = np.ix_(np.isin(days, on_days), np.isin(view_of, sorted(on_views)))
        cells = cause[mask]
        touched[mask] = True
        mismatches = int((cells >= 0).sum())
        right = int((cells == CAUSES.index(EXPECTED_CAUSE[fault.name])).sum())
        out["faults"][fault.spec()] = {"expected": EXPECTED_CAUSE[fault.name], "mismatches": mismatches,
                                       "attributed": right, "causes": counts(cells),
                                       "share": round(right / mismatches, 6) if mismatches else None}
    rest = ~touched
    out["rest"] = {"values": int(rest.sum()), "exact": int(((codes == EXACT) & rest).sum()),
                   "exact_rate": round(float(((codes == EXACT) & rest).sum()) / max(1, int(rest.sum())), 6),
                   "causes": counts(np.where(rest, cause, -1))}
    out["unexplained"] = int((cause == CAUSES.index("unexplained")).sum())
    out["rows"] = int(len(log))
    return out
