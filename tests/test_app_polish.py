"""Layout and wording details, pinned: spin-box arrows drawn in a light colour, the status bar
whole at 1280x720, the model label elided with the full text in its tooltip, the sweep's kind
not cut, a sensible curve axis before any sweep, the legend's classes those of the loaded
segmenter, and the flagged panel's and review queue's disagreement counts explained."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QRect
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox

from app.main_window import MainWindow
from app.settings import AppSettings
from app.window_chrome import legend_html, segmenter_labels
from fakes import fake_models, tiny_sweep


@pytest.fixture
def themed():
    """The app's dark theme, as users see it (restored afterwards for the other tests)."""
    from app import theme

    app = QApplication.instance()
    palette, sheet = app.palette(), app.styleSheet()
    theme.apply_dark_theme(app)
    yield
    app.setStyleSheet(sheet)
    app.setPalette(palette)


@pytest.fixture
def win(qtbot, monkeypatch, themed):
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: QMessageBox.Ok))
    w = MainWindow(settings=AppSettings())
    qtbot.addWidget(w)
    w.use_models(fake_models())
    w.resize(1280, 720)
    w.show()
    qtbot.waitExposed(w)
    return w


def _image(widget) -> np.ndarray:
    img = widget.grab().toImage().convertToFormat(QImage.Format_RGB32)
    a = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes())
    return a.reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width(), :3]


def test_spin_box_arrows_are_visible(win):
    """The arrows' area holds light pixels (the style's arrows in the theme's text colour)."""
    from PySide6.QtWidgets import QStyle, QStyleOptionSpinBox

    spin = win.fps_spin
    opt = QStyleOptionSpinBox()
    spin.initStyleOption(opt) if hasattr(spin, "initStyleOption") else opt.initFrom(spin)
    up: QRect = spin.style().subControlRect(QStyle.CC_SpinBox, opt, QStyle.SC_SpinBoxUp, spin)
    assert up.width() > 4 and up.height() > 4
    px = _image(spin)[up.top():up.bottom() + 1, up.left():up.right() + 1].astype(int)
    assert px.max() > 150, "the up arrow is not drawn in a light colour"


def test_status_bar_whole_at_1280x720(win, qtbot):
    win.set_sweep(tiny_sweep(2, 10, 48, 64))
    qtbot.waitUntil(lambda: win.model.results is not None and win.model.results.complete
                    and not win.model.scoring.running, timeout=20000)
    win.refresh()
    QApplication.processEvents()
    sb = win.statusBar()
    # the longest text a run shows (a full case, minutes left) fits the bar as well
    worst = "840 / 840 frames · 10.0/s · 59 min 59 s left"
    assert win.progress.width() >= win.progress.fontMetrics().horizontalAdvance(worst)
    for w in (win.status_frame, win.status_ac, win.status_threshold, win.status_model):
        assert w.isVisible()
        shown = QLabel.text(w)  # (the answer's text() is its longest form: a shorter one may be shown)
        assert shown and w.width() >= w.fontMetrics().horizontalAdvance(shown), (shown, w.width())
    assert "AC " in QLabel.text(win.status_ac)
    bar = win.progress
    assert bar.width() >= bar.fontMetrics().horizontalAdvance(bar.format()), bar.format()
    assert win.cancel_button.geometry().right() <= sb.width()


def test_model_label_elided_with_full_text_in_tooltip(win):
    long = "classifier " + "x" * 120 + " on CPU (2 threads, bf16)"
    win.status_model.set_full_text(long)
    QApplication.processEvents()
    shown = win.status_model.text()
    assert win.status_model.toolTip() == long
    assert shown != long and shown.endswith("…")
    assert win.status_model.fontMetrics().horizontalAdvance(shown) <= win.status_model.width()


def test_model_label_is_short_enough_to_read_whole_with_the_rest_in_its_tooltip():
    """The status bar cut "Model: demo model (tiny, trained on synthetic ." at 1,600 px: it names
    the models, the device and the number format; the whole description is its tooltip."""
    from fetaliqa_core.models.choice import LoadedModels, ModelChoice

    demo = LoadedModels(None, None, ModelChoice(model="demo"), "cpu", "CPU (2 threads, bf16: AVX512_BF16)", "bf16")
    assert demo.short() == "demo · CPU bf16"
    own = LoadedModels(None, None, ModelChoice(cls="/runs/cls/bundle", seg="/runs/seg/bundle", cascade=True),
                       "cuda:0", "cuda:0 (H200)", "bf16")
    assert own.short() == "cls + seg (cascade) · cuda:0 bf16"
    assert "AVX512_BF16" in demo.describe()


def test_sweep_kind_not_cut_in_flagged_panel(win, qtbot):
    win.set_sweep(tiny_sweep(2, 10, 48, 64))
    qtbot.waitUntil(lambda: win.model.results is not None and win.model.results.complete, timeout=20000)
    win.refresh()
    best = win.flagged._groups["best"]
    texts = [best.child(i).text(1) for i in range(best.childCount())]
    assert texts and all(t.endswith(("transverse", "sagittal")) for t in texts), texts
    fm = win.flagged.tree.fontMetrics()
    need = max(fm.horizontalAdvance(t) for t in texts)
    qtbot.waitUntil(lambda: win.flagged.tree.columnWidth(1) >= need, timeout=3000)  # laid out


def test_curve_axis_without_a_sweep(win):
    vb = win.curve.vb
    (x0, x1), _ = vb.viewRange()
    assert x0 >= -1 and 50 <= x1 <= 110  # 0..100 frames, not -400..400
    ax = win.curve.plot.getPlotItem().getAxis("bottom")
    assert not ax.autoSIPrefix and "x0.001" not in ax.labelString()


def test_legend_lists_only_the_loaded_segmenters_classes():
    class Manifest:
        def __init__(self, n):
            self.n_classes = n

    class Seg:
        def __init__(self, n):
            self.manifest = Manifest(n)

    class Models:
        def __init__(self, seg):
            self.seg = seg

    assert segmenter_labels(Models(Seg(3))) == (1, 2)
    assert segmenter_labels(Models(Seg(1))) == (3,)
    assert segmenter_labels(Models(None)) == ()
    three = legend_html(segmenter_labels(Models(Seg(3))))
    assert "optimal" in three and "suboptimal" in three and "abdomen" not in three
    assert "abdomen" in legend_html((3,)) and "optimal" not in legend_html((3,))


def test_window_legend_follows_the_loaded_model(win):
    text = win.legend_label.text()
    n = win.models.seg.manifest.n_classes
    if n == 3:
        assert "suboptimal" in text and "abdomen" not in text
    else:
        assert "abdomen" in text and "suboptimal" not in text
