"""The replay: history walked through day by day, as if live.

Every night (local midnight in the use case's time zone) the day's raw data arrives and
goes through the platform's own nightly flow (``flow.nightly``): ingest behind its gate,
the feature pipelines behind theirs, incremental materialization. Then, depending on the training policy,
monitoring and a retrain behind the model gate, and the batch scoring of the next day's
scheduled events (static inference, into the server's precomputed lookup). During the
day every event is answered twice by one running server: ``/predict`` (dynamic: online
features at request time, the champion of that moment) and ``/precomputed`` (static: what
was scored the night before). Labels come from the real outcomes, so every week has its
quality, cost and latency, per policy and per kind of inference.

All replay state lives under ``DATA_DIR/replay/<policy>/`` (emptied at start); the report
goes to ``DATA_DIR/reports/replay/``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core import progress
from core.settings import Settings
from core.usecase import UseCase
from flow.nightly import FlowOptions, FlowRun
from pipeline.write_records import records_dir
from replay.arrivals import Arrivals
from replay.config import BATCH, ReplayConfig, ReplayError
from replay.faults import FaultyFeed, change_transform, skips_materialize, transform_change_on
from replay.server import Server
from validation.report import GateFailed

#: The nightly batch: the flow's stages up to the online store; the registry is applied on
#: the first accepted night only.
FIRST_NIGHT = ("ingest", "features", "apply", "materialize")
NIGHT = ("ingest", "features", "materialize")
#: A retrain: the flow's last two stages, on the sources the nights built.
RETRAIN = ("train", "promote")


class Clock:
    """Wall time per stage, in total and per replay week. It is also the nightly flow's
    sink (:class:`flow.nightly.Sink`): the flow's stages are timed here, and nothing said."""

    #: The flow's stages whose clock name differs (the replay's report says ``gate``).
    NAMES = {"promote": "gate"}

    def __init__(self):
        self.total: dict[str, float] = defaultdict(float)
        self.weekly: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.week = 0

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] += seconds
        self.weekly[self.week][stage] += seconds

    @contextlib.contextmanager
    def time(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def say(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def stage(self, name: str):
        with self.time(self.NAMES.get(name, name)):
            yield self


def local_midnight(day: date, tz: str) -> datetime:
    """The UTC instant at which local ``day`` starts."""
    return pd.Timestamp(day).tz_localize(tz).tz_convert("UTC").to_pydatetime()


def request_body(rows: pd.DataFrame, use_case: UseCase) -> dict:
    """A /predict body for ``rows`` of the events table (the use case's request fields)."""
    entities = []
    for record in rows[[f.name for f in use_case.request_fields]].to_dict("records"):
        entity = {}
        for f in use_case.request_fields:
            value = record[f.name]
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                entity[f.name] = None
            elif f.kind == "timestamp":
                entity[f.name] = pd.Timestamp(value).isoformat()
            elif f.kind == "int":
                entity[f.name] = int(value)
            else:
                entity[f.name] = str(value)
        entities.append(entity)
    return {use_case.batch_key: entities}


def retrain_reason(config: ReplayConfig, nights: int, accepted: bool, fired: list[str]) -> str | None:
    """Why the policy retrains after the ``nights``-th served day, or None. Nothing is
    retrained on a night whose delivery was refused (the sources did not move)."""
    if not accepted or config.policy == "static":
        return None
    if config.policy == "periodic":
        return f"every {config.retrain_every_days} days" if nights % config.retrain_every_days == 0 else None
    return "alerts: " + ", ".join(fired) if fired else None


class Replay:
    def __init__(self, settings: Settings, use_case: UseCase, config: ReplayConfig, say=progress.write):
        if settings.profile != "embedded":
            raise ReplayError(f"the replay runs on the embedded profile only (PROFILE={settings.profile})")
        if not use_case.arrival_columns:
            raise ReplayError(f"use case {use_case.name!r} declares no arrival_columns: nothing to replay by time")
        self.base, self.use_case, self.config, self.say = settings, use_case, config, say
        self.root = settings.data_dir / "replay" / config.name
        self.work = replace(settings, data_dir=self.root / "data", raw_dir=self.root / "delivery")
        self.clock = Clock()
        self.history = timedelta(days=max(config.window_days, config.warmup_days)) + use_case.feature_lookback
        self.retrains: list[dict] = []
        self.refusals: list[dict] = []
        self.alerts: list[dict] = []
        self.monitoring: list[dict] = []
        self.rows_ingested: dict[int, int] = defaultdict(int)
        self.served: list[pd.DataFrame] = []
        self.latencies: list[dict] = []
        self.errors: list[dict] = []
        self.pending_trigger: list[str] = []
        self.store = None
        self.stream: Settings | None = None
        #: The end of the last intraday feed window (the next one starts there).
        self.fed_until: datetime | None = None
        self.contracts = None
        #: The intraday feed, with the injected feed faults (replay/faults.py) if any.
        self.feed = config.feed
        if config.feed is not None and config.faults:
            self.feed = FaultyFeed(config.feed, config.faults, self._local_day, self.root / "faults")

    def _local_day(self, when: datetime) -> date:
        return pd.Timestamp(when).tz_convert(self.use_case.timezone).date()

    # ---- setup -------------------------------------------------------------------------
    def _prepare(self):
        from pipeline.apply import source_contracts
        from training.dataset import load_events

        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        with self.clock.time("setup"):
            frames = self.use_case.load_builtin() if self.base.raw_dir is None else _read_raw_dir(
                self.base.raw_dir, self.use_case)
            self.arrivals = Arrivals(self.use_case, frames)
            self.contracts = source_contracts(self.work, self.use_case)
            # The truth: every event of the history with its label (what the requests are
            # made of, and what they are judged against once the outcome is known). Built
            # through the same ingest and feature pipelines, in its own directory.
            truth = replace(self.base, data_dir=self.root / "truth")
            FlowRun(truth, self.use_case, FlowOptions(stages=("ingest", "features"), contracts=self.contracts)).run()
            events = load_events(truth, self.use_case)
            self.events = events.sort_values([self.use_case.event_timestamp, self.use_case.id_column],
                                             kind="stable").reset_index(drop=True)
            self.event_times = pd.to_datetime(self.events[self.use_case.event_timestamp], utc=True)
            if self.config.feed is not None:  # the intraday feed reads the whole history's sources
                self.stream = truth
            else:
                shutil.rmtree(truth.data_dir)

    # ---- the nightly batch ---------------------------------------------------------------
    def deliver(self, until: datetime, week: int, bad: bool = False, skip_materialize: bool = False,
                apply: bool = False) -> bool:
        """The night at ``until``: delivery, then the nightly flow's ingest, features, (apply,)
        materialize. False (and a recorded refusal) when a gate refused the data; the online
        store then keeps what the last accepted night loaded. ``apply``: the registry is
        applied again (a definition changed: replay/faults.py transform-change)."""
        from pipeline.ingest import list_snapshots

        since = until - self.history
        with self.clock.time("deliver"):
            counts = self.arrivals.deliver(self.work.raw_dir, since, until,
                                           duplicate_from=until - timedelta(days=1) if bad else None)
        self.rows_ingested[week] += sum(counts.values())
        # The ingest gate's distribution reference follows every accepted night: a seasonal
        # history drifts from any fixed reference (a weekly refresh still let one warm March
        # week fail the PSI limit on temperature, and every later night was refused against
        # it), so each delivery is judged against the last one.
        stages = NIGHT if self.store is not None and not apply else FIRST_NIGHT
        if skip_materialize:  # an injected fault (replay/faults.py): the next night catches up
            stages = tuple(s for s in stages if s != "materialize")
        options = FlowOptions(stages=stages, declared_as_of=until,
                              follow_reference=True, contracts=self.contracts, materialize_end=until,
                              progress=self.clock)
        try:
            flow = FlowRun(self.work, self.use_case, options).run()
        except GateFailed as e:
            self.refusals.append({"night": until.isoformat(), "gate": e.report.gate,
                                  "failures": [f.line() for f in e.report.failures]})
            self.say(f"  {until:%Y-%m-%d}: {e.report.gate} gate refused the delivery: "
                     f"{e.report.failures[0].line()}")
            return False
        if self.store is None or apply:  # the store over the registry the night applied
            self.store = flow.store
        with self.clock.time("ingest"):  # retention: the sliding history needs the newest snapshot only
            for old in list_snapshots(self.work)[:-2]:
                shutil.rmtree(old, ignore_errors=True)
        return True

    def retrain(self, until: datetime, reason: str) -> None:
        """The nightly flow's train and promote on the sources as of ``until``, over the
        policy's window. A training that its gate refused or that could not go on is
        recorded with its failure; the champion keeps serving."""
        from monitoring.drift import training_reference
        from training.errors import TrainingError
        from training.registry import ModelRegistry
        from training.train import TrainConfig

        window_start = until - timedelta(days=self.config.window_days if self.retrains else self.config.warmup_days)
        # One XGBoost thread: the server has the other core, and on a shared 2-core machine
        # OpenMP threads that wait on each other cost many times the single-thread time.
        config = TrainConfig(seed=self.config.seed, num_boost_round=self.config.num_boost_round,
                             window_start=window_start.isoformat(), nthread=1)
        record = {"night": until.isoformat(), "week": self.clock.week, "reason": reason,
                  "window_start": window_start.isoformat()}
        flow = FlowRun(self.work, self.use_case, FlowOptions(stages=RETRAIN, train=config, progress=self.clock),
                       store=self.store)
        try:
            flow.run()
        except (GateFailed, TrainingError) as e:
            if flow.running != "train":
                raise
            record.update(version=None, promoted=False, failures=[str(e).splitlines()[0]],
                          train_seconds=round(flow.seconds["train"], 3))
            self.retrains.append(record)
            return
        result, verdict = flow.model, flow.promotion
        registry = ModelRegistry(self.work.models)
        meta = registry.metadata(result["version"])
        record.update(version=result["version"], promoted=verdict["promoted"],
                      failures=verdict.get("failures", []), train_rows=meta["training_window"]["rows"],
                      holdout_rows=meta["holdout_window"]["rows"],
                      holdout_auc=result["metrics"]["model"]["auc"],
                      holdout_log_loss=result["metrics"]["model"]["log_loss"],
                      train_seconds=round(flow.seconds["train"], 3),
                      gate_seconds=round(flow.seconds["promote"], 3))
        self.retrains.append(record)
        self.say(f"  {until:%Y-%m-%d}: retrain ({reason}) {result['version']} on {record['train_rows']:,} rows: "
                 f"{'promoted' if verdict['promoted'] else 'rejected (' + '; '.join(record['failures'])[:120] + ')'}")
        if verdict["promoted"]:
            with self.clock.time("monitor"):  # its drift reference, while its window is still in the sources
                training_reference(self.work, self.store, self.use_case, registry.load(result["version"]))

    def monitor(self, until: datetime) -> None:
        from monitoring.config import RULES_FILE, load_rules
        from monitoring.monitor import run_monitoring
        from monitoring.servedlog import compact_served_log

        served = self.work.logs / "served"
        with self.clock.time("monitor"):
            rules = load_rules(self.work.feature_repo / RULES_FILE)
            since = until - timedelta(days=self.config.monitor_every_days)
            summary = run_monitoring(self.work, self.use_case, self.store, rules, start=since, end=until)
            # Monitored log files move to the archive, compacted (one file per run instead
            # of one per server flush): the next run reads only new traffic.
            archive = self.work.logs / "served-archive"
            moved = []
            for path in served.glob("date=*/*.parquet"):
                target = archive / path.parent.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
                moved.append(target)
            compact_served_log(archive, self.use_case.event_timestamp, files=moved)
        fired = [{"night": until.isoformat(), "rule": a["rule"], "subject": a["subject"], "value": a["value"],
                  "limit": a["limit"]} for a in summary["alerts"]]
        self.alerts.extend(fired)
        quality = summary.get("quality") or {}
        self.monitoring.append({
            "night": until.isoformat(), "rows": summary["log"]["rows"],
            "alerts": len(fired), "rules": sorted({a["rule"] for a in fired}),
            "auc": (quality.get("overall") or {}).get("auc"),
            "ece": (quality.get("calibration") or {}).get("ece"),
            "skew_features": sum(1 for s in summary.get("skew", {}).values() if s["mismatches"]),
            # Mismatching served values per named cause (monitoring/causes.py).
            "causes": {f["cause"]: f["values"] for f in (summary.get("causes") or {}).get("findings", [])},
        })
        self.pending_trigger = sorted({a["rule"] for a in fired
                                       if any(a["rule"].startswith(p) for p in self.config.trigger_rules)})

    def score_tomorrow(self, events: pd.DataFrame) -> None:
        """Static inference: tomorrow's scheduled events, scored tonight with tonight's
        champion and features, into the server's precomputed lookup."""
        from serving.precomputed import entity_key, lookup_path, write_predictions
        from training.registry import ModelRegistry
        from training.score import score_events

        if events.empty:
            return
        with self.clock.time("static_scoring"):
            model = ModelRegistry(self.work.models).load_champion()
            events = events.reset_index(drop=True)
            scored = score_events(self.store, self.use_case, model, events)  # in the input order
            fields = self.use_case.request_fields
            rows = [(entity_key(r, fields), float(p), model.version)
                    for r, p in zip(events[[f.name for f in fields]].to_dict("records"), scored["probability"])]
            write_predictions(lookup_path(self.work.data_dir), rows)

    # ---- the day ---------------------------------------------------------------------------
    def serve_day(self, server: Server, events: pd.DataFrame, day: date, week: int) -> None:
        """Answer the day's events through the running server, in time order, in batches
        (per hour when there is an intraday feed, which runs before each hour)."""
        uc = self.use_case
        if events.empty:
            return
        times = pd.to_datetime(events[uc.event_timestamp], utc=True)
        if self.config.feed is not None:
            # An event feed (replay/events_feed.py) runs before every request instant, others every hour.
            per_instant = getattr(self.config.feed, "per_instant", False)
            groups = list(events.groupby(times if per_instant else times.dt.floor("h"), sort=True))
        else:
            groups = [(None, events)]
        dynamic, static, versions, static_versions = [], [], [], []
        for hour, group in groups:
            if hour is not None:
                now = hour.to_pydatetime()
                with self.clock.time("feed"):
                    self.feed(self.stream, self.use_case, self.store,
                                     self.fed_until or now - timedelta(hours=1), now,
                                     records=records_dir(self.work))
                self.fed_until = now
            for i in range(0, len(group), BATCH):
                body = request_body(group.iloc[i:i + BATCH], uc)
                n = len(body[uc.batch_key])
                with self.clock.time("serve"):
                    status, answer, seconds = server.post("/predict", body)
                    s_status, s_answer, s_seconds = server.post("/precomputed", body)
                self.latencies.append({"week": week, "endpoint": "dynamic", "seconds": seconds, "rows": n})
                self.latencies.append({"week": week, "endpoint": "static", "seconds": s_seconds, "rows": n})
                if status != 200 or s_status != 200:
                    self.errors.append({"day": day.isoformat(), "dynamic_status": status, "static_status": s_status,
                                        "error": answer.get("error") or s_answer.get("error")})
                    unanswered = {"predictions": [{"probability": None, "model_version": None}] * n}
                    answer = answer if status == 200 else unanswered  # keep whichever side did answer
                    s_answer = s_answer if s_status == 200 else unanswered
                dynamic += [p["probability"] for p in answer["predictions"]]
                versions += [p["model_version"] for p in answer["predictions"]]
                static += [p["probability"] for p in s_answer["predictions"]]
                static_versions += [p["model_version"] for p in s_answer["predictions"]]
        ordered = pd.concat([g for _, g in groups])
        self.served.append(pd.DataFrame({
            "id": ordered[uc.id_column].to_numpy(), "day": day.isoformat(), "week": week,
            "label": ordered[uc.label].to_numpy(dtype=float),
            "dynamic": np.array(dynamic, dtype=float), "static": np.array(static, dtype=float),
            "dynamic_model": versions, "static_model": static_versions,
        }))

    # ---- the whole replay -----------------------------------------------------------------
    def run(self) -> dict:
        """The replay; a command sees one bar over the served days (``core.progress``), and
        none of the nights' own (each night is a step of it)."""
        shown = progress.enabled()
        with progress.muted():
            return self._run(shown)

    def _run(self, shown: bool) -> dict:
        started = time.perf_counter()
        cfg, uc = self.config, self.use_case
        self.say(f"replay ({cfg.name}): preparing the history and the truth")
        self._prepare()
        first_day = cfg.start + timedelta(days=cfg.warmup_days)
        last_day = (pd.Timestamp(self.arrivals.end()).tz_convert(uc.timezone).date())
        n_days = (last_day - first_day).days + 1
        if cfg.days is not None:
            n_days = min(n_days, cfg.days)
        if n_days < 1:
            raise ReplayError(f"no day to serve: the data ends on {last_day}, the warm-up on {first_day}")
        tz = uc.timezone
        midnight = local_midnight(first_day, tz)
        self.say(f"warm-up: {cfg.warmup_days} days of history up to {first_day}; then {n_days} served day(s)")
        if not self.deliver(midnight, 0, bad=first_day - timedelta(days=1) in cfg.bad_days):
            raise ReplayError(f"the warm-up delivery was refused ({self.refusals[-1]['failures'][0]}): "
                              "no model can be trained")
        self.retrain(midnight, "initial")
        if not self.retrains[-1]["promoted"]:
            raise ReplayError(f"the initial model was not promoted: {self.retrains[-1]['failures']}")
        with self.clock.time("server_start"):
            server = Server(self.work.data_dir, self.root / "server.log")
        with progress.Bar(f"replay ({cfg.name})", total=n_days, unit="days", force=shown) as days:
            try:
                for i in range(n_days):
                    day = first_day + timedelta(days=i)
                    week = i // 7
                    self.clock.week = week
                    start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
                    todays = self.events[(self.event_times >= start) & (self.event_times < end)]
                    self.score_tomorrow(todays)
                    self.serve_day(server, todays, day, week)
                    # The night that ends the day (an injected transform change is made in it).
                    change = transform_change_on(cfg.faults, day + timedelta(days=1), first_day)
                    if change is not None:
                        self.work, changed = change_transform(self.work, uc, change, self.root / "faults")
                        self.say(f"  {day}: {change.spec()}: the night changes {', '.join(changed)}")
                    skipped = skips_materialize(cfg.faults, day, first_day)
                    accepted = self.deliver(end, week, bad=day in cfg.bad_days, skip_materialize=skipped,
                                            apply=change is not None)
                    if accepted and not skipped and getattr(cfg.feed, "per_instant", False):
                        # The night loaded every windowed event known up to `end`; the event
                        # feed resumes there. From the day's last request instead, it pushed
                        # the events known between that request and midnight a second time, and
                        # a pushed event counts again (a full year's replay served carrier
                        # 24-hour means off on 10% of flights).
                        self.fed_until = end
                    nights = i + 1
                    self.pending_trigger = []
                    if accepted and nights % cfg.monitor_every_days == 0:
                        self.monitor(end)
                    reason = retrain_reason(cfg, nights, accepted, self.pending_trigger)
                    if change is not None:  # serving refuses a model on the old definitions
                        reason = f"definitions changed ({change.spec()})"
                    if reason and i < n_days - 1:  # a model nobody would be served by is not trained
                        self.retrain(end, reason)
                    days.update(1, f"{day}, {len(self.retrains)} models trained, {len(self.refusals)} nights refused")
                    if not shown and ((i + 1) % 7 == 0 or i == n_days - 1):
                        self.say(f"  {day}: {i + 1}/{n_days} days, {time.perf_counter() - started:.0f}s")
            finally:
                server.stop()
        total = time.perf_counter() - started
        from replay.report import summarize

        return summarize(self, n_days, first_day, total)


def _read_raw_dir(raw_dir: Path, use_case: UseCase) -> dict[str, pd.DataFrame]:
    frames = {}
    for table in use_case.raw_tables:
        path = raw_dir / f"{table.name}.parquet"
        if not path.is_file():
            raise ReplayError(f"RAW_DIR={raw_dir}: missing raw table file {path.name}")
        frames[table.name] = pd.read_parquet(path)
    return frames


def run_replay(settings: Settings, use_case: UseCase, config: ReplayConfig, say=progress.write) -> dict:
    """Run one replay; write its JSON (and the HTML report of every policy replayed so far)
    under ``DATA_DIR/reports/replay/``; return the summary."""
    from replay.report import write_reports

    summary = Replay(settings, use_case, config, say).run()
    paths = write_reports(settings, summary)
    summary["paths"] = {k: str(v) for k, v in paths.items()}
    say(json.dumps({"json": str(paths["json"]), "html": str(paths["html"])}))
    return summary
