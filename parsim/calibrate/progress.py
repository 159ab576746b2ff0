"""A plain progress bar on stderr (stdlib only); ``enabled=False`` silences it."""
from __future__ import annotations

import sys
import time


class Progress:
    """``label [#####-----]  50%  5/10  12s`` redrawn in place; line by line off a terminal."""

    def __init__(self, label: str, total: int, *, enabled: bool = True, stream=None, width: int = 30):
        self.label, self.total, self.done = label, max(int(total), 1), 0
        self.enabled, self.width = enabled, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, done: int | None = None, total: int | None = None) -> None:
        """Set (or advance by one) the work done, and optionally a new total."""
        if total is not None:
            self.total = max(int(total), 1)
        self.done = self.done + 1 if done is None else int(done)
        self._draw()

    def close(self) -> None:
        if not self.enabled:
            return
        self.done = self.total
        self._draw(force=True)
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        now = time.monotonic()
        if self.tty:
            if not force and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            end = "\r"
        else:
            decile = int(frac * 10)
            if not force and decile <= self._last_decile:
                return
            self._last_decile = decile
            end = "\n"
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"{self.label} [{bar}] {frac:4.0%} {min(self.done, self.total)}/{self.total}"
                f" {now - self.t0:5.1f}s")
        self.stream.write(("\r" if self.tty else "") + text + ("" if self.tty else end))
        self.stream.flush()
