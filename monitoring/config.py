"""Alert rules: a small frozen dataclass, read from the use case's ``monitoring.toml``.

Every rule a report is judged by lives here, with its default; the use case's TOML file
(``feature_repo/monitoring.toml``) overrides any of them. An unknown key is an error,
so a typo cannot silently switch a rule off.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from monitoring.errors import MonitoringError
from validation.drift import PSI_MAX

#: The use case's rules, next to its Feast definitions.
RULES_FILE = "monitoring.toml"


@dataclass(frozen=True)
class AlertRules:
    #: Share of logged rows whose served value may differ from the offline point-in-time
    #: value, per feature. Batch features must match exactly: 0 means any mismatch alerts.
    skew_max_rate: float = 0.0
    #: Absolute tolerance when comparing a served and an offline value. Both sides are
    #: float64 read from the same Parquet values (Feast types Float64/Int64), so 0.
    skew_tolerance: float = 0.0
    #: PSI (validation.drift.psi) above which a feature, or the predictions, drifted.
    psi_max: float = PSI_MAX  # the data gates' threshold: drift means the same everywhere
    #: Alert on drift of served traffic against the training set, or only report it.
    #: One day of traffic is one day of weather: against six weeks of training data its
    #: weather features always score high, so by default only the recent-vs-earlier
    #: comparison of served windows alerts.
    alert_on_training_drift: bool = False
    #: A window needs this many rows before its PSI is computed (fewer: reported as too small).
    min_drift_rows: int = 100
    #: Alert when a feature view's newest materialized value is older than its TTL.
    alert_on_stale_views: bool = True
    #: Days from the end of the model's training window to the newest served request.
    model_max_age_days: float = 120.0
    #: Quality is judged once this many labelled predictions exist.
    min_labelled_rows: int = 200
    auc_min: float = 0.6
    log_loss_max: float = 0.6
    ece_max: float = 0.1


def load_rules(path: Path) -> AlertRules:
    """The rules in ``path`` (TOML, top-level keys named as :class:`AlertRules`' fields);
    the defaults when the file does not exist."""
    if not path.is_file():
        return AlertRules()
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise MonitoringError(f"{path}: not valid TOML: {e}") from None
    known = {f.name: f for f in fields(AlertRules)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise MonitoringError(f"{path}: unknown rule(s) {unknown}; known: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        kind = type(getattr(AlertRules(), name))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MonitoringError(f"{path}: {name} = {value!r} must be a {kind.__name__}")
        values[name] = value
    return AlertRules(**values)
