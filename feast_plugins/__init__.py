"""Everything that plugs into or bypasses Feast, in one place.

Named in the ``feature_store*.yaml`` files (Feast loads them):

* ``asof_offline_store``: the offline store, point-in-time joins as DuckDB ASOF JOINs;
* ``packed_sqlite_store``: the online store (one row per entity per view) and the batch
  engine that materializes into it from Arrow;
* ``atomic_registry``: the file registry store, written atomically.

Used by the platform:

* ``packed_layout``: the packed store's tables, entity keys, bytes and limits (alone);
* ``packed_reader``: the server's direct read of the packed store;
* ``on_demand``: on-demand views computed by their own Feast transformations;
* ``push_writer``: rows written online through push sources, checked first;
* ``sources``: the Parquet sources' constructor, and binding definitions to a run;
* ``store``: opening the feature store, applying ``feature_repo/``, the calls past Feast's API.

Every private or internal Feast API the project touches is listed in ``compat.py``; the
tests beside these modules (``tests/feast_plugins/``) compare each with stock Feast.
"""
