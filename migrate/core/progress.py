"""Stage progress on stderr: one line as each long stage starts, nothing with ``quiet``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    """Prints ``[i/n] what...`` per stage and records each stage's wall time under its key."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total = total
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self._done = 0

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, key: str, description: str) -> Iterator[None]:
        self._done += 1
        self.say(f"[{self._done}/{self.total}] {description}...")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[key] = round(time.perf_counter() - start, 3)
