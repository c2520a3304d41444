"""CI must run the Redis tests: a missing redis-server fails there, and only skips locally."""

from __future__ import annotations

import pytest

from tests.conftest import require_redis_server


def test_missing_redis_server_fails_in_ci_and_skips_elsewhere(tmp_path):
    empty = {"PATH": str(tmp_path)}
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        require_redis_server({**empty, "CI": "true"})
    with pytest.raises(pytest.skip.Exception):
        require_redis_server(empty)
    (tmp_path / "redis-server").write_text("#!/bin/sh\n")
    (tmp_path / "redis-server").chmod(0o755)
    assert require_redis_server({**empty, "CI": "true"}) == str(tmp_path / "redis-server")
