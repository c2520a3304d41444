"""Batch scoring (static inference): the offline twin of the server's /predict."""

from __future__ import annotations

import pandas as pd

from core.usecase import UseCase
from training.dataset import feature_matrix, training_set
from training.model import booster_from_bytes, predict_proba
from training.registry import LoadedModel


def score_events(store, use_case: UseCase, model: LoadedModel, events: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features for ``events`` and the model's probability for each row."""
    frame = training_set(store, use_case, events)
    matrix = feature_matrix(frame, model.features)
    frame["probability"] = predict_proba(booster_from_bytes(model.model_bytes), matrix)
    frame["model_version"] = model.version
    return frame

