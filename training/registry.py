"""The model registry: XGBoost UBJSON files addressed by their SHA-256, plus metadata.

Layout under ``DATA_DIR/models``::

    <version>/model.ubj        the booster, never pickled
    <version>/metadata.json    FeatureService, ordered features, window, metrics, sha256, ...
    champion.json              {"version", "sha256", "promoted_at"}: what serving loads
    history.json               {"promotions": [record, ...]}: every promotion, oldest first

A version is the first 16 hex digits of the model file's SHA-256, so the same data and
config give the same version. A version is that and nothing else (:func:`check_version`):
never a path, so no champion record or command line reaches a file outside the registry.
Loading always re-hashes the file and refuses a mismatch, or a directory whose name is
not its file's hash.

``history.json`` is the record of good promotions (each one checked by :meth:`promote`):
a server that cannot load the champion falls back through it, newest first
(:meth:`ModelRegistry.fallbacks`), instead of not starting at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from core.files import atomic_write
from training.errors import TrainingError

MODEL_FILE = "model.ubj"
METADATA_FILE = "metadata.json"
CHAMPION_FILE = "champion.json"
HISTORY_FILE = "history.json"
#: Held (``flock``) while a promotion rewrites champion.json and history.json.
LOCK_FILE = ".promote.lock"
#: Promotions kept in history.json (the oldest are dropped).
HISTORY_KEEP = 100

_VERSION = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_version(version: object) -> str:
    """``version`` if it is a registry version (16 lowercase hex digits: the start of its
    model file's SHA-256), else :class:`TrainingError` saying so."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise TrainingError(f"{version!r} is not a model version: a version is the 16 lowercase hex digits "
                            "the registry names a model by (`training list`)")
    return version


def check_record(record: object, source: str = CHAMPION_FILE) -> dict:
    """``record`` if it is a champion record (a JSON object with a registry ``version`` and
    the ``sha256`` it starts), else :class:`TrainingError` naming ``source``."""
    if not isinstance(record, dict):
        raise TrainingError(f"{source} must hold a JSON object with \"version\" and \"sha256\", "
                            f"not {_json_kind(record)}")
    try:
        version = check_version(record.get("version"))
    except TrainingError as e:
        raise TrainingError(f"{source}: \"version\": {e}") from None
    sha = record.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha) or not sha.startswith(version):
        raise TrainingError(f"{source}: \"sha256\" must be the 64 hex digits of the model file's SHA-256, "
                            f"starting with its version {version}")
    return record


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model_bytes: bytes
    metadata: dict

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _dir(self, version: str) -> Path:
        return self.root / check_version(version)

    def register(self, model_bytes: bytes, metadata: dict) -> str:
        """Store a model and its metadata; return its version. Idempotent for equal bytes."""
        sha = hashlib.sha256(model_bytes).hexdigest()
        version = sha[:16]
        target = self.root / version
        metadata = {**metadata, "version": version, "sha256": sha}
        atomic_write(target / MODEL_FILE, model_bytes)
        atomic_write(target / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True).encode())
        return version

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if _VERSION.fullmatch(p.name) and (p / METADATA_FILE).is_file())

    def metadata(self, version: str) -> dict:
        path = self._dir(version) / METADATA_FILE
        if not path.is_file():
            raise TrainingError(f"model {version!r} is not in the registry at {self.root}")
        try:
            metadata = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise TrainingError(f"{path}: unreadable metadata: {e}") from e
        if not isinstance(metadata, dict):
            raise TrainingError(f"{path}: metadata must be a JSON object")
        return metadata

    def load(self, version: str) -> LoadedModel:
        """The model bytes of ``version``, after checking them against the registered SHA-256
        (whose first 16 digits must be ``version``)."""
        metadata = self.metadata(version)
        path = self._dir(version) / MODEL_FILE
        if not path.is_file():
            raise TrainingError(f"{path}: model file is missing")
        registered = metadata.get("sha256")
        if not isinstance(registered, str) or not registered.startswith(version):
            raise TrainingError(f"{path.parent / METADATA_FILE}: its sha256 {str(registered)[:16]}… does not "
                                f"name version {version}")
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha != registered:
            raise TrainingError(f"{path}: SHA-256 {sha[:16]}… does not match the registry's {registered[:16]}…")
        return LoadedModel(version, data, metadata)

    @contextmanager
    def _promotion_lock(self) -> Iterator[None]:
        """One promotion at a time (champion.json and history.json are read, then rewritten)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def promote(self, version: str) -> dict:
        """Make ``version`` the champion that serving loads (an explicit, separate step), and
        add it to the history of promotions. Refused if the model was trained on definitions
        that differ from the ones applied (:meth:`_check_definitions`)."""
        model = self.load(version)
        self._check_definitions(model)
        record = {"version": version, "sha256": model.metadata["sha256"],
                  "promoted_at": datetime.now(timezone.utc).isoformat()}
        with self._promotion_lock():
            history = self.promotions()
            if not history:  # a registry from before the history: its champion was a good promotion
                try:
                    previous = self.champion()
                except TrainingError:
                    previous = None
                if previous is not None:
                    history.append(previous)
            history = [*history, record][-HISTORY_KEEP:]
            atomic_write(self.root / CHAMPION_FILE, json.dumps(record, indent=2).encode(), durable=True)
            atomic_write(self.root / HISTORY_FILE, json.dumps({"promotions": history}, indent=2).encode(),
                         durable=True)
        return record

    def _check_definitions(self, model: LoadedModel) -> None:
        """Refuse a model trained on feature definitions that differ from the ones applied
        (``definitions.json`` beside the models, ``pipeline/definitions.py``): serving would
        refuse it. A model or a registry without fingerprints is not checked."""
        from pipeline.definitions import RECORD_FILE, drift, read_record
        from pipeline.errors import PipelineError

        pinned = model.metadata.get("definitions")
        if not pinned:
            return
        try:
            views = read_record(self.root / RECORD_FILE)
        except PipelineError as e:
            raise TrainingError(str(e)) from None
        drifted = drift(pinned, views) if views is not None else []
        if drifted:
            raise TrainingError(f"model {model.version} was trained on feature definitions that differ from the "
                                f"ones applied now: {'; '.join(d.describe() for d in drifted)}; serving would refuse "
                                "it: train a model on the current definitions")

    def champion(self) -> dict | None:
        """The champion record (None: nothing promoted yet); :class:`TrainingError` if
        champion.json is not valid JSON or not a champion record (:func:`check_record`)."""
        path = self.root / CHAMPION_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise TrainingError(f"{CHAMPION_FILE} is unreadable: {e}") from e
        try:
            record = json.loads(text)
        except ValueError as e:
            raise TrainingError(f"{CHAMPION_FILE} is not valid JSON: {e}") from None
        return check_record(record)

    def promotions(self) -> list[dict]:
        """The good promotions, oldest first (an unreadable history, or an entry that is not
        a champion record, is left out: the history is a way back, never a reason to fail)."""
        try:
            data = json.loads((self.root / HISTORY_FILE).read_text())
        except (OSError, ValueError):
            return []
        entries = data.get("promotions") if isinstance(data, dict) else None
        out = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                out.append(check_record(entry, HISTORY_FILE))
            except TrainingError:
                continue
        return out

    def fallbacks(self, exclude: str | None = None) -> list[dict]:
        """Earlier champions to fall back to, newest first, one record per version,
        without ``exclude`` (the champion that failed)."""
        seen = {exclude}
        out = []
        for record in reversed(self.promotions()):
            if record["version"] not in seen:
                seen.add(record["version"])
                out.append(record)
        return out

    def load_promoted(self, record: dict) -> LoadedModel:
        """The model a champion record names, refused if the registry's SHA-256 is not the
        one recorded at promotion."""
        record = check_record(record)
        model = self.load(record["version"])
        if model.metadata["sha256"] != record["sha256"]:
            raise TrainingError(f"champion {record['version']}: registry hash differs from the promoted one")
        return model

    def load_champion(self) -> LoadedModel:
        record = self.champion()
        if record is None:
            raise TrainingError(f"no promoted model in {self.root}: run `training promote VERSION`")
        return self.load_promoted(record)
