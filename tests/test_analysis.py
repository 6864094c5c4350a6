"""Analysis layer: AC measurement, Hadlock GA, flags / best frames, challenge and frame metrics."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fetaliqa_core import acouslic
from fetaliqa_core import analysis as an

H, W = 562, 744


def drawn_ellipse(center, axes, angle, shape=(H, W), label=1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, center, axes, angle, 0, 360, label, -1)
    return m


def true_ac_mm(axes, spacing=0.28) -> float:
    return an.ramanujan_circumference(*axes) * spacing


# ---------------------------------------------------------------- AC measurement


def test_ramanujan_exact_for_circle_and_known_ellipse():
    assert an.ramanujan_circumference(10, 10) == pytest.approx(2 * math.pi * 10, rel=1e-12)
    # Exact perimeter of a 2:1 ellipse with semi-axes 2, 1 is 9.688448...
    assert an.ramanujan_circumference(2, 1) == pytest.approx(9.688448, rel=1e-5)


@pytest.mark.parametrize("axes", [(45, 45), (60, 35), (100, 70), (170, 120), (150, 60), (200, 190)])
@pytest.mark.parametrize("angle", [0, 33, 90, 128])
def test_drawn_ellipse_within_one_percent(axes, angle):
    m = an.measure_ac(drawn_ellipse((372, 300), axes, angle), 0.28, fov=None)
    assert m is not None
    assert m.ac_mm == pytest.approx(true_ac_mm(axes), rel=0.01)
    assert not m.truncated
    assert sorted(m.axes) == pytest.approx(sorted(axes), abs=1.5)
    assert m.center == pytest.approx((372, 300), abs=1.0)


def test_ellipse_inside_fan_untouched_by_fov_and_label_2_counts():
    mask = drawn_ellipse((372, 250), (150, 110), 20, label=2)
    m = an.measure_ac(mask)  # default: the ACOUSLIC FOV
    assert m is not None and not m.truncated
    assert m.ac_mm == pytest.approx(true_ac_mm((150, 110)), rel=0.01)
    assert m.spacing_mm == (0.28, 0.28)


@pytest.mark.parametrize(
    "center,axes,angle",
    [
        ((150, 330), (140, 110), 0),  # left fan edge cuts ~20 % of the ellipse off
        ((250, 120), (110, 90), 30),  # near the apex: both the fan edge and the top of the image
        ((372, 470), (150, 120), 10),  # runs off the bottom of the frame
    ],
)
def test_truncated_by_fan_edge_still_accurate(center, axes, angle):
    mask = drawn_ellipse(center, axes, angle)
    fov = acouslic.fov_mask()
    m = an.measure_ac(mask, 0.28)
    assert m is not None and m.truncated
    truth = true_ac_mm(axes)
    assert m.ac_mm == pytest.approx(truth, rel=0.015)
    # Fitting every outline point (the fan's straight edge included) is clearly worse, so the
    # dropped border points are what makes the measurement right.
    region = ((mask > 0) & fov).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    _, (w, h), _ = cv2.fitEllipse(max(contours, key=cv2.contourArea))
    naive = an.ramanujan_circumference(w / 2, h / 2) * 0.28
    assert abs(naive / truth - 1) > 0.02


def test_anisotropic_spacing_measured_in_mm():
    # 0.2 mm per column, 0.4 mm per row: semi-axes 150 px (x) and 60 px (y) are 30 and 24 mm.
    mask = drawn_ellipse((372, 300), (150, 60), 0)
    m = an.measure_ac(mask, (0.4, 0.2), fov=None)
    assert m is not None
    assert m.ac_mm == pytest.approx(an.ramanujan_circumference(30, 24), rel=0.01)
    # The pixel-space ellipse for drawing is unchanged by the spacing.
    assert sorted(m.axes) == pytest.approx([60, 150], abs=1.5)


def test_spacing_scales_linearly():
    mask = drawn_ellipse((372, 300), (120, 80), 45)
    a = an.measure_ac(mask, 0.28, fov=None)
    b = an.measure_ac(mask, 0.56, fov=None)
    assert b.ac_mm == pytest.approx(2 * a.ac_mm, rel=1e-6)


def test_not_measurable_cases():
    assert an.measure_ac(np.zeros((H, W), np.uint8)) is None
    tiny = np.zeros((H, W), np.uint8)
    tiny[300:302, 370:372] = 1  # 2x2 blob: 4 outline points, fewer than the fit needs
    assert an.measure_ac(tiny, min_area_px=0) is None
    small = np.zeros((H, W), np.uint8)
    small[300:306, 370:376] = 1  # 36 px: below the default minimum area
    assert an.measure_ac(small) is None
    assert an.measure_ac(small, min_area_px=0) is not None  # the challenge would measure it
    outside = drawn_ellipse((30, 30), (20, 20), 0)  # top-left corner: outside the fan
    assert an.measure_ac(outside, min_area_px=0) is None


def test_largest_region_wins():
    mask = drawn_ellipse((372, 300), (140, 100), 0)
    cv2.circle(mask, (600, 450), 25, 1, -1)
    m = an.measure_ac(mask, fov=None)
    assert m.ac_mm == pytest.approx(true_ac_mm((140, 100)), rel=0.01)


def test_fov_resized_to_other_frame_sizes():
    full = acouslic.fov_mask()
    assert full.shape == (H, W) and full.dtype == bool
    assert 0.6 < full.mean() < 0.68
    half = acouslic.fov_mask((281, 372))
    assert half.shape == (281, 372)
    assert half.mean() == pytest.approx(full.mean(), abs=0.01)
    m = an.measure_ac(drawn_ellipse((186, 150), (70, 50), 0, shape=(281, 372)), 0.56)
    assert m is not None and m.ac_mm == pytest.approx(true_ac_mm((70, 50), 0.56), rel=0.01)
    with pytest.raises(ValueError):
        an.measure_ac(np.zeros((10, 10)), fov=np.ones((5, 5), bool))


def test_ellipse_polygon_traces_the_fitted_ellipse():
    mask = drawn_ellipse((372, 300), (160, 90), 25)
    m = an.measure_ac(mask, fov=None)
    poly = an.ellipse_polygon(m, n=360)
    redrawn = np.zeros_like(mask)
    cv2.fillPoly(redrawn, [np.round(poly).astype(np.int32)], 1)
    assert an.dice(redrawn, mask) > 0.98


# ---------------------------------------------------------------- Hadlock


def test_hadlock_values_and_range():
    ga = an.hadlock_ga(300.0)  # 30 cm: 8.14 + 22.59 + 3.24
    assert ga.weeks == pytest.approx(33.97, abs=1e-9)
    assert not ga.out_of_range
    assert an.hadlock_ga(100.0).weeks == pytest.approx(8.14 + 7.53 + 0.36)
    assert an.hadlock_ga(50.0).out_of_range
    assert an.hadlock_ga(400.0).out_of_range
    lo, hi = an.HADLOCK_AC_RANGE_MM
    assert an.hadlock_ga(lo).weeks == pytest.approx(14.0, abs=0.05)
    assert an.hadlock_ga(hi).weeks == pytest.approx(42.0, abs=0.05)
    bad = an.hadlock_ga(float("nan"))
    assert math.isnan(bad.weeks) and bad.out_of_range


# ---------------------------------------------------------------- curves, flags, best frames

NAN = float("nan")


def test_combined_score_nan_aware():
    c = an.combined_score(np.array([0.2, NAN, 0.8, NAN]), np.array([0.6, 0.4, NAN, NAN]))
    assert c[:3] == pytest.approx([0.4, 0.4, 0.8])
    assert math.isnan(c[3])
    assert an.combined_score(None, np.array([0.3])) == pytest.approx([0.3])


def test_flag_frames_candidates_and_disagreements():
    p_cls = np.array([0.9, 0.9, 0.1, NAN, 0.7, NAN])
    p_seg = np.array([0.8, 0.2, 0.1, 0.6, NAN, NAN])
    f = an.flag_frames(p_cls, p_seg)
    assert f.cls_call.tolist() == [True, True, False, False, True, False]
    assert f.seg_call.tolist() == [True, False, False, True, False, False]
    assert f.disagreements.tolist() == [False, True, False, False, False, False]
    # flagged: every model that scored the frame calls it (frame 1: the segmenter does not)
    assert f.candidates.tolist() == [True, False, False, True, True, False]
    # the cascade's wider net: frame 1's mean(0.9, 0.2) = 0.55 reaches the thresholds' mean 0.5
    assert f.near_candidates.tolist() == [True, True, False, True, True, False]
    g = an.flag_frames(p_cls, p_seg, threshold_cls=0.5, threshold_seg=0.7)
    assert g.candidates.tolist() == [True, False, False, False, True, False]
    assert g.near_candidates.tolist() == [True, False, False, False, True, False]  # mean of 0.5 and 0.7
    assert g.disagreements.tolist() == [False, True, False, False, False, False]
    # an explicit segmenter call (area rule) overrides p_seg >= threshold
    h = an.flag_frames(p_cls, p_seg, seg_call=np.array([False, True, False, True, True, True]))
    assert h.seg_call.tolist() == [False, True, False, True, False, False]
    assert h.disagreements.tolist() == [True, False, False, False, False, False]


def test_a_frame_the_classifier_does_not_call_at_the_line_is_never_flagged():
    """The line dragged to 0.99: a frame of p_cls 0.64 and p_seg 0.90 (mean 0.77 over the thresholds'
    mean 0.745) stayed a candidate, in the window's list, frames.csv and the review queue, while the
    answer said no frame reached the classifier's threshold."""
    p_cls = np.array([0.64, 0.995, 0.995, 0.2])
    p_seg = np.array([0.90, 0.90, 0.30, 0.95])
    f = an.flag_frames(p_cls, p_seg, threshold_cls=0.99, threshold_seg=0.5)
    assert f.candidates.tolist() == [False, True, False, False]
    assert f.disagreements.tolist() == [True, False, True, True]  # one model calls these: still listed
    assert f.near_candidates.tolist() == [True, True, False, False]
    # one model: its own call at its threshold
    assert an.flag_frames(p_cls, None, threshold_cls=0.99).candidates.tolist() == [False, True, True, False]
    assert an.flag_frames(None, p_seg, threshold_seg=0.92).candidates.tolist() == [False, False, False, True]


def test_smooth_curve_stays_within_sweeps_and_skips_nan():
    v = np.array([0.0, 1.0, NAN, 1.0, 10.0, 10.0])
    s = an.smooth_curve(v, [(0, 4), (4, 6)], window=3)
    assert s.tolist()[:4] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert s[4:].tolist() == [10.0, 10.0]  # no leak from sweep 0
    assert math.isnan(an.smooth_curve(np.array([NAN, NAN]), window=3)[0])


def test_best_frames_ranking_and_tie_break():
    p_cls = np.array([0.9, 0.9, 0.3, NAN, 0.2, 0.2, NAN, NAN])
    p_seg = np.array([0.7, 0.7, 0.9, NAN, 0.3, 0.4, NAN, NAN])
    area = np.array([500, 900, 1500, -1, 10, 10, -1, -1])
    best = an.best_frames(p_cls, p_seg, area, [(0, 4), (4, 6), (6, 8)])
    # sweep 0: frames 0 and 1 tie at 0.8, the larger mask (frame 1) wins over frame 2 (0.6)
    assert best[0].frame == 1 and best[0].score == pytest.approx(0.8) and best[0].passes
    assert best[0].optimal is None and best[0].area_px == 900
    # sweep 1: nothing passes, still the highest score is reported
    assert best[1].frame == 5 and not best[1].passes
    assert best[2] is None  # nothing scored


def test_optimal_call_preferred_over_suboptimal():
    p_cls = np.array([0.95, 0.7, 0.1])
    p_seg = np.array([0.9, 0.7, 0.8])
    p_opt = np.array([0.1, 0.8, 0.9])  # frame 0 suboptimal, 1 optimal, 2 optimal but not passing
    assert an.choose_case_frame(p_cls, p_seg, p_opt=p_opt) == 1
    assert an.choose_case_frame(p_cls, p_seg) == 0
    best = an.best_frames(p_cls, p_seg, None, [(0, 3)], p_opt=p_opt)
    assert best[0].frame == 1 and best[0].optimal is True


def test_choose_case_frame_minus_one_and_across_sweeps():
    assert an.choose_case_frame(np.array([0.1, 0.4, NAN]), None) == -1
    assert an.choose_case_frame(np.full(3, NAN), np.full(3, NAN)) == -1
    assert an.choose_case_frame(np.array([0.6, 0.2, 0.99, 0.7]), None) == 2


# ---------------------------------------------------------------- per-frame metrics


def test_binary_metrics_hand_case():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 0], bool)
    p = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], bool)
    m = an.binary_metrics(y, p)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 5, 2)
    assert m.accuracy == pytest.approx(0.7)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(0.5)
    assert m.specificity == pytest.approx(5 / 6)
    assert m.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_binary_metrics_zero_divisions():
    m = an.binary_metrics(np.zeros(4, bool), np.zeros(4, bool))
    assert (m.accuracy, m.precision, m.recall, m.f1, m.specificity) == (1.0, 0.0, 0.0, 0.0, 1.0)
    m = an.binary_metrics(np.ones(3, bool), np.ones(3, bool))
    assert m.specificity == 0.0 and m.f1 == 1.0
    assert math.isnan(an.binary_metrics(np.array([]), np.array([])).accuracy)


def test_dice():
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    a[0:4, 0:5] = 1  # 20 px
    b[2:6, 0:5] = 2  # 20 px, overlap 10
    assert an.dice(a, b) == pytest.approx(0.5)
    assert an.dice(a * 0, b * 0) == 1.0
    assert an.dice(a * 0, b * 0, empty_value=0.0) == 0.0
    d = an.dice_per_frame(np.stack([a, a * 0, a]), np.stack([b, b * 0, a]))
    assert d[0] == pytest.approx(0.5) and math.isnan(d[1]) and d[2] == 1.0


# ---------------------------------------------------------------- challenge metrics


def small_case():
    """40 frames of 32x32 in two sweeps of 20. Frame 5: label 1 (optimal), frame 25: label 2."""
    gt = np.zeros((40, 32, 32), np.uint8)
    gt[5, 8:16, 8:16] = 1  # 64 px
    gt[25, 8:16, 8:16] = 2
    return gt, [(0, 20), (20, 40)], [250.0, None]


def test_wfss_rules():
    gt, _, _ = small_case()
    assert an.wfss(gt, 5) == 1.0
    assert an.wfss(gt, 25) == 0.6  # suboptimal while an optimal frame exists
    assert an.wfss(gt, 7) == 0.0
    assert an.wfss(gt, -1) == 0.0
    sub_only = gt.copy()
    sub_only[5][sub_only[5] == 1] = 2
    assert an.wfss(sub_only, 25) == 1.0  # no optimal anywhere: suboptimal is full marks
    empty = np.zeros_like(gt)
    assert an.wfss(empty, -1) == 0.0 and an.wfss(empty, 3) == 0.0
    assert an.wfss(empty, -1, credit_abstention=True) == 1.0
    assert an.wfss(empty, 3, credit_abstention=True) == 0.0

# case_metrics and its evaluator quirks: tests/test_challenge.py


# ---------------------------------------------------------------- whose fan
def _frames_in(fan: np.ndarray, n: int = 12, seed: int = 0) -> np.ndarray:
    """``n`` speckled frames inside ``fan`` with a pure-black blob (fluid drawn without noise)."""
    rng = np.random.default_rng(seed)
    frames = (rng.integers(20, 200, size=(n, *fan.shape)) * fan).astype(np.uint8)
    frames[:, 250:300, 340:400] = 0  # inside every fan below: a hole in what is non-zero
    return frames


def _sweep_of(frames: np.ndarray):
    from types import SimpleNamespace

    n, h, w = frames.shape
    return SimpleNamespace(frames=frames, n_frames=n, height=h, width=w, spacing_mm=(0.28, 0.28))


def test_a_fan_is_found_on_a_black_level_above_zero_and_inside_a_burnt_in_frame():
    """A video black level of 2, faint noise outside the fan, or a thin frame drawn around the
    image made every pixel count as the fan: an abdomen cut by the fan's edge was fitted as whole
    (an AC 10 % short, plainly). The fan is what stands above the black level, as one region."""
    rect = np.zeros((H, W), bool)
    rect[20:540, 40:704] = True
    frames = _frames_in(rect)
    rng = np.random.default_rng(3)
    variants = {
        "black level 2": np.maximum(frames, 2),
        "noise 0-3": np.where(frames == 0, rng.integers(0, 4, frames.shape), frames).astype(np.uint8),
    }
    boxed = frames.copy()
    boxed[:, 5:7, 5:-5] = boxed[:, -7:-5, 5:-5] = boxed[:, 5:-5, 5:7] = boxed[:, 5:-5, -7:-5] = 200
    boxed[:, 2:12, 300:420] = 255  # and a line of text above the fan
    variants["burnt-in frame"] = boxed
    # a capture's video black level of 20 where the darkest image is about 200 (a tenth of it:
    # the whole screen was taken for the fan), and 16
    bright = np.where(frames == 0, 0, np.maximum(frames, 40)).astype(np.uint8)
    variants["black level 20"] = np.maximum(bright, 20)
    variants["black level 16"] = np.maximum(bright, 16)
    for name, arr in variants.items():
        arr = arr.copy()
        arr[:, 250:300, 340:400] = 0  # pure black fluid inside: still the fan
        fan = acouslic.data_fan(arr)
        assert (fan != rect).mean() < 0.002, name
    flat = np.full((4, 96, 128), 50, np.uint8)  # an image filling the frame: all of it
    assert acouslic.data_fan(flat).all()
    # an image filling the frame with dark fluid (grey 1-4) along its left edge: all of it too
    filled = rng.integers(40, 200, (6, 300, 400), dtype=np.uint8)
    filled[:, 60:240, :60] = rng.integers(1, 5, (6, 180, 60), dtype=np.uint8)
    assert acouslic.data_fan(filled).all()


def test_a_body_in_pure_black_fluid_reaching_the_fans_edge_stays_in_the_field_of_view():
    """Fluid shown pure black (a scanner's reject) that reaches the edge of the image joined the
    black outside, and the body in it was an island left out of the field of view: its outline lay
    on the field's edge and no AC was measured on a whole, correct mask."""
    rect = np.zeros((H, W), bool)
    rect[20:540, 40:704] = True
    frames = _frames_in(rect, n=1)
    yy, xx = np.mgrid[0:H, 0:W]
    body = ((yy - 300) / 120.0) ** 2 + ((xx - 372) / 100.0) ** 2 <= 1
    ring = (((yy - 300) / 150.0) ** 2 + ((xx - 372) / 130.0) ** 2 <= 1) & ~body
    frames[:, ring] = 0
    frames[:, 20:170, 340:404] = 0  # the fluid runs up to the probe
    frames[:, body] = np.maximum(frames[:, body], 60)
    fan = acouslic.data_fan(frames)
    assert fan[body].all() and (fan != rect).mean() < 0.002
    mask = body.astype(np.uint8)
    m = an.measure_ac(mask, 0.3, fov=fan)
    assert m is not None and m.ac_mm == pytest.approx(an.measure_ac(mask, 0.3, fov=None).ac_mm, rel=1e-3)
    # a mark burnt in between a curved fan's top arc and its chord is no body: the hull there took
    # in the space above the arc, and an abdomen cut by the arc was measured 3.8 % short, unflagged
    yy2, xx2 = np.mgrid[0:H, 0:W]
    radius, angle = np.hypot(xx2 - 372, yy2 + 100), np.arctan2(xx2 - 372, yy2 + 100)
    sector = (radius >= 200) & (radius <= 650) & (np.abs(angle) <= math.radians(35))
    curved = _frames_in(sector, n=1)
    curved[:, 250:300, 340:400] = 90  # (no fluid hole here)
    curved[:, 66:95, 330:414] = 230  # the mark, inside the lens above the arc
    found = acouslic.data_fan(curved)
    assert (found != sector).mean() < 0.002
    # a second image beside the first (a dual display without regions) is no island of it
    dual = np.zeros((1, H, W), np.uint8)
    dual[:, 40:520, 20:360] = 90
    dual[:, 40:520, 400:720] = 90
    left = acouslic.data_fan(dual)
    assert left[:, :380].any() != left[:, 380:].any()


def _split_sector(h: int, w: int, aspect: float = 1.0):
    """A curved probe's sector (apex above the image) split by fluid shown pure black into a near
    wall, a body and a far wall, with pixels ``aspect`` times as tall as wide: the sector, the
    tissue, and the pixels' radius from the apex (in widths of a pixel)."""
    yy, xx = np.mgrid[0:h, 0:w]
    dy = (yy + 30) * aspect
    radius, angle = np.hypot(xx - w / 2, dy), np.degrees(np.arctan2(xx - w / 2, dy))
    sector = (radius >= 60) & (radius <= 330 * aspect) & (np.abs(angle) <= 36)
    body = ((xx - w / 2) / 70.0) ** 2 + ((yy - 190) / 60.0) ** 2 <= 1
    return sector, sector & ((radius < 110) | (radius > 290 * aspect) | body), radius


def test_a_fan_split_by_pure_black_fluid_is_found_whole():
    """Fluid shown pure black (a clean export) that reaches both sides of the fan split it into a
    near wall, a body and a far wall: the fluid joined the black outside, and the field of view was
    the largest piece only (IoU 0.31-0.93 with the drawn fan on an independent generator's sweeps),
    so whole abdomens in the rest were doubted as cut by the field of view. The pieces that run
    along both sides of the fan (and, for a sector, end on its depth arc) are one fan now, never
    reaching past it."""
    rng = np.random.default_rng(2)
    sector, tissue, _ = _split_sector(420, 440)
    frames = (rng.integers(40, 160, (6, 420, 440)) * tissue).astype(np.uint8)
    fan = acouslic.data_fan(frames)
    assert not (fan & ~sector).any() and (sector & ~fan).sum() < 0.04 * sector.sum()
    # the body, a whole abdomen, is measured whole, not as cut by the field of view
    yy, xx = np.mgrid[0:420, 0:440]
    abdomen = (((xx - 220) / 70.0) ** 2 + ((yy - 190) / 60.0) ** 2 <= 1).astype(np.uint8)
    m = an.measure_ac(abdomen, 0.3, fov=fan)
    assert m is not None and not m.truncated
    # a linear probe's rectangle split the same way, and a sector shown with pixels 0.3 mm tall and
    # 0.4 mm wide (its depth arc an ellipse on the screen)
    rect = np.zeros((420, 440), bool)
    rect[20:400, 60:380] = True
    body = ((xx - 220) / 70.0) ** 2 + ((yy - 210) / 60.0) ** 2 <= 1
    linear = rect & ((yy < 80) | (yy > 350) | body)
    fan = acouslic.data_fan((rng.integers(40, 160, (6, 420, 440)) * linear).astype(np.uint8))
    assert not (fan & ~rect).any() and (rect & ~fan).sum() < 0.04 * rect.sum()
    sector, tissue, _ = _split_sector(420, 440, aspect=0.75)
    frames = (rng.integers(40, 160, (6, 420, 440)) * tissue).astype(np.uint8)
    fan = acouslic.data_fan(frames, spacing_mm=(0.3, 0.4))
    assert not (fan & ~sector).any() and (sector & ~fan).sum() < 0.04 * sector.sum()


def test_a_bar_or_strip_below_a_split_fan_never_joins_it():
    """Joining the pieces of a fan split by black fluid must not take in what a display shows below
    it and changes from frame to frame: a cine progress bar, a lossy grey bar, a scrolling M-mode
    strip (taken for the far wall, it widened the field of view to it, and an abdomen cut by the
    depth arc read whole, 3.1 % short), nor a strip exactly as wide as a linear probe's image."""
    rng = np.random.default_rng(4)
    h, w, n = 470, 440, 8
    sector, tissue, radius = _split_sector(h, w)
    below = radius > 335  # (a gap of black between the fan and what lies below it)

    def progress(f, i):
        f[420:436, 140:140 + 20 * (i + 1)] = 200

    def lossy(f, i):
        f[420:436, 140:300] = 90 + rng.integers(-1, 2, (16, 160))

    def strip(f, i):  # within the wedge's width, scrolling
        f[405:465, 120:320] = np.roll(rng.integers(30, 200, (60, 200)), 7 * i, axis=1)

    for name, draw in (("progress bar", progress), ("lossy bar", lossy), ("scrolling strip", strip)):
        frames = np.zeros((n, h, w), np.uint8)
        for i in range(n):
            frames[i] = rng.integers(40, 160, (h, w)) * tissue
            draw(frames[i], i)
            assert ((frames[i] > 0) & below).any() and not ((frames[i] > 0) & ~tissue & sector).any()
        fan = acouslic.data_fan(frames)
        assert not (fan & ~sector).any(), name
        assert (sector & ~fan).sum() < 0.04 * sector.sum(), name
    # a progress bar drawn across the depth arc is one piece with the far wall: no more of the fan
    # than before joins it (the hull of the walls and the bar took in the black beside the bar)
    frames = np.zeros((n, h, w), np.uint8)
    bar = np.zeros((h, w), bool)
    bar[290:306, 140:300] = True
    for i in range(n):
        frames[i] = rng.integers(40, 160, (h, w)) * tissue
        frames[i][bar] = 200
    fan = acouslic.data_fan(frames)
    assert not (fan & ~sector & ~bar).any()
    # a linear probe's image split by black fluid, a scrolling strip as wide as the image below it
    yy, xx = np.mgrid[0:h, 0:w]
    rect = np.zeros((h, w), bool)
    rect[20:360, 60:380] = True
    body = ((xx - 220) / 70.0) ** 2 + ((yy - 190) / 55.0) ** 2 <= 1
    linear = rect & ((yy < 80) | (yy > 320) | body)
    frames = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        frames[i] = rng.integers(40, 160, (h, w)) * linear
        frames[i, 380:410, 60:380] = np.roll(rng.integers(30, 200, (30, 320)), 7 * i, axis=1)
    fan = acouslic.data_fan(frames)
    assert not fan[360:].any() and (rect & ~fan).sum() < 0.04 * rect.sum()


def test_a_frame_line_drawn_snug_around_the_fan_is_no_part_of_it():
    """A white frame 5-7 px wide drawn around the fan, touching its arc and corners, joined the fan's
    region: the filled box of the frame was taken for the field of view (IoU 0.58), and an abdomen
    cut by the fan's edge read 9.6 % short for want of the edge. Thinner frames were opened away."""
    yy, xx = np.mgrid[0:H, 0:W]
    radius, angle = np.hypot(xx - 372, yy + 60), np.arctan2(xx - 372, yy + 60)
    sector = (radius >= 90) & (radius <= 520) & (np.abs(angle) <= math.radians(38))
    ys, xs = np.nonzero(sector)
    for width in (3, 5, 7, 10):
        frames = _frames_in(sector, n=2)
        # drawn on the fan's outermost pixels (3 px of it under the line), as a frame snug around it
        y0, y1, x0, x1 = ys.min() + 3 - width, ys.max() - 2, xs.min() + 3 - width, xs.max() - 2
        for box in ((slice(y0, y0 + width), slice(x0, x1 + width)), (slice(y1, y1 + width), slice(x0, x1 + width)),
                    (slice(y0, y1 + width), slice(x0, x0 + width)), (slice(y0, y1 + width), slice(x1, x1 + width))):
            frames[(slice(None), *box)] = 255
        fan = acouslic.data_fan(frames)
        assert (fan != sector).mean() < 0.004, width  # (the 3 px under the line are lost)
    # a linear probe's rectangle with the frame on it: the rectangle (the frame's edge has image
    # beside it, and a rectangle is thick)
    rect = np.zeros((H, W), bool)
    rect[30:530, 60:684] = True
    framed = _frames_in(rect, n=2)
    framed[:, 24:30, 54:690] = framed[:, 530:536, 54:690] = framed[:, 24:536, 54:60] = framed[:, 24:536, 684:690] = 255
    fan = acouslic.data_fan(framed)
    assert fan[rect].all() and (fan & ~rect).sum() <= 2 * 6 * (500 + 636) + 4 * 36


def test_jpeg_ringing_around_a_fan_on_exact_black_is_no_part_of_it():
    """Frames saved as JPEG (a JPEG-compressed DICOM, a folder of JPEG frames) keep their surround
    exactly 0 but in the 8 x 8 blocks the fan's edge crosses, where it rings a few grey levels
    above 0: the field of view was found up to 7 px too large (IoU 0.93), an abdomen cut by the
    depth arc no longer met its edge, and its AC read 3.2 % short as a whole outline's."""
    yy, xx = np.mgrid[0:H, 0:W]
    radius, angle = np.hypot(xx - 372, yy + 60), np.arctan2(xx - 372, yy + 60)
    sector = (radius >= 90) & (radius <= 560) & (np.abs(angle) <= math.radians(38))
    rng = np.random.default_rng(7)
    smooth = [cv2.GaussianBlur(rng.integers(40, 160, (H, W)).astype(np.uint8), (3, 3), 0) for _ in range(8)]
    clean = np.stack([np.where(sector, f, 0) for f in smooth]).astype(np.uint8)
    for quality in (95, 90, 75):
        jpeg = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1],
                                      cv2.IMREAD_GRAYSCALE) for f in clean])
        assert ((jpeg > 0) & ~sector).sum() > 1000  # (the ringing is there)
        fan = acouslic.data_fan(jpeg)
        assert (fan != sector).sum() / sector.sum() < 0.005, quality
    # an abdomen cut by the depth arc is measured as cut, not as a whole, shorter outline
    centre, axes = (372, 480), (150.0, 130.0)
    abdomen = ((xx - centre[0]) / axes[0]) ** 2 + ((yy - centre[1]) / axes[1]) ** 2 <= 1
    assert (abdomen & ~sector).any()
    m = an.measure_ac((abdomen & sector).astype(np.uint8), 0.2, fov=acouslic.data_fan(jpeg))
    whole = an.measure_ac(abdomen.astype(np.uint8), 0.2, fov=None)
    assert m.truncated and m.ac_mm == pytest.approx(whole.ac_mm, rel=0.01)
    # without JPEG the fan is whole, and so is one whose far field fades into a dim band of tissue
    # (grey 10-20, 24 px deep): only a faint rim within a block of the edge is taken for ringing
    whole = acouslic.data_fan(clean)
    assert (whole != sector).sum() < 50  # (the opening rounds the fan's sharp corners)
    dim = clean.copy()
    far = sector & (radius >= 536)
    dim[:, far] = rng.integers(10, 21, (len(dim), int(far.sum())))
    assert (acouslic.data_fan(dim) == whole).all()


def test_black_fluid_in_a_fan_on_a_grey_screen_is_not_taken_for_a_clean_exports_black():
    """A fan on a grey screen (60, or 60 +- 2 from a lossy capture) holding black amniotic fluid
    (exactly 0, over a tenth of the frame): the zeros were taken for a clean export's surround,
    everything above them, the grey screen included, for the fan, and an abdomen cut by the depth
    arc read 3.6 % short, plain, with a GA."""
    yy, xx = np.mgrid[0:H, 0:W]
    radius, angle = np.hypot(xx - 372, yy + 60), np.arctan2(xx - 372, yy + 60)
    sector = (radius >= 90) & (radius <= 520) & (np.abs(angle) <= math.radians(38))
    rng = np.random.default_rng(11)
    frames = rng.integers(40, 220, size=(6, H, W)).astype(np.uint8)
    frames[:, (radius >= 90) & (radius <= 300)] = 0  # the near field: fluid shown pure black
    assert ((frames.max(0) == 0) & sector).mean() > 0.1
    for name, screen in (("grey 60", np.full((6, H, W), 60, np.uint8)),
                         ("grey 60 +- 2", rng.integers(58, 63, size=(6, H, W)).astype(np.uint8))):
        arr = np.where(sector, frames, screen).astype(np.uint8)
        fan = acouslic.data_fan(arr)
        assert (fan != sector).sum() / sector.sum() < 0.01, name
        cut = ((yy - 470) / 120.0) ** 2 + ((xx - 372) / 140.0) ** 2 <= 1
        assert (cut & ~sector).any()
        m = an.measure_ac((cut & sector).astype(np.uint8), 0.3, fov=fan)
        assert m.truncated, name


def test_a_grey_line_round_a_clean_export_or_a_dark_grey_screen_leaves_the_fan_its_own_size():
    """Two readings of exact zeros inside a border of another grey: a clean export's black with a
    grey line (or bars) along the border, or black fluid in a fan on a grey screen. A 1 px grey line
    round a clean export made the whole screen the fan (the grey taken for the screen), and a dark
    grey screen of 4 did too (the zeros taken for a clean export's black): either way an abdomen
    cut by the depth arc was measured as a whole, shorter outline. The smaller reading is taken.
    A JPEG's black decoded as 1 rang 8 px outside the fan: the ringing goes as on exact black."""
    yy, xx = np.mgrid[0:H, 0:W]
    radius, angle = np.hypot(xx - 372, yy + 60), np.arctan2(xx - 372, yy + 60)
    sector = (radius >= 90) & (radius <= 520) & (np.abs(angle) <= math.radians(38))
    rng = np.random.default_rng(12)
    tissue = rng.integers(40, 220, size=(6, H, W)).astype(np.uint8)
    with_fluid = tissue.copy()
    with_fluid[:, (radius >= 90) & (radius <= 300)] = 0  # the near field: fluid shown pure black
    lined = np.where(sector, tissue, 0).astype(np.uint8)
    lined[:, [0, -1], :] = lined[:, :, [0, -1]] = 40  # a 1 px grey line round the image
    for name, arr in (("grey line", lined), ("dark grey screen 4", np.where(sector, with_fluid, 4))):
        fan = acouslic.data_fan(arr.astype(np.uint8))
        assert (fan != sector).sum() / sector.sum() < 0.01, name
    # (with black fluid reaching the probe under a clean export's black, the fluid's part is lost,
    # as without the line: never more than the fan)
    fan = acouslic.data_fan(np.where(sector, with_fluid, lined).astype(np.uint8))
    assert (fan & ~sector).sum() < 0.001 * sector.sum()
    smooth = [cv2.GaussianBlur(rng.integers(40, 160, (H, W)).astype(np.uint8), (3, 3), 0) for _ in range(6)]
    clean = np.stack([np.where(sector, f, 0) for f in smooth]).astype(np.uint8)
    jpeg = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1],
                                  cv2.IMREAD_GRAYSCALE) for f in clean])
    lifted = (jpeg.astype(np.int16) + 1).clip(0, 255).astype(np.uint8)  # its black decoded as 1
    assert ((lifted > 1) & ~sector).sum() > 1000
    fan = acouslic.data_fan(lifted)
    assert (fan != sector).sum() / sector.sum() < 0.005


def test_a_noisy_video_black_level_around_a_dim_image_is_no_part_of_the_fan():
    """A capture's black level of 16 +- 2 (lossy) around an image whose brightest grey is 135: the
    exact-level rule did not hold, the darkest tenth was not dark beside the image, and the whole
    screen was taken for the fan (an abdomen cut by the fan's edge then read -9.6 %)."""
    rect = np.zeros((H, W), bool)
    rect[60:500, 120:640] = True
    rng = np.random.default_rng(5)
    frames = (rng.integers(30, 140, size=(1, H, W)) * rect).astype(np.uint8)  # one frame: no maximum evens the noise
    frames = np.where(rect, frames, rng.integers(14, 19, size=frames.shape)).astype(np.uint8)
    fan = acouslic.data_fan(frames)
    assert (fan != rect).mean() < 0.002
    # an image filling the frame with fluid of one grey level give or take a little (28 +- 2) in its
    # lower part, reaching the bottom and both sides: all of it is the fan (the band rule cut the
    # fluid and the abdomen in it away); a surround holds the frame's top corners, fluid does not
    filled = rng.integers(40, 200, size=(1, H, W)).astype(np.uint8)
    filled[:, 200:] = rng.integers(26, 31, size=(1, H - 200, W))
    filled[:, 300:420, 300:450] = rng.integers(60, 160, size=(1, 120, 150))  # a body in the fluid
    assert acouslic.data_fan(filled).all()


def test_another_fan_at_acouslic_frame_size_is_its_own_field_of_view():
    """Frames of ACOUSLIC's size drawn in ACOUSLIC's fan use the challenge's mask; the same size
    from a linear probe (a rectangle reaching where ACOUSLIC's fan does not) uses its own fan, holes
    filled. An abdomen in the rectangle's top-left corner, mostly outside ACOUSLIC's fan, is a
    plausible abdomen measured whole; with ACOUSLIC's mask it was "mostly outside the fan" and its
    outline "cut by the field of view". The evaluator's field of view stays its own."""
    own = _frames_in(acouslic.fov_mask())
    assert acouslic.sweep_fov(_sweep_of(own)) == "acouslic"
    rect = np.zeros((H, W), bool)
    rect[20:540, 40:704] = True
    frames = _frames_in(rect)
    sweep = _sweep_of(frames)
    fov = acouslic.sweep_fov(sweep)
    assert isinstance(fov, np.ndarray) and np.array_equal(fov, rect)  # the black blob is inside
    assert acouslic.evaluator_fov(sweep) == "acouslic"
    from fetaliqa_core.analysis import frame_choice

    mask = drawn_ellipse((160, 150), (90, 75), 10)
    assert frame_choice.mask_shape(mask, acouslic.fov_mask(), 0.28).reason.startswith("cut off:")
    assert an.measure_ac(mask, 0.28, fov="acouslic").truncated
    assert frame_choice.mask_shape(mask, fov, 0.28).plausible
    m = an.measure_ac(mask, 0.28, fov=fov)
    assert not m.truncated and m.ac_mm == pytest.approx(true_ac_mm((90, 75)), rel=0.01)


def test_a_curved_fan_close_to_acouslic_s_but_shallower_is_its_own_field_of_view():
    """Other curved-array fans drawn at ACOUSLIC's frame size overlapped its fan 0.91-0.96 and were
    taken for it: an abdomen cut by the real, shallower depth arc was measured whole, plain with a
    GA, up to 4 % short. A fan 25 rows shallower is its own; one 10 rows shallower (the depth arc
    found a little short in a dim sweep) is still ACOUSLIC's."""
    fov = acouslic.fov_mask()
    for rows, expected in ((10, "acouslic"), (25, None)):
        fan = fov.copy()
        fan[-rows:] = False
        got = acouslic.sweep_fov(_sweep_of(_frames_in(fan)))
        if expected:
            assert got == expected, rows
        else:
            assert isinstance(got, np.ndarray) and not got[-rows:].any(), rows  # its own depth arc
            assert (got & fan).sum() / (got | fan).sum() > 0.97


def test_the_summary_names_the_field_of_view_its_acs_are_measured_in():
    """summary.json did not say whether ACOUSLIC's fan or the sweep's own was used (`ac --json` did)."""
    from fetaliqa_core.analysis.assessment import _field_of_view_name

    assert _field_of_view_name(_sweep_of(_frames_in(acouslic.fov_mask()))) == "acouslic"
    rect = np.zeros((H, W), bool)
    rect[20:540, 40:704] = True
    assert _field_of_view_name(_sweep_of(_frames_in(rect))) == "the sweep's own fan"


def test_the_ranges_are_judged_on_the_ac_as_shown():
    """'AC 380.0 mm (no GA: outside Hadlock's 75-380 mm)' and 'AC 420.0 mm (doubtful: ... implausible
    size)': the value was tested unrounded and shown rounded."""
    from fetaliqa_core.analysis.ac import hadlock_ga
    from fetaliqa_core.analysis.units import OK, read_ac

    r = read_ac(380.04)
    assert r.text().startswith("AC 380.0 mm") and r.ga_weeks is not None and not hadlock_ga(380.04).out_of_range
    assert read_ac(380.06).ga_weeks is None and hadlock_ga(380.06).out_of_range
    assert read_ac(420.04).status == OK and read_ac(420.06).status != OK
    assert read_ac(74.96).status == OK and read_ac(74.94).status != OK


def test_a_doubtful_ac_has_a_few_words_for_why():
    """The window's status bar said only "(doubtful)": the reason was in a tooltip no sonographer
    hovers over. The few words it shows now follow the reading's own reason."""
    from fetaliqa_core.analysis import frame_choice as fc
    from fetaliqa_core.analysis.units import DEMO_MODEL_DOUBT, classifier_doubt, read_ac, short_doubt

    def why(ac_mm=200.0, **kw):
        return short_doubt(read_ac(ac_mm, **kw).note)

    assert why(mask_problem=fc.FLATTENED_REASON) == "flattened outline"
    assert why(mask_problem=fc.FLATTENED_REASON + "; and " + fc.OVAL_REASON.format(ratio="0.66")) == \
        "flattened, oval outline"
    assert why(mask_problem=fc.WAIST_REASON) == "pinched outline"
    assert why(mask_problem="cut off straight, by an edge the sweep's own fan does not have") == "outline cut off"
    assert why(mask_problem="fragmented") == "not an abdomen's outline"
    assert why(disagreement=classifier_doubt(0.2, 0.5)) == "models disagree"
    assert why(model_doubt=DEMO_MODEL_DOUBT) == "demo model"
    assert short_doubt(read_ac(500.0).note) == "implausible size"
    assert short_doubt("something else entirely") == ""
    # the value out of range is kept beside the first reason; a mask of implausible size says size;
    # the user's own models on pixels that are not square say so
    from fetaliqa_core.analysis.units import model_doubt

    assert why(mask_problem=fc.FLATTENED_REASON, ac_mm=40.0) == "flattened outline, implausible size"
    assert short_doubt(read_ac(600.0, model_doubt=DEMO_MODEL_DOUBT).note) == "demo model, implausible size"
    assert why(mask_problem="implausible size for an abdomen") == "implausible size"
    assert why(model_doubt=model_doubt(False, (0.2, 0.3))) == "pixels not square"
    # a mask problem and the other model's word: both in the reason (the second was dropped)
    both = read_ac(200.0, mask_problem=fc.FLATTENED_REASON, disagreement=classifier_doubt(0.28, 0.67))
    assert "flattened" in both.note and "score 0.28" in both.note and "models disagree" in both.note
    assert short_doubt(both.note) == "flattened outline"


def test_a_fan_on_a_grey_background_is_no_whole_frame():
    """A fan exported on a flat grey background of 50 beside tissue up to ~180 (more than a quarter
    of the bright grey), or on a grey of 47 noisy from frame to frame (+-3: 43-53 at its brightest
    over the frames), was no surround: the whole frame was the fan, and an abdomen cut by the
    fan's arc was measured plain, 3-4 % short. Both are surrounds now; the fan's edge stays put."""
    fan = acouslic.fov_mask((H, W))
    rng = np.random.default_rng(11)
    frames = (rng.integers(60, 200, size=(24, H, W)) * fan).astype(np.uint8)
    flat = np.where(fan, frames, 50).astype(np.uint8)
    noisy = np.where(fan, frames, 47 + rng.integers(-3, 4, size=frames.shape)).astype(np.uint8)
    for name, arr in (("flat grey 50", flat), ("noisy grey 47", noisy)):
        found = acouslic.data_fan(arr)
        assert (found != fan).mean() < 0.002, name
    # a dim export whose video black level is 25 beside tissue up to ~90
    dim = np.where(fan, (frames.astype(np.float32) * 0.45).astype(np.uint8), 25).astype(np.uint8)
    assert (acouslic.data_fan(dim) != fan).mean() < 0.002


def test_a_fan_on_a_vignetted_background_is_no_whole_frame():
    """A fan on a background that shades from 45 in the middle to 18 in the corners is neither one
    grey level nor a dark tenth: the whole frame was the fan, and an abdomen cut by the fan's depth
    arc was measured plain, 3-4.5 % short. The smooth surround is told from speckle by its texture.
    Tissue filling the frame with a smooth dark shadow along its foot stays the whole frame."""
    fan = acouslic.fov_mask((H, W))
    rng = np.random.default_rng(12)
    frames = (rng.integers(60, 200, size=(24, H, W)) * fan).astype(np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    r = np.hypot((yy - H / 2) / (H / 2), (xx - W / 2) / (W / 2)) / np.sqrt(2)
    vignette = np.rint(45 - 27 * r).astype(np.uint8)
    found = acouslic.data_fan(np.where(fan, frames, vignette).astype(np.uint8))
    assert (found != fan).mean() < 0.005
    # speckle filling the frame, its lower fifth a smooth dark shadow reaching three sides' ends
    image = rng.integers(60, 200, size=(24, H, W)).astype(np.uint8)
    image[:, int(0.8 * H):] = vignette[int(0.8 * H):]
    assert acouslic.data_fan(image).all()


def test_a_dim_fan_split_by_fluid_darker_than_its_grey_surround_stays_whole():
    """A dim sweep on a flat grey surround of 50: a band of fluid across the fan, darker than the
    surround, split the image above the surround in two, and the fan's lower part was left out of
    the field of view (IoU 0.70). What differs from the surround's level is image."""
    fan = acouslic.fov_mask((H, W))
    rng = np.random.default_rng(13)
    frames = rng.integers(40, 120, size=(24, H, W)).astype(np.uint8)
    top = np.flatnonzero(fan.any(axis=1))
    band = slice(int(top[0] + 0.45 * len(top)), int(top[0] + 0.55 * len(top)))
    frames[:, band] = rng.integers(0, 25, size=frames[:, band].shape)
    found = acouslic.data_fan(np.where(fan, frames, 50).astype(np.uint8))
    assert (found != fan).mean() < 0.005


def test_a_body_in_smooth_fluid_filling_the_frame_is_no_field_of_view_and_a_round_vignette_is_a_surround():
    """The smooth-surround rule took a body lying in fluid that shades smoothly across a frame with
    no fan (a zoomed export) for the field of view: its abdomen read cut and 3 % short. A fan's
    outline has straight sides inside the image, a body's none (where the image's edge cuts it,
    that straight stretch runs along the border). And a background shading round the frame (circular, 45 in
    the middle to 18 in the corners) had its brighter middle joined to the fan (IoU 0.39-0.82)."""
    rng = np.random.default_rng(14)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w / 2, yy - h / 2) / np.hypot(w / 2, h / 2)
    for cy, ax, ay in ((h / 2, 90, 70), (250, 130, 90)):  # in the middle; cut by the image's foot
        frames = []
        for i in range(10):
            body = ((xx - w / 2 - i) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
            fluid = 30 + 40 * (1 - r) + rng.normal(0, 1.5, (h, w))
            tissue = 90 + cv2.GaussianBlur(rng.normal(0, 30, (h, w)).astype(np.float32), (0, 0), 1.0)
            frames.append(np.clip(np.where(body, tissue, fluid), 1, 255).astype(np.uint8))
        assert acouslic.data_fan(np.stack(frames)).all(), cy
    fan = acouslic.fov_mask((H, W))
    yy, xx = np.mgrid[0:H, 0:W]
    ring = np.rint(45 - 27 * np.hypot(xx - W / 2, yy - H / 2) / np.hypot(W / 2, H / 2)).astype(np.uint8)
    speckle = (rng.integers(60, 200, size=(24, H, W)) * fan).astype(np.uint8)
    assert (acouslic.data_fan(np.where(fan, speckle, ring).astype(np.uint8)) != fan).mean() < 0.005
