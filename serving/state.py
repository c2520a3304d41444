"""What a running app holds between requests (:class:`ServingState`), how a request
finds it (:func:`serving_state`), and what ``/readyz`` reports (:meth:`ServingState.readiness`)."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import NamedTuple

from flask import current_app

from serving.config import MAX_BODY_BYTES, ServingConfig
from serving.errors import ServingError, StoreUnavailable
from serving.featurelog import FeatureLogger
from serving.metrics import Metrics
from serving.model import ChampionError, ModelSlot, ServingModel, load_serving_model, unreadable_registry, value_rules
from serving.openapi import openapi_spec
from serving.precomputed import lookup_path

log = logging.getLogger(__name__)

#: The key of the app's :class:`ServingState` in ``app.extensions``.
EXTENSION = "serving"


class Prediction(NamedTuple):
    """One request's predictions and what they were made from, all from one model."""

    model: ServingModel
    vectors: list  # serving.vector.OnlineVector, one per entity
    #: The model input built from ``vectors`` (float64, the model's feature order).
    matrix: object
    probabilities: object


class Readiness(NamedTuple):
    """``/readyz``'s answer: its JSON body and HTTP status."""

    body: dict
    status: int


class ServingState:
    """The model slot (hot-swappable), the Feast store, metrics and the feature log: built
    once per app (per gunicorn worker), shared by its request threads.

    Building it never fails because of the model or the Feast registry: a worker that
    cannot load anything starts with nothing to serve and keeps trying (``serving/model.py``).
    """

    def __init__(self, config: ServingConfig):
        from training.registry import CHAMPION_FILE, ModelRegistry

        self.config = config
        self.metrics = Metrics(monitoring_summary=config.settings.reports / "monitoring" / "summary.json")
        self.registry = ModelRegistry(config.settings.models)
        self.champion_path = self.registry.root / CHAMPION_FILE
        #: The Feast store (None until the registry can be read: :meth:`_open_store`).
        self.store = None
        #: The Feast registry file as last checked by readiness: (signature, problem or None).
        self._registry_checked: tuple | None = None
        self.feature_log = (FeatureLogger(config.log, config.use_case.request_fields,
                                          config.use_case.request_time_field, config.use_case.event_timestamp,
                                          on_dropped=self.metrics.log_dropped_rows,
                                          on_buffered=self.metrics.log_buffered.set)
                            if config.log is not None else None)
        self.slot = ModelSlot(
            load=self._load,
            read_champion=self._read_champion,
            champion_path=self.champion_path,
            fallbacks=self.registry.fallbacks,
            check_seconds=config.model_check_seconds,
            on_change=self._model_changed,
        )
        self._show_model_state()
        #: ``/openapi.json``: built once, from the same request fields the validator checks.
        self.openapi = openapi_spec(config.use_case, config.max_batch, MAX_BODY_BYTES)
        #: Where ``/precomputed`` looks its answers up (``serving/precomputed.py``).
        self.precomputed_path = lookup_path(config.settings.data_dir)

    # -- the model ---------------------------------------------------------------------

    def _open_store(self):
        """The Feast store, opened on first need; :class:`ServingError` if it cannot be (an
        unreadable registry: Feast reads it when the store is opened)."""
        if self.store is None:
            from feast_plugins.store import feature_store

            try:
                self.store = feature_store(self.config.settings)
            except Exception as e:  # Feast raises protobuf's DecodeError and its own types (logged by the slot)
                raise ServingError(unreadable_registry(e)) from e
        return self.store

    def _read_champion(self) -> dict | None:
        """champion.json's record (None: there is none); :class:`ChampionError` if it is not one."""
        import json

        from training.errors import TrainingError

        try:
            return self.registry.champion()
        except TrainingError as e:
            try:  # what it names, to report with the refusal
                raw = json.loads(self.champion_path.read_text())
            except (OSError, ValueError):
                raw = None
            version = raw.get("version") if isinstance(raw, dict) else None
            raise ChampionError(str(e), version if isinstance(version, (str, int, float)) else None) from e

    def _load(self, record: dict) -> ServingModel:
        store = self._open_store()
        try:
            rules = value_rules(store, self.config.use_case)
        except Exception as e:  # contracts that cannot be derived: the store is checked without them
            log.warning("the online store's value rules cannot be derived (%s: %s): checking its rows "
                        "without them", type(e).__name__, e)
            rules = {}
        return load_serving_model(self.registry, store, self.config.use_case.request_time_field, record, rules)

    def _model_changed(self, event: str, version: str | None) -> None:
        """Count the slot's events (``serving_model_swaps_total``) and show its state."""
        if event in ("swapped", "refused", "fallback"):
            self.metrics.model_swaps.labels(event).inc()
        if getattr(self, "slot", None) is not None:  # the slot's first load comes before the assignment
            self._show_model_state()

    def _show_model_state(self) -> None:
        """``serving_champion_refused`` and ``serving_model_unavailable`` of this worker."""
        self.metrics.champion_refused.set(0 if self.slot.refused is None else 1)
        self.metrics.model_unavailable.set(0 if self.slot.unavailable is None else 1)

    @property
    def model(self):
        """The registry model being served now (``training.registry.LoadedModel``)."""
        return self.slot.current().model

    @property
    def online(self):
        """The current model's online feature path."""
        return self.slot.current().online

    # -- requests ----------------------------------------------------------------------

    def lookup(self, model: ServingModel, entities: list[dict]):
        """``model``'s online vectors for ``entities``, counted in the metrics (a failing
        store too: :class:`StoreUnavailable`)."""
        try:
            vectors = model.online.lookup(entities)
        except StoreUnavailable:
            if model.loaded:
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
        """Hand what was served to the feature log, if this request is sampled (rows it
        cannot keep are counted by the log itself: ``serving_feature_log_dropped_rows_total``)."""
        if self.feature_log is not None and self.feature_log.sampled():
            self.feature_log.append(endpoint, model.version, model.feature_service, model.model.features,
                                    entities, vectors, probabilities, matrix)

    def probe_entity(self) -> dict:
        """A made-up entity for the readiness read (keys match nothing)."""
        placeholder = {"string": "__readyz__", "int": 0, "timestamp": datetime.now(timezone.utc)}
        return {f.name: None if f.nullable else placeholder[f.kind] for f in self.config.use_case.request_fields}

    # -- readiness ---------------------------------------------------------------------

    def readiness(self, model: ServingModel) -> Readiness:
        """What ``/readyz`` answers for a request pinned to ``model``:

        * ``unavailable`` (503, with ``error``): nothing to serve (no model loads), the Feast
          registry file cannot be read, or the online store cannot answer a real read or is
          damaged (``packed_reader.check_store``);
        * ``degraded`` (200, with ``warnings``): answers are right, but the promoted champion
          is refused (this worker serves the model it had, or an earlier champion after a
          restart: ``fallback``), or the feature log is losing rows;
        * ``ready`` (200) otherwise.

        A fallback is 200: it is the last model that checked out, and taking every worker
        out of rotation for a bad promotion is the outage the fallback avoids.
        """
        slot = self.slot
        body: dict = {"status": "ready", "model_version": model.version if model.loaded else None,
                      "refused_promotion": slot.refused, "fallback": slot.fallback}
        if self.feature_log is not None:
            body["feature_log"] = self.feature_log.status()
        error = slot.unavailable if not model.loaded else self._registry_problem() or self._store_problem(model)
        warnings = []
        if slot.refused is not None and model.loaded:
            warnings.append(f"the promoted model {slot.refused['version']} is refused ({slot.refused['error']}); "
                            f"serving {'the earlier champion ' if slot.fallback else ''}{model.version}")
        problem = self.feature_log.problem() if self.feature_log is not None else None
        if problem is not None:
            warnings.append(problem)
        if warnings:
            body["warnings"] = warnings
        if error is not None:
            return Readiness({**body, "status": "unavailable", "error": error}, 503)
        return Readiness({**body, "status": "degraded" if warnings else "ready"}, 200)

    def _registry_problem(self) -> str | None:
        """Why the Feast registry file cannot be read (None: it can), checked again only when
        the file changed. A worker keeps serving from Feast's cached copy, but one that
        starts now could not load anything: not ready."""
        registry = getattr(getattr(self.store, "config", None), "registry", None)
        path = getattr(registry, "path", None)
        if not path or getattr(registry, "registry_type", "file") != "file" or "://" in str(path):
            return None
        try:
            st = os.stat(path)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError as e:
            return f"the Feast registry {os.path.basename(path)} cannot be read: {type(e).__name__}"
        if self._registry_checked is None or self._registry_checked[0] != signature:
            try:
                self.store.refresh_registry()
                problem = None
            except Exception as e:  # protobuf's DecodeError, or whatever Feast raises on a broken file
                problem = unreadable_registry(e).replace("registry", f"registry {os.path.basename(path)}", 1)
                log.error("%s [%s]", problem, path)
            self._registry_checked = (signature, problem)
        return self._registry_checked[1]

    def _store_problem(self, model: ServingModel) -> str | None:
        """Why the online store cannot serve (None: it answered a real read). The packed
        store is checked again first if its file changed (``DirectRead.recheck``)."""
        direct = getattr(model.online, "direct", None)
        if direct is not None:
            direct.recheck()
        try:
            model.online.probe(self.probe_entity())
        except StoreUnavailable as e:
            self.metrics.store_errors.inc()
            return str(e)
        return None


def serving_state() -> ServingState:
    """The current app's state (in a request, or an app context)."""
    return current_app.extensions[EXTENSION]
