"""What the sonographer acts on: good frames, the best frame, the abdominal circumference.

Pure numpy / OpenCV; no model, no Qt. Four groups:

- **AC measurement** the ACOUSLIC-AI challenge's way (:func:`measure_ac`): mask on the original
  frame geometry, field-of-view (FOV) masking, contour points on the FOV border dropped, an
  ellipse fitted with ``cv2.fitEllipse``, circumference by Ramanujan's first formula, times the
  pixel spacing. Gestational age from it by Hadlock (:func:`hadlock_ga`).
- **Quality curves and flags** (:func:`flag_frames`, :func:`best_frames`,
  :func:`choose_case_frame`, :func:`smooth_curve`) from the engine's per-frame scores.
- **Challenge metrics** per case (:func:`case_metrics`: WFSS, NAE_AC, DSC_soft, ranking score)
  and their aggregate (:func:`aggregate_case_metrics`).
- **Per-frame metrics** (:func:`binary_metrics`, :func:`dice`, :func:`dice_per_frame`).

Conventions: frame arrays are ``(N,)`` with one entry per frame of the case; masks are
``(H, W)`` (one frame) or ``(N, H, W)`` (a case), any integer/bool dtype, non-zero = abdomen
(labels 1 optimal and 2 suboptimal both count, as in the challenge). Points and ellipse centres
are ``(x, y)`` = ``(column, row)`` in pixels, as OpenCV uses them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from fetaliqa_core import paths
from fetaliqa_core.errors import FetalIQAError

__all__ = [
    "ACOUSLIC_FRAMES_PER_SWEEP",
    "ACOUSLIC_SPACING_MM",
    "DSC_SOFT_WINDOW",
    "HADLOCK_AC_RANGE_MM",
    "ACMeasurement",
    "BestFrame",
    "BinaryMetrics",
    "CaseMetrics",
    "FrameFlags",
    "GestationalAge",
    "acouslic_fov",
    "aggregate_case_metrics",
    "best_frames",
    "binary_metrics",
    "case_metrics",
    "choose_case_frame",
    "combined_score",
    "default_sweep_ranges",
    "dice",
    "dice_per_frame",
    "ellipse_polygon",
    "flag_frames",
    "hadlock_ga",
    "measure_ac",
    "ramanujan_circumference",
    "smooth_curve",
    "wfss",
]

ACOUSLIC_FRAMES_PER_SWEEP = 140
ACOUSLIC_SPACING_MM = 0.28
FOV_FILENAME = "acouslic_fov_mask.mha"
#: Default smallest mask (pixels, after FOV masking) that gets an AC. The challenge itself has no
#: such limit (``min_area_px=0`` reproduces it); a blob of a few pixels gives a meaningless
#: "AC" of a few mm, which the app should not show. A real abdomen covers ~10^4-10^5 pixels.
DEFAULT_MIN_AREA_PX = 100
#: cv2.fitEllipse needs at least 5 points; the challenge requires more than 5.
MIN_ELLIPSE_POINTS = 6
#: DSC_soft: an unannotated chosen frame is compared with the nearest annotated frame of the
#: same sweep within this many frames, the Dice scaled by ``1 - |d| / DSC_SOFT_WINDOW``.
DSC_SOFT_WINDOW = 15

FovArg = np.ndarray | None | Literal["acouslic"]


# --------------------------------------------------------------------------------------------
# Field of view
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _fov_native() -> np.ndarray:
    path = paths.resources_dir() / FOV_FILENAME
    return _read_fov(path)


def _read_fov(path: Path) -> np.ndarray:
    try:
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except Exception as exc:  # SimpleITK raises RuntimeError with a long C++ message
        raise FetalIQAError(
            f"{path}: cannot read the field-of-view mask ({type(exc).__name__}); "
            "reinstall FetalIQA to restore the bundled resources"
        ) from None
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise FetalIQAError(f"{path}: the field-of-view mask is not a 2-D image (shape {arr.shape})")
    fov = np.ascontiguousarray(arr != 0)
    fov.setflags(write=False)
    return fov


@lru_cache(maxsize=8)
def acouslic_fov(shape: tuple[int, int] | None = None) -> np.ndarray:
    """The ACOUSLIC-AI probe's field of view as a read-only bool array ``(H, W)``.

    Read once from ``resources/acouslic_fov_mask.mha`` (562 x 744). With ``shape`` given and
    different, it is resized with nearest neighbour to ``shape = (H, W)`` (for frames of another
    size, e.g. small synthetic sweeps).
    """
    fov = _fov_native()
    if shape is None or tuple(shape) == fov.shape:
        return fov
    h, w = int(shape[0]), int(shape[1])
    out = cv2.resize(fov.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) != 0
    out.setflags(write=False)
    return out


def _resolve_fov(fov: FovArg, shape: tuple[int, int]) -> np.ndarray | None:
    if fov is None:
        return None
    if isinstance(fov, str):
        if fov != "acouslic":
            raise ValueError(f"fov must be an array, None or 'acouslic', not {fov!r}")
        return acouslic_fov(tuple(shape))
    fov = np.asarray(fov)
    if fov.shape != tuple(shape):
        raise ValueError(f"FOV mask shape {fov.shape} does not match the frame shape {tuple(shape)}")
    return fov != 0


# --------------------------------------------------------------------------------------------
# AC measurement
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ACMeasurement:
    """An abdominal circumference fitted on one frame's mask.

    ``center`` is ``(x, y)`` in pixels of the original frame; ``axes`` are the ellipse's two
    *semi*-axes in pixels and ``angle`` its rotation in degrees, exactly as ``cv2.ellipse(img,
    center, axes, angle, 0, 360, ...)`` takes them (the first axis is rotated by ``angle`` from
    the x axis towards +y, i.e. clockwise on screen). :func:`ellipse_polygon` turns them into
    points for drawing. ``n_points``: contour points used by the fit; ``truncated``: some
    contour points lay on the FOV border / image edge and were dropped.
    """

    ac_mm: float
    center: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    n_points: int
    truncated: bool
    spacing_mm: tuple[float, float]

    def to_dict(self) -> dict:
        return asdict(self)


def ramanujan_circumference(a: float, b: float) -> float:
    """Ellipse perimeter from its semi-axes by Ramanujan's first approximation."""
    return float(math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b))))


def _as_spacing(spacing_mm: float | Sequence[float]) -> tuple[float, float]:
    if np.ndim(spacing_mm) == 0:
        s = float(spacing_mm)  # type: ignore[arg-type]
        row, col = s, s
    else:
        row, col = (float(v) for v in spacing_mm)  # type: ignore[union-attr]
    if not (row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col)):
        raise ValueError(f"pixel spacing must be positive, got {spacing_mm!r}")
    return row, col


def _border_zone(fov: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """Pixels within 1 px (8-neighbourhood) of a non-FOV pixel or of the image edge."""
    h, w = shape
    outside = np.ones((h + 2, w + 2), dtype=np.uint8)
    outside[1:-1, 1:-1] = 0 if fov is None else (~fov).astype(np.uint8)
    near = cv2.dilate(outside, np.ones((3, 3), np.uint8))
    return near[1:-1, 1:-1] != 0


def _fit(points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], float] | None:
    (cx, cy), (w, h), angle = cv2.fitEllipse(points.astype(np.float32).reshape(-1, 1, 2))
    values = (cx, cy, w, h, angle)
    if not all(math.isfinite(v) for v in values) or w <= 0 or h <= 0:
        return None
    return (float(cx), float(cy)), (float(w) / 2.0, float(h) / 2.0), float(angle)


def measure_ac(
    mask: np.ndarray,
    spacing_mm: float | Sequence[float] = ACOUSLIC_SPACING_MM,
    fov: FovArg = "acouslic",
    min_area_px: float = DEFAULT_MIN_AREA_PX,
) -> ACMeasurement | None:
    """Measure the abdominal circumference on one frame's mask; None when not measurable.

    mask: ``(H, W)`` on the ORIGINAL frame geometry (map a 224x224 model mask back first);
    non-zero pixels are the abdomen. spacing_mm: one value or ``(row_mm, col_mm)``. fov: a bool
    ``(H, W)`` field of view, None for the whole frame, or ``"acouslic"`` (default) for the
    challenge's FOV mask resized to ``(H, W)``.

    Steps: mask AND FOV -> largest outer contour (``cv2.findContours``, every boundary pixel)
    -> drop points within 1 px of a non-FOV pixel or the image edge (there the outline is the
    fan's, not the abdomen's) -> ``cv2.fitEllipse`` (needs > 5 points) -> Ramanujan on the
    semi-axes -> mm. With anisotropic spacing the points are scaled to mm before the fit, so the
    circumference is that of the ellipse in physical space; the pixel-space fit is kept for
    drawing. None when the masked region is smaller than ``min_area_px`` pixels, too few points
    remain, or the fit degenerates.

    Difference from the challenge's code, kept on purpose: it re-extracts the largest connected
    piece of the remaining outline, so an outline cut into two arcs loses the smaller arc; here
    every non-border point of the largest region's outline is used (same result for one arc).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"measure_ac expects one frame (H, W), got shape {mask.shape}")
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    row_mm, col_mm = _as_spacing(spacing_mm)
    fov_mask = _resolve_fov(fov, shape)

    region = mask != 0
    if fov_mask is not None:
        region &= fov_mask
    if not region.any():
        return None
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    # Pixels of the region enclosed by this outline (contourArea underestimates small blobs).
    area_px = cv2.contourArea(largest) + len(largest) / 2.0 + 1.0
    if area_px < min_area_px:
        return None

    pts = largest.reshape(-1, 2)  # (x, y) = (col, row)
    border = _border_zone(fov_mask, shape)
    keep = ~border[pts[:, 1], pts[:, 0]]
    used = pts[keep]
    truncated = bool((~keep).any())
    if len(used) < MIN_ELLIPSE_POINTS:
        return None

    fit_px = _fit(used)
    if fit_px is None:
        return None
    center, axes, angle = fit_px
    if math.isclose(row_mm, col_mm, rel_tol=1e-9):
        ac_mm = ramanujan_circumference(*axes) * col_mm
    else:
        fit_mm = _fit(used.astype(np.float64) * np.array([col_mm, row_mm]))
        if fit_mm is None:
            return None
        ac_mm = ramanujan_circumference(*fit_mm[1])
    return ACMeasurement(
        ac_mm=float(ac_mm),
        center=center,
        axes=axes,
        angle=angle,
        n_points=int(len(used)),
        truncated=truncated,
        spacing_mm=(row_mm, col_mm),
    )


def ellipse_polygon(m: ACMeasurement, n: int = 180) -> np.ndarray:
    """``(n, 2)`` float array of ``(x, y)`` pixel points on the fitted ellipse, for drawing."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    a, b = m.axes
    th = np.deg2rad(m.angle)
    x = a * np.cos(t)
    y = b * np.sin(t)
    cx, cy = m.center
    return np.stack([cx + x * np.cos(th) - y * np.sin(th), cy + x * np.sin(th) + y * np.cos(th)], axis=1)


# --------------------------------------------------------------------------------------------
# Gestational age
# --------------------------------------------------------------------------------------------

#: AC range (mm) over which Hadlock's AC formula is used here: the formula gives 14 weeks at
#: ~75 mm and 42 weeks at ~380 mm, the gestational span of Hadlock et al.'s 1984 cohort.
#: Outside it the value is an extrapolation and is flagged.
HADLOCK_AC_RANGE_MM = (75.0, 380.0)


@dataclass(frozen=True)
class GestationalAge:
    """Gestational age estimate. ``weeks`` is NaN for a non-positive / non-finite AC."""

    weeks: float
    out_of_range: bool
    ac_mm: float


def hadlock_ga(ac_mm: float) -> GestationalAge:
    """Hadlock (1984): GA[weeks] = 8.14 + 0.753 AC + 0.0036 AC^2 with AC in cm.

    ``out_of_range`` is True outside :data:`HADLOCK_AC_RANGE_MM` (about 14-42 weeks).
    """
    ac = float(ac_mm)
    if not math.isfinite(ac) or ac <= 0:
        return GestationalAge(weeks=float("nan"), out_of_range=True, ac_mm=ac)
    cm = ac / 10.0
    weeks = 8.14 + 0.753 * cm + 0.0036 * cm * cm
    lo, hi = HADLOCK_AC_RANGE_MM
    return GestationalAge(weeks=float(weeks), out_of_range=not (lo <= ac <= hi), ac_mm=ac)


# --------------------------------------------------------------------------------------------
# Quality curves, flags, best and chosen frames
# --------------------------------------------------------------------------------------------


def default_sweep_ranges(n_frames: int, frames_per_sweep: int = ACOUSLIC_FRAMES_PER_SWEEP) -> list[tuple[int, int]]:
    """Consecutive half-open ``[start, stop)`` blocks of ``frames_per_sweep`` frames (the
    challenge's fixed layout: 6 x 140); the last block may be shorter."""
    return [(s, min(s + frames_per_sweep, n_frames)) for s in range(0, n_frames, frames_per_sweep)]


def _frame_array(x: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if x is None:
        return np.full(n, np.nan, dtype=np.float64)
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    return arr


def _n_frames(*arrays: np.ndarray | None) -> int:
    for a in arrays:
        if a is not None:
            return int(np.asarray(a).reshape(-1).shape[0])
    raise ValueError("at least one of p_cls / p_seg must be given")


def combined_score(p_cls: np.ndarray | None, p_seg: np.ndarray | None) -> np.ndarray:
    """Per-frame quality ``(N,)``: mean of ``p_cls`` and ``p_seg`` where both are scored, the
    one that is scored otherwise, NaN where neither (NaN marks "not scored / no model")."""
    n = _n_frames(p_cls, p_seg)
    stack = np.stack([_frame_array(p_cls, n, "p_cls"), _frame_array(p_seg, n, "p_seg")])
    count = np.isfinite(stack).sum(axis=0)
    total = np.where(np.isfinite(stack), stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def smooth_curve(
    values: np.ndarray, sweep_ranges: Sequence[tuple[int, int]] | None = None, window: int = 5
) -> np.ndarray:
    """NaN-aware centred moving average ``(N,) -> (N,)`` that never mixes two sweeps.

    Unscored frames (NaN) are ignored in the average; a frame with no scored neighbour in its
    window stays NaN. ``window`` is odd (even values are rounded up).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = v.shape[0]
    half = max(int(window), 1) // 2
    ranges = list(sweep_ranges) if sweep_ranges is not None else [(0, n)]
    out = np.full(n, np.nan)
    for start, stop in ranges:
        seg = v[start:stop]
        ok = np.isfinite(seg)
        csum = np.concatenate([[0.0], np.cumsum(np.where(ok, seg, 0.0))])
        ccnt = np.concatenate([[0], np.cumsum(ok)])
        idx = np.arange(seg.shape[0])
        lo = np.clip(idx - half, 0, seg.shape[0])
        hi = np.clip(idx + half + 1, 0, seg.shape[0])
        cnt = ccnt[hi] - ccnt[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = np.where(cnt > 0, (csum[hi] - csum[lo]) / np.maximum(cnt, 1), np.nan)
    return out


@dataclass(frozen=True)
class FrameFlags:
    """Per-frame calls, all ``(N,)``. A model's call is False where it did not score the frame.

    ``combined``: :func:`combined_score`. ``candidates``: combined score >= the threshold of the
    models that scored the frame (their mean when both). ``disagreements``: both models scored
    the frame and their calls differ.
    """

    scored_cls: np.ndarray
    scored_seg: np.ndarray
    cls_call: np.ndarray
    seg_call: np.ndarray
    combined: np.ndarray
    candidates: np.ndarray
    disagreements: np.ndarray


def flag_frames(
    p_cls: np.ndarray | None,
    p_seg: np.ndarray | None,
    threshold_cls: float = 0.5,
    threshold_seg: float = 0.5,
    seg_call: np.ndarray | None = None,
) -> FrameFlags:
    """Candidate good frames and classifier/segmenter disagreements.

    p_cls, p_seg: ``(N,)`` scores in [0, 1], NaN where not scored (or None: no such model).
    seg_call: optional ``(N,)`` bool segmenter call (e.g. the 1 % area rule) used instead of
    ``p_seg >= threshold_seg``; it only counts where ``p_seg`` is scored.
    """
    n = _n_frames(p_cls, p_seg)
    pc = _frame_array(p_cls, n, "p_cls")
    ps = _frame_array(p_seg, n, "p_seg")
    scored_cls = np.isfinite(pc)
    scored_seg = np.isfinite(ps)
    cls_call = scored_cls & (np.where(scored_cls, pc, -np.inf) >= threshold_cls)
    if seg_call is None:
        s_call = scored_seg & (np.where(scored_seg, ps, -np.inf) >= threshold_seg)
    else:
        sc = np.asarray(seg_call, dtype=bool).reshape(-1)
        if sc.shape[0] != n:
            raise ValueError(f"seg_call has {sc.shape[0]} entries, expected {n}")
        s_call = scored_seg & sc
    combined = combined_score(pc, ps)
    thr_sum = np.where(scored_cls, threshold_cls, 0.0) + np.where(scored_seg, threshold_seg, 0.0)
    thr_cnt = scored_cls.astype(int) + scored_seg.astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        thr = np.where(thr_cnt > 0, thr_sum / np.maximum(thr_cnt, 1), np.inf)
    candidates = np.isfinite(combined) & (np.where(np.isfinite(combined), combined, -np.inf) >= thr)
    disagreements = scored_cls & scored_seg & (cls_call != s_call)
    return FrameFlags(scored_cls, scored_seg, cls_call, s_call, combined, candidates, disagreements)


@dataclass(frozen=True)
class BestFrame:
    """The best frame of one sweep. ``passes``: it is a candidate (above threshold);
    ``optimal``: the 3-class segmenter calls its plane optimal (None when unknown)."""

    sweep: int
    frame: int
    score: float
    passes: bool
    optimal: bool | None
    area_px: int


def _ranking(
    seg_area_px: np.ndarray | None, p_opt: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask area (0 where unknown) and the optimal call / its availability per frame."""
    area = np.zeros(n) if seg_area_px is None else _frame_array(seg_area_px, n, "seg_area_px")
    area = np.where(np.isfinite(area) & (area > 0), area, 0.0)
    po = _frame_array(p_opt, n, "p_opt")
    known = np.isfinite(po)
    optimal = known & (np.where(known, po, 0.0) >= 0.5)
    return area, optimal, known


def _pick(
    idx: np.ndarray, flags: FrameFlags, area: np.ndarray, optimal: np.ndarray
) -> int | None:
    """Index (into the case) of the best of the frames ``idx``: passing first, then frames
    called optimal (among passing ones), then highest combined score, larger mask, earlier."""
    comb = flags.combined[idx]
    ok = np.isfinite(comb)
    if not ok.any():
        return None
    idx = idx[ok]
    comb = comb[ok]
    passes = flags.candidates[idx]
    opt = optimal[idx] & passes
    # np.lexsort sorts by the last key first; ascending, so negate what should be largest.
    order = np.lexsort((idx, -area[idx], -comb, ~opt, ~passes))
    return int(idx[order[0]])


def best_frames(
    p_cls: np.ndarray | None,
    p_seg: np.ndarray | None,
    seg_area_px: np.ndarray | None,
    sweep_ranges: Sequence[tuple[int, int]],
    p_opt: np.ndarray | None = None,
    threshold_cls: float = 0.5,
    threshold_seg: float = 0.5,
) -> list[BestFrame | None]:
    """Best frame of each sweep (None for a sweep with no scored frame).

    Ranking among the sweep's scored frames: candidates (above threshold) first; among those,
    frames the 3-class segmenter calls optimal (``p_opt >= 0.5``, ``p_opt`` = share of the mask
    labelled optimal, NaN where unknown) before suboptimal ones; then the highest
    :func:`combined_score`; ties by the larger ``seg_area_px``, then the earlier frame.
    """
    n = _n_frames(p_cls, p_seg)
    flags = flag_frames(p_cls, p_seg, threshold_cls, threshold_seg)
    area, optimal, known = _ranking(seg_area_px, p_opt, n)
    out: list[BestFrame | None] = []
    for s, (start, stop) in enumerate(sweep_ranges):
        f = _pick(np.arange(start, stop), flags, area, optimal)
        if f is None:
            out.append(None)
            continue
        out.append(
            BestFrame(
                sweep=s,
                frame=f,
                score=float(flags.combined[f]),
                passes=bool(flags.candidates[f]),
                optimal=bool(optimal[f]) if known[f] else None,
                area_px=int(area[f]),
            )
        )
    return out


def choose_case_frame(
    p_cls: np.ndarray | None,
    p_seg: np.ndarray | None,
    seg_area_px: np.ndarray | None = None,
    p_opt: np.ndarray | None = None,
    threshold_cls: float = 0.5,
    threshold_seg: float = 0.5,
) -> int:
    """The one frame per case the challenge asks for, or -1 when no frame passes.

    Only candidates (see :class:`FrameFlags`) are eligible; among them the ranking of
    :func:`best_frames` applies across all sweeps (optimal-called first when ``p_opt`` is given,
    then combined score, then mask area, then the earlier frame).
    """
    n = _n_frames(p_cls, p_seg)
    flags = flag_frames(p_cls, p_seg, threshold_cls, threshold_seg)
    if not flags.candidates.any():
        return -1
    area, optimal, _ = _ranking(seg_area_px, p_opt, n)
    f = _pick(np.flatnonzero(flags.candidates), flags, area, optimal)
    return -1 if f is None else f


# --------------------------------------------------------------------------------------------
# Per-frame metrics
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Challenge metrics per case
# --------------------------------------------------------------------------------------------


def wfss(gt_masks: np.ndarray, chosen_frame: int, credit_abstention: bool = False) -> float:
    """Weighted frame selection score of the challenge.

    gt_masks: ``(N, H, W)`` labels (1 optimal, 2 suboptimal). 1 if the chosen frame has label 1;
    1 if it has label 2 and the case has no label 1 anywhere; 0.6 if it has label 2 while an
    optimal frame exists; 0 otherwise, including ``chosen_frame == -1`` in an annotated case.
    A case with no annotation at all scores 0 in the challenge whatever was chosen;
    ``credit_abstention=True`` instead gives 1 for answering -1 there (and 0 for any frame).
    """
    gt = np.asarray(gt_masks)
    n = gt.shape[0]
    has_opt_frame = (gt == 1).any(axis=(1, 2))
    has_sub_frame = (gt == 2).any(axis=(1, 2))
    if not (has_opt_frame.any() or has_sub_frame.any()):
        return 1.0 if (credit_abstention and chosen_frame == -1) else 0.0
    if chosen_frame == -1:
        return 0.0
    if not 0 <= chosen_frame < n:
        raise ValueError(f"chosen frame {chosen_frame} is outside 0..{n - 1}")
    if has_opt_frame[chosen_frame]:
        return 1.0
    if has_sub_frame[chosen_frame]:
        return 0.6 if has_opt_frame.any() else 1.0
    return 0.0


@dataclass(frozen=True)
class CaseMetrics:
    """Challenge metrics of one case (see :func:`case_metrics`)."""

    chosen_frame: int
    wfss: float
    nae_ac: float
    dsc_soft: float
    score: float
    ac_pred_mm: float | None
    ac_gt_mm: float | None
    dsc_reference_frame: int | None
    dsc_distance: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def _sweep_of(frame: int, sweep_ranges: Sequence[tuple[int, int]]) -> int | None:
    for s, (start, stop) in enumerate(sweep_ranges):
        if start <= frame < stop:
            return s
    return None


def _valid_ac(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) and v > 0 else None


def case_metrics(
    gt_masks: np.ndarray,
    chosen_frame: int,
    pred_mask: np.ndarray | None,
    ac_gt_per_sweep: Sequence[float | None],
    sweep_ranges: Sequence[tuple[int, int]] | None = None,
    spacing_mm: float | Sequence[float] = ACOUSLIC_SPACING_MM,
    fov: FovArg = "acouslic",
    ac_pred_mm: float | None = None,
    credit_abstention: bool = False,
) -> CaseMetrics:
    """WFSS, NAE_AC, DSC_soft and the ranking score of one case, as the challenge scores them.

    gt_masks: ``(N, H, W)`` ground-truth labels. chosen_frame: the algorithm's frame or -1.
    pred_mask: ``(H, W)`` predicted mask of the chosen frame on the original geometry (None or
    ignored when -1). ac_gt_per_sweep: reference AC (mm) per sweep, None/NaN where the sweep has
    none. sweep_ranges: default :func:`default_sweep_ranges` (6 x 140). ac_pred_mm: the predicted
    AC when already measured (else measured here with :func:`measure_ac`, ``min_area_px=0``
    like the challenge).

    - NAE_AC = |gt - pred| / max(gt, pred); 1 when either is missing (no frame, sweep without
      reference AC, mask not measurable).
    - WFSS: :func:`wfss`.
    - DSC_soft: Dice (both masks restricted to the FOV, as the challenge does) of ``pred_mask``
      with the chosen frame's annotation; when that frame is unannotated, with the nearest
      annotated frame of the same sweep within +-15 frames, scaled by ``1 - |d| / 15`` (of two
      equally near frames the better-matching counts); 0 when none or -1. In a case with no
      annotation at all it is 0, or 1 for -1 with ``credit_abstention``.
    - score = 0.5 (1 - NAE_AC) + 0.25 WFSS + 0.25 DSC_soft.
    """
    gt = np.asarray(gt_masks)
    if gt.ndim != 3:
        raise ValueError(f"gt_masks must be (N, H, W), got shape {gt.shape}")
    n, h, w = gt.shape
    ranges = list(sweep_ranges) if sweep_ranges is not None else default_sweep_ranges(n)
    chosen = int(chosen_frame)
    if chosen != -1 and not 0 <= chosen < n:
        raise ValueError(f"chosen frame {chosen} is outside 0..{n - 1} (or -1)")

    annotated = (gt != 0).any(axis=(1, 2))
    w_score = wfss(gt, chosen, credit_abstention=credit_abstention)

    pred = None
    if chosen != -1 and pred_mask is not None:
        pred = np.asarray(pred_mask)
        if pred.shape != (h, w):
            raise ValueError(f"pred_mask shape {pred.shape} differs from the frames' {(h, w)}")

    # AC
    sweep = _sweep_of(chosen, ranges) if chosen != -1 else None
    ac_gt = _valid_ac(ac_gt_per_sweep[sweep]) if sweep is not None and sweep < len(ac_gt_per_sweep) else None
    ac_pred = _valid_ac(ac_pred_mm)
    if ac_pred is None and ac_pred_mm is None and pred is not None:
        m = measure_ac(pred, spacing_mm, fov=fov, min_area_px=0)
        ac_pred = None if m is None else m.ac_mm
    if ac_gt is None or ac_pred is None:
        nae = 1.0
    else:
        nae = abs(ac_gt - ac_pred) / max(ac_gt, ac_pred, 1e-6)

    # DSC_soft
    ref: int | None = None
    dist: int | None = None
    if not annotated.any():
        dsc = 1.0 if (credit_abstention and chosen == -1) else 0.0
    elif chosen == -1:
        dsc = 0.0
    else:
        fov_mask = _resolve_fov(fov, (h, w))
        p = np.zeros((h, w), bool) if pred is None else pred != 0
        if fov_mask is not None:
            p = p & fov_mask

        def frame_dice(j: int) -> float:
            g = gt[j] != 0
            if fov_mask is not None:
                g = g & fov_mask
            return dice(p, g, empty_value=0.0)

        if annotated[chosen]:
            ref, dist, dsc = chosen, 0, frame_dice(chosen)
        else:
            start, stop = ranges[sweep] if sweep is not None else (0, n)
            dsc = 0.0
            for d in range(1, DSC_SOFT_WINDOW):
                options = [j for j in (chosen - d, chosen + d) if start <= j < stop and annotated[j]]
                if options:
                    scale = 1.0 - d / DSC_SOFT_WINDOW
                    scored = [(frame_dice(j) * scale, j) for j in options]
                    dsc, ref = max(scored)
                    dist = d
                    break
    score = 0.5 * (1.0 - nae) + 0.25 * w_score + 0.25 * dsc
    return CaseMetrics(
        chosen_frame=chosen,
        wfss=float(w_score),
        nae_ac=float(nae),
        dsc_soft=float(dsc),
        score=float(score),
        ac_pred_mm=ac_pred,
        ac_gt_mm=ac_gt,
        dsc_reference_frame=ref,
        dsc_distance=dist,
    )


def aggregate_case_metrics(cases: Sequence[CaseMetrics]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over cases of wfss, nae_ac, dsc_soft and score.

    The score's mean equals the challenge's 0.5(1 - mean NAE) + 0.25 mean WFSS + 0.25 mean DSC;
    its std is the std of the per-case scores (the challenge's leaderboard combines the stds
    linearly instead, which is not a standard deviation).
    """
    out: dict[str, dict[str, float]] = {}
    for key in ("wfss", "nae_ac", "dsc_soft", "score"):
        vals = np.array([getattr(c, key) for c in cases], dtype=np.float64)
        if vals.size == 0:
            out[key] = {"mean": float("nan"), "std": float("nan"), "n": 0}
        else:
            out[key] = {"mean": float(vals.mean()), "std": float(vals.std()), "n": int(vals.size)}
    return out
