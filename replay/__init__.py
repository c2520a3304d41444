"""Replaying history day by day as if live: training and inference policies, measured."""
