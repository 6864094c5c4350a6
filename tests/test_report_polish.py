"""Review report details: verdict markers of neighbouring frames stay apart, thumbnails show
the AC ellipse (and the AC where the spacing is known), the models line is never cut."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np

from fetaliqa_core.review import ReviewStore
from fetaliqa_core.review.figures import ELLIPSE_BGR, LABEL_BGR, draw_quality_curve, overlay_thumbnail
from fetaliqa_core.review.report import _bundle_text, build_report

N, H, W = 30, 96, 128


def test_verdict_markers_of_neighbouring_frames_do_not_overlap():
    n = 400
    p = np.linspace(0, 1, n)
    verdicts = {100: "optimal", 101: "not_usable", 102: "suboptimal"}  # ~3 px apart on the axis
    img = draw_quality_curve(n, p, p, 0.5, [(0, n)], None, verdicts)
    blobs = 0
    for label in verdicts.values():
        hit = np.all(img[36:110] == LABEL_BGR[label], axis=2).astype(np.uint8)  # below the legend
        n_comp, _ = cv2.connectedComponents(hit)
        blobs += n_comp - 1
        assert n_comp - 1 == 1, label  # each marker whole, none hidden under another
    assert blobs == 3


def test_thumbnail_draws_the_ellipse():
    frame = np.full((100, 200), 60, np.uint8)
    t = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    ellipse = np.stack([100 + 40 * np.cos(t), 50 + 25 * np.sin(t)], axis=1)
    thumb = overlay_thumbnail(frame, None, width=100, ellipse=ellipse)
    near = np.abs(thumb.astype(int) - np.array(ELLIPSE_BGR)).sum(axis=2) < 60
    assert near[:, 65:].any() and near[:, :35].any()  # both sides of the ellipse
    assert thumb[25, 50].tolist() == [60, 60, 60]  # the inside is left as it was


def test_report_thumbnails_carry_the_ac_ellipse(tmp_path):
    s = ReviewStore(tmp_path / "r.sqlite3")
    frames = np.full((N, H, W), 40, np.uint8)
    sid = s.add_sweep("c3" * 32, "/data/case.mha", N, [(0, N)], (0.3, 0.3))
    p = np.zeros(N, np.float32)
    p[10] = 0.9
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (W // 2, H // 2), (30, 20), 0, 0, 360, 1, -1)
    s.add_model_run(sid, {"description": "a classifier " + "long-name-" * 12 + "end"}, p, p,
                    (p * 900).astype(int), p > 0.5, chosen_frame=10, ac_mm=None, masks={10: mask})
    page = build_report(s, tmp_path / "r.html", sweep_loader=lambda path: frames).read_text(encoding="utf-8")
    blobs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    thumb = cv2.imdecode(np.frombuffer(base64.b64decode(blobs[1]), np.uint8), cv2.IMREAD_COLOR)
    near = np.abs(thumb.astype(int) - np.array(ELLIPSE_BGR)).sum(axis=2) < 60
    assert near.sum() > 30
    assert re.search(r"AC \d+\.\d mm", page)
    assert "long-name-end" in page  # the models line whole, for the PDF to wrap
    s.close()


def test_models_line_is_not_cut():
    text = _bundle_text({"cls": {"hash": "ab" * 32, "name": "cls"},
                         "description": "demo model (tiny, trained on synthetic sweeps) on CPU (2 threads)"})
    assert "on CPU (2 threads)" in text


def test_scores_beside_their_threshold_get_the_digits_that_tell_them_apart():
    """score printed "p_cls 0.672" for a frame at 0.6723 against a threshold of 0.67; the window,
    the flagged list and the report printed 0.67, which reads as on the threshold."""
    from types import SimpleNamespace

    import numpy as np

    from app.window_tools import fmt_p
    from fetaliqa_core.review.report import _scores

    run = SimpleNamespace(p_cls=np.array([0.6723, 0.91]), p_seg=np.array([0.4996, np.nan]),
                          thresholds=SimpleNamespace(cls=0.67), seg_threshold=0.5)
    assert _scores(run, 0) == "p_cls 0.672 · p_seg 0.4996"
    assert _scores(run, 1) == "p_cls 0.91 · p_seg –"
    assert fmt_p(0.6723, 0.67) == "0.672" and fmt_p(0.6723) == "0.67" and fmt_p(None, 0.67) == "–"
