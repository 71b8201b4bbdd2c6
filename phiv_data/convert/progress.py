"""A one-line progress display for long conversions, on stderr, with no dependency.

On a terminal the line is redrawn in place a few times a second; in a log (stderr not a
terminal) a plain line is printed every ``log_every`` seconds. Nothing is shown during the
first ``delay`` seconds, so short runs stay quiet.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts finished work items and shows rate and time left.

    Args:
        total: number of items this run has to process.
        label: what is being done, e.g. ``"convert ucf101"``.
        unit: what an item is, e.g. ``"videos"``.
        enabled: ``False`` shows nothing; ``None`` shows it after ``delay`` seconds.
        stream: where to write (stderr by default).
    """

    def __init__(self, total: int, *, label: str, unit: str = "items",
                 enabled: bool | None = None, stream: TextIO | None = None,
                 delay: float = 2.0, log_every: float = 30.0) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.enabled = enabled is not False
        self.stream = stream if stream is not None else sys.stderr
        self.delay = 0.0 if enabled else delay
        self.log_every = log_every
        self.done = 0
        self.skipped = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False
        self._drawn_done = -1
        self._resumed = 0
        isatty = getattr(self.stream, "isatty", None)
        self._interactive = bool(isatty and isatty())

    def resume(self, count: int, *, skipped: int = 0) -> None:
        """Count items finished by an earlier run (they do not count towards the rate)."""
        self.done += count
        self.skipped += skipped
        self._resumed += count

    def update(self, count: int = 1, *, skipped: int = 0) -> None:
        """Record ``count`` more finished items (``skipped`` of them skipped)."""
        self.done += count
        self.skipped += skipped
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self._start
        if elapsed < self.delay:
            return
        interval = 0.25 if self._interactive else self.log_every
        if self._drawn and now - self._last_draw < interval and self.done < self.total:
            return
        self._draw(now)

    def line(self) -> str:
        """The current status line (without terminal control characters)."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        rate = (self.done - self._resumed) / elapsed
        percent = 100.0 * self.done / self.total if self.total else 100.0
        text = (f"{self.label}: {self.done}/{self.total} {self.unit} ({percent:.1f}%), "
                f"{rate:.1f} {self.unit}/s")
        if rate > 0 and self.done < self.total:
            text += f", {_duration((self.total - self.done) / rate)} left"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self._drawn = True
        self._drawn_done = self.done
        if self._interactive:
            self.stream.write("\r\x1b[2K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Finish the display (a final line if anything was shown)."""
        if self.enabled and self._drawn:
            if not self._interactive and self._drawn_done == self.done:
                return  # the last line logged is already the final one
            if self._interactive:
                self.stream.write("\r\x1b[2K" + self.line() + "\n")
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()
