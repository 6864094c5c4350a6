"""The viewer's state without Qt: navigation, overlay, cine, results, flags, review session."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import tiny_sweep
from app.viewer_model import PAGE_STEP, ViewerModel
from fetaliqa_core.engine import BatchResult


def _batch(idx, p_cls, p_seg=None, masks=None, n_total=60, n_done=None) -> BatchResult:
    idx = np.asarray(idx, dtype=np.int64)
    n = len(idx)
    p_cls = np.asarray(p_cls, np.float32)
    if p_seg is None:
        p_seg = p_cls.copy()
    p_seg = np.asarray(p_seg, np.float32)
    if masks is None:
        masks = [np.zeros((224, 224), np.uint8) for _ in range(n)]
    area = np.array([int((m > 0).sum()) for m in masks], np.int32)
    return BatchResult(idx, p_cls, p_seg, np.full(n, np.nan, np.float32), area, masks,
                       n_done if n_done is not None else n, n_total, 10.0)


@pytest.fixture
def model():
    m = ViewerModel()
    m.set_sweep(tiny_sweep(n_sweeps=3, per_sweep=20, height=48, width=64))
    return m


def test_navigation_clamps_and_emits_once_per_change(model):
    seen = []
    model.events.frame.connect(seen.append)
    model.step(1)
    model.step(-5)  # clamps at 0
    model.page(1)
    model.end()
    model.end()  # no change, no event
    model.home()
    model.set_frame(1000)
    assert seen == [1, 0, PAGE_STEP, 59, 0, 59]
    assert model.frame == 59
    assert model.sweep_index() == 2
    assert model.sweep_index(19) == 0 and model.sweep_index(20) == 1


def test_overlay_toggle_and_opacity_steps(model):
    events = []
    model.events.overlay.connect(lambda: events.append(1))
    model.toggle_overlay()
    assert not model.overlay_visible
    model.set_opacity(0.95)
    model.change_opacity(0.1)
    assert model.opacity == 1.0
    model.change_opacity(-0.3)
    assert model.opacity == pytest.approx(0.7)
    model.set_opacity(-1)
    assert model.opacity == 0.0
    assert len(events) == 5


def test_cine_wraps_and_fps_is_bounded(model):
    model.end()
    model.set_playing(True)
    assert model.playing
    model.tick()
    assert model.frame == 0
    model.set_fps(500)
    assert model.fps == 60.0
    model.set_fps(0)
    assert model.fps == 1.0


def test_results_flags_best_and_flag_navigation(model):
    # Sweep 1: frames 5..8 score high, best 7; sweep 2: 25 high; sweep 3: nothing passes.
    p = np.full(60, 0.1, np.float32)
    p[[5, 6, 7, 8]] = [0.6, 0.8, 0.95, 0.7]
    p[25] = 0.9
    p_seg = p.copy()
    p_seg[40] = 0.9  # segmenter alone likes frame 40: a disagreement
    model.start_results(True, True)
    model.apply_batch(_batch(np.arange(0, 30), p[:30], p_seg[:30], n_done=30))
    assert model.results.n_done == 30
    assert model.scoring.n_done == 30
    fl = model.flags
    assert fl.best[0] == 7 and fl.best[1] == 25 and fl.best[2] is None
    assert fl.candidates == [5, 6, 7, 8, 25]
    model.apply_batch(_batch(np.arange(30, 60), p[30:], p_seg[30:], n_done=60))
    fl = model.flags
    assert 40 in fl.disagreements
    assert fl.best_passes[2] is False and fl.best[2] is not None  # best of sweep 3 fails
    assert fl.chosen == 7

    model.set_frame(0)
    assert model.next_flagged(1) == 5
    model.set_frame(9)
    assert model.next_flagged(1) == 25
    assert model.next_flagged(-1) == 8
    model.set_frame(22)
    assert model.go_to_best() == 25 and model.frame == 25
    model.set_frame(59)
    assert model.next_flagged(1) is None and model.frame == 59

    # A stricter classifier threshold leaves fewer candidates: a candidate is a frame whose p_cls
    # reaches the line (and whose mask the segmenter calls), as the answer's frames are; dragged
    # above every frame's p_cls, none is (the mean of the two scores kept 6, 7 and 25 at 0.99)
    model.set_threshold(0.85)
    assert model.flags.candidates == [7, 25]
    assert model.flags.chosen in (7, 25)
    model.set_threshold(0.99)
    assert model.flags.candidates == []
    assert model.next_flagged(-1) == 40  # (the segmenter's frames the classifier does not call: disagreements)


def test_frame_values_none_until_scored(model):
    assert model.frame_values(3) == {"p_cls": None, "p_seg": None, "p_opt": None, "area": None}
    model.apply_batch(_batch([3], [0.25], [0.4]))
    v = model.frame_values(3)
    assert v["p_cls"] == pytest.approx(0.25) and v["p_seg"] == pytest.approx(0.4) and v["area"] == 0


def test_ac_measured_on_mask_mapped_to_frame():
    m = ViewerModel()
    sweep = tiny_sweep(n_sweeps=1, per_sweep=4, height=224, width=224)
    m.set_sweep(sweep)
    yy, xx = np.mgrid[0:224, 0:224]
    r = 40
    mask = (((yy - 120) ** 2 + (xx - 112) ** 2) <= r * r).astype(np.uint8)
    m.apply_batch(_batch([1], [0.9], [0.9], masks=[mask], n_total=4))
    ac = m.measure_ac(1)
    assert ac is not None
    expected = 2 * np.pi * r * 0.28
    assert ac.ac_mm == pytest.approx(expected, rel=0.05)
    assert m.measure_ac(1) is ac  # cached
    assert m.measure_ac(2) is None  # not scored
    ga = m.gestational_age(ac)
    assert 10 < ga.weeks < 20


def test_threshold_starts_at_the_classifier_bundles_own_and_shows_a_change():
    from types import SimpleNamespace

    m = ViewerModel()
    m.set_sweep(tiny_sweep(n_sweeps=1, per_sweep=10, height=32, width=32))
    seen = []
    m.events.threshold.connect(seen.append)
    models = SimpleNamespace(cls=SimpleNamespace(threshold=0.7), seg=None, describe=lambda: "cls on cpu")
    m.set_models(models)
    assert m.threshold == pytest.approx(0.7) and seen == [pytest.approx(0.7)]
    assert m.thresholds.describe() == "threshold 0.70"
    p = np.array([0.1, 0.65, 0.75, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], np.float32)
    m.apply_batch(_batch(np.arange(10), p, np.full(10, np.nan), n_total=10))
    assert m.flags.candidates == [2, 3]
    m.set_threshold(0.62)
    assert m.thresholds.describe() == "threshold 0.62 (model: 0.70)"
    assert m.flags.candidates == [1, 2, 3]
    summary = m.assessment.summary
    assert summary.threshold == pytest.approx(0.62) and summary.model_threshold == pytest.approx(0.7)
    assert summary.threshold_changed is True
    # Other models start at their own (the window restores a threshold the user set for them).
    m.set_models(SimpleNamespace(cls=SimpleNamespace(threshold=0.4), seg=None, describe=lambda: "other"))
    assert m.threshold == pytest.approx(0.4) and not m.thresholds.changed


# -- review session ------------------------------------------------------------------------

def _scored_model():
    m = ViewerModel()
    m.set_sweep(tiny_sweep(n_sweeps=3, per_sweep=20, height=48, width=64))
    p = np.full(60, 0.1, np.float32)
    p[[5, 6, 7, 25, 26]] = 0.9
    m.apply_batch(_batch(np.arange(60), p, p, n_done=60))
    return m


def test_review_session_records_progress_and_resumes(tmp_path):
    from app.review_session import ReviewSession
    from fetaliqa_core.review import ReviewStore

    db = tmp_path / "reviews.sqlite3"
    m = _scored_model()
    with ReviewStore(db) as store:
        s = ReviewSession(m, store, "alice")
        s.open_sweep()
        assert s.sync_run() is True
        assert s.sync_run() is False  # unchanged results are not stored twice
        s.resume()
        assert m.queue_kind == "candidates"
        assert m.queue == [5, 6, 7, 25, 26]
        assert m.frame == 5
        s.record("optimal", note="clear stomach bubble")
        assert m.frame == 6  # save and next
        s.record("not_usable")
        assert m.review_progress == (2, 5)
        assert m.frame == 7
        s.move(1)
        assert m.frame == 25
        v = store.verdicts(s.sweep_id, "alice")
        assert [(x.frame, x.label) for x in v] == [(5, "optimal"), (6, "not_usable")]
        assert v[0].note == "clear stomach bubble"

    # "Restart": a new model and session on the same sweep resume where alice stopped.
    m2 = _scored_model()
    with ReviewStore(db) as store:
        s2 = ReviewSession(m2, store, "alice")
        s2.open_sweep()
        s2.resume()
        assert m2.frame == 25
        assert m2.verdicts == {5: "optimal", 6: "not_usable"}
        assert m2.review_progress == (2, 5)
        s2.set_queue("unreviewed")
        assert m2.queue == [7, 25, 26]


def test_the_brightness_of_a_sweep_without_a_frame_is_worked_out_once_not_at_every_batch(model, monkeypatch):
    """The answer says why a sweep has no frame (blank or dim frames) from a percentile over its
    frames: it was taken again at every refresh after each batch, on the window's thread, for
    every sweep still without a frame (80 ms a refresh on a full case, a stall every few seconds),
    though the frames never change."""
    from fetaliqa_core.analysis import assessment

    calls = []
    real = np.percentile
    def percentile(a, *args, **kw):
        if np.ndim(a) == 3:  # over whole frames
            calls.append(1)
        return real(a, *args, **kw)

    monkeypatch.setattr(assessment.np, "percentile", percentile)
    model.start_results(True, True)
    for k in range(6):  # low scores: no sweep gets a frame, each one's reason is asked every time
        model.apply_batch(_batch(np.arange(k * 10, k * 10 + 10), np.full(10, 0.05), n_done=(k + 1) * 10))
        assert model.flags.best_passes == [False, False, False]
    assert model.flags.why_none[0]
    assert len(calls) <= len(model.sweep_ranges)


def test_a_pixel_spacing_set_by_the_user_keeps_the_sweeps_content_hash_and_field_of_view(model, monkeypatch):
    """Setting the pixel spacing made a new sweep object and lost what was worked out from its
    pixels: the next refresh hashed every pixel again on the window's thread (0.5-0.9 s on a full
    case), though the hash covers the file's spacing and so stays the same."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.io import Sweep

    before = model.sweep.content_hash
    fov = acouslic.sweep_fov(model.sweep)
    hashed = []
    real = Sweep.content_hash.func
    monkeypatch.setattr(Sweep, "content_hash",
                        __import__("functools").cached_property(lambda s: hashed.append(1) or real(s)))
    Sweep.content_hash.__set_name__(Sweep, "content_hash")
    model.set_spacing(0.3)
    assert model.sweep.spacing_mm == (0.3, 0.3)
    assert model.sweep.content_hash == before and not hashed
    assert acouslic.sweep_fov(model.sweep) is fov
