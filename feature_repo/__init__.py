"""Feast feature repository and the use case it serves (nycflights13 late arrivals)."""
