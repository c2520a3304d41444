"""Online serving: a Flask app over the same FeatureService and the promoted model."""
