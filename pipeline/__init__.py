"""The pipeline stages: ingest (raw snapshots), the feature SQL (source tables), apply,
materialize, and push. They neither train models nor serve."""
