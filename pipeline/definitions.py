"""Definitions pinned to models: a fingerprint of everything that defines a feature's values.

A feature's values are defined by more than its name: its view's Feast definition (schema,
TTL, entities and their join keys and types, source), the DuckDB SQL that builds the view's
source table and, transitively, the SQL of the source tables and the raw tables that SQL
reads, an on-demand function's code, an aggregation's spec. :func:`current` computes, for
every view of ``feature_repo/``, one SHA-256 per such *part* and one per feature (its own
field plus every part of its view but the other features' fields). Cosmetic edits do not
count: SQL is compared without comments and with whitespace collapsed, Python code as its
syntax tree without docstrings, Feast objects without descriptions, tags, owners and
timestamps, and a Parquet source by its table, not by the directory or profile it is read
under.

Where fingerprints live:

* ``DATA_DIR/models/definitions.json``: what the last ``pipeline apply`` registered
  (:func:`write_applied`); serving compares a model with it.
* a model's ``metadata.json`` ``"definitions"``: what the model was trained on
  (:func:`pins`), per feature.

The features and apply stages refuse (:class:`DefinitionChangeRefused`, exit 2), before
anything is written, a change to what the champion's fingerprints cover, unless the view
is named in ``--allow-definition-change`` (a deliberate change: the champion must then be
retrained). A changed definition is published instead as a new version of the view, side
by side: ``route_daily_v2`` next to ``route_daily`` (:func:`view_version`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from core.errors import ConfigError, DefinitionError
from core.files import atomic_write
from core.settings import Settings
from pipeline.errors import PipelineError

#: Under ``DATA_DIR/models``: the fingerprints of the definitions last applied.
RECORD_FILE = "definitions.json"
#: Keys of Feast's protos that never change a value: dropped before hashing.
COSMETIC_KEYS = frozenset({"description", "tags", "owner", "meta", "created_timestamp",
                           "last_updated_timestamp", "comment"})
#: ``<base>_v<N>``: version N of view ``<base>`` (a name without the suffix is version 1).
_VERSIONED = re.compile(r"(?P<base>.+)_v(?P<number>[0-9]+)")


class DefinitionChangeRefused(PipelineError):
    """A definition change would change what the champion sees; the message names the view,
    the change, the models and the ways forward."""


def view_version(name: str) -> tuple[str, int]:
    """``(base, version)`` of a feature view name: ``route_daily_v2`` -> ``("route_daily", 2)``,
    ``route_daily`` -> ``("route_daily", 1)``."""
    match = _VERSIONED.fullmatch(name)
    return (match["base"], int(match["number"])) if match else (name, 1)


# ---- normalisation ------------------------------------------------------------------------------

def normalize_sql(text: str) -> str:
    """``text`` without comments, with every run of whitespace outside quotes made one space:
    two SQL texts that differ only in comments or layout normalise to the same string."""
    out: list[str] = []
    i, n = 0, len(text)
    space = False
    while i < n:
        c = text[i]
        if c in "'\"":  # a string or quoted identifier, copied as is ('' and "" escape)
            j = i + 1
            while j < n:
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            chunk, i = text[i:j + 1], j + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            space = True
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            space = True
            continue
        elif c.isspace():
            space = True
            i += 1
            continue
        else:
            chunk, i = c, i + 1
        if space and out:
            out.append(" ")
        space = False
        out.append(chunk)
    return "".join(out)


def normalize_code(text: str) -> str:
    """Python source as its syntax tree, without docstrings, comments or layout."""
    tree = ast.parse(textwrap.dedent(text))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module))
                and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _scrub(value, tables: dict[str, str]):
    """A Feast proto (as a dict) without cosmetic keys; a Parquet source as its table."""
    if isinstance(value, list):
        return [_scrub(v, tables) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _scrub(v, tables) for k, v in value.items() if k not in COSMETIC_KEYS}
    if out.get("name") in tables and ("file_options" in out or "spark_options" in out):
        for key in ("file_options", "spark_options", "type", "data_source_class_type"):
            out.pop(key, None)
        out["parquet_table"] = tables[out["name"]]
    return out


def _proto_dict(obj) -> dict:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(obj.to_proto(), preserving_proto_field_name=True)


# ---- the fingerprints of feature_repo/ -------------------------------------------------------

def source_sql_parts(settings: Settings, use_case) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Each source table's part (its normalised SQL) and, per table, the parts it depends on
    transitively (``sql:<table>`` of itself and of the source tables its SQL reads,
    ``raw:<table>`` of the raw tables)."""
    from pipeline.features import source_sql

    parts: dict[str, str] = {}
    for raw in use_case.raw_tables:
        parts[f"raw:{raw.name}"] = _digest({"columns": dict(raw.columns),
                                            "normalize": normalize_sql(raw.normalize_sql)})
    direct: dict[str, set[str]] = {}
    earlier: list[str] = []
    for source in use_case.sources:
        sql = normalize_sql(source_sql(settings, source.sql_file, source.params))
        parts[f"sql:{source.name}"] = _digest(sql)
        bare = re.sub(r"'(?:[^']|'')*'", "''", sql)  # table names are never inside strings
        reads = {f"raw:{raw.name}" for raw in use_case.raw_tables if re.search(rf"\braw_{raw.name}\b", bare)}
        reads |= {f"sql:{name}" for name in earlier if re.search(rf"\b{re.escape(name)}\b", bare)}
        direct[source.name] = reads
        earlier.append(source.name)
    closure: dict[str, set[str]] = {}
    for name in direct:  # in build order: a table only reads tables built before it
        deps = {f"sql:{name}"}
        for dep in direct[name]:
            deps |= closure[dep[4:]] if dep.startswith("sql:") else {dep}
        closure[name] = deps
    return parts, closure


def current(settings: Settings, use_case, contents=None) -> dict[str, dict]:
    """The fingerprints of every view in ``feature_repo/`` (``contents``: its parsed Feast
    objects, :func:`feast_plugins.store.definitions`), by view name: ``{"kind", "table",
    "parts": {part: sha256}, "features": {feature: sha256}, "fingerprint"}``."""
    from feast_plugins.sources import parquet_table

    if contents is None:
        from feast_plugins.store import definitions

        contents = definitions(settings)
    tables = {s.name: t for s in contents.data_sources if (t := parquet_table(s)) is not None}
    entities = {e.name: _digest(_scrub(_proto_dict(e)["spec"], tables)) for e in contents.entities}
    sql_parts, closure = source_sql_parts(settings, use_case)
    views: dict[str, dict] = {}
    kinds = (("feature_view", contents.feature_views), ("stream_feature_view", contents.stream_feature_views),
             ("on_demand_feature_view", contents.on_demand_feature_views))
    for kind, objects in kinds:
        for obj in objects:
            spec = _scrub(_proto_dict(obj)["spec"], tables)
            parts: dict[str, str] = {}
            for field in spec.pop("features", []):
                parts[f"feature:{field['name']}"] = _digest(field)
            transformation = spec.pop("feature_transformation", None)
            if transformation is not None:
                udf = transformation.get("user_defined_function") or {}
                if udf.get("body_text"):
                    parts["udf"] = _digest(normalize_code(udf["body_text"]))
                else:  # not Python code: the transformation itself, without its pickled body
                    parts["transformation"] = _digest({k: v for k, v in transformation.items() if k != "body"})
            for key in ("user_defined_function", "entity_columns"):
                spec.pop(key, None)
            spec.pop("name", None)
            for key, value in spec.items():
                parts[key] = _digest(value)
            for entity in spec.get("entities", []):
                if entity in entities:
                    parts[f"entity:{entity}"] = entities[entity]
            table = tables.get(getattr(getattr(obj, "batch_source", None), "name", None))
            if table is not None and table in closure:
                parts.update({part: sql_parts[part] for part in closure[table]})
            views[obj.name] = {"kind": kind, "table": table, "parts": parts}
    for name, view in views.items():  # an on-demand view reading other views: theirs too
        for source in _odfv_view_sources(contents, name):
            if source in views:
                view["parts"][f"view:{source}"] = _digest(views[source]["parts"])
    for view in views.values():
        parts = view["parts"]
        shared = {k: v for k, v in parts.items() if not k.startswith("feature:")}
        view["features"] = {k[len("feature:"):]: _digest({**shared, "feature": v})
                            for k, v in parts.items() if k.startswith("feature:")}
        view["fingerprint"] = _digest(parts)
    return views


def _odfv_view_sources(contents, name: str) -> list[str]:
    for odfv in contents.on_demand_feature_views:
        if odfv.name == name:
            return [p.name for p in getattr(odfv, "source_feature_view_projections", {}).values()]
    return []


# ---- bad input: FeatureServices and view versions ------------------------------------------

def check_services(contents) -> None:
    """Refuse (:class:`~core.errors.DefinitionError`) a FeatureService naming a view (or a
    version of one) that ``feature_repo/`` does not define, or two versions of one view."""
    defined = {v.name for kind in ("feature_views", "stream_feature_views", "on_demand_feature_views")
               for v in getattr(contents, kind)}
    problems = []
    for service in contents.feature_services:
        names = [p.name for p in service.feature_view_projections]
        for name in names:
            if name not in defined:
                base = view_version(name)[0]
                versions = sorted(v for v in defined if view_version(v)[0] == base)
                problems.append(f"FeatureService {service.name!r} names feature view {name!r}, which feature_repo/ "
                                f"does not define (defined versions of {base!r}: {versions or 'none'}; "
                                "is it exported by repo.py?)")
        by_base: dict[str, list[str]] = {}
        for name in names:
            by_base.setdefault(view_version(name)[0], []).append(name)
        for base, versions in sorted(by_base.items()):
            if len(set(versions)) > 1:
                problems.append(f"FeatureService {service.name!r} names {len(set(versions))} versions of feature "
                                f"view {base!r} ({', '.join(sorted(set(versions)))}): a service reads one version")
    if problems:
        raise DefinitionError("; ".join(problems) + ". Nothing was applied.")


# ---- what was applied, what a model was trained on ------------------------------------------

def record_path(settings: Settings) -> Path:
    return settings.models / RECORD_FILE


def applied(settings: Settings) -> dict | None:
    """The fingerprints the last apply recorded, by view (None: nothing recorded yet)."""
    return read_record(record_path(settings))


def read_record(path: Path) -> dict | None:
    """The views of a ``definitions.json`` (None: there is none); a broken one is an error
    naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable ({e}); run `pipeline apply` to write it again") from e
    views = data.get("views") if isinstance(data, dict) else None
    if not isinstance(views, dict):
        raise PipelineError(f"{path}: no \"views\" object; run `pipeline apply` to write it again")
    return views


def write_applied(settings: Settings, views: dict[str, dict]) -> None:
    atomic_write(record_path(settings), json.dumps(
        {"applied_at": datetime.now(timezone.utc).isoformat(), "views": views}, indent=2, sort_keys=True).encode())


def pins(views: dict[str, dict], projections: list[tuple[str, str, list[str]]]) -> dict:
    """What a model's metadata records: per feature column (``view__feature``) its view,
    feature and fingerprint, and per view its parts. ``projections``: the FeatureService's
    ``(view name, name used in columns, [feature, ...])``."""
    features: dict[str, dict] = {}
    used: dict[str, dict] = {}
    for view, prefix, names in projections:
        if view not in views:
            raise DefinitionError(f"feature view {view!r} of the FeatureService has no recorded definition: "
                                  "run `pipeline apply`")
        used[view] = {"fingerprint": views[view]["fingerprint"], "parts": views[view]["parts"]}
        for name in names:
            features[f"{prefix}__{name}"] = {"view": view, "feature": name,
                                             "fingerprint": views[view]["features"].get(name)}
    return {"features": features, "views": used}


@dataclass(frozen=True)
class Drift:
    """A pinned view whose current definition differs: ``changes`` are part names."""

    view: str
    changes: tuple[str, ...]
    features: tuple[str, ...]

    def describe(self) -> str:
        what = ", ".join(describe_part(p) for p in self.changes)
        return f"feature view {self.view!r}: {what} (features {', '.join(self.features)})"


def describe_part(part: str) -> str:
    kind, _, name = part.partition(":")
    if part == "removed":
        return "the view is no longer defined"
    labels = {"sql": f"the SQL building source table {name} changed",
              "raw": f"raw table {name}'s columns or normalisation changed",
              "entity": f"entity {name} changed (join key or type)",
              "feature": f"feature {name}'s definition (type) changed",
              "view": f"the view {name} it reads changed"}
    if name and kind in labels:
        return labels[kind]
    named = {"ttl": "the TTL changed", "entities": "the entities changed",
             "udf": "the on-demand function's code changed",
             "batch_source": "the source changed", "stream_source": "the stream source changed",
             "aggregations": "an aggregation's spec changed", "sources": "the on-demand inputs changed"}
    return named.get(part, f"{part} changed")


def drift(pinned: dict, views: dict[str, dict], scope: Callable[[str], bool] = lambda part: True) -> list[Drift]:
    """The pinned views (a model's ``"definitions"``) whose parts differ from ``views`` for
    the pinned features, restricted to parts ``scope`` accepts."""
    by_view: dict[str, list[dict]] = {}
    for column, pin in pinned.get("features", {}).items():
        by_view.setdefault(pin["view"], []).append({**pin, "column": column})
    out = []
    for view, features in sorted(by_view.items()):
        columns = tuple(f["column"] for f in features)
        now = views.get(view)
        if now is None:
            out.append(Drift(view, ("removed",), columns))
            continue
        if all(now["features"].get(f["feature"]) == f["fingerprint"] for f in features):
            continue
        before = pinned.get("views", {}).get(view, {}).get("parts", {})
        mine = {f"feature:{f['feature']}" for f in features}
        relevant = [p for p in sorted(set(before) | set(now["parts"]))
                    if (not p.startswith("feature:") or p in mine) and scope(p)
                    and before.get(p) != now["parts"].get(p)]
        if relevant:
            out.append(Drift(view, tuple(relevant), columns))
        elif not before and scope("unknown"):
            out.append(Drift(view, ("definition",), columns))
    return out


# ---- the registry, as files (pipeline is below training: read, never written here) -----------

def registered_models(settings: Settings) -> tuple[str | None, dict[str, dict]]:
    """(the champion's version or None, {version: metadata} of every registered model)."""
    root = settings.models
    champion = None
    path = root / "champion.json"
    if path.is_file():
        try:
            champion = json.loads(path.read_text())["version"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PipelineError(f"{path}: unreadable ({e}): cannot tell which definitions the champion is "
                                "pinned to; fix it (`training promote VERSION`)") from e
    models = {}
    for meta in sorted(root.glob("*/metadata.json")) if root.is_dir() else []:
        try:
            models[meta.parent.name] = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
    return champion, models


def check_champion(settings: Settings, views: dict[str, dict], stage: str,
                   scope: Callable[[str], bool] = lambda part: True, say: Callable[[str], None] = None) -> None:
    """Refuse (:class:`DefinitionChangeRefused`) what would change a view the champion is
    pinned to, unless the view is in ``settings.allow_definition_change`` (then say so)."""
    say = say or _stderr
    allowed = set(settings.allow_definition_change)
    unknown = sorted(v for v in allowed if v not in views)
    if unknown:
        raise ConfigError(f"--allow-definition-change {', '.join(unknown)}: no such feature view in "
                          f"{settings.feature_repo} (views: {', '.join(sorted(views))})")
    champion, models = registered_models(settings)
    pinned = (models.get(champion) or {}).get("definitions") if champion else None
    if not pinned:
        return
    before = applied(settings)
    drifts = drift(pinned, views, scope)
    refused = [d for d in drifts if d.view not in allowed and _pending(d, views, before)]
    for d in drifts:
        if d.view in allowed or not _pending(d, views, before):
            say(f"warning: {d.describe()}: the champion {champion} was trained on the old definition "
                + ("(allowed by --allow-definition-change)" if d.view in allowed else "(applied earlier)")
                + "; retrain and promote a model on the new one: a server that restarts refuses the champion")
    if refused:
        others = sorted(v for v, meta in models.items() if v != champion
                        and any(drift((meta.get("definitions") or {}), views, scope)))
        raise DefinitionChangeRefused(
            f"{stage} refused: feature_repo/ changes what the champion model {champion} sees: "
            + "; ".join(d.describe() for d in refused)
            + (f". Registered models also trained on the old definitions: {', '.join(others)}" if others else "")
            + ". Nothing was written. Publish the change as a new version of the view, side by side "
            f"(e.g. {view_version(refused[0].view)[0]}_v{view_version(refused[0].view)[1] + 1}, in a new "
            "FeatureService), or change it deliberately with --allow-definition-change "
            f"{' --allow-definition-change '.join(sorted({d.view for d in refused}))} and retrain and promote "
            "a model on the new definition.")


def _pending(d: Drift, views: dict[str, dict], before: dict | None) -> bool:
    """Whether ``d`` is (partly) a change this run would make: one the last apply did not
    record already (an allowed change stays allowed; it is not refused on every later run)."""
    if before is None or d.view not in before:
        return True
    now = views.get(d.view, {}).get("parts", {})
    return d.view not in views or any(before[d.view]["parts"].get(p) != now.get(p) for p in d.changes)


def guard_sources(settings: Settings, use_case, say: Callable[[str], None] = None) -> None:
    """The features stage's check, before it builds anything: refuse new SQL under a view
    the champion is pinned to (:func:`check_champion` over :func:`source_part` parts).
    Nothing to compute when no champion is pinned and nothing is allowed."""
    champion, models = registered_models(settings)
    if not ((models.get(champion) or {}).get("definitions") if champion else None) \
            and not settings.allow_definition_change:
        return
    check_champion(settings, current(settings, use_case), "features", scope=source_part, say=say)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def source_part(part: str) -> bool:
    """The parts the features stage writes: source tables' SQL (and the raw tables they read)."""
    return part.startswith(("sql:", "raw:"))


# ---- plan -----------------------------------------------------------------------------------

def plan(settings: Settings, views: dict[str, dict]) -> dict:
    """The definition changes pending in ``feature_repo/`` against the last apply, and for
    each the registered models (and whether the champion) trained on the old definition."""
    before = applied(settings) or {}
    champion, models = registered_models(settings)
    changes = []
    for name in sorted(set(before) | set(views)):
        old, new = before.get(name), views.get(name)
        if old is not None and new is not None and old["fingerprint"] == new["fingerprint"]:
            continue
        if old is None:
            entry = {"view": name, "change": "added", "parts": []}
        elif new is None:
            entry = {"view": name, "change": "removed", "parts": []}
        else:
            parts = sorted(p for p in set(old["parts"]) | set(new["parts"])
                           if old["parts"].get(p) != new["parts"].get(p))
            entry = {"view": name, "change": "changed", "parts": parts,
                     "description": ", ".join(describe_part(p) for p in parts)}
        affected = {}
        for version, meta in sorted(models.items()):
            for d in drift(meta.get("definitions") or {}, views):
                if d.view == name:
                    affected[version] = {"features": list(d.features), "champion": version == champion}
        entry["models"] = affected
        entry["refused"] = (any(m["champion"] for m in affected.values())
                            and name not in settings.allow_definition_change)
        changes.append(entry)
    return {"champion": champion, "changes": changes}


def service_pins(settings: Settings, use_case, store, service_name: str) -> dict:
    """:func:`pins` of a FeatureService of the Feast registry ``store`` reads, from the
    fingerprints the last apply recorded (else from ``feature_repo/`` as it is)."""
    service = store.get_feature_service(service_name)
    projections = [(p.name, p.name_to_use(), [f.name for f in p.features]) for p in service.feature_view_projections]
    return pins(applied(settings) or current(settings, use_case), projections)
