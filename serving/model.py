"""The model being served, and its hot swap when another one is promoted.

A :class:`ServingModel` is immutable: the registry's model (checked against its SHA-256),
its booster, and the online feature path for its FeatureService. :class:`ModelSlot`
holds the current one and replaces it when ``champion.json`` changes: the new model is
loaded and checked completely *before* one reference assignment makes it current, so a
request sees either the old model or the new one, never a mix. A model that fails a check
is refused, the old one keeps serving, and the refusal is counted and kept for ``/model``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from serving.errors import ServingError
from serving.online import OnlineFeatures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingModel:
    model: object  # training.registry.LoadedModel
    booster: object  # xgboost.Booster, one thread
    online: OnlineFeatures

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def feature_service(self) -> str:
        return self.model.metadata["feature_service"]


def load_serving_model(registry, store, request_time_field: str, record: dict | None = None) -> ServingModel:
    """Load the champion (or ``record``'s version) and check it; raise :class:`ServingError`
    if its file does not match the registry's SHA-256, does not load, or its feature list
    differs from its FeatureService's."""
    from training.dataset import service_features
    from training.errors import TrainingError
    from training.model import booster_from_bytes

    try:
        model = registry.load_champion() if record is None else registry.load_promoted(record)
    except (TrainingError, KeyError, ValueError, OSError) as e:
        raise ServingError(f"cannot load the promoted model: {e}") from e
    service_name = model.metadata.get("feature_service")
    try:
        current = service_features(store, service_name)
    except Exception as e:  # Feast raises its own types for an unknown service
        raise ServingError(f"model {model.version}: FeatureService {service_name!r}: {e}") from e
    if current != model.features:
        raise ServingError(
            f"model {model.version} was trained on FeatureService {service_name!r} with features "
            f"{model.features}, but the registry now lists {current}: refusing to serve it"
        )
    try:
        booster = booster_from_bytes(model.model_bytes, nthread=1)
    except Exception as e:  # xgboost.core.XGBoostError, or anything a corrupt file triggers
        raise ServingError(f"model {model.version}: the file does not load as an XGBoost model: {e}") from e
    join_keys: list[str] = []
    for view in store.list_feature_views():
        for column in view.entity_columns:
            if column.name not in join_keys:
                join_keys.append(column.name)
    online = OnlineFeatures(store, service_name, model.features, join_keys, request_time_field)
    return ServingModel(model, booster, online)


class ModelSlot:
    """The current :class:`ServingModel`, swapped when ``champion_path`` changes.

    ``current()`` looks at the file's ``stat`` at most every ``check_seconds`` (0: on every
    call; a stat costs microseconds), so the check rides on requests and needs no thread.
    """

    def __init__(self, load: Callable[[dict], ServingModel], read_champion: Callable[[], dict | None],
                 champion_path, initial: ServingModel, check_seconds: float = 1.0,
                 on_swap: Callable[[str, str], None] = lambda result, detail: None):
        self._load = load
        self._read_champion = read_champion
        self._path = champion_path
        self._model = initial
        self._check_seconds = check_seconds
        self._next_check = 0.0
        self._seen = self._signature()
        self._lock = threading.Lock()
        self._on_swap = on_swap
        #: The last refused promotion: {"version", "error"}, or None.
        self.refused: dict | None = None

    def _signature(self):
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> ServingModel:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_seconds
            if self._signature() != self._seen:
                self._swap_if_promoted()
        return self._model

    def _swap_if_promoted(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is loading it; keep serving the current model meanwhile
        try:
            signature = self._signature()
            if signature == self._seen:
                return
            self._seen = signature
            try:
                record = self._read_champion()
            except ValueError as e:  # half-written or hand-edited JSON
                self._refuse("?", f"champion.json is not valid JSON: {e}")
                return
            if not record or record.get("version") == self._model.version:
                return
            try:
                new = self._load(record)
            except ServingError as e:
                self._refuse(str(record.get("version")), str(e))
                return
            old, self._model = self._model, new
            self.refused = None
            log.warning("serving model %s (was %s)", new.version, old.version)
            self._on_swap("swapped", new.version)
        finally:
            self._lock.release()

    def _refuse(self, version: str, error: str) -> None:
        self.refused = {"version": version, "error": error}
        log.error("refused promoted model %s, still serving %s: %s", version, self._model.version, error)
        self._on_swap("refused", version)
