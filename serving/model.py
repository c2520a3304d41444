"""The model being served, its hot swap when another one is promoted, and what a worker
serves when the promoted one cannot be.

A :class:`ServingModel` is immutable: the registry's model (checked against its SHA-256),
its booster, and the online feature path for its FeatureService. :class:`ModelSlot`
holds the current one and replaces it when ``champion.json`` changes: the new model is
loaded and checked completely *before* one reference assignment makes it current, so a
request sees either the old model or the new one, never a mix.

A worker never fails to start because of the model or the Feast registry (under gunicorn
a worker that fails to boot stops the whole server). What it serves, in order:

1. the champion ``champion.json`` names, if it loads and checks out;
2. otherwise the model it already serves (a refused promotion), or, at start, the newest
   earlier champion of the registry's history that loads and checks out (a *fallback*);
3. otherwise nothing: :func:`unavailable_model`'s placeholder, whose reads answer 503
   saying why.

Every refusal is kept (:attr:`ModelSlot.refused`, shown by ``/readyz`` and ``/model``),
logged and counted. While the champion is refused, or nothing is served, the slot tries
again every :data:`RETRY_SECONDS` and whenever ``champion.json`` changes; a refusal is
cleared as soon as champion.json names the model being served.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from google.protobuf.message import DecodeError

from serving.errors import ServingError, StoreUnavailable
from serving.online import OnlineFeatures

log = logging.getLogger(__name__)

#: Seconds between attempts to load the champion while it is refused or nothing is served.
RETRY_SECONDS = 5.0
#: Earlier champions a worker with nothing to serve tries, newest first.
MAX_FALLBACKS = 3


class ChampionError(ServingError):
    """champion.json cannot be read or is not a champion record; ``version`` is what it
    names, if anything (reported with the refusal)."""

    def __init__(self, message: str, version=None):
        super().__init__(message)
        self.version = version


@dataclass(frozen=True)
class ServingModel:
    model: object  # training.registry.LoadedModel
    booster: object  # xgboost.Booster, one thread; None: no model (see unavailable_model)
    online: OnlineFeatures

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def feature_service(self) -> str:
        return self.model.metadata["feature_service"]

    @property
    def loaded(self) -> bool:
        """False for the placeholder of a worker with nothing to serve."""
        return self.booster is not None


class _NothingToServe:
    """The online path of :func:`unavailable_model`: every read is a 503 saying why."""

    direct = None
    on_demand = None

    def __init__(self, reason: str):
        self.reason = reason

    def probe(self, entity: dict) -> None:
        raise StoreUnavailable(self.reason)

    def lookup(self, entities) -> list:
        raise StoreUnavailable(self.reason)


def unavailable_model(reason: str) -> ServingModel:
    """The placeholder a slot holds when no model can be served: version ``none``, no
    features; ``/predict`` and ``/features`` answer 503 with ``reason``."""
    from training.registry import LoadedModel

    return ServingModel(LoadedModel("none", b"", {"features": [], "feature_service": None}), None,
                        _NothingToServe(f"no model to serve: {reason}"))


def unreadable_registry(error: Exception) -> str:
    """What to say of a Feast registry that does not parse (protobuf's ``DecodeError``)."""
    return (f"the Feast registry cannot be read ({type(error).__name__}: {error}); restore it from a "
            "backup, or delete it and run `pipeline apply`")


def value_rules(store, use_case) -> dict:
    """Each feature view's value rules by feature (``core.contracts.ColumnRule``): its source
    table's contract, as the materialization gate checks it. What the online store's
    check (``packed_reader.check_store``) holds its rows to."""
    from validation.feast_contracts import source_contracts, source_table_name

    views = store.list_feature_views()
    contracts = source_contracts(views, store.list_entities(), use_case.source_rules)
    out: dict = {}
    for view in views:
        contract = contracts.get(source_table_name(view) or "")
        if contract is not None:
            out[view.name] = {f.name: contract.columns[f.name] for f in view.features if f.name in contract.columns}
    return out


def definition_drift(registry, metadata: dict) -> list[str]:
    """How the definitions a model was trained on (its metadata's ``"definitions"``) differ
    from the ones last applied (``definitions.json`` beside the models): one line per view,
    naming the change; empty when they agree, or when either side was never recorded (a
    model trained before fingerprints, a DATA_DIR never applied since). An unreadable
    record is logged, not held against the model: it is no reason to serve nothing."""
    from pipeline.definitions import RECORD_FILE, drift, read_record
    from pipeline.errors import PipelineError

    pinned = metadata.get("definitions")
    if not pinned:
        return []
    try:
        views = read_record(registry.root / RECORD_FILE)
    except PipelineError as e:
        log.error("cannot check model %s against the applied definitions: %s", metadata.get("version"), e)
        return []
    return [] if views is None else [d.describe() for d in drift(pinned, views)]


def load_serving_model(registry, store, request_time_field: str, record: dict | None = None,
                       rules: dict | None = None) -> ServingModel:
    """Load the champion (or ``record``'s version) and check it; raise :class:`ServingError`
    if its file does not match the registry's SHA-256, does not load, or its feature list
    differs from its FeatureService's, or the definitions it was trained on differ from the
    ones applied now (:func:`definition_drift`), or its online read cannot be built. The packed
    online store is checked too (``rules``: :func:`value_rules`); a damaged store does not
    refuse the model, its reads are refused (503) until it is rebuilt."""
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
    except DecodeError as e:
        raise ServingError(unreadable_registry(e)) from e
    except Exception as e:  # Feast raises its own types for an unknown service
        raise ServingError(f"model {model.version}: FeatureService {service_name!r}: {type(e).__name__}: {e}") from e
    if current != model.features:
        raise ServingError(
            f"model {model.version} was trained on FeatureService {service_name!r} with features "
            f"{model.features}, but the registry now lists {current}: refusing to serve it"
        )
    drifted = definition_drift(registry, model.metadata)
    if drifted:
        raise ServingError(
            f"model {model.version} was trained on feature definitions that differ from the ones applied now: "
            f"{'; '.join(drifted)}: refusing to serve it (train and promote a model on the current definitions, "
            "or apply the ones it was trained on)"
        )
    try:
        booster = booster_from_bytes(model.model_bytes, nthread=1)
    except Exception as e:  # xgboost.core.XGBoostError, or anything a corrupt file triggers
        raise ServingError(f"model {model.version}: the file does not load as an XGBoost model: {e}") from e
    try:
        join_keys: list[str] = []
        for view in store.list_feature_views():
            for column in view.entity_columns:
                if column.name not in join_keys:
                    join_keys.append(column.name)
        online = OnlineFeatures(store, service_name, model.features, join_keys, request_time_field)
    except ServingError:
        raise
    except DecodeError as e:
        raise ServingError(unreadable_registry(e)) from e
    except Exception as e:  # a view Feast cannot build
        raise ServingError(f"model {model.version}: its online read cannot be built: {type(e).__name__}: {e}") from e
    if online.direct is not None:
        online.direct.verify(rules or {})
    return ServingModel(model, booster, online)


class ModelSlot:
    """The current :class:`ServingModel`, swapped when ``champion_path`` changes, with the
    fallbacks of the module doc.

    ``current()`` looks at the file's ``stat`` at most every ``check_seconds`` (0: on every
    call; a stat costs microseconds), so the check rides on requests and needs no thread.
    ``load(record)`` builds a model or raises :class:`ServingError`; ``read_champion()``
    returns champion.json's record (None: there is none) or raises :class:`ServingError`;
    ``fallbacks(version)`` lists earlier champions, newest first, without ``version``.
    ``on_change(event, version)`` hears of every ``swapped``, ``fallback``, ``refused``,
    ``unavailable`` and ``restored`` (champion.json names the served model again).
    """

    def __init__(self, load: Callable[[dict], ServingModel], read_champion: Callable[[], dict | None],
                 champion_path, fallbacks: Callable[[str | None], list[dict]] = lambda version: [],
                 check_seconds: float = 1.0, retry_seconds: float | None = None,
                 on_change: Callable[[str, str | None], None] = lambda event, version: None):
        self._load = load
        self._read_champion = read_champion
        self._fallbacks = fallbacks
        self._path = champion_path
        self._check_seconds = check_seconds
        self._retry_seconds = RETRY_SECONDS if retry_seconds is None else retry_seconds
        self._on_change = on_change
        self._next_check = 0.0
        #: While the champion is refused or nothing is served: when to try again (monotonic).
        self._retry_at: float | None = None
        self._lock = threading.Lock()
        self._model = unavailable_model("not loaded yet")
        #: The refused champion: {"version" (None if champion.json names none), "error"}, or None.
        self.refused: dict | None = None
        #: True while serving an earlier champion from the history (the champion was refused at start).
        self.fallback = False
        self._seen = self._signature()
        with self._lock:
            self._update()

    @property
    def unavailable(self) -> str | None:
        """Why nothing is served (None: a model is)."""
        return None if self._model.loaded else self._model.online.reason

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
            retry = self._retry_at is not None and now >= self._retry_at
            if retry or self._signature() != self._seen:
                self._swap_if_promoted()
        return self._model

    def _swap_if_promoted(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is loading it; keep serving the current model meanwhile
        try:
            self._seen = self._signature()
            self._update()
        finally:
            self._lock.release()

    def _update(self) -> None:
        """(Under the lock.) Serve champion.json's model if it loads; else keep the current
        model, or fall back (module doc)."""
        self._retry_at = None
        version: str | None = None
        try:
            record = self._read_champion()
            if record is None:
                raise ServingError("nothing is promoted (no champion.json): run `training promote VERSION`")
            version = record["version"]
            if self._model.loaded and version == self._model.version:
                self._restored()
                return
            new = self._load(record)
        except ChampionError as e:
            self._refuse(e.version, str(e))
            return
        except ServingError as e:
            self._refuse(version, str(e))
            return
        except Exception as e:  # never a 500 per worker, never a worker that does not boot
            log.exception("loading the promoted model %s failed", version)
            self._refuse(version, f"unexpected error: {type(e).__name__}: {e}")
            return
        old, self._model = self._model, new
        self.refused, self.fallback = None, False
        log.warning("serving model %s (was %s)", new.version, old.version)
        self._on_change("swapped", new.version)

    def _restored(self) -> None:
        """champion.json names the model being served: no refusal stands."""
        if self.refused is not None or self.fallback:
            log.warning("champion.json names the served model %s again", self._model.version)
            self.refused, self.fallback = None, False
            self._on_change("restored", self._model.version)

    def _refuse(self, version: str | None, error: str) -> None:
        refusal = {"version": version, "error": error}
        new = refusal != self.refused
        if new:  # logged and counted once, not on every retry
            self.refused = refusal
            log.error("refused the promoted model %s (%s): %s", version, "still serving " + self._model.version
                      if self._model.loaded else "nothing served yet", error)
            self._on_change("refused", version)
        if not self._model.loaded:
            self._fall_back(version, error, quiet=not new)
        self._retry_at = time.monotonic() + self._retry_seconds

    def _fall_back(self, refused, error: str, quiet: bool = False) -> None:
        """Nothing served: the newest of the last :data:`MAX_FALLBACKS` earlier champions
        that loads, or the placeholder. ``quiet``: log nothing new (a retry)."""
        try:
            earlier = self._fallbacks(refused if isinstance(refused, str) else None)[:MAX_FALLBACKS]
        except Exception as e:  # an unreadable history is no way back, but no reason to fail either
            log.error("the registry's history of promotions cannot be read: %s", e)
            earlier = []
        for record in earlier:
            try:
                self._model = self._load(record)
            except Exception as e:
                if not quiet:
                    log.error("fallback to the earlier champion %s refused too: %s", record.get("version"), e)
                continue
            self.fallback = True
            log.error("serving the earlier champion %s instead of the refused %s", self._model.version, refused)
            self._on_change("fallback", self._model.version)
            return
        placeholder = unavailable_model(error)
        if placeholder.online.reason != self._model.online.reason:
            self._model = placeholder
            self._on_change("unavailable", refused)
