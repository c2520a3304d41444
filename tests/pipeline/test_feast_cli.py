"""The Feast CLI works on feature_repo/ as the README and docs/profiles.md document it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import REPO_ROOT

FEAST = str(Path(sys.executable).with_name("feast"))


def _feast(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(settings.data_dir)}
    return subprocess.run([FEAST, "-c", "feature_repo", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_plan_and_materialize_incremental_from_the_cli(slice_run, monkeypatch):
    settings, snapshot = slice_run["settings"], slice_run["snapshot"]
    plan = _feast(settings, "plan")
    assert plan.returncode == 0, plan.stderr
    assert "No changes to infrastructure" in plan.stdout, plan.stdout[-2000:]

    end = snapshot.as_of.strftime("%Y-%m-%dT%H:%M:%S")
    # TTL-0 views need a first full window (docs/profiles.md); then incremental continues from it.
    first = _feast(settings, "materialize", "1970-01-01T00:00:00", end)
    assert first.returncode == 0, first.stderr
    incremental = _feast(settings, "materialize-incremental", end)
    assert incremental.returncode == 0, incremental.stderr

    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    from feast_plugins.store import feature_store

    store = feature_store(settings)
    online = store.get_online_features(
        features=["origin_daily:departures_7d", "weather_hourly:temp"], entity_rows=[{"origin": "JFK"}]
    ).to_dict(include_event_timestamps=True)
    assert online["departures_7d"][0] > 0, "origin_daily was not materialized"
    assert online["temp"][0] is not None, "weather_hourly was not materialized"
    assert online["temp__ts"][0] == int(snapshot.as_of.timestamp()), "newest weather should be at the as-of hour"
