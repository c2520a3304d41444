"""`make ui`: Feast's web UI over the registry the pipeline applied, opened in headless
Chromium, lists the project's feature views (batch and on-demand) and FeatureServices."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, Settings
from serving.process import free_port, stop_process
from tests.conftest import require_tool

pytestmark = pytest.mark.serving

#: Chromium without the services that reach out to the network (as the monitoring report's test).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def start_ui(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """`make ui` on a free port, in a process group of its own (make, its shell and Feast are
    stopped together). ``-o .venv/bin/.installed``: the test uses the installed venv as it is
    and never reinstalls it (`make test` has just run `make install`)."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/bin/.installed", "ui"],
                                   cwd=REPO_ROOT, env={**env, "HOST": "127.0.0.1", "UI_PORT": str(port)},
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def stop_ui(process: subprocess.Popen) -> None:
    stop_process(process, timeout=20, group=True)


def wait_answering(base: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"`make ui` exited with code {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(base + "/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"`make ui` did not answer on {base} within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def rendered(url: str, profile: Path) -> str:
    """The DOM of ``url`` after Chromium ran its scripts (the UI is a React app that fetches
    the registry from its server)."""
    chromium = require_tool("chromium")
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout


def listed(dom: str, project: str, kind: str) -> set[str]:
    """Names the page links to as ``/p/<project>/<kind>/<name>``, with the name as link text."""
    return {name for name, text in re.findall(rf'href="/p/{project}/{kind}/([^"/]+)"[^>]*>([^<]+)<', dom)
            if name == text.strip()}


def registry_names(settings: Settings) -> tuple[str, set[str], set[str]]:
    """The project, its feature views (batch and on-demand) and FeatureServices, as Feast reads
    the registry."""
    from feast_plugins.store import feature_store

    store = feature_store(settings)
    views = {v.name for kind in (store.list_feature_views, store.list_stream_feature_views,
                                 store.list_on_demand_feature_views) for v in kind()}
    return store.project, views, {s.name for s in store.list_feature_services()}


def test_make_ui_lists_the_feature_views_and_services_in_chromium(served_dir, tmp_path):
    settings = Settings.from_env({"DATA_DIR": str(served_dir)})
    project, views, services = registry_names(settings)
    assert {"weather_hourly", "departure_time"} <= views and services, (views, services)
    env = {**os.environ, "DATA_DIR": str(served_dir), "PROFILE": "embedded"}
    log = tmp_path / "ui.log"
    process, base = start_ui(env, log)
    try:
        wait_answering(base, process, log)
        with ThreadPoolExecutor(2) as pool:  # two browsers at once, each with a profile of its own
            shown_views, shown_services = pool.map(
                lambda kind: listed(rendered(f"{base}/p/{project}/{kind}", tmp_path / f"chromium-{kind}"),
                                    project, kind),
                ("feature-view", "feature-service"))
    finally:
        stop_ui(process)
    assert shown_views == views, f"feature views on the page: {sorted(shown_views)}; registry: {sorted(views)}"
    assert shown_services == services, f"services on the page: {sorted(shown_services)}; registry: {sorted(services)}"
