"""Abdominal circumference (AC) on one frame's mask, the ACOUSLIC-AI challenge's way, and the
gestational age (GA) it implies.

:func:`measure_ac`: mask on the original frame geometry, field-of-view (FOV) masking, contour
points on the FOV border dropped, an ellipse fitted with ``cv2.fitEllipse``, circumference by
Ramanujan's first formula, times the pixel spacing. :func:`hadlock_ga`: GA from AC by Hadlock.

Points and ellipse centres are ``(x, y)`` = ``(column, row)`` in pixels, as OpenCV uses them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

from fetaliqa_core import acouslic

#: Default smallest mask (pixels, after FOV masking) that gets an AC. The challenge itself has no
#: such limit (``min_area_px=0`` reproduces it); a blob of a few pixels gives a meaningless
#: "AC" of a few mm, which the app should not show. A real abdomen covers ~10^4-10^5 pixels.
DEFAULT_MIN_AREA_PX = 100
#: cv2.fitEllipse needs at least 5 points; the challenge requires more than 5.
MIN_ELLIPSE_POINTS = 6

FovArg = np.ndarray | None | Literal["acouslic"]


def resolve_fov(fov: FovArg, shape: tuple[int, int]) -> np.ndarray | None:
    """A field-of-view argument as a bool ``(H, W)`` array (None: the whole frame)."""
    if fov is None:
        return None
    if isinstance(fov, str):
        if fov != "acouslic":
            raise ValueError(f"fov must be an array, None or 'acouslic', not {fov!r}")
        return acouslic.fov_mask(tuple(shape))
    fov = np.asarray(fov)
    if fov.shape != tuple(shape):
        raise ValueError(f"FOV mask shape {fov.shape} does not match the frame shape {tuple(shape)}")
    return fov != 0




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
    #: Why no length may be shown for this outline although the sweep has a pixel size: it lies
    #: outside or across image regions calibrated differently (:meth:`fetaliqa_core.io.Sweep.outline_spacing`).
    spacing_problem: str | None = None
    #: Said with the length: measured at the size of the image region holding the outline, not the
    #: sweep's; or, for a size the user gave, that the file calibrates that region otherwise.
    spacing_note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def extrapolated_note(m: "ACMeasurement", fov=None) -> str:
    """What is said beside an AC whose outline the field of view (or, with ``fov`` None, the image's
    edge) cut, so that part of the ellipse is extrapolated, not seen (``m.truncated``): "outline cut
    by the field of view; ellipse extrapolated"; empty for a whole outline. The same words in
    ``fetaliqa ac`` and the window."""
    if m is None or not getattr(m, "truncated", False):
        return ""
    edge = "the image's edge" if fov is None else "the field of view"
    return f"outline cut by {edge}; ellipse extrapolated"


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


#: A straight stretch of a mask's outline this many times longer than the straightest stretch
#: of its own fitted ellipse (at the same tolerance) and than its next longest is an edge, not a
#: body's outline (:func:`straight_cut`): measured on whole abdomens 0.8-1.3 (also polygons of
#: 5-10 clicks: 1.0-1.1), on abdomens cut by another probe's edge 3.2-4.5.
STRAIGHT_CUT_RATIO = 2.0
#: Long straight stretches (:data:`STRAIGHT_CUT_RATIO` and more) making up at most this share of an
#: outline are cuts across a curved outline; more, and it is a polygon of a few clicks, straight all
#: round (an abdomen cut by both sides of a fan and the image's bottom: 46 %; a 5-click polygon: 100 %).
MAX_CUT_SHARE = 0.6
#: Two or three cuts stand apart from the rest of the outline by this factor in length (an abdomen
#: cut by both sides of a fan: 1.6; the sides of polygons of 6-12 unevenly spaced clicks: no gap
#: this wide among their longest).
CUT_GAP = 1.5


def _cyclic_runs(keep: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """Runs of consecutive True indices of a closed outline; (runs, whether it is all one loop)."""
    if keep.all():
        return [np.arange(len(keep))], True
    order = np.roll(np.arange(len(keep)), -int(np.argmin(keep)))  # start on a dropped point
    runs, current = [], []
    for i in order:
        if keep[i]:
            current.append(i)
        elif current:
            runs.append(np.asarray(current))
            current = []
    if current:
        runs.append(np.asarray(current))
    return runs, False


def _segments(points: np.ndarray, eps: float, closed: bool) -> np.ndarray:
    """Lengths of the straight pieces of an outline simplified at ``eps`` pixels."""
    poly = cv2.approxPolyDP(points.reshape(-1, 1, 2).astype(np.int32), eps, closed).reshape(-1, 2).astype(float)
    if len(poly) < 2:
        return np.zeros(0)
    if closed:
        poly = np.vstack([poly, poly[:1]])
    return np.hypot(*np.diff(poly, axis=0).T)


def straight_cut(mask: np.ndarray, fov: FovArg = None) -> float | None:
    """How straight the straightest stretch of ``mask``'s outline is, inside ``fov`` and away from
    its edge: its length over that of the straightest stretch of the ellipse fitted to it (both
    simplified with :func:`cv2.approxPolyDP` at 4 % of the minor semi-axis). An abdomen cut off by
    an edge the field of view does not know (another probe's fan, the image's border) shows that
    edge as a straight chord (or two or three: cut by both sides of a narrow fan) across an outline
    that is curved elsewhere. A polygon drawn with a few clicks is straight all round: the longest
    is measured over the next longest too (several sides of like length: near 1), and two or three
    cuts count only as a minor part of the outline (:data:`MAX_CUT_SHARE`) standing apart from the
    rest in length (:data:`CUT_GAP`). None when there is no outline to judge."""
    found = _largest_outline(mask, fov, "straight_cut")
    if found is None:
        return None
    largest, shape, fov_mask = found
    outline = largest.reshape(-1, 2)
    keep = ~_border_zone(fov_mask, shape)[outline[:, 1], outline[:, 0]]
    if keep.sum() < MIN_ELLIPSE_POINTS:
        return None
    fit = _fit(outline[keep])
    if fit is None:
        return None
    (cx, cy), (a, b), angle = fit
    eps = max(1.0, 0.04 * min(a, b))
    runs, closed = _cyclic_runs(keep)
    pieces = np.sort(np.concatenate([_segments(outline[r], eps, closed) for r in runs if len(r) >= 3] or [np.zeros(0)]))
    if not pieces.size or not (math.isfinite(cx) and math.isfinite(cy)) or max(a, b) > 8 * max(shape):
        return None
    ideal = cv2.ellipse2Poly((int(round(cx)), int(round(cy))), (max(int(round(a)), 1), max(int(round(b)), 1)),
                             int(round(angle)), 0, 360, 1)
    reference = float(_segments(ideal, eps, True).max(initial=0.0))
    if reference <= 0:
        return None
    longest, next_longest = float(pieces[-1]), float(pieces[-2]) if pieces.size > 1 else 0.0
    one = min(longest / reference, longest / next_longest if next_longest > 0 else math.inf)
    # two or three edges cut across an otherwise curved outline (an abdomen wider than a narrow
    # fan, cut by both its sides and the image's bottom): each far longer than the ellipse's
    # straightest stretch, together a minor part of the outline, and standing apart from the rest
    # by a clear gap in length. A polygon drawn with a few (unevenly spaced) clicks has sides of
    # every length in between: no such gap, and it stays whole.
    for k in (2, 3):
        if pieces.size <= k:
            break
        cut, rest = pieces[-k:], float(pieces[-k - 1])
        if (cut[0] >= STRAIGHT_CUT_RATIO * reference and cut.sum() <= MAX_CUT_SHARE * pieces.sum()
                and rest > 0 and cut[0] >= CUT_GAP * rest):
            return max(one, float(cut[0]) / reference)
    return one


def _largest_outline(mask, fov: FovArg, who: str):
    """The outer outline of the largest piece of ``mask`` inside ``fov`` (every boundary pixel, as
    ``cv2.findContours`` gives it) with the frame's shape and the resolved field of view:
    ``(contour, shape, fov_mask)``; None when nothing is left inside the field of view."""
    mask, shape, fov_mask = _one_frame(mask, fov, who)
    region = mask != 0
    if fov_mask is not None:
        region &= fov_mask
    if not region.any():
        return None
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    return max(contours, key=lambda c: (cv2.contourArea(c), len(c))), shape, fov_mask


def _fit(points: np.ndarray) -> tuple[tuple[float, float], tuple[float, float], float] | None:
    (cx, cy), (w, h), angle = cv2.fitEllipse(points.astype(np.float32).reshape(-1, 1, 2))
    values = (cx, cy, w, h, angle)
    if not all(math.isfinite(v) for v in values) or w <= 0 or h <= 0:
        return None
    return (float(cx), float(cy)), (float(w) / 2.0, float(h) / 2.0), float(angle)



def _one_frame(mask, fov, who: str):
    """``mask`` as one ``(H, W)`` frame, its shape and the field of view resolved for it."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{who} expects one frame (H, W), got shape {m.shape}")
    shape = (int(m.shape[0]), int(m.shape[1]))
    return m, shape, resolve_fov(fov, shape)

def measure_ac(
    mask: np.ndarray,
    spacing_mm: float | Sequence[float] = acouslic.SPACING_MM,
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
    row_mm, col_mm = _as_spacing(spacing_mm)
    found = _largest_outline(mask, fov, "measure_ac")
    if found is None:
        return None
    largest, shape, fov_mask = found
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



#: The challenge evaluator's padding around mask and field of view before the outline is found,
#: so an ellipse extending past the frame can still be fitted.
EVALUATOR_PAD_PX = 200
#: The evaluator's band along the field-of-view outline: the outline drawn 1 px wide, dilated by
#: a 3 x 3 kernel this many times; mask-outline pixels inside it are ignored.
EVALUATOR_BAND_ITERATIONS = 3


def measure_ac_evaluator(
    mask: np.ndarray,
    spacing_mm: float | Sequence[float] = acouslic.SPACING_MM,
    fov: FovArg = "acouslic",
) -> float | None:
    """The abdominal circumference (mm) exactly as the ACOUSLIC-AI evaluator computes it from a
    predicted mask, quirks included; None where the evaluator finds no ellipse.

    Steps of the organisers' evaluation code (final version, July 2024): binarise the mask, pad
    mask and FOV by 200 px of zeros, mask by the FOV; outline of every mask region
    (``RETR_TREE``, ``CHAIN_APPROX_SIMPLE``) and of the FOV drawn 1 px wide; the FOV outline
    dilated (3 x 3 kernel, 3 iterations) and mask-outline pixels in that band erased; of the
    remaining outline pixels the largest contour by area (``RETR_LIST``, every pixel) is kept and,
    when it has more than 5 points, fitted with ``cv2.fitEllipse``; Ramanujan's formula on the
    half-axes, times the pixel spacing.

    Consequences the project's own :func:`measure_ac` avoids: on a mask cut by the fan the erased
    band splits the outline into arcs and only the arc of largest *enclosed area* survives, so the
    answer is no AC or a tiny one; holes' outlines compete with the outer one. The spacing is one
    value for both axes in the evaluator (0.28 mm); with anisotropic spacing the column spacing
    is used here.
    """
    m, shape, fov_mask = _one_frame(mask, fov, "measure_ac_evaluator")
    _, col_mm = _as_spacing(spacing_mm)
    if fov_mask is None:
        fov_mask = np.ones(shape, bool)
    pad = EVALUATOR_PAD_PX
    fov_p = np.pad(fov_mask.astype(np.uint8) * 255, pad)
    region = np.pad((m != 0).astype(np.uint8) * 255, pad)
    region = np.where(fov_p != 0, region, 0).astype(np.uint8)

    fov_outline = np.zeros_like(fov_p)
    found, _ = cv2.findContours(fov_p, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(fov_outline, found, -1, 255, 1)
    band = cv2.dilate(fov_outline, np.ones((3, 3), np.uint8), iterations=EVALUATOR_BAND_ITERATIONS)

    outline = np.zeros_like(region)
    found, _ = cv2.findContours(region, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(outline, found, -1, 255, 1)
    outline[band != 0] = 0

    pieces, _ = cv2.findContours(outline, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    if not pieces:
        return None
    largest = max(pieces, key=cv2.contourArea)  # first of equal areas, as Python's max keeps
    if len(largest) <= 5:
        return None
    (_, _), (w, h), _ = cv2.fitEllipse(largest)
    if not (math.isfinite(w) and math.isfinite(h)):
        return None
    return ramanujan_circumference(w / 2.0, h / 2.0) * col_mm


def ellipse_polygon(m: ACMeasurement, n: int = 180) -> np.ndarray:
    """``(n, 2)`` float array of ``(x, y)`` pixel points on the fitted ellipse, for drawing."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    a, b = m.axes
    th = np.deg2rad(m.angle)
    x = a * np.cos(t)
    y = b * np.sin(t)
    cx, cy = m.center
    return np.stack([cx + x * np.cos(th) - y * np.sin(th), cy + x * np.sin(th) + y * np.cos(th)], axis=1)


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
    # the range is judged on the AC as it is shown (0.1 mm): 380.04 mm reads "380.0", inside it
    return GestationalAge(weeks=float(weeks), out_of_range=not (lo <= round(ac, 1) <= hi), ac_mm=ac)



def format_ga(weeks: float | None) -> str:
    """Gestational age in completed weeks and days, ``24w 3d``; an en dash when unknown."""
    if weeks is None or not math.isfinite(weeks):
        return "–"
    days = int(round(weeks * 7))
    return f"{days // 7}w {days % 7}d"


def measure_frame_ac(sweep, results, frame: int, fov: FovArg | None = None) -> ACMeasurement | None:
    """AC measured on the model mask of ``frame`` mapped back to the frame's own pixels; None when
    the frame has no mask or the mask is not measurable. ``fov`` defaults to the frame's own,
    :func:`fetaliqa_core.acouslic.frame_fov` (the sweep's, but where its fan changes between frames)."""
    from fetaliqa_core.preprocess import mask_to_frame

    mask = results.mask(frame) if frame >= 0 else None
    if mask is None or not mask.any():
        return None
    full = mask_to_frame(mask, sweep.height, sweep.width) > 0
    fov = acouslic.frame_fov(sweep, frame) if fov is None else fov
    spacing, problem, note = sweep.spacing_mm, None, ""
    if getattr(sweep, "region_calibrations", ()) and getattr(sweep, "spacing_problem", None) is None:
        # image regions of different pixel sizes (a picture-in-picture): the one holding the outline
        area = resolve_fov(fov, full.shape)
        inside = full if area is None else full & area
        from fetaliqa_core.io.spacing import SPACING_FROM_USER, given_where_outline_lies

        if getattr(sweep, "spacing_source", None) == SPACING_FROM_USER:
            # a size the user gave stands for every pixel: said where the file calibrates the outline's
            # region otherwise (given as the main image's 0.3 mm, an outline in a 0.6 mm inset read half
            # its length, plain, without a word)
            note = given_where_outline_lies(sweep.region_calibrations, tuple(sweep.spacing_mm), inside)
        else:
            found, problem, note = sweep.outline_spacing(inside)
            spacing = found or spacing  # (without one, no length is shown: ``spacing_problem``)
    m = measure_ac(full, spacing, fov=fov)
    return dataclasses.replace(m, spacing_problem=problem, spacing_note=note) if m is not None else None
