"""Source-table contracts derived from the Feast views: a use case that restates a view's
type differently, or a view with a type no contract knows, is refused naming both sides."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.contracts import ColumnRule, TableContract
from core.errors import DefinitionError, PlatformError
from validation.feast_contracts import source_contracts


@pytest.fixture
def view():
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING)
    source = FileSource(name="t_source", path="/nowhere/weather.parquet", timestamp_field="event_timestamp")
    return origin, FeatureView(name="weather", entities=[origin], ttl=timedelta(hours=1),
                               schema=[Field(name="temp", dtype=Float64)], source=source)


def test_contract_types_come_from_the_view_and_rules_refine_them(view):
    origin, weather = view
    contracts = source_contracts([weather], [origin], {"weather": TableContract("weather", {
        "temp": ColumnRule(min=-40.0, max=130.0)})})
    rule = contracts["weather"].columns["temp"]
    assert (rule.dtype, rule.min, rule.max) == ("float64", -40.0, 130.0), rule
    assert contracts["weather"].key == ("origin", "event_timestamp"), contracts["weather"].key


def test_a_rule_that_restates_a_view_type_differently_is_a_definition_error(view):
    origin, weather = view
    rules = {"weather": TableContract("weather", {"temp": ColumnRule(dtype="int64")})}
    with pytest.raises(DefinitionError, match=r"source table 'weather'.*\['temp'\].*contradict") as raised:
        source_contracts([weather], [origin], rules)
    assert isinstance(raised.value, PlatformError) and raised.value.exit_code == 2
