"""Progress of a long command on stderr: tqdm's bar on a terminal, plain lines elsewhere.

Into a pipe or a log file a bar redrawn with carriage returns is one long line of block
characters; there a line like ``case.mha: 61 / 840 frames · 3.8/s · 3 min 26 s left`` comes
every :data:`PLAIN_SECONDS` seconds instead (as ``fetaliqa demo`` prints its progress).
"""

from __future__ import annotations

import math
import sys
import time

PLAIN_SECONDS = 10.0


def format_duration(seconds: float | None) -> str:
    """``1 h 05 min``, ``3 min 07 s``, ``42 s``; empty when unknown (None, NaN, negative)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class PlainProgress:
    """The part of tqdm's interface the commands use (``n``, ``total``, ``refresh``, ``reset``,
    ``set_description``, ``close``), writing a plain line at most every :data:`PLAIN_SECONDS`."""

    def __init__(self, total: int, desc: str, disable: bool = False, file=None, unit: str = "frame") -> None:
        self.total, self.desc, self.disable, self.unit = total, desc, disable, unit
        self.file = file
        self.n = 0
        self._start = time.monotonic()
        self._last = self._start

    def refresh(self) -> None:
        now = time.monotonic()
        if self.disable or now - self._last < PLAIN_SECONDS:
            return
        self._last = now
        elapsed = now - self._start
        text = f"  {self.desc}: {self.n} / {self.total} {self.unit}s"
        if self.n > 0 and elapsed > 0:
            rate = self.n / elapsed
            left = format_duration((self.total - self.n) / rate)
            text += f" · {rate:.1f}/s" + (f" · {left} left" if left else "")
        print(text, file=self.file or sys.stderr, flush=True)

    def reset(self, total: int) -> None:
        self.total, self.n = total, 0
        self._start = time.monotonic()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, disable: bool = False, unit: str = "frame"):
    """tqdm's bar on stderr when it is a terminal, else :class:`PlainProgress`."""
    stream = sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return PlainProgress(total, desc, disable=disable, file=stream, unit=unit)
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=disable, file=stream, dynamic_ncols=True)
