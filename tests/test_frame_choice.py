"""Frame choice: mask plausibility, runs, sweep-first choice, abstention, the baseline's rule.

Hand-drawn cases in fan shapes other than ACOUSLIC's (a narrow sector, a linear probe's
rectangle), with distractors of other shapes, so nothing depends on the project's synthesiser.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fetaliqa_core.analysis import frame_choice as fc

S = 224
PX_MM = 0.28 * 744 / 224  # an ACOUSLIC frame's pixel at model resolution


def sector(apex=(112, 0), radius=220, half_angle=30) -> np.ndarray:
    """A narrow sector fan (apex at the top), unlike ACOUSLIC's wide one."""
    m = np.zeros((S, S), np.uint8)
    cv2.ellipse(m, apex, (radius, radius), 90, -half_angle, half_angle, 1, -1)
    return m > 0


def linear() -> np.ndarray:
    """A linear probe's rectangular field of view."""
    m = np.zeros((S, S), bool)
    m[10:214, 40:184] = True
    return m


def ellipse(center, axes, angle=0.0, label=1) -> np.ndarray:
    m = np.zeros((S, S), np.uint8)
    cv2.ellipse(m, center, axes, angle, 0, 360, label, -1)
    return m


@pytest.mark.parametrize("center, axes", [((6, 8), (40, 34)), ((210, 214), (40, 34)), ((-8, 112), (45, 30)),
                                          ((14, 16), (30, 26))])
def test_an_abdomen_past_the_image_edge_is_not_measured_whole(center, axes):
    """Drawn on the image, the fitted ellipse was clipped at its edge and the arc in a corner
    passed as a whole abdomen (AC extrapolated from a quarter: +24 %, GA 6 weeks off); one with
    40 % of its area inside read 16 % short. The share of the ellipse past the edge counts as
    outside the field of view, by area and along the outline."""
    full = np.ones((S, S), bool)
    for fov in (None, full):
        s = fc.mask_shape(ellipse(center, axes), fov, PX_MM)
        assert not s.plausible and s.reason.startswith("cut off:"), (fov is None, s)
    inside = fc.mask_shape(ellipse((S // 2, S // 2), axes), None, PX_MM)
    assert inside.plausible and inside.in_fan == 1.0


@pytest.mark.parametrize("fov", [None, sector(), linear()], ids=["none", "sector", "linear"])
def test_round_abdomen_is_plausible_in_any_fan(fov):
    s = fc.mask_shape(ellipse((112, 120), (30, 26), 20), fov, PX_MM)
    assert s.plausible and s.reason == "" and s.iou > 0.9 and s.quality == s.iou
    # its circumference in mm, from the fit
    assert s.circumference_mm == pytest.approx(math.pi * (3 * 56 - math.sqrt((3 * 30 + 26) * (30 + 3 * 26))) * PX_MM,
                                               rel=0.05)


def test_fan_cut_abdomen_stays_plausible():
    fov = linear()
    mask = ellipse((60, 120), (30, 26))  # its left third lies left of the linear field (x < 40)
    s = fc.mask_shape(mask, fov, PX_MM)
    assert s.plausible and 0.6 <= s.in_fan < 1.0


def test_distractors_are_not_plausible():
    fov = sector()
    elongated = ellipse((112, 120), (60, 12), 10)  # a lengthwise body / a limb
    assert fc.mask_shape(elongated, fov, PX_MM).reason == "elongated"
    ring = ellipse((112, 120), (35, 30)) - ellipse((112, 120), (28, 23))  # a skull ring
    ring[118:123, :] = 0  # cut by the midline: two arcs
    assert not fc.mask_shape(ring, fov, PX_MM).plausible
    frag = np.zeros((S, S), np.uint8)
    for k in range(4):
        frag |= ellipse((80 + 20 * k, 60 + 30 * k), (8, 8))
    assert fc.mask_shape(frag, None, PX_MM).reason == "fragmented"
    blob = ellipse((112, 120), (30, 26))
    blob[100:140, 112:150] = 0  # a bite out of it: far from an ellipse
    assert fc.mask_shape(blob, None, PX_MM).reason == "not ellipse-like"
    outside = ellipse((20, 200), (30, 26))  # mostly outside the sector
    assert fc.mask_shape(outside, fov, PX_MM).reason.startswith(("cut off:", "not ellipse-like"))
    assert fc.mask_shape(np.zeros((S, S), np.uint8), fov, PX_MM) == fc.NO_MASK


def test_size_in_mm_when_spacing_known_else_share_of_fan():
    small = ellipse((112, 120), (6, 5))  # ~12 mm round: far below any abdomen
    assert fc.mask_shape(small, None, PX_MM).reason == "implausible size"
    big = ellipse((112, 112), (100, 90))  # ~600 mm
    assert fc.mask_shape(big, None, PX_MM).reason == "implausible size"
    # spacing unknown: judged by its share of the field of view instead
    assert fc.mask_shape(ellipse((112, 120), (30, 26)), None, None).plausible
    assert fc.mask_shape(ellipse((112, 120), (3, 3)), None, None).reason == "implausible size"


def _sweep_case(n=40, per=20):
    """Two sweeps. Sweep 1: a 3-frame run of a round 'head' with high p_cls. Sweep 2: a 9-frame
    abdomen run (frames 25-33) whose ellipse grows to frame 29 then shrinks."""
    fov = sector()
    shapes = [fc.NO_MASK] * n
    p_cls = np.full(n, 0.05)
    for f in (5, 6, 7):
        shapes[f] = fc.mask_shape(ellipse((112, 120), (28, 25)), fov, PX_MM)
        p_cls[f] = 0.97
    for f in range(25, 34):
        r = 30 - abs(f - 29) * 2
        shapes[f] = fc.mask_shape(ellipse((112, 120), (r, r - 4)), fov, PX_MM)
        p_cls[f] = 0.8
    return [(0, per), (per, n)], p_cls, shapes


def test_sweep_first_strongest_run_then_largest_best_fitting_ellipse():
    ranges, p_cls, shapes = _sweep_case()
    c = fc.choose(ranges, p_cls, 0.5, shapes)
    assert c.basis == "all models"
    assert c.frame == 29  # the long run wins over the short, more confident one; its largest ellipse
    assert c.per_sweep == [6, 29] or c.per_sweep[1] == 29
    assert c.runs[1][0][:2] == (25, 34)
    # the optimal share of a 3-class mask comes first inside the run
    p_opt = np.zeros(40)
    p_opt[27] = 0.9
    assert fc.choose(ranges, p_cls, 0.5, shapes, p_opt).frame == 27


def test_gaps_of_up_to_two_frames_closed_and_runs_stay_inside_sweeps():
    pos = np.zeros(40, bool)
    pos[[17, 18, 19, 20, 21]] = True  # crosses the sweep boundary at 20
    pos[[26, 28, 29, 32]] = True  # one-frame gap, two-frame gap
    pos[[36, 37]] = True  # three frames after 32: another run
    assert fc._runs(pos, 0, 20) == [(17, 20)]
    assert fc._runs(pos, 20, 40) == [(20, 22), (26, 33), (36, 38)]


def test_an_abdomen_run_split_by_two_borderline_frames_is_one_run():
    """An abdomen's run (two pieces of 6 frames split by two masks just under the fit limit) lost the
    sweep to a thorax's run of 9 frames, longer than either piece: the frame chosen was the thorax's."""
    n, fov = 40, sector()
    p_cls = np.full(n, 0.05)
    shapes = [fc.NO_MASK] * n
    for f in range(2, 11):  # the thorax: larger (a thorax's outline can pass every shape rule)
        shapes[f], p_cls[f] = fc.mask_shape(ellipse((112, 120), (32, 29)), fov, PX_MM), 0.8
    for f in [*range(20, 26), *range(28, 34)]:
        shapes[f], p_cls[f] = fc.mask_shape(ellipse((112, 120), (28, 25)), fov, PX_MM), 0.8
    assert all(shapes[f].plausible for f in (2, 20))
    p_cls[[26, 27]] = 0.75  # the classifier calls them; their masks just fail the fit (none here)
    c = fc.choose([(0, n)], p_cls, 0.5, shapes)
    assert 20 <= c.frame < 34 and c.frame not in (26, 27)


def test_models_disagreeing_everywhere_fall_back_to_the_plausible_masks():
    ranges, p_cls, shapes = _sweep_case()
    p = np.full(40, 0.1)  # the classifier calls nothing
    c = fc.choose(ranges, p, 0.5, shapes)
    assert c.basis == "segmenter" and c.frame == 29


def test_a_mask_the_segmenter_does_not_call_is_no_evidence():
    """A plausible outline under the paper's 1 % rule is a mask the segmenter itself does not
    call: the answer said "chosen on the segmenter's masks alone" on such a frame, where
    neither model called it. Only masks the segmenter calls count."""
    ranges, p_cls, shapes = _sweep_case()
    called = np.zeros(40, bool)
    called[25:34] = True
    assert fc.choose(ranges, p_cls, 0.5, shapes, seg_call=called).frame == 29
    called[25:34] = False  # no mask is called: the classifier's calls alone remain
    c = fc.choose(ranges, p_cls, 0.5, shapes, seg_call=called)
    assert c.basis == "classifier"
    c = fc.choose(ranges, np.full(40, 0.1), 0.5, shapes, seg_call=called)
    assert c.basis == "none" and c.frame == -1  # the classifier calls nothing either
    assert fc.choose(ranges, np.full(40, 0.1), 0.5, shapes).basis == "segmenter"  # without the rule


def test_abstains_when_nothing_is_plausible():
    ranges = [(0, 20), (20, 40)]
    elongated = fc.mask_shape(ellipse((112, 120), (60, 12)), None, PX_MM)
    shapes = [elongated] * 40
    c = fc.choose(ranges, np.full(40, 0.2), 0.5, shapes)
    assert c.frame == -1 and c.basis == "none" and c.per_sweep == [-1, -1]
    # a classifier alone still abstains below its threshold
    assert fc.choose(ranges, np.full(40, 0.2), 0.5, None).frame == -1


def test_classifier_alone_uses_runs_of_its_calls():
    ranges = [(0, 20), (20, 40)]
    p = np.full(40, 0.1)
    p[3] = 0.99  # an isolated spike
    p[24:31] = [0.6, 0.7, 0.8, 0.9, 0.8, 0.7, 0.6]
    c = fc.choose(ranges, p, 0.5, None)
    assert c.frame == 27 and c.basis == "classifier"


def test_baseline_rule():
    opt = np.array([0, 5, 0, 9, 0], float)
    sub = np.array([50, 0, 70, 0, 0], float)
    assert fc.baseline_choice(opt, sub) == 3  # largest label-1 area, however small
    assert fc.baseline_choice(opt * 0, sub) == 2  # else the largest label-2 area
    assert fc.baseline_choice(opt * 0, sub * 0) == -1


def test_challenge_answer_never_a_frame_without_a_mask():
    from types import SimpleNamespace

    from fetaliqa_core.export import challenge_answer

    h, w = 96, 128
    frames = np.full((30, h, w), 50, np.uint8)  # the whole frame is the field of view
    sweep = SimpleNamespace(height=h, width=w, n_frames=30, frames=frames,
                            sweep_ranges=[(0, 15), (15, 30)], sweep_index=lambda f: 0 if f < 15 else 1)
    masks = {9: ellipse((112, 112), (30, 25)).astype(np.uint8), 20: ellipse((112, 112), (30, 25)).astype(np.uint8)}
    results = SimpleNamespace(has_seg=True, mask=lambda f: masks.get(int(f)))

    def answer(chosen):
        return challenge_answer(sweep, results, SimpleNamespace(chosen_frame=chosen))

    f, m = answer(9)
    assert f == 9 and m.any()
    f, m = answer(12)  # no mask: the nearest frame of the same sweep with one
    assert f == 9 and m.any()
    f, m = answer(16)  # sweep 2: frame 20, not frame 9 of sweep 1 (which is nearer)
    assert f == 20 and m.any()
    masks.clear()
    assert answer(12) == (-1, None)  # no mask anywhere near: -1, never a frame with an empty mask
    assert answer(-1) == (-1, None)
    assert challenge_answer(sweep, SimpleNamespace(has_seg=False), SimpleNamespace(chosen_frame=5)) == (-1, None)


def _paint(frames: np.ndarray, i: int, mask: np.ndarray) -> None:
    """Frame ``i`` shows the body ``mask`` outlines (tissue against the fluid around it): an
    outline in a featureless frame follows no edge and is no abdomen's."""
    frames[i][(mask != 0) & linear()] = 120


def _scored_case(mask_at_10: np.ndarray):
    """One 20-frame sweep of 224 x 224 frames (0.5 mm a pixel, a linear probe's field) scored by
    a classifier that calls only frame 10 and a segmenter whose mask there is ``mask_at_10``
    (nothing elsewhere)."""
    from fetaliqa_core.engine import SweepResults
    from fetaliqa_core.io import Sweep

    frames = np.zeros((20, S, S), np.uint8)
    frames[:, linear()] = 40  # fluid
    frames[10][(mask_at_10 != 0) & linear()] = 120  # the body the mask outlines
    sweep = Sweep(frames=frames, spacing_mm=(0.5, 0.5), sweep_ranges=[(0, 20)], sweep_kinds=["transverse"])
    res = SweepResults(20, True, True)
    res.p_cls[:] = 0.1
    res.p_cls[10] = 0.9
    res.p_opt[:] = 0.0
    res.seg_area_px[:] = 0
    res.done[:] = True
    for i in range(20):
        res.masks[i] = np.zeros((S, S), np.uint8)
    res.masks[10] = mask_at_10.astype(np.uint8)
    res.seg_area_px[10] = int(np.count_nonzero(mask_at_10))
    res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * S * S)
    return sweep, res


def test_a_case_without_a_chosen_frame_says_why_in_its_answer():
    """No frame called by the classifier: `score --json`'s chosen_ac said nothing ("note": ""),
    the reason stood only in each sweep's line. The case's answer gives its sweeps' reasons, each
    once, with the sweeps they hold for."""
    from dataclasses import replace as dc_replace

    from fetaliqa_core.analysis.assessment import Thresholds, assess

    sweep, res = _scored_case(np.zeros((S, S), np.uint8))
    res.p_cls[10] = 0.1
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    why = a.summary.sweeps[0].ac_note
    assert a.chosen_frame == -1 and "threshold" in why and a.summary.chosen_ac["note"] == why
    # three sweeps: two alike, one not scored at all
    res.done[14:] = False
    res.p_cls[14:] = res.p_seg[14:] = np.nan
    three = dc_replace(sweep, sweep_ranges=[(0, 7), (7, 14), (14, 20)], sweep_kinds=["transverse"] * 3)
    note = assess(three, res, Thresholds(value=0.5, model=0.5)).summary.chosen_ac["note"]
    assert note == f"sweeps 1, 2: {why}; sweep 3: no frame scored", note


def test_an_ac_on_a_mask_that_outlines_no_abdomen_is_doubtful():
    """A frame chosen on the classifier's word alone, where the segmenter's mask is a limb-like
    bar: the ellipse fitted to that bar measures nothing, so its AC is shown doubtful, without GA,
    with the reason, in the summary and per sweep; the same frame with a round mask reads as a
    number to act on."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess

    thresholds = Thresholds(value=0.5, model=0.5)
    bar = ellipse((112, 112), (60, 9), 15)  # elongated: a limb or a lengthwise body
    sweep, res = _scored_case(bar)
    a = assess(sweep, res, thresholds)
    assert a.chosen_frame == 10 and a.choice.basis == "classifier"
    reading = a.summary.chosen_ac
    assert reading["status"] == "doubtful" and reading["ga_weeks"] is None and reading["ac_mm"] > 0
    assert "elongated" in reading["note"] and a.mask_problem(10) == "elongated"
    assert a.summary.sweeps[0].ac_status == "doubtful" and a.summary.sweeps[0].ga == ""

    round_mask = ellipse((112, 112), (40, 34))
    sweep, res = _scored_case(round_mask)
    a = assess(sweep, res, thresholds)
    assert a.chosen_frame == 10 and a.mask_problem(10) is None
    assert a.summary.chosen_ac["status"] == "ok" and a.summary.chosen_ac["ga_weeks"] is not None


def test_a_chosen_frame_without_a_measurable_mask_says_why_there_is_no_ac():
    """A frame chosen on the classifier's word where the segmenter drew 3 pixels (or nothing)
    gave ac_status 'none' with an empty note, and `score` said nothing of the AC at all."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess

    thresholds = Thresholds(value=0.5, model=0.5)
    speck = np.zeros((S, S), np.uint8)
    speck[100, 100:103] = 1
    for mask, words in ((speck, "(3 pixel(s) at the model's resolution) is too small"),
                        (np.zeros((S, S), np.uint8), "draws no mask at this frame"),
                        (np.ones((S, S), np.uint8), "covers (nearly) the whole image")):
        sweep, res = _scored_case(mask)
        a = assess(sweep, res, thresholds)
        assert a.chosen_frame == 10
        assert a.summary.chosen_ac["status"] == "none" and words in a.summary.chosen_ac["note"]
        assert a.summary.sweeps[0].ac_status == "none" and words in a.summary.sweeps[0].ac_note


def test_an_ac_on_a_frame_the_classifier_does_not_call_is_doubtful():
    """The classifier scores every frame below its threshold, the segmenter outlines a round shape
    on frame 10: the choice falls back to the segmenter alone and says so, and the AC there is
    doubtful (the models disagree), in the summary, per sweep and in the assessment's verdict."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess

    thresholds = Thresholds(value=0.5, model=0.5)
    sweep, res = _scored_case(ellipse((112, 112), (40, 34)))
    res.p_cls[10] = 0.3
    a = assess(sweep, res, thresholds)
    assert a.chosen_frame == 10 and a.choice.basis == "segmenter" and a.mask_problem(10) is None
    reading = a.summary.chosen_ac
    assert reading["status"] == "doubtful" and reading["ga_weeks"] is None and reading["ac_mm"] > 0
    assert "classifier does not call" in reading["note"] and "0.30" in reading["note"]
    assert a.disagreement(10) and a.summary.sweeps[0].ac_status == "doubtful"
    assert "segmenter's masks alone" in a.summary.choice_note
    # the user lowers the threshold below the frame's score: both models call it, a plain number
    a = assess(sweep, res, thresholds.with_value(0.25))
    assert a.choice.basis == "all models" and a.disagreement(10) is None and not a.summary.choice_note
    assert a.summary.chosen_ac["status"] == "ok"


def test_an_ac_from_the_demonstration_models_is_never_a_number_to_act_on():
    """The same plausible round mask both models call: a plain AC and GA with the user's models,
    doubtful (no GA) when the numbers come from the demonstration model, per sweep too."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.analysis.units import DEMO_MODEL_DOUBT

    sweep, res = _scored_case(ellipse((112, 112), (40, 34)))
    thresholds = Thresholds(value=0.5, model=0.5)
    own = assess(sweep, res, thresholds, provenance={"demo": False})
    assert own.summary.chosen_ac["status"] == "ok" and own.summary.chosen_ac["ga_weeks"] is not None
    demo = assess(sweep, res, thresholds, provenance={"demo": True, "notice": "demo"})
    reading = demo.summary.chosen_ac
    assert demo.chosen_frame == own.chosen_frame and reading["ac_mm"] == own.summary.chosen_ac["ac_mm"]
    assert reading["status"] == "doubtful" and reading["ga_weeks"] is None and reading["note"] == DEMO_MODEL_DOUBT
    assert [s.ac_status for s in demo.summary.sweeps if s.best_frame >= 0] == ["doubtful"]


def test_an_ac_from_a_student_scoring_alone_is_doubtful_and_says_to_rescore_with_its_teacher():
    """A user's own distilled student (no demo teacher) scored alone gave "AC 97.3 mm, GA 15w 6d",
    status ok, though its chosen frame agrees with its teacher's in 3 of 10 cases: the student is
    meant to pick the frames its teacher re-scores, not to give the answer."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.analysis.units import STUDENT_ALONE_DOUBT, short_doubt
    from fetaliqa_core.export import challenge_mask_metadata

    sweep, res = _scored_case(ellipse((112, 112), (40, 34)))
    thresholds = Thresholds(value=0.5, model=0.5)
    own = assess(sweep, res, thresholds, provenance={"demo": False})
    student = assess(sweep, res, thresholds, provenance={"demo": False, "student_alone": True})
    reading = student.summary.chosen_ac
    assert own.summary.chosen_ac["status"] == "ok" and not own.summary.student_alone
    assert reading["status"] == "doubtful" and reading["ga_weeks"] is None and reading["note"] == STUDENT_ALONE_DOUBT
    assert "--cascade" in reading["note"] and student.summary.student_alone
    assert [s.ac_status for s in student.summary.sweeps if s.best_frame >= 0] == ["doubtful"]
    assert short_doubt(reading["note"]) == "student alone"
    # the mask written for the challenge keeps the doubt (`fetaliqa ac` reads it back)
    from fetaliqa_core.io._common import META_AC_NOTE, META_AC_STATUS

    meta = challenge_mask_metadata(student, student.chosen_frame)
    assert meta[META_AC_STATUS] == "doubtful" and STUDENT_ALONE_DOUBT in meta[META_AC_NOTE]
    # beside another doubt (the mask's, the classifier's) it is still said what to do next: it was
    # dropped, and "--cascade" appeared in no output of four cases whose masks were doubtful
    from fetaliqa_core.analysis.units import read_ac

    for reading in (read_ac(250.0, None, "flattened along one side", model_doubt=STUDENT_ALONE_DOUBT),
                    read_ac(250.0, None, None, "the classifier scores it 0.20", model_doubt=STUDENT_ALONE_DOUBT)):
        assert reading.status == "doubtful" and reading.note.endswith(f"; also {STUDENT_ALONE_DOUBT}")
        assert short_doubt(reading.note) != "student alone"  # (the first reason leads)


def test_an_ac_from_frames_the_models_saw_stretched_is_doubtful():
    """Pixels that are not square reach the models as stored: a 0.2 x 0.3 mm copy of a sweep read
    its AC 9 % short (the models were trained on square pixels). Such an AC is not one to act on,
    and says why; on square pixels it is."""
    import dataclasses

    from fetaliqa_core.analysis.assessment import Thresholds, assess

    sweep, res = _scored_case(ellipse((112, 112), (40, 34)))
    thresholds = Thresholds(value=0.5, model=0.5)
    assert assess(sweep, res, thresholds).summary.chosen_ac["status"] == "ok"
    stretched = dataclasses.replace(sweep, spacing_mm=(0.5, 0.35))
    reading = assess(stretched, res, thresholds).summary.chosen_ac
    assert reading["status"] == "doubtful" and "pixels are not square (0.35 mm wide x 0.5 mm high)" in reading["note"]
    near = dataclasses.replace(sweep, spacing_mm=(0.5, 0.49))  # 2 %: square to the models
    assert assess(near, res, thresholds).summary.chosen_ac["status"] == "ok"
    # beside another doubt (the mask's, the classifier's) it is said too: it was dropped from the
    # window and summary.json, and only the mask file's record said to resample the sweep
    from fetaliqa_core.analysis.units import model_doubt, read_ac

    doubt = model_doubt(False, (0.5, 0.35), student_alone=True)
    for r in (read_ac(250.0, None, "flattened along one side", model_doubt=doubt),
              read_ac(250.0, None, None, "the classifier scores it 0.20", model_doubt=doubt)):
        assert r.status == "doubtful" and r.note.endswith("resample the sweep to square pixels")
        assert "; also the pixels are not square (0.35 mm wide x 0.5 mm high)" in r.note and "re-score" in r.note


def test_a_model_on_a_random_base_says_so(tmp_path):
    """Bundles trained on a randomly initialised base (a test run) were shown like any trained
    model, without a word: they carry a notice now (their ACs read as the user's own models')."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.models.base import random_base
    from fetaliqa_core.models.bundle import load_bundle, manifest_for, save_bundle
    from fetaliqa_core.models.choice import RANDOM_BASE_NOTICE, provenance
    from fetaliqa_core.models.classifier import FetalCLIPClassifier

    visual, info = random_base("tiny")
    model = FetalCLIPClassifier(visual)
    save_bundle(model, tmp_path / "cls", manifest_for(model, info))
    loaded = SimpleNamespace(cls=load_bundle(tmp_path / "cls", device="cpu"), seg=None, student=None)
    prov = provenance(loaded)
    assert prov["random_base"] and not prov["demo"] and prov["notice"] == RANDOM_BASE_NOTICE
    sweep, res = _scored_case(ellipse((112, 112), (40, 34)))
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5), provenance=prov)
    assert a.summary.random_base and a.summary.notice == RANDOM_BASE_NOTICE


def test_the_chosen_frame_is_one_both_models_call_not_a_closed_gap():
    """A run of frames 8-12 that both models call, with a one-frame dip of the classifier at 10
    (the run closes that gap): the frame with the largest mask is the gap frame, but the frame
    chosen is one both models call, and its AC is a plain number."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess

    sweep, res = _scored_case(ellipse((112, 112), (44, 38)))
    for i, axes in zip((8, 9, 11, 12), ((36, 31), (38, 33), (40, 34), (37, 32))):
        res.masks[i] = ellipse((112, 112), axes)
        _paint(sweep.frames, i, res.masks[i])
        res.seg_area_px[i] = int(np.count_nonzero(res.masks[i]))
        res.p_cls[i] = 0.9
    res.p_cls[10] = 0.4
    res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * S * S)
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    assert a.choice.runs[0][0][:2] == (8, 13)  # one run, the gap closed
    assert a.chosen_frame == 11 and a.summary.chosen_ac["status"] == "ok"


def test_the_reading_in_a_few_words_keeps_its_doubt():
    """The label on the image is short (a long reason would run off the picture) but never drops
    the doubt or the missing units; the full text keeps the reason."""
    from fetaliqa_core.analysis.units import read_ac

    ok = read_ac(231.4)
    assert ok.short() == f"AC 231.4 mm · GA {ok.ga_text}" and ok.ga_text
    doubtful = read_ac(231.4, mask_problem="elongated")
    assert doubtful.short() == "AC 231.4 mm (doubtful)" and "elongated" in doubtful.text()
    assert doubtful.short(why=True) == "AC 231.4 mm (doubtful: not an abdomen's outline)"
    assert read_ac(600.0).short() == "AC 600.0 mm (doubtful)"
    assert read_ac(600.0).short(why=True) == "AC 600.0 mm (doubtful: implausible size)"
    assert read_ac(231.4, "the file records no pixel spacing").short() == "AC not shown (pixel spacing)"
    assert read_ac(None).short() == "no AC"
    disagree = read_ac(231.4, disagreement="the classifier does not call this frame")
    assert disagree.short() == "AC 231.4 mm (doubtful)" and disagree.ga_weeks is None
    assert "classifier does not call" in disagree.text()


# ------------------------------------------------------------------ a skull's outline, from the image
def _speckled(shape, level, rng) -> np.ndarray:
    """Grey ``level`` with multiplicative speckle (Rayleigh, as in B-mode images)."""
    return level * rng.rayleigh(1.0 / math.sqrt(math.pi / 2), size=shape)


def _scene(kind: str, center=(112, 120), axes=(34, 29), angle=15.0, gain=1.0, seed=0, fov=None, offset=0.0):
    """A frame of ``kind`` ``"head"`` or ``"abdomen"`` drawn here, independently of the project's
    synthesiser: dark fluid around it; a head is a thick bright bone ring round a dark brain with a
    midline echo; an abdomen is grey liver texture with a thin skin line a little brighter, the
    spine (a bright spot casting a shadow) and a dark stomach bubble. Returns (uint8 frame, the
    shape's mask)."""
    rng = np.random.default_rng(seed)
    img = _speckled((S, S), 12.0, rng)
    outer = ellipse(center, axes, angle) > 0
    if kind == "head":
        inner = ellipse(center, (int(axes[0] * 0.9), int(axes[1] * 0.9)), angle) > 0
        img[outer] = _speckled((int(outer.sum()),), 190.0, rng)
        img[inner] = _speckled((int(inner.sum()),), 45.0, rng)
        mid = np.zeros((S, S), np.uint8)
        dx, dy = math.cos(math.radians(angle)) * axes[0] * 0.8, math.sin(math.radians(angle)) * axes[0] * 0.8
        cv2.line(mid, (int(center[0] - dx), int(center[1] - dy)), (int(center[0] + dx), int(center[1] + dy)), 1, 1)
        img[mid > 0] = 140.0
    elif kind == "limb":
        # a limb's section: muscle texture, a skin line, its bone at the centre with a shadow under it
        img[outer] = _speckled((int(outer.sum()),), 95.0, rng)
        skin = outer & ~(ellipse(center, (axes[0] - 1, axes[1] - 1), angle) > 0)
        img[skin] = _speckled((int(skin.sum()),), 120.0, rng)
        r = max(3, min(axes) // 5)
        bone = ellipse((center[0] + 2, center[1] - 1), (r, r)) > 0
        shadow = np.zeros((S, S), bool)
        shadow[center[1] - 1 + r:, center[0] + 2 - r:center[0] + 3 + r] = True
        img[shadow & outer] *= 0.35
        img[bone] = 235.0
    else:
        img[outer] = _speckled((int(outer.sum()),), 95.0, rng)
        skin = outer & ~(ellipse(center, (axes[0] - 1, axes[1] - 1), angle) > 0)
        img[skin] = _speckled((int(skin.sum()),), 120.0, rng)
        spine = ellipse((center[0] - axes[0] // 2, center[1] + axes[1] // 2), (3, 3)) > 0
        shadow = np.zeros((S, S), bool)
        shadow[center[1] + axes[1] // 2 + 3:, center[0] - axes[0] // 2 - 3:center[0] - axes[0] // 2 + 4] = True
        img[shadow & outer] *= 0.3
        img[spine] = 230.0
        img[ellipse((center[0] + 8, center[1] - 6), (6, 5)) > 0] = 15.0
    img = np.clip(img * gain + offset, 0, 255)
    if fov is not None:
        img[~fov] = 0
    return img.astype(np.uint8), outer.astype(np.uint8)


@pytest.mark.parametrize("fov", [None, sector(), linear()], ids=["none", "sector", "linear"])
@pytest.mark.parametrize("gain", [0.5, 1.0, 1.3])
def test_a_skull_outline_is_not_an_abdomen_at_any_gain_or_fan(fov, gain):
    """The same round mask on a head's frame and on an abdomen's: by its shape alone both are
    plausible; with the frame's grey levels the head's outline is a bright ring (not plausible,
    with the reason) and the abdomen's is not. Several sizes, angles and speckle draws."""
    for seed, (axes, angle) in enumerate([((34, 29), 15.0), ((26, 24), 70.0), ((42, 33), -30.0)]):
        head, mask = _scene("head", axes=axes, angle=angle, gain=gain, seed=seed, fov=fov)
        assert fc.mask_shape(mask, fov, PX_MM).plausible  # the shape alone cannot tell
        h = fc.mask_shape(mask, fov, PX_MM, grey=head)
        assert not h.plausible and h.reason == fc.SKULL_REASON and h.quality == 0.0
        assert h.problem == fc.SKULL_REASON and h.rim >= fc.SKULL_RIM_RATIO
        abdomen, mask = _scene("abdomen", axes=axes, angle=angle, gain=gain, seed=seed, fov=fov)
        a = fc.mask_shape(mask, fov, PX_MM, grey=abdomen)
        assert a.plausible and a.reason == "" and a.rim < fc.SKULL_RIM_RATIO


@pytest.mark.parametrize("fov", [None, sector(), linear()], ids=["none", "sector", "linear"])
@pytest.mark.parametrize("gain, offset", [(0.5, 0.0), (1.0, 0.0), (1.3, 0.0), (1.0, 120.0)])
def test_a_limb_s_section_with_its_bone_at_the_centre_is_not_an_abdomen(fov, gain, offset):
    """A thigh's section is round and 80-130 mm round late in pregnancy: 9 of 18 limb sections of
    an independent generator read a plain AC and a GA ('AC 122.9 mm, GA 18w 0d'). Its bone, the
    brightest echo inside it, lies at its centre with a shadow under it; an abdomen's spine lies at
    its rim. At a display gain that whitens the muscle too, the shadow still tells."""
    for seed, (axes, angle) in enumerate([((34, 29), 15.0), ((26, 24), 70.0), ((42, 33), -30.0)]):
        limb, mask = _scene("limb", axes=axes, angle=angle, gain=gain, seed=seed, fov=fov, offset=offset)
        assert fc.mask_shape(mask, fov, PX_MM).plausible  # the shape alone cannot tell
        shape = fc.mask_shape(mask, fov, PX_MM, grey=limb)
        assert not shape.plausible and shape.reason == fc.CENTRAL_REASON and shape.quality == 0.0
        abdomen, mask = _scene("abdomen", axes=axes, angle=angle, gain=gain, seed=seed, fov=fov, offset=offset)
        a = fc.mask_shape(mask, fov, PX_MM, grey=abdomen)
        assert a.plausible and a.reason == "", a.reason
        head, mask = _scene("head", axes=axes, angle=angle, gain=gain, seed=seed, fov=fov, offset=offset)
        assert fc.mask_shape(mask, fov, PX_MM, grey=head).reason == fc.SKULL_REASON  # a head stays a head


@pytest.mark.parametrize("offset", [120.0, 130.0])
def test_a_skull_is_a_skull_at_a_high_display_gain(offset):
    """A log-compressed display's gain adds to every grey level until white clips: the skull's
    ring over the brain fell below 1.4 (an independent generator's heads read 'AC 147-149 mm,
    GA 20w' at +8 to +14 dB) while its lead in grey levels stayed. An abdomen at the same gain
    stays an abdomen."""
    for seed, (axes, angle) in enumerate([((34, 29), 15.0), ((42, 33), -30.0)]):
        head, mask = _scene("head", axes=axes, angle=angle, seed=seed, offset=offset)
        assert fc.rim_ratio(head, None, fc.mask_shape(mask, None, PX_MM).ellipse, fc.SKULL_BAND) < fc.SKULL_RIM_RATIO
        h = fc.mask_shape(mask, None, PX_MM, grey=head)
        assert not h.plausible and h.reason == fc.SKULL_REASON
        abdomen, mask = _scene("abdomen", axes=axes, angle=angle, seed=seed, offset=offset)
        a = fc.mask_shape(mask, None, PX_MM, grey=abdomen)
        assert a.plausible and a.reason == "", a.reason


def test_a_large_head_whose_outer_band_leaves_the_image_is_still_a_skull():
    """The skull's band reaches 1.25 of the outline outwards: for a head filling the field of view
    it lies outside it along most angles and gave no verdict, so three skulls read 'AC 249-288 mm,
    GA 29-33w' without a doubt. The outline's own band decides then."""
    for seed, axes in enumerate([(60, 54), (52, 47)]):
        fov = ellipse((112, 112), (int(axes[0] * 1.15), int(axes[1] * 1.15))) > 0  # a field just round the head
        head, mask = _scene("head", center=(112, 112), axes=axes, seed=seed, fov=fov)
        assert fc.rim_ratio(head, fov, fc.mask_shape(mask, fov, 0.3).ellipse, fc.SKULL_BAND) is None
        h = fc.mask_shape(mask, fov, 0.3, grey=head)
        assert not h.plausible and h.reason == fc.SKULL_REASON
        abdomen, mask = _scene("abdomen", center=(112, 112), axes=axes, seed=seed, fov=fov)
        assert fc.mask_shape(mask, fov, 0.3, grey=abdomen).plausible


def test_a_head_in_a_field_of_view_found_round_it_alone_is_still_a_skull():
    """A fan found from one frame whose fluid is shown as black with sparse speckle can be the body
    alone: the bands round the outline then lie outside it at every angle, no check of the
    outline ran, and heads of an independent generator read 'AC 270 mm, GA 31w' without a doubt.
    The frame is read as it is then: the head is a skull, the abdomen stays an abdomen."""
    for seed, (axes, angle) in enumerate([((34, 29), 15.0), ((42, 33), -30.0)]):
        fov = ellipse((112, 112), (int(axes[0] * 1.04) + 1, int(axes[1] * 1.04) + 1), angle) > 0
        head, mask = _scene("head", center=(112, 112), axes=axes, angle=angle, seed=seed, fov=fov)
        e = fc.mask_shape(mask, fov, PX_MM).ellipse
        assert fc.rim_levels(head, fov, e) is None and fc.rim_levels(head, fov, e, fc.SKULL_BAND) is None
        h = fc.mask_shape(mask, fov, PX_MM, grey=head)
        assert not h.plausible and h.reason == fc.SKULL_REASON, h.reason
        abdomen, mask = _scene("abdomen", center=(112, 112), axes=axes, angle=angle, seed=seed, fov=fov)
        a = fc.mask_shape(mask, fov, PX_MM, grey=abdomen)
        assert a.plausible and a.reason == "", a.reason


def _large_scene(kind: str, ring_px: int, axes=(96, 84), angle=10.0, seed=0):
    """A 480 x 360 frame (0.45 mm a pixel, as a downsampled export) of ``kind`` ``"head"`` (a bone
    ring ``ring_px`` wide round a dark brain, the mask filling the skull's inside) or ``"abdomen"``
    (liver texture with a skin line ``ring_px`` wide at 1.6 times its grey, the mask on the skin),
    in dark fluid; blurred a little, as an echo is. Returns (uint8 frame, mask)."""
    rng = np.random.default_rng(seed)
    h_img, w_img, center = 360, 480, (240, 185)
    img = _speckled((h_img, w_img), 12.0, rng)
    body, inner = np.zeros((h_img, w_img), np.uint8), np.zeros((h_img, w_img), np.uint8)
    cv2.ellipse(body, center, axes, angle, 0, 360, 1, -1)
    cv2.ellipse(inner, center, (axes[0] - ring_px, axes[1] - ring_px), angle, 0, 360, 1, -1)
    line = (body > 0) & (inner == 0)
    img[body > 0] = _speckled((int((body > 0).sum()),), 45.0 if kind == "head" else 95.0, rng)
    img[line] = _speckled((int(line.sum()),), 150.0, rng)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.2)
    return np.clip(img, 0, 255).astype(np.uint8), inner if kind == "head" else body


@pytest.mark.parametrize("seed, axes, angle", [(0, (96, 84), 10.0), (1, (80, 74), -35.0), (2, (104, 90), 60.0)])
def test_a_head_with_a_thin_skull_ring_is_a_skull(seed, axes, angle):
    """A skull ring 2 px wide (a 1 mm bone at 0.45 mm a pixel) with the mask on the skull's
    inside read a plain AC with a GA: smoothed over one model pixel (~2 px on this frame) and
    sampled ~4 px apart across the skull's band, the ring lost most of its peak (rim ratio ~1.3),
    while a ring 3 px wide was caught (~1.7). Read again finely, it is a skull; an abdomen of the
    same size whose skin line is as thin (and brighter than its liver) stays an abdomen."""
    px = 0.45
    head, mask = _large_scene("head", 2, axes, angle, seed)
    assert fc.mask_shape(mask, None, px).plausible  # the shape alone cannot tell
    h = fc.mask_shape(mask, None, px, grey=head)
    assert not h.plausible and h.reason == fc.SKULL_REASON and h.problem == fc.SKULL_REASON
    assert h.rim >= fc.SKULL_FINE_RATIO
    thick, mask = _large_scene("head", 3, axes, angle, seed)
    assert fc.mask_shape(mask, None, px, grey=thick).reason == fc.SKULL_REASON
    abdomen, mask = _large_scene("abdomen", 2, axes, angle, seed)
    a = fc.mask_shape(mask, None, px, grey=abdomen)
    assert a.plausible and a.reason == "", a.reason


def test_an_outline_far_outside_the_body_is_not_an_abdomens():
    """A mask 40 % larger than the abdomen it covers has its outline in the fluid around it (the
    AC would be 40 % too long): not plausible, with the reason. One 10 % larger still follows the
    body's edge closely enough to be measured."""
    fov = sector()
    for seed, (axes, angle) in enumerate([((34, 29), 15.0), ((26, 24), 70.0)]):
        frame, _ = _scene("abdomen", axes=axes, angle=angle, seed=seed, fov=fov)
        big = ellipse((112, 120), (int(axes[0] * 1.4), int(axes[1] * 1.4)), angle)
        s = fc.mask_shape(big, fov, PX_MM, grey=frame)
        assert not s.plausible and s.reason == fc.FLUID_REASON and s.rim < fc.FLUID_RIM_RATIO
        snug = ellipse((112, 120), (int(axes[0] * 1.1), int(axes[1] * 1.1)), angle)
        assert fc.mask_shape(snug, fov, PX_MM, grey=frame).plausible


def test_the_outline_check_needs_enough_of_the_outline_in_the_fan():
    """A ring mostly outside the field of view gives no verdict (the shape alone decides), and a
    frame is only looked at when the shape is plausible (a function giving it is not called)."""
    fov = linear()
    head, mask = _scene("head", center=(60, 120), axes=(30, 26), angle=0.0, fov=fov)
    assert fc.rim_ratio(head, fov, ((60.0, 120.0), (60.0, 52.0), 0.0)) is not None  # most of it inside
    narrow = np.zeros((S, S), bool)
    narrow[:, 54:66] = True  # only a slice through the middle of the head
    assert fc.rim_ratio(head, narrow, ((60.0, 120.0), (60.0, 52.0), 0.0)) is None

    def never():
        raise AssertionError("the frame was read for a mask already not plausible")

    bar = ellipse((112, 112), (60, 9), 15)
    assert fc.mask_shape(bar, None, PX_MM, grey=never).reason == "elongated"


def test_the_answer_moves_off_a_head_to_the_abdomen():
    """One sweep: the classifier is surest on a head (frames 4-7) and the segmenter draws a round
    mask on it; the abdomen (frames 13-16) scores lower. The case's frame is the abdomen's and its
    AC a number to act on; the head's frames are not plausible, with the reason."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.engine import SweepResults
    from fetaliqa_core.io import Sweep

    fov = sector()
    n = 20
    frames = np.zeros((n, S, S), np.uint8)
    res = SweepResults(n, True, True)
    res.p_cls[:] = 0.05
    res.p_opt[:] = 0.0
    res.seg_area_px[:] = 0
    res.done[:] = True
    for i in range(n):
        res.masks[i] = np.zeros((S, S), np.uint8)
        kind = "head" if 4 <= i <= 7 else "abdomen" if 13 <= i <= 16 else None
        if kind is None:
            frames[i][fov] = 12
            continue
        frames[i], res.masks[i] = _scene(kind, axes=(36, 31), seed=i, fov=fov)
        res.p_cls[i] = 0.97 if kind == "head" else 0.75
        res.seg_area_px[i] = int(np.count_nonzero(res.masks[i]))
    res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * S * S)
    sweep = Sweep(frames=frames, spacing_mm=(0.5, 0.5), sweep_ranges=[(0, n)], sweep_kinds=["transverse"])
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    assert 13 <= a.chosen_frame <= 16 and a.summary.chosen_ac["status"] == "ok"
    assert all(a.mask_problem(i) == fc.SKULL_REASON for i in range(4, 8))
    assert a.summary.sweeps[0].best_frame == a.chosen_frame


def test_a_sweep_with_frames_above_threshold_but_no_chosen_frame_says_why():
    """Sweep 1 holds a round mask both models call; in sweep 2 the classifier calls frame 30 as
    firmly but the mask there is a limb-like bar. Sweep 2 then has no chosen frame, and `score`
    said "no frame above threshold" beside frames.csv flagging frame 30."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.engine import SweepResults
    from fetaliqa_core.io import Sweep

    frames = np.zeros((40, S, S), np.uint8)
    frames[:, linear()] = 40
    _paint(frames, 10, ellipse((112, 112), (40, 34)))
    _paint(frames, 30, ellipse((112, 112), (40, 34)))  # the round body below; the bar of the first check lies across it
    sweep = Sweep(frames=frames, spacing_mm=(0.5, 0.5), sweep_ranges=[(0, 20), (20, 40)],
                  sweep_kinds=["transverse", "transverse"])
    res = SweepResults(40, True, True)
    res.p_cls[:] = 0.1
    res.p_opt[:] = 0.0
    res.done[:] = True
    for i in range(40):
        res.masks[i] = np.zeros((S, S), np.uint8)
    res.seg_area_px[:] = 0
    for i, mask in ((10, ellipse((112, 112), (40, 34))), (30, ellipse((112, 112), (60, 9), 15))):
        res.masks[i] = mask
        res.seg_area_px[i] = int(np.count_nonzero(mask))
    res.p_cls[[10, 30]] = 0.9
    res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * S * S)
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    first, second = a.summary.sweeps
    assert first.best_frame == 10 and a.chosen_frame == 10
    assert a.flags.candidates[30] and second.best_frame == -1
    assert second.ac_note.startswith("1 frame(s) above the classifier's threshold, but no mask there is shaped "
                                     "like an abdomen's outline")
    # a round mask the classifier does not call: the classifier is the reason, not the mask
    round_mask = ellipse((112, 112), (40, 34))
    res.masks[30], res.seg_area_px[30], res.p_cls[30] = round_mask, int(np.count_nonzero(round_mask)), 0.3
    res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * S * S)
    note = assess(sweep, res, Thresholds(value=0.5, model=0.5)).summary.sweeps[1].ac_note
    assert note.startswith("no frame above the classifier's threshold; the segmenter's mask is shaped like an abdomen's outline on 1")
    # nothing called, nothing outlined: the old words stay true
    res.masks[30], res.seg_area_px[30] = np.zeros((S, S), np.uint8), 0
    res.p_seg[:] = res.seg_area_px / (res.seg_area_px + 0.01 * S * S)
    assert assess(sweep, res, Thresholds(value=0.5, model=0.5)).summary.sweeps[1].ac_note == \
        "no frame reaches the classifier's threshold and no mask is shaped like an abdomen's outline"


def test_each_mask_is_judged_once_per_results_and_again_only_when_replaced(monkeypatch):
    """The viewer assesses its results 10 times a second while scoring. The cache of judged masks
    was keyed on the results object, which has no hash, so it was never used: every refresh judged
    every mask again (0.4-1.8 s stalls of the window on a full case). Copies made for a cascade's
    answer (``SweepResults.only``) share it; a mask replaced by a teacher is judged again."""
    from fakes import tiny_sweep

    from fetaliqa_core.analysis import assessment
    from fetaliqa_core.engine import SweepResults

    sweep = tiny_sweep(2, 10, height=96, width=128)
    n = sweep.n_frames
    results = SweepResults(n, True, True)
    results.p_cls[:] = 0.9
    results.p_seg[:] = 0.9
    for i in range(n):
        results.masks[i] = ellipse((112, 112), (50 + i, 40))
    results.seg_area_px[:] = [int(m.sum()) for m in results.masks.values()]
    results.done[:] = True
    judged = []
    real = fc.mask_shape
    monkeypatch.setattr(fc, "mask_shape", lambda m, *a, **k: judged.append(m) or real(m, *a, **k))
    thresholds = assessment.Thresholds(0.5, 0.5)
    first = assessment.assess(sweep, results, thresholds)
    assert len(judged) == n
    again = assessment.assess(sweep, results, thresholds)
    assert len(judged) == n and again.chosen_frame == first.chosen_frame
    part = np.zeros(n, bool)
    part[:5] = True
    assessment.assess(sweep, results.only(part), thresholds)
    assert len(judged) == n
    results.masks[3] = np.zeros((224, 224), np.uint8)  # scored again: another mask
    after = assessment.assess(sweep, results, thresholds)
    assert len(judged) == n + 1 and after.choice.shapes[3].plausible is False


def test_a_doubtful_reading_names_every_reason():
    """An AC of 535 mm read "doubtful: not ellipse-like" alone; the size is the first thing a
    sonographer would check, so it is said beside the other reason."""
    from fetaliqa_core.analysis.units import DEMO_MODEL_DOUBT, read_ac

    big = read_ac(535.5, mask_problem="not ellipse-like")
    assert "not ellipse-like" in big.note and "outside the plausible 75-420 mm" in big.note
    assert "pixel spacing" in big.note
    small = read_ac(41.8, model_doubt=DEMO_MODEL_DOUBT)
    assert small.note.startswith(DEMO_MODEL_DOUBT) and "outside the plausible" in small.note
    assert read_ac(200.0, model_doubt=DEMO_MODEL_DOUBT).note == DEMO_MODEL_DOUBT
    sized = read_ac(535.5, mask_problem="implausible size")
    assert sized.note.count("plausible") == 1  # the mask's own reason already says it


def test_an_outline_that_follows_no_edge_is_no_abdomen():
    """An independent generator's sweeps had round masks drawn in a featureless stretch of fluid
    chosen as abdomens (their AC only doubtful because the model was the demo). An abdomen's
    outline is an interface: the grey just inside differs from that just outside along part of it."""
    rng = np.random.default_rng(0)
    fov = sector()
    mask = ellipse((112, 120), (34, 30))

    def frame(inside: float, outside: float) -> np.ndarray:
        g = np.full((S, S), outside, np.float32)
        g[mask != 0] = inside
        g *= cv2.GaussianBlur(rng.gamma(16.0, 1 / 16.0, size=g.shape).astype(np.float32), (0, 0), 1.5)  # speckle
        g[~fov] = 0
        return np.clip(g, 0, 255).astype(np.uint8)

    flat = fc.mask_shape(mask, fov, PX_MM, grey=frame(60, 60))
    assert not flat.plausible and flat.reason == fc.NO_EDGE_REASON
    assert fc.mask_shape(mask, fov, PX_MM, grey=frame(120, 30)).plausible  # a body in fluid
    assert fc.mask_shape(mask, fov, PX_MM, grey=frame(50, 40)).plausible  # a faint one
    assert fc.mask_shape(mask, fov, PX_MM).plausible  # no grey levels: the shape alone


def test_an_abdomen_packed_in_tissue_shows_its_edge_as_the_skin_s_line():
    """With little fluid around it an abdomen lies in tissue as echogenic as its liver: its only
    edge is the skin's thin echo on the outline, which the bands beside it leave out ('its outline
    follows no edge in the image' on a true abdomen). A line brighter than both sides is an edge;
    the same mask with no line there still follows none."""
    rng = np.random.default_rng(1)
    fov = sector()
    mask = ellipse((112, 120), (36, 31))
    skin = (mask != 0) & ~(ellipse((112, 120), (34, 29)) != 0)

    def frame(line: float) -> np.ndarray:
        g = np.full((S, S), 90.0, np.float32)
        g[skin] = line
        g *= cv2.GaussianBlur(rng.gamma(16.0, 1 / 16.0, size=g.shape).astype(np.float32), (0, 0), 1.0)
        g[~fov] = 0
        return np.clip(g, 0, 255).astype(np.uint8)

    packed = fc.mask_shape(mask, fov, PX_MM, grey=frame(120))
    assert packed.plausible and packed.reason == "", packed.reason
    flat = fc.mask_shape(mask, fov, PX_MM, grey=frame(90))
    assert not flat.plausible and flat.reason == fc.NO_EDGE_REASON


def test_an_ac_on_a_mask_the_segmenter_does_not_call_is_doubtful():
    """The classifier calls frame 10; the segmenter's mask there is a plausible outline but under
    the paper's 1 % (its own call is no). The choice rests on the classifier alone, and the AC
    measured on that mask read as a number to act on: the models disagree, so it is doubtful."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess

    sweep, res = _scored_case(ellipse((112, 112), (40, 34)))
    # under 1 % at the model's input: on a frame of 224 x 224 such a mask is also too small to be
    # an abdomen, on a larger frame (coarser model pixels) it is not; only its score says so here
    res.p_seg[10] = 0.45
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    assert not a.flags.seg_call[10] and a.chosen_frame == 10 and a.choice.basis == "classifier"
    reading = a.summary.chosen_ac
    assert reading["status"] == "doubtful" and reading["ga_weeks"] is None
    assert "segmenter does not call this frame" in reading["note"]
    assert "segmenter does not call" in a.disagreement(10)
    big = ellipse((112, 112), (40, 34))
    sweep, res = _scored_case(big)
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    assert a.disagreement(10) is None and a.summary.chosen_ac["status"] == "ok"


def test_a_mask_of_the_brain_inside_the_skull_is_a_head():
    """An independent generator's heads were chosen where the segmenter outlined the brain inside
    the bone: the bright ring then lies just outside the mask's ellipse, beyond the band that was
    searched (0.8-1.1 of its size); the skull's band now reaches 1.25."""
    rng = np.random.default_rng(1)
    frame = np.full((S, S), 25, np.float32)  # fluid
    cv2.ellipse(frame, (112, 120), (78, 68), 0, 0, 360, 220, -1)  # bone ...
    cv2.ellipse(frame, (112, 120), (70, 60), 0, 0, 360, 70, -1)  # ... round the brain
    frame = np.clip(frame * rng.gamma(16.0, 1 / 16.0, frame.shape), 0, 255).astype(np.uint8)
    brain = ellipse((112, 120), (62, 52))  # the mask: inside the bone, not on it
    assert fc.rim_ratio(frame, None, fc.mask_shape(brain, None, None).ellipse) < fc.SKULL_RIM_RATIO
    shape = fc.mask_shape(brain, None, None, grey=frame)
    assert not shape.plausible and shape.reason == fc.SKULL_REASON


def test_ga_out_of_range_is_said_only_of_an_ac_shown():
    """``ga_out_of_range`` was false where no AC was shown (summary.json) and never true in
    cases.csv (it was read from the GA, which an AC out of Hadlock's range does not have)."""
    import dataclasses

    from fetaliqa_core.analysis.assessment import Thresholds, assess

    big = ellipse((112, 112), (70, 60))
    sweep, res = _scored_case(big)
    sweep = dataclasses.replace(sweep, spacing_mm=(0.99, 0.99))  # ~405 mm: plausible, beyond Hadlock
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    s = a.summary.sweeps[0]
    assert s.ac_status == "ok" and s.ga_weeks is None and s.ga_out_of_range is True
    sweep, res = _scored_case(np.zeros((S, S), np.uint8))  # no mask: no AC, nothing to say of a GA
    assert assess(sweep, res, Thresholds(value=0.5, model=0.5)).summary.sweeps[0].ga_out_of_range is None


def test_elongation_and_size_are_judged_in_mm_when_the_pixels_are_not_square():
    """A 36 x 12 mm outline (a limb) round in 0.1 x 0.3 mm pixels passed as an abdomen; a round
    abdomen drawn in such pixels was called elongated. The axis ratio and the circumference are
    those of the outline in mm."""
    from fetaliqa_core.analysis.frame_choice import mask_shape

    round_in_px = ellipse((112, 112), (60, 60))  # rows 0.9 mm, columns 0.3 mm: 108 x 36 mm
    shape = mask_shape(round_in_px, None, (0.9, 0.3))
    assert not shape.plausible and shape.reason == "elongated" and shape.axis_ratio == pytest.approx(1 / 3, rel=0.03)
    round_in_mm = ellipse((112, 112), (90, 30))  # 54 x 54 mm
    shape = mask_shape(round_in_mm, None, (0.9, 0.3))
    assert shape.plausible and shape.axis_ratio > 0.95
    assert shape.circumference_mm == pytest.approx(math.pi * 54, rel=0.03)
    assert mask_shape(round_in_px, None, 0.5).plausible  # square pixels: as before


def test_two_round_bodies_touching_are_measured_as_doubtful_not_as_one_abdomen():
    """Twins side by side, one connected mask: "AC 298.2 mm, GA 33w 6d" for two abdomens of 200 and
    190 mm. The outline is pinched in the middle: the frame may still be chosen, its AC is doubtful;
    an abdomen flattened on one side, or with one notch, is not pinched."""
    from fetaliqa_core.analysis.frame_choice import WAIST_REASON, mask_shape

    for gap in (1.0, 1.3, 1.6):  # centre distance in radii
        r = 30
        twins = ellipse((112 - int(gap * r / 2), 112), (r, r)) | ellipse((112 + int(gap * r / 2), 112), (r - 2, r - 2))
        shape = mask_shape(twins, None, 0.9)
        assert shape.problem == WAIST_REASON, gap
    flattened = ellipse((112, 112), (50, 44))
    flattened[140:] = 0
    notched = ellipse((112, 112), (50, 44))
    cv2.circle(notched, (112, 160), 20, 0, -1)
    for body in (flattened, notched, ellipse((112, 112), (50, 44), 30)):
        assert not mask_shape(body, None, 0.9).pinched
    assert mask_shape(ellipse((112, 112), (50, 44), 30), None, 0.9).problem is None


def test_an_outline_flattened_along_one_side_makes_its_ac_doubtful():
    """An abdomen cut by another probe's curved fan edge, measured where that edge is not known,
    read "AC 261.4 mm, GA 30w 2d" for 300 mm (the straight-cut check misses a curved cut). A whole
    outline, smooth or ragged, is its own ellipse; a flattened one is doubtful (the frame may still
    be chosen)."""
    from fetaliqa_core.analysis.frame_choice import FLATTENED_REASON, flattening, mask_shape

    whole = ellipse((112, 112), (60, 50), 20)
    cut = whole.copy()
    yy, xx = np.mgrid[:S, :S]
    cut[np.hypot(yy + 300, xx - 112) > 445] = 0  # a fan's arc (centre far above) across the bottom
    assert whole.sum() * 0.7 < cut.sum() < whole.sum() * 0.9
    assert flattening(cv2.findContours(whole, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0]) < 1.01
    shape = mask_shape(cut, None, 1.0)
    assert shape.plausible and shape.problem == FLATTENED_REASON
    from fetaliqa_core.analysis.units import read_ac

    note = read_ac(250.0, None, shape.problem).note  # said as an outline's doubt, not as no abdomen
    assert note.startswith("the mask's outline is flattened") and "does not outline" not in note
    rng = np.random.default_rng(1)
    ragged = whole.copy()
    for angle in rng.uniform(0, 2 * np.pi, 12):  # small bumps and bites along the edge
        cv2.circle(ragged, (int(112 + 58 * np.cos(angle)), int(112 + 48 * np.sin(angle))), 3, int(rng.integers(0, 2)), -1)
    assert mask_shape(ragged, None, 1.0).problem is None


def test_an_outline_with_a_part_left_out_under_a_shadow_makes_its_ac_doubtful():
    """A mask that leaves out the body's far part under an acoustic shadow (a narrow notch from the
    far wall to near the centre, a fifth of the area) read "ok, 303.8 mm, GA 34w 2d" for 314.6 mm:
    too narrow a mouth for a waist, not flattened. A dent half the minor semi-axis deep or more
    makes the AC doubtful when it leaves out a part of the body; a shallow one (a quarter: about 1 %
    short), a crack however deep (under 1 % short) and a whole outline do not."""
    from fetaliqa_core.analysis.frame_choice import NOTCH_DEPTH, mask_shape
    from fetaliqa_core.analysis.units import read_ac, short_doubt

    def bitten(depth: float, left: int = 100, right: int = 125) -> np.ndarray:
        body = ellipse((112, 112), (60, 52))
        body[112 + int(round(52 * (1 - depth))):, left:right] = 0  # a shadow's band from the far wall inwards
        return body

    deep = mask_shape(bitten(0.8), None, 1.0)
    assert deep.plausible and not deep.pinched and deep.notch >= NOTCH_DEPTH
    assert deep.problem.startswith("notched: a part of it is left out, a dent 8")
    note = read_ac(300.0, None, deep.problem).note
    assert note.startswith("the mask's outline is notched") and short_doubt(note) == "notched outline"
    assert mask_shape(bitten(0.25), None, 1.0).problem is None
    assert mask_shape(bitten(0.8, 111, 114), None, 1.0).problem is None  # a crack 3 px wide
    through = mask_shape(bitten(1.2), None, 1.0)  # past the centre: said so, not "120 % of the way"
    assert through.problem is None or "reaching past its centre" in through.problem
    assert mask_shape(ellipse((112, 112), (60, 52)), None, 1.0).notch < 0.05


def test_an_oval_section_is_chosen_after_the_round_ones_and_its_ac_is_doubtful():
    """A probe rocking through one fetus: the sections tilted by 40-45 degrees are larger than the
    transverse one, so the largest ellipse was chosen, and read 'ok' 23 % long with a GA."""
    fov = linear()
    n = 11
    shapes = [fc.NO_MASK] * n
    p_cls = np.full(n, 0.9)
    b = 26  # the body's half-width; the section's length grows as 1 / cos(tilt)
    for f, tilt in enumerate((0, 20, 30, 40, 45, 45, 40, 30, 20, 0, 0)):
        shapes[f] = fc.mask_shape(ellipse((112, 112), (round(b * 1.05 / math.cos(math.radians(tilt))), b)), fov, PX_MM)
    assert all(s.plausible for s in shapes)
    ovals = [f for f in range(n) if shapes[f].oval]
    assert ovals == [4, 5]  # 45 degrees: 0.67 (40 degrees: 0.73)
    assert shapes[4].problem.startswith("oval (minor / major axis 0.6")
    c = fc.choose([(0, n)], p_cls, 0.5, shapes)
    assert c.frame not in ovals and shapes[c.frame].axis_ratio >= fc.ROUND_RATIO
    # an oval one alone in its run is still chosen (the answer is there), its AC doubtful
    c = fc.choose([(0, n)], np.where(np.isin(np.arange(n), [4, 5]), 0.9, 0.1), 0.5, shapes)
    assert c.frame in (4, 5)
    from fetaliqa_core.analysis.units import mask_doubt

    assert mask_doubt(shapes[c.frame].problem).startswith("the mask's outline is oval")
    # shown with the digits it takes not to read as the limit: 0.695 is "0.695", oval, not "0.70"
    from dataclasses import replace

    near = replace(shapes[0], axis_ratio=0.6951)
    assert near.oval and "minor / major axis 0.695)" in near.problem
    assert not replace(shapes[0], axis_ratio=0.7).oval
    # an oval outline also flattened (or pinched) says both: "flattened" alone read as too short,
    # where an oblique cut reads long (an oblique section: AC 270 mm shown for a transverse 230)
    both = replace(near, flattened=True)
    assert both.problem.startswith(fc.FLATTENED_REASON) and "oval (minor / major axis 0.695)" in both.problem
    assert mask_doubt(both.problem).startswith("the mask's outline is flattened")
    assert replace(near, pinched=True).problem == fc.WAIST_REASON  # two bodies side by side: no oblique cut
    assert replace(shapes[0], flattened=True).problem == fc.FLATTENED_REASON


def test_a_frame_beside_skulls_is_a_head_not_the_answer():
    """A sweep through a head: the frames whose ring reads bright are judged skulls, but one between
    them whose ring read fainter (rim ratio 1.28 beside 1.73 and 1.69) was a one-frame run and the
    case's answer. Within two frames of a skull, a plausible outline is the same head; an abdomen
    further along the sweep is chosen, and in another sweep a frame next to a skull is not touched."""
    from dataclasses import replace

    fov = linear()
    n = 20
    round_ = fc.mask_shape(ellipse((112, 112), (30, 28)), fov, PX_MM)
    assert round_.plausible
    skull = replace(round_, plausible=False, quality=0.0, reason=fc.SKULL_REASON)
    shapes = [fc.NO_MASK] * n
    shapes[3] = shapes[5] = skull
    shapes[4] = replace(round_, ellipse_area_px=round_.ellipse_area_px * 1.5)  # the faint ring, larger
    shapes[14] = round_  # the abdomen, further along
    shapes[10] = round_  # first frame of the second sweep, beside sweep 1's last frames
    shapes[9] = skull
    p_cls = np.full(n, 0.9)
    c = fc.choose([(0, 10), (10, 20)], p_cls, 0.5, shapes)
    assert c.shapes[4].reason == fc.BESIDE_SKULL_REASON and not c.shapes[4].plausible
    assert c.per_sweep[0] == -1 or c.per_sweep[0] not in (2, 3, 4, 5, 6)
    assert c.shapes[10].plausible and c.frame in (10, 14)
    # a twin's head elsewhere in the image, and one frame of a run of abdomens judged a skull, take
    # no abdomen away (each wiped a true answer: the skull frame itself then won on the classifier)
    left = fc.mask_shape(ellipse((60, 112), (30, 28)), fov, PX_MM)
    right = fc.mask_shape(ellipse((170, 112), (30, 28)), fov, PX_MM)
    twins = [fc.NO_MASK] * 6
    twins[0] = twins[1] = replace(left, plausible=False, quality=0.0, reason=fc.SKULL_REASON)
    twins[2] = twins[3] = right
    c = fc.choose([(0, 6)], np.full(6, 0.9), 0.5, twins)
    assert c.shapes[2].plausible and c.frame in (2, 3) and c.basis == "all models"
    run = [round_] * 5 + [fc.NO_MASK]
    run[2] = skull
    c = fc.choose([(0, 6)], np.full(6, 0.9), 0.5, run)
    assert all(c.shapes[i].plausible for i in (0, 1, 3, 4)) and c.frame in (0, 1, 3, 4) and c.basis == "all models"
    # and where nothing else is plausible, no head's frame is chosen on its outline
    only = [fc.NO_MASK] * n
    only[3] = only[5] = skull
    only[4] = round_
    c = fc.choose([(0, n)], np.where(np.arange(n) == 4, 0.9, 0.1), 0.5, only)
    assert c.basis != "all models" and "skull" in c.shapes[4].problem
    # frames shown a head's by the midline echo (a thin skull ring with no bright ring to read) tell the
    # same of the frame between them, whose midline did not show
    midline = replace(round_, plausible=False, quality=0.0, reason=fc.MIDLINE_REASON)
    shapes = [fc.NO_MASK] * n
    shapes[3] = shapes[5] = midline
    shapes[4] = round_
    shapes[14] = round_
    c = fc.choose([(0, n)], np.full(n, 0.9), 0.5, shapes)
    assert c.shapes[4].reason == fc.BESIDE_SKULL_REASON and c.frame == 14


def test_an_outline_inside_or_outside_the_body_s_edge_makes_its_ac_doubtful():
    """A mask lying inside a low-contrast abdomen (an ellipse in the liver's texture, as a demo
    segmenter drew it: 122.5 mm for 278.6) passed every check and read a plain AC and GA; so did one
    15-30 % larger than the body. Where the body's own edge lies says which way the AC is off; where
    no edge shows (an abdomen against the wall, no fluid around it) the outline cannot be checked,
    and that is said."""
    from fetaliqa_core.analysis.units import read_ac, short_doubt

    rng = np.random.default_rng(7)
    body = ellipse((112, 112), (60, 54)) > 0
    fov = np.ones((224, 224), bool)
    px = 0.6  # mm at model resolution: the body's outline ~215 mm

    def frame(surround: int) -> np.ndarray:
        base = np.where(body, 95.0, float(surround))
        base[ellipse((80, 100), (16, 14)) > 0] = 30  # the stomach, dark
        base[body & (np.arange(224)[None, :] > 128)] = 135  # the liver, brighter
        speckle = cv2.GaussianBlur(rng.normal(0, 25, (224, 224)).astype(np.float32), (0, 0), 1.0)
        return np.clip(base + speckle, 0, 255).astype(np.float32)

    in_fluid = frame(12)
    whole = fc.mask_shape(body.astype(np.uint8), fov, px, grey=in_fluid)
    assert whole.plausible and whole.off_edge == "" and whole.problem is None
    inner = fc.mask_shape(ellipse((112, 112), (40, 36)), fov, px, grey=in_fluid)
    assert inner.plausible and inner.off_edge == "inside"
    reading = read_ac(150.0, None, inner.problem)
    assert reading.status == "doubtful" and "inside the body's edge" in reading.note and "reads short" in reading.note
    assert short_doubt(reading.note) == "outline inside the body"
    outer = fc.mask_shape(ellipse((112, 112), (72, 65)), fov, px, grey=in_fluid)
    assert outer.plausible and outer.off_edge == "outside" and "reads long" in outer.problem
    # a whole abdomen against a bright placenta over half its outline: the placenta's far side is the
    # strongest step there, and the outline was called "inside", the AC short (it was right)
    yy, xx = np.mgrid[0:224, 0:224]
    radius = np.hypot((xx - 112) / 60.0, (yy - 112) / 54.0)
    placenta = in_fluid.copy()
    placenta[(radius > 1.0) & (radius < 1.45) & (yy < 112)] = 185
    beside = fc.mask_shape(body.astype(np.uint8), fov, px, grey=placenta)
    assert beside.plausible and beside.off_edge == ""
    # a whole abdomen against a wall as bright as itself (no fluid around it) shows no edge to check
    # the outline against, and neither does a mask 30 % inside it there or 20 % outside it: each read
    # a plain AC and GA; all three are doubtful now, saying why
    walled = frame(105)
    for axes in ((60, 54), (42, 38), (72, 65)):
        against = fc.mask_shape(ellipse((112, 112), axes), fov, px, grey=walled)
        assert against.plausible and against.off_edge == "unverified", axes
        reading = read_ac(200.0, None, against.problem)
        assert reading.status == "doubtful" and reading.ga_weeks is None
        assert "not checked against the body's edge" in reading.note
        assert short_doubt(reading.note) == "edge not seen"


def test_a_body_fading_into_the_far_field_is_checked_against_its_edge_not_its_fade():
    """A whole abdomen in black fluid at the bottom of a fan whose far field fades to black: over
    most of its outline the body's grey slopes down to nothing at its edge, and the field of view
    found ends short of that edge there. The steepest fall relative to the dimming grey lay ~20 %
    inside the body, and the exact outline read "outside the body's edge ... reads long". A slope
    is no edge; masks 20 % inside and outside the body stay doubtful."""
    yy, xx = np.mgrid[0:224, 0:224]
    rho = np.hypot((xx - 112) / 60.0, (yy - 112) / 54.0)
    far = yy > 100  # the far field: more than half the body
    fov = ~(far & (rho > 0.9))
    ellipse_at = lambda scale: ((112.0, 112.0), (120.0 * scale, 108.0 * scale), 0.0)  # noqa: E731
    for seed in range(4):
        rng = np.random.default_rng(seed)
        slope = np.clip((1.05 - rho) / 0.75, 0, 1) * 80.0
        base = np.where(rho < 1.0, np.where(far, slope, 150.0), 0.0)
        speckle = cv2.GaussianBlur(rng.normal(0, 1, (224, 224)).astype(np.float32), (0, 0), 1.0) * 0.3 * base
        grey = np.clip(base + speckle, 0, 255).astype(np.float32)
        assert fc.edge_offset(grey, fov, ellipse_at(1.0)) == "", seed
        assert fc.edge_offset(grey, fov, ellipse_at(0.8)) in ("inside", "unverified"), seed  # doubtful either way
        assert fc.edge_offset(grey, fov, ellipse_at(1.2)) in ("outside", "unverified"), seed


def test_edges_on_both_sides_of_an_outline_leave_it_unverified_not_short_or_long():
    """On a low-contrast abdomen the strongest step fell outside the outline in some directions and
    inside it in others; whichever half won was stated as a fact ("reads short" on one frame,
    "reads long" on the next, for one exactly outlined body). Steps on both sides in a quarter of
    the directions or more, or steps scattered over a wide range of sizes, say that the edge is not
    seen clearly enough to tell."""
    yy, xx = np.mgrid[0:224, 0:224]
    rho = np.hypot((xx - 112) / 60.0, (yy - 112) / 54.0)
    angle = np.arctan2(yy - 112, xx - 112)
    fov = np.ones((224, 224), bool)
    at_one = ((112.0, 112.0), (120.0, 108.0), 0.0)
    for share_in in (0.4, 0.6):  # the share of directions whose step lies inside the outline
        edge = np.where((angle + np.pi) / (2 * np.pi) < share_in, 0.82, 1.3)
        grey = np.where(rho < edge, 100.0, 45.0).astype(np.float32)
        assert fc.edge_offset(grey, fov, at_one) == "unverified", share_in
    # the edge on the outline in most directions but far inside it in 30 % of them (chance steps
    # in a low-contrast body's texture scatter so): no one edge is followed; read plain before
    edge = np.where((angle + np.pi) / (2 * np.pi) < 0.3, 0.6, 1.0)
    grey = np.where(rho < edge, 100.0, 45.0).astype(np.float32)
    assert fc.edge_offset(grey, fov, at_one) == "unverified"
    # one side only: said which way, as before
    assert fc.edge_offset(np.where(rho < 0.82, 100.0, 45.0).astype(np.float32), fov, at_one) == "outside"
    assert fc.edge_offset(np.where(rho < 1.3, 100.0, 45.0).astype(np.float32), fov, at_one) == "inside"


def test_a_closed_gap_joins_a_run_but_adds_nothing_to_its_strength():
    """With gaps of two frames closed, a thorax's two pieces (2 + 3 frames around two rejected
    masks) became a 7-frame run whose smoothed evidence outweighed the abdomen's 5 frames, and the
    thorax was chosen; a run's strength counts its positive frames only."""
    n, fov = 40, sector()
    p_cls = np.full(n, 0.05)
    shapes = [fc.NO_MASK] * n
    for f in (5, 6, 9, 10, 11):  # the thorax (frames 7-8: masks rejected for shape)
        shapes[f], p_cls[f] = fc.mask_shape(ellipse((112, 120), (30, 27)), fov, PX_MM), 0.8
    for f in range(20, 25):  # the abdomen
        shapes[f], p_cls[f] = fc.mask_shape(ellipse((112, 120), (28, 25)), fov, PX_MM), 0.8
    c = fc.choose([(0, n)], p_cls, 0.5, shapes)
    assert c.runs[0][0][:2] == (20, 25) and 20 <= c.frame < 25


def test_a_whole_abdomen_behind_a_thin_layer_of_fluid_follows_an_edge():
    """A thin layer of fluid between the body and brighter tissue averaged out over the band outside
    the outline (fluid and tissue together as bright as the body): whole abdomens "followed no edge"
    and were refused in 50-80 % of frames."""
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:224, 0:224]
    rho = np.hypot((xx - 112) / 60.0, (yy - 112) / 54.0)
    fov = np.ones((224, 224), bool)
    for _ in range(5):
        base = np.where(rho < 1.0, 110.0, np.where(rho < 1.1, 30.0, 150.0))
        base[(rho > 0.93) & (rho < 1.0)] = 140  # the skin line
        speckle = cv2.GaussianBlur(rng.normal(0, 25, (224, 224)).astype(np.float32), (0, 0), 1.0)
        grey = np.clip(base + speckle, 0, 255).astype(np.float32)
        shape = fc.mask_shape((rho < 1.0).astype(np.uint8), fov, 0.6, grey=grey)
        assert shape.plausible and shape.off_edge == "", shape.reason


def test_a_blank_or_dim_sweep_without_a_frame_says_so():
    """A black sweep (the probe off the skin) and one recorded at a low gain (brightest grey ~30)
    got the same words as any sweep without a frame: nothing said why none could pass."""
    from dataclasses import replace as dc_replace

    from fetaliqa_core.analysis.assessment import Thresholds, assess

    sweep, res = _scored_case(np.zeros((S, S), np.uint8))
    res.p_cls[10] = 0.1
    bright = sweep.frames.copy()
    bright[:, :20] = 180  # tissue as bright as a sweep's
    why = {}
    for name, frames in (("bright", bright), ("blank", np.zeros_like(bright)), ("dim", bright // 4)):
        a = assess(dc_replace(sweep, frames=frames), res, Thresholds(value=0.5, model=0.5))
        why[name] = a.summary.sweeps[0].ac_note
    assert "blank" not in why["bright"] and "dim" not in why["bright"]
    assert why["blank"].endswith("; its frames are blank: nothing but black")
    assert "its frames are dim: their brightest grey is about 45 of 255" in why["dim"]


def _wobbled(cx: float, wob: float, shape=(480, 640), cy=240, a=130, b=110) -> np.ndarray:
    """A filled outline ``wob`` (radially, three lobes) off an ellipse, at full frame size."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    r = 1 + wob * np.cos(3 * t + 0.5)
    pts = np.stack([cx + a * r * np.cos(t), cy + b * r * np.sin(t)], 1)
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m


def test_an_ac_extrapolated_over_much_of_an_outline_that_is_no_exact_ellipse_is_doubtful():
    """An abdomen cut by the fan's side whose outline is not exactly an ellipse (2 % off it) read
    plain, with a GA, 5-7 % long once 25-40 % of its outline lay outside: the ellipse fitted to the
    arc that shows goes its own way where nothing shows. Such an AC is doubtful; an exact ellipse
    stays plain up to 30 % of its outline outside, and past that any outline is doubtful."""
    fov = np.zeros((480, 640), bool)
    fov[:, 200:] = True
    whole = fc.mask_shape(_wobbled(400, 0.03), fov, 0.25)
    assert whole.plausible and whole.problem is None
    exact = fc.mask_shape(_wobbled(300, 0.0), fov, 0.25)
    assert exact.plausible and 0.2 <= exact.extrapolated < fc.EXTRAPOLATED_FAR and exact.problem is None
    cut = fc.mask_shape(_wobbled(300, 0.03), fov, 0.25)
    assert cut.plausible and cut.extrapolated >= fc.EXTRAPOLATED_DOUBT
    assert abs(cut.circumference_mm / whole.circumference_mm - 1) > 0.015  # the extrapolation's error
    assert cut.problem.startswith("extrapolated over") and "no exact ellipse" in cut.problem
    far = fc.mask_shape(_wobbled(240, 0.0), fov, 0.25)
    assert far.plausible and far.extrapolated >= fc.EXTRAPOLATED_FAR
    assert far.problem.startswith("extrapolated over") and "no exact ellipse" not in far.problem
    from fetaliqa_core.analysis.units import mask_doubt, short_doubt

    assert mask_doubt(cut.problem).startswith("the mask's outline is extrapolated over")
    assert short_doubt(mask_doubt(cut.problem)) == "extrapolated outline"


def _egg(cx: float, bulge: float, shape=(480, 640), cy=240, a=150, b=120) -> tuple[np.ndarray, float]:
    """A filled egg-shaped outline (wider at its right end by ``bulge``) and its perimeter in px."""
    t = np.linspace(0, 2 * np.pi, 1440, endpoint=False)
    pts = np.stack([cx + a * np.cos(t), cy + b * np.sin(t) * (1 + bulge * np.cos(t))], 1)
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m, float(np.hypot(*np.diff(np.vstack([pts, pts[:1]]), axis=0).T).sum())


def test_the_narrow_end_of_an_egg_shaped_abdomen_cut_off_counts_as_extrapolated():
    """An egg-shaped abdomen whose narrow end lay past the image's edge read 2.8-3.4 % short,
    plain, with a GA: the ellipse fitted to the wide part that shows is fat, and left 10-14 % of
    its outline outside where 16-19 % of the abdomen's was, under the bar at which such an arc's
    AC is doubtful. The edge the mask is cut along counts too (the hidden outline is no shorter)."""
    fov = np.zeros((480, 640), bool)
    fov[:, 200:] = True
    for cx in (300, 310, 320):
        mask, perimeter = _egg(cx, 0.2)
        shape = fc.mask_shape(mask, fov, 0.25)
        error = shape.circumference_mm / (perimeter * 0.25) - 1
        assert error < -0.02  # the extrapolation's error
        assert shape.plausible and shape.extrapolated >= fc.EXTRAPOLATED_DOUBT, (cx, shape.extrapolated)
        assert shape.problem and shape.problem.startswith("extrapolated over"), (cx, shape.problem)
    # the same egg whole, or cut by little, stays plain
    for cx in (360, 400):
        shape = fc.mask_shape(_egg(cx, 0.2)[0], fov, 0.25)
        assert shape.plausible and shape.problem is None, (cx, shape.problem)
    # an outline that only touches the edge, or runs along it as its own ellipse does, hides nothing
    # more than that ellipse says (counting every outline pixel near the edge, a touch read 6-12 %)
    yy, xx = np.mgrid[0:224, 0:224]
    edge = yy < 180
    for ripple in (0.0, 0.01):
        for cut, most in ((0, 0.05), (3, 0.15)):
            cy = 180 - 40 + cut
            rho = np.hypot((xx - 112) / 50.0, (yy - cy) / 40.0)
            mask = rho <= 1 + ripple * np.sin(7 * np.arctan2(yy - cy, xx - 112))
            shape = fc.mask_shape(mask.astype(np.uint8), edge, 0.6)
            assert shape.extrapolated < most and shape.problem is None, (ripple, cut, shape.extrapolated)


def _thresholded_disc(ac_mm: float, px_mm: float) -> np.ndarray:
    """A round abdomen as a segmenter's thresholded output draws it at the model's size: the
    pixels whose centres lie inside."""
    r = ac_mm / (2 * math.pi) / px_mm
    yy, xx = np.mgrid[0:S, 0:S]
    return ((xx - 111.7) ** 2 + (yy - 112.2) ** 2 <= r * r).astype(np.uint8)


def test_an_abdomen_at_the_plausible_range_s_foot_is_judged_by_the_ac_measured_on_its_frame():
    """A 76 mm abdomen read 75.6 mm on its frame (`ac`: plain, GA 14w 0d), but its mask at the
    model's size (0.93 mm pixels) measured under 75 mm, so `score` called it "implausible size":
    two answers for one mask. The model-size check now allows for its coarser pixels; the range
    itself is applied to the AC measured on the frame."""
    s = fc.mask_shape(_thresholded_disc(76.0, PX_MM), None, PX_MM)
    assert s.circumference_mm < 75.0  # the coarser mask reads short
    assert s.reason != "implausible size" and s.plausible, s
    assert fc.mask_shape(_thresholded_disc(66.0, PX_MM), None, PX_MM).reason == "implausible size"
    assert fc.mask_shape(_thresholded_disc(460.0, PX_MM), None, PX_MM).reason == "implausible size"



def test_the_weeks_of_gestation_are_written_alike_in_every_output_of_a_run():
    """summary.json's answer gave 27.57 weeks and its per-sweep rows (and so summary.csv, as
    "27.60", and the archive's cases.csv) 27.6 for the same frame: read back as days, the rounded
    value fell a day off the GA text shown beside it for 18 % of ACs. Every output now writes the
    answer's two decimals."""
    from fetaliqa_core.analysis.assessment import Thresholds, assess

    sweep, res = _scored_case(ellipse((112, 112), (40, 34)))
    a = assess(sweep, res, Thresholds(value=0.5, model=0.5))
    weeks = a.summary.chosen_ac["ga_weeks"]
    assert a.summary.chosen_ac["status"] == "ok" and weeks is not None and round(weeks, 1) != weeks
    (row,) = [s for s in a.summary.sweeps if s.best_frame == a.chosen_frame]
    assert row.ga_weeks == weeks


# ------------------------------------------------------------------ a thorax's section, from the image
def _section(kind: str, shape=(S, S), center=(112, 118), axes=(46, 41), angle=20.0, gain=1.0, offset=0.0,
             seed=0, fov=None, septum=None, blood=14.0):
    """A transverse section of ``kind`` ``"thorax"`` or ``"abdomen"`` in dark fluid, drawn here
    (not by the project's synthesiser), on a frame of ``shape``. A thorax: lung texture, the heart
    (a third of the section, anterior and to the left, its axis at 45 degrees) with four dark
    chambers divided by bright septa crossing at the crux, long rib arcs along both sides, the
    spine with its shadow. An abdomen: liver texture, one dark stomach bubble (left, a fifth of the
    diameter), the umbilical vein (a thin dark curved tube in the anterior third), the spine, and
    one short rib on each side, each with its shadow. ``septum``: the septa's width in px (by
    default a twelfth of the minor axis); ``blood``: the chambers' grey. Returns (uint8 frame, the
    section's mask)."""
    rng = np.random.default_rng(seed)
    img = _speckled(shape, 12.0, rng)

    def at(u, v):  # a point of the section: u along its major axis (anterior +), v across (left +)
        t = math.radians(angle)
        return (int(round(center[0] + u * axes[0] * math.cos(t) - v * axes[1] * math.sin(t))),
                int(round(center[1] + u * axes[0] * math.sin(t) + v * axes[1] * math.cos(t))))

    def disc(c, ax, ang=angle):
        m = np.zeros(shape, np.uint8)
        cv2.ellipse(m, c, ax, ang, 0, 360, 1, -1)
        return m > 0

    body = disc(center, axes)
    shadow = np.zeros(shape, bool)
    img[body] = _speckled((int(body.sum()),), 110.0 if kind == "thorax" else 95.0, rng)
    ribs = np.zeros(shape, np.uint8)
    if kind == "thorax":
        r = (int(axes[0] * 0.5), int(axes[1] * 0.55))
        heart = disc(at(0.25, 0.2), r, angle + 45)
        inner = disc(at(0.25, 0.2), (int(r[0] * 0.8), int(r[1] * 0.8)), angle + 45)
        img[heart] = _speckled((int(heart.sum()),), 100.0, rng)
        img[inner] = _speckled((int(inner.sum()),), blood, rng)
        septa = np.zeros(shape, np.uint8)
        c, t, half = at(0.25, 0.2), math.radians(angle + 45), max(r)
        for d in (t, t + math.pi / 2):
            dx, dy = math.cos(d) * half, math.sin(d) * half
            cv2.line(septa, (int(c[0] - dx), int(c[1] - dy)), (int(c[0] + dx), int(c[1] + dy)), 1,
                     max(2, axes[1] // 12) if septum is None else septum)
        img[(septa > 0) & heart] = 130.0
        for mid in (90, 270):  # long arcs along both sides
            cv2.ellipse(ribs, center, (axes[0] - 2, axes[1] - 2), angle, mid - 25, mid + 25, 1, max(2, axes[1] // 20))
    else:
        img[disc(at(0.05, 0.45), (int(axes[0] * 0.22), int(axes[1] * 0.2)))] = 15.0  # the stomach
        vein = np.array([at(0.6 - 0.4 * s, -0.1 - 0.2 * math.sin(2.5 * s)) for s in np.linspace(0, 1, 12)], np.int32)
        tube = np.zeros(shape, np.uint8)
        cv2.polylines(tube, [vein], False, 1, max(2, axes[1] // 16))
        img[(tube > 0) & body] = 20.0
        for mid in (90, 270):  # one short rib on each side
            cv2.ellipse(ribs, center, (axes[0] - 2, axes[1] - 2), angle, mid - 8, mid + 8, 1, max(2, axes[1] // 20))
    spine = disc(at(-0.78, 0.0), (max(3, axes[1] // 10),) * 2)
    for piece in (ribs > 0, spine):  # the beam runs down the frame: a shadow under each bone
        ys, xs = np.nonzero(piece)
        for x in np.unique(xs):
            shadow[ys[xs == x].max() + 1:, x] = True
    img[shadow & body] *= 0.5
    img[ribs > 0] = 190.0
    img[spine] = 230.0
    # (an echo's speckle is as large as the beam is wide: a model pixel or two)
    img = np.clip(cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5) * gain + offset, 0, 255)
    if fov is not None:
        img[~fov] = 0
    return img.astype(np.uint8), body.astype(np.uint8)


@pytest.mark.parametrize("fov", [None, sector(), linear()], ids=["none", "sector", "linear"])
@pytest.mark.parametrize("gain, offset", [(0.5, 0.0), (1.0, 0.0), (1.4, 0.0), (0.8, 45.0)])
def test_a_thorax_with_the_heart_s_chambers_is_not_an_abdomen(fov, gain, offset):
    """A transverse section of the thorax is as round and as large as the abdomen's, and with
    nothing bright at its rim or centre read a plain AC with a GA (36 of 44 thoraxes of an
    independent generator). The heart inside it is a dark structure divided by bright septa into
    chambers; the abdomen's section holds one stomach bubble and a thin vein, and its short ribs are
    no reason to doubt it. Dark, normal, bright and washed-out displays, three fields of view."""
    for seed, (axes, angle) in enumerate([((46, 41), 20.0), ((44, 40), -50.0), ((50, 44), 75.0)]):
        thorax, mask = _section("thorax", axes=axes, angle=angle, gain=gain, offset=offset, seed=seed, fov=fov)
        assert fc.mask_shape(mask, fov, PX_MM).plausible  # the shape alone cannot tell
        shape = fc.mask_shape(mask, fov, PX_MM, grey=thorax)
        assert not shape.plausible and shape.reason == fc.CHAMBER_REASON and shape.quality == 0.0
        assert shape.problem == fc.CHAMBER_REASON
        abdomen, mask = _section("abdomen", axes=axes, angle=angle, gain=gain, offset=offset, seed=seed, fov=fov)
        a = fc.mask_shape(mask, fov, PX_MM, grey=abdomen)
        assert a.plausible and a.reason == "", a.reason


@pytest.mark.parametrize("seed", [32, 74, 77, 78, 108, 116, 144, 164, 173, 176, 196])
def test_a_shadow_beside_the_stomach_is_no_heart(seed):
    """A short rib's shadow runs straight down the abdomen's section beside the stomach; speckle
    leaves darker cores in it that cross the chambers' threshold as compact pieces, and with the
    stomach they made three like pieces of one structure: 11 of 200 of these abdomens at this angle
    read a thorax. A piece whose darkness goes on down the beam to the section's far side, and
    which is hardly darker than that, is a shadow's, not a chamber; the thorax drawn alike still
    reads one."""
    abdomen, mask = _section("abdomen", axes=(46, 41), angle=20.0, seed=seed)
    a = fc.mask_shape(mask, None, PX_MM, grey=abdomen)
    assert a.plausible and a.reason == "", a.reason
    thorax, mask = _section("thorax", axes=(46, 41), angle=20.0, seed=seed)
    assert fc.mask_shape(mask, None, PX_MM, grey=thorax).reason == fc.CHAMBER_REASON


@pytest.mark.parametrize("fov", [None, sector(), linear()], ids=["none", "sector", "linear"])
@pytest.mark.parametrize("gain, offset", [(0.5, 0.0), (1.0, 0.0), (1.4, 0.0), (0.8, 45.0)])
@pytest.mark.parametrize("septum, blood", [(2, 14.0), (3, 40.0)], ids=["thin-septa", "faint-chambers"])
def test_a_thorax_whose_heart_has_thin_septa_or_faint_chambers_is_not_an_abdomen(fov, gain, offset, septum, blood):
    """Septa 2 px wide at the model's size are blurred away at the smoothing that reads the
    heart's chambers, which then join into one dark piece, as a stomach is; chambers of blood
    nearer the lung's grey cross the threshold only at their cores, or join at their corners. Both
    read a plain AC and GA in two of three of these drawings (thoraxes of two independent
    generators: 21 of 36 and 32 of 41 still plain). The chambers are now read again at a finer
    smoothing and at a second, deeper threshold; the abdomen drawn alike still reads plain."""
    for seed, (axes, angle) in enumerate([((46, 41), 20.0), ((44, 40), -50.0), ((50, 44), 75.0)]):
        thorax, mask = _section("thorax", axes=axes, angle=angle, gain=gain, offset=offset, seed=seed, fov=fov,
                                septum=septum, blood=blood)
        shape = fc.mask_shape(mask, fov, PX_MM, grey=thorax)
        assert not shape.plausible and shape.reason == fc.CHAMBER_REASON and shape.quality == 0.0, (seed, shape.reason)
        abdomen, mask = _section("abdomen", axes=axes, angle=angle, gain=gain, offset=offset, seed=seed, fov=fov)
        a = fc.mask_shape(mask, fov, PX_MM, grey=abdomen)
        assert a.plausible and a.reason == "", a.reason


# ------------------------------------------------------------------ the head's midline echo
def _midline_scene(kind: str, axes=(110, 88), angle=20.0, seed=0, midline: str = "whole", model_size=False):
    """A 480 x 360 frame (0.3 mm a pixel) drawn here, at a high display gain, of ``kind``:
    ``"head"``: a skull ring 1 px wide round a brain brighter than the fluid around it (so no
    bright ring round a darker inside shows), with the midline echo, a 1-px line along the long
    axis over 0.85 of it either way (``midline`` ``"cavum"``: broken by the cavum septi pellucidi
    over 0.25-0.37 of it); ``"abdomen"``: liver texture, a dark stomach, the umbilical vein as a
    straight tube (a dark lumen between brighter walls) from the anterior wall inwards, and a bright
    straight interface (the uterine wall) along the body just outside it. ``model_size``: shrunk to
    the model's 224 px wide, as ``score`` reads it. Returns (uint8 frame, mask, mm a pixel)."""
    rng = np.random.default_rng(seed)
    shape, px = (360, 480), 0.3
    c, t = (240, 190), math.radians(angle)

    def along(s, across=0.0):  # a point s of the long semi-axis along it, across of the short one
        return (int(round(c[0] + s * axes[0] * math.cos(t) - across * axes[1] * math.sin(t))),
                int(round(c[1] + s * axes[0] * math.sin(t) + across * axes[1] * math.cos(t))))

    img = _speckled(shape, 40.0, rng)
    body = np.zeros(shape, np.uint8)
    cv2.ellipse(body, c, axes, angle, 0, 360, 1, -1)
    img[body > 0] = _speckled((int(body.sum()),), 130.0 if kind == "head" else 95.0, rng)
    if kind == "head":
        lines = np.zeros(shape, np.float32)
        cv2.ellipse(lines, c, axes, angle, 0, 360, 1.0, 1, cv2.LINE_AA)
        mid = np.zeros(shape, np.float32)
        cv2.line(mid, along(-0.85), along(0.85), 1.0, 1, cv2.LINE_AA)
        if midline == "cavum":
            gap = np.zeros(shape, np.uint8)
            cv2.line(gap, along(-0.85 + 1.7 * 0.25), along(-0.85 + 1.7 * 0.37), 1, 5)
            mid[gap > 0] = 0.0
        lines = np.maximum(lines, mid)
        img = img * (1.0 - lines) + 255.0 * lines
    else:
        stomach = np.zeros(shape, np.uint8)
        cv2.ellipse(stomach, along(0.1, -0.45), (axes[1] // 5, axes[1] // 7), angle, 0, 360, 1, -1)
        img[stomach > 0] = 20.0
        for width, grey in ((9, 170.0), (5, 25.0)):  # the vein's walls, then its lumen
            tube = np.zeros(shape, np.uint8)
            cv2.line(tube, along(0.9, 0.1), along(0.3, 0.25), 1, width)
            img[tube > 0] = grey
        wall = np.zeros(shape, np.uint8)
        cv2.line(wall, along(-1.6, 1.05), along(1.6, 1.05), 1, 3)
        img[wall > 0] = 240.0
    img = np.clip(cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.8) * 1.6, 0, 255).astype(np.uint8)
    if model_size:
        img = cv2.resize(img, (S, S * shape[0] // shape[1]), interpolation=cv2.INTER_AREA)
        body = cv2.resize(body, (S, S * shape[0] // shape[1]), interpolation=cv2.INTER_NEAREST)
        px *= shape[1] / S
    return img, body, px


@pytest.mark.parametrize("model_size", [False, True], ids=["frame", "model-size"])
@pytest.mark.parametrize("midline", ["whole", "cavum"])
def test_a_head_with_a_thin_skull_shows_its_midline_and_is_not_an_abdomen(midline, model_size):
    """A head whose skull ring is 1 px wide, at a high gain that makes the brain brighter than the
    fluid round it, shows no bright ring round a darker inside: 10 of 110 such heads of an
    independent generator read a plain AC with a GA. Its midline echo, a straight bright line
    through its centre along its long axis, whole or broken by the cavum septi pellucidi, tells
    it, on the frame and shrunk to the model's size alike."""
    for seed, (axes, angle) in enumerate([((110, 88), 20.0), ((96, 84), -40.0), ((120, 100), 75.0)]):
        head, mask, px = _midline_scene("head", axes, angle, seed, midline, model_size)
        assert fc.mask_shape(mask, None, px).plausible  # the shape alone cannot tell
        h = fc.mask_shape(mask, None, px, grey=head)
        assert not h.plausible and h.reason == fc.MIDLINE_REASON and h.quality == 0.0, (seed, h.reason)
        assert h.problem == fc.MIDLINE_REASON


@pytest.mark.parametrize("model_size", [False, True], ids=["frame", "model-size"])
def test_a_straight_vein_or_a_bright_wall_beside_an_abdomen_is_no_midline(model_size):
    """The umbilical vein drawn as a straight tube with bright walls from the anterior wall inwards,
    and a bright straight interface (the uterine wall) along the body just outside it, are no
    midline echo: the abdomen reads plain (the head drawn alike does not)."""
    for seed, (axes, angle) in enumerate([((110, 88), 20.0), ((96, 84), -40.0), ((120, 100), 75.0)]):
        abdomen, mask, px = _midline_scene("abdomen", axes, angle, seed, model_size=model_size)
        a = fc.mask_shape(mask, None, px, grey=abdomen)
        assert a.plausible and a.reason == "", a.reason
        assert fc.midline_lead(abdomen, None, a.ellipse) < fc.MIDLINE_LEAD / 2
        head, mask, px = _midline_scene("head", axes, angle, seed, model_size=model_size)
        assert fc.mask_shape(mask, None, px, grey=head).reason == fc.MIDLINE_REASON


# ------------------------------------------------------------------ a thorax's ribs, from the image
RIBBED = 480  # a frame at the mask's size, as `fetaliqa ac` reads it (0.3 mm a pixel)


def _ribbed_fov(kind: str) -> np.ndarray | None:
    """A field of view on the :data:`RIBBED` frame: none, a narrow sector or a linear probe's."""
    if kind == "none":
        return None
    m = np.zeros((RIBBED, RIBBED), np.uint8)
    if kind == "sector":
        cv2.ellipse(m, (240, -10), (490, 490), 90, -34, 34, 1, -1)
    else:
        m[15:470, 70:410] = 1
    return m > 0


def _ribbed(kind: str, axes=(120, 106), angle=20.0, gain=1.0, offset=0.0, seed=0, fov=None, ribs=12):
    """A transverse section of ``kind`` ``"thorax"`` (lung texture, two brighter lungs, no heart in
    view, ``ribs`` short rib echoes evenly round it just inside its edge) or ``"abdomen"`` (liver
    texture, the stomach, one short rib on each side beside the spine), drawn here, on a
    :data:`RIBBED`-pixel frame, lying on the uterine wall behind a thin layer of fluid. Every bone
    (each rib, the spine) casts its own shadow down the frame. Returns (uint8 frame, the mask)."""
    rng = np.random.default_rng(seed)
    shape, center, t0 = (RIBBED, RIBBED), (240, 250), math.radians(angle)
    img = _speckled(shape, 12.0, rng)

    def at(th, s=1.0):  # the point at angle th (degrees round the section), at share s of its size
        u, v = s * axes[0] * math.cos(math.radians(th)), s * axes[1] * math.sin(math.radians(th))
        return (int(round(center[0] + u * math.cos(t0) - v * math.sin(t0))),
                int(round(center[1] + u * math.sin(t0) + v * math.cos(t0))))

    def disc(c, ax):
        m = np.zeros(shape, np.uint8)
        cv2.ellipse(m, c, ax, angle, 0, 360, 1, -1)
        return m > 0

    body = disc(center, axes)
    wall = ~disc(center, (axes[0] + 2, axes[1] + 2))
    img[wall] = _speckled((int(wall.sum()),), 70.0, rng)
    img[body] = _speckled((int(body.sum()),), 95.0, rng)
    if kind == "thorax":
        for side in (90, 270):
            lung = disc(at(side, 0.45), (int(axes[0] * 0.4), int(axes[1] * 0.35)))
            img[lung] = _speckled((int(lung.sum()),), 125.0, rng)
        mids = [i * 360.0 / ribs + 10.0 for i in range(ribs)]
    else:
        img[disc(at(60, 0.4), (int(axes[0] * 0.2), int(axes[1] * 0.17)))] = 15.0  # the stomach
        mids = [180.0 - 55.0, 180.0 + 55.0]  # one short rib on each side of the spine
    bone = np.zeros(shape, np.uint8)
    for mid in mids:
        cv2.ellipse(bone, center, (int(axes[0] * 0.92), int(axes[1] * 0.92)), angle, mid - 6, mid + 6, 1,
                    max(3, axes[1] // 25))
    spine = disc(at(180, 0.8), (max(4, axes[1] // 10),) * 2)
    shadow = np.zeros(shape, bool)
    n, pieces = cv2.connectedComponents(bone)
    for piece in [pieces == k for k in range(1, n)] + [spine]:  # the beam runs down the frame
        ys, xs = np.nonzero(piece)
        for x in np.unique(xs):
            shadow[ys[xs == x].max() + 1:, x] = True
    img[shadow & (body | wall)] *= 0.45
    img[bone > 0] = 200.0
    img[spine] = 230.0
    img = np.clip(cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5) * gain + offset, 0, 255)
    if fov is not None:
        img[~fov] = 0
    return img.astype(np.uint8), body.astype(np.uint8)


@pytest.mark.parametrize("fov", ["none", "sector", "linear"])
@pytest.mark.parametrize("gain, offset", [(0.5, 0.0), (1.0, 0.0), (1.4, 0.0), (0.8, 45.0)])
def test_a_thorax_whose_heart_does_not_show_is_known_by_its_ribs(fov, gain, offset):
    """A section of the thorax whose heart does not show (no chambers to read) is as round and as
    large as the abdomen's and read a plain AC with a GA (an independent audit: 'AC 253.6 mm, GA 29w
    4d' on a chest with a dozen rib echoes round it). Its ribs lie round much of it, each a bright
    echo just inside the edge with a shadow down the beam; the abdomen's section shows the spine
    and one short rib each side, all at its back, and stays an abdomen. Dark, normal, bright and
    washed-out displays, three fields of view."""
    fov = _ribbed_fov(fov)
    px = 0.3
    for seed in range(3):
        thorax, mask = _ribbed("thorax", gain=gain, offset=offset, seed=seed, fov=fov)
        assert fc.mask_shape(mask, fov, px).plausible  # the shape alone cannot tell
        shape = fc.mask_shape(mask, fov, px, grey=thorax)
        assert not shape.plausible and shape.reason == fc.RIB_REASON and shape.quality == 0.0, (seed, shape.reason)
        assert shape.problem == fc.RIB_REASON
        abdomen, mask = _ribbed("abdomen", gain=gain, offset=offset, seed=seed, fov=fov)
        a = fc.mask_shape(mask, fov, px, grey=abdomen)
        assert a.plausible and a.reason == "", (seed, a.reason)


@pytest.mark.parametrize("axes, angle", [((120, 106), 20.0), ((110, 100), -50.0), ((128, 112), 75.0)])
def test_an_abdomen_with_a_short_rib_each_side_is_no_thorax(axes, angle):
    """The abdomen's section at the AC's plane shows the spine's bright echo and a short rib on each
    side of it, each with its shadow: bright echoes at its rim, but all at its back, where a
    thorax's lie all round it. Drawn at three sizes and angles and 20 seeds, every one stays a
    plain abdomen; the rib check needs its echoes spread round the outline."""
    for seed in range(20):
        abdomen, mask = _ribbed("abdomen", axes=axes, angle=angle, seed=seed)
        a = fc.mask_shape(mask, None, 0.3, grey=abdomen)
        assert a.plausible and a.reason == "", (seed, a.reason)
        assert not fc.rib_ring(abdomen, None, a.ellipse)


@pytest.mark.parametrize("size", [(8.6, 8.0), (9.0, 9.0), (4.0, 4.0), (17.0, 15.0)])
def test_a_mask_of_a_few_pixels_has_no_midline_to_read_and_no_error(size):
    """A 9-pixel disc judged on a small frame without a pixel size (a plausible shape where the
    field of view is small) raised an IndexError from the midline's reading: a traceback in score
    and the window."""
    rng = np.random.default_rng(1)
    grey = rng.integers(60, 120, (64, 64)).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    cv2.ellipse(mask, ((32, 32), size, 0), 1, -1)
    fc.mask_shape(mask, None, None, grey)  # no error
    assert fc.midline_lead(grey, None, ((32.0, 32.0), size, 0.0)) < fc.MIDLINE_LEAD
