"""The tests that need a system tool (redis-server, java, chromium) never skip: a missing
tool fails the run, so neither CI nor a developer can pass without testing Redis, Spark
or the report page."""

from __future__ import annotations

import pytest

from tests.conftest import require_tool


@pytest.mark.parametrize("ci", ["true", None])
def test_missing_tool_fails_in_ci_and_elsewhere(tmp_path, ci):
    empty = {"PATH": str(tmp_path)} | ({"CI": ci} if ci else {})
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        require_tool("redis-server", empty)
    (tmp_path / "redis-server").write_text("#!/bin/sh\n")
    (tmp_path / "redis-server").chmod(0o755)
    assert require_tool("redis-server", empty) == str(tmp_path / "redis-server")
