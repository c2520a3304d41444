"""The Parquet source tables' Feast data sources: one constructor for the definitions in
``feature_repo/`` and for the platform, and the binding of parsed definitions to a run.

A source table's path depends on ``DATA_DIR`` and its Feast class on ``PROFILE`` (the
Spark offline store needs a ``SparkSource``, the DuckDB store a ``FileSource``, over the
same Parquet file). The definitions call :func:`parquet_source` when they are imported;
its defaults read those two variables, exactly what the Feast CLI has when it imports
``feature_repo/`` (``feast -c feature_repo plan``), as its YAMLs do.

The platform does not rely on those import-time values: a process imports the
definitions once, and one process may apply them for several data directories and
profiles (tests, the replay's own data directory). :func:`bind_sources` gives a copy of
the parsed definitions whose Parquet sources read the run's directory under the run's
profile, rebuilt with the same constructor, so the CLI and the platform register equal
objects for the same ``DATA_DIR`` and ``PROFILE``. The module-level objects are never
changed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from core.errors import DefinitionError

#: The event-time column of every source table.
TIMESTAMP_FIELD = "event_timestamp"


def parquet_source(table: str, sources_dir: Path | str | None = None, profile: str | None = None):
    """The Feast data source of ``<sources_dir>/<table>.parquet``, named ``<table>_source``:
    a ``SparkSource`` for the ``spark`` profile, a ``FileSource`` otherwise. Defaults: the
    ``sources`` directory of ``DATA_DIR`` and ``PROFILE`` as :class:`core.settings.Settings`
    reads them (no other variable is read)."""
    if sources_dir is None or profile is None:
        from core.settings import Settings

        settings = Settings.from_env({name: os.environ[name] for name in ("DATA_DIR", "PROFILE")
                                      if name in os.environ})
        sources_dir = settings.sources if sources_dir is None else sources_dir
        profile = settings.profile if profile is None else profile
    path = str(Path(sources_dir) / f"{table}.parquet")
    if profile == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=f"{table}_source", path=path, file_format="parquet", timestamp_field=TIMESTAMP_FIELD)
    from feast import FileSource
    from feast.data_format import ParquetFormat

    return FileSource(name=f"{table}_source", path=path, timestamp_field=TIMESTAMP_FIELD, file_format=ParquetFormat())


def parquet_table(source) -> str | None:
    """The table ``source`` reads if :func:`parquet_source` built it (for any directory and
    profile); None for any other source."""
    path = getattr(source, "path", None)
    if not isinstance(path, str) or not path.endswith(".parquet"):
        return None
    table = Path(path).stem
    profile = "spark" if type(source).__name__ == "SparkSource" else "embedded"
    rebuilt = parquet_source(table, Path(path).parent, profile)
    return table if type(rebuilt) is type(source) and rebuilt == source else None


def bind_sources(contents, sources_dir: Path, profile: str):
    """A copy of ``contents`` (Feast's ``RepoContents``) whose Parquet sources read
    ``sources_dir`` under ``profile``: each such source rebuilt by :func:`parquet_source`,
    and every object that embeds one (push sources, feature views, feature services, ...)
    rebuilt from its proto with the new source in place (objects are matched by source
    name, which Feast keeps unique). Every other object is a copy too (from its proto):
    Feast's apply writes into the objects it registers (an on-demand view's entity columns,
    timestamps), and the module-level definitions must stay as imported."""
    names = [source.name for source in contents.data_sources]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DefinitionError(f"feature_repo/ defines several data sources named {repeated}: "
                              "Feast requires unique names")
    rebound = {}
    for source in contents.data_sources:
        table = parquet_table(source)
        if table is not None:
            rebound[source.name] = parquet_source(table, sources_dir, profile)
    with warnings.catch_warnings():
        # A feature view rebuilt from the proto of an unapplied view warns that its entity
        # columns are not filled in yet: apply fills them.
        warnings.simplefilter("ignore", UserWarning)
        return contents._replace(**{name: [_rebind(obj, rebound) for obj in getattr(contents, name)]
                                    for name in contents._fields})


def _rebind(obj, rebound: dict):
    from feast.data_source import DataSource

    if isinstance(obj, DataSource) and obj.name in rebound:
        return rebound[obj.name]
    proto = obj.to_proto()
    _replace_embedded(proto, rebound)
    # DataSource.from_proto picks the source's class (e.g. PushSource) from the proto.
    return (DataSource if isinstance(obj, DataSource) else type(obj)).from_proto(proto)


def _replace_embedded(message, rebound: dict) -> bool:
    """Replace, anywhere inside ``message``, each DataSource message named in ``rebound``
    by that source's proto (as Feast embeds it: with its class name where the old one had
    it). Whether anything was replaced."""
    changed = False
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type != field.TYPE_MESSAGE:
                continue
            items = list(value.values())
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if item.DESCRIPTOR.full_name == "feast.core.DataSource" and item.name in rebound:
                new = rebound[item.name]
                proto = new.to_proto()
                if item.data_source_class_type:
                    proto.data_source_class_type = f"{type(new).__module__}.{type(new).__name__}"
                item.CopyFrom(proto)
                changed = True
            else:
                changed = _replace_embedded(item, rebound) or changed
    return changed
