"""The quality curve: per-frame scores over the whole case, linked to the current frame.

x is the frame index. Shown: the classifier's probability and the mask-based score for the
frames scored so far, a draggable threshold line, the sweeps as shaded bands labelled with
their kind, a status strip under the curves (grey: not scored yet, green: candidate, red:
classifier and segmenter disagree), stars on each sweep's best frame, and the cursor line.
Clicking or dragging on the plot moves the cursor; dragging the cursor line too.

Cost: :meth:`set_cursor` moves one line (every frame change); :meth:`set_results` replots the
curves and is meant to be called at most ~10 times a second while batches arrive.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app import theme

Y_MIN, Y_MAX = -0.16, 1.2
STRIP = (-0.13, -0.05)  # status strip under the curves
LABEL_Y = 1.17
EMPTY_FRAMES = 100  # x range shown before a sweep is open
SHORT_SWEEP_TICKS = 12  # up to this many frames, one labelled tick per frame
#: The wheel's zoom stops at this many frames in view (or the whole sweep, when shorter): it went
#: on to a fraction of a frame, where no curve or cursor shows and the ticks read "1000.009".
MIN_FRAMES_IN_VIEW = 5


class _FrameAxis(pg.AxisItem):
    """The frame axis: ticks on whole frames only (frame numbers are integers everywhere else)."""

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802, N803 (pyqtgraph naming)
        levels = super().tickSpacing(minVal, maxVal, size)
        whole = [(spacing, offset) for spacing, offset in levels if spacing >= 1 and float(spacing).is_integer()]
        return whole or [(1.0, 0.0)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [str(int(round(v))) for v in values]


class _TimelineViewBox(pg.ViewBox):
    """Left click / drag picks a frame; wheel zooms the frame axis (down to
    :data:`MIN_FRAMES_IN_VIEW` frames); double click shows the whole case again."""

    def __init__(self, on_pick, on_reset) -> None:
        super().__init__(enableMenu=False)
        self._on_pick = on_pick
        self._on_reset = on_reset
        self.setMouseEnabled(x=True, y=False)

    def mouseClickEvent(self, ev):  # noqa: N802
        if ev.button() == Qt.LeftButton:
            self._on_pick(self.mapSceneToView(ev.scenePos()).x())
            ev.accept()
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        if ev.button() == Qt.LeftButton:
            ev.accept()
            self._on_pick(self.mapSceneToView(ev.scenePos()).x())
        else:
            super().mouseDragEvent(ev, axis)

    def mouseDoubleClickEvent(self, ev):  # noqa: N802
        self._on_reset()
        ev.accept()


class _ThresholdWords:
    """The threshold line's label, which pyqtgraph formats with ``.format(value=...)`` as the line
    moves: the score it applies to and its value, with the models' own where the user moved it
    ("p_cls threshold 0.90 (model: 0.67)": the line said 0.90 alone); no number while the models'
    own is not known (before they load it said 0.50 for a model whose threshold is 0.67)."""

    def __init__(self) -> None:
        self.on = ""  # "p_cls" or "p_seg"
        self.model: float | None = None

    def format(self, value: float) -> str:
        head = f"{self.on} threshold".strip()
        if self.model is None:
            return head
        text = f"{head} {value:.2f}"
        return f"{text} (model: {self.model:.2f})" if round(value, 3) != round(self.model, 3) else text


class QualityCurve(QWidget):
    """Signals: ``frame_picked(int)`` (click/drag/cursor drag), ``threshold_moved(float)``."""

    frame_picked = Signal(int)
    threshold_moved = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._n = 0
        self._sweep_starts = np.zeros(0, dtype=np.int64)  # first frame of each sweep after the first
        self.vb = _TimelineViewBox(self._pick, self.reset_range)
        self.plot = pg.PlotWidget(viewBox=self.vb, background=theme.BG, axisItems={"bottom": _FrameAxis("bottom")})
        self.plot.setFocusPolicy(Qt.NoFocus)
        pi = self.plot.getPlotItem()
        pi.hideButtons()
        pi.setMenuEnabled(False)
        pi.showGrid(x=False, y=True, alpha=0.12)
        for name in ("left", "bottom"):
            ax = pi.getAxis(name)
            ax.setPen(pg.mkPen(theme.BORDER))
            ax.setTextPen(pg.mkPen(theme.TEXT_DIM))
        pi.getAxis("left").setTicks([[(0, "0"), (0.5, "0.5"), (1, "1")]])
        pi.getAxis("left").setWidth(34)
        pi.setLabel("bottom", "frame", color=theme.TEXT_DIM)
        # Frame numbers are counts: never "frame (x0.001)".
        pi.getAxis("bottom").enableAutoSIPrefix(False)
        self.vb.setYRange(Y_MIN, Y_MAX, padding=0)
        self.vb.setXRange(0, EMPTY_FRAMES, padding=0)  # no sweep yet: a plain 0..100 frame axis
        self.vb.setLimits(yMin=Y_MIN, yMax=Y_MAX)

        self._regions: list[pg.LinearRegionItem] = []
        self._labels: list[pg.TextItem] = []

        self.strip_unscored = pg.PlotCurveItem(pen=pg.mkPen(theme.UNSCORED_COLOUR, width=1), connect="pairs")
        self.strip_cand = pg.PlotCurveItem(pen=pg.mkPen(theme.CANDIDATE_COLOUR, width=1), connect="pairs")
        self.strip_dis = pg.PlotCurveItem(pen=pg.mkPen(theme.DISAGREE_COLOUR, width=1), connect="pairs")
        for it in (self.strip_unscored, self.strip_cand, self.strip_dis):
            it.setZValue(5)
            self.vb.addItem(it)

        self.curve_cls = pg.PlotDataItem(pen=pg.mkPen(theme.CLS_COLOUR, width=1.6), name="classifier p_cls",
                                         antialias=True)
        self.curve_seg = pg.PlotDataItem(pen=pg.mkPen(theme.SEG_COLOUR, width=1.6), name="mask p_seg",
                                         antialias=True)
        for it in (self.curve_cls, self.curve_seg):
            it.setZValue(10)
            self.vb.addItem(it)
        self.best = pg.ScatterPlotItem(symbol="star", size=14, pen=pg.mkPen("#0b0d10", width=0.8),
                                       brush=pg.mkBrush(theme.BEST_COLOUR))
        self.best.setZValue(15)
        self.vb.addItem(self.best)
        # A cascade's frames re-scored by the teacher: small marks on the curve (shown only then).
        self.confirmed = pg.ScatterPlotItem(symbol="d", size=6, pen=pg.mkPen(None),
                                            brush=pg.mkBrush(theme.CONFIRMED_COLOUR))
        self.confirmed.setZValue(12)
        self.vb.addItem(self.confirmed)
        self._cascade = False


        self.threshold = pg.InfiniteLine(
            pos=0.5, angle=0, movable=True, bounds=(0.0, 1.0),
            pen=pg.mkPen(theme.THRESHOLD_COLOUR, width=1.2, style=Qt.DashLine),
            hoverPen=pg.mkPen(theme.THRESHOLD_COLOUR, width=2.5),
            label=_ThresholdWords(),
            # at the right end: the sweep names sit at the left of each band
            labelOpts={"position": 0.985, "color": theme.THRESHOLD_COLOUR, "anchors": [(1, 1), (1, 1)]})
        self.threshold.setZValue(20)
        self.threshold.sigPositionChanged.connect(self._place_threshold_words)
        self.threshold.sigDragged.connect(lambda line: self.threshold_moved.emit(float(line.value())))
        self.vb.addItem(self.threshold)
        self._threshold_words = self.threshold.label.format
        self.threshold.setVisible(False)  # until the models' own is known (set_model_threshold)
        self.seg_line = pg.InfiniteLine(
            pos=0.5, angle=0, movable=False, pen=pg.mkPen(theme.SEG_COLOUR, width=1, style=Qt.DotLine),
            label="p_seg 0.50 (mask 1 %)",
            # left of the threshold's words (at the right end): with the threshold below 0.5 both
            # were drawn in one place
            labelOpts={"position": 0.62, "color": theme.SEG_COLOUR, "anchors": [(1, 0), (1, 0)]})
        self.seg_line.setZValue(19)
        self.seg_line.setVisible(False)
        self.vb.addItem(self.seg_line)

        self.cursor = pg.InfiniteLine(pos=0, angle=90, movable=True,
                                      pen=pg.mkPen(theme.CURSOR_COLOUR, width=1.4),
                                      hoverPen=pg.mkPen(theme.ACCENT, width=3))
        self.cursor.setZValue(30)
        self.cursor.sigDragged.connect(lambda line: self._pick(line.value()))
        self.vb.addItem(self.cursor)

        self.legend = QLabel(self._legend_html())
        self.legend.setObjectName("dim")
        self.legend.setTextFormat(Qt.RichText)
        self.legend.setContentsMargins(10, 3, 10, 0)
        self.legend.setWordWrap(True)  # wraps in a narrow window instead of widening it
        self.legend.setToolTip(self.SCORES_TIP)
        self.legend.setMinimumWidth(200)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot)

    SCORES_TIP = ("p_cls: the classifier's probability that the frame shows the abdomen well enough to "
                  "measure. p_seg: the mask score, 0.5 where the segmenter's mask covers 1 % of the "
                  "model input (the paper's rule). The same names are used in frames.csv, summary.json "
                  "and review reports.")

    @staticmethod
    def _legend_html() -> str:
        def sw(colour: str, glyph: str = "━━") -> str:
            return f"<span style='color:{colour}; font-weight:bold'>{glyph}</span>"

        return ("Quality curve &nbsp;&nbsp; "
                f"{sw(theme.CLS_COLOUR)} classifier p_cls &nbsp; {sw(theme.SEG_COLOUR)} mask p_seg &nbsp; "
                f"{sw(theme.THRESHOLD_COLOUR, '╌╌')} threshold (drag) &nbsp; "
                f"{sw(theme.BEST_COLOUR, '★')} best of sweep &nbsp;&nbsp;│&nbsp;&nbsp; strip: "
                f"{sw(theme.UNSCORED_COLOUR, '▮')} not scored &nbsp; {sw(theme.CANDIDATE_COLOUR, '▮')} candidate "
                f"&nbsp; {sw(theme.DISAGREE_COLOUR, '▮')} models disagree")

    def _set_cascade_legend(self, on: bool) -> None:
        if on != self._cascade:
            self._cascade = on
            extra = (f" &nbsp;&nbsp;│&nbsp;&nbsp; <span style='color:{theme.CONFIRMED_COLOUR}; font-weight:bold'>◆"
                     "</span> re-scored by the teacher") if on else ""
            self.legend.setText(self._legend_html() + extra)
            self.legend.setToolTip("Cascade: a small student scored every frame; the chosen models re-scored the "
                                   "marked frames, and the best frames and any AC come from those only.\n\n"
                                   + self.SCORES_TIP if on else self.SCORES_TIP)

    # -- sweep layout ----------------------------------------------------------------------
    def set_sweep(self, n_frames: int, sweep_ranges: list[tuple[int, int]], sweep_kinds: list[str]) -> None:
        """Lay out a new case: bands per sweep, every frame marked as not scored."""
        self._n = int(n_frames)
        self._sweep_starts = np.asarray([a for a, _b in sweep_ranges[1:]], dtype=np.int64)
        for it in self._regions + self._labels:
            self.vb.removeItem(it)
        self._regions, self._labels = [], []
        font = QFont()
        font.setPointSize(8)
        for k, (a, b) in enumerate(sweep_ranges):
            shade = QColor(theme.SWEEP_SHADES[k % 2])
            reg = pg.LinearRegionItem(values=(a - 0.5, b - 0.5), movable=False,
                                      brush=pg.mkBrush(shade), pen=pg.mkPen(None))
            for line in reg.lines:
                line.setPen(pg.mkPen(theme.BORDER if k else None))
            reg.setZValue(-10)
            self.vb.addItem(reg)
            self._regions.append(reg)
            kind = sweep_kinds[k] if k < len(sweep_kinds) else "unknown"
            text = f"{k + 1} · {kind}" if kind and kind != "unknown" else f"sweep {k + 1}"
            # at its band's left edge (one frame in, a one-frame sweep's name lay past the view); a short
            # last band's name ends at the plot's right edge instead (it ran past it)
            short_last = k == len(sweep_ranges) - 1 and k > 0 and (b - a) < 0.1 * self._n
            lab = pg.TextItem(text, color=theme.TEXT_DIM, anchor=(1, 0) if short_last else (0, 0))
            lab.setFont(font)
            lab.setPos(b - 0.5 if short_last else a - 0.5, LABEL_Y)
            self.vb.addItem(lab)
            self._labels.append(lab)
        # frames are whole numbers: a short sweep gets one tick a frame, not 0.5 steps
        bottom = self.plot.getPlotItem().getAxis("bottom")
        bottom.setTicks([[(f, str(f)) for f in range(self._n)]] if 0 < self._n <= SHORT_SWEEP_TICKS else None)
        self.cursor.setBounds((0, max(self._n - 1, 0)))
        self.vb.setLimits(xMin=-0.5 - 0.02 * self._n, xMax=self._n - 0.5 + 0.02 * self._n,
                          minXRange=min(MIN_FRAMES_IN_VIEW, max(self._n, 1)))
        self.reset_range()
        self.set_results(None, None)

    def reset_range(self) -> None:
        if self._n:
            self.vb.setXRange(-0.5, self._n - 0.5, padding=0.01)
        self.vb.setYRange(Y_MIN, Y_MAX, padding=0)

    # -- data ------------------------------------------------------------------------------
    @staticmethod
    def _ticks(frames: np.ndarray, span: tuple[float, float] = STRIP) -> tuple[np.ndarray, np.ndarray]:
        x = np.repeat(frames.astype(np.float64), 2)
        y = np.tile(np.array(span), len(frames))
        return x, y

    def set_results(self, results, flags, confirmed: np.ndarray | None = None, filling: bool = True) -> None:
        """Replot from an ``engine.SweepResults`` (or None) and ``viewer_model.FlaggedFrames``.
        ``confirmed``: a cascade's frames re-scored by its teacher (None: not a cascade).
        ``filling``: scoring goes on, so scored frames are joined across those still to score (a
        coarse curve that fills in); once it has stopped, only neighbouring frames are (after Stop
        the lines ran straight over frames that had no score, as if they had one)."""
        n = self._n
        self._set_cascade_legend(confirmed is not None and results is not None)
        if confirmed is not None and results is not None and n:
            xs = np.flatnonzero(np.asarray(confirmed, dtype=bool)[:n] & results.done[:n])
            # on the higher of the two curves (an absent model's scores are NaN, which fmax skips)
            ys = np.nan_to_num(np.fmax(results.p_cls[xs], results.p_seg[xs]))
            self.confirmed.setData(xs.astype(np.float64), ys.astype(np.float64))
        else:
            self.confirmed.setData([], [])
        if results is None or n == 0:
            self.curve_cls.setData([], [])
            self.curve_seg.setData([], [])
            self.best.setData([], [])
            self.seg_line.setVisible(False)
            self.strip_unscored.setData(*self._ticks(np.arange(n)))
            self.strip_cand.setData([], [])
            self.strip_dis.setData([], [])
            return
        done = np.flatnonzero(results.done)
        for curve, arr, has in ((self.curve_cls, results.p_cls, results.has_cls),
                                (self.curve_seg, results.p_seg, results.has_seg)):
            if has and len(done):
                y = arr[done]
                ok = np.isfinite(y)
                xs = done[ok]
                # scored frames are joined across the frames still to score (a coarse curve that
                # fills in), never from one sweep's last frame to the next sweep's first
                joined = np.searchsorted(self._sweep_starts, xs[:-1], side="right") == \
                    np.searchsorted(self._sweep_starts, xs[1:], side="right")
                if not filling:
                    joined &= np.diff(xs) == 1
                curve.setData(xs.astype(np.float64), y[ok].astype(np.float64),
                              connect=np.append(joined, False))
            else:
                curve.setData([], [])
        self.strip_unscored.setData(*self._ticks(np.flatnonzero(~results.done)))
        if flags is not None:
            # candidates in the strip's lower half, disagreements in its upper half: a frame that
            # is both shows both (the red tick hid the green one)
            mid = (STRIP[0] + STRIP[1]) / 2
            self.strip_cand.setData(*self._ticks(np.asarray(flags.candidates, dtype=np.int64), (STRIP[0], mid)))
            self.strip_dis.setData(*self._ticks(np.asarray(flags.disagreements, dtype=np.int64), (mid, STRIP[1])))
            # on the classifier's curve (the segmenter's without one), not at the frame choice's
            # evidence, which no curve shows
            shown = results.p_cls if results.has_cls else results.p_seg
            pts = [(b, float(shown[b]) if 0 <= b < len(shown) and np.isfinite(shown[b]) else s)
                   for b, s, ok in zip(flags.best, flags.best_score, flags.best_passes)
                   if b is not None and s is not None and ok]
            if pts:
                xs, ys = zip(*pts)
                self.best.setData(list(map(float, xs)), list(map(float, ys)))
            else:
                self.best.setData([], [])
        # Legend entries only for the models that exist.
        self.curve_cls.setVisible(results.has_cls)
        self.curve_seg.setVisible(results.has_seg)
        # which score the draggable threshold applies to; with both models, the segmenter's own
        # call (mask >= 1 %, p_seg 0.5) as a fixed line of its colour
        on = "p_cls" if results.has_cls else "p_seg"
        if on != self._threshold_words.on:
            self._threshold_words.on = on
            self.threshold.label.valueChanged()
        self.seg_line.setVisible(results.has_cls and results.has_seg)

    def set_cursor(self, frame: int) -> None:
        if self.cursor.value() != frame:
            self.cursor.setValue(frame)
        self._keep_in_view(frame)

    def _keep_in_view(self, frame: int) -> None:
        """A zoomed curve follows the frame: when it moves out of the frames in view (End, a
        jump, cine), the view is centred on it, as wide as it was (it stayed where it was, the
        cursor off-screen with nothing saying where)."""
        (lo, hi), _ = self.vb.viewRange()
        if not self._n or lo <= frame <= hi:
            return
        width = hi - lo
        start = min(max(frame - width / 2, -0.5), max(self._n - 0.5 - width, -0.5))
        self.vb.setXRange(start, start + width, padding=0)

    def set_model_threshold(self, value: float | None) -> None:
        """The models' own threshold, said beside the line's when the user moved it; None: not
        known yet (no models loaded), and no line is drawn (the empty window's stood at 0.5, a
        threshold of no model)."""
        self.threshold.setVisible(value is not None)
        if value != self._threshold_words.model:
            self._threshold_words.model = value
            self.threshold.label.valueChanged()

    #: Above this the threshold's words go below its line: above it they were drawn over the
    #: sweeps' names ("p_cls threshold 0.90" across "6 · sagittal"), which sit at the band's top.
    WORDS_BELOW_ABOVE = 0.8

    def _place_threshold_words(self, *_args) -> None:
        below = self.threshold.value() > self.WORDS_BELOW_ABOVE
        anchor = (1, 0) if below else (1, 1)
        label = self.threshold.label
        if label.anchors[0] != anchor:
            label.anchors = [anchor, anchor]
            label.updatePosition()

    def set_threshold(self, value: float) -> None:
        if abs(self.threshold.value() - value) > 1e-9:
            self.threshold.setValue(value)

    def _pick(self, x: float) -> None:
        if self._n:
            self.frame_picked.emit(int(min(max(round(x), 0), self._n - 1)))
