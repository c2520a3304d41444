"""One entity's served feature vector: the answer of :meth:`serving.online.OnlineFeatures.lookup`,
the model's input row, and what the feature log and the metrics record of a request."""

from __future__ import annotations


class OnlineVector:
    """One entity's served features: ``values`` (feature -> value, None where missing, in
    the model's order), and the ``missing`` and ``stale`` features by name.

    Built from a row (:meth:`from_row`) the dict is made only when asked for: the model
    input takes the row as it is (:meth:`row_for`)."""

    __slots__ = ("features", "row", "missing", "stale", "_values")

    def __init__(self, values: dict, missing: list[str], stale: list[str]):
        self.features, self.row = list(values), tuple(values.values())
        self.missing, self.stale, self._values = missing, stale, values

    @classmethod
    def from_row(cls, features: list[str], row: tuple, missing: list[str], stale: list[str]) -> "OnlineVector":
        vector = cls.__new__(cls)
        vector.features, vector.row, vector.missing, vector.stale, vector._values = features, row, missing, stale, None
        return vector

    @property
    def values(self) -> dict:
        if self._values is None:
            self._values = dict(zip(self.features, self.row))
        return self._values

    def row_for(self, features: list[str]) -> tuple:
        """The values in the order of ``features``."""
        if features is self.features or features == self.features:
            return self.row
        values = self.values
        return tuple(values[f] for f in features)

    def __eq__(self, other) -> bool:
        if not isinstance(other, OnlineVector):
            return NotImplemented
        return (self.values, self.missing, self.stale) == (other.values, other.missing, other.stale)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"OnlineVector(values={self.values!r}, missing={self.missing!r}, stale={self.stale!r})"
