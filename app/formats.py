"""How the app writes values that are not scores: durations (worded as the command line words them)."""

from __future__ import annotations

from fetaliqa_core.progress import format_duration  # noqa: F401
