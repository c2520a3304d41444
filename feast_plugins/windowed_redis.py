"""Feast's Redis online store, with windowed views (``windowed_online.py``) held in it too.

Named in ``feature_repo/feature_store.redis.yaml`` and ``feature_store.spark.yaml``::

    online_store:
      type: feast_plugins.windowed_redis.WindowedRedisOnlineStore
      connection_string: ...

Every view that is not windowed is the stock :class:`RedisOnlineStore`'s, unchanged (its
keys, hashes and reads). A windowed view keeps one Redis string per (view, entity key):
``<project>:windowed:<view>:`` followed by Feast's serialization of the entity key, holding
the key's state (``windowed_online.Layout.encode``). Why not the stock hash per entity:
a state is read, merged and written back by every push, and a plain string under its own
key is what ``WATCH``/``MULTI`` guard.

**Atomic pushes.** :meth:`write_events` writes every view's states of a batch in one
``MULTI``/``EXEC`` transaction after ``WATCH`` ing every key it read: a concurrent writer
makes it start over (:data:`RETRIES`), a failure writes nothing, and readers see all of a
batch or none of it.

**Reads.** Through Feast's ``get_online_features`` (:meth:`online_read`, and the batched
read :meth:`_read_features_per_fv`, which hands windowed views to :meth:`online_read`), at
``windowed_online.read_instant``'s instant or the wall clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional, Sequence

from feast.feature_view import FeatureView
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.repo_config import RepoConfig

from feast_plugins import packed_layout, windowed_online

#: How many times a push starts over when another writer changed a key it read.
RETRIES = 20


class WindowedRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """The stock Redis settings."""

    type: Literal["feast_plugins.windowed_redis.WindowedRedisOnlineStore"] = (  # type: ignore[assignment]
        "feast_plugins.windowed_redis.WindowedRedisOnlineStore"
    )


def _prefix(config: RepoConfig, view: FeatureView) -> bytes:
    return f"{config.project}:windowed:{view.name}:".encode()


class WindowedRedisOnlineStore(RedisOnlineStore):
    """Redis, with windowed views' states (see the module doc)."""

    def _keys(self, config: RepoConfig, view: FeatureView, serialized: Sequence[bytes]) -> list[bytes]:
        prefix = _prefix(config, view)
        return [prefix + key for key in serialized]

    def online_write_batch(self, config: RepoConfig, table: FeatureView, data, progress) -> None:
        if windowed_online.is_windowed(table):
            raise windowed_online.EventError(windowed_online.NOT_ROWS.format(view=table.name))
        return super().online_write_batch(config, table, data, progress)

    def online_read(self, config: RepoConfig, table: FeatureView, entity_keys, requested_features=None):
        if not windowed_online.is_windowed(table):
            return super().online_read(config, table, entity_keys, requested_features)
        version = config.entity_key_serialization_version
        keys = self._keys(config, table, [packed_layout.serialize_key(k, version) for k in entity_keys])
        blobs = self._get_client(config.online_store).mget(keys) if keys else []
        return windowed_online.feast_read(table, entity_keys, [None if b is None else (0, b) for b in blobs])

    def _read_features_per_fv(self, config, grouped_refs, join_key_values, entity_name_to_join_key_map,
                              online_features_response, full_feature_names: bool,
                              include_feature_view_version_metadata: bool) -> None:
        """The stock batched read for the views that are not windowed; windowed ones through
        :meth:`online_read`, as Feast's generic read does."""
        from feast import utils

        plain = [(t, f) for t, f in grouped_refs if not windowed_online.is_windowed(t)]
        if plain:
            super()._read_features_per_fv(config, plain, join_key_values, entity_name_to_join_key_map,
                                          online_features_response, full_feature_names,
                                          include_feature_view_version_metadata)
        for table, requested in grouped_refs:
            if not windowed_online.is_windowed(table):
                continue
            values, idxs, output_len = utils._get_unique_entities(table, join_key_values,
                                                                  entity_name_to_join_key_map)
            rows = self.online_read(config, table, utils._get_entity_key_protos(values), requested)
            utils._populate_response_from_feature_data(requested, rows, idxs, online_features_response,
                                                       full_feature_names, table, output_len,
                                                       include_feature_view_version_metadata)

    def write_events(self, config: RepoConfig, batches: Sequence[tuple[FeatureView, Any]],
                     until: Optional[datetime] = None) -> None:
        """As ``PackedSqliteOnlineStore.write_events``: every view's states of the batch in one
        ``MULTI``/``EXEC``, after ``WATCH`` on every key read."""
        import redis

        from feast_plugins.packed_sqlite_store import _arrow_keys

        version = config.entity_key_serialization_version
        client = self._get_client(config.online_store)
        work = []
        for view, data in batches:
            layout = windowed_online.layout_of(view)
            data = windowed_online.keyed(layout, data)
            if not data.num_rows and until is None:
                continue
            serialized = _arrow_keys(view, data, version) if data.num_rows else []
            grouped = windowed_online.events_by_key(layout, data, serialized)
            prefix = _prefix(config, view)
            if until is None:
                merge = windowed_online.merger(layout, grouped)
            else:
                merge = windowed_online.rebuilder(layout, grouped, windowed_online.micros(until))
            work.append((prefix, grouped, merge, until is not None))
        if not work:
            return
        for _attempt in range(RETRIES):
            with client.pipeline(transaction=True) as pipe:
                try:
                    plan = []
                    for prefix, grouped, merge, everything in work:
                        keys = list(grouped)
                        if everything:  # a materialization: every stored key of the view too
                            stored = [k[len(prefix):] for k in client.scan_iter(match=_glob(prefix), count=1000)]
                            keys = list(dict.fromkeys([*stored, *keys]))
                        plan.append((prefix, keys, merge))
                    watched = [prefix + key for prefix, keys, _ in plan for key in keys]
                    if watched:
                        pipe.watch(*watched)
                    blobs = iter(pipe.mget(watched) if watched else [])
                    writes, deletes = {}, []
                    for prefix, keys, merge in plan:
                        for key in keys:
                            merged = merge(key, next(blobs))
                            if merged is None:
                                deletes.append(prefix + key)
                            else:
                                writes[prefix + key] = merged[1]
                    pipe.multi()
                    if writes:
                        pipe.mset(writes)
                    if deletes:
                        pipe.delete(*deletes)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise windowed_online.EventError(f"windowed views {[w[0].decode() for w in work]}: other writers kept "
                                         f"changing the same keys; {RETRIES} attempts, nothing written")

    def _delete_windowed(self, config: RepoConfig, view: FeatureView) -> None:
        client = self._get_client(config.online_store)
        keys = list(client.scan_iter(match=_glob(_prefix(config, view)), count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])

    def delete_table(self, config: RepoConfig, table: FeatureView):
        if windowed_online.is_windowed(table):
            return self._delete_windowed(config, table)
        return super().delete_table(config, table)

    def update(self, config: RepoConfig, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep,
               partial: bool):
        for view in tables_to_delete:
            if windowed_online.is_windowed(view):
                self._delete_windowed(config, view)
        super().update(config, [v for v in tables_to_delete if not windowed_online.is_windowed(v)],
                       tables_to_keep, entities_to_delete, entities_to_keep, partial)

    def teardown(self, config: RepoConfig, tables, entities):
        for view in tables:
            if windowed_online.is_windowed(view):
                self._delete_windowed(config, view)
        super().teardown(config, [v for v in tables if not windowed_online.is_windowed(v)], entities)


def _glob(prefix: bytes) -> bytes:
    """A SCAN pattern matching the keys under ``prefix`` (its glob characters escaped)."""
    out = bytearray()
    for b in prefix:
        if b in b"*?[]\\":
            out += b"\\"
        out.append(b)
    return bytes(out) + b"*"
