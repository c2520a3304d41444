"""Every private or internal Feast API the project touches, as data.

Feast's public API is what ``import feast`` exports plus the documented plugin interfaces
(``OnlineStore``, ``OfflineStore``, ``RegistryStore``, ``ComputeEngine`` and their
documented methods). Everything else this project calls, overrides or reads is listed in
:data:`INTERNALS`: where it lives in Feast, where we use it and why. Only ``feast_plugins/``
touches Feast internals in the platform; the tests and benchmarks that do are named too.

On a Feast upgrade: run ``pytest tests/feast_plugins/test_compat.py`` first. It has one
test per entry, checking that the attribute still exists where we expect it (and still
takes the parameters we pass or override); a failure names the entry, the file that uses
it and why. Then run the rest of ``tests/feast_plugins/``: the differential tests there
compare each plugin with stock Feast (answers, bytes, training sets), which catches a
changed *behaviour* that this list cannot. Update an entry's ``module``/``name`` when
Feast moves something, and delete entries the code no longer needs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeastInternal:
    """One Feast internal the project depends on."""

    #: The Feast module it lives in, e.g. ``feast.feature_store``.
    module: str
    #: The attribute path inside the module, e.g. ``FeatureStore._get_provider``.
    name: str
    #: The files that use it (relative to the repository root).
    used_by: tuple[str, ...]
    #: What it is used for.
    why: str
    #: Parameters we pass by name or whose position we rely on, or that our override takes.
    parameters: tuple[str, ...] = ()
    #: An attribute set on instances (``self.<last part> = ...`` in the class's code), not on the class.
    instance: bool = False

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


_STORE = "feast_plugins/packed_sqlite_store.py"
_LAYOUT = "feast_plugins/packed_layout.py"
_READER = "feast_plugins/packed_reader.py"
_ON_DEMAND = "feast_plugins/on_demand.py"
_ASOF = "feast_plugins/asof_offline_store.py"
_OPEN = "feast_plugins/store.py"
_PUSH = "feast_plugins/push_writer.py"
_SOURCES = "feast_plugins/sources.py"
_REGISTRY = "feast_plugins/atomic_registry.py"
_SPARK = "feast_plugins/spark_offline_store.py"
_SPARK_MOD = "feast.infra.offline_stores.contrib.spark_offline_store.spark"
_ENGINE = "feast_plugins/spark_engine.py"
_SPARK_ENGINE = "feast.infra.compute_engines.spark"

INTERNALS: tuple[FeastInternal, ...] = (
    # -- the feature store's provider and online store -------------------------------------
    FeastInternal("feast.feature_store", "FeatureStore._get_provider",
                  (_OPEN, _READER, _PUSH, "tests/feast_plugins/test_packed_sqlite_store.py",
                   "tests/training/test_training_set_pit.py", "bench/bench_serving.py"),
                  "the provider, to reach its online store (direct read, clear, reset) and ingest_df (push)"),
    FeastInternal("feast.infra.passthrough_provider", "PassthroughProvider.online_store", (_OPEN, _READER, _PUSH),
                  "the online store instance behind a FeatureStore"),
    FeastInternal("feast.infra.passthrough_provider", "PassthroughProvider.ingest_df", (_PUSH,),
                  "the write store.push(..., to=PushMode.ONLINE) ends in, called without its registry lookups",
                  parameters=("feature_view", "df")),
    FeastInternal("feast.infra.online_stores.online_store", "OnlineStore.update", (_OPEN,),
                  "drop and recreate views' online tables (clear_online), called outside apply",
                  parameters=("config", "tables_to_delete", "tables_to_keep", "entities_to_delete",
                              "entities_to_keep", "partial")),
    # -- the SQLite online store the packed store extends ------------------------------------
    FeastInternal("feast.infra.online_stores.sqlite", "SqliteOnlineStore._conn", (_STORE, _OPEN),
                  "the cached connection: PRAGMA journal_mode and synchronous on a fresh one; dropped after a "
                  "failed read"),
    FeastInternal("feast.infra.online_stores.sqlite", "SqliteOnlineStore._get_conn",
                  (_STORE, "tests/feast_plugins/test_packed_sqlite_store.py"),
                  "overridden to set PRAGMA journal_mode and synchronous; the store's connection",
                  parameters=("config",)),
    FeastInternal("feast.infra.online_stores.sqlite", "SqliteOnlineStore._get_db_path", (_READER,),
                  "the store's file, which the direct read opens read-only per thread", parameters=("config",)),
    FeastInternal("feast.infra.online_stores.sqlite", "SqliteOnlineStoreConfig", (_STORE,),
                  "the packed store's settings extend the stock store's (path, vector_enabled)"),
    # -- the local compute engine the packed engine extends ----------------------------------
    FeastInternal("feast.infra.compute_engines.local.compute", "LocalComputeEngine._materialize_one", (_STORE,),
                  "overridden: the stock body with the packed feature builder", parameters=("registry", "task")),
    FeastInternal("feast.infra.compute_engines.local.compute", "LocalComputeEngine.get_execution_context", (_STORE,),
                  "called by the overridden _materialize_one", parameters=("registry", "task")),
    FeastInternal("feast.infra.compute_engines.local.compute", "LocalComputeEngine._get_backend", (_STORE,),
                  "called by the overridden _materialize_one", parameters=("context",)),
    FeastInternal("feast.infra.compute_engines.local.compute", "LocalComputeEngineConfig", (_STORE,),
                  "the packed engine's settings are the local engine's"),
    FeastInternal("feast.infra.compute_engines.local.feature_builder", "LocalFeatureBuilder.build_output_nodes",
                  (_STORE,), "overridden to build the packed output node", parameters=("view", "input_node")),
    FeastInternal("feast.infra.compute_engines.local.feature_builder", "LocalFeatureBuilder.__init__", (_STORE,),
                  "the packed builder is built as the stock one", parameters=("registry", "task", "backend")),
    FeastInternal("feast.infra.compute_engines.feature_builder", "FeatureBuilder.dag_root", (_STORE, _ENGINE),
                  "the view the output node writes (dag_root.view)", instance=True),
    FeastInternal("feast.infra.compute_engines.feature_builder", "FeatureBuilder.nodes", (_STORE, _ENGINE),
                  "the builder's node list the output node joins", instance=True),
    FeastInternal("feast.infra.compute_engines.local.nodes", "LocalOutputNode.execute", (_STORE,),
                  "overridden to write Arrow into the packed store", parameters=("context",)),
    FeastInternal("feast.infra.compute_engines.local.nodes", "LocalOutputNode.get_single_table", (_STORE,),
                  "the Arrow table the output node receives", parameters=("context",)),
    FeastInternal("feast.infra.compute_engines.local.nodes", "LocalOutputNode.feature_view", (_STORE,),
                  "the view the output node writes", instance=True),
    FeastInternal("feast.infra.compute_engines.dag.context", "ExecutionContext.online_store", (_STORE,),
                  "the online store the output node writes to", instance=True),
    FeastInternal("feast.infra.compute_engines.dag.context", "ExecutionContext.repo_config", (_STORE, _ENGINE),
                  "the RepoConfig handed to online_write_arrow", instance=True),
    FeastInternal("feast.infra.compute_engines.dag.context", "ExecutionContext.node_outputs", (_STORE,),
                  "where the output node records its result", instance=True),
    FeastInternal("feast.infra.compute_engines.local.arrow_table_value", "ArrowTableValue", (_STORE,),
                  "the output node's result", parameters=("data",)),
    FeastInternal("feast.infra.compute_engines.local.job", "LocalMaterializationJob", (_STORE,),
                  "what _materialize_one returns", parameters=("job_id", "status", "error")),
    FeastInternal("feast.infra.common.materialization_job", "MaterializationJobStatus.SUCCEEDED", (_STORE, _ENGINE),
                  "a materialization job's outcome"),
    FeastInternal("feast.infra.common.materialization_job", "MaterializationJobStatus.ERROR", (_STORE, _ENGINE),
                  "a materialization job's outcome"),
    FeastInternal("feast.utils", "_convert_arrow_to_proto", ("tests/feast_plugins/test_packed_sqlite_store.py",),
                  "the stock engine's conversion the packed engine skips; the test's reference for its bytes",
                  parameters=("table", "feature_view", "join_keys")),
    # -- values and entity keys ------------------------------------------------------------
    FeastInternal("feast.infra.key_encoding_utils", "serialize_entity_key", (_LAYOUT,),
                  "Feast's entity key bytes (the packed tables' keys; encode_entity_keys writes version 3 itself)",
                  parameters=("entity_key", "entity_key_serialization_version")),
    FeastInternal("feast.type_map", "python_values_to_proto_values", (_LAYOUT, _ON_DEMAND),
                  "Feast's conversion of Python values to Value protos (keys, request data)",
                  parameters=("values", "feature_type")),
    FeastInternal("feast.type_map", "feast_value_type_to_python_type", (_LAYOUT, _ON_DEMAND),
                  "Feast's conversion of a Value proto back to Python, as its online response does"),
    FeastInternal("feast.type_map", "NULL_TIMESTAMP_INT_VALUE", (_ON_DEMAND,),
                  "the timestamp Feast's response turns into None"),
    # -- on-demand views -------------------------------------------------------------------
    FeastInternal("feast.on_demand_feature_view", "OnDemandFeatureView._preprocess_arrow_table", (_ASOF,),
                  "transform_arrow's own pre-processing, for a python-mode view given only its declared columns"),
    FeastInternal("feast.on_demand_feature_view", "OnDemandFeatureView._postprocess_arrow_table", (_ASOF,),
                  "transform_arrow's own post-processing (names, full feature names)"),
    FeastInternal("feast.on_demand_feature_view", "OnDemandFeatureView.get_requested_odfvs", (_ASOF,),
                  "the on-demand views a retrieval asks for", parameters=("feature_refs", "project", "registry")),
    FeastInternal("feast.on_demand_feature_view", "OnDemandFeatureView.singleton", (_ON_DEMAND,),
                  "whether a python-mode view takes one row at a time", instance=True),
    FeastInternal("feast.transformation.python_transformation", "PythonTransformation.udf", (_ASOF,),
                  "the view's function, called on the declared columns", instance=True),
    FeastInternal("feast.transformation.python_transformation", "PythonTransformation.transform", (_ON_DEMAND,),
                  "a python-mode view's function on a dict of lists (online)", parameters=("input_dict",)),
    FeastInternal("feast.transformation.python_transformation", "PythonTransformation.transform_singleton",
                  (_ON_DEMAND,), "a singleton python-mode view's function", parameters=("input_dict",)),
    FeastInternal("feast.transformation.pandas_transformation", "PandasTransformation.transform", (_ON_DEMAND,),
                  "a pandas-mode view's function on a DataFrame (online)", parameters=("inputs",)),
    # -- the offline store the ASOF store extends -----------------------------------------
    FeastInternal("feast.infra.offline_stores.offline_store", "RetrievalJob._to_arrow_internal",
                  (_ASOF, "tests/serving/test_direct_read.py"),
                  "overridden: the joined rows, before Feast applies on-demand views", parameters=("timeout",)),
    FeastInternal("feast.infra.offline_stores.offline_store", "RetrievalJob._to_df_internal", (_ASOF,),
                  "overridden: the joined rows as a DataFrame", parameters=("timeout",)),
    FeastInternal("feast.infra.offline_stores.offline_store", "RetrievalMetadata", (_ASOF,),
                  "a job's metadata, which Feast's to_arrow reads to pick on-demand columns",
                  parameters=("features", "keys", "min_event_timestamp", "max_event_timestamp")),
    FeastInternal("feast.infra.offline_stores.offline_utils", "DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL", (_ASOF,),
                  "the entity set's timestamp column name Feast prefers"),
    FeastInternal("feast.infra.offline_stores.duckdb", "DuckDBOfflineStore.get_historical_features", (_ASOF,),
                  "the stock join, for the cases the ASOF store does not plan",
                  parameters=("config", "feature_views", "feature_refs", "entity_df", "registry", "project",
                              "full_feature_names")),
    FeastInternal("feast.infra.offline_stores.duckdb", "DuckDBOfflineStoreConfig", (_ASOF, _OPEN),
                  "the ASOF store's settings extend it; the stock store for comparisons"),
    FeastInternal("feast.repo_config", "RepoConfig._offline_store",
                  (_OPEN, "bench/bench_training_set.py", "tests/feast_plugins/test_asof_offline_store.py",
                   "tests/profiles/test_spark_profile.py"),
                  "replaced to open the same repository with the stock offline store (or the staged Spark store)",
                  instance=True),
    FeastInternal("feast.repo_config", "RepoConfig._online_store", ("tests/feast_plugins/test_packed_sqlite_store.py",),
                  "replaced to open the same repository with the stock SQLite online store", instance=True),
    # -- views without entities -------------------------------------------------------------
    FeastInternal("feast.feature_view", "FeatureView.schema", ("feast_plugins/schema_order.py",),
                  "replaced by a property in declaration order (stock: set order, per hash seed)"),
    FeastInternal("feast.feature_view", "DUMMY_ENTITY_ID", (_ASOF, _LAYOUT),
                  "the placeholder join key Feast gives a view without entities (added on pull, "
                  "dropped from the point-in-time join, the key its online row is stored under)"),
    FeastInternal("feast.feature_view", "DUMMY_ENTITY_VAL", (_ASOF, _LAYOUT),
                  "the placeholder key's value"),
    FeastInternal("feast.infra.offline_stores.ibis", "IbisRetrievalJob.table", (_ASOF,),
                  "the stock DuckDB pull's ibis table, extended with the placeholder key column", instance=True),
    # -- the registry ---------------------------------------------------------------------
    FeastInternal("feast.infra.registry.file", "FileRegistryStore._write_registry", (_REGISTRY,),
                  "overridden to write the registry atomically", parameters=("registry_proto",)),
    FeastInternal("feast.infra.registry.file", "FileRegistryStore._filepath", (_REGISTRY,),
                  "the registry file the override writes", instance=True),
    FeastInternal("feast.infra.registry.registry", "Registry._registry_store",
                  ("tests/feast_plugins/test_atomic_registry.py",),
                  "the registry store a FeatureStore uses (the test checks it is the atomic one)", instance=True),
    # -- definitions and apply ------------------------------------------------------------
    FeastInternal("feast.repo_config", "load_repo_config", (_OPEN,),
                  "the RepoConfig of a profile's YAML", parameters=("repo_path", "fs_yaml_file")),
    FeastInternal("feast.repo_operations", "parse_repo", (_OPEN,),
                  "feature_repo/'s objects, found as the Feast CLI finds them", parameters=("repo_root",)),
    FeastInternal("feast.repo_operations", "apply_total_with_repo_instance", (_OPEN,),
                  "feast apply of given objects (the definitions bound to the run's sources)",
                  parameters=("store", "project_name", "registry", "repo", "skip_source_validation")),
    FeastInternal("feast.repo_contents", "RepoContents._replace", (_SOURCES,),
                  "a copy of the parsed definitions with rebound sources (RepoContents is a NamedTuple)"),
    FeastInternal("feast.repo_contents", "RepoContents._fields", (_SOURCES,),
                  "the kinds of objects in the parsed definitions"),
    FeastInternal("feast.infra.offline_stores.contrib.spark_offline_store.spark_source", "SparkSource", (_SOURCES,),
                  "the spark profile's source class (a contrib module path)",
                  parameters=("name", "path", "file_format", "timestamp_field")),
    # -- the Spark offline store the project's Spark store extends ----------------------------
    FeastInternal(_SPARK_MOD, "SparkOfflineStore.get_historical_features", (_SPARK, "feast_plugins/spark_entities.py"),
                  "the stock Spark join, for the cases the project's Spark store does not plan (entity "
                  "frames staged by spark_entities)",
                  parameters=("config", "feature_views", "feature_refs", "entity_df", "registry", "project",
                              "full_feature_names", "filter_by_created_timestamp")),
    FeastInternal(_SPARK_MOD, "SparkOfflineStoreConfig", (_SPARK, "feast_plugins/spark_entities.py"),
                  "the project's Spark store's settings extend it"),
    FeastInternal(_SPARK_MOD, "get_spark_session_or_start_new_with_repoconfig",
                  (_SPARK, "feast_plugins/spark_entities.py"),
                  "the Spark session the stock store uses (the active one, else one from spark_conf)",
                  parameters=("store_config",)),
    FeastInternal("feast.infra.offline_stores.offline_utils", "infer_event_timestamp_from_entity_df",
                  ("feast_plugins/spark_entities.py",),
                  "which entity column Feast takes as the timestamp (its range checks the staged upload)",
                  parameters=("entity_schema",)),
    FeastInternal("feast.infra.offline_stores.contrib.spark_offline_store.spark_source",
                  "SparkSource.get_table_query_string", (_SPARK,),
                  "a SparkSource (path, table or query) as a relation Spark SQL reads"),
    # -- the Spark engine the project's engine extends (spark_engine.py) ----------------------
    FeastInternal(f"{_SPARK_ENGINE}.compute", "SparkComputeEngine._materialize_one", (_ENGINE,),
                  "overridden: the stock body with the Redis writer's feature builder",
                  parameters=("registry", "task", "from_offline_store")),
    FeastInternal(f"{_SPARK_ENGINE}.compute", "SparkComputeEngine._get_feature_view_spark_session", (_ENGINE,),
                  "the Spark session a view's materialization runs in", parameters=("feature_view",)),
    FeastInternal(f"{_SPARK_ENGINE}.compute", "SparkComputeEngine.get_execution_context", (_ENGINE,),
                  "called by the overridden _materialize_one", parameters=("registry", "task")),
    FeastInternal(f"{_SPARK_ENGINE}.compute", "SparkComputeEngineConfig", (_ENGINE,),
                  "the engine's settings are stock spark.engine's"),
    FeastInternal(f"{_SPARK_ENGINE}.feature_builder", "SparkFeatureBuilder.__init__", (_ENGINE,),
                  "the Redis writer's builder is built as the stock one",
                  parameters=("registry", "spark_session", "task")),
    FeastInternal(f"{_SPARK_ENGINE}.feature_builder", "SparkFeatureBuilder.build_output_nodes", (_ENGINE,),
                  "overridden to build the Redis write node", parameters=("view", "input_node")),
    FeastInternal(f"{_SPARK_ENGINE}.nodes", "SparkWriteNode.execute", (_ENGINE,),
                  "overridden (and called for what the writer does not cover)", parameters=("context",)),
    FeastInternal(f"{_SPARK_ENGINE}.nodes", "SparkWriteNode.feature_view", (_ENGINE,),
                  "the view the write node writes", instance=True),
    FeastInternal(f"{_SPARK_ENGINE}.job", "SparkMaterializationJob", (_ENGINE,),
                  "what _materialize_one returns", parameters=("job_id", "status", "error")),
    FeastInternal("feast.infra.compute_engines.dag.value", "DAGValue", (_ENGINE,),
                  "the write node's result, as stock's", parameters=("data", "format", "metadata")),
    FeastInternal("feast.infra.compute_engines.dag.model", "DAGFormat.SPARK", (_ENGINE,),
                  "the format of the write node's result"),
    FeastInternal("feast.infra.online_stores.redis", "RedisType.redis", (_ENGINE,),
                  "a plain Redis (the writer's pipelines; a cluster or sentinel is left to stock)"),
    FeastInternal("feast.infra.common.serde", "SerializedArtifacts.serialize", (_ENGINE,),
                  "the view, stores and config shipped to the executors, as stock ships them",
                  parameters=("feature_view", "repo_config")),
    FeastInternal("feast.infra.common.serde", "SerializedArtifacts.unserialize", (_ENGINE,),
                  "on an executor, once per partition (stock: once per Arrow batch)"),
    FeastInternal("feast.infra.online_stores.redis", "_versioned_fv_name", (_ENGINE,),
                  "the view name in the Redis fields, as online_write_batch names it", parameters=("table", "config")),
    FeastInternal("feast.infra.online_stores.helpers", "_mmh3", (_ENGINE,),
                  "a feature's Redis hash field, as online_write_batch hashes it", parameters=("key",)),
    FeastInternal("feast.infra.online_stores.redis", "RedisOnlineStore.online_write_batch", (_ENGINE,),
                  "what the Spark engine's writer writes the same commands as (and the fallback per batch)",
                  parameters=("config", "table", "data", "progress")),
    FeastInternal("feast.utils", "_convert_arrow_to_proto", (_ENGINE,),
                  "stock's conversion, for a batch the Spark engine's writer does not encode",
                  parameters=("table", "feature_view", "join_keys")),
    # -- windowed views online (windowed_online.py; the Redis store, windowed_redis.py) ------
    FeastInternal("feast.infra.online_stores.redis", "RedisOnlineStore._read_features_per_fv",
                  ("feast_plugins/windowed_redis.py",),
                  "overridden: the stock batched read for plain views, windowed views through online_read",
                  parameters=("config", "grouped_refs", "join_key_values", "entity_name_to_join_key_map",
                              "online_features_response", "full_feature_names",
                              "include_feature_view_version_metadata")),
    FeastInternal("feast.infra.online_stores.redis", "RedisOnlineStore._get_client",
                  ("feast_plugins/windowed_redis.py", _ENGINE),
                  "the store's Redis client (windowed states; the Spark engine's writes)",
                  parameters=("online_store_config",)),
    FeastInternal("feast.infra.online_stores.redis", "RedisOnlineStoreConfig", ("feast_plugins/windowed_redis.py",),
                  "the windowed Redis store's settings are the stock store's"),
    FeastInternal("feast.utils", "_get_unique_entities", ("feast_plugins/windowed_redis.py",),
                  "a view's distinct entity keys in a read, as the generic read groups them",
                  parameters=("table", "join_key_values", "entity_name_to_join_key_map")),
    FeastInternal("feast.utils", "_get_entity_key_protos", ("feast_plugins/windowed_redis.py",),
                  "EntityKey protos of those keys"),
    FeastInternal("feast.utils", "_populate_response_from_feature_data", ("feast_plugins/windowed_redis.py",),
                  "a windowed view's values into Feast's online response, as the generic read does"),
    FeastInternal("feast.infra.common.materialization_job", "MaterializationTask.feature_view", (_STORE,),
                  "the view of a materialization task (windowed: loaded from its events table)", instance=True),
    FeastInternal("feast.infra.common.materialization_job", "MaterializationTask.end_time", (_STORE,),
                  "a materialization task's end (windowed: events known up to it)", instance=True),
)
