"""How the app writes values that are not scores: durations."""

from __future__ import annotations

import math


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
