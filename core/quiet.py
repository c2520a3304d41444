"""Silence third-party noise that a user cannot act on (kept in one place)."""

import logging
import warnings


class _DropServeWhileMaterializingAdvice(logging.Filter):
    """Feast logs, on every FeatureStore, that `serve_features_while_materializing` "typically
    has no effect" on a file registry. It does take effect (feast.infra.registry.registry
    reads it); tests/serving/test_concurrency.py fails without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "serve_features_while_materializing" not in record.getMessage()


def quiet_third_party_warnings() -> None:
    # ibis (inside Feast's DuckDB offline store) calls a DuckDB API deprecated in DuckDB 2.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\..*")
    feast_config_log = logging.getLogger("feast.repo_config")
    if not any(isinstance(f, _DropServeWhileMaterializingAdvice) for f in feast_config_log.filters):
        feast_config_log.addFilter(_DropServeWhileMaterializingAdvice())
