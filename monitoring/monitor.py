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
from monitoring import causes, consistency, definitions, drift, freshness, quality, skew
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
    skipped_files = log.attrs.get("skipped", [])
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
                "served_to": log["served_at"].max().isoformat() if len(log) else None,
                "skipped_files": skipped_files},
    }
    # The champion and every model that answered in the window, against the definitions applied.
    summary["definitions"] = definitions.definition_drift(settings, [model.version, *summary["log"]["model_versions"]])
    if log.empty:
        summary.update(skew={}, drift=None, quality=None, consistency=None, causes=None)
    else:
        offline = skew.offline_features(store, use_case, log)
        summary["skew"] = skew.feature_skew(log, offline, features, keys, rules.skew_tolerance)
        summary["consistency"], summary["causes"] = consistency_and_causes(
            settings, store, use_case, log, offline, features, rules.skew_tolerance, summary["definitions"])
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
    # Served value age against each view's objective, and write lag (16-age: docs/freshness.md).
    summary["freshness"].update(freshness.report_section(settings, store, use_case.feature_service, log, start, end))
    summary["alerts"] = alerts(summary, rules)
    return summary


def consistency_and_causes(settings: Settings, store, use_case: UseCase, log: pd.DataFrame, offline: pd.DataFrame,
                           features, tolerance: float, drifted_definitions: dict,
                           records: pd.DataFrame | None = None) -> tuple[dict, dict]:
    """The consistency metrics (``monitoring/consistency.py``) and the causes of every
    mismatch (``monitoring/causes.py``), from one class matrix. ``records``: the write
    records (default: all of ``settings``' records; a cause looks back at the writes before
    each request)."""
    from pipeline.write_records import read_write_records

    served, offline_values = consistency.values(log, features), consistency.values(offline, features)
    codes = consistency.classify(served, offline_values, tolerance)
    metrics = consistency.consistency(log, offline, features, use_case.event_timestamp, use_case.slices,
                                      tolerance, codes=codes, served=served, offline_values=offline_values)
    if records is None:
        records = read_write_records(settings)
    drifted = {version: {e["view"] for e in entries} for version, entries in (drifted_definitions or {}).items()}
    views = causes.service_views(store, use_case.feature_service)
    cause, seconds = causes.attribute(log, offline, codes, features, views, use_case.event_timestamp, drifted,
                                      records)
    keys = [f.name for f in use_case.request_fields]
    found = causes.findings(log, offline, cause, seconds, features, keys, use_case.event_timestamp)
    return metrics, {"findings": found, "by_feature": causes.cause_counts(cause, features),
                     "mismatches": int((cause >= 0).sum()),
                     "unexplained": int((cause == causes.UNEXPLAINED).sum()),
                     "write_records": {"rows": int(len(records)), "skipped_lines": records.attrs.get("skipped", [])}}


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
    out = cause_alerts(summary, rules)
    skipped = summary["log"].get("skipped_files") or []
    if skipped:
        out.append({"rule": "served_log_unreadable", "subject": "served log", "value": len(skipped), "limit": 0,
                    "message": f"{len(skipped)} served-log file(s) skipped as unreadable, e.g. "
                               f"{skipped[0]['file']}: {skipped[0]['error']}"})
    out += freshness.objective_alerts(summary["freshness"].get("served_age") or {})
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


def cause_alerts(summary: dict, rules: AlertRules) -> list[dict]:
    """One alert per cause of mismatches (not one per feature): rule ``skew`` with the cause
    as subject when a feature's share of rows mismatching for it exceeds ``skew_max_rate``;
    unexplained mismatches are rule ``skew_unexplained``, an alert of their own."""
    out = []
    rows = summary["log"]["rows"]
    for finding in (summary.get("causes") or {}).get("findings", []):
        worst = max(finding["features"].values()) / rows if rows else 0.0
        if worst <= rules.skew_max_rate:
            continue
        unexplained = finding["cause"] == "unexplained"
        views = ", ".join(f"{v} ({n})" for v, n in finding["views"].items())
        by = finding["by"]
        late = f"; {by['what']} {by['p50_hours']} h (p50), {by['max_hours']} h (max)" if by else ""
        out.append({"rule": "skew_unexplained" if unexplained else "skew", "subject": finding["cause"],
                    "value": round(worst, 6), "limit": rules.skew_max_rate,
                    "message": f"{finding['values']} served value(s) in {finding['rows']} row(s), "
                               f"{len(finding['features'])} feature(s) of {views}, differ from the offline "
                               f"point-in-time value: {finding['title']}{late}; e.g. {finding['examples'][0]}"})
    return out


def write_summary(settings: Settings, summary: dict) -> dict:
    """``summary.json``, ``report.html`` and ``consistency.prom`` (the consistency and causes
    as Prometheus text, for a textfile collector) under DATA_DIR/reports/monitoring/ (each
    written whole, then renamed into place); returns their paths."""
    from monitoring.html import render_html

    directory = report_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "summary.json", "html": directory / "report.html",
             "prometheus": directory / "consistency.prom"}
    payloads = {"json": json.dumps(summary, indent=2, default=_json_default, allow_nan=False),
                "html": render_html(summary), "prometheus": consistency.prometheus_text(summary)}
    for kind, path in paths.items():
        atomic_write(path, payloads[kind])
    return paths


def _json_default(value):
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    raise MonitoringError(f"monitoring summary: cannot write {type(value).__name__} {value!r} as JSON")
