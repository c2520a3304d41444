"""Shared helpers for benchmarks: machine facts, isolated runs with peak memory, results JSON.

Every benchmark compares this project with its anchor *in the same run* and reports
ratios; it writes ``bench/results/<name>.json`` with this shape::

    {"benchmark": name, "description": ..., "machine": {...}, "created_at": ...,
     "rows":  [{"case": ..., "variant": ..., <metric>: ..., ...}, ...],
     "goals": [{"goal": ..., "value": ..., "target": ..., "met": bool}, ...]}

``bench/report.py`` renders every results file into README.md's summary and docs/benchmarks.md.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    versions = {}
    for name in ("feast", "duckdb", "xgboost-cpu", "pandas", "flask", "gunicorn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_gib, 1), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


class _TreePeak:
    """Samples the resident memory of this process and all its descendants (a JVM that
    Spark starts, for instance), keeping the peak. ``ru_maxrss`` alone misses children."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self._psutil = psutil
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _sample(self) -> int:
        me = self._psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except self._psutil.Error:
                pass
        return total

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _child(conn, fn: Callable, args: tuple) -> None:
    start = time.perf_counter()
    with _TreePeak() as tree:
        try:
            value = fn(*args)
            error = None
        except BaseException as e:  # reported to the parent, which raises
            value, error = None, f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - start
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_mib = max(own_peak, tree.peak) / 2**20
    conn.send({"wall_s": wall, "peak_mib": peak_mib, "value": value, "error": error})
    conn.close()


def run_isolated(fn: Callable, *args: Any, timeout: float | None = None) -> dict:
    """Run ``fn(*args)`` in a fresh process; return wall time, the peak RSS (MiB) of that
    process and its descendants, and ``fn``'s (picklable, small) return value. ``fn`` must
    be a module-level function. Past ``timeout`` seconds the process (and its children)
    is killed and ``{"timeout": True, "wall_s": timeout}`` returned."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child, fn, args))
    process.start()
    child.close()
    if not parent.poll(timeout):
        import psutil

        for p in psutil.Process(process.pid).children(recursive=True):
            p.kill()
        process.kill()
        process.join()
        return {"timeout": True, "wall_s": timeout}
    result = parent.recv()
    process.join()
    if result["error"]:
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed: {result['error']}")
    return result


def cells(items, desc: str, total: int | None = None):
    """The benchmark's cells (``items``), with progress on stderr (``core.progress``: a bar on
    a terminal, else a line after each cell). Print results meanwhile with :func:`say`."""
    return track(items, desc, total=total, unit="cells", every=0, force=True)


def cell_bar(desc: str, total: int):
    """A :class:`core.progress.Bar` over ``total`` cells (nested loops): ``update()`` after each."""
    from core.progress import Bar

    return Bar(desc, total=total, unit="cells", every=0, force=True)


def say(*values) -> None:
    """print(), without breaking a progress bar being drawn."""
    from core.progress import write

    write(" ".join(str(v) for v in values))


def track(items, desc: str, total: int | None = None, unit: str = "", every: float = 0, force: bool = True):
    from core.progress import track as progress_track

    return progress_track(items, desc, total=total, unit=unit, every=every, force=force)


def write_result(name: str, description: str, rows: list[dict], goals: list[dict] | None = None,
                 extra: dict | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "description": description, "machine": machine(),
               "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "rows": rows, "goals": goals or [], **(extra or {})}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    met = sum(1 for g in payload["goals"] if g.get("met"))
    say(f"{name}: {len(rows)} result rows, {met}/{len(payload['goals'])} goals met; results: {path} "
        "(tables: python bench/report.py)")
    return path
