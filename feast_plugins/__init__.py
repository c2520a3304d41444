"""Everything that plugs into or bypasses Feast, in one place: the ASOF offline store, the
packed SQLite online store and its batch engine, the direct online read serving uses, the
push writer, the atomic registry store, and opening the feature store for a run. Every
private Feast API the project touches is listed in ``compat.py``."""
