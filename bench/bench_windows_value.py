"""What the windowed features are worth: holdout AUC and log loss of late_arrival_v1, v2
and v3 on the same split.

For each FeatureService the point-in-time training set of every labelled flight is built
through the ASOF offline store (``training.dataset.training_set``, the leakage guard on),
an XGBoost model is fitted with the project's default ``TrainConfig`` on the rows before
the holdout start (the same instant for the three: the default split of the v1 set) and
scored on the rows after it. Nothing is registered. Needs DATA_DIR with the sources and the
registry (``make pipeline``), built in a temporary directory if missing.

Run: ``.venv/bin/python bench/bench_windows_value.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import say, write_result  # noqa: E402

SERVICES = ("late_arrival_v1", "late_arrival_v2", "late_arrival_v3")


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
    for name in SERVICES:
        use_case = load_use_case().with_feature_service(name)
        events = load_events(settings, use_case) if events is None else events
        frame = training_set(store, use_case, events)
        ts = frame[use_case.event_timestamp]
        cut = holdout_start(ts, config) if cut is None else cut
        features = service_features(store, name)
        train, holdout = frame[ts < cut], frame[ts >= cut]
        model = fit(feature_matrix(train, features), train[use_case.label].to_numpy(dtype=float), features, config)
        p = predict_proba(booster_from_bytes(model, nthread=config.nthread), feature_matrix(holdout, features))
        metrics = evaluate.holdout_metrics(holdout[use_case.label].to_numpy(dtype=float), p)
        say(f"{name}: {len(features)} features, holdout AUC {metrics['auc']:.4f}, log loss {metrics['log_loss']:.4f}")
        rows.append({"case": f"holdout from {cut:%Y-%m-%d}", "variant": name, "features": len(features),
                     "train_rows": len(train), "holdout_rows": len(holdout),
                     "auc": round(metrics["auc"], 4), "log_loss": round(metrics["log_loss"], 4)})
    by = {r["variant"]: r for r in rows}
    write_result(
        "windows_value",
        "Holdout AUC and log loss of late_arrival_v1, v2 and v3 (v2 + 13 windowed features) on the same "
        "time split, default TrainConfig, every labelled flight",
        rows,
        [{"goal": "v3 holdout AUC - v2", "value": round(by["late_arrival_v3"]["auc"] - by["late_arrival_v2"]["auc"], 4),
          "target": "> 0", "met": by["late_arrival_v3"]["auc"] > by["late_arrival_v2"]["auc"]},
         {"goal": "v3 holdout log loss - v2",
          "value": round(by["late_arrival_v3"]["log_loss"] - by["late_arrival_v2"]["log_loss"], 4),
          "target": "< 0", "met": by["late_arrival_v3"]["log_loss"] < by["late_arrival_v2"]["log_loss"]}],
    )


if __name__ == "__main__":
    main()
