"""Definition drift: a served model whose feature definitions differ from the ones applied.

A model records, per feature, the fingerprint of all that defines its values
(``pipeline/definitions.py``); ``pipeline apply`` records the fingerprints it registered.
When they differ (a change applied deliberately with ``--allow-definition-change``, or a
model promoted from another DATA_DIR), the model is fed values computed differently from
the ones it was trained on: every such model is reported, and each drifted view alerts.
"""

from __future__ import annotations

from core.settings import Settings
from pipeline.definitions import applied, drift
from training.errors import TrainingError
from training.registry import ModelRegistry


def definition_drift(settings: Settings, versions) -> dict[str, list[dict]]:
    """Per model version of ``versions`` whose definitions drifted: one entry per view,
    ``{"view", "changes", "features", "description"}``. Empty when nothing was applied
    yet, and for a model that records no definitions (trained before they were recorded)
    or that is not in the registry."""
    views = applied(settings)
    if views is None:
        return {}
    registry = ModelRegistry(settings.models)
    out: dict[str, list[dict]] = {}
    for version in dict.fromkeys(versions):
        try:
            pinned = registry.metadata(version).get("definitions")
        except TrainingError:
            continue
        drifted = drift(pinned or {}, views)
        if drifted:
            out[version] = [{"view": d.view, "changes": list(d.changes), "features": list(d.features),
                             "description": d.describe()} for d in drifted]
    return out


def drift_alerts(drifted: dict[str, list[dict]]) -> list[dict]:
    """One alert per drifted view of each model (always on: no threshold makes it right)."""
    return [{"rule": "definition_drift", "subject": f"{version} {entry['view']}", "value": len(entry["changes"]),
             "limit": 0, "message": f"model {version} serves features whose definitions changed since it was "
                                    f"trained: {entry['description']}; retrain and promote it on the current "
                                    "definitions"}
            for version, entries in drifted.items() for entry in entries]
