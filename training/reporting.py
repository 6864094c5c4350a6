"""Output of a training run: progress for people and programs, JSON files without NaN."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from fetaliqa_core import files


class Reporter:
    """Progress for people (tqdm on stderr) and for programs (``PROGRESS`` lines on stdout)."""

    def __init__(self, enabled: bool, bar: bool) -> None:
        self.enabled = enabled
        self.bar_enabled = enabled and bar
        self._bar = None

    def line(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        parts = [kind]
        for k, v in fields.items():
            if isinstance(v, float):
                v = f"{v:.4g}" if math.isfinite(v) else "nan"
            parts.append(f"{k}={v}")
        text = " ".join(parts)
        if self._bar is not None:
            self._bar.clear()
        print(text, flush=True)
        if self._bar is not None:
            self._bar.refresh()

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str):
        if not self.bar_enabled:
            return None
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, mininterval=0.5)
        return self._bar

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path, data)
