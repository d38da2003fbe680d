"""The progress line of a long command (`prepare`'s videos, `test`'s clips): one self-overwriting line on stderr."""

from __future__ import annotations

import sys
import time
from types import TracebackType


class Progress:
    """"<label>: done/total <unit>, <rate> <unit>/s, ETA <s> s", redrawn at most every `interval` seconds and at the
    end (then ended with a newline). Use it as a context manager: a line left unfinished (an error met on the way)
    is ended on exit, so that what is printed next starts on a line of its own."""

    def __init__(self, total: int, *, label: str, unit: str, enabled: bool = True, interval: float = 0.5) -> None:
        self.total, self.label, self.unit, self.enabled, self.interval = total, label, unit, enabled, interval
        self.start = self.last = time.monotonic()
        self.open_line = False  # a line is drawn and not yet ended

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < self.interval and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        print(f"\r{self.label}: {done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, ETA {eta:.0f} s ", end="",
              file=sys.stderr, flush=True)
        self.open_line = done < self.total
        if not self.open_line:
            print(file=sys.stderr)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.open_line:
            print(file=sys.stderr, flush=True)
            self.open_line = False
