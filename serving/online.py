"""Online feature vectors with the offline join's time semantics.

Feast's online read returns the newest materialized value whatever its age (it never
checks a view's TTL). Here, for each entity, a value counts only if the offline
point-in-time join would have picked it at the request's as-of instant:

* older than its view's TTL (``event_ts + ttl < as_of``) -> stale, missing;
* newer than the as-of instant (``event_ts > as_of``) -> not yet known, missing.

That is the one place where this platform corrects Feast's online semantics. It is also
where a failing online store becomes :class:`StoreUnavailable` (HTTP 503): Feast's SQLite
store keeps one connection per process and never reopens it, so after a failure the
cached connection is dropped and the next request connects afresh
(:func:`reset_online_connection`). Redis clients reconnect by themselves. And Feast's
file registry is rewritten in place while readers may re-read it: a read that finds it
truncated is retried after a full re-read (:func:`registry_errors`).
"""

from __future__ import annotations

import functools
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from serving.errors import StoreUnavailable

#: Feast's suffix for event timestamps in ``OnlineResponse.to_dict(include_event_timestamps=True)``.
TS_SUFFIX = "__ts"


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import redis.exceptions

        errors.append(redis.exceptions.RedisError)
    except ImportError:  # the Redis extra is optional
        pass
    return tuple(errors)


#: What a broken or unreachable online store raises through Feast.
STORE_ERRORS = _store_errors()


@functools.cache
def registry_errors() -> tuple[type[BaseException], ...]:
    """What reading a half-written Feast file registry raises (imported on first need:
    importing Feast takes seconds)."""
    from feast.errors import FeatureServiceNotFoundException, FeatureViewNotFoundException
    from google.protobuf.message import DecodeError

    return (FeatureViewNotFoundException, FeatureServiceNotFoundException, DecodeError)


REGISTRY_RETRIES = 3
REGISTRY_RETRY_SECONDS = 0.05


def reset_online_connection(store) -> None:
    """Make Feast open a new online-store connection on the next read.

    Feast's SQLite online store caches ``_conn`` forever; a connection that failed (file
    missing, replaced, unreadable) would fail every later request too.
    """
    online_store = store._get_provider().online_store
    conn = getattr(online_store, "_conn", None)
    if conn is not None:
        online_store._conn = None
        try:
            conn.close()
        except sqlite3.Error:
            pass


@dataclass
class OnlineVector:
    values: dict
    missing: list[str]
    stale: list[str]


class OnlineFeatures:
    def __init__(self, store, feature_service: str, features: Sequence[str], join_keys: Sequence[str],
                 request_time_field: str):
        self.store = store
        self.service = store.get_feature_service(feature_service)
        self.features = list(features)
        self.join_keys = list(join_keys)
        self.request_time_field = request_time_field
        batch_views = {v.name: v for v in store.list_feature_views()}
        #: TTL in seconds per batch view (0: no limit). On-demand views are computed per request.
        self.ttl = {
            p.name_to_use(): int(batch_views[p.name].ttl.total_seconds()) if batch_views[p.name].ttl else 0
            for p in self.service.feature_view_projections
            if p.name in batch_views
        }

    def _entity_row(self, entity: dict) -> dict:
        row = dict(entity)
        for key in self.join_keys:
            # Feast's online read raises TypeError on a null key; the offline join yields
            # nulls for it. An empty string matches no row either, so both sides agree.
            if row.get(key) is None:
                row[key] = ""
        return row

    def _read(self, rows: list[dict]) -> dict:
        for attempt in range(REGISTRY_RETRIES + 1):
            try:
                return self.store.get_online_features(
                    features=self.service, entity_rows=rows, full_feature_names=True
                ).to_dict(include_event_timestamps=True)
            except STORE_ERRORS as e:
                reset_online_connection(self.store)
                raise StoreUnavailable(f"online store unavailable: {type(e).__name__}: {e}") from e
            except registry_errors() as e:
                # Feast rewrites its file registry in place (truncate, then write), and
                # re-reads it whenever its mtime changes: a read that overlaps a write
                # (`materialize` records its progress there) sees a truncated registry and
                # may keep it cached. Wait, re-read it in full, and try again.
                if attempt == REGISTRY_RETRIES:
                    raise StoreUnavailable(f"feature registry unreadable: {type(e).__name__}: {e}") from e
                time.sleep(REGISTRY_RETRY_SECONDS * (attempt + 1))
                try:
                    self.store.refresh_registry()
                except registry_errors():
                    pass
        raise AssertionError("unreachable")

    def probe(self, entity: dict) -> None:
        """One real online read (the serving path) for a made-up entity; raises
        :class:`StoreUnavailable` when the store cannot answer."""
        self._read([self._entity_row(entity)])

    def lookup(self, entities: Sequence[dict]) -> list[OnlineVector]:
        response = self._read([self._entity_row(e) for e in entities])
        # Per feature: its values, and for batch views its timestamps and TTL (None: on-demand).
        columns = []
        for feature in self.features:
            view = feature.split("__", 1)[0]
            timed = view in self.ttl
            columns.append((feature, response[feature], response[feature + TS_SUFFIX] if timed else None,
                            self.ttl.get(view)))
        out = []
        for i, entity in enumerate(entities):
            as_of: datetime = entity[self.request_time_field]
            as_of_s = as_of.timestamp()
            values, missing, stale = {}, [], []
            for feature, column, stamps, ttl in columns:
                value = column[i]
                if stamps is not None:
                    # Feast reports 0 for a key it did not find (no row, so not stale).
                    ts = stamps[i]
                    if ts and (ts > as_of_s or (ttl and ts + ttl < as_of_s)):
                        value = None
                        stale.append(feature)
                values[feature] = value
                if value is None:
                    missing.append(feature)
            out.append(OnlineVector(values, missing, stale))
        return out
