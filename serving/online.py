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

Each vector also carries the age of every time-stamped view's value at the request
instant (:class:`AgedVector`: ``ages``, in the order of ``age_batch.views.names``): request
time minus the value's event timestamp, in seconds; None when the store had no value for
the entity (or one stamped at the epoch, as the aircraft rows are: Feast reports 0 for
both). It is kept for expired values too (older than the TTL: not served, and the age
says by how much) and for values newer than the request (negative). The feature log and
``/metrics`` record it (``docs/freshness.md``). On the request path a lookup only keeps
its request instants and timestamps (:class:`AgeBatch`, shared by its vectors); the ages
are computed, with numpy, by whoever reads them: the metrics' flush thread and the feature
log's writer. Each view's freshness objective, a Feast tag (``freshness_p99``), is parsed
here, the one place (:func:`freshness_objective`).

The reads themselves are ``feast_plugins/``: the packed store's direct read
(:class:`~feast_plugins.packed_reader.DirectRead`) where the store allows it, Feast's
``get_online_features`` otherwise, and on-demand views computed by Feast's own
transformations (:class:`~feast_plugins.on_demand.RequestViews`).
"""

from __future__ import annotations

import re
import sqlite3
from itertools import compress, repeat
from operator import is_
from typing import NamedTuple, Sequence

from core.errors import ConfigError
from feast_plugins.on_demand import TS_SUFFIX, NotDirect, RequestViews
from feast_plugins.packed_reader import DirectRead
from feast_plugins.store import registry_errors, reset_online_connection
from serving.errors import ServingError, StoreUnavailable
from serving.vector import OnlineVector

#: The Feast tag of a feature view declaring the p99 age its served values should stay within.
FRESHNESS_TAG = "freshness_p99"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def freshness_objective(view) -> float | None:
    """The freshness objective of a Feast feature view in seconds: its ``freshness_p99`` tag,
    a positive number and a unit (``90m``, ``2h``, ``1.5d``; s, m, h or d), or ``none``.
    None: no objective (the tag is ``none`` or absent). :class:`ConfigError` names the view
    and the tag otherwise."""
    raw = (getattr(view, "tags", None) or {}).get(FRESHNESS_TAG)
    if raw is None or raw.strip().lower() == "none":
        return None
    match = _DURATION.fullmatch(raw.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"feature view {view.name!r}: tag {FRESHNESS_TAG}={raw!r} must be a positive duration "
                          "such as 90m, 2h or 1.5d (units s, m, h, d) or 'none'")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class AgeViews(NamedTuple):
    """The time-stamped views whose ages a vector carries, in order, with their freshness
    objectives (seconds; None: none). One object per :class:`OnlineFeatures`, shared by its
    vectors (the metrics notice a new one by identity)."""

    names: tuple[str, ...]
    objectives: tuple[float | None, ...]


class AgeBatch:
    """What one lookup knows of its values' ages: each entity's request instant and, per
    time-stamped view, the event timestamps Feast returned (0: none), kept as they are;
    :meth:`matrix` turns them into ages."""

    __slots__ = ("views", "as_of", "stamps")

    def __init__(self, views: AgeViews, as_of: list[float], stamps: list[list]):
        self.views, self.as_of, self.stamps = views, as_of, stamps

    def matrix(self, rows=None):
        """The ages (float64, one row per entity, one column per view; NaN: no value), of
        every entity or of the entity indices ``rows``."""
        import numpy as np

        n, k = len(self.as_of), len(self.views.names)
        stamps = np.array(self.stamps, dtype=np.float64).reshape(k, n)
        stamps[stamps == 0] = np.nan
        ages = (np.asarray(self.as_of, dtype=np.float64) - stamps).T
        return ages if rows is None else ages[np.asarray(rows, dtype=np.intp)]


class AgedVector(OnlineVector):
    """An :class:`OnlineVector` with the age of each time-stamped view's value (module doc):
    its lookup's :class:`AgeBatch` and its index there."""

    __slots__ = ("age_batch", "age_index")

    @property
    def ages(self) -> tuple:
        """The ages of this entity's values, in the order of ``age_batch.views.names`` (None: no value)."""
        return tuple(None if a != a else float(a) for a in self.age_batch.matrix([self.age_index])[0])


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
        self.direct = (DirectRead.for_store(store, self.service, request_time_field=request_time_field)
                       if direct else None)
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
        from feast_plugins.windows import is_windowed

        #: The service reads windowed views (their windows end at each row's request instant).
        self.windowed = any(is_windowed(v) for v in store.list_stream_feature_views()
                            if v.name in {p.name for p in self.service.feature_view_projections})
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
        #: Their names and freshness objectives, shared by every vector's ages.
        named = {p.name_to_use(): batch_views[p.name] for p in self.service.feature_view_projections
                 if p.name in batch_views}
        self.age_views = AgeViews(tuple(views), tuple(freshness_objective(named[view]) for view in views))
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
                out = self._feast_read(rows)
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

    def _feast_read(self, rows: list[dict]) -> dict:
        """Feast's ``get_online_features``; with windowed views, once per distinct request
        instant, each inside ``read_instant`` so the windows end there (not at the wall
        clock), the answers put back in the rows' order."""
        def read(part: list[dict]) -> dict:
            return self.store.get_online_features(
                features=self.service, entity_rows=part, full_feature_names=True
            ).to_dict(include_event_timestamps=True)

        if not self.windowed or not rows or self.request_time_field not in rows[0]:
            return read(rows)
        from feast_plugins.windowed_online import read_instant

        groups: dict = {}
        for i, row in enumerate(rows):
            groups.setdefault(row[self.request_time_field], []).append(i)
        out: dict = {}
        for instant, positions in groups.items():
            with read_instant(instant):
                part = read([rows[i] for i in positions])
            for name, values in part.items():
                column = out.setdefault(name, [None] * len(rows))
                for i, value in zip(positions, values):
                    column[i] = value
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
        as_ofs: list[float] = []
        batch = AgeBatch(self.age_views, as_ofs, [stamps for _, stamps, _ in views])
        new = AgedVector.from_row
        out = []
        for i, entity in enumerate(entities):
            as_of = entity[self.request_time_field].timestamp()
            as_ofs.append(as_of)
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
            vector = new(features, tuple(values), list(compress(features, map(is_, values, repeat(None)))), stale)
            vector.age_batch, vector.age_index = batch, i
            out.append(vector)
        return out

    def _stale_positions(self, stale_views: tuple[int, ...]) -> tuple[list[int], list[str]]:
        """The feature positions and names (model order) of these time-stamped views."""
        known = self._stale_cache.get(stale_views)
        if known is None:
            positions = sorted(j for k in stale_views for j in self._views[k].positions)
            known = self._stale_cache[stale_views] = (positions, [self.features[j] for j in positions])
        return known
