"""Silence third-party noise that a user cannot act on (kept in one place)."""

import warnings


def quiet_third_party_warnings() -> None:
    # ibis (inside Feast's DuckDB offline store) calls a DuckDB API deprecated in DuckDB 2.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ibis\..*")
