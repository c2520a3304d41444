"""Migrating a view to a new version under load (docs/definitions.md, "Migration").

route_daily v1 -> v2 (its 7-day window widened: a new formula, so a new version, side by
side): v2's source table is built and materialized beside v1's, a model is trained on a
FeatureService using v2, gated and promoted, and v1 is retired once no champion uses it
(retiring it earlier is refused). Throughout, a real gunicorn server under load answers
every request, each answer from exactly one model reading its own view version.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

from core.settings import REPO_ROOT, Settings
from core.usecase import SourceTable
from pipeline.definitions import DefinitionChangeRefused
from serving.process import free_port, wait_ready
from tests.conftest import SERVE_END
from tests.serving.helpers import flights_after_serve_end, query_string, request_body, request_entity
from tests.serving.test_gunicorn import gunicorn_env, http, start_gunicorn, stop, wait_for
from training.registry import ModelRegistry

pytestmark = pytest.mark.serving

V2_VIEW = '''
route_daily_v2_source = parquet_source("route_daily_v2")
'''
V2_FEATURES = '''
# Version 2 of route_daily: the 7-day columns over 14 days (pipelines/daily_stats_v2.sql).
route_daily_v2 = _daily_view("route_daily_v2", [origin, dest], src.route_daily_v2_source)
'''
V2_SERVICE = '''
from feature_repo.definitions.features import route_daily_v2  # noqa: E402

late_arrival_route_v2 = FeatureService(
    name="late_arrival_route_v2",
    features=[weather_hourly, aircraft, carrier_daily, origin_daily, route_daily_v2, departure_time],
)
'''
V2_EXPORTS = '''from feature_repo.definitions.data_sources import route_daily_v2_source  # noqa: F401,E402
from feature_repo.definitions.features import route_daily_v2  # noqa: F401,E402
from feature_repo.definitions.feature_services import late_arrival_route_v2  # noqa: F401,E402
'''


def publish_v2(repo: Path) -> None:
    """route_daily_v2 in a copy of feature_repo/: its SQL, source, view and FeatureService."""
    sql = (repo / "pipelines" / "daily_stats.sql").read_text()
    assert sql.count("6 PRECEDING") == 1
    (repo / "pipelines" / "daily_stats_v2.sql").write_text(sql.replace("6 PRECEDING", "13 PRECEDING"))
    for relative, text in (("definitions/data_sources.py", V2_VIEW), ("definitions/features.py", V2_FEATURES),
                           ("definitions/feature_services.py", V2_SERVICE), ("repo.py", V2_EXPORTS)):
        with (repo / relative).open("a") as f:
            f.write(text)


def retire_v1(repo: Path) -> None:
    """route_daily and the FeatureServices reading it no longer exported to Feast."""
    path = repo / "repo.py"
    text = path.read_text()
    shipped_services = ("from feature_repo.definitions.feature_services import (  # noqa: F401\n"
                        "    late_arrival_v1,\n    late_arrival_v2,\n    late_arrival_v3,\n)\n")
    for old, new in (("    route_daily_source,\n", ""), ("    route_daily,\n", ""), (shipped_services, "")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path.write_text(text)


class Load:
    """Requests in a loop on a thread: /predict for a batch, /features for one flight."""

    def __init__(self, base: str, body: dict, entity: dict):
        self.base, self.body = base, body
        self.query = urllib.parse.urlencode(query_string(entity))
        self.answers: list[tuple[str, int, dict | str]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import json

        while not self.stopping.is_set():
            for kind, method, url, body in (("predict", "POST", f"{self.base}/predict", self.body),
                                            ("features", "GET", f"{self.base}/features?{self.query}", None)):
                try:
                    status, _, text = http(method, url, body)
                    self.answers.append((kind, status, json.loads(text) if status == 200 else text))
                except Exception as e:  # no answer at all counts as an error too
                    self.answers.append((kind, 0, repr(e)))

    def versions(self) -> set[str]:
        return {a[2]["model_version"] for a in self.answers if a[1] == 200}

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def test_route_daily_v1_to_v2_under_load(served_dir, use_case, tmp_path, monkeypatch):
    from feast_plugins.store import feature_store
    from pipeline.apply import apply
    from pipeline.features import build_sources
    from pipeline.ingest import latest_snapshot
    from pipeline.materialize import materialize
    from training.promote import promote_if_better
    from training.train import TrainConfig, run_training

    repo = tmp_path / "copy" / "feature_repo"
    shutil.copytree(REPO_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("FEATURE_REPO", str(repo))
    settings = Settings.from_env()
    registry = ModelRegistry(settings.models)
    v1_model = registry.champion()["version"]
    assert registry.metadata(v1_model)["feature_service"] == "late_arrival_v1"
    v2_case = dataclasses.replace(use_case, sources=(*use_case.sources, SourceTable(
        "route_daily_v2", "daily_stats_v2.sql", {"keys": "origin, dest", "tz": use_case.timezone})))
    flights = flights_after_serve_end(served_dir, use_case, 5)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_gunicorn(gunicorn_env(served_dir, port, FEATURE_REPO=repo, MODEL_CHECK_SECONDS=0))
    try:
        wait_ready(base, server, timeout=180)
        with Load(base, request_body(flights), request_entity(next(flights.itertuples()))) as load:
            wait_for(lambda: len(load.answers) >= 10, 60, "the first answers", server)
            # 1. v2 published beside v1: built, applied, materialized; v1 keeps being all of that.
            publish_v2(repo)
            counts = build_sources(settings, v2_case, latest_snapshot(settings))
            assert {"route_daily", "route_daily_v2"} <= set(counts)
            apply(settings, v2_case)
            materialize(settings, SERVE_END, use_case=v2_case)
            # Retiring v1 now is refused: the champion reads it.
            retire = repo / "repo.py"
            kept = retire.read_text()
            retire_v1(repo)
            with pytest.raises(DefinitionChangeRefused, match="'route_daily': the view is no longer defined"):
                apply(settings, v2_case)
            retire.write_text(kept)
            # 2. A model on v2, gated and promoted.
            on_v2 = v2_case.with_feature_service("late_arrival_route_v2")
            store = feature_store(settings)
            trained = run_training(settings, on_v2, store, TrainConfig(num_boost_round=80, holdout_start="2013-02-15"),
                                   say=lambda m: None)
            assert any(f.startswith("route_daily_v2__") for f in registry.metadata(trained["version"])["features"])
            verdict = promote_if_better(settings, on_v2, store, trained["version"], say=lambda m: None)
            assert verdict["promoted"], verdict
            v2_model = trained["version"]
            seen = len(load.answers)
            wait_for(lambda: all(a[1] == 200 and a[2]["model_version"] == v2_model for a in load.answers[-6:])
                     and len(load.answers) > seen + 6, 60, f"every worker serving {v2_model}", server)
            # 3. No champion reads v1 any more: it is retired.
            retire_v1(repo)
            apply(settings, v2_case)
            assert "route_daily" not in {v.name for v in feature_store(settings).list_feature_views()}
            after = len(load.answers)
            wait_for(lambda: len(load.answers) >= after + 20, 60, "answers after v1 was retired", server)
    finally:
        stop(server)

    errors = [a for a in load.answers if a[1] != 200]
    assert not errors, f"{len(errors)} of {len(load.answers)} requests failed, e.g. {errors[:3]}"
    assert load.versions() == {v1_model, v2_model}
    for kind, _, answer in load.answers:
        version = answer["model_version"]
        if kind == "predict":
            assert {p["model_version"] for p in answer["predictions"]} == {version}, answer
        else:
            own, other = ("route_daily_v2__", "route_daily__") if version == v2_model else \
                ("route_daily__", "route_daily_v2__")
            names = set(answer["features"])
            assert any(n.startswith(own) for n in names) and not any(n.startswith(other) for n in names), answer
            assert not [m for m in answer["missing_features"] if m.startswith(own)], answer
