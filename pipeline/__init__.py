"""Platform core: settings, raw-data collection, feature pipelines and the end-to-end run."""
