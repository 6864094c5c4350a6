"""What the frame view draws, checked against the frame's own geometry: the model's mask placed
exactly over the frame, the whole frame in view after Fit whatever its shape, and the AC's label
whole inside the view."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from PySide6.QtWidgets import QApplication

from fetaliqa_core.preprocess import pad_geometry


def _sizes():
    """Frame sizes of every shape: the widths the audit found stretched (300, 600, 1200, 2400),
    odd and prime sides, portraits, strips, and a spread of others."""
    rng = np.random.default_rng(7)
    sizes = {(h, w) for w in (300, 600, 1200, 2400, 301, 224, 225, 448, 997) for h in (1, 2, 150, 224, 299, 900)}
    sizes |= {(w, h) for h, w in list(sizes)}
    sizes |= {(int(h), int(w)) for h, w in rng.integers(1, 3000, size=(400, 2))}
    return sorted(sizes)


@pytest.mark.parametrize("mask_size", [224, 256, 7])
def test_the_mask_is_placed_exactly_over_the_frame(mask_size):
    """The part of the model's square mask over the frame, and where it is drawn, in the frame's own
    pixels: model pixel k spans k * side / n of the padded square. Computed in floating point, the
    last column of a 300 (600, 1200, 2400...) wide frame came out as 225 of 224: the overlay was
    drawn 1/224 too wide, off the AC's outline by up to a model pixel."""
    from app.frame_view import mask_placement

    for h, w in _sizes():
        rows, cols, rect = mask_placement(h, w, mask_size)
        g = pad_geometry(h, w)
        step = Fraction(g.side, mask_size)  # frame pixels per model pixel
        for sl, start, length, lo, size in ((rows, g.top, h, rect.y(), rect.height()),
                                            (cols, g.left, w, rect.x(), rect.width())):
            assert 0 <= sl.start < sl.stop <= mask_size, (h, w, sl)
            # the first and last model pixels are those the frame's first and last pixels lie in
            assert sl.start == int(Fraction(start) / step), (h, w, sl)
            assert (sl.stop - 1) * step < start + length <= sl.stop * step, (h, w, sl)
            # drawn where those model pixels lie, at one model pixel's size each
            assert lo == pytest.approx(float(sl.start * step - start), abs=1e-9), (h, w)
            assert size == pytest.approx(float((sl.stop - sl.start) * step), rel=1e-12), (h, w)
            assert lo <= 1e-9 and lo + size >= length - 1e-9


@pytest.mark.parametrize("shape", [(900, 1200), (600, 600), (160, 1200), (301, 300), (1200, 540)])
def test_the_overlay_drawn_spans_the_frame_at_the_models_scale(qtbot, shape):
    """The overlay item as drawn: each model pixel side / 224 frame pixels wide, covering the frame."""
    from app.frame_view import FrameView

    view = FrameView()
    qtbot.addWidget(view)
    view.set_frame(np.zeros(shape, np.uint8))
    view.set_mask(np.full((224, 224), 3, np.uint8))
    drawn = view.overlay.mapRectToParent(view.overlay.boundingRect())
    h, w = shape
    step = max(h, w) / 224
    image = view.overlay.image
    assert drawn.width() / image.shape[1] == pytest.approx(step, rel=1e-9)
    assert drawn.height() / image.shape[0] == pytest.approx(step, rel=1e-9)
    assert -step < drawn.left() <= 1e-9 and w - 1e-9 <= drawn.right() < w + step
    assert -step < drawn.top() <= 1e-9 and h - 1e-9 <= drawn.bottom() < h + step


def _shown(view, w, h):
    """The share of the frame's width and height in view, and whether it fills the view along one
    side (not shown small)."""
    (x0, x1), (y0, y1) = view.view.viewRange()
    share = ((min(x1, w) - max(x0, 0)) / w, (min(y1, h) - max(y0, 0)) / h)
    fills = min((x1 - x0) / w, (y1 - y0) / h) == pytest.approx(1.0, abs=0.01)
    return share, fills


@pytest.mark.parametrize("spacing", [None, (0.3, 0.1), (0.1, 0.3)])
def test_fit_shows_the_whole_frame_whatever_its_shape_and_the_views(qtbot, spacing):
    """Tall portraits (1920 x 886, 2400 x 1080) and strips (160 x 1200) were shown zoomed in to a
    fifth of the frame in a wide window, and Fit could not show more: the view was held within a
    frame's width beside it, less than a tall frame needs in a wide view."""
    from app.frame_view import FrameView

    view = FrameView()
    qtbot.addWidget(view)
    view.set_pixel_aspect(spacing)
    for size in ((1518, 718), (398, 334), (300, 900), (1200, 150)):
        view.resize(*size)
        view.show()
        QApplication.processEvents()
        for h, w in ((562, 744), (1000, 700), (1920, 886), (2400, 1080), (160, 1200), (200, 800), (120, 1200),
                     (1200, 120)):
            view.set_frame(np.zeros((h, w), np.uint8))  # shown whole as it opens
            QApplication.processEvents()
            share, fills = _shown(view, w, h)
            assert share == (1.0, 1.0) and fills, (size, (h, w), share, view.view.viewRange())
    # the window resized about a frame, then Fit (View > Fit, a double-click): whole again
    for size in ((1600, 300), (300, 1200), (800, 600)):
        view.resize(*size)
        QApplication.processEvents()
        view.view.autoRange(padding=0.0)
        QApplication.processEvents()
        share, fills = _shown(view, 120, 1200)  # (the last frame: 1200 high, 120 wide)
        assert share == (1.0, 1.0) and fills, (size, share, view.view.viewRange())


@pytest.mark.parametrize("width", [700, 398, 260, 150])
def test_the_ac_label_keeps_its_units_and_notice_whole_in_a_narrow_view(qtbot, width):
    """At 800 x 600 the label (498 px) was moved into the 398 px view but not fitted: it read
    "... demo model, not for", "clinical use" cut off at the view's edge. It is split into its
    parts, made smaller, and last wrapped between words: the AC with its unit and the notice whole."""
    from app.frame_view import FrameView

    view = FrameView()
    qtbot.addWidget(view)
    view.resize(width, 334)
    view.show()
    view.set_frame(np.zeros((562, 744), np.uint8))
    QApplication.processEvents()
    t = np.linspace(0, 2 * np.pi, 100)
    text = "AC 265.9 mm (doubtful) · ellipse extrapolated · demo model, not for clinical use"
    view.show_ellipse(np.stack([372 + 150 * np.cos(t), 300 + 120 * np.sin(t)], 1), text)
    QApplication.processEvents()
    label = view.ellipse_label
    shown = label.textItem.toPlainText()
    def words(t):
        return t.replace("\u00a0", " ").replace(" · ", " ").split()

    assert words(shown) == words(text)  # all of it
    # what is drawn: inside the view, lines that break no number from its unit
    box = label.mapRectToScene(label.boundingRect())
    scene = view.view.sceneBoundingRect()
    assert scene.left() - 0.5 <= box.left() and box.right() <= scene.right() + 0.5, (box, scene)
    layout = label.textItem.document().documentLayout()
    assert layout.documentSize().width() <= scene.width() + 0.5
    doc = label.textItem.document()
    lines = []
    block = doc.begin()
    while block.isValid():
        lay = block.layout()
        for i in range(lay.lineCount()):
            line = lay.lineAt(i)
            lines.append(block.text()[line.textStart():line.textStart() + line.textLength()].strip())
        block = block.next()
    assert any(line.replace("\u00a0", " ").startswith("AC 265.9 mm") for line in lines), lines
    assert any(line.replace("\u00a0", " ").endswith("not for clinical use") or "clinical use" == line
               for line in lines), lines
    if width >= 700:
        assert lines == [text]  # (on one line where it fits)
