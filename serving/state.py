"""What a running app holds between requests (:class:`ServingState`), and how a request
finds it (:func:`serving_state`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import NamedTuple

from flask import current_app

from serving.config import MAX_BODY_BYTES, ServingConfig
from serving.errors import StoreUnavailable
from serving.featurelog import FeatureLogger
from serving.metrics import Metrics
from serving.model import ModelSlot, ServingModel, load_serving_model
from serving.openapi import openapi_spec
from serving.precomputed import lookup_path

#: The key of the app's :class:`ServingState` in ``app.extensions``.
EXTENSION = "serving"


class Prediction(NamedTuple):
    """One request's predictions and what they were made from, all from one model."""

    model: ServingModel
    vectors: list  # serving.vector.OnlineVector, one per entity
    #: The model input built from ``vectors`` (float64, the model's feature order).
    matrix: object
    probabilities: object


class ServingState:
    """The model slot (hot-swappable), the Feast store, metrics and the feature log: built
    once per app (per gunicorn worker), shared by its request threads."""

    def __init__(self, config: ServingConfig):
        from feast_plugins.store import feature_store
        from training.registry import CHAMPION_FILE, ModelRegistry

        self.config = config
        self.metrics = Metrics(monitoring_summary=config.settings.reports / "monitoring" / "summary.json")
        self.registry = ModelRegistry(config.settings.models)
        self.store = feature_store(config.settings)
        time_field = config.use_case.request_time_field
        initial = load_serving_model(self.registry, self.store, time_field)
        self.slot = ModelSlot(
            load=lambda record: load_serving_model(self.registry, self.store, time_field, record),
            read_champion=self.registry.champion,
            champion_path=self.registry.root / CHAMPION_FILE,
            initial=initial,
            check_seconds=config.model_check_seconds,
            on_swap=lambda result, version: self.metrics.model_swaps.labels(result).inc(),
        )
        self.feature_log = (FeatureLogger(config.log, config.use_case.request_fields, time_field,
                                          config.use_case.event_timestamp)
                            if config.log is not None else None)
        #: ``/openapi.json``: built once, from the same request fields the validator checks.
        self.openapi = openapi_spec(config.use_case, config.max_batch, MAX_BODY_BYTES)
        #: Where ``/precomputed`` looks its answers up (``serving/precomputed.py``).
        self.precomputed_path = lookup_path(config.settings.data_dir)

    @property
    def model(self):
        """The registry model being served now (``training.registry.LoadedModel``)."""
        return self.slot.current().model

    @property
    def online(self):
        """The current model's online feature path."""
        return self.slot.current().online

    def lookup(self, model: ServingModel, entities: list[dict]):
        """``model``'s online vectors for ``entities``, counted in the metrics (a failing
        store too: :class:`StoreUnavailable`)."""
        try:
            vectors = model.online.lookup(entities)
        except StoreUnavailable:
            self.metrics.store_errors.inc()
            raise
        self.metrics.observe_vectors(vectors)
        return vectors

    def predict(self, entities: list[dict], model: ServingModel | None = None) -> Prediction:
        """Predict ``entities`` with ``model`` (default: the current one)."""
        from training.dataset import rows_matrix
        from training.model import predict_proba

        model = model or self.slot.current()
        vectors = self.lookup(model, entities)
        features = model.model.features
        matrix = rows_matrix([v.row_for(features) for v in vectors], features)
        probabilities = predict_proba(model.booster, matrix)
        self.metrics.observe_predictions(model.version, probabilities)
        return Prediction(model, vectors, matrix, probabilities)

    def log_served(self, endpoint: str, model: ServingModel, entities, vectors, probabilities, matrix=None) -> None:
        """Hand what was served to the feature log, if this request is sampled; a full
        buffer leaves the request out and counts its rows."""
        if self.feature_log is not None and self.feature_log.sampled():
            if not self.feature_log.append(endpoint, model.version, model.feature_service, model.model.features,
                                           entities, vectors, probabilities, matrix):
                self.metrics.log_dropped.inc(len(entities))

    def probe_entity(self) -> dict:
        """A made-up entity for the readiness read (keys match nothing)."""
        placeholder = {"string": "__readyz__", "int": 0, "timestamp": datetime.now(timezone.utc)}
        return {f.name: None if f.nullable else placeholder[f.kind] for f in self.config.use_case.request_fields}


def serving_state() -> ServingState:
    """The current app's state (in a request, or an app context)."""
    return current_app.extensions[EXTENSION]
