"""Feast's file registry store, written atomically.

Feast's ``FileRegistryStore`` rewrites ``registry.db`` in place: it truncates the file, then
writes the new one. A server re-reading the registry meanwhile (Feast re-reads it when its
cache expires; `materialize` records its progress there) parses a truncated file and finds
no views. This store writes the same bytes to a temporary file and renames it into place
(``core.files.atomic_write``), so a reader sees the old registry or the new one, never a
part. Named in ``feature_store.yaml`` as ``registry: registry_store_type``; everything else is
Feast's store (``tests/feast_plugins/test_atomic_registry.py``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

from core.files import atomic_write


class AtomicFileRegistryStore(FileRegistryStore):
    def _write_registry(self, registry_proto: RegistryProto) -> None:
        # As FileRegistryStore._write_registry, but never a half-written file.
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(datetime.now(timezone.utc))
        atomic_write(self._filepath, registry_proto.SerializeToString(), durable=True)
