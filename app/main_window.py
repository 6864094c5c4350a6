"""The main window: frame view, quality curve, flagged frames, review panel.

All state lives in :class:`app.viewer_model.ViewerModel`; this module wires widgets to it.
Per frame change only cheap things happen (one image, one mask, a cursor line, a few labels);
the curve, the flagged list and the progress bar are refreshed by a timer at most
``REFRESH_HZ`` times a second while results arrive.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import theme
from app.curve_view import QualityCurve
from app.flagged_panel import FlaggedPanel
from app.frame_view import FrameView
from app.review_panel import LABEL_KEYS, ReviewPanel
from app.settings import AppSettings
from app.viewer_model import FPS_RANGE, OPACITY_STEP, ViewerModel
from app.worker import ScoringController
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.choice import ModelChoice

REFRESH_HZ = 10
MODEL_LABEL_WIDTH = 250  # px; the full description is in the tooltip
SWEEP_FILTER = "Sweeps (*.mha *.mhd *.nrrd *.nii *.nii.gz *.dcm);;All files (*)"

KEY_HELP = """<table cellpadding=3>
<tr><td><b>← / →</b></td><td>previous / next frame (also the mouse wheel)</td></tr>
<tr><td><b>PgUp / PgDn</b></td><td>10 frames back / on</td></tr>
<tr><td><b>Home / End</b></td><td>first / last frame</td></tr>
<tr><td><b>Space</b></td><td>play / pause cine</td></tr>
<tr><td><b>n / p</b></td><td>next / previous flagged frame</td></tr>
<tr><td><b>b</b></td><td>best frame of this sweep</td></tr>
<tr><td><b>s</b></td><td>show / hide the segmentation overlay</td></tr>
<tr><td><b>a / d</b></td><td>overlay less / more opaque</td></tr>
<tr><td><b>1 / 2 / 0</b></td><td>review: optimal / suboptimal / not usable</td></tr>
<tr><td><b>Enter</b></td><td>review: save and next</td></tr>
<tr><td><b>[ / ]</b></td><td>review: previous / next in the queue</td></tr>
<tr><td><b>Ctrl+wheel</b></td><td>zoom; drag to pan; double-click to fit</td></tr>
</table>"""


def _fmt_p(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def format_ga(weeks: float | None) -> str:
    if weeks is None or not math.isfinite(weeks):
        return "–"
    w = int(weeks)
    d = int(round((weeks - w) * 7))
    if d == 7:
        w, d = w + 1, 0
    return f"{w}w{d}d"


class MainWindow(QMainWindow):
    """``scoring_ended(complete: bool, message: str)`` fires when a run ends for any reason
    (finished, cancelled, failed, no model)."""

    scoring_ended = Signal(bool, str)
    sweep_opened = Signal(str)
    closed = Signal()  # after the window has closed and its worker has stopped
    sweep_open_failed = Signal(str)

    def __init__(self, settings: AppSettings | None = None, choice: ModelChoice | None = None,
                 engine_factory=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings if settings is not None else AppSettings.load()
        s = self.settings
        if choice is None:
            choice = (ModelChoice(model="demo", device=s.device) if s.model == "demo" else ModelChoice(
                model=None, cls=Path(s.cls_bundle) if s.cls_bundle else None,
                seg=Path(s.seg_bundle) if s.seg_bundle else None,
                base=Path(s.base_weights) if s.base_weights else None, device=s.device))
        self.choice = choice
        self.models = None  # models.choice.LoadedModels once loaded
        self._models_for = None  # the ModelChoice self.models was loaded for
        self._user_asked_models = False
        self._drawn_version = -1
        self._last_frame_ms = 0.0
        self._loader = None  # SweepLoader of the file being opened
        self._train_dialog = None  # app.train_dialog.TrainDialog, kept while the window lives
        # False for headless runs: problems go to stderr and the status bar, never a modal box.
        self.interactive = True

        self.setWindowTitle("FetalIQA")
        self.setAcceptDrops(True)
        self.resize(1440, 900)
        self.setDockOptions(QMainWindow.AnimatedDocks | QMainWindow.AllowTabbedDocks)

        self.model = ViewerModel()
        self.model.set_opacity(s.opacity)
        self.model.set_fps(s.fps)
        self.scoring = ScoringController(self, engine_factory=engine_factory)

        self._build_views()
        self._build_docks()
        self._build_actions()
        self._build_status()
        self._connect()

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setInterval(int(1000 / REFRESH_HZ))
        self._refresh_timer.timeout.connect(self.refresh)
        self._refresh_timer.start()
        self._cine = QTimer(self)
        self._cine.setTimerType(Qt.PreciseTimer)
        self._cine.timeout.connect(self.model.tick)

        if s.geometry:
            self.restoreGeometry(QByteArray.fromBase64(s.geometry.encode()))
        if s.window_state:
            self.restoreState(QByteArray.fromBase64(s.window_state.encode()))
        self._update_model_label()
        self._show_frame(0)

    # -- construction ----------------------------------------------------------------------
    def _build_views(self) -> None:
        self.frame_view = FrameView()
        self.curve = QualityCurve()
        self.curve.setMinimumHeight(150)

        self.play_button = QToolButton()
        self.play_button.setText("▶")
        self.play_button.setToolTip("Play / pause cine (Space)")
        self.play_button.setCheckable(True)
        self.play_button.setFocusPolicy(Qt.NoFocus)
        self.play_button.setFixedWidth(34)
        self.fps_spin = QDoubleSpinBox()
        self.fps_spin.setRange(*FPS_RANGE)
        self.fps_spin.setDecimals(0)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.setValue(self.model.fps)
        self.fps_spin.setToolTip("Cine speed")
        self.fps_spin.setFocusPolicy(Qt.ClickFocus)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setPageStep(10)
        self.slider.setFocusPolicy(Qt.NoFocus)
        self.frame_label = QLabel("– / –")
        self.frame_label.setMinimumWidth(90)
        self.frame_label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)

        transport = QHBoxLayout()
        transport.setContentsMargins(8, 4, 8, 4)
        transport.addWidget(self.play_button)
        transport.addWidget(self.fps_spin)
        transport.addWidget(self.slider, 1)
        transport.addWidget(self.frame_label)

        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(0)
        tl.addWidget(self.frame_view, 1)
        tl.addLayout(transport)

        self.splitter = QSplitter(Qt.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.curve)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([640, 210])
        self.splitter.setFocusPolicy(Qt.StrongFocus)
        self.setCentralWidget(self.splitter)

    def _build_docks(self) -> None:
        self.flagged = FlaggedPanel(self.model)
        self.review = ReviewPanel(self.model, self.settings)
        self.flagged_dock = QDockWidget("Flagged frames", self)
        self.flagged_dock.setObjectName("flagged_dock")
        self.flagged_dock.setWidget(self.flagged)
        self.review_dock = QDockWidget("Review", self)
        self.review_dock.setObjectName("review_dock")
        self.review_dock.setWidget(self.review)
        for d in (self.flagged_dock, self.review_dock):
            d.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable
                          | QDockWidget.DockWidgetClosable)
            self.addDockWidget(Qt.RightDockWidgetArea, d)
        self.resizeDocks([self.flagged_dock], [360], Qt.Horizontal)

    def _build_actions(self) -> None:
        m = self.model
        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setMovable(False)
        tb.setIconSize(QSize(16, 16))
        tb.setToolButtonStyle(Qt.ToolButtonTextOnly)

        self.act_open = QAction("Open…", self, shortcut=QKeySequence.Open, triggered=self.open_dialog)
        self.act_models = QAction("Models…", self, triggered=self.models_dialog)
        self.act_train = QAction("Train…", self, shortcut=QKeySequence("Ctrl+T"), triggered=self.train_dialog)
        self.act_rescore = QAction("Score again", self, triggered=lambda: self.start_scoring(user=True))
        self.act_cancel = QAction("Cancel scoring", self, triggered=self.cancel_scoring)
        self.act_overlay = QAction("Overlay", self, checkable=True, checked=m.overlay_visible,
                                   toggled=m.set_overlay_visible)
        self.act_overlay.setToolTip("Show the segmentation overlay (s)")
        self.act_best = QAction("Best frame", self, triggered=m.go_to_best)
        self.act_best.setToolTip("Best frame of this sweep (b)")
        self.act_prev_flag = QAction("◀ Flagged", self, triggered=lambda: m.next_flagged(-1))
        self.act_prev_flag.setToolTip("Previous flagged frame (p)")
        self.act_next_flag = QAction("Flagged ▶", self, triggered=lambda: m.next_flagged(1))
        self.act_next_flag.setToolTip("Next flagged frame (n)")
        self.act_fit = QAction("Fit", self, triggered=lambda: self.frame_view.view.autoRange(padding=0.0))
        self.act_fit.setToolTip("Fit the frame to the view (double-click)")
        self.act_export = QAction("Export report…", self, triggered=self.review.export_report)
        self.act_labels = QAction("Export reviewer labels…", self, triggered=self.review.export_labels)
        self.act_quit = QAction("Quit", self, shortcut=QKeySequence.Quit, triggered=self.close)
        self.act_keys = QAction("Keyboard shortcuts", self, triggered=self.show_keys)

        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(int(round(m.opacity * 100)))
        self.opacity_slider.setFixedWidth(120)
        self.opacity_slider.setFocusPolicy(Qt.NoFocus)
        self.opacity_slider.setToolTip("Overlay opacity (a / d)")

        tb.addAction(self.act_open)
        tb.addAction(self.act_models)
        tb.addSeparator()
        tb.addAction(self.act_overlay)
        tb.addWidget(QLabel(" opacity"))
        tb.addWidget(self.opacity_slider)
        self.legend_label = QLabel(self._legend_html())
        tb.addWidget(self.legend_label)
        tb.addSeparator()
        tb.addAction(self.act_prev_flag)
        tb.addAction(self.act_best)
        tb.addAction(self.act_next_flag)
        tb.addSeparator()
        tb.addAction(self.act_fit)
        for w in tb.findChildren(QToolButton):
            w.setFocusPolicy(Qt.NoFocus)

        menu = self.menuBar()
        fm = menu.addMenu("&File")
        fm.addAction(self.act_open)
        self.recent_menu = fm.addMenu("Open recent")
        fm.addAction(self.act_export)
        fm.addAction(self.act_labels)
        fm.addSeparator()
        fm.addAction(self.act_quit)
        vm = menu.addMenu("&View")
        vm.addAction(self.act_overlay)
        vm.addAction(self.act_fit)
        vm.addAction(self.flagged_dock.toggleViewAction())
        vm.addAction(self.review_dock.toggleViewAction())
        sm = menu.addMenu("&Scoring")
        sm.addAction(self.act_models)
        sm.addAction(self.act_train)
        sm.addAction(self.act_rescore)
        sm.addAction(self.act_cancel)
        hm = menu.addMenu("&Help")
        hm.addAction(self.act_keys)
        self._rebuild_recent()

        def key(seq, fn) -> None:
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.WindowShortcut)
            sc.activated.connect(fn)

        key(Qt.Key_Right, lambda: m.step(1))
        key(Qt.Key_Left, lambda: m.step(-1))
        key(Qt.Key_PageDown, lambda: m.page(1))
        key(Qt.Key_PageUp, lambda: m.page(-1))
        key(Qt.Key_Home, m.home)
        key(Qt.Key_End, m.end)
        key(Qt.Key_Space, m.toggle_playing)
        key(Qt.Key_N, lambda: m.next_flagged(1))
        key(Qt.Key_P, lambda: m.next_flagged(-1))
        key(Qt.Key_B, m.go_to_best)
        key(Qt.Key_S, m.toggle_overlay)
        key(Qt.Key_A, lambda: m.change_opacity(-OPACITY_STEP))
        key(Qt.Key_D, lambda: m.change_opacity(OPACITY_STEP))
        for k, label in LABEL_KEYS.items():
            key(k, lambda lab=label: self.review.choose(lab))
        key(Qt.Key_Return, self.review.save_and_next)
        key(Qt.Key_Enter, self.review.save_and_next)
        key(Qt.Key_BracketLeft, lambda: self.review.move(-1))
        key(Qt.Key_BracketRight, lambda: self.review.move(1))
        key(Qt.Key_Escape, self.cancel_scoring)

    @staticmethod
    def _legend_html() -> str:
        parts = []
        for label, name in theme.LABEL_NAMES.items():
            r, g, b = theme.LABEL_COLOURS[label]
            parts.append(f"<span style='color:rgb({r},{g},{b})'>■</span> {name}")
        return "&nbsp;&nbsp;" + "&nbsp;&nbsp;".join(parts) + "&nbsp;&nbsp;"

    def _build_status(self) -> None:
        sb = self.statusBar()
        sb.setSizeGripEnabled(False)
        self.status_frame = QLabel()
        self.status_values = QLabel()
        self.status_ac = QLabel()
        self.status_threshold = QLabel()
        self.status_model = QLabel()
        self.status_model.setObjectName("dim")
        self.status_model.setMaximumWidth(MODEL_LABEL_WIDTH)
        self.status_message = QLabel()
        self.status_message.setObjectName("dim")
        self._message_timer = QTimer(self)
        self._message_timer.setSingleShot(True)
        self._message_timer.timeout.connect(self.status_message.clear)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setFocusPolicy(Qt.NoFocus)
        self.cancel_button.clicked.connect(self.cancel_scoring)
        self.cancel_button.setEnabled(False)
        for w in (self.status_frame, self.status_values, self.status_ac, self.status_threshold):
            sb.addWidget(w)
        self.status_message.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        sb.addWidget(self.status_message, 1)
        sb.addPermanentWidget(self.status_model)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)

    def _connect(self) -> None:
        m = self.model
        m.events.frame.connect(self._show_frame)
        m.events.overlay.connect(self._overlay_changed)
        m.events.threshold.connect(self._threshold_changed)
        m.events.playing.connect(self._playing_changed)
        m.events.fps.connect(self._fps_changed)
        m.events.progress.connect(self._update_progress)
        self.frame_view.scrub.connect(m.step)
        self.curve.frame_picked.connect(m.set_frame)
        self.curve.threshold_moved.connect(m.set_threshold)
        self.slider.valueChanged.connect(m.set_frame)
        self.play_button.toggled.connect(m.set_playing)
        self.fps_spin.valueChanged.connect(m.set_fps)
        self.opacity_slider.valueChanged.connect(lambda v: m.set_opacity(v / 100.0))
        self.flagged.frame_chosen.connect(m.set_frame)
        self.review.message.connect(lambda text: self.notify(text, 6000))
        sc = self.scoring
        sc.models_ready.connect(self._models_ready)
        sc.started_scoring.connect(self._started_scoring)
        sc.batch.connect(m.apply_batch)
        sc.finished.connect(self._scoring_finished)
        sc.failed.connect(self._scoring_failed)

    # -- files -----------------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = str(Path(self.settings.recent_files[0]).parent) if self.settings.recent_files else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open sweep", start, SWEEP_FILTER)
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path, score: bool = True, block: bool = False) -> bool:
        """Open a sweep file: read off the UI thread (the current case stays usable meanwhile),
        then show its first frame and score it. A file that cannot be read gives a message box.

        ``block=True`` reads it here and returns whether it opened (for scripts and tests).
        """
        from app.worker import SweepLoader, load_sweep_for_viewer

        path = str(path)
        if block:
            try:
                sweep = load_sweep_for_viewer(path)
            except FetalIQAError as exc:
                self.alert("Cannot open sweep", str(exc))
                return False
            except (OSError, ValueError, MemoryError) as exc:
                self.alert("Cannot open sweep",
                           f"{path}: could not be read as a sweep ({type(exc).__name__}: {exc}).")
                return False
            self._opened(path, sweep, score)
            return True
        loader = SweepLoader(path, self)
        self._loader = loader  # the latest request wins; older results are dropped
        loader.loaded.connect(lambda p, sw, ld=loader: self._opened(p, sw, score) if ld is self._loader else None)
        loader.failed.connect(lambda p, msg, ld=loader: self._open_failed(msg) if ld is self._loader else None)
        loader.finished.connect(loader.deleteLater)
        self.notify(f"Opening {Path(path).name}…", 60000)
        loader.start()
        return True

    def _opened(self, path: str, sweep, score: bool) -> None:
        self._loader = None
        self.add_recent(path)
        self.notify(f"Opened {Path(path).name}: {sweep.n_frames} frames.", 5000)
        self.set_sweep(sweep, score=score)
        self.sweep_opened.emit(path)

    def _open_failed(self, message: str) -> None:
        self._loader = None
        self.status_message.clear()
        self.alert("Cannot open sweep", message)
        self.sweep_open_failed.emit(message)

    def add_recent(self, path: str | Path) -> None:
        self.settings.add_recent(path)
        self.settings.save()
        self._rebuild_recent()

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.recent_files:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, path=p: self.open_path(path))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def dragEnterEvent(self, ev):  # noqa: N802
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802
        for url in ev.mimeData().urls():
            if url.isLocalFile():
                ev.acceptProposedAction()
                self.open_path(url.toLocalFile())
                return

    def set_sweep(self, sweep, score: bool = True) -> None:
        """Show a sweep at once (frame 0) and score it in the background."""
        self.scoring.stop()
        self.model.set_playing(False)
        self.model.set_sweep(sweep)
        self.curve.set_sweep(self.model.n_frames, self.model.sweep_ranges, self.model.sweep_kinds)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(self.model.n_frames - 1, 0))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        name = Path(sweep.path).name if getattr(sweep, "path", None) else "sweep"
        self.setWindowTitle(f"{name} — FetalIQA")
        self._drawn_version = -1
        self._show_frame(self.model.frame)
        self.refresh()
        if score:
            self.start_scoring()

    # -- scoring ---------------------------------------------------------------------------
    def start_scoring(self, user: bool = False) -> None:
        if self.model.sweep is None:
            return
        self._user_asked_models = user
        models = self.models if self._models_for == self.choice else None
        self.model.set_scoring(True, "loading models…" if models is None else "")
        self.cancel_button.setEnabled(True)
        self.scoring.start(self.model.sweep, choice=self.choice, models=models, focus=self.model.frame)

    def cancel_scoring(self) -> None:
        if self.scoring.running:
            self.scoring.cancel()
            self.cancel_button.setEnabled(False)
            self.model.scoring.message = "cancelling…"
            self._update_progress()

    def models_dialog(self) -> None:
        from app.model_dialog import ModelDialog

        dlg = ModelDialog(self.choice, self)
        if dlg.exec() != ModelDialog.Accepted:
            return
        self.set_model_choice(dlg.choice(), user=True)

    def train_dialog(self):
        """Open the (modeless) training dialog; one per window, so a run can be watched again."""
        from app.train_dialog import TrainDialog

        if self._train_dialog is None:
            self._train_dialog = TrainDialog(self, base_weights=self.choice.base, device=self.choice.device,
                                             interactive=self.interactive)
            self._train_dialog.load_requested.connect(self.load_trained_bundle)
        self._train_dialog.show()
        self._train_dialog.raise_()
        self._train_dialog.activateWindow()
        return self._train_dialog

    def load_trained_bundle(self, bundle: str, base: str = "") -> bool:
        """Use a bundle as the classifier, the segmenter or both (by its manifest's task), keeping
        the other model of a custom choice; ``base``: the FetalCLIP weights it was trained on."""
        from fetaliqa_core.models.bundle import read_manifest

        try:
            task = read_manifest(bundle).task
        except FetalIQAError as exc:
            self.alert("Load trained model", str(exc))
            return False
        cur = self.choice
        keep = cur.model != "demo"
        cls, seg = (cur.cls, cur.seg) if keep else (None, None)
        if task in ("cls", "joint"):
            cls = Path(bundle)
        if task in ("seg", "joint"):
            seg = Path(bundle)
        base_path = Path(base) if base else (cur.base if keep else None)
        self.set_model_choice(ModelChoice(model=None, cls=cls, seg=seg, base=base_path, device=cur.device))
        self.notify(f"Using the trained {task} bundle {Path(bundle).name}.", 8000)
        return True

    def set_model_choice(self, choice: ModelChoice, user: bool = True) -> None:
        self.choice = choice
        s = self.settings
        s.model = "demo" if choice.model == "demo" else "custom"
        s.cls_bundle = str(choice.cls or "")
        s.seg_bundle = str(choice.seg or "")
        s.base_weights = str(choice.base or "")
        s.device = choice.device
        s.save()
        self._update_model_label()
        if self.model.sweep is not None:
            self.start_scoring(user=user)

    def use_models(self, models) -> None:
        """Score with already loaded models (``models.choice.LoadedModels``-like) from now on."""
        self.models = models
        self._models_for = self.choice
        self.model.set_models(models)
        self._update_model_label()
        self.review.bundles = self._bundle_info()

    def _models_ready(self, models) -> None:
        self.models = models
        self._models_for = self.choice
        self.model.set_models(models)
        self._update_model_label()
        self.review.bundles = self._bundle_info()

    def _bundle_info(self) -> dict:
        info: dict = {}
        if self.models is None:
            return info
        for key in ("cls", "seg"):
            lm = getattr(self.models, key)
            if lm is not None:
                info[key] = {"hash": getattr(lm, "bundle_hash", None),
                             "task": getattr(lm, "task", None)}
                if key == "cls" and getattr(lm, "threshold", None) is not None:
                    info[key]["threshold"] = float(lm.threshold)  # the bundle's own
        info["description"] = self.models.describe()
        return info

    def _started_scoring(self, has_cls: bool, has_seg: bool) -> None:
        self.model.start_results(has_cls, has_seg)
        self.model.set_scoring(True)

    def _scoring_finished(self, complete: bool, n_done: int) -> None:
        n = self.model.n_frames
        msg = "scored" if complete else f"stopped: {n_done} of {n} frames scored"
        self.model.set_scoring(False, msg)
        self.cancel_button.setEnabled(False)
        self.refresh()
        self.review.results_updated(final=True)
        self.notify(
            f"All {n} frames scored." if complete else f"Scoring stopped; {n_done} of {n} frames scored.", 8000)
        self.scoring_ended.emit(bool(complete), msg)

    def _scoring_failed(self, message: str) -> None:
        loading = self.models is None or self._models_for != self.choice
        self.model.set_scoring(False, "no model loaded" if loading else "failed")
        self.cancel_button.setEnabled(False)
        if loading:
            self.models = None
            self._models_for = None
        self._update_model_label(message if loading else None)
        quiet = loading and not self._user_asked_models and self.choice.model == "demo"
        if quiet:
            # Starting up without the demo model is normal: say so, keep showing frames.
            self.notify(f"No model: {message}", 15000)
        else:
            self.alert("Models" if loading else "Scoring", message)
        self.scoring_ended.emit(False, message)

    def _update_model_label(self, problem: str | None = None) -> None:
        if self.models is not None and self._models_for == self.choice:
            text = f"Model: {self.models.describe()}"
        elif problem:
            text = "Model: none loaded"
        else:
            text = f"Model: {self.choice.describe() or 'none'} (not loaded yet)"
        self.status_model.setToolTip(problem or text)
        fm = self.status_model.fontMetrics()
        self.status_model.setText(fm.elidedText(text, Qt.ElideMiddle, MODEL_LABEL_WIDTH - 12))

    def _update_progress(self) -> None:
        st = self.model.scoring
        total = max(st.n_total, 1)
        self.progress.setRange(0, total)
        self.progress.setValue(st.n_done)
        if st.running:
            rate = f" · {st.frames_per_second:.1f} frames/s" if st.frames_per_second > 0 else ""
            eta = _fmt_eta(st.eta_seconds)
            eta = f" · {eta} left" if eta else ""
            text = st.message or f"{st.n_done} / {st.n_total} frames{rate}{eta}"
        else:
            text = f"{st.n_done} / {st.n_total} frames · {st.message}" if st.message else (
                f"{st.n_done} / {st.n_total} frames" if st.n_total else "")
        self.progress.setFormat(text)
        self.cancel_button.setEnabled(st.running and self.scoring.running)

    # -- model events ----------------------------------------------------------------------
    def _show_frame(self, index: int) -> None:
        """Everything that follows the current frame; kept cheap (runs on every scrub step)."""
        t0 = time.perf_counter()
        m = self.model
        if m.sweep is None:
            self.frame_view.clear()
            self.frame_label.setText("– / –")
            self.status_frame.setText("No sweep open")
            return
        self.frame_view.set_frame(m.sweep.frames[index])
        self._update_overlay()
        self.curve.set_cursor(index)
        if self.slider.value() != index:
            self.slider.blockSignals(True)
            self.slider.setValue(index)
            self.slider.blockSignals(False)
        self.scoring.focus(index)
        self._update_frame_text()
        self._last_frame_ms = (time.perf_counter() - t0) * 1000.0

    def _update_overlay(self) -> None:
        m = self.model
        if m.sweep is None:
            return
        mask = m.mask() if m.overlay_visible else None
        self.frame_view.set_mask(mask)
        self.frame_view.set_overlay_opacity(m.opacity)
        self._update_ellipse()

    def _update_ellipse(self) -> None:
        m = self.model
        fl = m.last_flags
        f = m.frame
        if not m.overlay_visible or (f not in fl.best and f != fl.chosen):
            self.frame_view.hide_ellipse()
            return
        ac = m.measure_ac(f)
        if ac is None:
            self.frame_view.hide_ellipse()
            return
        from fetaliqa_core.analysis import ellipse_polygon

        ga = m.gestational_age(ac)
        ga_text = f" · GA {format_ga(ga.weeks)}" if ga is not None and math.isfinite(ga.weeks) else ""
        self.frame_view.show_ellipse(ellipse_polygon(ac), f"AC {ac.ac_mm:.1f} mm{ga_text}")

    def _update_frame_text(self) -> None:
        m = self.model
        i = m.frame
        k = m.sweep_index()
        kind = m.sweep_kinds[k] if k < len(m.sweep_kinds) else "unknown"
        kind_text = f" {kind}" if kind != "unknown" else ""
        self.frame_label.setText(f"{i} / {m.n_frames - 1}")
        self.status_frame.setText(f"Frame {i + 1}/{m.n_frames} · sweep {k + 1}{kind_text}")
        v = m.frame_values()
        r = m.results
        scored = r is not None and 0 <= i < r.n_frames and bool(r.done[i])
        if not scored:
            self.status_values.setText("not scored yet")
            values_html = "<span style='color:%s'>not scored yet</span>" % theme.TEXT_DIM
        else:
            parts = []
            if r.has_cls:
                parts.append(f"p_cls {_fmt_p(v['p_cls'])}")
            if r.has_seg:
                parts.append(f"p_seg {_fmt_p(v['p_seg'])}")
                parts.append(f"mask {v['area'] if v['area'] is not None else 0} px")
            self.status_values.setText(" · ".join(parts))
            values_html = "<br>".join(
                ([f"<span style='color:{theme.CLS_COLOUR}'>classifier {_fmt_p(v['p_cls'])}</span>"] if r.has_cls else [])
                + ([f"<span style='color:{theme.SEG_COLOUR}'>mask score {_fmt_p(v['p_seg'])}</span>"] if r.has_seg else []))
        fl = m.last_flags
        tags = []
        if i == fl.chosen:
            tags.append(f"<span style='color:{theme.BEST_COLOUR}'>★ chosen frame</span>")
        elif i in fl.best:
            tags.append(f"<span style='color:{theme.BEST_COLOUR}'>best of sweep {k + 1}</span>")
        verdict = m.verdicts.get(i)
        if verdict:
            tags.append(f"reviewed: {verdict.replace('_', ' ')}")
        name = Path(m.sweep.path).name if getattr(m.sweep, "path", None) else ""
        tl = (f"<b>{i}</b> / {m.n_frames - 1}<br>sweep {k + 1}{kind_text}"
              + (f"<br><span style='color:{theme.TEXT_DIM}'>{name}</span>" if name else ""))
        self.frame_view.set_corners(tl=tl, tr=values_html, bl="<br>".join(tags))

    def _overlay_changed(self) -> None:
        m = self.model
        if self.act_overlay.isChecked() != m.overlay_visible:
            self.act_overlay.setChecked(m.overlay_visible)
        pct = int(round(m.opacity * 100))
        if self.opacity_slider.value() != pct:
            self.opacity_slider.blockSignals(True)
            self.opacity_slider.setValue(pct)
            self.opacity_slider.blockSignals(False)
        self.frame_view.set_overlay_visible(m.overlay_visible)
        self._update_overlay()
        self.settings.opacity = m.opacity

    def _threshold_changed(self, value: float) -> None:
        self.curve.set_threshold(value)
        self._drawn_version = -1  # flags depend on it
        self._update_threshold_label()

    def _update_threshold_label(self) -> None:
        if self.models is None:
            self.status_threshold.setText("")
            return
        t = self.model.thresholds
        self.status_threshold.setText(t.describe())
        on = "the classifier's p_cls" if t.score == "p_cls" else "the mask score p_seg (0.50: mask covers 1 %)"
        self.status_threshold.setToolTip(f"Frames are flagged at {t.describe()} on {on}; drag the line "
                                         "in the quality curve to change it.")

    def _playing_changed(self, on: bool) -> None:
        if on:
            self._cine.start(int(round(1000.0 / self.model.fps)))
        else:
            self._cine.stop()
        self.play_button.blockSignals(True)
        self.play_button.setChecked(on)
        self.play_button.setText("❚❚" if on else "▶")
        self.play_button.blockSignals(False)

    def _fps_changed(self, fps: float) -> None:
        if self.fps_spin.value() != fps:
            self.fps_spin.setValue(fps)
        if self._cine.isActive():
            self._cine.setInterval(int(round(1000.0 / fps)))
        self.settings.fps = fps

    # -- periodic refresh ------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw what depends on the results (curve, flags, status) if they changed."""
        m = self.model
        if m.sweep is None:
            return
        if m.results_version == self._drawn_version and not m.flags_dirty:
            return
        self._drawn_version = m.results_version
        flags = m.flags
        self.curve.set_results(m.results, flags)
        self.flagged.update_flags(flags)
        self._update_overlay()
        self._update_frame_text()
        self._update_case_status()
        self._update_progress()

    def _update_case_status(self) -> None:
        m = self.model
        chosen = m.flags.chosen
        if chosen is None:
            self.status_ac.setText("AC –" if m.results is None or not m.results.n_done else "AC – (no frame passes)")
            return
        ac = m.measure_ac(chosen)
        if ac is None:
            self.status_ac.setText(f"best {chosen}: AC not measurable")
            return
        ga = m.gestational_age(ac)
        ga_text = format_ga(ga.weeks) if ga is not None else "–"
        flag = " (outside Hadlock range)" if ga is not None and ga.out_of_range else ""
        self.status_ac.setText(f"best {chosen}: AC {ac.ac_mm:.1f} mm · GA {ga_text}{flag}")

    # -- misc ------------------------------------------------------------------------------
    def notify(self, text: str, timeout_ms: int = 8000) -> None:
        """A passing message in the status bar (the frame/score fields stay visible)."""
        self.status_message.setText(text)
        self.status_message.setToolTip(text)
        self._message_timer.start(timeout_ms)

    def alert(self, title: str, message: str) -> None:
        """A problem the user must see: a message box (stderr and status bar when headless)."""
        self.notify(message, 15000)
        if self.interactive:
            QMessageBox.warning(self, title, message)
        else:
            import sys

            print(f"fetaliqa: {message}", file=sys.stderr)

    def show_keys(self) -> None:
        QMessageBox.information(self, "Keyboard shortcuts", KEY_HELP)

    def save_screenshot(self, path: str | Path) -> Path:
        """Render the whole window to a PNG (works offscreen)."""
        self.refresh()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path), "PNG"):
            raise FetalIQAError(f"Could not write the screenshot {path}: check that its folder is writable.")
        return path

    def closeEvent(self, ev):  # noqa: N802
        self.model.set_playing(False)
        self._refresh_timer.stop()
        s = self.settings
        s.geometry = bytes(self.saveGeometry().toBase64()).decode()
        s.window_state = bytes(self.saveState().toBase64()).decode()
        s.save()
        # The engine stops after the batch in progress; hide first so closing feels instant.
        if self.scoring.any_running:
            self.hide()
        if self._loader is not None:
            self._loader.wait()
        if self._train_dialog is not None:
            self._train_dialog.shutdown()
        self.scoring.shutdown()
        self.review.close_store()
        super().closeEvent(ev)
        self.closed.emit()
