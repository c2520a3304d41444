"""Training sets through a FeatureService, training, evaluation, the model registry, the
training gate, the model gate, promotion and batch scoring."""
