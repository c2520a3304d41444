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

The reads themselves are ``feast_plugins/``: the packed store's direct read
(:class:`~feast_plugins.packed_reader.DirectRead`) where the store allows it, Feast's
``get_online_features`` otherwise, and on-demand views computed by Feast's own
transformations (:class:`~feast_plugins.on_demand.RequestViews`).
"""

from __future__ import annotations

import sqlite3
from itertools import compress, repeat
from operator import is_
from typing import NamedTuple, Sequence

from feast_plugins.on_demand import TS_SUFFIX, NotDirect, RequestViews
from feast_plugins.packed_reader import DirectRead
from feast_plugins.store import registry_errors, reset_online_connection
from serving.errors import ServingError, StoreUnavailable
from serving.vector import OnlineVector


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


class TimedView(NamedTuple):
    """A time-stamped view of the model's FeatureService: its features come from one row,
    so they share one event timestamp, read under the name of its first feature."""

    first_feature: str
    #: Seconds; 0: no limit.
    ttl: int
    #: Where its features stand in the model's feature list.
    positions: list[int]


class OnlineFeatures:
    """The model's features for a batch of entities, as the offline join would give them
    at each entity's request time (the module's rule), read through the direct path or
    Feast's ``get_online_features``."""

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
        views: dict[str, list[int]] = {}
        for i, feature in enumerate(self.features):
            view = feature.split("__", 1)[0]
            if view in self.ttl:
                views.setdefault(view, []).append(i)
        #: The time-stamped views, worked out once; on-demand views are computed per request.
        self._views = [TimedView(self.features[positions[0]], self.ttl[view], positions)
                       for view, positions in views.items()]
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
        """One vector per entity, in order, its stale values dropped (the module's rule)."""
        response = self._read([self._entity_row(e) for e in entities])
        features = self.features
        rows = list(zip(*[response[f] for f in features])) if features else [()] * len(entities)
        # Per time-stamped view: its index, its timestamps (Feast reports 0 for a key it did
        # not find: no row, so not stale) and its TTL.
        views = [(k, response[view.first_feature + TS_SUFFIX], view.ttl) for k, view in enumerate(self._views)]
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
            positions = sorted(j for k in stale_views for j in self._views[k].positions)
            known = self._stale_cache[stale_views] = (positions, [self.features[j] for j in positions])
        return known
