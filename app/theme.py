"""Dark theme and the colours shared by the views (ultrasound is read on a dark screen)."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

# Surfaces
BG = "#111418"  # image and plot background
PANEL = "#1a1e24"
PANEL_ALT = "#20252c"
BORDER = "#2c323b"
TEXT = "#d7dce2"
TEXT_DIM = "#8a94a3"
ACCENT = "#4fa3ff"

# Curves and marks
CLS_COLOUR = "#4fc3f7"  # classifier probability
SEG_COLOUR = "#ffb74d"  # mask-based score
THRESHOLD_COLOUR = "#fff176"
CURSOR_COLOUR = "#f5f5f5"
UNSCORED_COLOUR = "#5b6470"
BEST_COLOUR = "#69f0ae"
CANDIDATE_COLOUR = "#66bb6a"
DISAGREE_COLOUR = "#ef5350"
CONFIRMED_COLOUR = "#ea80fc"  # a cascade's frames re-scored by the teacher
ELLIPSE_COLOUR = "#ffee58"
WARN_COLOUR = "#ffb74d"  # a lasting warning in the status bar (settings not saved)
SWEEP_SHADES = ("#161b21", "#1d232b")  # alternating sweep backgrounds

# Segmentation labels (engine): 1 optimal, 2 suboptimal, 3 abdomen without a plane grade.
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {
    1: (46, 204, 113),
    2: (255, 167, 38),
    3: (41, 182, 246),
}
LABEL_NAMES = {1: "optimal", 2: "suboptimal", 3: "abdomen"}


def overlay_lut() -> np.ndarray:
    """(256, 4) uint8 RGBA lookup table: label value -> colour, 0 fully transparent.

    Computed once; the overlay's opacity is the item's opacity, so changing it costs nothing.
    """
    lut = np.zeros((256, 4), dtype=np.uint8)
    for label, (r, g, b) in LABEL_COLOURS.items():
        lut[label] = (r, g, b, 255)
    return lut


def apply_dark_theme(app: QApplication) -> None:
    """Fusion style with a dark palette and a little styling for the panels."""
    app.setStyle("Fusion")
    pal = QPalette()
    c = QColor
    pal.setColor(QPalette.Window, c(PANEL))
    pal.setColor(QPalette.WindowText, c(TEXT))
    pal.setColor(QPalette.Base, c(BG))
    pal.setColor(QPalette.AlternateBase, c(PANEL_ALT))
    pal.setColor(QPalette.ToolTipBase, c(PANEL_ALT))
    pal.setColor(QPalette.ToolTipText, c(TEXT))
    pal.setColor(QPalette.Text, c(TEXT))
    pal.setColor(QPalette.Button, c(PANEL_ALT))
    pal.setColor(QPalette.ButtonText, c(TEXT))
    pal.setColor(QPalette.BrightText, c("#ff5252"))
    pal.setColor(QPalette.Highlight, c(ACCENT))
    pal.setColor(QPalette.HighlightedText, c("#0b0d10"))
    pal.setColor(QPalette.Link, c(ACCENT))
    pal.setColor(QPalette.PlaceholderText, c(TEXT_DIM))
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        pal.setColor(QPalette.Disabled, role, c("#5d6673"))
    app.setPalette(pal)
    app.setStyleSheet(STYLESHEET)


STYLESHEET = f"""
QMainWindow::separator {{ background: {BORDER}; width: 3px; height: 3px; }}
QToolBar {{ background: {PANEL}; border: none; border-bottom: 1px solid {BORDER}; spacing: 6px; padding: 3px; }}
QToolBar QLabel {{ color: {TEXT_DIM}; }}
QToolButton {{ padding: 4px 8px; border-radius: 4px; }}
QToolButton:hover {{ background: {PANEL_ALT}; }}
QToolButton:checked {{ background: #27313d; color: {ACCENT}; }}
QStatusBar {{ background: {PANEL}; border-top: 1px solid {BORDER}; }}
QStatusBar QLabel {{ color: {TEXT}; padding: 0 6px; }}
QStatusBar::item {{ border: none; }}
QDockWidget {{ color: {TEXT_DIM}; }}
QDockWidget::title {{ background: {PANEL}; padding: 5px 8px; border-bottom: 1px solid {BORDER}; }}
QTreeWidget, QListWidget {{ background: {BG}; border: 1px solid {BORDER}; }}
QTreeWidget::item {{ padding: 2px 0; }}
QTreeWidget::item:selected, QListWidget::item:selected {{ background: #24415f; color: {TEXT}; }}
QHeaderView::section {{ background: {PANEL}; color: {TEXT_DIM}; border: none; padding: 4px; }}
QProgressBar {{ background: {BG}; border: 1px solid {BORDER}; border-radius: 3px; height: 14px;
               text-align: center; color: {TEXT}; min-width: 270px; }}
QProgressBar::chunk {{ background: #2f6db5; border-radius: 2px; }}
QPushButton {{ background: {PANEL_ALT}; border: 1px solid {BORDER}; border-radius: 4px; padding: 4px 10px; }}
QPushButton:hover {{ border-color: {ACCENT}; }}
QPushButton:pressed {{ background: #27313d; }}
QPushButton#verdict_optimal {{ border-color: #2e7d4f; }}
QPushButton#verdict_suboptimal {{ border-color: #a86a12; }}
QPushButton#verdict_not_usable {{ border-color: #8e2f2f; }}
QPushButton#verdict_optimal:checked {{ background: #1f6b43; color: white; }}
QPushButton#verdict_suboptimal:checked {{ background: #8a5a10; color: white; }}
QPushButton#verdict_not_usable:checked {{ background: #7a2626; color: white; }}
QLineEdit, QComboBox {{ background: {BG}; border: 1px solid {BORDER}; border-radius: 3px; padding: 3px 5px; }}
/* Spin boxes keep the style's own frame and arrows (drawn in the palette's light text colour):
   a stylesheet border would make the style draw its default dark arrows, invisible here. */
QSlider::groove:horizontal {{ height: 4px; background: {BORDER}; border-radius: 2px; }}
QSlider::sub-page:horizontal {{ background: #2f6db5; border-radius: 2px; }}
QSlider::handle:horizontal {{ background: {TEXT}; width: 12px; margin: -5px 0; border-radius: 6px; }}
QLabel#corner {{ color: {TEXT}; background: transparent; font-family: monospace; }}
QLabel#dim {{ color: {TEXT_DIM}; }}
QLabel#warn {{ color: {WARN_COLOUR}; }}
QLabel#placeholder {{ color: {TEXT_DIM}; font-size: 15px; }}
"""
