"""Entities: the keys features hang off."""

from feast import Entity, ValueType

origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING,
                description="Departure airport (FAA code)")
dest = Entity(name="dest", join_keys=["dest"], value_type=ValueType.STRING,
              description="Arrival airport (FAA code)")
carrier = Entity(name="carrier", join_keys=["carrier"], value_type=ValueType.STRING,
                 description="Airline (two-letter code)")
tailnum = Entity(name="tailnum", join_keys=["tailnum"], value_type=ValueType.STRING,
                 description="Aircraft tail number")
