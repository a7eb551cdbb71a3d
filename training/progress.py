"""Progress for the long steps, on stderr: one line per step, redrawn in place on a terminal,
a line per 10 % (at most one every 2 s) otherwise, so logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._label = ""
        self._started = 0.0
        self._last_fraction = -1.0
        self._last_line = 0.0

    def step(self, label: str) -> None:
        """Begin a step; its fractions follow through `update` and it ends with `done`."""
        self._label = label
        self._started = time.monotonic()
        self._last_fraction = -1.0
        self._last_line = 0.0
        self._write(f"{label} …", final=False)

    def update(self, fraction: float, detail: str = "") -> None:
        fraction = min(1.0, max(0.0, fraction))
        now = time.monotonic()
        if not self.tty and (fraction - self._last_fraction < 0.1 or now - self._last_line < 2.0):
            return
        self._last_fraction = fraction
        self._last_line = now
        elapsed = now - self._started
        eta = f", {elapsed / fraction - elapsed:.0f} s left" if 0.02 < fraction < 1 else ""
        suffix = f" {detail}" if detail else ""
        self._write(f"{self._label} {fraction * 100:5.1f}%{suffix}{eta}", final=False)

    def done(self, detail: str = "") -> None:
        elapsed = time.monotonic() - self._started
        suffix = f": {detail}" if detail else ""
        self._write(f"{self._label} done in {elapsed:.1f} s{suffix}", final=True)

    def note(self, text: str) -> None:
        self._write(text, final=True)

    def _write(self, text: str, *, final: bool) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
