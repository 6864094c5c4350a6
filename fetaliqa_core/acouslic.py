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


def data_fan(frames: np.ndarray) -> np.ndarray:
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
    (a body in fluid shown pure black that reaches the fan's edge: :func:`_with_islands`)."""
    import cv2

    step = max(1, len(frames) // 64)
    peak = np.asarray(frames[::step]).max(axis=0).astype(np.float32)
    fan = _region_above(peak, 0.0)
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
        clean = _without_ringing(peak, fan)
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
        # (what differs from that level is image, darker or not: in a dim sweep, a band of fluid
        # darker than a surround of 50 split the fan, and its lower part was left out); less JPEG's
        # ringing around it (a black decoded as 1 rang 8 px wide)
        above = _region_above(np.abs(peak - level), 0.0)
        if above.any():
            return _without_ringing(np.abs(peak - level), above)
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
        above = _region_above(np.abs(peak - level), 0.0)
        return _without_ringing(np.abs(peak - level), above) if above.any() else None
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


def _region_above(peak: np.ndarray, level: float) -> np.ndarray:
    """The largest region above ``level`` after an opening that removes what is thinner than 5
    pixels, with the holes inside filled."""
    import cv2

    above = (peak > level).astype(np.uint8)
    above[_frame_lines(above)] = 0  # a frame drawn snug around the fan joined it, and its box became the fan
    seen = cv2.morphologyEx(above, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(seen, connectivity=8)
    if count <= 1:
        return np.zeros(peak.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
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
    linear probe's field is convex; the hull brings the fluid back in with the body."""
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
            return region | inside
    return region


def _outside_border_share(fan: np.ndarray) -> float:
    """The share of the image's outermost pixels that lie outside ``fan``."""
    ring = np.concatenate([fan[0], fan[-1], fan[1:-1, 0], fan[1:-1, -1]])
    return float((~ring).mean()) if ring.size else 0.0


def _filled_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of ``mask``'s pixels, filled (bool, all False for an empty mask)."""
    import cv2

    hull = np.zeros(mask.shape, np.uint8)
    points = cv2.findNonZero(np.asarray(mask, np.uint8))
    if points is not None:
        cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
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
    regions = [r for r in getattr(sweep, "image_regions", ()) or ()
               if 0 <= r[0] <= r[2] < sweep.width and 0 <= r[1] <= r[3] < sweep.height]
    if regions:
        fan = np.zeros((sweep.height, sweep.width), bool)
        for x0, y0, x1, y1 in regions:
            fan[y0:y1 + 1, x0:x1 + 1] |= data_fan(sweep.frames[:, y0:y1 + 1, x0:x1 + 1])
        if not fan.any():
            fan = data_fan(sweep.frames)
    else:
        fan = data_fan(sweep.frames)
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
