"""Data contracts and checks: a library that reads and judges raw tables, source tables,
pushed rows and training sets, and reports what failed. It never changes data."""
