"""The viewer shows no mm and no GA without a known pixel spacing, takes one from the user, and
labels numbers from the demonstration model beside the measurement."""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
import pytest

from fakes import tiny_sweep
from review_window import answered_window
from fetaliqa_core.io import SPACING_NONE


@pytest.fixture
def window(qtbot, monkeypatch):
    return answered_window(qtbot, monkeypatch, 1000, 700)


def _scored(qtbot, win, sweep):
    win.set_sweep(sweep, score=True)
    qtbot.waitUntil(lambda: win.model.results is not None and win.model.results.complete
                    and not win.scoring.running, timeout=30000)
    qtbot.waitUntil(lambda: "AC" in win.status_ac.text() and "–" not in win.status_ac.text(), timeout=5000)


def test_unknown_spacing_no_mm_until_the_user_sets_it(qtbot, window):
    sweep = dataclasses.replace(tiny_sweep(2, 10, height=72, width=96), spacing_mm=(1.0, 1.0),
                                spacing_source=SPACING_NONE, spacing_note="the file records no pixel spacing")
    _scored(qtbot, window, sweep)
    text = window.status_ac.text()
    assert "not shown" in text and not re.search(r"\d mm", text) and "GA" not in text, text
    assert "pixel spacing unknown" in window.status_ac.toolTip() and "pixel spacing" in text
    assert window.act_spacing.text().startswith("Set pixel spacing")
    from app import window_tools

    assert window_tools.ask_spacing(window, 7.0) is False  # implausible: refused, nothing changes
    assert "not shown" in window.status_ac.text()
    assert window_tools.ask_spacing(window, 0.28) is True
    qtbot.waitUntil(lambda: " mm" in window.status_ac.text(), timeout=5000)
    assert window.model.sweep.spacing_source == "user"
    corner = window_tools.corner_texts(window.model, 0, 0, "")[1]  # the source in words, not the files' key
    assert "0.28 mm · set by you" in corner and "user" not in corner, corner


def test_set_pixel_spacing_keeps_pixels_that_are_not_square(qtbot, window, monkeypatch):
    """On a sweep calibrated 0.3 mm wide x 0.4 mm high the dialog showed "Now 0.3 mm per pixel" and
    OK on what it offered made the pixels square: the AC fell 14 % and a GA appeared."""
    from PySide6.QtWidgets import QInputDialog

    from app import window_tools
    from fetaliqa_core.io import SPACING_FROM_US_REGION

    sweep = dataclasses.replace(tiny_sweep(2, 10, height=72, width=96), spacing_mm=(0.4, 0.3),
                                spacing_source=SPACING_FROM_US_REGION)
    _scored(qtbot, window, sweep)
    seen = {}

    def keep_what_is_offered(parent, title, label, *args, text="", **kwargs):
        seen["label"], seen["text"] = label, text
        return text, True

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(keep_what_is_offered))
    monkeypatch.setattr(QInputDialog, "getDouble", staticmethod(  # (a dialog of one number offers one)
        lambda parent, title, label, value, *a, **k: keep_what_is_offered(parent, title, label, text=value)))
    assert window_tools.ask_spacing(window) is False  # kept as it is: nothing set, still the file's own
    assert "0.3 x 0.4 mm (width x height)" in seen["label"] and seen["text"] == "0.3x0.4"
    assert window.model.sweep.spacing_mm == pytest.approx((0.4, 0.3))
    assert window.model.sweep.spacing_source == SPACING_FROM_US_REGION
    # one value would make them square: refused (asking for both); two are taken, width x height
    assert window_tools.ask_spacing(window, 0.3) is False
    assert window.model.sweep.spacing_mm == pytest.approx((0.4, 0.3))
    assert window_tools.ask_spacing(window, "0.3 x 0.45") is True
    assert window.model.sweep.spacing_mm == pytest.approx((0.45, 0.3))


def test_demo_numbers_are_labelled_beside_the_measurement(qtbot, window):
    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    assert "clinical" not in window.status_ac.text()
    window.model.provenance = {"demo": True, "notice": "Demonstration model trained on synthetic data only: "
                                                       "not for clinical use"}
    window.update_case_status()
    assert "demo, not clinical" in window.status_ac.text()
    assert "synthetic data" in window.status_ac.toolTip()
    # on every frame, not only the one with a measurement (an exported frame showed the demo's
    # scores and mask without a word)
    best = set(window.model.last_flags.best) | {window.model.last_flags.chosen}
    window.model.set_frame(next(f for f in range(window.model.n_frames) if f not in best))
    window._update_frame_text()
    assert "not for clinical use" in window.frame_view.corner_tr.text()


def test_pixels_that_are_not_square_are_drawn_in_their_shape(qtbot, window):
    """A sweep with 0.3 mm rows and 0.1 mm columns was drawn with square pixels: an abdomen wider
    than tall in mm looked taller than wide. Drawn in mm now; square again where no size is known."""
    sweep = dataclasses.replace(tiny_sweep(2, 10, height=72, width=96), spacing_mm=(0.3, 0.1))
    _scored(qtbot, window, sweep)
    view = window.frame_view.view
    sx, sy = view.viewPixelSize()  # data units per screen pixel, x and y
    assert sy / sx == pytest.approx(0.1 / 0.3, rel=0.02)
    window._update_frame_text()
    assert "pixel 0.1 x 0.3 mm (w x h)" in window.frame_view.corner_tl.text()  # the order said, in short
    # a long pixel size gives its source a line of its own: the fixed corner cut it to "· file hea"
    window.set_sweep(dataclasses.replace(sweep, spacing_mm=(0.471115, 0.391266)), score=False)
    window._show_frame(0)
    window._update_frame_text()
    lines = window.frame_view.corner_tl.text().split("<br>")
    pixel = next(k for k, line in enumerate(lines) if "pixel 0.391266 x 0.471115 mm (w x h)" in line)
    assert sweep.spacing_source in lines[pixel + 1]
    width = window.frame_view.corner_tl.fontMetrics()
    from PySide6.QtGui import QTextDocument

    for line in lines:
        doc = QTextDocument()
        doc.setHtml(line)
        assert width.horizontalAdvance(doc.toPlainText()) <= window.frame_view.corner_tl.width(), line
    window.set_sweep(dataclasses.replace(sweep, spacing_source=SPACING_NONE, spacing_note="none"), score=False)
    window._show_frame(0)
    sx, sy = view.viewPixelSize()
    assert sy / sx == pytest.approx(1.0, rel=0.02)


def test_a_choice_resting_on_one_model_is_said_in_the_window_as_score_says_it(qtbot, window):
    """`score` says when the models disagree on every frame and the choice rests on one; the
    window's answer did not."""
    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    window.model.set_threshold(0.999)  # the classifier calls no frame: the segmenter's masks alone
    window.refresh()
    window.update_case_status()
    note = window.model.assessment.summary.choice_note
    assert window.model.flags.chosen is not None and note and "chosen on one model" in window.status_ac.text() and note in window.status_ac.toolTip()
    # said as a choice on one model, not as "models disagree", which read against a flagged panel
    # listing "Models disagree (0)" where the calls agreed but no backed mask was an abdomen's
    assert "no frame is backed by both models" in note and " · models disagree" not in window.status_ac.text()


def test_an_answer_from_part_of_the_sweep_says_so(qtbot, window):
    """After scoring was stopped the status bar gave the chosen frame and its AC as if the whole
    sweep had been scored; the frames not scored may hold a better one."""
    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    full = window.model.results
    chosen = window.model.flags.chosen
    assert chosen is not None and f"/{full.n_frames} scored" not in window.status_ac.text()
    half = np.arange(full.n_frames // 2) if chosen < full.n_frames // 2 else np.arange(full.n_frames // 2, full.n_frames)
    window.model.results = full.only(half)  # as a stopped run leaves them
    window.model._flags_dirty, window.model.results_version = True, window.model.results_version + 1
    window.refresh()
    part = window.model.results
    assert window.model.flags.chosen is not None
    assert f"{part.n_done}/{part.n_frames} scored" in window.status_ac.text()
    assert "Resume" in window.status_ac.toolTip()
    # the shorter forms of a narrow window keep that qualifier longer than "chosen frame N:"
    shorter = window.status_ac._shorter
    assert f"{part.n_done}/{part.n_frames} scored" in shorter[0] and not shorter[0].startswith("chosen frame")
    # a doubt's few words go before the qualifier does (at 1024 px they pushed "10/20 scored" out)
    from fetaliqa_core.analysis import frame_choice as fc
    from fetaliqa_core.analysis.units import read_ac

    doubtful = read_ac(270.1, mask_problem=f"{fc.FLATTENED_REASON}; and {fc.OVAL_REASON.format(ratio='0.62')}")
    window.model.reading = lambda ac, frame: doubtful
    window.update_case_status()
    forms = [window.status_ac.text(), *window.status_ac._shorter]
    assert "(doubtful: flattened, oval outline)" in forms[0]
    kept = next(i for i, f in enumerate(forms) if "(doubtful)" in f)  # the first form without the words
    assert all(f"{part.n_done}/{part.n_frames} scored" in f for f in forms[:kept + 1])


def test_a_narrow_window_keeps_the_demo_notice_of_the_answer(qtbot, window):
    """At the smallest window size the status bar's answer was cut at its end: '· demo,' without
    'not clinical'. It shows its longest shorter form that fits now."""
    from PySide6.QtWidgets import QApplication, QLabel

    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    window.model.provenance = {"demo": True, "notice": "Demonstration model: not for clinical use"}
    window.show()
    from app.main_window import MIN_SIZE

    window.resize(*MIN_SIZE)  # (the smallest on a screen of 1024 x 768 or more: this one is 800 x 800)
    window.update_case_status()
    QApplication.processEvents()
    shown = QLabel.text(window.status_ac)  # what is drawn (text() is the whole answer)
    whole = window.status_ac.text()
    assert whole.endswith("demo, not clinical") and shown != whole  # (the whole does not fit at this size)
    # why the AC is doubtful, in a few words (it said "doubtful" and never why, outside the tooltip)
    assert re.search(r"\(doubtful: [a-z ,']+\)", whole), whole
    # a shorter form: the asides go, the AC's number and the notice stay (elided in the middle,
    # the number itself was cut: 'AC 176.…ful)')
    number = re.search(r"AC \d+\.\d mm", whole).group(0)
    assert number in shown and shown.endswith("demo, not clinical") and "…" not in shown, shown


def test_a_wide_window_shows_the_whole_answer_and_the_threshold(qtbot, window):
    """Eliding labels cut their own text at the width they asked for (the answer read 'AC 262.6
    m…ubtful)' at 1600 px), and the threshold label never grew past its 40 px minimum, so a
    threshold the user changed was shown nowhere in the status bar."""
    from PySide6.QtWidgets import QApplication, QLabel

    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    window.model.provenance = {"demo": True, "notice": "Demonstration model: not for clinical use"}
    window.show()
    window.resize(1600, 900)
    window.update_case_status()
    window.model.set_threshold(0.42)
    for _ in range(5):
        QApplication.processEvents()
    assert QLabel.text(window.status_ac) == window.status_ac.text()
    assert QLabel.text(window.status_threshold) == window.status_threshold.full_text()
    assert "0.42" in window.status_threshold.full_text()


def test_setting_the_pixel_spacing_judges_the_masks_again_off_the_windows_thread(qtbot, window, monkeypatch):
    """View > Set pixel spacing froze the window 1.8 s on a full case: the next refresh judged every
    mask again (its size in mm) on the window's thread. Judged on a thread of their own now, while
    the answer keeps its last values; the answer then follows the new size."""
    import threading

    from app import window_tools
    from fetaliqa_core.analysis import frame_choice

    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    before = window.status_ac.text()
    where = []
    real = frame_choice.mask_shape

    def judged(*args, **kwargs):
        where.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.02)  # (a full case's pace: the answer is seen while it is held)
        return real(*args, **kwargs)

    monkeypatch.setattr(frame_choice, "mask_shape", judged)
    assert window_tools.ask_spacing(window, 0.4) is True
    # while held, no reading: the AC measured with the new size beside the old size's doubt read as
    # an answer ("AC 96.1 mm (doubtful: implausible size)", plain once judged)
    assert window.model.answer_held
    window.update_case_status()
    assert "judged again for the new pixel size" in window.status_ac.text() and "mm" not in window.status_ac.text()
    qtbot.waitUntil(lambda: not window.model.answer_held, timeout=20000)
    window.refresh()
    assert window.status_ac.text() != before
    assert where and not any(where)  # judged, and never on the window's thread
    assert window.model.assessment.summary.spacing_mm == (0.4, 0.4)


@pytest.mark.parametrize("size", [(1366, 768), (1024, 600)])
def test_a_changed_threshold_stays_readable_as_changed_at_laptop_widths(qtbot, window, size):
    """At 1366 x 768 the status bar showed a changed threshold, "threshold 0.90 (model: 0.67)", as
    nothing (the whole or nothing, and the answer took the room), and the curve's line said "p_cls
    threshold 0.90" without the models' own."""
    from PySide6.QtWidgets import QApplication, QLabel

    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    window.model.provenance = {"demo": True, "notice": "Demonstration model: not for clinical use"}
    window.show()
    window.resize(*size)
    window.update_case_status()
    own = window.model.thresholds.model
    window.model.set_threshold(0.9)
    for _ in range(5):
        QApplication.processEvents()
    shown = QLabel.text(window.status_threshold)
    assert "0.90" in shown and f"(model: {own:.2f})" in shown, shown
    assert window.curve.threshold.label.toPlainText().endswith(f"threshold 0.90 (model: {own:.2f})")
    assert QLabel.text(window.status_frame).startswith("sweep 1")


def test_the_curve_shows_no_threshold_number_before_the_models_are_known(qtbot):
    """Before the models loaded the curve's line read "threshold 0.50", a threshold of no model
    (the demo model's is 0.67)."""
    import re

    from app.main_window import MainWindow
    from app.settings import AppSettings
    from fakes import fake_models

    win = MainWindow(settings=AppSettings())
    qtbot.addWidget(win)
    assert not re.search(r"\d", win.curve.threshold.label.toPlainText())
    win.use_models(fake_models())
    win._update_threshold_label()
    assert re.search(r"threshold \d\.\d\d$", win.curve.threshold.label.toPlainText())



def test_the_empty_curve_draws_no_threshold_line_before_a_model_is_loaded(qtbot):
    """The empty window's curve drew its threshold line at 0.5, a threshold of no model (the demo
    model's is 0.67): no line is drawn until the models' own is known."""
    from app.main_window import MainWindow
    from app.settings import AppSettings
    from fakes import fake_models

    win = MainWindow(settings=AppSettings())
    qtbot.addWidget(win)
    assert not win.curve.threshold.isVisible()
    win.use_models(fake_models())
    win._update_threshold_label()
    assert win.curve.threshold.isVisible()


@pytest.mark.parametrize("value", [0.9, 0.85, 0.6, 0.5, 0.3, 0.1])
def test_the_threshold_words_are_never_drawn_over_the_sweeps_names(qtbot, window, value):
    """At 0.90 the line's words ("p_cls threshold 0.90 (model: 0.67)") sat above it, across the
    sweep names at the top of the bands ("6 · sagittal"). They go below the line there, and stay
    above it lower down; the segmenter's fixed line's words (below 0.5) were drawn over them with
    a threshold under 0.5. (A line above ~0.92 runs through the names itself.)"""
    from PySide6.QtCore import QPointF
    from PySide6.QtWidgets import QApplication

    _scored(qtbot, window, tiny_sweep(6, 10, height=72, width=96))
    window.show()
    window.resize(1366, 768)
    window.model.set_threshold(value)
    for _ in range(5):
        QApplication.processEvents()
    curve = window.curve
    words = curve.threshold.label.sceneBoundingRect()
    assert words.width() > 0
    for name in curve._labels:
        assert not words.intersects(name.sceneBoundingRect()), (value, name.toPlainText())
    at = curve.vb.mapViewToScene(QPointF(0, value)).y()
    seg_words = curve.seg_line.label.sceneBoundingRect()
    if value > curve.WORDS_BELOW_ABOVE:
        assert words.top() >= at - 1
    else:
        assert words.bottom() <= at + 1
        assert not words.intersects(seg_words)


def _curve_names_shown(qtbot, window, sweep):
    """``sweep`` scored and shown at 1280 x 720: the curve's plot rectangle and each sweep name's,
    in scene coordinates."""
    from PySide6.QtWidgets import QApplication

    window.set_sweep(sweep, score=True)
    qtbot.waitUntil(lambda: window.model.results is not None and window.model.results.complete
                    and not window.scoring.running, timeout=30000)
    window.show()
    window.resize(1280, 720)
    for _ in range(5):
        QApplication.processEvents()
    curve = window.curve
    return curve.vb.sceneBoundingRect(), [name.sceneBoundingRect() for name in curve._labels]


def test_a_one_frame_sweep_s_name_on_the_curve_lies_inside_the_plot(qtbot, window):
    """A one-frame sweep's name was placed one frame into its band, which is the plot's right edge:
    only a clipped "s" of "sweep 1" showed there. Names now start at their band's left edge."""
    plot, names = _curve_names_shown(qtbot, window, tiny_sweep(1, 1, height=72, width=96))
    (rect,) = names
    assert plot.left() - 1 <= rect.left() and rect.right() <= plot.right() + 1, (rect, plot)


def test_a_one_frame_last_sweep_s_name_on_the_curve_lies_inside_the_plot(qtbot, window):
    """A one-frame last sweep after longer ones had its name start at its band, the plot's right
    edge, and run past it. A short last band's name ends at the plot's edge."""
    sweep = tiny_sweep(3, 20, height=72, width=96)
    sweep = dataclasses.replace(sweep, frames=sweep.frames[:41], sweep_ranges=[(0, 20), (20, 40), (40, 41)])
    plot, names = _curve_names_shown(qtbot, window, sweep)
    rect = names[-1]
    assert plot.left() - 1 <= rect.left() and rect.right() <= plot.right() + 1, (rect, plot)


def test_a_cascade_frame_the_teacher_did_not_rescore_labels_its_scores_as_the_student_s(qtbot, window):
    """In the cascade window a frame the teacher never re-scored showed the student's numbers as
    "classifier p_cls 0.57", where the classifier itself (the teacher) scores 0.71: the label
    gave a student's number to the model that calls the frame."""
    from app import window_tools

    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    m = window.model
    confirmed = np.ones(m.n_frames, dtype=bool)
    confirmed[3] = False
    m.confirmed = confirmed  # as a cascade leaves it: frame 3 holds the student's scores only
    m.set_frame(3)
    plain, _, right, _ = window_tools.corner_texts(m, 3, 0, "")
    assert "student p_cls" in right and "student p_seg" in right and "not re-scored by the teacher" in right
    assert "classifier p_cls" not in right and plain.startswith("student ")
    m.set_frame(4)
    plain, _, right, _ = window_tools.corner_texts(m, 4, 0, "")  # re-scored: the models' own
    assert "classifier p_cls" in right and "student" not in right and "student" not in plain
    m.confirmed = None  # no cascade: the models' own everywhere
    assert "classifier p_cls" in window_tools.corner_texts(m, 3, 0, "")[2]


def test_a_student_scoring_alone_gives_the_window_a_doubtful_ac_saying_to_rescore_with_its_teacher(qtbot, window):
    """A user's own student scored alone showed "AC 97.3 mm · GA 15w 6d" in the window as a plain
    measurement: a student is meant to pick the frames its teacher re-scores."""
    from types import SimpleNamespace

    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    m = window.model
    ac = SimpleNamespace(ac_mm=200.0)  # a plausible AC on an outline nothing else doubts
    m.provenance = {"demo": False}
    assert m.reading(ac).status == "ok" and m.reading(ac).ga_text
    m.provenance = {"demo": False, "student_alone": True}
    reading = m.reading(ac)
    assert reading.status == "doubtful" and not reading.ga_text and "--cascade" in reading.note
    assert reading.short(why=True) == "AC 200.0 mm (doubtful: student alone)"


def test_an_extrapolated_outline_is_said_wherever_its_ac_is_shown(qtbot, window):
    """An outline the fan's edge cut, its ellipse extrapolated past it: `fetaliqa ac` said "[outline
    cut by the field of view; ellipse extrapolated]", the window showed the number with no word of it
    (the label, the status bar and their tooltips), at the chosen frame and at any best frame."""
    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    m = window.model
    m.provenance = {"demo": True, "notice": "Demonstration model: not for clinical use"}
    chosen = m.flags.chosen
    frames = {f for f in m.last_flags.chosen_best() if f is not None} | {chosen}
    assert len(frames) == 2, frames  # the chosen frame and the other sweep's best
    whole = {f: m.measure_ac(f) for f in frames}
    assert all(a is not None and not a.truncated for a in whole.values())
    # before: a whole outline is not called extrapolated
    m.set_frame(chosen)
    window.update_case_status()
    window._update_ellipse()
    assert "extrapolated" not in window.status_ac.text() + window.frame_view.ellipse_label.textItem.toPlainText()
    for f, a in whole.items():
        m._ac_cache[f] = dataclasses.replace(a, truncated=True)
    window.update_case_status()
    forms = [f for f in window.status_ac.forms() if re.search(r"\d mm", f)]
    assert len(forms) >= 6
    for form in forms:  # every form with the number a narrow window may show keeps it
        assert "ellipse extrapolated" in form, form
    assert "outline cut by the field of view; ellipse extrapolated" in window.status_ac.toolTip()
    for f in sorted(frames):  # the chosen frame, and the other sweep's best scrubbed to
        m.set_frame(f)
        window._update_ellipse()
        label = window.frame_view.ellipse_label
        assert label.isVisible()
        text = label.textItem.toPlainText()
        assert "ellipse extrapolated" in text and "not for clinical use" in text, text
        assert "outline cut by the field of view; ellipse extrapolated" in label.toolTip()
    # the user's own models: the number is not doubted for it, but the caveat is still said
    m.provenance = {}
    m._flags_dirty = True
    window.update_case_status()
    assert "ellipse extrapolated" in window.status_ac.text() and "outline cut by" in window.status_ac.toolTip()


def test_the_answer_is_never_shown_with_part_of_its_number(qtbot, window):
    """At 800 x 600 the status bar's answer read "AC 2…" (of 265.9 mm), and a little wider
    "AC 31.8 mm (…", without its doubt: one of its forms is shown whole, the last without the
    number (the whole answer then heads its tooltip), and no elided label cuts a number."""
    from PySide6.QtWidgets import QApplication, QLabel

    from app.window_chrome import ElidedLabel

    _scored(qtbot, window, tiny_sweep(2, 10, height=72, width=96))
    window.model.provenance = {"demo": True, "notice": "Demonstration model: not for clinical use"}
    window.show()
    window.update_case_status()
    forms = window.status_ac.forms()
    number = re.search(r"AC \d+\.\d mm", forms[0]).group(0)
    for size in ((800, 600), (900, 600), (1024, 600), (1600, 900)):
        window.resize(*size)
        for _ in range(5):
            QApplication.processEvents()
        shown = QLabel.text(window.status_ac)
        assert shown in forms, (size, shown)  # (never nothing: room is kept for the last form)
        if number not in shown:
            assert window.status_ac.toolTip().splitlines()[0] == forms[0]
    for width in range(30, 320, 3):  # label by label: a number is shown whole or not at all
        window.status_ac.resize(width, 20)
        shown = QLabel.text(window.status_ac)
        assert shown in forms or shown == "", (width, shown)
        label = ElidedLabel("AC 265.9 mm (doubtful) · frame 1234 of 0–5000")
        label.resize(width, 20)
        label.show()
        words = set(label.full_text().split())
        for word in QLabel.text(label).replace("…", " ").split():
            assert word in words or not any(c.isdigit() for c in word), (width, QLabel.text(label))
