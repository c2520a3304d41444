"""Monitoring: training/serving skew, drift, freshness and model quality, as a report."""
