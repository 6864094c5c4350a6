"""Training curves as a PNG, drawn with OpenCV (no plotting library needed).

Two panels: losses (training loss per step, faint, and its running mean; validation loss per
epoch) and validation metrics per epoch (F1, and Dice for the segmenter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

WHITE = (255, 255, 255)
GREY = (200, 200, 200)
DARK = (60, 60, 60)
COLOURS = [(200, 110, 30), (40, 40, 220), (40, 160, 40), (160, 60, 160), (0, 140, 200)]  # BGR


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    return arr[np.isfinite(arr)]


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return 0.0, 1.0
    if hi - lo < 1e-9:
        pad = abs(hi) * 0.1 + 1e-3
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def running_mean(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    window = max(1, min(int(window), v.size))
    c = np.concatenate([[0.0], np.cumsum(v)])
    out = np.empty_like(v)
    for i in range(v.size):
        lo = max(0, i - window + 1)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


class _Panel:
    def __init__(self, img: np.ndarray, x0: int, y0: int, w: int, h: int, title: str,
                 xmax: float, yrange: tuple[float, float]) -> None:
        self.img, self.x0, self.y0, self.w, self.h = img, x0, y0, w, h
        self.xmax = max(float(xmax), 1e-9)
        self.ylo, self.yhi = yrange
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), DARK, 1)
        cv2.putText(img, title, (x0, y0 - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, DARK, 1, cv2.LINE_AA)
        for k in range(5):
            yv = self.ylo + (self.yhi - self.ylo) * k / 4
            py = self.py(yv)
            cv2.line(img, (x0, py), (x0 + w, py), GREY, 1)
            cv2.putText(img, f"{yv:.3g}", (x0 - 52, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, DARK, 1, cv2.LINE_AA)

    def px(self, x: float) -> int:
        return int(round(self.x0 + self.w * x / self.xmax))

    def py(self, y: float) -> int:
        t = (y - self.ylo) / (self.yhi - self.ylo)
        return int(round(self.y0 + self.h * (1.0 - min(max(t, 0.0), 1.0))))

    def line(self, xs: Sequence[float], ys: Sequence[float], colour, thickness: int = 1, dots: bool = False) -> None:
        pts = [(self.px(x), self.py(y)) for x, y in zip(xs, ys) if math.isfinite(y)]
        if len(pts) > 1:
            cv2.polylines(self.img, [np.array(pts, np.int32)], False, colour, thickness, cv2.LINE_AA)
        if dots:
            for p in pts:
                cv2.circle(self.img, p, 3, colour, -1, cv2.LINE_AA)

    def legend(self, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
        for k, (text, colour) in enumerate(entries):
            y = self.y0 + 16 + 16 * k
            cv2.line(self.img, (self.x0 + self.w - 150, y - 4), (self.x0 + self.w - 130, y - 4), colour, 2)
            cv2.putText(self.img, text, (self.x0 + self.w - 125, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DARK, 1,
                        cv2.LINE_AA)


def draw_curves(path: str | Path, step_loss: Sequence[float], steps_per_epoch: int,
                val_loss: Sequence[float], val_metrics: dict[str, Sequence[float]],
                title: str = "") -> Path:
    """Write the training-curve PNG.

    step_loss: training loss of every optimiser step, in order. steps_per_epoch: to put steps on
    the epoch axis. val_loss: one value per finished epoch. val_metrics: name -> one value per epoch.
    """
    w, h = 900, 640
    img = np.full((h, w, 3), 255, np.uint8)
    n_epochs = max(len(val_loss), 1)
    spe = max(int(steps_per_epoch), 1)
    xmax = max(n_epochs, len(step_loss) / spe, 1.0)
    if title:
        cv2.putText(img, title, (20, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, DARK, 1, cv2.LINE_AA)
    losses = np.concatenate([_finite(step_loss), _finite(val_loss)])
    lo, hi = (float(losses.min()), float(np.percentile(losses, 99))) if losses.size else (0.0, 1.0)
    top = _Panel(img, 70, 60, w - 100, 230, "loss (faint: per step; bold: running mean; dots: validation)",
                 xmax, _nice_range(lo, hi))
    xs = (np.arange(len(step_loss)) + 1) / spe
    top.line(xs, step_loss, (230, 200, 170), 1)
    top.line(xs, running_mean(step_loss, max(spe // 4, 5)), COLOURS[0], 2)
    top.line(np.arange(1, len(val_loss) + 1), val_loss, COLOURS[1], 2, dots=True)
    top.legend([("train", COLOURS[0]), ("validation", COLOURS[1])])
    bottom = _Panel(img, 70, 360, w - 100, 230, "validation metrics", xmax, (0.0, 1.0))
    entries = []
    for k, (name, values) in enumerate(val_metrics.items()):
        colour = COLOURS[(k + 2) % len(COLOURS)]
        bottom.line(np.arange(1, len(values) + 1), values, colour, 2, dots=True)
        entries.append((name, colour))
    bottom.legend(entries)
    for e in range(0, int(math.ceil(xmax)) + 1):
        for panel in (top, bottom):
            x = panel.px(e)
            cv2.putText(img, str(e), (x - 4, panel.y0 + panel.h + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, DARK, 1,
                        cv2.LINE_AA)
    cv2.putText(img, "epoch", (w // 2 - 20, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, DARK, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")
    return path
