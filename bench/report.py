"""Render bench/results/*.json into the benchmark sections of the README and the docs site.

Both files hold a section between the benchmark markers, rewritten whole on every run:

* ``README.md``: one summary table, every goal of every benchmark and whether it was met;
* ``docs/benchmarks.md``: every result in full: its tables, the machine it ran on, and its
  notes and conclusions (any other field of the JSON, rendered generically).

Run by ``make bench`` after the benchmarks, or alone to re-render from the existing JSON;
measured numbers live in those files and these generated sections only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
#: The fields every results file has (``bench/_util.py``); any other is rendered as extra.
STANDARD = ("benchmark", "description", "machine", "created_at", "rows", "goals")


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10 ** (digits - 1) else f"{value:,.0f}"
    return str(value)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _goals(result: dict) -> list[list[str]]:
    # Four digits: a measurement next to its target must not round onto it (1.3008 vs 1.3).
    return [[g["goal"], _fmt(g["value"], 4), str(g["target"]), _fmt(g["met"])] for g in result.get("goals") or []]


def _machine(result: dict) -> str:
    m = result["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in m.get("versions", {}).items())
    return (f"_Run {result['created_at']} on {m['cpus']} cores, {m.get('memory_gib', '?')} GiB, "
            f"Python {m.get('python', '?')}" + (f"; {versions}" if versions else "") + "._")


def _leaves(value: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """A nested dict as (path, {leaf: value}) rows, one per dict that holds scalars."""
    scalars = {k: v for k, v in value.items() if not isinstance(v, dict)}
    rows = [(prefix or "value", scalars)] if scalars else []
    for key, inner in value.items():
        if isinstance(inner, dict):
            rows += _leaves(inner, f"{prefix}.{key}" if prefix else key)
    return rows


def _extras(result: dict) -> list[str]:
    """Every non-standard field: scalars and number lists as one list, dicts as tables
    (rows with the same fields share one), lists of sentences as bullets."""
    out, scalars = [], []
    for key, value in result.items():
        if key in STANDARD:
            continue
        title = key.replace("_", " ").capitalize()
        if isinstance(value, dict):
            out.append(f"{title}:\n")
            groups: list[tuple[list[str], list[list[str]]]] = []
            for path, leaves in _leaves(value):
                columns = list(leaves)
                if not groups or groups[-1][0] != columns:
                    groups.append((columns, []))
                groups[-1][1].append([path, *(_fmt(leaves[c]) for c in columns)])
            for columns, rows in groups:
                out += _table(["", *columns], rows)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            out += [f"{title}:\n", *(f"- {line}" for line in value), ""]
        elif isinstance(value, list):
            scalars.append(f"- {title}: {', '.join(_fmt(v) for v in value)}")
        else:
            scalars.append(f"- {title}: {_fmt(value)}")
    return ([*scalars, ""] if scalars else []) + out


def render_detail(results: list[dict]) -> str:
    """Every result in full, one ``###`` section each (anchors ``#<benchmark>``)."""
    out = []
    for result in results:
        out += [f"### {result['benchmark']}\n", f"{result['description']}\n", f"{_machine(result)}\n"]
        rows = result["rows"]
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            out += _table(columns, [[_fmt(row.get(c, "")) for c in columns] for row in rows])
        if result.get("goals"):
            out += _table(["goal", "measured", "target", "met"], _goals(result))
        out += _extras(result)
    return "\n".join(out)


def render_summary(results: list[dict]) -> str:
    """Every goal of every benchmark in one table, each benchmark linked to its full results."""
    rows = [[f"[{r['benchmark']}](docs/benchmarks.md#{r['benchmark']}) ({r['created_at'][:10]})", *goal]
            for r in results for goal in _goals(r)]
    return "\n".join(_table(["benchmark (run)", "goal", "measured", "target", "met"], rows))


#: Each file with a benchmark section, and how its section is rendered.
TARGETS = ((Path("README.md"), render_summary), (Path("docs") / "benchmarks.md", render_detail))


def write_section(path: Path, body: str) -> None:
    """Replace what lies between the markers in ``path`` with ``body``."""
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{path} lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{body}\n{END}{tail}")


def main(root: Path = ROOT) -> int:
    files = sorted((root / "bench" / "results").glob("*.json"))
    results = [json.loads(p.read_text()) for p in files]
    for relative, render in TARGETS:
        body = render(results) if results else "_No results yet: run `make bench`._\n"
        try:
            write_section(root / relative, body)
        except ValueError as e:
            print(e, file=sys.stderr)
            return 1
        print(f"{relative} benchmark section: {len(results)} result file(s)")
    return 0


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(prog="python bench/report.py", description=__doc__.split("\n\n")[0]).parse_args()
    sys.exit(main())
