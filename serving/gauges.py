"""The newest monitoring summary as Prometheus gauges, for the server's ``/metrics``.

A custom collector: each scrape reads ``summary.json`` (again only when its modification
time changed), so the gauges are whatever the last ``monitoring report`` found, in every
gunicorn worker alike, without shared state. No summary yet: no monitoring gauges.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

QUALITY_METRICS = ("auc", "log_loss", "brier")
#: The consistency classes (``monitoring.consistency.CLASSES``; serving sits below monitoring).
CLASSES = ("exact", "missing", "extra", "differ")


class MonitoringCollector:
    def __init__(self, summary_path: Path):
        self.path = Path(summary_path)
        self._cached: tuple[float, dict] | None = None

    def _summary(self) -> dict | None:
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        if self._cached is None or self._cached[0] != mtime:
            try:
                self._cached = (mtime, json.loads(self.path.read_text()))
            except (OSError, ValueError):
                return None  # replaced between stat and read: the next scrape sees it
        return self._cached[1]

    def collect(self):
        summary = self._summary()
        if summary is None:
            return
        alerts = GaugeMetricFamily("monitoring_alerts", "Alert rules breached in the last monitoring report",
                                   labels=["rule"])
        per_rule: dict[str, int] = {}
        for alert in summary["alerts"]:
            per_rule[alert["rule"]] = per_rule.get(alert["rule"], 0) + 1
        for rule, n in per_rule.items():
            alerts.add_metric([rule], n)
        yield alerts
        yield GaugeMetricFamily("monitoring_served_rows", "Served rows the last monitoring report covered",
                                value=summary["log"]["rows"])
        skew = GaugeMetricFamily("monitoring_skew_mismatch_rate",
                                 "Share of served values differing from the offline point-in-time value",
                                 labels=["feature"])
        for feature, s in summary.get("skew", {}).items():
            skew.add_metric([feature], s["rate"])
        yield skew
        psi = GaugeMetricFamily("monitoring_drift_psi", "PSI of served traffic (vs training, or recent vs earlier)",
                                labels=["feature", "comparison"])
        drift = summary.get("drift") or {}
        for comparison, values in (("training", drift.get("vs_training", {})),
                                   ("recent", (drift.get("recent_vs_earlier") or {}).get("psi", {}))):
            for feature, value in values.items():
                if value is not None:
                    psi.add_metric([feature, comparison], value)
        yield psi
        age = GaugeMetricFamily("monitoring_view_age_hours", "Age of the newest online value per feature view",
                                labels=["view"])
        stale = GaugeMetricFamily("monitoring_view_stale", "1 when a view's newest online value is older than its TTL",
                                  labels=["view"])
        for view, f in summary["freshness"]["views"].items():
            if f["age_hours"] is not None:
                age.add_metric([view], f["age_hours"])
            stale.add_metric([view], 1.0 if f["stale"] else 0.0)
        yield age
        yield stale
        yield from _freshness(summary["freshness"])
        yield GaugeMetricFamily("monitoring_model_data_age_days",
                                "Days from the end of the model's training window to the newest served request",
                                value=summary["model"]["data_age_days"])
        quality = GaugeMetricFamily("monitoring_quality", "Quality of logged predictions with labels",
                                    labels=["metric"])
        q = summary.get("quality") or {}
        for metric in QUALITY_METRICS:
            value = (q.get("overall") or {}).get(metric)
            if value is not None:
                quality.add_metric([metric], value)
        if q.get("calibration"):
            quality.add_metric(["ece"], q["calibration"]["ece"])
        yield quality
        yield from _consistency(summary)


def _consistency(summary: dict):
    """The consistency metrics and the causes of mismatches (``docs/monitoring.md``), under
    the names of the job's ``consistency.prom`` (one dashboard reads either): per feature
    the share of served values in each class and the SMAPE, per cause the mismatching
    values overall and per feature, the unexplained ones, and the served-log files skipped.
    Absent from summaries written before them, and from a report without traffic."""
    c = summary.get("consistency") or {}
    causes = summary.get("causes") or {}
    if not c and not causes:
        return
    rate = GaugeMetricFamily("monitoring_consistency_rate", "Share of served values per class (exact, missing, "
                             "extra, differ) against the offline point-in-time value, per feature (last "
                             "monitoring report)", labels=["feature", "class"])
    smape = GaugeMetricFamily("monitoring_consistency_smape",
                              "SMAPE of served against offline values where both are present", labels=["feature"])
    for feature, m in (c.get("features") or {}).items():
        for kind in CLASSES:
            if m.get(f"{kind}_rate") is not None:
                rate.add_metric([feature, kind], m[f"{kind}_rate"])
        if m.get("smape") is not None:
            smape.add_metric([feature], m["smape"])
    yield rate
    yield smape
    per_cause = GaugeMetricFamily("monitoring_mismatch_values", "Mismatching served values per named cause",
                                  labels=["cause"])
    for finding in causes.get("findings") or []:
        per_cause.add_metric([finding["cause"]], finding["values"])
    yield per_cause
    per_feature = GaugeMetricFamily("monitoring_mismatch_feature_values",
                                    "Mismatching served values per feature and named cause",
                                    labels=["feature", "cause"])
    for feature, counts in (causes.get("by_feature") or {}).items():
        for cause, n in counts.items():
            per_feature.add_metric([feature, cause], n)
    yield per_feature
    yield GaugeMetricFamily("monitoring_mismatch_unexplained_values",
                            "Mismatching served values no recorded fact explains", value=causes.get("unexplained", 0))
    yield GaugeMetricFamily("monitoring_served_log_skipped_files", "Served-log files skipped as unreadable",
                            value=len(summary["log"].get("skipped_files") or []))


def _freshness(section: dict):
    """The served value age per view against its objective, and the write lag and failed
    writes per view (``docs/freshness.md``); absent from summaries written before them."""
    served = GaugeMetricFamily("monitoring_served_value_age_p99_seconds",
                               "p99 age of the served values per feature view (last monitoring report)",
                               labels=["view"])
    breached = GaugeMetricFamily("monitoring_freshness_objective_breached",
                                 "1 when a view's served p99 age broke its freshness objective", labels=["view"])
    for view, a in (section.get("served_age") or {}).items():
        if a.get("p99_seconds") is not None:
            served.add_metric([view], a["p99_seconds"])
        if a.get("objective_seconds") is not None:
            breached.add_metric([view], 1.0 if a.get("breached") else 0.0)
    lag = GaugeMetricFamily("monitoring_write_lag_seconds",
                            "Delay from a value becoming known to it being servable online, per view (write records)",
                            labels=["view", "quantile"])
    failed = GaugeMetricFamily("monitoring_failed_writes", "Failed online writes per view (write records)",
                               labels=["view"])
    for view, w in ((section.get("write_lag") or {}).get("views") or {}).items():
        for quantile, key in (("0.5", "lag_p50_seconds"), ("0.99", "lag_p99_seconds")):
            if w.get(key) is not None:
                lag.add_metric([view, quantile], w[key])
        failed.add_metric([view], w.get("failed", 0))
    yield served
    yield breached
    yield lag
    yield failed
