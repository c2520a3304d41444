"""On-demand views that read only request data, computed by each view's own Feast
transformation, and the shape of Feast's online response both online reads fill.

The server reads batch views itself (``packed_reader.DirectRead``) or through Feast's
``get_online_features``; either way the answer is the dict
``get_online_features(service, rows, full_feature_names=True).to_dict(include_event_timestamps=True)``
gives: ``view__feature`` columns, each with a ``view__feature__ts`` column of event
timestamps (whole seconds; 0 where nothing was found). :class:`RequestViews` adds the
on-demand views' columns to it, computed as Feast computes them. The Feast internals used
here are listed in ``compat.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NamedTuple, Sequence

#: Feast's suffix for event timestamps in ``OnlineResponse.to_dict(include_event_timestamps=True)``.
TS_SUFFIX = "__ts"


class NotDirect(Exception):
    """The FeatureService needs something only get_online_features does."""


class Output(NamedTuple):
    """One feature a view answers with."""

    feature: str  # its name in the view
    name: str  # its name in the response: ``<view or alias>__<feature>``
    value_type: Any  # its Feast ValueType


class RequestField(NamedTuple):
    """One request field an on-demand view reads."""

    name: str
    value_type: Any  # its Feast ValueType


class OnDemandView(NamedTuple):
    """An on-demand view of the FeatureService, what it reads and what it answers."""

    odfv: Any  # the Feast OnDemandFeatureView
    fields: tuple[RequestField, ...]
    outputs: tuple[Output, ...]


def outputs_of(projection) -> tuple[Output, ...]:
    """The response columns of a FeatureService's view projection."""
    prefix = projection.name_to_use()
    return tuple(Output(f.name, f"{prefix}__{f.name}", f.dtype.to_value_type()) for f in projection.features)


def round_trip(values: list, value_type) -> list:
    """What Feast's response gives back for these values (to ``Value`` and back):
    unchanged for str, int and float columns (NaN -> None); Feast's conversion otherwise."""
    from feast.type_map import NULL_TIMESTAMP_INT_VALUE, feast_value_type_to_python_type, python_values_to_proto_values
    from feast.value_type import ValueType

    kinds = {type(v) for v in values} - {type(None)}
    if (value_type == ValueType.STRING and kinds <= {str}) or (value_type == ValueType.INT64 and kinds <= {int}):
        return list(values)
    if value_type == ValueType.DOUBLE and kinds <= {float}:
        return [None if v is None or v != v else v for v in values]
    if value_type == ValueType.UNIX_TIMESTAMP and kinds <= {datetime}:
        # Feast keeps whole seconds (a naive instant is UTC) and gives back UTC datetimes.
        out = []
        for v in values:
            if v is not None:
                seconds = int((v if v.utcoffset() is not None else v.replace(tzinfo=timezone.utc)).timestamp())
                v = None if seconds == NULL_TIMESTAMP_INT_VALUE else datetime.fromtimestamp(seconds, tz=timezone.utc)
            out.append(v)
        return out
    return [feast_value_type_to_python_type(v, value_type) for v in python_values_to_proto_values(values, value_type)]


class RequestViews:
    """The FeatureService's on-demand views of ``modes`` that read only request data,
    computed by each view's own Feast transformation.

    ``add(rows, out, join_keys)`` adds each view's outputs (``view__feature``, event
    timestamp 0) to ``out``, a ``get_online_features(...).to_dict(include_event_timestamps=True)``-shaped
    dict holding the join keys. Raises :class:`NotDirect` for a view of ``modes`` that
    needs batch features, aggregations or an online write (only Feast computes those).
    """

    def __init__(self, store, service, modes: Sequence[str]):
        odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
        self.views: list[OnDemandView] = []
        for projection in service.feature_view_projections:
            odfv = odfvs.get(projection.name)
            if odfv is None or odfv.mode not in modes:
                continue
            if odfv.source_feature_view_projections or odfv.aggregations or odfv.write_to_online_store:
                raise NotDirect(f"on-demand view {odfv.name} ({odfv.mode} mode) reads more than request data")
            fields = tuple(RequestField(f.name, f.dtype.to_value_type())
                           for source in odfv.source_request_sources.values() for f in source.schema)
            self.views.append(OnDemandView(odfv, fields, outputs_of(projection)))

    def __bool__(self) -> bool:
        return bool(self.views)

    def add(self, rows: list[dict], out: dict, join_keys: Sequence[str]) -> None:
        import pyarrow as pa

        for odfv, fields, outputs in self.views:
            # The request values go through Feast's own conversions (to Value and back), then
            # the view's own transformation, as get_online_features does.
            inputs = {field.name: round_trip([row.get(field.name) for row in rows], field.value_type)
                      for field in fields}
            if odfv.mode == "python":
                # Feast's input: the response's join keys and the request data, as lists. What
                # odfv.transform_dict does for a view without batch sources (its preprocessing
                # is then a copy), minus its typeguard checks (~0.1 ms a call).
                inputs = {**{k: out[k] for k in join_keys if k in out}, **inputs}
                transformation = odfv.feature_transformation
                result = (transformation.transform_singleton(inputs) if odfv.singleton
                          else transformation.transform(inputs))
                columns = {output.feature: list(result[output.feature]) for output in outputs}
            else:
                # Feast's pandas-mode transform_arrow is udf(table.to_pandas()) then back to
                # Arrow; the transformation gets the frame directly here (half the cost).
                frame = odfv.feature_transformation.transform(pa.table(inputs).to_pandas())
                columns = {output.feature: frame[output.feature].tolist() for output in outputs}
            for output in outputs:
                out[output.name] = round_trip(columns[output.feature], output.value_type)
                out[output.name + TS_SUFFIX] = [0] * len(rows)
