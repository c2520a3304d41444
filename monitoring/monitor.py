"""One monitoring run: read the served log, measure skew, drift, freshness and quality,
judge them by the alert rules, and write the JSON summary and the HTML report."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone

import pandas as pd

from core.files import atomic_write
from core.settings import Settings
from core.usecase import UseCase
from monitoring import definitions, drift, freshness, quality, skew
from monitoring.config import AlertRules
from monitoring.errors import MonitoringError
from monitoring.servedlog import read_served_log
from training.dataset import load_events
from training.registry import ModelRegistry
from validation.drift import profile_proportions


def report_dir(settings: Settings):
    return settings.reports / "monitoring"


def run_monitoring(settings: Settings, use_case: UseCase, store, rules: AlertRules,
                   start: datetime | None = None, end: datetime | None = None,
                   recent_since: datetime | None = None, at: datetime | None = None) -> dict:
    """The summary of one run (``docs/monitoring.md`` describes each section).

    ``at`` is the instant freshness is judged at: by default the newest logged request
    time (traffic may be a replay of history), else the wall clock.
    """
    model = ModelRegistry(settings.models).load_champion()
    features = model.features
    log = read_served_log(settings.logs / "served", features, use_case.event_timestamp, start, end)
    if at is None:
        at = (pd.to_datetime(log[use_case.event_timestamp], utc=True).max().to_pydatetime()
              if not log.empty else datetime.now(timezone.utc))
    keys = [f.name for f in use_case.request_fields]
    summary = {
        "generated_at": datetime.now(timezone.utc).isoformat(), "at": at.isoformat(),
        "window": {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None},
        "rules": asdict(rules), "model": freshness.model_age(model.metadata, at),
        "log": {"rows": int(len(log)), "requests": int(log["request_id"].nunique()),
                "model_versions": sorted(log["model_version"].dropna().unique().tolist()),
                "served_from": log["served_at"].min().isoformat() if len(log) else None,
                "served_to": log["served_at"].max().isoformat() if len(log) else None},
    }
    if log.empty:
        summary.update(skew={}, drift=None, quality=None)
    else:
        offline = skew.offline_features(store, use_case, log)
        summary["skew"] = skew.feature_skew(log, offline, features, keys, rules.skew_tolerance)
        reference = drift.training_reference(settings, store, use_case, model)
        summary["drift"] = drift.drift_summary(reference, log, features, use_case.event_timestamp,
                                               rules.min_drift_rows, rules.psi_max, recent_since)
        summary["distributions"] = _distributions(reference, log, features)
        # A request's time is its event's entity timestamp (UseCase.request_time_field), so
        # only the events inside the served window can match: read just those.
        served_times = pd.to_datetime(log[use_case.event_timestamp], utc=True)
        events = load_events(settings, use_case, served_times.min(), served_times.max(), include_end=True)
        joined = quality.labelled_predictions(log, events, use_case)
        summary["quality"] = quality.quality_summary(joined, use_case.label, use_case.event_timestamp,
                                                     use_case.slices)
    summary["freshness"] = {"views": freshness.view_freshness(store, use_case.feature_service, at),
                            "served_stale_rate": freshness.served_stale_rates(log, features)}
    # The champion and every model that answered in the window, against the definitions applied.
    summary["definitions"] = definitions.definition_drift(settings, [model.version, *summary["log"]["model_versions"]])
    summary["alerts"] = alerts(summary, rules)
    return summary


def _distributions(reference: dict, log: pd.DataFrame, features) -> dict:
    """Reference and served bin proportions per column, for the report's plots."""
    out = {}
    for column in [*features, drift.PREDICTION]:
        profile = reference["columns"][column]
        values = log[column].dropna() if column == drift.PREDICTION else log[column]
        out[column] = {"kind": profile["kind"], "edges": profile.get("edges"),
                       "training": profile["proportions"], "served": profile_proportions(profile, values)}
    return out


def alerts(summary: dict, rules: AlertRules) -> list[dict]:
    """Every breached rule: what, which feature or view, the value and the limit."""
    out = []
    for feature, s in summary.get("skew", {}).items():
        if s["mismatches"] and s["rate"] > rules.skew_max_rate:
            out.append({"rule": "skew", "subject": feature, "value": s["rate"], "limit": rules.skew_max_rate,
                        "message": f"{s['mismatches']} of {s['rows']} served values differ from the offline "
                                   f"point-in-time value, e.g. {s['examples'][0]}"})
    d = summary.get("drift")
    if d:
        windows = [("recent_vs_earlier", d["recent_vs_earlier"].get("drifted", {}))]
        if rules.alert_on_training_drift:
            windows.append(("vs_training", d["vs_training_drifted"]))
        for name, moved in windows:
            for column, value in moved.items():
                out.append({"rule": f"drift_{name}", "subject": column, "value": value, "limit": rules.psi_max,
                            "message": f"PSI {value:.3f} ({name.replace('_', ' ')}) exceeds {rules.psi_max}"})
    if rules.alert_on_stale_views:
        for view, f in summary["freshness"]["views"].items():
            if f["stale"]:
                out.append({"rule": "stale_view", "subject": view, "value": f["age_hours"], "limit": f["ttl_hours"],
                            "message": f"newest online value {f['newest_online_value']} is {f['age_hours']} h old "
                                       f"at {summary['at']} (TTL {f['ttl_hours']} h; materialized until "
                                       f"{f['materialized_until']})"})
    age = summary["model"]["data_age_days"]
    if age > rules.model_max_age_days:
        out.append({"rule": "model_age", "subject": summary["model"]["version"], "value": age,
                    "limit": rules.model_max_age_days,
                    "message": f"served requests are {age} days past the model's training window"})
    out += definitions.drift_alerts(summary.get("definitions") or {})
    q = summary.get("quality")
    if q and q["rows"] >= rules.min_labelled_rows:
        overall = q["overall"]
        checks = [("auc", overall["auc"], rules.auc_min, lambda v, lim: v < lim),
                  ("log_loss", overall["log_loss"], rules.log_loss_max, lambda v, lim: v > lim),
                  ("ece", q["calibration"]["ece"], rules.ece_max, lambda v, lim: v > lim)]
        for name, value, limit, breached in checks:
            if value is not None and breached(value, limit):
                out.append({"rule": f"quality_{name}", "subject": "overall", "value": value, "limit": limit,
                            "message": f"{name} {value:.3f} on {q['rows']} labelled predictions "
                                       f"breaches the limit {limit}"})
    return out


def write_summary(settings: Settings, summary: dict) -> dict:
    """``summary.json`` and ``report.html`` under DATA_DIR/reports/monitoring/ (each written
    whole, then renamed into place); returns their paths."""
    from monitoring.html import render_html

    directory = report_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "summary.json", "html": directory / "report.html"}
    payloads = {"json": json.dumps(summary, indent=2, default=_json_default, allow_nan=False),
                "html": render_html(summary)}
    for kind, path in paths.items():
        atomic_write(path, payloads[kind])
    return paths


def _json_default(value):
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    raise MonitoringError(f"monitoring summary: cannot write {type(value).__name__} {value!r} as JSON")
