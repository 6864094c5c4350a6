"""Facts of the ACOUSLIC-AI challenge data, and its probe's field of view.

Every case of the challenge is one stack of 6 blind sweeps x 140 frames of 562 x 744 pixels at
0.28 mm per pixel; sweeps 1-3 are transverse, 4-6 sagittal. The dataset's folders are
``images/stacked_fetal_ultrasound/``, ``masks/stacked_fetal_abdomen/`` and
``circumferences/fetal_abdominal_circumferences_per_sweep.csv``. The probe's field of view (the
fan) ships as ``resources/acouslic_fov_mask.mha``; :func:`fov_mask` is the one reader of it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError

FRAMES_PER_SWEEP = 140
SWEEPS = 6
FRAMES_PER_CASE = FRAMES_PER_SWEEP * SWEEPS
SPACING_MM = 0.28
FRAME_SHAPE = (562, 744)  # (height, width) in pixels
#: Kind of each sweep of a case, in order: the first half transverse, the second sagittal.
CASE_SWEEP_KINDS = ("transverse",) * 3 + ("sagittal",) * 3
SWEEP_KINDS = ("transverse", "sagittal", "unknown")  # every kind a sweep can have

IMAGES_SUBDIR = Path("images") / "stacked_fetal_ultrasound"
MASKS_SUBDIR = Path("masks") / "stacked_fetal_abdomen"
CSV_RELPATH = Path("circumferences") / "fetal_abdominal_circumferences_per_sweep.csv"

FOV_FILENAME = "acouslic_fov_mask.mha"


def case_sweep_ranges(n_frames: int, frames_per_sweep: int = FRAMES_PER_SWEEP) -> list[tuple[int, int]]:
    """Consecutive half-open ``[start, stop)`` blocks of ``frames_per_sweep`` frames (the
    challenge's fixed layout: 6 x 140); the last block may be shorter."""
    return [(s, min(s + frames_per_sweep, n_frames)) for s in range(0, n_frames, frames_per_sweep)]


@lru_cache(maxsize=1)
def _fov_native() -> np.ndarray:
    from fetaliqa_core import paths

    path = paths.resources_dir() / FOV_FILENAME
    from fetaliqa_core.io.readers import read_raw

    try:  # the project's own MetaImage reader: no image library needed (the GPU machines lack one)
        arr = np.asarray(read_raw(path, "mask").array)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the same advice
        raise FetalIQAError(
            f"{path}: cannot read the field-of-view mask ({type(exc).__name__}); "
            "reinstall FetalIQA to restore the bundled resources"
        ) from None
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise FetalIQAError(f"{path}: the field-of-view mask is not a 2-D image (shape {arr.shape})")
    fov = np.ascontiguousarray(arr > 0.5)  # stored as 0 / 1
    fov.setflags(write=False)
    return fov


@lru_cache(maxsize=8)
def fov_mask(shape: tuple[int, int] | None = None) -> np.ndarray:
    """The ACOUSLIC-AI probe's field of view as a read-only bool array ``(H, W)``.

    Read once from ``resources/acouslic_fov_mask.mha`` (562 x 744). With ``shape`` given and
    different, it is resized with nearest neighbour to ``shape = (H, W)`` (for frames of another
    size, e.g. small synthetic sweeps).
    """
    fov = _fov_native()
    if shape is None or tuple(shape) == fov.shape:
        return fov
    import cv2

    h, w = int(shape[0]), int(shape[1])
    out = cv2.resize(fov.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) != 0
    out.setflags(write=False)
    return out


#: A fan whose convex hull overlaps the ACOUSLIC probe's field of view this much is that field of
#: view (the challenge's own fan gives 0.98: the hull also covers the probe face's concave arc;
#: other curved-array fans drawn at ACOUSLIC's frame size gave 0.38-0.83 and, of an independent
#: generator, 0.91-0.96: at 0.9 those were taken for it, and an abdomen cut by their shallower
#: depth arc read whole, up to 4 % short; ACOUSLIC's fan 10 rows shallower gives 0.976, 20 rows 0.964).
SAME_FAN_IOU = 0.965


def data_fan(frames: np.ndarray, spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
    """The field of view a sweep's own frames show: the pixels above the black level outside it
    in any of up to 64 evenly spread frames, as one region with the holes inside filled (fluid
    drawn pure black is still inside the fan). Bool ``(H, W)``.

    The black level is 0 (a clean export: what is exactly 0 and reaches the image's border lies
    outside) when a tenth of the frame is exactly 0; or another exact grey level (a capture's video
    black level of 16 or 20) that fills a tenth of the frame and most of its border, dark beside the
    image. Else the darkest tenth plus a margin, when
    the dark it leaves outside runs along at least :data:`SURROUND_BORDER_SHARE` of the image's
    border, more of it than the exact zeros do, as a fan's surround does (a video black level of 2, or faint noise, around the fan of
    a screen capture or a lossy export made the whole frame the fan); dark fluid reaching one edge
    of an image that fills the frame does not, and stays inside. A surround of one grey level give
    or take :data:`SURROUND_NOISE` (a lossy capture's 16 +- 2) is the black level too. Lines and
    marks thinner than 5 pixels (a burnt-in frame around the image, text) are no part of the fan,
    nor are straight frame lines up to 12 pixels wide drawn around it (:func:`_frame_lines`),
    nor is anything apart from its largest region, but for tissue inside that region's convex hull
    (a body in fluid shown pure black that reaches the fan's edge: :func:`_with_islands`) and, on a
    surround of exact 0, the other pieces of a fan that such fluid splits from side to side (a near
    wall, a far wall: :func:`_with_walls`). ``spacing_mm`` (row, column) tells a sector's depth arc
    where pixels are not square."""
    import cv2

    step = max(1, len(frames) // 64)
    peak = np.asarray(frames[::step]).max(axis=0).astype(np.float32)
    pieces = _pieces(peak, 0.0)
    fan = _region_above(peak, 0.0, pieces)
    low, high = (float(v) for v in np.percentile(peak, (10, 99)))
    # a surround of one exact grey level (a video black level of 16 or 20 in a clean capture) that
    # runs along the border and fills a tenth of the frame, dark beside the image: the black level,
    # whatever its value (at 20 of a brightest 173 the whole screen was taken for the fan)
    ring = np.concatenate([peak[0], peak[-1], peak[1:-1, 0], peak[1:-1, -1]])
    values, counts = np.unique(ring, return_counts=True)
    level = float(values[int(np.argmax(counts))])
    exact = (counts.max() / ring.size >= SURROUND_BORDER_SHARE and level <= SURROUND_MAX_GREY * high
             and float((peak == level).mean()) >= 0.1)
    if low <= 0:
        clean = _without_ringing(peak, _with_walls(pieces, fan, _aspect(spacing_mm)))
        if level <= 0:
            return clean
        # exact zeros in a tenth of the frame inside a border of another grey: a clean export's black
        # with a grey line, bars or text along the border, or a fan on a grey screen holding black
        # fluid (taken for a clean export's black, it made the whole screen the fan, and an abdomen
        # cut by the depth arc read 3.6 % short, plain). Each reading gives a region: the smaller is
        # the field of view (one larger than the fan turns a cut outline into a whole one; a grey
        # line round a clean export made the whole screen the fan the other way round).
        grey = _grey_screen_fan(peak, ring, level, high, exact)
        return grey if grey is not None and grey.sum() < clean.sum() else clean
    if exact:
        grey = _grey_screen_fan(peak, ring, level, high, exact)
        if grey is not None:
            return grey
    # the same surround with a little noise (a lossy capture's 16 +- 2): one narrow band of grey
    # along most of the border, dark beside the image (the whole screen was taken for the fan)
    # (a surround holds the frame's four corners, beside a fan or a linear probe's rectangle alike;
    # fluid filling the lower part of an image that fills the frame does not reach the top ones)
    band = np.abs(ring - level) <= SURROUND_NOISE
    top = level + SURROUND_NOISE
    corners = np.array([peak[0, 0], peak[0, -1], peak[-1, 0], peak[-1, -1]])
    if (band.mean() >= SURROUND_BORDER_SHARE and top <= SURROUND_MAX_GREY * high
            and bool((np.abs(corners - level) <= SURROUND_NOISE).all())
            and float((np.abs(peak - level) <= SURROUND_NOISE).mean()) >= 0.1):
        # (the median of 5 x 5 pixels: the noise's brightest pixels beside the fan's edge joined it
        # and moved the edge outward, and an outline cut there was taken for a whole one)
        smooth = cv2.medianBlur(np.clip(peak, 0, 255).astype(np.uint8), 5).astype(np.float32)
        above = _region_above(smooth, top)
        if above.any() and _outside_border_share(above) >= SURROUND_BORDER_SHARE:
            # (a background shading round the frame falls in that band along the border only: its
            # brighter middle joined the fan; a smooth surround, where there is one, is the fan's)
            inside = _inside_smooth_surround(frames, peak, high)
            return above if inside is None else inside
    if low <= 0.1 * high:  # (a darkest tenth not dark beside the brightest is image)
        above = _region_above(peak, low + max(2.0, 0.03 * (high - low)))
        share = _outside_border_share(above)
        if share >= SURROUND_BORDER_SHARE and share > _outside_border_share(fan):
            # a background shading round the frame has its darkest tenth in the corners: its brighter
            # middle joined the fan (IoU 0.39-0.71); a smooth surround, where there is one, is the fan's
            inside = _inside_smooth_surround(frames, peak, high)
            return above if inside is None else inside
    if _outside_border_share(fan) < SURROUND_BORDER_SHARE:
        inside = _inside_smooth_surround(frames, peak, high)
        if inside is not None:
            return inside
    return fan


def _grey_screen_fan(peak: np.ndarray, ring: np.ndarray, level: float, high: float,
                     exact: bool) -> np.ndarray | None:
    """The fan on a screen of one grey ``level`` (give or take :data:`SURROUND_NOISE`, on a 5 x 5
    median, where it is not exact) running along the border: what differs from that grey; None
    where no such screen is seen."""
    import cv2

    if exact:
        # (what differs from that level is image, darker or not: in a dim sweep, a band of fluid
        # darker than a surround of 50 split the fan, and its lower part was left out); less JPEG's
        # ringing around it (a black decoded as 1 rang 8 px wide)
        away = np.abs(peak - level)
        above = _region_above(away, 0.0)
        return _without_ringing(away, above) if above.any() else None
    band = np.abs(ring - level) <= SURROUND_NOISE
    if band.mean() >= SURROUND_BORDER_SHARE and level + SURROUND_NOISE <= SURROUND_MAX_GREY * high:
        smooth = cv2.medianBlur(np.clip(peak, 0, 255).astype(np.uint8), 5).astype(np.float32)
        above = _region_above(np.abs(smooth - level), SURROUND_NOISE)
        if above.any() and _outside_border_share(above) >= SURROUND_BORDER_SHARE:
            return above
    return None


#: JPEG's ringing: frames saved with block compression (a JPEG-compressed DICOM, a folder of JPEG
#: frames) keep their surround exactly 0 but for the 8 x 8 blocks the fan's edge crosses, where it
#: rings a few grey levels above 0 up to 7 pixels outside the edge. The fan's outermost pixels are
#: then faint (at most :data:`RINGING_FAINT` of the fan's median brightness) along at least
#: :data:`RINGING_EDGE_SHARE` of its outline, where a fan's own edge is tissue.
RINGING_FAINT = 0.25
RINGING_EDGE_SHARE = 0.5
#: ... and what is dimmer than :data:`RINGING_KEEP` of that median (after a 5 x 5 median) within
#: :data:`RINGING_PX` of the outside is ringing, not image.
RINGING_KEEP = 0.5
RINGING_PX = 8
#: ... in the 8 x 8 blocks of the image's grid that hold the fan's bright pixels too: at least
#: this share of that rim (ringing never leaves the block it rings in).
RINGING_IN_BLOCKS = 0.95


def _without_ringing(peak: np.ndarray, fan: np.ndarray) -> np.ndarray:
    """``fan`` (the region above an exact-0 surround) without the rim JPEG's ringing adds around
    it: a fan so saved was found up to 7 pixels too large (IoU 0.93 with the drawn fan at quality
    90), an abdomen cut by its depth arc no longer touched the field of view's edge, and its AC read
    3.2 % short as a whole outline's. Only the faint rim within :data:`RINGING_PX` of the outside
    goes; fluid deeper in the fan stays, and a fan whose edge is tissue is left as it is."""
    import cv2

    if not fan.any():
        return fan
    level = float(np.median(peak[fan]))
    ring = np.ones((3, 3), np.uint8)
    edge = fan & cv2.dilate((~fan).astype(np.uint8), ring).astype(bool)
    if level <= 0 or not edge.any() or float((peak[edge] <= RINGING_FAINT * level).mean()) < RINGING_EDGE_SHARE:
        return fan
    smooth = cv2.medianBlur(np.clip(peak, 0, 255).astype(np.uint8), 5).astype(np.float32)
    depth = cv2.distanceTransform(np.pad(fan, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    rim = (depth <= RINGING_PX) & (smooth < RINGING_KEEP * level) & fan
    # ringing stays inside the 8 x 8 blocks the edge crosses, which hold the image's bright pixels
    # too; a faint rim in blocks of its own is image (fluid along the edge of a fan split by it)
    h, w = peak.shape
    hb, wb = -(-h // 8) * 8, -(-w // 8) * 8
    bright = np.zeros((hb, wb), bool)
    bright[:h, :w] = fan & ~rim
    lit = np.repeat(np.repeat(bright.reshape(hb // 8, 8, wb // 8, 8).any(axis=(1, 3)), 8, 0), 8, 1)[:h, :w]
    if not rim.any() or float(lit[rim].mean()) < RINGING_IN_BLOCKS:
        return fan
    kept = fan & ~rim
    trimmed = _region_above(kept.astype(np.float32), 0.0)
    # (the trimmed fan is the fan less a rim: anything else, e.g. a fan of faint tissue, is left)
    if not trimmed.any() or (trimmed & ~fan).any() or trimmed.sum() < 0.8 * fan.sum():
        return fan
    return trimmed


#: A fan's surround runs along most of the image's border (ACOUSLIC's: 0.8; a linear probe's
#: rectangle inside the frame: all of it); fluid reaching one edge of an image runs along little.
SURROUND_BORDER_SHARE = 0.4
#: A surround of one grey level is at most this share of the image's bright grey (its 99th
#: percentile): a grey background of 50 beside tissue up to 182 is one (at 0.25 it was not, and
#: the whole frame was the fan), as is a video black level of 25 in a dim sweep (tissue to 90).
SURROUND_MAX_GREY = 0.4
#: How far (grey levels) a surround's noise may stray from its most common level: a lossy capture's
#: video black level of 16 reads 14-18; a grey background of 47 that is noisy frame to frame (+-3)
#: reads 43-53 at its brightest over the frames (at 4 it was no surround: the whole frame was the
#: fan, and an abdomen cut by the fan's edge was measured plain, 4-7 % short).
SURROUND_NOISE = 6


#: A surround that is no one grey level but shades smoothly (a vignetted background, darker towards
#: the corners) is told from the image by its texture: speckle varies by tens of grey levels within
#: a few pixels, the surround by at most :data:`SMOOTH_SURROUND_STD` over :data:`SMOOTH_WINDOW_PX`.
SMOOTH_SURROUND_STD = 5.0
SMOOTH_WINDOW_PX = 7
#: ... at the median over up to this many frames spread over the sweep (a background noisy from frame
#: to frame by +-6 spreads by about 3.5; speckle by 7 or more, 25 at the median).
SMOOTH_FRAMES = 8
#: Its brightest (95th percentile) may reach this share of the image's bright grey: texture, not
#: level, tells it apart (a grey surround of 40-50 beside a dim sweep's tissue up to 90 was none).
SMOOTH_SURROUND_MAX_GREY = 0.6
#: ... and what it leaves is one convex region, as a fan or a probe's rectangle is (this share of its
#: convex hull at least), of at least this share of the image.
SMOOTH_FAN_CONVEX = 0.85
SMOOTH_FAN_MIN_SHARE = 0.1


def _inside_smooth_surround(frames: np.ndarray, peak: np.ndarray, high: float) -> np.ndarray | None:
    """The field of view inside a smoothly shading surround (:data:`SMOOTH_SURROUND_STD` over
    :data:`SMOOTH_FRAMES` frames), or None where there is none. A fan on a vignetted background
    (18-45 grey across the frame) matched neither one level nor a dark tenth, so the whole frame
    was the fan, and an abdomen cut by the fan's depth arc was measured as a whole one (3-4.5 %
    short). The surround must be smooth along most of the image's border and in its four
    corners, darker than the image (:data:`SMOOTH_SURROUND_MAX_GREY`), and leave one convex
    region shaped as a fan or a rectangle is (:func:`_fan_shaped`): tissue filling the frame, with
    a smooth shadow along one side, has speckle in its corners and stays whole, and a body in
    smooth fluid filling the frame is no fan."""
    import cv2

    h, w = peak.shape
    if min(h, w) < 4 * SMOOTH_WINDOW_PX:
        return None
    k = (SMOOTH_WINDOW_PX, SMOOTH_WINDOW_PX)
    spreads = []
    for i in np.unique(np.linspace(0, len(frames) - 1, SMOOTH_FRAMES).astype(int)):
        # (frame by frame: the brightest over many frames is smooth wherever tissue is bright)
        frame = np.asarray(frames[i], np.float32)
        mean = cv2.blur(frame, k)
        spreads.append(np.sqrt(np.maximum(cv2.blur(frame * frame, k) - mean * mean, 0.0)))
    spread = np.median(np.stack(spreads), axis=0)
    smooth = np.pad((spread <= SMOOTH_SURROUND_STD).astype(np.uint8), 1, constant_values=1)
    _, labels = cv2.connectedComponents(smooth, connectivity=4)
    outside = (labels == labels[0, 0])[1:-1, 1:-1]
    corners = outside[[0, 0, -1, -1], [0, -1, 0, -1]]
    if (not corners.all() or _outside_border_share(~outside) < SURROUND_BORDER_SHARE
            or float(np.percentile(peak[outside], 95)) > SMOOTH_SURROUND_MAX_GREY * high):
        return None
    # the texture measure reaches half a window past the fan's edge
    inside = cv2.erode((~outside).astype(np.uint8), np.ones(k, np.uint8)).astype(np.float32)
    region = _region_above(inside, 0.5)
    area = float(region.sum())
    if (area < SMOOTH_FAN_MIN_SHARE * region.size or area < SMOOTH_FAN_CONVEX * float(_filled_hull(region).sum())
            or not _fan_shaped(region)):
        return None
    return region


#: A fan's or a probe's rectangle's outline has straight sides inside the image: at least two
#: stretches of its convex hull, each :data:`FAN_SIDE_SHARE` of its perimeter or more, straight to
#: :data:`FAN_OUTLINE_TOLERANCE` of it (fans of three generators and ACOUSLIC's: 0.12-0.32; a
#: sector's sides run from one edge of the image to another). A body's outline curves everywhere
#: (ellipses of axis ratio 0.44-1: at most 0.085; 0.3: 0.10), and where the image's edge cuts it, that
#: straight stretch lies along the border: a body in smooth fluid filling the frame is no fan.
FAN_SIDE_SHARE = 0.105
FAN_OUTLINE_TOLERANCE = 0.003
#: A stretch whose two ends lie this close (px) to one side of the image runs along that side.
FAN_BORDER_PX = 3


def _fan_shaped(region: np.ndarray) -> bool:
    """Whether ``region``'s convex hull has two straight sides or more off the image's border."""
    import cv2

    points = cv2.findNonZero(region.astype(np.uint8))
    if points is None or len(points) < 3:
        return False
    hull = cv2.convexHull(points)
    perimeter = cv2.arcLength(hull, True)
    poly = cv2.approxPolyDP(hull, FAN_OUTLINE_TOLERANCE * perimeter, True)[:, 0, :].astype(float)
    if len(poly) < 3 or perimeter <= 0:
        return False
    ends = np.roll(poly, -1, axis=0)
    long = np.hypot(*(ends - poly).T) >= FAN_SIDE_SHARE * perimeter
    h, w = region.shape
    b = FAN_BORDER_PX
    along = np.zeros(len(poly), bool)
    for coord, limit in ((0, 0), (0, w - 1), (1, 0), (1, h - 1)):
        along |= (np.abs(poly[:, coord] - limit) <= b) & (np.abs(ends[:, coord] - limit) <= b)
    return int((long & ~along).sum()) >= 2


def _pieces(peak: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The regions above ``level`` after an opening that removes what is thinner than 5 pixels
    (and frame lines drawn around the image): their labels, their statistics (as OpenCV's
    connected components give them) and the label of the largest, 0 where there is none."""
    import cv2

    above = (peak > level).astype(np.uint8)
    above[_frame_lines(above)] = 0  # a frame drawn snug around the fan joined it, and its box became the fan
    seen = cv2.morphologyEx(above, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(seen, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) if count > 1 else 0
    return labels, stats, largest


def _region_above(peak: np.ndarray, level: float, pieces: tuple | None = None) -> np.ndarray:
    """The largest region above ``level`` after an opening that removes what is thinner than 5
    pixels, with the holes inside filled (``pieces``: :func:`_pieces` of the same, where known)."""
    import cv2

    labels, stats, largest = pieces if pieces is not None else _pieces(peak, level)
    if not largest:
        return np.zeros(peak.shape, bool)
    padded = np.pad((labels == largest).astype(np.uint8), 1)
    cv2.floodFill(padded, None, (0, 0), 2)  # what the border reaches around the region lies outside
    region = padded[1:-1, 1:-1] != 2
    return _with_islands(region, labels, stats, largest)


#: A burnt-in frame line is straight, runs along at least this share of the image's side, and is at
#: most :data:`LINE_MAX_PX` thick, with little but black on both sides of it (:func:`_frame_lines`).
LINE_MIN_SHARE = 0.25
LINE_MAX_PX = 12
LINE_SIDE_ON = 0.3


def _frame_lines(on: np.ndarray) -> np.ndarray:
    """The pixels of ``on`` (uint8 0/1, ``(H, W)``) on straight horizontal or vertical lines drawn
    around the image: long (:data:`LINE_MIN_SHARE` of the side), thin (:data:`LINE_MAX_PX`) and
    with at most :data:`LINE_SIDE_ON` of the pixels just beside it on either side above the black
    level. Thinner than 5 pixels the opening removes them anyway; a frame 5-7 px wide drawn snug
    around a fan (touching its arc) joined the fan's region, and the filled box of the frame was
    taken for the field of view (IoU 0.58; a fan-cut abdomen read 9.6 % short). A fan's own edge
    has the image on one side; a linear probe's rectangle is thick."""
    import cv2

    lines = np.zeros(on.shape, bool)
    for axis in (0, 1):
        img = on if axis == 0 else on.T
        h, w = img.shape
        length = max(20, int(LINE_MIN_SHARE * w))
        runs = cv2.morphologyEx(img, cv2.MORPH_OPEN, np.ones((1, length), np.uint8))  # long horizontal runs
        thick = cv2.morphologyEx(runs, cv2.MORPH_OPEN, np.ones((LINE_MAX_PX + 1, 1), np.uint8))
        thin = (runs != 0) & (thick == 0)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(thin.astype(np.uint8), connectivity=8)
        found = np.zeros(img.shape, bool)
        for i in range(1, count):
            x, y, cw, ch = (int(v) for v in stats[i, :4])
            if cw < length or ch > LINE_MAX_PX:
                continue
            beside = [img[max(0, y - 6):max(0, y - 2), x:x + cw], img[y + ch + 2:y + ch + 6, x:x + cw]]
            if all(b.size == 0 or float(b.mean()) <= LINE_SIDE_ON for b in beside):
                found |= labels == i
        lines |= found if axis == 0 else found.T
    return lines


#: A piece of tissue apart from the fan's largest region counts as inside the fan when it holds at
#: least this share of that region's pixels (and :data:`ISLAND_MIN_PX`) and lies within its convex
#: hull (:data:`ISLAND_INSIDE`): a body in fluid shown pure black that reaches the fan's edge.
ISLAND_SHARE = 0.01
ISLAND_MIN_PX = 200
ISLAND_INSIDE = 0.9
#: ... and its pixels lie, at the median, this deep inside the hull (px; share of the hull's side).
ISLAND_MIN_DEPTH_PX = 10
ISLAND_DEPTH_SHARE = 0.08


def _with_islands(region: np.ndarray, labels: np.ndarray, stats: np.ndarray, largest: int) -> np.ndarray:
    """``region`` (the largest piece, holes filled), or its convex hull when other pieces of tissue
    lie inside that hull: fluid shown pure black (a scanner's reject, a clean export) that reaches the
    fan's edge joins the black outside, and the body in it was an island left out of the field of
    view (its whole outline then lay on the field's edge, and no AC was measured). A sector's or a
    linear probe's field is convex; the hull brings the fluid back in with the body (not nearer
    the apex than the tissue: a curved probe's face bends into the fan, :func:`_beyond_the_face`)."""
    import cv2

    area = stats[largest, cv2.CC_STAT_AREA]
    candidates = [i for i in range(1, len(stats))
                  if i != largest and stats[i, cv2.CC_STAT_AREA] >= max(ISLAND_MIN_PX, ISLAND_SHARE * area)]
    if not candidates:
        return region
    hull = _filled_hull(labels == largest).astype(np.uint8)
    inside = hull.astype(bool)
    # deep inside, not along the hull's edge: a mark burnt in beside the fan (between a curved fan's
    # top arc and its chord) is no body, and taking the hull there cut the fan's own edge away
    depth = cv2.distanceTransform(np.pad(hull, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    deep = max(ISLAND_MIN_DEPTH_PX, ISLAND_DEPTH_SHARE * math.sqrt(float(inside.sum())))
    for i in candidates:
        piece = labels == i
        if float(inside[piece].mean()) >= ISLAND_INSIDE and float(np.median(depth[piece])) >= deep:
            return region | _beyond_the_face(inside, region | (inside & (labels > 0)))
    return region


#: A curved probe's face: the tissue's nearest pixel lies within this many pixels of the arc round
#: the apex (at the nearest tissue's distance) in at least this share of the columns the tissue
#: holds (:func:`_beyond_the_face`).
FACE_ARC_PX = 2.0
FACE_ARC_SHARE = 0.2


def closed_fan(fov: np.ndarray) -> np.ndarray | None:
    """A field of view found closed over a notch: its convex hull (a fan, sector, linear, trapezoid
    or phased, is convex), not nearer the apex than the field itself (a curved probe's face bends
    into the fan: :func:`_beyond_the_face`). For a mask the field of view found leaves out, where
    fluid shown pure black reaches the fan's edge with the body in it. None for an empty one."""
    fov = np.asarray(fov, bool)
    if not fov.any():
        return None
    return _beyond_the_face(_filled_hull(fov), fov)


def _beyond_the_face(hull: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """``hull`` without what lies nearer the apex of the fan's two straight sides than any of
    ``tissue`` does: a curved probe's face is an arc bending into the fan, and the hull filled the
    dome between that arc and its chord, so a body the face cuts, in fluid shown pure black that
    reaches it, was measured as whole (3.8 % short, plain). Only ever smaller; ``hull`` as it is
    where the sides are not two straight lines meeting near the image."""
    h, w = hull.shape
    rows, left, right = _row_ends(tissue)
    # (rows where the image cuts the fan end at the image's edge, not on its side)
    on_left, on_right = left > FAN_BORDER_PX, right < w - 1 - FAN_BORDER_PX
    sides = (_side_line(rows[on_left], left[on_left], w, -1.0), _side_line(rows[on_right], right[on_right], w, 1.0))
    if sides[0] is None or sides[1] is None:
        return hull
    apex = _apex(*sides, h)
    if apex is None:
        return hull
    yy, xx = np.mgrid[0:h, 0:w]
    depth = np.hypot(xx - apex[0], yy - apex[1])
    near = float(depth[tissue].min())
    # only a face that is an arc round the apex: the tissue's nearest pixel in each column lies on it
    # along much of the fan's width (a top the image cuts straight, or a trapezoid's flat face, is a
    # chord: its nearest tissue lay at the corners of the fluid, and a lens of the fan under the
    # face went, with the top of a whole abdomen in the fluid)
    columns = np.flatnonzero(tissue.any(axis=0))
    top = np.argmax(tissue[:, columns], axis=0)
    on_arc = np.abs(depth[top, columns] - near) <= FACE_ARC_PX
    if float(on_arc.mean()) < FACE_ARC_SHARE:
        return hull
    return hull & (depth >= near)


#: A fan's side is a straight line: fitted to the leftmost (rightmost) pixels of each row of the
#: tissue, at least :data:`SIDE_MIN_ROWS` rows within :data:`SIDE_TOLERANCE_PX` of it, and not the
#: image's own edge (a fan the image cuts has no side there).
SIDE_MIN_ROWS = 30
SIDE_TOLERANCE_PX = 1.5
#: ... with at most this share of those pixels beyond it (a bar wider than the fan below it may be).
SIDE_BEYOND = 0.1
#: Lines through this many pairs of those pixels are tried.
SIDE_TRIES = 2000
#: A piece of tissue apart from the fan's largest region is a wall of the same fan (the near wall
#: under the probe, the far wall at the depth arc, a fan split by fluid shown pure black) when it
#: lies inside the wedge between the two sides (all but :data:`WALL_OUTSIDE` of it) and its own
#: left and right edges run along both sides (:func:`_touch_rows`); the farthest piece of a
#: sector ends on an arc around the apex (its far edge within :data:`WALL_ARC_PX`, or
#: :data:`WALL_ARC_SHARE` of the radius, of the farthest along :data:`WALL_ARC_ALONG` of its width).
WALL_OUTSIDE = 0.01
WALL_TOUCH_ROWS = 8
WALL_TOUCH_SHARE = 0.3
WALL_TOUCH_SLANT = 2.0
WALL_ARC_PX = 3.0
WALL_ARC_SHARE = 0.01
WALL_ARC_ALONG = 0.5
#: Beyond the image by this many times its height, two sides are parallel (a linear probe's).
APEX_FAR = 10.0


def _apex(left: tuple[float, float], right: tuple[float, float], height: int) -> tuple[float, float] | None:
    """Where a fan's two sides ``x = a * y + b`` meet, ``(x, y)``; None where they are parallel or
    meet farther than :data:`APEX_FAR` image heights away (a linear probe's)."""
    (al, bl), (ar, br) = left, right
    if abs(al - ar) <= 1e-9:
        return None
    ay = (br - bl) / (al - ar)
    return (al * ay + bl, ay) if -APEX_FAR * height <= ay <= (1 + APEX_FAR) * height else None


def _side_line(ys: np.ndarray, xs: np.ndarray, width: int, sign: float) -> tuple[float, float] | None:
    """The straight line ``x = a * y + b`` the most points ``(ys, xs)`` (one a row: a side's
    leftmost pixels with ``sign`` -1, its rightmost with +1) lie on, with at most
    :data:`SIDE_BEYOND` of them beyond it (a side bounds the tissue; a straight stretch of a body's
    edge does not); None where fewer than :data:`SIDE_MIN_ROWS` do or they lie along the image's edge."""
    n = len(ys)
    if n < SIDE_MIN_ROWS:
        return None
    rng = np.random.default_rng(0)  # (the same line every time)
    i, j = rng.integers(0, n, (2, SIDE_TRIES))
    ok = ys[i] != ys[j]
    i, j = i[ok], j[ok]
    a = (xs[j] - xs[i]) / (ys[j] - ys[i])
    b = xs[i] - a * ys[i]
    off = sign * (xs[None, :] - (a[:, None] * ys[None, :] + b[:, None]))
    hit = np.abs(off) <= SIDE_TOLERANCE_PX
    on = hit.sum(axis=1)
    # (how far apart its first and last row on it are: a fan's side runs from the near wall to the
    # far one, a tangent to the depth arc only along a short stretch of it)
    span = np.where(hit, ys[None, :], -np.inf).max(axis=1) - np.where(hit, ys[None, :], np.inf).min(axis=1)
    score = np.where((on >= SIDE_MIN_ROWS) & ((off > SIDE_TOLERANCE_PX).sum(axis=1) <= SIDE_BEYOND * n),
                     on * np.maximum(span, 1.0), 0.0)
    if not len(score) or score.max() <= 0:
        return None
    k = int(np.argmax(score))
    near = np.abs(xs - (a[k] * ys + b[k])) <= SIDE_TOLERANCE_PX
    fa, fb = np.polyfit(ys[near], xs[near], 1)
    near = np.abs(xs - (fa * ys + fb)) <= SIDE_TOLERANCE_PX
    if int(near.sum()) < SIDE_MIN_ROWS:
        fa, fb = a[k], b[k]
        near = np.abs(xs - (fa * ys + fb)) <= SIDE_TOLERANCE_PX
    edge = (xs[near] <= FAN_BORDER_PX) | (xs[near] >= width - 1 - FAN_BORDER_PX)
    if float(edge.mean()) > 0.5:
        return None
    return float(fa), float(fb)


def _row_ends(piece: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows ``piece`` holds pixels in, and its leftmost and rightmost pixel in each."""
    rows = np.flatnonzero(piece.any(axis=1))
    sub = piece[rows]
    left = np.argmax(sub, axis=1)
    right = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    return rows.astype(float), left.astype(float), right.astype(float)


def _touch_rows(slope: float, height: int) -> float:
    """How many rows a piece ``height`` rows high must run along a side of that ``slope`` (px
    across per row) to be a wall: :data:`WALL_TOUCH_ROWS` at least, and along a slanting side
    :data:`WALL_TOUCH_SLANT` times as many as a square corner meets it in, along an upright one
    (a linear probe's) :data:`WALL_TOUCH_SHARE` of its height."""
    corner = 2 * SIDE_TOLERANCE_PX / max(abs(slope), 1e-6)
    return max(WALL_TOUCH_ROWS, min(WALL_TOUCH_SHARE * height, WALL_TOUCH_SLANT * corner))


def _runs_along(ys: np.ndarray, xs: np.ndarray, side: tuple[float, float]) -> bool:
    """Whether a piece's edge pixels ``(ys, xs)`` (one a row) run along the ``side`` line
    ``x = a * y + b`` for :func:`_touch_rows` of its rows."""
    a, b = side
    return int((np.abs(xs - (a * ys + b)) <= SIDE_TOLERANCE_PX).sum()) >= _touch_rows(a, len(ys))


def _aspect(spacing_mm) -> float:
    """A pixel's height over its width (1 where the spacing is unknown or no length)."""
    try:
        row, col = (float(v) for v in tuple(spacing_mm)[:2])
    except (TypeError, ValueError):
        return 1.0
    if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
        return 1.0
    return row / col


def _ends_on_arc(radius: np.ndarray, angle: np.ndarray) -> bool:
    """Whether the far edge of a piece whose pixels lie at ``radius`` and ``angle`` from the apex
    is an arc around it: the piece's farthest radius in each of 32 bins across its angular width
    (less a tenth at either end, its corners) is about the largest in :data:`WALL_ARC_ALONG` of
    them."""
    lo, hi = np.percentile(angle, (10, 90))
    if hi <= lo:
        return False
    bins = np.minimum(((angle - lo) / (hi - lo) * 32).astype(int), 31)
    keep = (angle >= lo) & (angle <= hi)
    ends = []
    for k in range(32):
        sel = keep & (bins == k)
        if sel.any():
            ends.append(float(radius[sel].max()))
    if len(ends) < 16:
        return False
    ends = np.array(ends)
    top = float(np.percentile(ends, 90))
    # (most of it: dim tissue in the far field leaves the arc ragged in places)
    return float((ends >= top - max(WALL_ARC_PX, WALL_ARC_SHARE * top)).mean()) >= WALL_ARC_ALONG


def _with_walls(pieces: tuple, fan: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """``fan`` (the largest of ``pieces``, :func:`_pieces` above an exact-0 surround) with the
    rest of the fan it is a piece of, where fluid shown pure black splits the
    fan into pieces (the near wall under the probe, the body, the far wall above the depth arc):
    that fluid reaching the fan's sides joined the black outside, and the field of view was the
    largest piece only (IoU 0.31-0.93 with the drawn fan; whole abdomens in the part left out were
    doubted as cut by the field of view). A fan is a sector, a trapezoid or a rectangle: two
    straight sides (:func:`_side_line`), and for a sector an arc around their apex at either end.
    A piece joins only where it fits that shape (:data:`WALL_OUTSIDE`, :func:`_before_a_break`):
    a bar, a cine progress bar or a scrolling strip below the fan neither runs along both sides
    nor ends on an arc, and one taken for the far wall widened the field of view to it, so an
    abdomen cut by the depth arc read whole, 3.1 % short. ``aspect`` is a pixel's height over its
    width. Only the convex hull of the pieces that belong is added, within the
    wedge and, for a sector, between their nearest and farthest radius (a curved probe's face is
    an arc bending into the fan), so the field of view never reaches beyond the fan; where the
    fluid takes a whole end of the fan, that end stays out (an outline there is only doubted)."""
    import cv2

    labels, stats, largest = pieces
    if not fan.any() or not largest:
        return fan
    area = stats[largest, cv2.CC_STAT_AREA]
    big = [i for i in range(1, len(stats))
           if stats[i, cv2.CC_STAT_AREA] >= max(ISLAND_MIN_PX, ISLAND_SHARE * area)]
    if len(big) < 2:
        return fan
    h, w = labels.shape
    rows, left, right = _row_ends(np.isin(labels, big))
    sides = _side_line(rows, left, w, -1.0), _side_line(rows, right, w, 1.0)
    if sides[0] is None or sides[1] is None:
        return fan
    (al, bl), (ar, br) = sides
    yy, xx = np.mgrid[0:h, 0:w]
    wedge = (xx >= al * yy + bl - SIDE_TOLERANCE_PX) & (xx <= ar * yy + br + SIDE_TOLERANCE_PX)
    main = labels == largest
    ys, xl, xr = _row_ends(main)
    if float(wedge[main].mean()) < 1 - WALL_OUTSIDE:
        return fan
    main_on_side = _runs_along(ys, xl, (al, bl)) or _runs_along(ys, xr, (ar, br))
    apex = _apex(sides[0], sides[1], h)
    members, within = [largest], [largest]
    for i in big:
        if i == largest:
            continue
        piece = labels == i
        if float(wedge[piece].mean()) < 1 - WALL_OUTSIDE:
            continue  # (sticks out of the fan's sides: a bar or a strip wider than the fan)
        within.append(i)
        ys, xl, xr = _row_ends(piece)
        if _runs_along(ys, xl, (al, bl)) and _runs_along(ys, xr, (ar, br)):
            members.append(i)
    inside = (xx >= al * yy + bl) & (xx <= ar * yy + br)
    if apex is None:
        depth = yy.astype(float)
    else:
        # (around the apex in the body's lengths: a sector shown with pixels taller than wide has
        # an elliptical arc)
        depth = np.hypot(xx - apex[0], (yy - apex[1]) * aspect)
        angle = np.arctan2(xx - apex[0], (yy - apex[1]) * aspect)
        # the farthest piece ends on the depth arc (a bar below the fan, or one that touches the
        # far wall, does not)
        while len(members) >= 2:
            farthest = max(members, key=lambda i: float(depth[labels == i].max()))
            piece = labels == farthest
            if _ends_on_arc(depth[piece], angle[piece]):
                break
            if farthest == largest:
                return fan
            members.remove(farthest)
    members = _before_a_break(labels, members, within, largest, depth, inside)
    if len(members) < 2:
        return fan
    # (the largest piece is the fan's: it runs along one side at least, or lies between walls; a
    # scrolling strip below the fan, larger than any piece of it, does neither)
    if not main_on_side and float(_filled_hull(np.isin(labels, members[1:]))[main].mean()) < 1 - WALL_OUTSIDE:
        return fan
    walls = np.isin(labels, members)
    grown = _filled_hull(walls) & inside
    if apex is not None:
        grown &= (depth >= float(depth[walls].min())) & (depth <= float(depth[walls].max()))
    # (a pixel in from the hull's edge: a convex fan drawn in pixels bulges past the hull of its
    # own pixels by one here and there)
    grown = cv2.erode(grown.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return fan | grown


#: Where the pieces leave a band across the whole fan empty, with this share of the fan's width
#: or more covered just before and just after it, the fan ends at the band (see
#: :func:`_before_a_break`).
WALL_BREAK_FULL = 0.9


def _before_a_break(labels: np.ndarray, members: list[int], within: list[int], largest: int,
                    depth: np.ndarray, inside: np.ndarray) -> list[int]:
    """The ``members`` on the largest piece's side of every clean break: a band across the whole
    wedge (rows for parallel sides, arcs around a sector's apex) that no piece reaches, with a
    straight (or arc-shaped) edge covering the width on both sides of it. That is where a display
    puts something else below the image (a scrolling strip exactly as wide as a linear probe's
    image, taken for its far wall, widened the field of view to it); fluid splitting a fan meets a
    body or a wall of some other shape on one side at least. Every piece ``within`` the wedge (a
    body in the fluid too) fills the bands it crosses."""
    group = np.isin(labels, within)
    d = np.round(depth).astype(int)
    lo, hi = int(d[group].min()), int(d[group].max())
    sel = inside & (d >= lo) & (d <= hi)
    total = np.bincount(d[sel] - lo, minlength=hi - lo + 1)
    share = np.bincount(d[sel & group] - lo, minlength=hi - lo + 1) / np.maximum(total, 1)
    empty = (share == 0) & (total > 0)
    middle = float(np.median(d[labels == largest]))
    kept = list(members)
    k = 0
    while k < len(empty):
        if not empty[k]:
            k += 1
            continue
        e = k
        while e + 1 < len(empty) and empty[e + 1]:
            e += 1
        if (share[max(0, k - 3):k].max(initial=0) >= WALL_BREAK_FULL
                and share[e + 1:e + 4].max(initial=0) >= WALL_BREAK_FULL):
            cut_lo, cut_hi = lo + k, lo + e
            if middle < cut_lo:
                kept = [i for i in kept if float(d[labels == i].max()) < cut_lo]
            else:
                kept = [i for i in kept if float(d[labels == i].min()) > cut_hi]
        k = e + 1
    return kept


def _outside_border_share(fan: np.ndarray) -> float:
    """The share of the image's outermost pixels that lie outside ``fan``."""
    ring = np.concatenate([fan[0], fan[-1], fan[1:-1, 0], fan[1:-1, -1]])
    return float((~ring).mean()) if ring.size else 0.0


def _filled_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of ``mask``'s pixels, filled (bool, all False for an empty mask)."""
    import cv2

    hull = np.zeros(mask.shape, np.uint8)
    # (the hull of the outlines' pixels is the hull of all of them, found in a fraction of the time)
    outlines, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if outlines:
        cv2.fillConvexPoly(hull, cv2.convexHull(np.concatenate(outlines)), 1)
    return hull != 0


def _hull_iou(fan: np.ndarray, other: np.ndarray) -> float:
    h = _filled_hull(fan)
    if not h.any():
        return 0.0
    union = float((h | other).sum())
    return float((h & other).sum()) / union if union else 0.0


def sweep_fov(sweep) -> np.ndarray | str:
    """The field of view for AC measurement and the frame choice on ``sweep``: the challenge's FOV
    mask (``"acouslic"``) for frames of ACOUSLIC size drawn in that fan, otherwise the sweep's own
    fan (:func:`data_fan`): another probe's, or another fan saved at ACOUSLIC's frame size, whose
    edges are not ACOUSLIC's (a mask cut by the real fan's edge must not be fitted along it, and
    an abdomen outside ACOUSLIC's fan must not be cut).

    Where the file says which rectangles of the screen show the body (a DICOM ultrasound image's
    tissue regions: :attr:`~fetaliqa_core.io.Sweep.image_regions`), the fan is looked for inside
    each of them: the scanner's grey control panel, a spectral Doppler strip or a thumbnail beside
    the image is no field of view (the largest bright region of a whole screen capture was the
    panel), and both images of a dual display are.

    Worked out once per sweep object and kept on it, read-only (0.1-0.2 s for a full case: the
    window's first overlay paid it on its own thread, a 0.36 s stall; its reader works it out
    beforehand)."""
    kept = getattr(sweep, "__dict__", {}).get(_FOV_KEPT)
    if kept is not None:
        return kept
    fov = _sweep_fov(sweep)
    if isinstance(fov, np.ndarray):
        fov.setflags(write=False)
    if isinstance(getattr(sweep, "__dict__", None), dict):
        sweep.__dict__[_FOV_KEPT] = fov  # (as a cached property keeps its value: frozen or not)
    return fov


_FOV_KEPT = "_fetaliqa_field_of_view"


def _sweep_fov(sweep) -> np.ndarray | str:
    spacing = getattr(sweep, "spacing_mm", None)
    regions = [r for r in getattr(sweep, "image_regions", ()) or ()
               if 0 <= r[0] <= r[2] < sweep.width and 0 <= r[1] <= r[3] < sweep.height]
    if regions:
        fan = np.zeros((sweep.height, sweep.width), bool)
        for x0, y0, x1, y1 in regions:
            fan[y0:y1 + 1, x0:x1 + 1] |= data_fan(sweep.frames[:, y0:y1 + 1, x0:x1 + 1], spacing)
        if not fan.any():
            fan = data_fan(sweep.frames, spacing)
    else:
        fan = data_fan(sweep.frames, spacing)
    if (sweep.height, sweep.width) == FRAME_SHAPE and _hull_iou(fan, fov_mask()) >= SAME_FAN_IOU:
        return "acouslic"
    return fan


def evaluator_fov(sweep) -> np.ndarray | str:
    """The field of view the challenge's evaluator applies: its own mask for every frame of
    ACOUSLIC size, whatever fan the frames show (for the challenge's metrics as it computes them);
    :func:`sweep_fov` for other sizes."""
    if (sweep.height, sweep.width) == FRAME_SHAPE:
        return "acouslic"
    return sweep_fov(sweep)


#: A fan that changes between frames (a display depth shortened or a sector narrowed while
#: scanning, frames joined from two settings): a run of at least this many frames ...
FAN_CHANGE_MIN_FRAMES = 3
#: ... whose fan lacks at least this share of the sweep's field of view (black there in every one
#: of its frames, across the fan's whole width: outside the convex hull of all they show) ...
FAN_CHANGE_MIN_SHARE = 0.04
#: ... and at most this share (a body in fluid shown black, the sweep's field of view being mostly
#: that body, moving out of view in the last frames lacked 77-85 % of it) ...
FAN_CHANGE_MAX_SHARE = 0.5
#: ... where the other frames show tissue, on average over them, on at least this share of it (the
#: far field of a fan that fades in every frame, or fluid shown black in some of the frames, is no
#: change: fluid that moved out of a corner of independent sweeps gave 0.55-0.69; a depth
#: shortened, 0.98-1.0).
FAN_CHANGE_LIT_SHARE = 0.8
#: ... and along whose edge (where the part begins) the run's own frames show tissue on at least this
#: share of it: a shortened depth arc runs through tissue shown; the hull's edge across fluid shown
#: black in every frame of a run does not.
FAN_CHANGE_EDGE_SHOWN = 0.6
#: The search looks at every frame on a grid of about this many pixels a side (0.1 s for 140 frames).
FAN_CHANGE_GRID = 140
#: Pieces of what a run shows smaller than this share of the field of view (marks drawn over the
#: image beyond a shortened fan's depth: calipers, a dotted measurement ellipse) are no tissue (the
#: hull reached them, and a run's fan kept 30 000 pixels beyond its depth arc).
FAN_CHANGE_SPECK = 0.004
#: Width (px) of the band a run's own fan leaves out along its new edge (see :func:`_fan_change`).
FAN_CHANGE_BAND_PX = 2
#: A surround whose grey strays more than this (its median absolute deviation) is a shading, not
#: one black level: no fan change is looked for on it.
FAN_CHANGE_MAX_NOISE = 3.0


class FanChange:
    """Where a sweep's fan changes between frames: ``starts`` the first frame of each run of frames
    sharing one fan (the first is 0), ``fans`` each run's field of view (bool ``(H, W)``, read-only;
    the sweep's own where that run shows all of it)."""

    def __init__(self, starts: list[int], fans: list[np.ndarray]):
        self.starts, self.fans = list(starts), list(fans)

    def run_of(self, frame: int) -> int:
        return max(0, int(np.searchsorted(self.starts, int(frame), side="right")) - 1)

    def frames_of(self, run: int, n_frames: int) -> tuple[int, int]:
        """First and last frame of ``run``."""
        stop = self.starts[run + 1] if run + 1 < len(self.starts) else n_frames
        return self.starts[run], stop - 1


def fan_change(sweep) -> FanChange | None:
    """Runs of frames whose fan differs from the sweep's field of view (:func:`sweep_fov`, the union
    of what all frames show), or None where every frame shows the same fan (and always on
    ACOUSLIC's own fan).

    A display depth shortened while scanning leaves the frames after it black across the fan's
    whole width beyond the new depth, in every one of them, where the frames before show tissue; a
    sector narrowed leaves its sides so. Measured in the deep fan of the other frames, an abdomen
    cut by the short fan's depth arc read whole (a plain AC up to 3.8 % short, with a GA). A run is
    found where the convex hull of all its frames show (above the surround's black level) leaves out
    :data:`FAN_CHANGE_MIN_SHARE` of the field of view that the other frames show tissue in: black
    fluid reaching the fan's edge in some frames, or a far field fading in every frame, leaves no
    such part (the hull closes over fluid; the far field is dark in all frames or in none).
    Changes are found by splitting the sweep in two where one side lacks such a part, and each
    side again (one setting after another: a run with frames of the other setting on both sides,
    the depth shortened and later restored, is not found, however long).

    Worked out once per sweep and kept on it, as :func:`sweep_fov` is."""
    kept = getattr(sweep, "__dict__", {}).get(_FAN_CHANGE_KEPT, False)
    if kept is not False:
        return kept
    fov = sweep_fov(sweep)
    found = None
    if not isinstance(fov, str):
        try:
            found = _fan_change(sweep.frames, np.asarray(fov, bool))
        except (TypeError, ValueError, MemoryError):  # (frames of an unusual kind: no change looked for)
            found = None
    if isinstance(getattr(sweep, "__dict__", None), dict):
        sweep.__dict__[_FAN_CHANGE_KEPT] = found
    return found


_FAN_CHANGE_KEPT = "_fetaliqa_fan_change"


def frame_fov(sweep, frame: int) -> np.ndarray | str:
    """The field of view ``frame`` of ``sweep`` is measured in: :func:`sweep_fov`, or where the fan
    changes between frames (:func:`fan_change`), the fan of the frames like it."""
    change = fan_change(sweep)
    if change is None or not 0 <= int(frame) < int(getattr(sweep, "n_frames", len(sweep.frames))):
        return sweep_fov(sweep)
    return change.fans[change.run_of(frame)]


def _grey(frame) -> np.ndarray:
    f = np.asarray(frame)
    return f.mean(axis=-1) if f.ndim == 3 else f


def _fan_change(frames, fov: np.ndarray) -> FanChange | None:
    import cv2

    n = len(frames)
    k = FAN_CHANGE_MIN_FRAMES
    if n < 2 * k or fov.ndim != 2 or not fov.any():
        return None
    h, w = fov.shape
    # (coarser for a long sweep: every frame's pixels shown on the grid take at most 64 MB)
    s = max(1, int(round(min(h, w) / FAN_CHANGE_GRID)), int(math.ceil(math.sqrt(n * h * w / 64e6))))
    small = fov[::s, ::s]
    sample = np.stack([_grey(frames[i])[::s, ::s] for i in range(0, n, max(1, n // 16))])
    outside = sample[:, ~small].astype(np.float32)
    if outside.size < 0.02 * sample.size:  # no surround to tell the black level by
        return None
    level = float(np.median(outside))
    noise = float(np.median(np.abs(outside - level)))
    if noise > FAN_CHANGE_MAX_NOISE:
        return None
    margin = max(0.5, 6.0 * noise)  # (what differs from the surround's grey, darker or brighter, is shown)
    kernel = np.ones((3, 3), np.uint8)

    # (a lone pixel above the black level, noise, or a thin mark drawn over the image is no tissue: a
    # caliper and a text label under the body beyond a shortened fan's depth arc kept the arc's
    # middle in the run's fan, just where the abdomen was cut: 5 px at least, as a 3 px opening on a
    # 320 x 240 frame kept the label 2-3 px deep, and the cut abdomen read 3.4 % short, plain)
    side = 2 * max(3, int(round(min(h, w) / 200))) + 1
    wide = np.ones((side, side), np.uint8)

    def shown_of(frame, step: int) -> np.ndarray:
        return (np.abs(_grey(frame)[::step, ::step].astype(np.float32) - level) > margin).astype(np.uint8)

    def lit_of(frame, step: int) -> np.ndarray:
        return cv2.morphologyEx(shown_of(frame, step), cv2.MORPH_OPEN, kernel if step > 1 else wide) != 0

    lit = np.stack([lit_of(frames[i], s) & small for i in range(n)])
    area = float(small.sum())

    def solid(on: np.ndarray, size: float) -> np.ndarray:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(on.astype(np.uint8), connectivity=8)
        big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= FAN_CHANGE_SPECK * size)
        return np.isin(labels, big[big > 0])

    def lacks(shown: np.ndarray, anywhere: np.ndarray, others: np.ndarray, field: np.ndarray = small) -> bool:
        """Whether the frames showing ``shown`` (their union) lack a part of the field of view (of
        ``field``, within it) that the frames ``others`` (what each shows; ``anywhere`` their union)
        show tissue in."""
        if float((field & ~shown).sum()) < FAN_CHANGE_MIN_SHARE * area:
            return False  # (what they show covers the field of view: no hull needed)
        hull = cv2.dilate(_filled_hull(solid(shown, area)).astype(np.uint8), kernel).astype(bool)
        part = field & ~hull
        size = float(part.sum())
        if not FAN_CHANGE_MIN_SHARE * area <= size <= FAN_CHANGE_MAX_SHARE * area:
            return False
        if float((part & anywhere).sum()) < FAN_CHANGE_LIT_SHARE * size:
            return False  # (the average below is the slow one)
        # the edge of what the run shows, where the part begins: a shortened depth arc or narrowed
        # side runs through tissue shown, a line across fluid shown black does not
        edge = hull & small & cv2.dilate(part.astype(np.uint8), kernel).astype(bool)
        near = cv2.dilate(shown.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if float((edge & near).sum()) < FAN_CHANGE_EDGE_SHOWN * float(edge.sum()):
            return False
        return float(others[:, part].mean()) >= FAN_CHANGE_LIT_SHARE

    def split(lo: int, hi: int) -> list[int]:
        """The first frames of the runs of one fan in frames ``lo`` to ``hi - 1``."""
        if hi - lo < 2 * k:
            return [lo]
        # (the unions of the frames before and after each cut, bit-packed: 8 times faster)
        packed = np.packbits(lit[lo:hi], axis=-1)
        before = np.bitwise_or.accumulate(packed, axis=0)
        after = np.bitwise_or.accumulate(packed[::-1], axis=0)[::-1]
        width = lit.shape[-1]
        # (within what these frames show at all: a run already split off lacks nothing of its own)
        field = small & _filled_hull(solid(np.unpackbits(after[0], axis=-1, count=width).astype(bool), area))

        def union(u: np.ndarray) -> np.ndarray:
            return np.unpackbits(u, axis=-1, count=width).astype(bool)

        cut = None
        for c in range(lo + k, hi - k + 1):  # a later run lacking a part: its first frame
            if lacks(union(after[c - lo]), union(before[c - lo - 1]), lit[lo:c], field):
                cut = c
                break
        if cut is None:
            for c in range(hi - k, lo + k - 1, -1):  # an earlier run lacking a part: its last frame
                if lacks(union(before[c - lo - 1]), union(after[c - lo]), lit[c:hi], field):
                    cut = c
                    break
        if cut is None:
            return [lo]
        return split(lo, cut) + split(cut, hi)

    starts = split(0, n)
    if len(starts) < 2:
        return None
    fans = []
    for r, start in enumerate(starts):
        stop = starts[r + 1] if r + 1 < len(starts) else n
        shown = np.logical_or.reduce(lit[start:stop])
        others = np.concatenate([lit[:start], lit[stop:]])
        if not lacks(shown, np.logical_or.reduce(others), others):
            fans.append(fov)
            continue
        # the run's own fan at full size: the convex hull of what its frames show, in the sweep's
        step = max(1, (stop - start) // 64)
        full = np.logical_or.reduce([lit_of(frames[i], 1) for i in range(start, stop, step)]) & fov
        own = fov & _filled_hull(solid(full, float(fov.sum())))
        # less the rim of pixels no frame of the run shows that the hull's straight chords take in
        # along a curved depth arc, or a mark's pieces left beside it (up to 3 px: an abdomen cut
        # there had its cut edge 2 px inside the field of view, read as outline, 3.4 % short, plain)
        for _ in range(3):
            own &= ~(cv2.dilate((~own).astype(np.uint8), kernel).astype(bool) & ~full)
        # and less a band along the edge it does not share with the sweep's field of view, where a
        # mark drawn across that edge may still hold it out a pixel or two: an outline reaching into
        # the band is taken as cut there (its cut edge, 1-2 px inside the field of view, read as
        # outline, and the abdomen measured 2-5 % short)
        band = np.ones((2 * FAN_CHANGE_BAND_PX + 1,) * 2, np.uint8)
        lacking = cv2.morphologyEx((fov & ~own).astype(np.uint8), cv2.MORPH_OPEN, band)  # (not a sliver)
        own &= ~cv2.dilate(lacking, band).astype(bool)
        own.setflags(write=False)
        fans.append(own)
    if all(f is fov for f in fans):
        return None
    return FanChange(starts, fans)
