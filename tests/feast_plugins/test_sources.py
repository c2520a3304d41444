"""The definitions bound to a run (``feast_plugins.sources.bind_sources``, what the
platform applies) are the objects the Feast CLI imports under the same ``DATA_DIR`` and
``PROFILE``, for several data directories and profiles in one process; the module-level
objects are never changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.settings import REPO_ROOT, Settings
from feast_plugins.sources import parquet_source, parquet_table
from feast_plugins.store import definitions

#: Prints ``{kind/name: proto}`` of feature_repo/ as the Feast CLI parses it (cwd: the repo).
CLI_PARSE = """
import json, sys
from pathlib import Path
sys.path.append(".")
from feast.repo_operations import parse_repo
from tests.feast_plugins.test_sources import comparable
print(json.dumps(comparable(parse_repo(Path(".").resolve()))))
"""


def _strip(message) -> None:
    """Drop what differs between two parses of the same definitions: creation times, and
    the pickled bytes of an on-demand view's function (Feast's diff ignores them too)."""
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            if field.name == "body" and message.DESCRIPTOR.name.startswith("UserDefinedFunction"):
                message.ClearField("body")
            continue
        if field.name in ("meta", "created_timestamp", "last_updated_timestamp"):
            message.ClearField(field.name)
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values()) if hasattr(value, "values") else []
        else:
            items = list(value) if field.is_repeated else [value]
        for item in items:
            if hasattr(item, "ListFields"):
                _strip(item)


def _stripped(obj):
    proto = obj.to_proto()
    _strip(proto)
    return proto


def comparable(contents) -> dict[str, str]:
    out = {}
    for kind in contents._fields:
        for obj in getattr(contents, kind):
            proto = obj.to_proto()
            _strip(proto)
            out[f"{kind}/{obj.name}"] = proto.SerializeToString(deterministic=True).hex()
    return out


def cli_definitions(data_dir: Path, profile: str) -> dict[str, str]:
    env = {**os.environ, "DATA_DIR": str(data_dir), "PROFILE": profile, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", CLI_PARSE], cwd=REPO_ROOT / "feature_repo", env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_bound_definitions_are_what_the_feast_cli_imports(tmp_path, monkeypatch):
    import feature_repo.definitions.data_sources as module
    from feature_repo.definitions.entities import origin
    from feature_repo.definitions.on_demand import departure_time

    before = (module.weather_hourly_source.path, type(module.weather_hourly_source))
    for data_dir, profile in ((tmp_path / "a", "embedded"), (tmp_path / "b", "spark"), (tmp_path / "a", "redis")):
        monkeypatch.setenv("DATA_DIR", str(data_dir))
        monkeypatch.setenv("PROFILE", profile)
        settings = Settings.from_env()
        bound = definitions(settings)
        got, want = comparable(bound), cli_definitions(data_dir, profile)
        assert got.keys() == want.keys()
        assert [k for k in got if got[k] != want[k]] == [], (data_dir, profile)
        views = {v.name: v for v in bound.feature_views}
        assert views["aircraft"].batch_source.path == str(data_dir / "sources" / "aircraft.parquet")
        assert type(views["weather_hourly"].stream_source.batch_source).__name__ == (
            "SparkSource" if profile == "spark" else "FileSource")
        # Every object is a copy, equal to the definitions' own where it reads no Parquet source.
        assert not any(e is origin for e in bound.entities) and origin in bound.entities
        [odfv] = bound.on_demand_feature_views
        assert odfv is not departure_time and _stripped(odfv) == _stripped(departure_time)
    assert (module.weather_hourly_source.path, type(module.weather_hourly_source)) == before


def test_applying_leaves_the_module_level_definitions_as_imported(tmp_path, monkeypatch):
    """Feast's apply writes into the objects it registers (an on-demand view's entity
    columns, timestamps); the platform hands it copies, so the definitions a later run
    binds (another data directory, another profile) are the ones imported."""
    from feast_plugins.store import apply_definitions
    from feature_repo.definitions.features import weather_hourly
    from feature_repo.definitions.on_demand import departure_time

    before = (departure_time.to_proto(), weather_hourly.to_proto())
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PROFILE", "embedded")
    apply_definitions(Settings.from_env())
    assert (departure_time.to_proto(), weather_hourly.to_proto()) == before, "apply changed a module-level definition"


def test_parquet_table_recognizes_only_what_parquet_source_builds(tmp_path):
    from feast import FileSource

    assert parquet_table(parquet_source("route_daily", tmp_path, "embedded")) == "route_daily"
    assert parquet_table(parquet_source("route_daily", tmp_path, "spark")) == "route_daily"
    other = FileSource(name="route_daily_source", path=str(tmp_path / "route_daily.parquet"),
                       timestamp_field="ts")
    assert parquet_table(other) is None
