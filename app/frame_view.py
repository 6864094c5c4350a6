"""The frame, its segmentation overlay and the fitted AC ellipse (pyqtgraph).

Showing a frame is kept to the minimum: one ``setImage`` of the uint8 frame with fixed levels
(no autolevel, no copy), and one of the 224x224 label mask through a precomputed colour table.
The mask is not resampled to the frame: its image item is placed over the frame where the
model saw it (the frame centred in a zero-padded square, ``preprocess.pad_geometry``), so Qt
scales it while drawing. The padding rows/columns of the mask are cut off so that nothing is
drawn outside the frame.
"""

from __future__ import annotations

import re

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPen, QTextDocument
from PySide6.QtWidgets import QGraphicsDropShadowEffect, QLabel, QVBoxLayout, QWidget

from app import theme

pg.setConfigOptions(imageAxisOrder="row-major")

WHEEL_STEP = 120  # one notch of a mouse wheel (Qt angle delta units)
CORNER_SIZE = (340, 64)  # px: room for three lines of corner annotation
CORNER_BACKING = "rgba(11, 13, 16, 220)"  # behind corner text: grey on it stays readable over white
FULL_WINDOW = (256.0, 127.5)  # (window, level) that shows the stored grey values as they are
# Window/level presets for 8-bit B-mode frames: (window, level).
WINDOW_LEVEL_PRESETS: dict[str, tuple[float, float]] = {
    "Full range": FULL_WINDOW,
    "Brighter (dark sweeps)": (160.0, 80.0),
    "More contrast": (128.0, 110.0),
    "Softer": (320.0, 127.5),
}
WL_DRAG_GAIN = 1.0  # grey levels per pixel of mouse movement
LABEL_MARGIN = 4  # px kept between the AC label and the view's sides
LABEL_MIN_POINTS = 8  # the AC label's font is made no smaller to fit a narrow view (11 pt as a rule)


class FrameItem(pg.GraphicsObject):
    """A uint8 grey frame drawn as fast as Qt allows (fixed levels 0-255, no lookup).

    The frame is converted once per change to the 32-bit RGB layout the raster engine
    paints without conversion; drawing a greyscale QImage scaled costs ~3x more per paint.
    ``image``: the (H, W) array shown (as with pyqtgraph's ImageItem).
    """

    def __init__(self) -> None:
        super().__init__()
        self.image: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._rect = QRectF()
        self.lut: np.ndarray | None = None  # 256 grey values (window/level), None: as stored

    def set_lut(self, lut: np.ndarray | None) -> None:
        self.lut = lut
        if self.image is not None:
            self.setImage(self.image)

    def setImage(self, frame: np.ndarray) -> None:  # noqa: N802 (pyqtgraph naming)
        a = np.ascontiguousarray(frame, dtype=np.uint8)
        h, w = a.shape
        shown = a if self.lut is None else self.lut[a]
        grey = QImage(shown.data, w, h, int(shown.strides[0]), QImage.Format_Grayscale8)
        self._qimage = grey.convertToFormat(QImage.Format_RGB32)  # owns its pixels
        self.image = a
        if self._rect.width() != w or self._rect.height() != h:
            self.prepareGeometryChange()
            self._rect = QRectF(0, 0, w, h)
        self.update()

    def clear(self) -> None:
        self.image = None
        self._qimage = None
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802
        return QRectF(self._rect)

    def paint(self, painter, *args) -> None:
        if self._qimage is not None:
            painter.drawImage(self._rect, self._qimage)


def window_level_lut(window: float, level: float) -> np.ndarray | None:
    """The 256-entry grey table of a window (width) centred on a level; None for the identity."""
    window = float(np.clip(window, 1.0, 512.0))
    if abs(window - FULL_WINDOW[0]) < 1e-6 and abs(level - FULL_WINDOW[1]) < 1e-6:
        return None
    lo = level - window / 2.0
    v = (np.arange(256, dtype=np.float64) - lo) * (255.0 / window)
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


class _ScrubViewBox(pg.ViewBox):
    """Wheel scrubs frames (like slice scrolling in ITK-SNAP / 3D Slicer); Ctrl+wheel zooms;
    a right-button drag sets window/level (as in Slicer and ITK-SNAP)."""

    _extent: tuple[int, int] | None = None  # the frame's (width, height), for the limits

    def __init__(self, on_scrub, on_window_level=None) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._on_scrub = on_scrub
        self._on_window_level = on_window_level
        self._wheel_accum = 0

    def set_extent(self, width: int, height: int) -> None:
        """Keep the view near a ``width`` x ``height`` frame: panned or zoomed out to at most a frame's
        width (height) beside it on each side, or as far as showing the whole frame in this view's
        shape takes (a tall frame in a wide view needs more than three frames' width: held to three,
        a 1920 x 886 portrait showed a fifth of itself, and Fit could not show more)."""
        self._extent = (int(width), int(height))
        self._fit_limits(self.size())

    def _fit_limits(self, size) -> None:
        if self._extent is None:
            return
        w, h = self._extent
        x_span, y_span = 3.0 * w, 3.0 * h
        aspect = self.state["aspectLocked"]  # (the view's pixel shape) / (the range's shape), or False
        if aspect and size.width() > 0 and size.height() > 0:
            shape = size.width() / size.height() / aspect  # the range's width / height the view keeps
            fit = max(w, h * shape)  # the range's width that shows the whole frame
            x_span, y_span = max(x_span, 1.01 * fit), max(y_span, 1.01 * fit / shape)
        self.setLimits(xMin=w / 2 - x_span / 2, xMax=w / 2 + x_span / 2,
                       yMin=h / 2 - y_span / 2, yMax=h / 2 + y_span / 2)

    def resizeEvent(self, ev):  # noqa: N802
        self._fit_limits(ev.newSize())  # (before the range is fitted to the new shape: within them)
        super().resizeEvent(ev)

    def setAspectLocked(self, lock=True, ratio=1):  # noqa: N802 (pyqtgraph naming)
        super().setAspectLocked(lock, ratio)
        self._fit_limits(self.size())

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        if ev.button() == Qt.RightButton and self._on_window_level is not None:
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            # right: wider window (less contrast); up: lower level (brighter)
            self._on_window_level(float(d.x()), float(-d.y()))
            return
        super().mouseDragEvent(ev, axis)

    def wheelEvent(self, ev, axis=None):  # noqa: N802 (Qt naming)
        if ev.modifiers() & Qt.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        self._wheel_accum += ev.delta()
        steps = int(self._wheel_accum / WHEEL_STEP)
        if steps:
            self._wheel_accum -= steps * WHEEL_STEP
            # Wheel away from the user = forward in the sweep.
            self._on_scrub(-steps)
        ev.accept()

    def mouseDoubleClickEvent(self, ev):  # noqa: N802
        self.autoRange(padding=0.0)
        ev.accept()


def mask_placement(height: int, width: int, mask_size: int) -> tuple[slice, slice, QRectF]:
    """Which part of a ``mask_size`` square model mask covers an ``height`` x ``width`` frame,
    and where that part lies in frame pixel coordinates (x = column, y = row)."""
    from fetaliqa_core.preprocess import pad_geometry

    g = pad_geometry(height, width)
    side, n = int(g.side), int(mask_size)
    # in whole numbers: model pixel k spans frame pixels k * side / n .. (k + 1) * side / n of the
    # padded square. Divided in floating point first, 300 / (300 / 224) came out as 224.00000000000003,
    # its ceiling 225: the overlay of 328 frame widths (300, 600, 1200...) was drawn 1/224 too wide,
    # off the AC's outline by up to a model pixel at its far edge.
    r0, r1 = (g.top * n) // side, -((-(g.top + height) * n) // side)
    c0, c1 = (g.left * n) // side, -((-(g.left + width) * n) // side)
    rect = QRectF((c0 * side - g.left * n) / n, (r0 * side - g.top * n) / n, (c1 - c0) * side / n, (r1 - r0) * side / n)
    return slice(r0, r1), slice(c0, c1), rect


class FrameView(QWidget):
    """Shows one frame with overlay and annotations. ``scrub(int)``: wheel steps asked for."""

    scrub = Signal(int)
    window_level_changed = Signal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsView(background=theme.BG)
        self.view = _ScrubViewBox(self.scrub.emit, self._drag_window_level)
        self.window_level = FULL_WINDOW
        self.view.setMouseEnabled(True, True)
        self.graphics.setCentralItem(self.view)
        self.graphics.setFocusPolicy(Qt.NoFocus)

        self.image = FrameItem()
        self.view.addItem(self.image)
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setZValue(10)
        self.overlay.hide()
        self.view.addItem(self.overlay)
        self._lut = theme.overlay_lut()

        pen = QPen(QColor(theme.ELLIPSE_COLOUR))
        pen.setWidthF(2.0)
        pen.setCosmetic(True)
        self.ellipse = pg.PlotCurveItem(pen=pen, antialias=True)
        self.ellipse.setZValue(20)
        self.view.addItem(self.ellipse)
        self.ellipse_label = pg.TextItem("", color=theme.ELLIPSE_COLOUR, anchor=(0.5, 1.0),
                                         fill=pg.mkBrush(0, 0, 0, 150))
        f = QFont()
        f.setPointSize(11)
        f.setBold(True)
        self.ellipse_label.setFont(f)
        self._label_font = QFont(f)
        self._ellipse_text = ""
        self.ellipse_label.setZValue(21)
        self.view.addItem(self.ellipse_label)
        self.ellipse.hide()
        self.ellipse_label.hide()
        self._ellipse_pts: np.ndarray | None = None
        # the label is kept inside the view when the view changes too (resized, maximised, zoomed):
        # a maximised window left "C 148.5 mm" cut at its edge until the frame changed
        self.view.sigRangeChanged.connect(self._place_ellipse_label)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)

        # Corner annotations (as in clinical viewers): drawn as labels over the view.
        self.corner_tl = self._corner(Qt.AlignLeft | Qt.AlignTop)
        self.corner_tr = self._corner(Qt.AlignRight | Qt.AlignTop)
        self.corner_bl = self._corner(Qt.AlignLeft | Qt.AlignBottom)
        self.corner_br = self._corner(Qt.AlignRight | Qt.AlignBottom)
        self.placeholder = QLabel("Open a sweep (File ▸ Open, or drop a file here)\n"
                                  "or try the demo: File ▸ Open demo sweep", self)
        self.placeholder.setObjectName("placeholder")
        self.placeholder.setAlignment(Qt.AlignCenter)

        self._shape: tuple[int, int] | None = None
        self._mask_slices: tuple[slice, slice] | None = None
        self._mask_size = 0
        self._mask_shown: np.ndarray | None = None  # the array on screen (identity check)
        self._corner_text_sizes: dict[tuple[str, str], tuple[float, float]] = {}
        self._yielded: list[QLabel] = []  # corners hidden for the AC label (no room elsewhere)

    def _corner(self, align) -> QLabel:
        # A fixed box, text aligned inside it: changing the text never re-lays anything out.
        lab = QLabel(self)
        lab.setObjectName("corner")
        lab.setAlignment(align)
        lab.setAttribute(Qt.WA_TransparentForMouseEvents)
        lab.setTextFormat(Qt.RichText)
        lab.setFixedSize(CORNER_SIZE[0], CORNER_SIZE[1])
        # a dark halo keeps the text readable where it lies over bright echoes (it is drawn over
        # the image wherever the fan comes close to the corner)
        halo = QGraphicsDropShadowEffect(lab)
        halo.setOffset(0, 0)
        halo.setBlurRadius(4)
        halo.setColor(QColor(0, 0, 0, 255))
        lab.setGraphicsEffect(halo)
        return lab

    def resizeEvent(self, ev):  # noqa: N802
        super().resizeEvent(ev)
        self._place_corners()
        self.placeholder.setGeometry(0, 0, self.width(), self.height())
        self._place_ellipse_label()

    def set_corners(self, tl: str = "", tr: str = "", bl: str = "", br: str = "") -> None:
        changed = False
        for lab, text in ((self.corner_tl, tl), (self.corner_tr, tr),
                          (self.corner_bl, bl), (self.corner_br, br)):
            # a dark backing behind the letters (not the whole box): the halo alone left the grey
            # lines ("pixel size unknown: no lengths", the demo model's notice) unreadable on a
            # bright frame
            text = f"<span style='background-color:{CORNER_BACKING}'>{text}</span>" if text else ""
            if lab.text() != text:
                lab.setText(text)
                # taller only for more lines (a file's read notes): scrubbing never changes its size
                need = max(CORNER_SIZE[1], (text.count("<br>") + 1) * lab.fontMetrics().lineSpacing() + 4)
                if lab.height() != need:
                    lab.setFixedSize(CORNER_SIZE[0], need)
                    self._place_corners()
                changed = True
        if changed:
            self._place_ellipse_label()  # (kept clear of the corners' new text)

    def _corner_rects(self) -> list[tuple[QLabel, QRectF]]:
        """Where the corners' text is drawn (this widget's pixels), for each corner shown with text,
        with its label: the box is fixed, the text is aligned in it and usually narrower."""
        rects = []
        for lab in (self.corner_tl, self.corner_tr, self.corner_bl, self.corner_br):
            text = lab.text()
            if not text or lab.isHidden():
                continue
            key = (text, lab.font().key())
            size = self._corner_text_sizes.get(key)
            if size is None:
                doc = QTextDocument()
                doc.setDefaultFont(lab.font())
                doc.setDocumentMargin(0)
                doc.setHtml(text)
                size = (doc.idealWidth() + 2, doc.size().height() + 2)
                if len(self._corner_text_sizes) > 64:
                    self._corner_text_sizes.clear()
                self._corner_text_sizes[key] = size
            g = lab.geometry()
            w, h = min(size[0], g.width()), min(size[1], g.height())
            x = g.x() + g.width() - w if lab.alignment() & Qt.AlignRight else g.x()
            y = g.y() + g.height() - h if lab.alignment() & Qt.AlignBottom else g.y()
            rects.append((lab, QRectF(x, y, w, h)))
        return rects

    def _place_corners(self) -> None:
        w, h, m = self.width(), self.height(), 10
        self.corner_tl.move(m, m)
        self.corner_tr.move(max(0, w - self.corner_tr.width() - m), m)
        self.corner_bl.move(m, max(0, h - self.corner_bl.height() - m))
        self.corner_br.move(max(0, w - self.corner_br.width() - m), max(0, h - self.corner_br.height() - m))

    # -- window/level ----------------------------------------------------------------------
    def set_window_level(self, window: float, level: float) -> None:
        window = float(np.clip(window, 1.0, 512.0))
        level = float(np.clip(level, -128.0, 383.0))
        self.window_level = (window, level)
        self.image.set_lut(window_level_lut(window, level))
        self.window_level_changed.emit(window, level)

    def _drag_window_level(self, dx: float, dy: float) -> None:
        w, lv = self.window_level
        self.set_window_level(w + dx * WL_DRAG_GAIN, lv - dy * WL_DRAG_GAIN)

    def apply_window_level_preset(self, name: str) -> None:
        self.set_window_level(*WINDOW_LEVEL_PRESETS[name])

    def reset_window_level(self) -> None:
        self.set_window_level(*FULL_WINDOW)

    def set_pixel_aspect(self, spacing_mm: tuple[float, float] | None) -> None:
        """Draw pixels of ``(row_mm, col_mm)`` in their shape (a pixel 0.3 mm tall and 0.1 mm wide is
        three times as tall on screen as it is wide); square when the pixel size is not known."""
        ratio = 1.0 if not spacing_mm else float(spacing_mm[1]) / float(spacing_mm[0])
        if not np.isfinite(ratio) or ratio <= 0:
            ratio = 1.0
        if ratio != getattr(self, "_aspect", 1.0):
            self._aspect = ratio
            self.view.setAspectLocked(True, ratio=ratio)
            if self._shape is not None:
                self.view.setRange(QRectF(0, 0, self._shape[1], self._shape[0]), padding=0.0)

    # -- content ---------------------------------------------------------------------------
    def set_frame(self, frame: np.ndarray) -> None:
        """Show a (H, W) uint8 frame. Fixed levels 0-255: no per-frame statistics."""
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        self.image.setImage(frame)
        if shape != self._shape:
            self._shape = shape
            self._mask_slices = None
            self.view.set_extent(shape[1], shape[0])
            self.view.setRange(QRectF(0, 0, shape[1], shape[0]), padding=0.0)
            self.placeholder.hide()

    def clear(self) -> None:
        self.image.clear()
        self.overlay.clear()
        self.hide_ellipse()
        self._shape = None
        self._mask_shown = None
        self.placeholder.show()

    def set_mask(self, mask: np.ndarray | None, fov: np.ndarray | None = None) -> None:
        """Show a (S, S) uint8 label mask at model resolution, or hide the overlay (None); with
        ``fov`` (bool, the frame's shape), only inside that field of view, as it is measured (the
        mask drawn over a scanner's colour bar and buttons beside the fan showed what no answer used)."""
        if mask is None or self._shape is None:
            if self._mask_shown is not None:
                self.overlay.hide()
                self._mask_shown = None
            return
        if mask is self._mask_shown and self.overlay.isVisible():
            return
        size = int(mask.shape[-1])
        if self._mask_slices is None or size != self._mask_size:
            rows, cols, rect = mask_placement(self._shape[0], self._shape[1], size)
            self._mask_slices = (rows, cols)
            self._mask_size = size
            self._mask_rect = rect
        rows, cols = self._mask_slices
        part = mask[rows, cols]
        if fov is not None and fov.shape == tuple(self._shape[:2]):
            part = part * self._fov_at_mask(fov, part.shape)
        # Draw only the mask's bounding box: blending a scaled image costs per pixel drawn.
        any_r = np.flatnonzero(part.any(axis=1))
        if not len(any_r):
            self.overlay.hide()
            self._mask_shown = mask
            return
        any_c = np.flatnonzero(part.any(axis=0))
        r0, r1, c0, c1 = int(any_r[0]), int(any_r[-1]) + 1, int(any_c[0]), int(any_c[-1]) + 1
        scale = self._mask_rect.width() / part.shape[1]
        self.overlay.setImage(part[r0:r1, c0:c1], autoLevels=False, levels=(0, 255), lut=self._lut)
        self.overlay.setRect(QRectF(self._mask_rect.x() + c0 * scale, self._mask_rect.y() + r0 * scale,
                                    (c1 - c0) * scale, (r1 - r0) * scale))
        self.overlay.show()
        self._mask_shown = mask

    def _fov_at_mask(self, fov: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``fov`` sampled at the centres of the shown mask's pixels (uint8 0/1; kept per field of view)."""
        key = (id(fov), shape, self._mask_size)
        if getattr(self, "_fov_key", None) != key:
            scale = self._mask_rect.width() / shape[1]
            ys = np.clip(((self._mask_rect.y() + (np.arange(shape[0]) + 0.5) * scale)).astype(int), 0, fov.shape[0] - 1)
            xs = np.clip(((self._mask_rect.x() + (np.arange(shape[1]) + 0.5) * scale)).astype(int), 0, fov.shape[1] - 1)
            self._fov_small = fov[np.ix_(ys, xs)].astype(np.uint8)
            self._fov_key = key
        return self._fov_small

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay.setOpacity(float(opacity))

    def set_overlay_visible(self, on: bool) -> None:
        """Hide the overlay; showing it again happens through the next :meth:`set_mask`."""
        if not on:
            self.overlay.hide()
            self._mask_shown = None

    def show_ellipse(self, points: np.ndarray, text: str, detail: str = "") -> None:
        """Draw a closed outline ``points`` (n, 2) of (x, y) pixels with a short label above it
        (``detail``: its tooltip, e.g. why a value is doubtful)."""
        pts = np.vstack([points, points[:1]])
        self.ellipse.setData(pts[:, 0], pts[:, 1])
        self._ellipse_text = text
        self.ellipse_label.setToolTip(detail)
        self._ellipse_pts = pts
        self._place_ellipse_label()
        self.ellipse.show()
        self.ellipse_label.show()

    def _place_ellipse_label(self, *_args) -> None:
        """Put the AC label above the outline (below it when the view has no room above: an
        outline at the top of the frame put its label off the view, or over the abdomen; over the
        image at the view's foot when there is room neither above nor below), centred
        on it but inside the view, and clear of the corners' text: on a laptop-size window the
        top-left corner covered the AC's first digits ("…1.6 mm" for 101.6 mm) and the top-right
        one the label's demo notice. It moves sideways or below the outline for them; where there
        is no such room, the corners it would cover give way (hidden while it is there)."""
        for lab in self._yielded:
            lab.show()
        self._yielded = []
        pts = self._ellipse_pts
        if pts is None:
            return
        top, bottom = float(pts[:, 1].min()), float(pts[:, 1].max())
        try:
            per_x, per_pixel = (float(v) for v in self.view.viewPixelSize())
        except Exception:  # noqa: BLE001 - a view not laid out yet: one screen pixel per frame pixel
            per_x = per_pixel = 1.0
        self._fit_ellipse_label(self.view.width() - 2 * LABEL_MARGIN)
        box = self.ellipse_label.textItem.boundingRect()
        needed = (box.height() + 6) * per_pixel
        (view_left, view_right), (view_top, view_bottom) = (sorted(float(v) for v in r) for r in self.view.viewRange())
        # centred on the outline, but kept inside the view: an outline near the side put half its
        # label off the view ("4.7 mm (doubtful)" for 194.7 mm)
        half = box.width() * per_x / 2.0
        x = float(pts[:, 0].mean())
        x = min(max(x, view_left + half), view_right - half) if view_right - view_left > 2 * half else view_left + half
        above = (x - half, top - 6 * per_pixel - box.height() * per_pixel)
        below = (x - half, bottom + 6 * per_pixel)
        # an outline spanning the view's height leaves room neither above nor below: the label then
        # goes over the image at the view's foot (it was put below the view, out of sight)
        inside = (x - half, max(view_top, view_bottom - needed))
        if top - needed >= view_top:
            first = above
        elif bottom + needed <= view_bottom:
            first = below
        else:
            first = inside
        spots = [first] + [s for s in (above, below, inside) if s is not first and view_top <= s[1]
                           and s[1] + box.height() * per_pixel <= view_bottom]
        placed = self._corner_rects()  # (every corner is shown again above: measured once for both uses)
        corners = [rect for _lab, rect in placed]
        chosen = None
        if corners and per_x > 0 and per_pixel > 0:
            for spot in spots:
                free = self._clear_of(corners, spot, box.width(), box.height(), per_x, per_pixel,
                                      view_left, view_right)
                if free is not None:
                    chosen = free
                    break
        if chosen is None:
            chosen = first
            rect = self._screen_rect(first, box.width(), box.height()) if corners else None
            for lab, text_rect in placed if rect is not None else ():
                if rect.adjusted(-2, -2, 2, 2).intersects(text_rect):
                    lab.hide()
                    self._yielded.append(lab)
        self.ellipse_label.setAnchor((0.0, 0.0))
        self.ellipse_label.setPos(*chosen)

    def _fit_ellipse_label(self, room: float) -> None:
        """The AC label's whole text inside ``room`` screen pixels: on one line where it fits, else
        its parts (the AC, its caveat, the notice: split at " · ") on lines of their own, in a
        smaller font as far as :data:`LABEL_MIN_POINTS` where even those do not fit, and last
        wrapped between words. On an 800 x 600 window the label was wider than the view and read
        "... demo model, not for" with "clinical use" cut off."""
        label, text = self.ellipse_label, self._ellipse_text
        font = QFont(self._label_font)
        label.setFont(font)
        label.setTextWidth(-1)
        label.setText(text)
        if room <= 0 or label.textItem.boundingRect().width() <= room:
            return
        label.setText(text.replace(" · ", "\n"))
        while label.textItem.boundingRect().width() > room and font.pointSize() > LABEL_MIN_POINTS:
            font.setPointSize(font.pointSize() - 1)
            label.setFont(font)
        if label.textItem.boundingRect().width() > room:
            # between words, but never between a number and its unit (nor "AC" and its number)
            label.setText(re.sub(r"(?<=\d) (?=mm\b)|(?<=\bAC) (?=\d)", "\u00a0", text.replace(" · ", "\n")))
            label.setTextWidth(room)

    def _screen_rect(self, spot: tuple[float, float], width: float, height: float) -> QRectF | None:
        """The label's rectangle in this widget's pixels with its top-left at ``spot`` (frame pixels)."""
        try:
            scene = self.view.mapViewToScene(QPointF(*spot))
        except Exception:  # noqa: BLE001 - not laid out yet
            return None
        at = self.graphics.viewport().mapTo(self, self.graphics.mapFromScene(scene))
        return QRectF(at.x(), at.y(), width, height)

    def _clear_of(self, corners: list[QRectF], spot: tuple[float, float], width: float, height: float,
                  per_x: float, per_pixel: float, view_left: float, view_right: float) -> tuple[float, float] | None:
        """``spot`` (the label's top-left, frame pixels) moved sideways as little as needed for the
        label to cover no corner's text, inside the view; None when no such place is at that height."""
        rect = self._screen_rect(spot, width, height)
        if rect is None:
            return spot
        lo, hi = view_left, view_right - width * per_x  # where the label's left edge may go (frame pixels)
        tries = [0.0]
        for c in corners:
            if c.top() < rect.bottom() + 2 and c.bottom() > rect.top() - 2:
                tries += [(c.right() + 4 - rect.left()) * per_x, (c.left() - 4 - rect.right()) * per_x]
        for dx in sorted(tries, key=abs):
            x = spot[0] + dx
            if x < lo - 0.5 * per_x or x > hi + 0.5 * per_x:
                continue
            moved = rect.translated(dx / per_x, 0)
            if not any(moved.adjusted(-2, -2, 2, 2).intersects(c) for c in corners):
                return (x, spot[1])
        return None

    def hide_ellipse(self) -> None:
        self._ellipse_pts = None
        for lab in self._yielded:
            lab.show()
        self._yielded = []
        if self.ellipse.isVisible():
            self.ellipse.hide()
            self.ellipse_label.hide()
