"""Main windows for the app tests: one with test models whose message boxes answer themselves,
and one with a small sweep scored, focused for key presses (what the review tests drive)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox

from app.main_window import MainWindow
from app.settings import AppSettings
from fakes import fake_models, tiny_sweep


def answered_window(qtbot, monkeypatch, width: int, height: int) -> MainWindow:
    """A window of this size with the test models, whose warnings are acknowledged and whose
    questions are answered No."""
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: QMessageBox.Ok))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.No))
    win = MainWindow(settings=AppSettings())
    qtbot.addWidget(win)
    win.use_models(fake_models())
    win.resize(width, height)
    return win


def scored_window(qtbot, settings: AppSettings, models=None, sweep=None) -> MainWindow:
    """The window on a scored 2 x 20-frame sweep (64 x 80; or ``sweep``), keyboard focus on its
    splitter."""
    win = MainWindow(settings=settings)
    qtbot.addWidget(win)
    win.use_models(models or fake_models())
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=3000)
    win.splitter.setFocus()
    ended = []
    win.scoring_ended.connect(lambda c, m: ended.append(c))
    win.set_sweep(sweep if sweep is not None else tiny_sweep(n_sweeps=2, per_sweep=20, height=64, width=80))
    qtbot.waitUntil(lambda: bool(ended), timeout=20000)
    win.refresh()
    return win


def press(win: MainWindow, text: str) -> None:
    """Type ``text`` into the window ("\\n" is Enter) and let it react."""
    if text == "\n":
        QTest.keyClick(win.splitter, Qt.Key_Return)
    else:
        QTest.keyClicks(win.splitter, text)
    QApplication.processEvents()
