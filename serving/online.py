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
(:func:`reset_online_connection`). Redis clients reconnect by themselves. A registry
that cannot be read is a 503 too (:func:`registry_errors`); it is never half-written: the
file registry is written atomically (``feast_plugins/atomic_registry.py``).

The reads themselves are ``feast_plugins/online_read.py``: the packed store's direct read
(:class:`~feast_plugins.online_read.DirectRead`) where the store allows it, Feast's
``get_online_features`` otherwise, and on-demand views computed by Feast's own
transformations (:class:`~feast_plugins.online_read.RequestViews`).
"""

from __future__ import annotations

import sqlite3
from itertools import compress, repeat
from operator import is_
from typing import Sequence

from feast_plugins.online_read import (
    TS_SUFFIX,
    DirectRead,
    NotDirect,
    RequestViews,
    registry_errors,
    reset_online_connection,
)
from serving.errors import ServingError, StoreUnavailable


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


class OnlineVector:
    """One entity's served features: ``values`` (feature -> value, None where missing, in
    the model's order), and the ``missing`` and ``stale`` features by name.

    Built from a row (:meth:`from_row`) the dict is made only when asked for: the model
    input takes the row as it is (:meth:`row_for`)."""

    __slots__ = ("features", "row", "missing", "stale", "_values")

    def __init__(self, values: dict, missing: list[str], stale: list[str]):
        self.features, self.row = list(values), tuple(values.values())
        self.missing, self.stale, self._values = missing, stale, values

    @classmethod
    def from_row(cls, features: list[str], row: tuple, missing: list[str], stale: list[str]) -> "OnlineVector":
        vector = cls.__new__(cls)
        vector.features, vector.row, vector.missing, vector.stale, vector._values = features, row, missing, stale, None
        return vector

    @property
    def values(self) -> dict:
        if self._values is None:
            self._values = dict(zip(self.features, self.row))
        return self._values

    def row_for(self, features: list[str]) -> tuple:
        """The values in the order of ``features``."""
        if features is self.features or features == self.features:
            return self.row
        values = self.values
        return tuple(values[f] for f in features)

    def __eq__(self, other) -> bool:
        if not isinstance(other, OnlineVector):
            return NotImplemented
        return (self.values, self.missing, self.stale) == (other.values, other.missing, other.stale)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"OnlineVector(values={self.values!r}, missing={self.missing!r}, stale={self.stale!r})"


class OnlineFeatures:
    def __init__(self, store, feature_service: str, features: Sequence[str], join_keys: Sequence[str],
                 request_time_field: str, direct: bool = True):
        self.store = store
        self.service = store.get_feature_service(feature_service)
        #: The direct read path when the store allows it (else Feast's get_online_features).
        self.direct = DirectRead.for_store(store, self.service) if direct else None
        if self.direct is not None:
            self.on_demand = self.direct.on_demand
        else:
            # get_online_features computes pandas-mode views itself but drops python-mode
            # views' outputs under full feature names (a Feast 0.67 quirk): those are ours.
            try:
                self.on_demand = RequestViews(store, self.service, ("python",))
            except NotDirect as e:
                raise ServingError(f"FeatureService {feature_service!r}: {e}: Feast 0.67 drops its online "
                                   "outputs under full feature names") from None
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
        #: Per feature, once: (feature, whether its view is time-stamped, its TTL or None).
        #: Per time-stamped view, once: (its first feature, its TTL, the positions of its features).
        #: A view's features come from one row, so they share one event timestamp.
        views: dict[str, list[int]] = {}
        for i, feature in enumerate(self.features):
            view = feature.split("__", 1)[0]
            if view in self.ttl:
                views.setdefault(view, []).append(i)
        self._views = [(self.features[positions[0]], self.ttl[view], positions) for view, positions in views.items()]
        #: (positions, names) by the tuple of stale views (at most 2 ** views entries).
        self._stale_cache: dict[tuple[int, ...], tuple[list[int], list[str]]] = {}

    def _entity_row(self, entity: dict) -> dict:
        row = dict(entity)
        for key in self.join_keys:
            # Feast's online read raises TypeError on a null key; the offline join yields
            # nulls for it. An empty string matches no row either, so both sides agree.
            if row.get(key) is None:
                row[key] = ""
        return row

    def _read(self, rows: list[dict]) -> dict:
        try:
            if self.direct is not None:
                out = self.direct.read(rows)
            else:
                out = self.store.get_online_features(
                    features=self.service, entity_rows=rows, full_feature_names=True
                ).to_dict(include_event_timestamps=True)
        except STORE_ERRORS as e:
            if self.direct is not None:  # its own connections; Feast's is not used
                self.direct.reset()
            else:
                reset_online_connection(self.store)
            raise StoreUnavailable(f"online store unavailable: {type(e).__name__}: {e}") from e
        except registry_errors() as e:
            raise StoreUnavailable(f"feature registry unreadable: {type(e).__name__}: {e}") from e
        if self.on_demand:
            self.on_demand.add(rows, out, self.join_keys)
        return out

    def probe(self, entity: dict) -> None:
        """One real online read (the serving path) for a made-up entity; raises
        :class:`StoreUnavailable` when the store cannot answer."""
        self._read([self._entity_row(entity)])

    def lookup(self, entities: Sequence[dict]) -> list[OnlineVector]:
        response = self._read([self._entity_row(e) for e in entities])
        features = self.features
        rows = list(zip(*[response[f] for f in features])) if features else [()] * len(entities)
        # Per time-stamped view: its timestamps (Feast reports 0 for a key it did not find:
        # no row, so not stale), TTL and feature positions.
        views = [(k, response[first + TS_SUFFIX], ttl) for k, (first, ttl, _) in enumerate(self._views)]
        out = []
        for i, entity in enumerate(entities):
            as_of = entity[self.request_time_field].timestamp()
            values = rows[i]
            stale_views = tuple(k for k, stamps, ttl in views
                                if (ts := stamps[i]) and (ts > as_of or (ttl and ts + ttl < as_of)))
            stale: list[str] = []
            if stale_views:
                positions, names = self._stale_positions(stale_views)
                values = list(values)
                for j in positions:
                    values[j] = None
                stale = list(names)
            out.append(OnlineVector.from_row(features, tuple(values),
                                             list(compress(features, map(is_, values, repeat(None)))), stale))
        return out

    def _stale_positions(self, stale_views: tuple[int, ...]) -> tuple[list[int], list[str]]:
        """The feature positions and names (model order) of these time-stamped views."""
        known = self._stale_cache.get(stale_views)
        if known is None:
            positions = sorted(j for k in stale_views for j in self._views[k][2])
            known = self._stale_cache[stale_views] = (positions, [self.features[j] for j in positions])
        return known
