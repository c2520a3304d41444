"""Fixtures shared by the serving tests."""

from __future__ import annotations

import pytest

from serving.app import create_app
from tests.serving.helpers import flights_after_serve_end, request_body
from training.registry import ModelRegistry


@pytest.fixture
def served(served_dir, use_case):
    """The app on a copy of the served slice (models checked on every request), an example
    body, the registry and the champion's version."""
    app = create_app({"DATA_DIR": served_dir, "MODEL_CHECK_SECONDS": 0})
    body = request_body(flights_after_serve_end(served_dir, use_case, 5))
    registry = ModelRegistry(served_dir / "models")
    return app.test_client(), body, registry, registry.champion()["version"]
