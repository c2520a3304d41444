"""Data contracts and gates: they read and judge, never change data."""
