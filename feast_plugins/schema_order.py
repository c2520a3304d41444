"""Feast 0.67's ``FeatureView.schema`` is ``list(set(entity_columns + features))``: its order
follows Python's per-process string hashing (``PYTHONHASHSEED``), and
``StreamFeatureView.to_proto`` writes its fields in that order. A windowed (stream) view's
features would then come back from the registry in a different order after each ``apply``,
and with them a FeatureService's feature list, a training set's columns and a model's
bytes. Imported by every module that builds or applies definitions
(``sources``, ``store``, ``windows``), this makes the order the declaration's: the entity
columns, then the features, each once. Listed in ``compat.py``; tested in
``tests/feast_plugins/test_schema_order.py`` against two hash seeds."""

from __future__ import annotations

from feast.feature_view import FeatureView


def _schema(self) -> list:
    fields: list = []
    for field in [*self.entity_columns, *self.features]:
        if field not in fields:
            fields.append(field)
    return fields


FeatureView.schema = property(_schema)  # type: ignore[method-assign,assignment]
