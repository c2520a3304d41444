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
========================  ==================================================================

(A transform changed mid-run is not a replay fault here: the definition fingerprints make
``pipeline features``/``apply`` refuse it under the champion, and serving refuses a model
whose definitions drifted; ``tests/monitoring/test_causes.py`` proves the
``definition_changed`` attribution on its own.)
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
EXPECTED_CAUSE = {"push-delay": "write_late", "late-rows": "late_source_row", "skip-materialize": "write_late"}
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
    #: The served day it holds on (None: every day; skip-materialize: the first night).
    day: date | None = None

    def spec(self) -> str:
        value = (f"={int(self.delay.total_seconds() // 60)}m" if self.delay is not None
                 else f"={self.every_hours}" if self.every_hours is not None else "")
        return f"{self.name}{value}" + (f"@{self.day.isoformat()}" if self.day else "")

    def on(self, day: date) -> bool:
        return self.day is None or self.day == day


def parse(text: str) -> Fault:
    """A :class:`Fault` from ``NAME[=VALUE][@DAY]`` (the module doc)."""
    m = _SPEC.match(text.strip())
    if not m or m["name"] not in NAMES:
        raise FaultError(f"{text!r} is not a fault: use one of push-delay=DURATION, late-rows[=HOURS], "
                         "skip-materialize, each optionally @YYYY-MM-DD")
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
    skipped night). Per fault: ``mismatches``, ``attributed`` (to its expected cause),
    ``share``, ``causes``; for all the rest: ``values``, ``exact``, ``exact_rate``,
    ``causes``; and ``unexplained`` overall."""
    import numpy as np

    from feast_plugins.push_writer import push_targets
    from feast_plugins.store import feature_store
    from monitoring.causes import CAUSES, attribute, service_views
    from monitoring.consistency import EXACT, classify, values
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
    cause, _ = attribute(log, offline, codes, features, views, use_case.event_timestamp,
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
