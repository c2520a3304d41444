"""The model gate on the real two-month slice: seeded bad candidates are all rejected.

The candidates are trained here on the slice's point-in-time training set (few rounds,
seeded) and registered next to a copy of the slice run's registry, whose champion is the
model the session fixture trained and promoted on the floors alone.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from tests.conftest import copy_data_dir
from training.dataset import load_events, service_features, training_set
from training.model import booster_from_bytes
from training.model_gate import GateConfig, judge
from training.promote import GATE_REPORT, baseline_metrics, evaluation_frame, promote_if_better
from training.registry import ModelRegistry
from training.train import TrainConfig, fit

ROUNDS = 40


@pytest.fixture(scope="module")
def env(slice_run, use_case, tmp_path_factory):
    """A copy of the slice run's data dir (so promotions here cannot touch other tests),
    its Feast store, the champion, its evaluation window and the training rows."""
    original: Settings = slice_run["settings"]
    data = tmp_path_factory.mktemp("gate") / "data"
    copy_data_dir(original.data_dir, data, ignore=())
    settings = Settings(data_dir=data)
    store = slice_run["store"]
    registry = ModelRegistry(settings.models)
    champion = registry.load_champion()
    frame = evaluation_frame(settings, use_case, store, champion.metadata)
    events = load_events(settings, use_case)
    cut = pd.Timestamp(champion.metadata["training_window"]["end"])
    train = training_set(store, use_case, events[events[use_case.event_timestamp] < cut])
    return {"settings": settings, "store": store, "registry": registry, "champion": champion,
            "frame": frame, "train": train, "features": service_features(store, use_case.feature_service)}


def _register(env, use_case, *, labels=None, features=None, seed=7, rounds=ROUNDS, **meta) -> str:
    train, features = env["train"], features or env["features"]
    y = train[use_case.label].to_numpy(dtype=float) if labels is None else labels
    x = np.column_stack([pd.to_numeric(train[f]).astype("float64").to_numpy() for f in features])
    model = fit(x, y, features, TrainConfig(num_boost_round=rounds, seed=seed))
    metadata = {**env["champion"].metadata, "features": features, **meta}
    return env["registry"].register(model, metadata)


def _judge(env, use_case, version, refetch=None, config=GateConfig()):
    store, frame = env["store"], env["frame"]

    def fetch(rows):
        return training_set(store, use_case, rows, extra_columns=use_case.model_expectations.invariant_fields)

    metadata = env["registry"].metadata(version)
    return judge(env["registry"], version, frame, label=use_case.label, feature_service=use_case.feature_service,
                 service_features=env["features"], baseline=baseline_metrics(frame, use_case, metadata),
                 expectations=use_case.model_expectations, slices=use_case.slices, refetch=refetch or fetch, config=config)


def _checks(report) -> set[str]:
    return {f.check for f in report.failures}


def test_first_model_was_judged_on_floors_and_behaviour_only(slice_run):
    settings = slice_run["settings"]
    version = slice_run["result"]["version"]
    assert slice_run["promotion"]["promoted"], slice_run["promotion"]
    report = json.loads((settings.models / version / GATE_REPORT).read_text())
    assert report["passed"] and "champion_auc" not in report["checks"], report["checks"]
    assert {"floor_auc", "finite_predictions", "invariance:flight", "direction:weather_hourly__precip",
            "direction:weather_hourly__visib"} <= set(report["checks"])


def test_an_honest_retrain_passes_against_the_champion(env, use_case, slice_run):
    """Same data and config as the champion, another seed: within the tolerances."""
    version = _register(env, use_case, seed=11, rounds=slice_run["config"].num_boost_round)
    report = _judge(env, use_case, version)
    assert report.passed, report.render()
    assert {"champion_auc", "slice_auc"} <= set(report.checks)
    assert report.stats["slices"], "no slice had enough rows to be compared"


def test_shuffled_labels_are_rejected_and_kept_with_their_report(env, use_case):
    labels = np.random.default_rng(0).permutation(env["train"][use_case.label].to_numpy(dtype=float))
    version = _register(env, use_case, labels=labels)
    champion_before = (env["settings"].models / "champion.json").read_bytes()
    result = promote_if_better(env["settings"], use_case, env["store"], version, say=lambda m: None)
    assert not result["promoted"]
    assert any("[floor_auc]" in f for f in result["failures"]), result["failures"]
    assert (env["settings"].models / "champion.json").read_bytes() == champion_before, "the champion changed"
    kept = json.loads((env["settings"].models / version / GATE_REPORT).read_text())
    assert kept["passed"] is False and version in env["registry"].versions(), "the rejected candidate was not kept"


def test_a_dropped_feature_is_rejected(env, use_case):
    version = _register(env, use_case, features=env["features"][1:])
    report = _judge(env, use_case, version)
    assert _checks(report) == {"feature_service"}, report.render()
    assert env["features"][0] in report.failures[0].message


def test_a_corrupted_model_file_is_rejected(env, use_case):
    version = _register(env, use_case, seed=12)
    path = env["settings"].models / version / "model.ubj"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    report = _judge(env, use_case, version)
    assert _checks(report) == {"model_integrity"}, report.render()
    assert "SHA-256" in report.failures[0].message


def test_a_model_trained_on_another_feature_service_is_rejected(env, use_case):
    version = _register(env, use_case, seed=13, feature_service="late_arrival_v0")
    report = _judge(env, use_case, version)
    assert _checks(report) == {"feature_service"}, report.render()
    assert "late_arrival_v0" in report.failures[0].message


def test_inverted_labels_fail_the_floors_and_the_direction_tests(env, use_case):
    version = _register(env, use_case, labels=1.0 - env["train"][use_case.label].to_numpy(dtype=float))
    report = _judge(env, use_case, version)
    assert {"floor_auc", "direction"} <= _checks(report), report.render()


def test_a_model_worse_on_one_origin_fails_its_slice(env, use_case):
    train = env["train"]
    y = train[use_case.label].to_numpy(dtype=float).copy()
    ewr = (train["origin"] == "EWR").to_numpy()
    y[ewr] = np.random.default_rng(1).permutation(y[ewr])
    version = _register(env, use_case, labels=y)
    report = _judge(env, use_case, version)
    slices = [f for f in report.failures if f.check == "slice_auc"]
    assert any(f.column == "origin" and "origin=EWR" in f.message for f in slices), report.render()


def test_a_prediction_that_moves_with_the_flight_number_fails_invariance(env, use_case):
    """As if a feature leaked the flight number: the refetched rows change with it."""
    store = env["store"]

    def leaky(rows):
        out = training_set(store, use_case, rows, extra_columns=("flight",))
        out["weather_hourly__temp"] = out["weather_hourly__temp"] + out["flight"] % 50
        return out

    version = env["champion"].version
    report = _judge(env, use_case, version, refetch=leaky)
    assert _checks(report) == {"invariance"}, report.render()
    assert report.failures[0].column == "flight"


def test_a_model_that_outputs_nan_is_rejected(env, use_case):
    """A booster whose first tree's leaves are NaN (as a numerically broken training run
    would leave it): every probability is NaN."""
    import xgboost as xgb

    model = env["champion"]
    dump = json.loads(bytes(booster_from_bytes(model.model_bytes).save_raw(raw_format="json")))
    tree = dump["learner"]["gradient_booster"]["model"]["trees"][0]
    for i, left in enumerate(tree["left_children"]):
        if left == -1:
            tree["split_conditions"][i] = tree["base_weights"][i] = float("nan")
    broken = xgb.Booster()
    broken.load_model(bytearray(json.dumps(dump).encode()))
    version = env["registry"].register(bytes(broken.save_raw(raw_format="ubj")), dict(model.metadata))
    report = _judge(env, use_case, version)
    assert _checks(report) == {"finite_predictions"}, report.render()
    assert report.failures[0].failed_rows == len(env["frame"])
