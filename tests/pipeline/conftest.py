"""Fixtures of the stage tests."""

from __future__ import annotations

import pytest

from core.settings import Settings
from pipeline.apply import apply
from tests.feast_plugins.helpers import empty_copy


@pytest.fixture
def applied_copy(slice_run, tmp_path, monkeypatch, request):
    """``make(profile, raw_dir=None)``: Settings over a copy of the slice's DATA_DIR with no
    registry or online store yet, for ``profile`` (``redis``: a real redis-server of its
    own), exported and applied; whatever is online afterwards was written by the test."""

    def make(profile: str, raw_dir=None) -> Settings:
        data_dir = empty_copy(slice_run["settings"].data_dir, tmp_path / "data")
        monkeypatch.setenv("DATA_DIR", str(data_dir))
        monkeypatch.setenv("PROFILE", profile)
        if raw_dir is not None:
            monkeypatch.setenv("RAW_DIR", str(raw_dir))
        if profile == "redis":
            monkeypatch.setenv("REDIS_ADDRESS", request.getfixturevalue("redis_server").address)
        settings = Settings.from_env()
        apply(settings)
        return settings

    return make
