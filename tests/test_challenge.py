"""Challenge metrics equal to the organisers' evaluator, each quirk on a hand-made case.

The evaluator (ACOUSLIC-AI evaluation code, final version July 2024) is reproduced here on
purpose, quirks included; the names of the tests say which quirk.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from fetaliqa_core import acouslic
from fetaliqa_core import analysis as an

H, W = 120, 160
R = 30  # disc radius, px


def disc(center=(80, 60), r=R, shape=(H, W), label=1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.circle(m, center, r, label, -1)
    return m


def case(n=60, sweep=30):
    """Two sweeps of 30 frames; frame 10 optimal, frame 40 suboptimal; AC 100 mm in sweep 1."""
    gt = np.zeros((n, H, W), np.uint8)
    gt[10] = disc()
    gt[40] = disc(label=2)
    return gt, [(0, sweep), (sweep, n)], [100.0, None]


def test_annotated_frame_full_marks_and_nae_from_evaluator_ac():
    gt, ranges, ac = case()
    truth = 2 * math.pi * R * 0.28
    m = an.case_metrics(gt, 10, gt[10] > 0, [truth], ranges, spacing_mm=0.28, fov=None)
    assert (m.wfss, m.dsc_soft, m.dsc_reference_frame, m.dsc_distance) == (1.0, 1.0, 10, 0)
    assert m.ac_pred_mm == pytest.approx(truth, rel=0.03)
    assert m.nae_ac == pytest.approx(abs(truth - m.ac_pred_mm) / max(truth, m.ac_pred_mm))
    assert m.score == pytest.approx(0.5 * (1 - m.nae_ac) + 0.25 + 0.25)


def test_quirk_annotation_gap_previous_frame_first_not_the_nearest():
    gt, ranges, ac = case()
    gt[22] = disc(center=(60, 60))  # next annotated frame, 2 after frame 20
    # frame 20: previous annotated frame 10 (d=10) wins over the nearer next one 22 (d=2)
    m = an.case_metrics(gt, 20, disc(), ac, ranges, fov=None)
    assert m.dsc_reference_frame == 10 and m.dsc_distance == 10
    assert m.dsc_soft == pytest.approx(1 - 10 / 15)
    # no previous frame within 15 in the sweep: the next one counts
    assert an.reference_frame((gt != 0).any(axis=(1, 2)), 5, (0, 30)) == 10


def test_quirk_previous_frame_at_distance_15_scores_zero_although_next_is_adjacent():
    gt, ranges, ac = case()
    gt[26] = disc()
    m = an.case_metrics(gt, 25, disc(), ac, ranges, fov=None)
    assert m.dsc_reference_frame == 10 and m.dsc_distance == 15 and m.dsc_soft == 0.0


def test_quirk_reference_frames_stay_in_the_chosen_frames_sweep():
    gt, ranges, ac = case()
    # frame 31 is 9 frames from 40 (same sweep) and 21 from 10: 40 it is, suboptimal label
    m = an.case_metrics(gt, 31, disc(), ac, ranges, fov=None)
    assert m.dsc_reference_frame == 40 and m.dsc_soft == pytest.approx(1 - 9 / 15)
    # frame 29 is last of sweep 1: frame 40 is 11 away but in sweep 2; frame 10 is 19 back: none
    assert an.case_metrics(gt, 29, disc(), ac, ranges, fov=None).dsc_soft == 0.0


def test_quirk_annotation_outside_the_fan_and_reference_not_fov_masked():
    n = 30
    shape = acouslic.FRAME_SHAPE
    fov = acouslic.fov_mask()
    gt = np.zeros((n,) + shape, np.uint8)
    outside = np.zeros(shape, np.uint8)
    outside[0:20, 0:60] = 1  # top-left corner: outside the fan
    assert not (outside.astype(bool) & fov).any()
    gt[12] = outside  # annotated, but only outside the fan
    ref = disc(center=(372, 300), r=80, shape=shape)
    gt[5] = ref | outside  # the reference frame also has pixels outside the fan
    pred = disc(center=(372, 300), r=80, shape=shape)
    m = an.case_metrics(gt, 12, pred, [None], [(0, n)])
    # frame 12's annotation is empty after FOV masking -> previous annotated frame 5 (d=7)
    assert m.dsc_reference_frame == 5 and m.dsc_distance == 7
    # frame 5's annotation is NOT FOV-masked: its pixels outside the fan count against the Dice
    a, p = ref.sum() + outside.sum(), pred.sum()
    expected = 2 * int(pred.sum()) / (a + p) * (1 - 7 / 15)
    assert m.dsc_soft == pytest.approx(expected)
    assert m.dsc_soft < 1 - 7 / 15
    # the chosen frame counts as annotated for WFSS (raw labels)
    assert m.wfss == 1.0


@pytest.mark.parametrize("center, expect_none", [((550, 280), True), ((640, 430), False)])
def test_quirk_fan_cut_mask_evaluator_finds_no_or_a_tiny_ac_project_extrapolates(center, expect_none):
    shape = acouslic.FRAME_SHAPE
    # a 141 mm abdomen crossing the fan's side edge (and, lower down, its curved bottom)
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, center, (90, 70), 30, 0, 360, 1, -1)
    truth = an.ramanujan_circumference(90, 70) * 0.28
    project = an.measure_ac(mask, 0.28)
    assert project is not None and project.truncated
    assert project.ac_mm == pytest.approx(truth, rel=0.05)
    evaluator = an.measure_ac_evaluator(mask, 0.28)
    if expect_none:
        assert evaluator is None  # the erased band leaves arcs whose largest "area" has <= 5 points
    else:
        assert evaluator < 0.2 * truth  # a fragment of the outline wins the largest-area contest
    gt = np.zeros((1,) + shape, np.uint8)
    gt[0] = mask
    m = an.case_metrics(gt, 0, mask, [truth], [(0, 1)])
    assert m.ac_pred_mm == evaluator
    assert m.nae_ac > 0.8  # NAE from the evaluator's AC ...
    assert m.ac_project_mm == pytest.approx(project.ac_mm)
    assert m.nae_ac_project < 0.05  # ... the project's is reported beside it


def test_evaluator_ac_equals_project_ac_inside_the_fan():
    shape = acouslic.FRAME_SHAPE
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (372, 300), (120, 90), 25, 0, 360, 1, -1)
    truth = an.ramanujan_circumference(120, 90) * 0.28
    assert an.measure_ac_evaluator(mask) == pytest.approx(truth, rel=0.02)
    assert an.measure_ac(mask).ac_mm == pytest.approx(truth, rel=0.02)


def test_quirk_empty_mask_on_an_unannotated_frame_is_infinite_dice():
    gt, ranges, ac = case()
    m = an.case_metrics(gt, 20, np.zeros((H, W), np.uint8), ac, ranges, fov=None)
    assert math.isinf(m.dsc_soft) and not m.dsc_defined and math.isinf(m.score)
    assert m.nae_ac == 1.0 and m.ac_pred_mm is None
    # on an annotated frame an empty mask is simply Dice 0
    m = an.case_metrics(gt, 10, None, ac, ranges, fov=None)
    assert m.dsc_soft == 0.0 and m.dsc_defined


def test_quirk_minus_one_compares_the_last_frame_with_an_empty_mask():
    gt, ranges, ac = case()
    m = an.case_metrics(gt, -1, None, ac, ranges, fov=None)
    assert (m.wfss, m.nae_ac) == (0.0, 1.0) and m.ac_gt_mm is None
    assert math.isinf(m.dsc_soft)  # the last frame (59) is unannotated: 0 / 0
    gt[-1] = disc(label=2)
    m = an.case_metrics(gt, -1, None, ac, ranges, fov=None)
    assert m.dsc_soft == 0.0 and m.score == 0.0
    empty = np.zeros_like(gt)
    credited = an.case_metrics(empty, -1, None, ac, ranges, fov=None, credit_abstention=True)
    assert (credited.wfss, credited.dsc_soft, credited.nae_ac, credited.score) == (1.0, 1.0, 1.0, 0.5)
    with pytest.raises(ValueError):
        an.case_metrics(gt, 60, gt[0], ac, ranges, fov=None)


def test_sitk_dice_agrees_with_simpleitk():
    sitk = pytest.importorskip("SimpleITK")
    f = sitk.LabelOverlapMeasuresImageFilter()
    a, b = disc(), disc(center=(90, 60))
    for x, y in ((a, b), (a, np.zeros_like(a)), (np.zeros_like(a), np.zeros_like(a))):
        f.Execute(sitk.GetImageFromArray(x), sitk.GetImageFromArray(y))
        ours = an.challenge._sitk_dice(x > 0, y > 0)
        theirs = f.GetDiceCoefficient()
        assert (math.isinf(ours) and math.isinf(theirs)) or ours == pytest.approx(theirs, abs=1e-12)


def test_aggregate_counts_undefined_dice_as_zero_and_says_so():
    gt, ranges, ac = case()
    cases = [
        an.case_metrics(gt, 10, gt[10], [100.0, None], ranges, fov=None),
        an.case_metrics(gt, -1, None, ac, ranges, fov=None),  # undefined DSC
    ]
    agg = an.aggregate_case_metrics(cases)
    assert agg["dsc_soft"]["undefined"] == 1 and math.isinf(agg["dsc_soft"]["evaluator_mean"])
    assert agg["dsc_soft"]["mean"] == pytest.approx(0.5)
    assert agg["score"]["mean"] == pytest.approx(cases[0].score / 2)
    combo = 0.5 * (1 - agg["nae_ac"]["mean"]) + 0.25 * agg["wfss"]["mean"] + 0.25 * agg["dsc_soft"]["mean"]
    assert agg["score"]["mean"] == pytest.approx(combo)
    assert agg["wfss"]["undefined"] == 0 and agg["wfss"]["evaluator_mean"] == agg["wfss"]["mean"]
