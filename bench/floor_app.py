"""The benchmark's floor: the least a /predict server can do with these features.

Flask, one SQLite row per entity per feature view (built by ``bench_serving.py`` from the
same source tables, latest row at the store's as-of instant), the departure-time features
computed inline, and XGBoost ``inplace_predict`` with one thread. No validation beyond
JSON, no TTL, no metrics, no logging: a lower bound, not a server to run.

Run by gunicorn: ``floor_app:create_app()`` with FLOOR_DB, FLOOR_MODEL, FLOOR_SPEC set.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import xgboost as xgb
from flask import Flask, jsonify, request

NEW_YORK = ZoneInfo("America/New_York")


def create_app() -> Flask:
    spec = json.loads(open(os.environ["FLOOR_SPEC"]).read())
    features: list[str] = spec["features"]
    index = {f: i for i, f in enumerate(features)}
    views = spec["views"]  # [{"table", "keys": [...], "columns": [...]}]
    conn = sqlite3.connect(os.environ["FLOOR_DB"], check_same_thread=False)
    queries = [(v, f"SELECT {', '.join(v['columns'])} FROM {v['table']} WHERE "
                   + " AND ".join(f"{k} = ?" for k in v["keys"])) for v in views]
    booster = xgb.Booster()
    booster.load_model(os.environ["FLOOR_MODEL"])
    booster.set_param({"nthread": 1})
    local_time = {"departure_time__dep_hour_local": lambda t: t.hour,
                  "departure_time__dep_dow_local": lambda t: t.weekday(),
                  "departure_time__dep_month_local": lambda t: t.month}
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/predict")
    def predict():
        body = request.get_json()
        entities = body["flights"] if "flights" in body else [body]
        matrix = np.full((len(entities), len(features)), np.nan)
        for row, entity in enumerate(entities):
            for view, sql in queries:
                found = conn.execute(sql, [entity.get(k) for k in view["keys"]]).fetchone()
                if found:
                    for column, value in zip(view["columns"], found):
                        if value is not None:
                            matrix[row, index[f"{view['name']}__{column}"]] = value
            local = datetime.fromisoformat(entity["scheduled_departure"]).astimezone(NEW_YORK)
            for name, fn in local_time.items():
                if name in index:
                    matrix[row, index[name]] = fn(local)
        probabilities = booster.inplace_predict(matrix, missing=np.nan)
        return jsonify({"predictions": [{"probability": float(p)} for p in probabilities]})

    return app
