"""Progress on stderr: the nightly flow's stages (:class:`Progress`), bars over long loops
(:class:`Bar`: views materialized, replayed days, benchmark cells) and a clock around one
long call (:func:`working`: a training set's point-in-time join).

On a terminal a bar is a tqdm bar; otherwise (CI logs, files, pipes) it is plain lines,
at most one per :data:`PLAIN_EVERY` seconds plus one at the end, so a log stays readable.
Bars and clocks show only once a command turned them on (:func:`enable`, done by
``cli.entry.run``): the same library code run by the tests, the server or a replay's
nights prints nothing. They are updated per batch, view or day, never per row.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Plain (non-terminal) output: seconds between two lines of one bar.
PLAIN_EVERY = 10.0

_state = {"enabled": False, "bars": 0, "indent": ""}


def enable(on: bool = True) -> None:
    """Turn bars and clocks on (a command's entry point) or off."""
    _state["enabled"] = on


def enabled() -> bool:
    return _state["enabled"]


@contextmanager
def muted() -> Iterator[None]:
    """No bar or clock inside (work that is one step of a longer bar, e.g. a replayed night)."""
    before = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = before


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (a bar may redraw itself there)."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def write(message: str, file=None) -> None:
    """Print a line (to stdout by default) without breaking a bar being drawn on the terminal."""
    file = sys.stdout if file is None else file
    if _state["bars"]:
        from tqdm import tqdm

        tqdm.write(message, file=file)
    else:
        print(message, file=file, flush=True)


def summary(message: str) -> None:
    """A command's last line on stderr: what it did and where its outputs are."""
    write(message, file=sys.stderr)


class Bar:
    """Progress over ``total`` items (None: unknown), ``unit`` naming them.

    :meth:`update` after each batch/view/day, with an optional ``note`` (the item just done);
    :meth:`close` (or the ``with`` block's end) prints the final line (with ``end_note``,
    e.g. where the output went; not after an exception). Plain mode prints a
    line at most every ``every`` seconds (0: after every update, for a handful of items).
    Inactive (every call a no-op) unless :func:`enable` was called, or ``force``.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "", every: float = PLAIN_EVERY,
                 stream=None, force: bool = False, end_note: str = ""):
        self.desc, self.total, self.unit, self.every, self.end_note = desc, total, unit, every, end_note
        self.stream = sys.stderr if stream is None else stream
        self.active = force or enabled()
        self.done = 0
        self.note = ""
        self.started = self._last = time.perf_counter()
        self._tqdm = None
        self._closed = False
        if self.active and is_terminal(self.stream):
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=f" {unit}" if unit else "it", file=self.stream,
                              dynamic_ncols=True, mininterval=0.5, leave=True)
            _state["bars"] += 1

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:  # no "done" line for work that failed: the error says what happened
            self.active = self.active and self._tqdm is not None
            self.close()

    def _count(self) -> str:
        total = f"/{self.total:,}" if self.total is not None else ""
        return f"{self.done:,}{total}{' ' + self.unit if self.unit else ''}"

    def update(self, n: int = 1, note: str = "") -> None:
        if not self.active:
            return
        self.done += n
        self.note = note
        if self._tqdm is not None:
            if note:
                self._tqdm.set_postfix_str(note, refresh=False)
            self._tqdm.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            tail = f" ({note})" if note else ""
            print(f"{_state['indent']}{self.desc}: {self._count()}{tail}, {now - self.started:.0f}s", file=self.stream,
                  flush=True)

    def close(self, note: str = "") -> None:
        """The final line: how many, in how long (and ``note``, else ``end_note``)."""
        if not self.active or self._closed:
            return
        self._closed = True
        note = note or self.end_note
        if self._tqdm is not None:
            if note:
                self._tqdm.set_postfix_str(note, refresh=True)
            self._tqdm.close()
            _state["bars"] -= 1
            return
        tail = f"; {note}" if note else ""
        print(f"{_state['indent']}{self.desc}: {self._count()} in {time.perf_counter() - self.started:.1f}s{tail}",
              file=self.stream, flush=True)


def track(items: Iterable[T], desc: str, total: int | None = None, unit: str = "", every: float = PLAIN_EVERY,
          note=None, force: bool = False) -> Iterator[T]:
    """``items``, with a :class:`Bar` updated after each (``note(item)``: its note)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Bar(desc, total, unit, every=every, force=force) as bar:
        for item in items:
            yield item
            bar.update(1, note(item) if note else "")


@dataclass
class Clock:
    """What :func:`working` yields: set ``note`` to what the call produced (the final line)."""

    note: str = ""


@contextmanager
def working(desc: str, detail: str = "", stream=None, force: bool = False) -> Iterator[Clock]:
    """Around one long call that reports nothing on the way: a running clock on a terminal;
    plain mode prints ``desc: detail ...`` before and ``desc: <note> in Ns`` after."""
    clock = Clock()
    stream = sys.stderr if stream is None else stream
    if not (force or enabled()):
        yield clock
        return
    started = time.perf_counter()
    if not is_terminal(stream):
        indent = _state["indent"]
        print(f"{indent}{desc}: {detail} ...", file=stream, flush=True)
        yield clock
        print(f"{indent}{desc}: {clock.note or 'done'} in {time.perf_counter() - started:.1f}s", file=stream,
              flush=True)
        return
    from tqdm import tqdm

    bar = tqdm(total=None, desc=f"{desc}: {detail}" if detail else desc, file=stream, leave=True,
               bar_format="{desc} [{elapsed}]{postfix}")
    _state["bars"] += 1
    stop = threading.Event()

    def tick():
        while not stop.wait(0.5):
            bar.refresh()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield clock
    finally:
        stop.set()
        ticker.join()
        if clock.note:
            bar.set_postfix_str(clock.note, refresh=False)
        bar.close()
        _state["bars"] -= 1


@dataclass
class Progress:
    """The stages of a run, one line as each starts and ends (with its wall time, kept in
    :attr:`timings` for the run's summary), and what the stages say on the way."""

    total: int
    stream: object = sys.stderr
    timings: dict[str, float] = field(default_factory=dict)
    _done: int = 0

    def say(self, message: str) -> None:
        write(f"      {message}", file=self.stream)

    @contextmanager
    def stage(self, name: str) -> Iterator["Progress"]:
        self._done += 1
        write(f"[{self._done}/{self.total}] {name} ...", file=self.stream)
        start = time.perf_counter()
        indent, _state["indent"] = _state["indent"], _state["indent"] + "      "  # bars inside it, under it
        try:
            yield self
        finally:
            _state["indent"] = indent
            elapsed = time.perf_counter() - start
            self.timings[name] = round(elapsed, 2)
            write(f"[{self._done}/{self.total}] {name}: {elapsed:.1f}s", file=self.stream)


__all__ = ["Bar", "Clock", "PLAIN_EVERY", "Progress", "enable", "enabled", "is_terminal", "muted", "summary",
           "track", "working", "write"]
