"""Viewer conventions people expect from medical image viewers: one key table for bindings,
help and README; Up/Down; a go-to-frame box; window/level by right-drag and presets; export
of the current frame; About; a window that fits a 1024x768 screen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAction, QImage, QKeySequence, QShortcut
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app import keymap
from fakes import tiny_sweep
from review_window import answered_window

REPO = Path(__file__).resolve().parents[1]
N = 40


@pytest.fixture
def win(qtbot, monkeypatch):
    w = answered_window(qtbot, monkeypatch, 1100, 760)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=3000)
    w.splitter.setFocus()
    w.set_sweep(tiny_sweep(2, N // 2, height=72, width=96), score=True)
    qtbot.waitUntil(lambda: w.model.results is not None and w.model.results.complete, timeout=20000)
    return w


def _key(w, k, mod=Qt.NoModifier):
    QTest.keyClick(w.splitter, k, mod)
    QApplication.processEvents()


def test_readme_key_list_is_the_key_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert keymap.readme_section(text) == keymap.readme_markdown(), \
        "README's key list is stale: paste the output of `python -m app.keymap`"


def _bound_keys(win) -> list[str]:
    """Every key sequence the window binds: its shortcuts and its actions' (menu entries)."""
    return ([sc.key().toString() for sc in win.findChildren(QShortcut)]
            + [seq.toString() for act in win.findChildren(QAction) for seq in act.shortcuts()])


def test_every_table_key_is_bound_and_in_the_help(win):
    bound = set(_bound_keys(win))
    for row in keymap.KEYMAP:
        assert row.what in keymap.help_html()
        for seq, _ in row.bindings:
            assert QKeySequence(seq).toString() in bound, seq
    with pytest.raises(KeyError, match="review_save"):
        keymap.bind(win, {name: (lambda: None) for name in keymap.actions() - {"review_save"}})


def test_the_menus_show_the_keys_that_work_and_no_key_is_bound_twice(win, monkeypatch):
    """View > Overlay (s), Go to frame… (Ctrl+G), Scoring > Stop scoring… (Esc), File > Export
    frame as PNG… (Ctrl+E) and Help > Keyboard shortcuts (F1) showed no key: the keys were bound
    apart from the menu entries; the flagged and best frame jumps (n / p / b) had no menu entry at
    all. File > Export frame as PNG… itself raised a TypeError (the menu's 'checked' False taken for
    the file's path) and did nothing."""
    from PySide6.QtWidgets import QFileDialog

    shown: dict[str, str] = {}

    def walk(menu) -> None:
        for act in menu.actions():
            if act.menu() is not None:
                walk(act.menu())
            elif not act.isSeparator():
                shown[act.text()] = act.shortcut().toString()

    for top in win.menuBar().actions():
        walk(top.menu())
    assert shown["Overlay"] == "S" and shown["Go to frame…"] == "Ctrl+G" and shown["Stop scoring…"] == "Esc"
    assert shown["Export frame as PNG…"] == "Ctrl+E" and shown["Keyboard shortcuts"] == "F1"
    assert (shown["Next flagged frame"], shown["Previous flagged frame"], shown["Best frame of this sweep"]) == \
        ("N", "P", "B")
    bound = _bound_keys(win)
    assert len(bound) == len(set(bound)), sorted(k for k in bound if bound.count(k) > 1)
    # the keys work as before, through those entries
    m = win.model
    overlay = m.overlay_visible
    _key(win, Qt.Key_S)
    assert m.overlay_visible != overlay and win.act_overlay.isChecked() == m.overlay_visible
    m.set_frame(0)
    m.next_flagged(1)
    flagged = m.frame
    m.set_frame(0)
    _key(win, Qt.Key_N)
    assert m.frame == flagged != 0
    _key(win, Qt.Key_B)
    assert m.frame in m.flags.best
    _key(win, Qt.Key_G, Qt.ControlModifier)
    assert win.frame_box.hasFocus()
    win.splitter.setFocus()
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: asked.append(a[1]) or ("", "")))
    win.act_export_frame.trigger()  # the menu entry
    _key(win, Qt.Key_E, Qt.ControlModifier)
    assert asked == ["Export frame as PNG", "Export frame as PNG"]


def test_up_down_step_frames_and_go_to_box(win, qtbot):
    m = win.model
    m.set_frame(5)
    _key(win, Qt.Key_Up)
    assert m.frame == 6
    _key(win, Qt.Key_Down)
    _key(win, Qt.Key_Down)
    assert m.frame == 4
    # Ctrl+G puts the cursor in the go-to box; typing a number and Enter jumps there.
    _key(win, Qt.Key_G, Qt.ControlModifier)
    assert win.frame_box.hasFocus()
    QTest.keyClicks(win.frame_box, "27")
    QTest.keyClick(win.frame_box, Qt.Key_Return)
    assert m.frame == 27 and win.slider.value() == 27
    # and the box follows the frame
    m.set_frame(3)
    assert win.frame_box.value() == 3


def test_window_level_right_drag_presets_and_reset(win, qtbot):
    fv = win.frame_view
    frame = win.model.sweep.frames[win.model.frame]

    def shown() -> np.ndarray:
        img = fv.image._qimage.convertToFormat(QImage.Format_Grayscale8)
        ptr = img.constBits()
        a = np.frombuffer(ptr, np.uint8, img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
        return a[:, :img.width()].copy()

    assert np.array_equal(shown(), frame)  # full range: the stored values as they are
    win.window_level_actions[2].trigger()  # "More contrast"
    w, lv = fv.window_level
    assert w < 256
    s = shown()
    bright = frame > lv + w / 2
    assert (s[bright] == 255).all() and (s[frame < lv - w / 2] == 0).all()
    # right-drag to the left narrows the window (more contrast), upwards lowers the level
    fv.reset_window_level()
    assert np.array_equal(shown(), frame)
    gv = fv.graphics
    centre = gv.viewport().rect().center()
    QTest.mousePress(gv.viewport(), Qt.RightButton, Qt.NoModifier, centre)
    for step in range(1, 6):
        QTest.mouseMove(gv.viewport(), centre + QPoint(-12 * step, -6 * step))
    QTest.mouseRelease(gv.viewport(), Qt.RightButton, Qt.NoModifier, centre + QPoint(-60, -30))
    w2, l2 = fv.window_level
    assert w2 < 256 and l2 < 127.5
    assert not np.array_equal(shown(), frame)
    _key(win, Qt.Key_R)
    assert fv.window_level == (256.0, 127.5) and np.array_equal(shown(), frame)


def test_export_frame_png_has_overlay_and_measurement(win, tmp_path):
    m = win.model
    best = m.go_to_best()
    assert best is not None
    win.refresh()
    assert win.frame_view.ellipse.isVisible()  # the AC ellipse is drawn on a best frame
    foreign = tmp_path / "theirs.png"
    foreign.write_bytes(b"someone else's picture")
    (tmp_path / "shots").mkdir()
    (tmp_path / "shots" / "best.png").symlink_to(foreign)  # a link at the path: replaced, not written through
    out = win.export_frame(tmp_path / "shots" / "best")
    assert out == tmp_path / "shots" / "best.png" and out.is_file() and not out.is_symlink()
    assert foreign.read_bytes() == b"someone else's picture"
    img = QImage(str(out))
    assert img.width() == win.frame_view.width() and img.height() == win.frame_view.height()
    # the overlay's colours are in the picture (not only grey frame pixels)
    a = img.convertToFormat(QImage.Format_RGB32)
    arr = np.frombuffer(a.constBits(), np.uint8, a.sizeInBytes()).reshape(a.height(), a.bytesPerLine() // 4, 4)
    b, g, r = arr[..., 0].astype(int), arr[..., 1].astype(int), arr[..., 2].astype(int)
    assert ((np.abs(r - g) > 40) | (np.abs(g - b) > 40)).sum() > 50
    label = win.frame_view.ellipse_label
    reading = m.reading(m.measure_ac(best), best)
    # a few words on the image; the whole reading (with any reason for doubt) as its tooltip
    assert label.toPlainText().startswith(reading.short()) and label.toolTip() == reading.text()


def test_the_ac_label_stays_on_the_view_above_or_below_its_outline(qtbot):
    """An outline at the top of the frame had its label drawn off the view (or cut by its edge);
    it goes under the outline then, and above it wherever there is room."""
    from app.frame_view import FrameView

    view = FrameView()
    qtbot.addWidget(view)
    view.resize(744, 600)
    view.show()
    view.set_frame(np.zeros((562, 744), np.uint8))
    QApplication.processEvents()
    t = np.linspace(0, 2 * np.pi, 90)
    for centre_y, above in ((280.0, True), (58.0, False)):
        pts = np.stack([372 + 120 * np.cos(t), centre_y + 55 * np.sin(t)], 1)
        view.show_ellipse(pts, "AC 161.5 mm")
        QApplication.processEvents()
        label = view.ellipse_label
        box = label.mapRectToView(label.boundingRect())  # in frame pixels (y down)
        if above:
            assert box.bottom() <= centre_y - 55 and box.top() >= 0
        else:
            assert box.top() >= centre_y + 55
        assert box.left() >= 0 and box.right() <= 744
    # an outline near either side keeps its label whole inside the view ("4.7 mm (doubtful)" was shown)
    x_lo, x_hi = sorted(view.view.viewRange()[0])
    for centre_x in (30.0, 714.0):
        pts = np.stack([centre_x + 40 * np.cos(t), 280 + 35 * np.sin(t)], 1)
        view.show_ellipse(pts, "AC 194.7 mm (doubtful) · demo model, not for clinical use")
        QApplication.processEvents()
        label = view.ellipse_label
        box = label.mapRectToView(label.boundingRect())
        assert box.left() >= x_lo - 0.5 and box.right() <= x_hi + 0.5, (centre_x, box, x_lo, x_hi)
    # ... and when the view changes without a new frame (resized, maximised): placed again
    view.resize(500, 400)
    QApplication.processEvents()
    x_lo, x_hi = sorted(view.view.viewRange()[0])
    box = label.mapRectToView(label.boundingRect())
    assert box.left() >= x_lo - 0.5 and box.right() <= x_hi + 0.5, (box, x_lo, x_hi)


def test_about_names_version_models_and_device(win):
    from app.window_tools import about_text
    from fetaliqa_core import __version__

    text = about_text(win)
    assert __version__ in text
    assert "Classifier" in text and "Segmenter" in text  # one row per loaded model
    assert "Device" in text and "PySide6" in text and "not for clinical use" in text


def test_window_fits_1024x768(win, qtbot):
    win.resize(1024, 740)
    QApplication.processEvents()
    assert win.minimumSizeHint().width() <= 1024 and win.minimumWidth() <= 1024
    assert win.width() <= 1024
    # the status bar's widgets all fit inside it
    sb = win.statusBar()
    for w in (win.status_frame, win.status_ac, win.status_model, win.progress, win.cancel_button):
        assert w.isVisible() and w.geometry().right() <= sb.width(), w


def test_typing_in_the_fps_box_does_not_trigger_review_keys(win, qtbot):
    win.fps_spin.setFocus()
    qtbot.waitUntil(win.fps_spin.hasFocus, timeout=2000)
    win.fps_spin.lineEdit().selectAll()
    QTest.keyClicks(win.fps_spin, "20")
    QTest.keyClick(win.fps_spin, Qt.Key_Return)
    assert win.fps_spin.value() == 20 and win.model.fps == 20
    assert not win.review.active  # "2" and "0" went into the box, not to the review


def test_emitting_a_signal_keeps_the_interpreter_intact():
    """PySide6 6.12.0's Signal.emit() returned True without a reference of its own: every emit
    dropped one, and a long session (or the test run) aborted at random ("bool_dealloc:
    deallocating True"). pyproject excludes that release; this fails on any that does it again."""
    import gc
    import sys

    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        ping = Signal(int)

    e = Emitter()
    e.ping.connect(lambda _n: None)
    gc.collect()
    before = sys.getrefcount(True)
    for i in range(200):
        e.ping.emit(i)
    gc.collect()
    assert sys.getrefcount(True) - before > -50, "Signal.emit() leaks references to True in this PySide6"


def test_the_model_libraries_are_imported_by_one_thread_at_a_time():
    """The window's preload thread and the first model load imported peft at once: 'partially
    initialized module peft.tuners' failed about 1 start in 25. The load waits for the preload."""
    import threading
    import time

    from app import worker

    assert worker._IMPORTS.acquire(timeout=60)  # as a preload still importing holds it
    try:
        t = threading.Thread(target=worker.import_model_libraries, daemon=True)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # the model load's imports wait
    finally:
        worker._IMPORTS.release()
    t.join(timeout=120)
    assert not t.is_alive()
