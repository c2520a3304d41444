"""Feast object definitions, one file per kind (entities, sources, views, services)."""
