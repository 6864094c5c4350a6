"""Pictures of a review report: the quality curve of a sweep and frame thumbnails with the
stored segmentation, drawn with OpenCV (no Qt), embedded as PNG data URIs."""

from __future__ import annotations

import base64
import math

import cv2
import numpy as np

from fetaliqa_core.review.store import LABEL_TITLES

#: Pictures are drawn at twice their displayed size so they stay sharp in print.
CURVE_SIZE = (1280, 400)  # (width, height) px, shown 640 wide
THUMB_WIDTH = 240  # px, shown 150 wide

MARKER_ROWS = 3  # rows of verdict markers above the curve
MARKER_SPACING = 16  # px between markers (the width of one, and the distance between rows)
ELLIPSE_BGR = (40, 220, 255)  # the AC ellipse on thumbnails: yellow, as in the viewer
# BGR colours shared by the curve and the thumbnails.
LABEL_BGR: dict[str, tuple[int, int, int]] = {
    "optimal": (60, 160, 40), "suboptimal": (0, 150, 235), "not_usable": (50, 50, 210)}
CLS_BGR = (180, 100, 30)
SEG_BGR = (30, 120, 240)
FLAG_BGR = (120, 200, 120)
CHOSEN_BGR = (170, 40, 170)
MASK_BGR = {1: (60, 200, 40), 2: (0, 190, 255)}


def png_data_uri(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.75,
          color: tuple[int, int, int] = (40, 40, 40), thickness: int = 2,
          align: str = "left") -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    x, y = org
    if align == "center":
        x -= w // 2
    elif align == "right":
        x -= w
    cv2.putText(img, text, (int(x), int(y)), font, scale, color, thickness, cv2.LINE_AA)


def _dashed_hline(img, x0, x1, y, color, dash=14, gap=9, thickness=2) -> None:
    for x in range(int(x0), int(x1), dash + gap):
        cv2.line(img, (x, y), (min(x + dash, int(x1)), y), color, thickness, cv2.LINE_AA)


def _dashed_vline(img, x, y0, y1, color, dash=10, gap=7, thickness=2) -> None:
    for y in range(int(y0), int(y1), dash + gap):
        cv2.line(img, (x, y), (x, min(y + dash, int(y1))), color, thickness, cv2.LINE_AA)


def _nice_step(n: int, target_ticks: int = 10) -> int:
    raw = max(1, n / target_ticks)
    for step in (1, 2, 5, 10, 20, 25, 50, 70, 100, 140, 200, 250, 500, 1000, 2000, 5000):
        if step >= raw:
            return step
    return int(10 ** math.ceil(math.log10(raw)))


def draw_quality_curve(n_frames: int, p_cls: np.ndarray | None, p_seg: np.ndarray | None,
                       threshold: float, sweep_ranges: Sequence[tuple[int, int]],
                       flagged: np.ndarray | None = None,
                       verdict_labels: dict[int, str] | None = None,
                       chosen_frame: int | None = None,
                       sweep_kinds: Sequence[str] | None = None,
                       size: tuple[int, int] = CURVE_SIZE) -> np.ndarray:
    """The quality curve as a BGR picture, (height, width, 3) uint8.

    p_cls, p_seg: (n_frames,) probabilities, NaN (or None) where absent; flagged: (n_frames,)
    bool; verdict_labels: {frame: label} of the frames with verdicts (latest).
    """
    width, height = size
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 96, 24, 110, 62
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    n = max(int(n_frames), 1)

    def fx(frame: float) -> int:
        return int(round(x0 + (frame + 0.5) / n * (x1 - x0)))

    def fy(p: float) -> int:
        return int(round(y1 - p * (y1 - y0)))

    # Sub-sweep bands, shaded alternately, with their names.
    for i, (start, stop) in enumerate(sweep_ranges):
        a = int(round(x0 + start / n * (x1 - x0)))
        b = int(round(x0 + stop / n * (x1 - x0)))
        if i % 2:
            cv2.rectangle(img, (a, y0), (b, y1), (245, 245, 245), -1)
        if i:
            cv2.line(img, (a, y0 - 30), (a, y1), (150, 150, 150), 2)
        kind = sweep_kinds[i] if sweep_kinds and i < len(sweep_kinds) else ""
        label = f"S{i + 1}" + (f" {kind}" if kind and kind != "unknown" and (b - a) > 170 else "")
        _text(img, label, ((a + b) // 2, y0 - 10), 0.65, (100, 100, 100), 2, "center")
    # Flagged frames: a green rug at the bottom of the plot.
    if flagged is not None:
        for f in np.flatnonzero(np.asarray(flagged, bool)):
            cv2.line(img, (fx(f), y1 - 1), (fx(f), y1 - 14), FLAG_BGR, 3)
    # Grid and y axis.
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        cv2.line(img, (x0, fy(p)), (x1, fy(p)), (225, 225, 225), 1)
        _text(img, f"{p:.2f}".rstrip("0").rstrip(".") if p not in (0.0, 1.0) else f"{p:.0f}",
              (x0 - 10, fy(p) + 8), 0.65, (80, 80, 80), 2, "right")
    cv2.rectangle(img, (x0, y0), (x1, y1), (120, 120, 120), 2)
    # X ticks.
    step = _nice_step(n)
    for f in range(0, n + 1, step):
        x = int(round(x0 + f / n * (x1 - x0)))
        cv2.line(img, (x, y1), (x, y1 + 8), (80, 80, 80), 2)
        _text(img, str(f), (x, y1 + 32), 0.65, (80, 80, 80), 2, "center")
    _text(img, "frame", (x1, y1 + 56), 0.65, (80, 80, 80), 2, "right")
    # Threshold.
    _dashed_hline(img, x0, x1, fy(threshold), (110, 110, 110))
    # Chosen frame.
    if chosen_frame is not None:
        _dashed_vline(img, fx(chosen_frame), y0, y1, CHOSEN_BGR)
    # Curves (broken where a value is NaN).
    for values, color in ((p_seg, SEG_BGR), (p_cls, CLS_BGR)):
        if values is None:
            continue
        v = np.asarray(values, np.float64)
        ok = np.isfinite(v)
        pts = np.array([[fx(i), fy(float(np.clip(v[i], 0, 1)))] if ok[i] else [-1, -1]
                        for i in range(len(v))], np.int32)
        start = None
        for i in range(len(v) + 1):
            if i < len(v) and ok[i]:
                start = i if start is None else start
            elif start is not None:
                seg = pts[start:i]
                if len(seg) == 1:
                    cv2.circle(img, tuple(int(c) for c in seg[0]), 2, color, -1, cv2.LINE_AA)
                else:
                    cv2.polylines(img, [seg.reshape(-1, 1, 2)], False, color, 2, cv2.LINE_AA)
                start = None
    # Verdicts: markers in a strip above the plot, stacked in up to three rows so that markers
    # of neighbouring frames do not cover each other (a fourth would overlap the least).
    rows_x = [-10**9] * MARKER_ROWS
    for f, label in sorted((verdict_labels or {}).items()):
        cx = fx(f)
        row = next((r for r, last in enumerate(rows_x) if cx - last >= MARKER_SPACING),
                   int(np.argmin(rows_x)))
        rows_x[row] = cx
        cy = y0 - 30 - MARKER_SPACING * row
        tri = np.array([[cx - 6, cy - 7], [cx + 6, cy - 7], [cx, cy + 5]], np.int32)
        cv2.fillPoly(img, [tri], LABEL_BGR.get(label, (0, 0, 0)), cv2.LINE_AA)
    # Legend.
    x, y = x0, 30
    items = [("line", CLS_BGR, "p_cls"), ("line", SEG_BGR, "p_seg"),
             ("dash", (110, 110, 110), f"threshold {threshold:.2f}"),
             ("rug", FLAG_BGR, "flagged"), ("vdash", CHOSEN_BGR, "chosen")]
    items += [("tri", LABEL_BGR[k], LABEL_TITLES[k]) for k in LABEL_BGR]
    for kind, color, text in items:
        if kind == "line":
            cv2.line(img, (x, y - 7), (x + 30, y - 7), color, 3, cv2.LINE_AA)
        elif kind == "dash":
            _dashed_hline(img, x, x + 30, y - 7, color, dash=10, gap=6)
        elif kind == "rug":
            cv2.line(img, (x + 15, y), (x + 15, y - 16), color, 4)
        elif kind == "vdash":
            _dashed_vline(img, x + 15, y - 18, y + 2, color, dash=6, gap=4)
        else:
            tri = np.array([[x + 8, y - 16], [x + 22, y - 16], [x + 15, y - 2]], np.int32)
            cv2.fillPoly(img, [tri], color, cv2.LINE_AA)
        _text(img, text, (x + 38, y), 0.65, (50, 50, 50), 2)
        (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.65, 2)
        x += 38 + w + 28
    _text(img, "verdicts", (x0 - 8, y0 - 40), 0.6, (90, 90, 90), 2, "right")
    return img


def mask_on_frame(mask: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """A stored mask on the frame's pixels: as is, or mapped back from the 224 x 224 input."""
    if mask.shape == (height, width):
        return mask
    try:
        from fetaliqa_core.preprocess import mask_to_frame
    except ImportError:
        return None
    try:
        mapped = np.asarray(mask_to_frame(mask, height, width))
    except Exception:  # a mask of another geometry: show the frame without it
        return None
    return mapped if mapped.shape == (height, width) else None


def overlay_thumbnail(frame: np.ndarray, mask: np.ndarray | None = None,
                      width: int = THUMB_WIDTH, ellipse: np.ndarray | None = None) -> np.ndarray:
    """Frame (H, W) uint8 with the mask's labels 1/2 tinted and outlined -> BGR thumbnail;
    ``ellipse``: the fitted AC ellipse, ``(n, 2)`` (x, y) frame pixels, drawn over it."""
    h, w = frame.shape[:2]
    out_h = max(1, int(round(h * width / w)))
    small = cv2.resize(np.ascontiguousarray(frame, np.uint8), (width, out_h),
                       interpolation=cv2.INTER_AREA)
    img = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    if mask is not None:
        m = cv2.resize(np.ascontiguousarray(mask, np.uint8), (width, out_h),
                       interpolation=cv2.INTER_NEAREST)
        for label, color in MASK_BGR.items():
            region = m == label
            if not region.any():
                continue
            tint = np.empty_like(img)
            tint[:] = color
            img[region] = cv2.addWeighted(img, 0.6, tint, 0.4, 0)[region]
            contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, color, 2, cv2.LINE_AA)
    if ellipse is not None and len(ellipse) > 2:
        pts = np.round(np.asarray(ellipse, np.float64) * (width / w)).astype(np.int32)
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], True, ELLIPSE_BGR, 2, cv2.LINE_AA)
    return img
