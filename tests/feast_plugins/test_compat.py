"""Every Feast internal listed in ``feast_plugins/compat.py`` is still where the project
expects it, with the parameters it passes or overrides: one test per entry, whose failure
names what moved, who uses it and why."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from feast_plugins.compat import INTERNALS, FeastInternal

ROOT = Path(__file__).resolve().parents[2]


def _moved(entry: FeastInternal, what: str) -> str:
    import feast

    return (f"Feast {feast.__version__} moved {entry.path} ({what}; used by {', '.join(entry.used_by)} "
            f"for: {entry.why}): see feast_plugins/compat.py")


def _sets_on_instances(owner: type, name: str) -> bool:
    """Whether the code of ``owner`` (or a base class) assigns ``self.<name>``, or declares it a field."""
    if name in getattr(owner, "__dataclass_fields__", {}):
        return True
    for cls in inspect.getmro(owner):
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(name)}\s*(:[^=\n]*)?=[^=]", source):
            return True
    return False


def resolve(entry: FeastInternal):
    """The object ``entry`` names; raises AssertionError with :func:`_moved`'s message."""
    try:
        obj = importlib.import_module(entry.module)
    except ImportError as e:
        raise AssertionError(_moved(entry, f"module {entry.module} is gone: {e}")) from None
    parts = entry.name.split(".")
    for i, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif entry.instance and i == len(parts) - 1 and inspect.isclass(obj) and _sets_on_instances(obj, part):
            return None
        else:
            raise AssertionError(_moved(entry, f"{'.'.join(parts[:i]) or entry.module} has no {part!r}"))
    return obj


@pytest.mark.parametrize("entry", INTERNALS, ids=[entry.path for entry in INTERNALS])
def test_feast_internal_is_still_there(entry: FeastInternal):
    obj = resolve(entry)
    if entry.parameters:
        assert callable(obj), _moved(entry, "it is no longer callable")
        parameters = inspect.signature(obj).parameters
        missing = [p for p in entry.parameters if p not in parameters]
        assert not missing, _moved(entry, f"it no longer takes {missing}; it takes {list(parameters)}")


def test_every_listed_file_exists_and_names_no_unlisted_internal():
    """The list stays true: each file it names exists, and each private attribute the
    plugins read on an object other than their own (``x._name``, ``super()._name``) is listed."""
    for entry in INTERNALS:
        for path in entry.used_by:
            assert (ROOT / path).is_file(), f"{entry.path}: {path} does not exist"
    listed = {entry.name.rsplit(".", 1)[-1] for entry in INTERNALS}
    unlisted = []
    for path in sorted((ROOT / "feast_plugins").glob("*.py")):
        for receiver, name in re.findall(r"(\w+|\))\.(_[a-z]\w*)\b", path.read_text()):
            if receiver not in ("self", "cls") and name not in listed:
                unlisted.append(f"{path.name}: {receiver}.{name}")
    assert not unlisted, f"private attributes used but not listed in feast_plugins/compat.py: {unlisted}"


def test_no_package_outside_feast_plugins_touches_feast_internals():
    """Feast internals are feast_plugins' business: the other packages import only what
    ``feast`` itself exports (and its errors), and call no private Feast attribute."""
    packages = ("core", "validation", "pipeline", "training", "flow", "serving", "monitoring", "replay", "cli")
    bad = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            for module in re.findall(r"^\s*(?:from|import) (feast\.[\w.]+)", text, flags=re.M):
                if module != "feast.errors":
                    bad.append(f"{path.relative_to(ROOT)} imports {module}")
            for name in ("_get_provider", "_conn", "_get_conn", "_offline_store", "_online_store"):
                if re.search(rf"\.{name}\b", text):
                    bad.append(f"{path.relative_to(ROOT)} uses .{name}")
    assert not bad, bad
