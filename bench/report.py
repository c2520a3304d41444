"""Render bench/results/*.json into the README between the benchmark markers.

Run by ``make bench`` after the benchmarks; the README's table always comes from these files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10 ** (digits - 1) else f"{value:,.0f}"
    return str(value)


def render(results: list[dict]) -> str:
    out = []
    for result in results:
        out.append(f"#### {result['benchmark']}\n")
        out.append(f"{result['description']} ({result['created_at']}, {result['machine']['cpus']} cores)\n")
        rows = result["rows"]
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            out.append("| " + " | ".join(columns) + " |")
            out.append("|" + "---|" * len(columns))
            for row in rows:
                out.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
            out.append("")
        if result.get("goals"):
            out.append("| goal | measured | target | met |")
            out.append("|---|---|---|---|")
            for g in result["goals"]:
                # Four digits: a measurement next to its target must not round onto it (1.3008 vs 1.3).
                out.append(f"| {g['goal']} | {_fmt(g['value'], 4)} | {g['target']} | {_fmt(g['met'])} |")
            out.append("")
    return "\n".join(out)


def main() -> int:
    files = sorted((ROOT / "bench" / "results").glob("*.json"))
    results = [json.loads(p.read_text()) for p in files]
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"{readme} lacks the {START} / {END} markers", file=sys.stderr)
        return 1
    body = render(results) if results else "_No results yet: run `make bench`._\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{body}\n{END}{tail}")
    print(f"README benchmark section: {len(results)} result file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
