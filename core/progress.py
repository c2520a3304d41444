"""Stage-by-stage progress on stderr, with wall times kept for the run summary."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class Progress:
    total: int
    stream: object = sys.stderr
    timings: dict[str, float] = field(default_factory=dict)
    _done: int = 0

    def say(self, message: str) -> None:
        print(f"      {message}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator["Progress"]:
        self._done += 1
        print(f"[{self._done}/{self.total}] {name} ...", file=self.stream, flush=True)
        start = time.perf_counter()
        try:
            yield self
        finally:
            elapsed = time.perf_counter() - start
            self.timings[name] = round(elapsed, 2)
            print(f"[{self._done}/{self.total}] {name}: {elapsed:.1f}s", file=self.stream, flush=True)
