"""Per-frame metrics: binary classification metrics and Dice of masks.

Masks are ``(H, W)`` (one frame) or ``(N, H, W)`` (a case), any integer/bool dtype, non-zero =
foreground.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BinaryMetrics:
    """Per-frame binary classification metrics. A ratio whose denominator is 0 is 0.0 (e.g.
    precision with no positive call); all ratios are NaN when there are no frames."""

    accuracy: float
    f1: float
    precision: float
    recall: float
    specificity: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> BinaryMetrics:
    """Accuracy, F1, precision, recall (sensitivity), specificity of bool/0-1 arrays ``(N,)``."""
    t = np.asarray(y_true).reshape(-1).astype(bool)
    p = np.asarray(y_pred).reshape(-1).astype(bool)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} entries, y_pred {p.shape[0]}")
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    tn = int(np.sum(~t & ~p))
    fn = int(np.sum(t & ~p))
    n = tp + fp + tn + fn
    if n == 0:
        nan = float("nan")
        return BinaryMetrics(nan, nan, nan, nan, nan, 0, 0, 0, 0)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return BinaryMetrics(
        accuracy=(tp + tn) / n,
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        precision=precision,
        recall=recall,
        specificity=_ratio(tn, tn + fp),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def dice(pred: np.ndarray, truth: np.ndarray, empty_value: float = 1.0) -> float:
    """Dice of two masks (non-zero = foreground); ``empty_value`` when both are empty."""
    a = np.asarray(pred) != 0
    b = np.asarray(truth) != 0
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    den = int(a.sum()) + int(b.sum())
    if den == 0:
        return float(empty_value)
    return 2.0 * int(np.sum(a & b)) / den


def dice_per_frame(pred: np.ndarray, truth: np.ndarray, empty_value: float = float("nan")) -> np.ndarray:
    """Dice per frame of ``(N, H, W)`` masks -> ``(N,)``; ``empty_value`` (default NaN, so that
    ``np.nanmean`` averages over frames with some foreground) where both are empty."""
    a = np.asarray(pred) != 0
    b = np.asarray(truth) != 0
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two (N, H, W) masks of one shape, got {a.shape} and {b.shape}")
    inter = np.sum(a & b, axis=(1, 2), dtype=np.int64)
    den = np.sum(a, axis=(1, 2), dtype=np.int64) + np.sum(b, axis=(1, 2), dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * inter / np.maximum(den, 1), empty_value)

