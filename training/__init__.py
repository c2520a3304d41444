"""Training sets through a FeatureService, training, evaluation, model registry, scoring."""
