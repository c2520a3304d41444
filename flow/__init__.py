"""The nightly flow, declared once: ingest -> features -> apply -> materialize -> train ->
promote, run by `pipeline run`, the replay and the tests alike."""
