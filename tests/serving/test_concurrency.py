"""Reads while `materialize` writes: no errors, and every value is the old one or the new one."""

from __future__ import annotations

import threading
import urllib.parse
from datetime import timedelta

import pytest

from core.settings import Settings
from feast_plugins.store import feature_store
from pipeline.materialize import EPOCH, materialize
from serving.process import free_port, wait_ready
from tests.conftest import SERVE_END, materialize_into
from tests.serving.helpers import flights_after_serve_end, query_string, request_entity
from tests.serving.test_gunicorn import gunicorn_env, http, start_gunicorn, stop

pytestmark = pytest.mark.serving

#: The second materialization reaches this far: a day of new weather and daily aggregates.
NEW_END = SERVE_END + timedelta(hours=25)
READERS = 4


@pytest.mark.parametrize("online_store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_reads_during_materialization_see_old_or_new_values_and_no_errors(served_dir, use_case, request,
                                                                          monkeypatch, online_store):
    store_env = {"PROFILE": "embedded" if online_store == "sqlite" else online_store}
    if online_store == "redis":
        store_env["REDIS_ADDRESS"] = request.getfixturevalue("redis_server").address
        for name, value in store_env.items():
            monkeypatch.setenv(name, value)
        materialize_into(Settings.from_env())
    flights = flights_after_serve_end(served_dir, use_case, 12)
    # Ask as of after NEW_END, so both the old and the new values are usable (TTL 1 day).
    entities = [{**request_entity(r), "scheduled_departure": (NEW_END + timedelta(minutes=30)).isoformat()}
                for r in flights.itertuples()]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    urls = [f"{base}/features?{urllib.parse.urlencode(query_string(e))}" for e in entities]
    server = start_gunicorn(gunicorn_env(served_dir, port, FEATURE_LOG_SAMPLE_RATE=0, **store_env))
    try:
        wait_ready(base, server, timeout=180)

        def features(url):
            status, _, text = http("GET", url)
            return status, text

        old = [features(u) for u in urls]
        assert all(status == 200 for status, _ in old)
        seen: list[tuple[int, int, str]] = []
        done = threading.Event()

        def read():
            i = 0
            while not done.is_set():
                status, text = features(urls[i % len(urls)])
                seen.append((i % len(urls), status, text))
                i += 1

        readers = [threading.Thread(target=read) for _ in range(READERS)]
        for t in readers:
            t.start()
        try:
            # A full rewrite of every entity's rows, not just the new hours: the longest write.
            materialize(Settings.from_env({"DATA_DIR": str(served_dir), **store_env}), end=NEW_END,
                                  start=EPOCH)
        finally:
            done.set()
            for t in readers:
                t.join()
        new = [features(u) for u in urls]
    finally:
        stop(server)
    server_log = server.stderr.read().decode(errors="replace")

    import json

    errors = [(status, text[:200]) for _, status, text in seen if status != 200]
    assert not errors, (f"{len(errors)} failed reads during materialization, e.g. {errors[:3]}; "
                        f"server log: {server_log[-3000:]}")
    assert len(seen) >= 20, f"only {len(seen)} reads overlapped the materialization"
    old_values = [json.loads(t)["features"] for _, t in old]
    new_values = [json.loads(t)["features"] for _, t in new]
    changed = sum(o != n for o, n in zip(old_values, new_values))
    print(f"{len(seen)} reads during materialization; {changed} of {len(urls)} entities changed")
    assert changed, "the second materialization changed nothing: the test would prove nothing"
    for index, _, text in seen:
        got = json.loads(text)["features"]
        for feature, value in got.items():
            assert value in (old_values[index][feature], new_values[index][feature]), (
                f"{feature} of entity {index}: {value!r} is neither the old "
                f"{old_values[index][feature]!r} nor the new {new_values[index][feature]!r}")


def test_feast_quirk_a_view_in_materializing_state_is_served_only_with_the_registry_flag(served_dir, use_case):
    """Feast refuses to read a view while `materialize` has it in state MATERIALIZING; the
    feature_store YAMLs set `serve_features_while_materializing`. Both sides shown here."""
    import yaml
    from feast import FeatureStore
    from feast.feature_view import FeatureViewState
    from feast.repo_config import RepoConfig

    settings = Settings.from_env({"DATA_DIR": str(served_dir)})
    store = feature_store(settings)
    view = store.registry.get_feature_view("weather_hourly", store.project, allow_cache=False)
    view.state = FeatureViewState.MATERIALIZING
    store.registry.apply_feature_view(view, store.project)
    entity = {**request_entity(next(flights_after_serve_end(served_dir, use_case, 1).itertuples())),
              "scheduled_departure": SERVE_END}
    features = ["weather_hourly:temp"]

    fresh = feature_store(settings)  # the project's configuration
    assert fresh.get_online_features(features=features, entity_rows=[entity]).to_dict()["temp"][0] is not None

    raw = yaml.safe_load(settings.feature_store_yaml.read_text().replace("${DATA_DIR}", str(served_dir)))
    raw["registry"]["serve_features_while_materializing"] = False
    stock = FeatureStore(config=RepoConfig(repo_path=settings.feature_repo, **raw))
    with pytest.raises(ValueError, match="MATERIALIZING"):
        stock.get_online_features(features=features, entity_rows=[entity])
