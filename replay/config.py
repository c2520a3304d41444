"""The replay's knobs, one frozen dataclass built at the entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Callable

from core.errors import PlatformError
from replay.events_feed import events_feed

POLICIES = ("static", "periodic", "triggered")

#: Entities per request: the server's /predict limit.
BATCH = 100


def push_feed(stream, use_case, store, start, end, records=None) -> dict:
    """``--feed push``: the use case's push sources' rows of ``(start, end]`` pushed online
    (:func:`pipeline.push.push_window`), read from the stream's source tables, at the
    replay's clock ``end``; write records go to ``records`` (the replay's DATA_DIR's)."""
    from pipeline.push import push_window

    return push_window(stream, use_case, store, start, end, sources=stream.sources, written_at=end, records=records)


push_feed.__name__ = "push"

#: Intraday feeds by name (``replay run --feed NAME``): name -> ``feed`` callable.
FEEDS: dict[str, Callable | None] = {"none": None, "push": push_feed, "events": events_feed}


class ReplayError(PlatformError):
    """A replay cannot start or go on; the message says why."""


@dataclass(frozen=True)
class ReplayConfig:
    #: ``static``: train once at the end of the warm-up; ``periodic``: every
    #: ``retrain_every_days`` on the last ``window_days``; ``triggered``: when a monitoring
    #: alert whose rule starts with one of ``trigger_rules`` fires.
    policy: str = "periodic"
    #: The first day of history (local date in the use case's time zone).
    start: date = date(2013, 1, 1)
    #: Days of history delivered before the first served day; the first model (every
    #: policy, and the only one of ``static``) is trained on them.
    warmup_days: int = 28
    #: Served days after the warm-up (None: until the data ends).
    days: int | None = None
    retrain_every_days: int = 7
    #: Sliding training window of every retrain (days before the retraining night).
    window_days: int = 28
    #: Monitoring (skew, drift, freshness, quality of the served log) every this many days.
    monitor_every_days: int = 7
    trigger_rules: tuple[str, ...] = ("drift_", "quality_")
    seed: int = 7
    num_boost_round: int = 300
    #: Days whose delivery is corrupted on purpose (the tests' bad day): see
    #: :func:`replay.arrivals.corrupt`. The gate must refuse it; the replay goes on.
    bad_days: tuple[date, ...] = ()
    #: Intraday freshness: called as ``feed(stream, use_case, store, start, end, records=DIR)`` before
    #: the events of each hour ``[end, end + 1 h)`` are answered, ``start`` being the end of
    #: the previous call: e.g. a push online of the fresh feature rows with event time in
    #: ``(start, end]``. ``stream`` is the Settings of the whole history, ingested and run
    #: through the feature pipelines (its ``sources``; take only the window's rows: a source
    #: table's row holds only what was known at its event time). ``records``: the replay's
    #: write-records directory (``pipeline/write_records.py``). None: no feed (the online
    #: store holds what the nightly batch materialized).
    feed: Callable | None = field(default=None, compare=False)
    #: The FeatureService trained and served (None: the use case's default); for the record.
    feature_service: str | None = None
    #: Faults injected on purpose (``replay run --inject``, :mod:`replay.faults`).
    faults: tuple = ()

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ReplayError(f"policy {self.policy!r} is not one of {', '.join(POLICIES)}")
        for name in ("warmup_days", "retrain_every_days", "window_days", "monitor_every_days"):
            if getattr(self, name) < 1:
                raise ReplayError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.days is not None and self.days < 1:
            raise ReplayError(f"days must be at least 1, not {self.days}")
        from replay.faults import FaultError, check

        try:
            check(self.faults, self.feed)
        except FaultError as e:
            raise ReplayError(str(e)) from None

    @property
    def name(self) -> str:
        """The replay's name in reports and directories: the policy, then the feed and the
        FeatureService when they are not the defaults (e.g. ``periodic+push+late_arrival_v2``)."""
        feed = getattr(self.feed, "__name__", None) if self.feed else None
        faults = "+".join(f.spec().replace("@", "-at-") for f in self.faults) or None
        return "+".join(p for p in (self.policy, feed, self.feature_service, faults) if p)

    def public(self) -> dict:
        """The knobs as JSON values (for the report)."""
        return {"name": self.name, "policy": self.policy, "feature_service": self.feature_service,
                "start": self.start.isoformat(), "warmup_days": self.warmup_days,
                "days": self.days, "retrain_every_days": self.retrain_every_days,
                "window_days": self.window_days, "monitor_every_days": self.monitor_every_days,
                "trigger_rules": list(self.trigger_rules), "seed": self.seed,
                "num_boost_round": self.num_boost_round, "bad_days": [d.isoformat() for d in self.bad_days],
                "feed": getattr(self.feed, "__name__", None) if self.feed else None,
                "inject": [f.spec() for f in self.faults]}
