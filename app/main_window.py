"""The main window: frame view, quality curve, flagged frames, review panel.

All state lives in :class:`app.viewer_model.ViewerModel`; this module wires widgets to it.
Per frame change only cheap things happen (one image, one mask, a cursor line, a few labels);
the curve, the flagged list and the progress bar are refreshed by a timer at most
``REFRESH_HZ`` times a second while results arrive.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QByteArray, QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import keymap, window_chrome, window_tools
from app.curve_view import QualityCurve
from app.flagged_panel import FlaggedPanel
from app.formats import format_duration
from app.frame_view import FrameView
from app.window_files import SweepFilesMixin
from app.review_panel import ReviewPanel
from app.settings import AppSettings
from app.viewer_model import FPS_RANGE, ViewerModel
from app.worker import ScoringController
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.choice import ModelChoice

REFRESH_HZ = 10
MIN_SIZE = (1024, 600)  # px: the window works on a 1024x768 screen (less on a smaller one: see __init__)


class MainWindow(SweepFilesMixin, QMainWindow):
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
        self.settings.report = self._settings_said
        self.settings.saved_again = lambda: self.status_settings.hide()
        s = self.settings
        if choice is None:
            kept = dict(cascade=s.cascade, student=Path(s.student_bundle) if s.cascade and s.student_bundle else None,
                        device=s.device, precision=None if s.precision == "auto" else s.precision)
            choice = (ModelChoice(model="demo", **kept) if s.model == "demo" else ModelChoice(
                model=None, cls=Path(s.cls_bundle) if s.cls_bundle else None,
                seg=Path(s.seg_bundle) if s.seg_bundle else None,
                base=Path(s.base_weights) if s.base_weights else None, **kept))
        self.choice = choice
        self.models = None  # models.choice.LoadedModels once loaded
        self._models_for = None  # the ModelChoice self.models was loaded for
        self._loaded_choice: ModelChoice | None = None  # the last choice whose models loaded
        self._user_asked_models = False
        self._drawn_version = -1
        self._drawn_filling = True  # whether the curve was last drawn as scoring went on (set_results)
        self._last_frame_ms = 0.0
        self._answer_count = ""  # the status bar answer's "· n/N scored" (see _update_answer_count)
        self._answer_count_form = "short"  # which of its wordings (see _count_words)
        self._loader = None  # SweepLoader of the file being opened
        self._train_dialog = None  # app.train_dialog.TrainDialog, kept while the window lives
        self._dock_hidden_for_blinding = False  # the flagged frames' dock, hidden while a review is blind
        self._close_when_saved = False  # closing waits for a verdict the review database has not taken yet
        self._close_when_trained = False  # closing waits for a training run being stopped to end
        # False for headless runs: problems go to stderr and the status bar, never a modal box.
        self.interactive = True
        #: Problems already printed on stderr (headless), so the command line does not repeat them.
        self.told_on_stderr: set[str] = set()
        self._told_not_writable = 0  # the warnings of paths.not_writable() shown so far

        self.setWindowTitle("FetalIQA")
        self.setAcceptDrops(True)
        self.resize(*window_tools.fitted_size(self, (1440, 900)))
        # no larger than the screen: at 150 % on a 1366 x 768 laptop (911 x 512) the window came out
        # at 1024 x 600, its status bar with the answer below the screen
        self.setMinimumSize(*(min(a, b) for a, b in zip(MIN_SIZE, window_tools.fitted_size(self, MIN_SIZE))))
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

        self._settings_save_timer = QTimer(self)
        self._settings_save_timer.setSingleShot(True)
        self._settings_save_timer.setInterval(500)
        self._settings_save_timer.timeout.connect(lambda: self.settings.save())
        # and the review's queues follow a threshold once it rests (they kept the old one's flags)
        self._settings_save_timer.timeout.connect(lambda: self.review.results_updated())
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
        self._update_scoring_button()
        if s.problem:  # a damaged settings file, set aside: said once the window is up
            QTimer.singleShot(0, self._tell_settings_problem)

    def _tell_settings_problem(self) -> None:
        self.alert("Settings", self.settings.problem)

    def _settings_said(self, why: str) -> None:
        """A save's problem: a passing message, and while the settings cannot be saved a warning
        that stays in the status bar (the message alone was replaced within a millisecond by
        "Opened …", and the reviewer's name, models and speeds chosen were lost without a word)."""
        self.notify(f"Settings: {why}.", 15000)
        if self.settings.save_failed(why):
            self.status_settings.setToolTip(f"Settings: {why}.")
            self.status_settings.show()

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
        self.fps_spin = window_chrome.FpsBox()
        self.fps_spin.setRange(*FPS_RANGE)
        self.fps_spin.setDecimals(0)
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.setValue(self.model.fps)
        self.fps_spin.setToolTip("Cine speed")
        self.fps_spin.setFocusPolicy(Qt.ClickFocus)
        self.fps_spin.setButtonSymbols(QAbstractSpinBox.UpDownArrows)
        self.fps_spin.setMinimumWidth(78)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setPageStep(10)
        self.slider.setFocusPolicy(Qt.NoFocus)
        # The go-to-frame box: shows the frame, takes a number (Ctrl+G puts the cursor there).
        self.frame_box = window_chrome.FrameNumberBox()
        self.frame_box.done.connect(lambda: self.splitter.setFocus())
        self.frame_box.setRange(0, 0)
        self.frame_box.setKeyboardTracking(False)
        self.frame_box.setFocusPolicy(Qt.ClickFocus)
        self.frame_box.setToolTip("Go to frame (Ctrl+G): type a number and press Enter")
        self.frame_box.setMinimumWidth(70)
        self.frame_label = QLabel("/ –")
        self.frame_label.setMinimumWidth(50)

        transport = QHBoxLayout()
        transport.setContentsMargins(8, 4, 8, 4)
        transport.addWidget(self.play_button)
        transport.addWidget(self.fps_spin)
        transport.addWidget(self.slider, 1)
        transport.addWidget(self.frame_box)
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
        # Enter or Esc in the review note: the keys go back to the frame (verdicts, arrows)
        self.review.keys_back.connect(lambda: self.splitter.setFocus())
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
        window_chrome.build_actions(self)
        self._rebuild_recent()

    def _build_status(self) -> None:
        window_chrome.build_status(self)

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
        self.curve.threshold_moved.connect(self._remember_threshold)
        self.slider.valueChanged.connect(m.set_frame)
        self.play_button.toggled.connect(self._play_toggled)
        self.fps_spin.valueChanged.connect(m.set_fps)
        self.opacity_slider.valueChanged.connect(lambda v: m.set_opacity(v / 100.0))
        self.flagged.frame_chosen.connect(m.set_frame)
        self.frame_box.valueChanged.connect(m.set_frame)
        self.review.message.connect(self._review_message)
        self.review.saving_ended.connect(self._waiting_verdict_ended)
        self.review.blinding_changed.connect(self._blinding_changed)
        sc = self.scoring
        sc.models_ready.connect(self._models_ready)
        sc.started_scoring.connect(self._started_scoring)
        sc.batch.connect(m.apply_batch)
        sc.teacher_batch.connect(m.apply_teacher_batch)
        sc.finished.connect(self._scoring_finished)
        sc.failed.connect(self._scoring_failed)

    def set_sweep(self, sweep, score: bool = True) -> None:
        """Show a sweep at once (frame 0) and score it in the background."""
        self._file_read = None  # (set again by _opened when it came from a file opened here)
        self.scoring.stop()
        self.model.set_playing(False)
        self.model.set_sweep(sweep)
        self.curve.set_sweep(self.model.n_frames, self.model.sweep_ranges, self.model.sweep_kinds)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(self.model.n_frames - 1, 0))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.frame_box.blockSignals(True)
        self.frame_box.setRange(0, max(self.model.n_frames - 1, 0))
        self.frame_box.blockSignals(False)
        name = Path(sweep.path).name if getattr(sweep, "path", None) else "sweep"
        self.setWindowTitle(f"{name} — FetalIQA")
        self._play_at_file_rate(getattr(sweep, "frame_rate", None))
        # a one-frame sweep has nothing to play: its button was left pressed, with nothing playing
        self.play_button.setEnabled(self.model.n_frames > 1)
        self._drawn_version = -1
        self._show_frame(self.model.frame)
        self.refresh()
        notes = tuple(getattr(sweep, "read_notes", ()))
        if notes:  # what reading the file did (pixels without a number, series left out, ...)
            self.notify(f"{name}: " + "; ".join(notes), 30000)
        if score:
            self.start_scoring()

    # -- scoring ---------------------------------------------------------------------------
    def start_scoring(self, user: bool = False) -> None:
        if self.model.sweep is None:
            return
        self._user_asked_models = user
        if user:
            # Score again answers the frames read then, from the cache (said at once, or a moment
            # later when the file is read again to tell: scoring starts on those frames meanwhile)
            self.check_file_on_disk()
        models = self.models if self._models_for == self.choice else None
        self.model.set_scoring(True, "loading models…" if models is None else "")
        self.scoring.start(self.model.sweep, choice=self.choice, models=models, focus=self.model.frame,
                           words="window" if self.interactive else "cli")
        self._update_progress()

    def cancel_scoring(self) -> None:
        """Stop scoring after the batch in progress (what is scored is kept and cached)."""
        if self.scoring.running:
            self.scoring.cancel()
            self.model.scoring.message = "cancelling…"
            self._update_progress()

    def ask_cancel_scoring(self) -> bool:
        """Esc and the Stop button: ask before stopping a run (headless: stop at once)."""
        if not self.scoring.running:
            return False
        if self.interactive:
            st = self.model.scoring
            answer = QMessageBox.question(
                self, "Stop scoring?",
                f"{st.n_done} of {st.n_total or self.model.n_frames} frames are scored. Stop scoring now?\n\n"
                "The scored frames are kept; Resume scores the rest later.",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
            if answer != QMessageBox.Yes or not self.scoring.running:
                return False
        self.cancel_scoring()
        return True

    def scoring_button_clicked(self) -> None:
        """The status bar's button: Stop… while scoring, else Resume / Score again."""
        if self.model.scoring.running:
            self.ask_cancel_scoring()
        else:
            self.start_scoring(user=True)

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
        from fetaliqa_core.models.tasks import TASKS

        try:
            task = read_manifest(bundle).task
        except FetalIQAError as exc:
            self.alert("Load trained model", str(exc))
            return False
        cur = self.choice
        keep = cur.model != "demo"
        cls, seg = (cur.cls, cur.seg) if keep else (None, None)
        if TASKS[task].has_cls:
            cls = Path(bundle)
        if TASKS[task].has_seg:
            seg = Path(bundle)
        base_path = Path(base) if base else (cur.base if keep else None)
        self.set_model_choice(ModelChoice(model=None, cls=cls, seg=seg, base=base_path, device=cur.device,
                                          precision=cur.precision))
        self.notify(f"Using the trained {task} bundle {Path(bundle).name}.", 8000)
        return True

    def set_model_choice(self, choice: ModelChoice, user: bool = True) -> None:
        if self._loaded_choice is None and self._models_for is None:
            self._loaded_choice = self.choice  # what the settings held: kept if the new one fails
        self.choice = choice
        self._save_choice(choice)
        self._update_model_label()
        if self.model.sweep is not None:
            self.start_scoring(user=user)

    def _save_choice(self, choice: ModelChoice) -> None:
        s = self.settings
        s.model = "demo" if choice.model == "demo" else "custom"
        s.cls_bundle = str(choice.cls or "")
        s.seg_bundle = str(choice.seg or "")
        s.base_weights = str(choice.base or "")
        s.device = choice.device
        s.precision = choice.precision or "auto"
        s.cascade = bool(choice.cascade)
        s.student_bundle = str(choice.student or "") if choice.cascade else ""
        s.save()

    def use_models(self, models) -> None:
        """Score with already loaded models (``models.choice.LoadedModels``-like) from now on."""
        self.models = models
        self._models_for = self.choice
        self._loaded_choice = self.choice
        self.model.set_models(models)
        self._restore_threshold()
        self._update_model_label()
        self.review.bundles = self._bundle_info()

    def _models_ready(self, models) -> None:
        self.use_models(models)

    def _models_key(self) -> str:
        return window_tools.models_key(self.models)

    def _restore_threshold(self) -> None:
        """The threshold the user set for these models, else (other models) the models' own."""
        key, previous = self._models_key(), getattr(self, "_threshold_key", None)
        self._threshold_key = key
        saved = self.settings.thresholds.get(key)
        if saved is not None:
            self.model.set_threshold(saved)
        elif previous is not None and key != previous:
            self.model.set_threshold(self.model.thresholds.model)

    def use_models_threshold(self) -> None:
        """Scoring > Use the models' threshold: the line back at the models' own, and forgotten."""
        if self.models is None:
            return
        own = self.model.thresholds.model
        self.model.set_threshold(own)
        self._remember_threshold(own)

    def _remember_threshold(self, value: float) -> None:
        """The user moved the threshold: remember it for these models (forget it when it is
        back at the models' own)."""
        key = self._models_key()
        if not key:
            return
        own = self.model.thresholds.model
        if abs(value - own) < 1e-6:
            self.settings.thresholds.pop(key, None)
        else:
            self.settings.thresholds[key] = round(float(value), 4)
        # A drag moves the line dozens of times a second; the settings file (written and synced
        # to disk) follows once the line rests, and at the latest when the window closes.
        self._settings_save_timer.start()

    def _bundle_info(self) -> dict:
        info: dict = {}
        if self.models is None:
            return info
        from fetaliqa_core.models.choice import bundle_part, on_random_base, part_is_demo, provenance

        names = {b["role"]: b["name"] for b in provenance(self.models)["bundles"]}  # as summary.json names them
        for key, role in (("cls", "classifier"), ("seg", "segmenter")):
            lm = getattr(self.models, key)
            if lm is not None:
                # the bundle in that role (a pair on one base has one hash over both: not either's)
                info[key] = {"name": names.get(role) or names.get("classifier+segmenter", ""),
                             "hash": bundle_part(lm, role)[1],
                             "task": getattr(lm, "task", None), "demo": part_is_demo(lm, role),
                             "random_base": on_random_base(lm)}
                if key == "cls" and getattr(lm, "threshold", None) is not None:
                    info[key]["threshold"] = float(lm.threshold)  # the bundle's own
        info["description"] = self.models.describe()
        # a distilled student scoring without its teacher: the report's ACs are doubtful, as the window's
        if provenance(self.models).get("student_alone"):
            info["student_alone"] = True
        return info

    def _started_scoring(self, has_cls: bool, has_seg: bool) -> None:
        self.model.start_results(has_cls, has_seg, cascade=bool(getattr(self.choice, "cascade", False)))
        self.model.set_scoring(True)

    def _scoring_finished(self, complete: bool, n_done: int) -> None:
        n = self.model.n_frames
        self.model.end_results(complete)
        part = self.model.partial_count()
        frames = "frame" if n == 1 else "frames"
        if part is not None and part[2]:
            # a cascade stopped in its teacher's pass: the student scored every frame, but the
            # answer rests on the candidates the teacher re-scored ("80 of 80 scored" read as done)
            done = f"the teacher re-scored {part[0]} of {part[1] or 'its'} candidate frames"
            msg, note = f"stopped: {done}", f"Scoring stopped; {done} (Resume finishes them)."
            shown = f"stopped (teacher: {part[0]} of {part[1]} candidates)" if part[1] else "stopped before the teacher"
        else:
            msg = "scored" if complete else f"stopped: {n_done} of {n} frames scored"
            note = f"All {n} {frames} scored." if complete else f"Scoring stopped; {n_done} of {n} {frames} scored."
            shown = "scored" if complete else "stopped"
        # the progress bar already counts the frames ("113 / 2000 frames · stopped"): its text was
        # cut at both ends when the status repeated the count
        self.model.set_scoring(False, shown)
        self.refresh()
        self.review.results_updated(final=True)
        from fetaliqa_core.paths import not_writable

        # a results cache that cannot be written was said on stderr only: the window said "All
        # 80 frames scored." and the next opening scored them all again
        unsaid = not_writable()[self._told_not_writable:]
        self._told_not_writable += len(unsaid)
        self.notify(" ".join([note, *unsaid]), 15000 if unsaid else 8000)
        self.scoring_ended.emit(bool(complete), msg)

    def _scoring_failed(self, message: str) -> None:
        loading = self.models is None or self._models_for != self.choice
        quiet = loading and not self._user_asked_models and self.choice.model == "demo"
        kept = False
        if loading:
            previous = self._loaded_choice
            if previous is not None and previous != self.choice:
                # the next start must not begin with models that do not load: keep the last that did
                self._save_choice(previous)
            if self.models is not None and self._models_for is not None and self._models_for == previous:
                # The models that loaded before are still in memory, and what is on screen came
                # from them: go back to them rather than show their results under no model.
                self.choice = previous
                kept = True
                message = f"{message}\nStill using {self.models.describe()}."
            else:
                self.models = None
                self._models_for = None
        self.model.set_scoring(False, "failed" if not loading else (
            "model not changed" if kept else "no model loaded"))
        self._update_model_label(message if loading and not kept else None)
        if quiet:
            # Starting up without the demo model is normal: say so, keep showing frames.
            self.notify(f"No model: {message}", 15000)
        else:
            self.alert("Models" if loading else "Scoring", message)
        self.scoring_ended.emit(False, message)
        if kept and self.isVisible() and self.model.sweep is not None and not self.model.scored_all:
            # The attempt stopped the kept models' run (or a new sweep waits for one): go on with
            # them; what they scored is cached, so only the rest is scored.
            QTimer.singleShot(0, self.start_scoring)

    def _update_model_label(self, problem: str | None = None) -> None:
        full = None
        if self.models is not None and self._models_for == self.choice:
            text, full = f"Model: {self.models.short()}", f"Model: {self.models.describe()}"
        elif problem:
            text = "Model: none loaded"
        else:
            text = f"Model: {self.choice.describe() or 'none'} (not loaded yet)"
        # Elided to the room there is ("Model: " goes first, then the device); the whole
        # description is in the tooltip. The names stay (up to a limit): with the user's own
        # bundles the status bar is the only place that names the model behind the numbers, and
        # at 1280 x 720 the answer beside it left it empty.
        short = text.removeprefix("Model: ")
        self.status_model.set_forms([text, short, short.split(" · ")[0]], tooltip=problem or full or text,
                                    keep_shortest=True)
        cap = self.status_model.fontMetrics().averageCharWidth() * window_chrome.MODEL_NAME_MIN_CHARS
        self.status_model.setMinimumWidth(min(self.status_model.minimumWidth(), cap))
        self.legend_label.setText(window_chrome.legend_html(window_chrome.segmenter_labels(
            self.models if self._models_for == self.choice else None)))

    def _update_answer_count(self) -> None:
        """The answer's count of frames scored, as each batch arrives: the answer itself is worked
        out again only at the next refresh, and its "· 17/80 scored" (or "none passes in the 17 of
        80 frames scored") lagged the progress bar's "25 / 80 frames" until then. Only the words
        change here (no flags are recomputed)."""
        old = self._answer_count
        part = self.model.partial_count()
        if not old or part is None:
            return
        if part[2] and not part[1]:  # the teacher's pass begins: no count of its yet ("0 of 0"): at the refresh
            return
        new = self._count_words(self._answer_count_form)
        if new != old:
            self._answer_count = new
            if self._answer_count_form == "long":  # one text, its own tooltip
                self.status_ac.setText(self.status_ac.text().replace(old, new))
            else:
                self.status_ac.set_answer([form.replace(old, new) for form in self.status_ac.forms()])

    def _count_words(self, form: str) -> str:
        """The answer's count of what it rests on while partial: " · 17/80 scored" beside a chosen
        frame ("short"), " the 17 of 80 frames scored" after "none passes in" ("long"); a cascade's
        teacher counts its candidates (" · 9/35 candidates checked")."""
        done, total, teacher = self.model.partial_count() or (0, 0, False)
        if form == "short":
            return f" · {done}/{total} candidates checked" if teacher else f" · {done}/{total} scored"
        what = "candidate frames the teacher re-scored" if teacher else "frames scored"
        return f" the {done} of {total} {what}"

    def _update_progress(self) -> None:
        st = self.model.scoring
        self._update_answer_count()
        total = max(st.n_total, 1)
        self.progress.setRange(0, total)
        self.progress.setValue(st.n_done)
        if st.running:
            rate = f" · {st.frames_per_second:.1f}/s" if st.frames_per_second > 0 else ""
            eta = format_duration(st.eta_seconds)
            eta = f" · {eta} left" if eta else ""
            text = st.message or f"{st.n_done} / {st.n_total} frames{rate}{eta}"
        else:
            text = f"{st.n_done} / {st.n_total} frames · {st.message}" if st.message else (
                f"{st.n_done} / {st.n_total} frames" if st.n_total else "")
        self.progress.setFormat(text)
        self.progress.setToolTip(text)
        self._update_scoring_button()

    def _update_scoring_button(self) -> None:
        b = self.cancel_button
        r = self.model.results
        st = self.model.scoring
        if st.running:
            b.setText("Stop…")
            b.setToolTip("Stop scoring (Esc); the scored frames are kept")
            b.setEnabled(self.scoring.running and st.message != "cancelling…")
        elif self.model.sweep is None:
            b.setText("Score")
            b.setEnabled(False)
        elif r is not None and r.n_done and not self.model.scored_all:
            b.setText("Resume")
            b.setToolTip("Score the frames not scored yet (the scored ones come from the cache)")
            b.setEnabled(True)
        else:
            b.setText("Score again" if self.model.scored_all else "Score")
            b.setToolTip("Score this sweep with the current model")
            b.setEnabled(True)

    # -- model events ----------------------------------------------------------------------
    def _show_frame(self, index: int) -> None:
        """Everything that follows the current frame; kept cheap (runs on every scrub step)."""
        t0 = time.perf_counter()
        m = self.model
        if m.sweep is None:
            self.frame_view.clear()
            self.frame_label.setText("/ –")
            self.status_frame.setText("No sweep open")
            return
        self.frame_view.set_frame(m.sweep.frames[index])
        self.frame_view.set_pixel_aspect(m.sweep.measurement_spacing_mm)
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
        mask = m.mask() if m.overlay_visible and not self.review.hides_model() else None
        self.frame_view.set_mask(mask, m.field_of_view_pixels() if mask is not None else None)
        self.frame_view.set_overlay_opacity(m.opacity)
        self._update_ellipse()

    def _update_ellipse(self) -> None:
        m = self.model
        fl = m.last_flags
        f = m.frame
        if (not m.overlay_visible or (f not in fl.chosen_best() and f != fl.chosen) or self.review.hides_model()
                or m.answer_held):  # (judged again for a new pixel size: no reading until it is)
            self.frame_view.hide_ellipse()
            return
        ac = m.measure_ac(f)
        if ac is None:
            self.frame_view.hide_ellipse()
            return
        from fetaliqa_core.analysis import ellipse_polygon

        # a few words on the image (a long reason would run off it); the whole reading is the
        # label's tooltip
        reading = m.reading(ac, f)
        text = self._with_caveat(reading.short(), m.ac_caveat(ac))
        if m.demo_notice:
            text += f" · {m.notice_words}, not for clinical use"
        self.frame_view.show_ellipse(ellipse_polygon(ac), text, reading.text())

    @staticmethod
    def _with_caveat(text: str, caveat: str) -> str:
        """An AC's few words with its caveat after them (once: a doubt's words may already say it)."""
        return f"{text} · {caveat}" if caveat and caveat.split()[-1] not in text else text

    def _update_frame_text(self) -> None:
        m = self.model
        i = m.frame
        k = m.sweep_index()
        kind = m.sweep_kinds[k] if k < len(m.sweep_kinds) else "unknown"
        kind_text = f" {kind}" if kind != "unknown" else ""
        self.frame_label.setText(f"/ {m.n_frames - 1}")
        if self.frame_box.value() != i:
            self.frame_box.blockSignals(True)
            self.frame_box.setValue(i)
            self.frame_box.blockSignals(False)
        self.status_frame.set_forms([f"sweep {k + 1}{kind_text}", f"sweep {k + 1}"],  # the number stays whole
                                    tooltip=f"Frame {i} of 0–{m.n_frames - 1}, sweep {k + 1}{kind_text}",
                                    keep_shortest=True)
        plain, tl, tr, bl = window_tools.corner_texts(m, i, k, kind_text, hide_model=self.review.hides_model())
        self.status_values.setText(plain)
        self.frame_view.set_corners(tl=tl, tr=tr, bl=bl)

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
        """The threshold in the status bar, kept whole before less important items (at 1366 px a
        changed one showed as nothing), and on the curve's line, with the models' own where it is
        changed; no number before the models' own is known (the line said 0.50 for the demo's 0.67)."""
        if self.models is None:
            self.status_threshold.setText("")
            self.curve.set_model_threshold(None)
            return
        t = self.model.thresholds
        self.curve.set_model_threshold(t.model)
        short = f"thr. {t.value:.2f}" + (f" (model: {t.model:.2f})" if t.changed else "")
        self.status_threshold.set_forms([t.describe(), short], keep_shortest=True)
        on = "the classifier's p_cls" if t.score == "p_cls" else "the mask score p_seg (0.50: mask covers 1 %)"
        self.status_threshold.setToolTip(f"Frames are flagged at {t.describe()} on {on}; drag the line "
                                         "in the quality curve to change it.")

    def _play_toggled(self, on: bool) -> None:
        self.model.set_playing(on)
        if self.play_button.isChecked() != self.model.playing:  # refused (one frame): not left pressed
            self._playing_changed(self.model.playing)

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
        if not self._setting_file_rate:  # (the speed a file states is the sweep's, not the user's choice)
            self.settings.fps = fps
            self.fps_spin.setToolTip("Cine speed (chosen here)")

    _setting_file_rate = False

    def _play_at_file_rate(self, rate: tuple[float, str] | None) -> None:
        """Play a sweep at the rate its file states (a DICOM cine's Frame Time or Cine Rate: the
        box's "15 fps" read as the acquisition's rate, and a 30 frames-per-second cine played at
        half speed), else at the speed chosen last; the box's tooltip says which."""
        self._setting_file_rate = True
        try:
            if rate is None:
                self.model.set_fps(self.settings.fps)
                tip = "Cine speed (chosen here; the file states no frame rate)"
            else:
                fps, words = rate
                self.model.set_fps(max(round(fps), 1))  # (the box shows whole frames per second)
                tip = f"Cine speed: the file's own rate, {fps:.4g} frames per second ({words})"
                if self.model.fps != max(round(fps), 1):
                    tip += f"; played at {self.model.fps:g}, the nearest this window plays"
        finally:
            self._setting_file_rate = False
        self.fps_spin.setToolTip(tip)

    # -- periodic refresh ------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw what depends on the results (curve, flags, status) if they changed."""
        m = self.model
        if m.sweep is None:
            return
        filling = bool(self.scoring.running)
        if m.results_version == self._drawn_version and not m.flags_dirty and filling == self._drawn_filling:
            return
        self._drawn_version = m.results_version
        self._drawn_filling = filling
        flags = m.flags
        self.curve.set_results(m.results, flags, confirmed=m.confirmed, filling=filling)
        self.flagged.update_flags(flags)
        self._update_overlay()
        self._update_frame_text()
        self.update_case_status()
        self._update_progress()

    def judge_masks_again(self) -> None:
        """After the pixel spacing changed: the masks' sizes in mm are judged again on a thread of
        their own while the answer keeps its last values (on the window's thread the next refresh
        froze it 1.8 s on a full case); the refresh after that finds them judged."""
        m = self.model
        r = m.results
        if r is None or not r.has_seg or not r.n_done:
            return
        from app.worker import MaskJudge, detach_until_finished

        judge = MaskJudge(m.sweep, r)
        m.hold_answer(judge)
        judge.finished.connect(lambda: m.release_answer(judge))
        detach_until_finished(judge, abandonable=True)  # writes nothing: a closing window does not wait
        judge.start()

    def _blinding_changed(self) -> None:
        """Blinded review on or off, or a verdict saved: show or hide the model's calls (the
        curve and the flagged list reveal every frame's, so they stay hidden while blinded)."""
        blind = self.review.active and self.review.blinded.isChecked()
        self.curve.setVisible(not blind)
        self.flagged.setVisible(not blind)
        # the dock goes with its list (an empty title bar was left), and comes back as it was
        if blind and not self._dock_hidden_for_blinding:
            self._dock_hidden_for_blinding = self.flagged_dock.isVisible()
            self.flagged_dock.setVisible(False)
        elif not blind and self._dock_hidden_for_blinding:
            self._dock_hidden_for_blinding = False
            self.flagged_dock.setVisible(True)
        for act in (self.act_best, self.act_prev_flag, self.act_next_flag):
            act.setEnabled(not blind)
        self._drawn_version = -1
        self._update_overlay()
        self._update_frame_text()
        self.refresh()

    def update_case_status(self) -> None:
        """The status bar's answer: the case's chosen frame with its AC, as the results stand."""
        m = self.model
        self._answer_count = ""  # the answer's "· 17/80 scored", kept level with the progress bar
        if self.review.active and self.review.blinded.isChecked():
            self.status_ac.setText("AC hidden (blinded review)")
            return
        if m.answer_held:
            # the masks are judged again for a new pixel size: the AC measured with it beside the old
            # one's doubt read as an answer ("AC 96.1 mm (doubtful: implausible size)", then plain)
            self.status_ac.setText("AC – (the masks are being judged again for the new pixel size…)")
            self.status_ac.setToolTip("")
            return
        chosen = m.flags.chosen
        part = m.partial_count()
        if chosen is None:
            r = m.results
            if r is None or not r.n_done:
                self.status_ac.setText("AC –")
            elif part is not None and part[2] and not part[0]:
                # the student is done, the teacher has not re-scored a candidate yet: nothing is final
                self.status_ac.setText("AC – (the teacher is still to check the candidate frames)"
                                       if m.scoring.running else
                                       "AC – (stopped before the teacher checked the candidate frames)")
            elif part is not None:  # a stopped or running scoring: the rest may hold the abdomen
                self._answer_count_form = "long"
                self._answer_count = self._count_words("long")
                self.status_ac.setText(f"AC – (none passes in{self._answer_count})")
            else:
                self.status_ac.setText("AC – (no frame passes)")
            return
        ac = m.measure_ac(chosen)
        if ac is None:
            self.status_ac.setText(f"chosen frame {chosen}: AC not measurable")
            summary = getattr(m.assessment, "summary", None)
            why = (getattr(summary, "chosen_ac", None) or {}).get("note", "") if summary is not None else ""
            self.status_ac.setToolTip(why or "the segmenter's mask at this frame cannot be measured")
            return
        reading = m.reading(ac, chosen)
        if reading.status == "no units":  # short here; the full reason in the tooltip
            core = "AC not shown (pixel spacing; View menu)"
        elif reading.status == "doubtful":
            # why, in a few words (the whole reason is in the tooltip): a sonographer reading only the
            # status bar saw "doubtful" and never why
            core = reading.short(why=True)
        else:
            core = f"AC {reading.ac_mm:.1f} mm · GA {reading.ga_text or '–'}"
        # what the number needs said beside it (an extrapolated ellipse) stays in every form
        caveat = m.ac_caveat(ac)
        core = self._with_caveat(core, caveat)
        asides = []
        # the choice resting on one model (they disagree on every frame): said as score says it
        summary = getattr(m.assessment, "summary", None)
        choice_note = str(getattr(summary, "choice_note", "") or "")
        if choice_note:  # "models disagree" here read against the flagged panel's "Models disagree (0)"
            asides.append(" · chosen on one model")
        partial = ""
        if part is not None:  # stopped (or still running): the rest may hold a better frame
            self._answer_count_form = "short"
            self._answer_count = self._count_words("short")
            asides.append(self._answer_count)
            done, total, teacher = part
            partial = (f"Chosen among the {done} of {total} candidate frames the teacher has re-scored so far; "
                       "the others may hold a better one (Resume re-scores them)." if teacher else
                       f"Chosen among the {done} of {total} frames scored so far; the others may hold "
                       "a better one (Resume scores them).")
        notice = ""
        if m.demo_notice:
            notice = " · demo, not clinical" if m.notice_words == "demo model" else " · test model, not clinical"
        lead = f"chosen frame {chosen}: "
        self.status_ac.setToolTip("\n".join(t for t in (reading.note, choice_note, partial, m.demo_notice) if t))
        # shorter forms for a narrow window: 'chosen frame N:' shortens and goes first, then the
        # doubt's few words, then the asides; the AC and the notice stay (at 1024 px a stopped run's
        # answer dropped "25/40 scored" and "chosen on one model" and kept "chosen frame 0:")
        extra = "".join(asides)
        plain = self._with_caveat(reading.short(), caveat) if reading.status == "doubtful" else core
        # the last: no number at all rather than part of one (at 800 px the answer read "AC 2…"),
        # the whole answer then heading the tooltip
        self.status_ac.set_answer([lead + core + extra + notice, f"frame {chosen}: {core}{extra}{notice}",
                                   core + extra + notice, plain + extra + notice, core + notice, plain + notice,
                                   window_chrome.NARROW_ANSWER])

    def _keep_unsaved_verdict(self, before: str) -> bool:
        """Before the window closes or another sweep opens (``before``: "closing", ...): a verdict
        chosen but not saved (Enter) is saved or dropped as the trainer says (it was dropped without
        a word); False: they chose to stay. Asked only where someone can answer (not offscreen)."""
        from PySide6.QtGui import QGuiApplication

        pending = self.review.unsaved_verdict()
        if pending is None or not self.interactive or QGuiApplication.platformName() in ("offscreen", "minimal"):
            return True
        frame, label = pending
        answer = QMessageBox.question(
            self, "Review", f"Frame {frame}: {label.replace('_', ' ')} is chosen but not saved. Save it before "
            f"{before}?", QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save)
        if answer == QMessageBox.Cancel:
            return False
        if answer == QMessageBox.Save:
            self.review.save_and_next()  # (a busy database gets one last try as the store closes)
        return True

    def _close_after_waiting_verdict(self) -> bool:
        """Before the window closes: a verdict entered (Enter) but waiting for the review database,
        which another program is writing to. The window stays open, and responsive, until it is
        saved, then closes (closing waited out the lock on the window's thread, frozen for seconds,
        then lost the verdict, telling the trainer to press Enter in a window that was gone). Where
        someone can answer, they choose: close once it is saved, close without it, or stay. True
        when nothing waits (or the trainer let it go): close now."""
        from PySide6.QtGui import QGuiApplication

        waiting = self.review.waiting_verdict()
        if waiting is None:
            return True
        frame, label = waiting
        if self.interactive and QGuiApplication.platformName() not in ("offscreen", "minimal"):
            box = QMessageBox(QMessageBox.Question, "Review",
                              f"Frame {frame}'s verdict ({label.replace('_', ' ')}) is not saved yet: the review "
                              "database is busy (another program is writing to it). Close once it is saved?", parent=self)
            wait = box.addButton("Close when saved", QMessageBox.AcceptRole)
            drop = box.addButton("Close without it", QMessageBox.DestructiveRole)
            box.addButton(QMessageBox.Cancel)
            box.setDefaultButton(wait)
            ended: list[bool] = []  # how the save went while the box was open (the panel may give up)
            self.review.saving_ended.connect(ended.append)
            try:
                box.exec()
            finally:
                self.review.saving_ended.disconnect(ended.append)
            if box.clickedButton() is drop:
                self.review.drop_waiting_verdict()
                return True
            if box.clickedButton() is not wait:
                return False
            if self.review.waiting_verdict() is None:
                # saved while the box was open: close; given up (and said how to enter it again): stay,
                # where that can be done (it closed, the verdict lost)
                return bool(ended) and ended[-1]
        self._close_when_saved = True
        self.notify(f"Frame {frame}'s verdict waits for the review database (another program is writing to it): "
                    "the window closes once it is saved.", 30000)
        return False

    def _waiting_verdict_ended(self, saved: bool) -> None:
        """The verdict closing waited for is saved: close now. Not saved (the panel gave up and said
        how to enter it again): the window stays open, where that can be done."""
        if self._close_when_saved:
            self._close_when_saved = False
            if saved:
                QTimer.singleShot(0, self.close)

    def _review_message(self, text: str) -> None:
        if self._close_when_saved and self.review.waiting_verdict() is not None:
            text += " The window closes once it is saved."
        self.notify(text, 30000 if self._close_when_saved else 6000)

    # -- misc ------------------------------------------------------------------------------
    def notify(self, text: str, timeout_ms: int = 8000) -> None:
        """A passing message in the status bar (the frame/score fields stay visible): a file's
        path at its start is shortened to the file's name, so that the reason shows."""
        self.status_message.set_full_text(window_tools.name_for_path(text), tooltip=text)
        self._message_timer.start(timeout_ms)

    def alert(self, title: str, message: str) -> None:
        """A problem the user must see: a message box (stderr and status bar when headless)."""
        self.notify(message, 15000)
        if self.interactive:
            QMessageBox.warning(self, title, message)
        else:
            import sys

            print(f"fetaliqa: {message}", file=sys.stderr)
            self.told_on_stderr.add(message)

    def show_keys(self) -> None:
        QMessageBox.information(self, "Keyboard shortcuts", keymap.help_html())

    def go_to_frame(self) -> None:
        """Ctrl+G: the cursor in the go-to-frame box, its number selected."""
        self.frame_box.setFocus(Qt.ShortcutFocusReason)
        self.frame_box.selectAll()

    def export_frame(self, path: str | Path | None = None) -> Path | None:
        return window_tools.export_frame(self, path)

    def show_about(self) -> None:
        window_tools.show_about(self)

    def save_screenshot(self, path: str | Path) -> Path:
        """Render the whole window to a PNG (works offscreen)."""
        return window_tools.write_screenshot(self, path)

    def _close_after_training(self) -> bool:
        """Before the window closes: a training run of the Train dialog (its child process ends
        with the window). Asked as the dialog's own close asks; stopped, the run is ended on its
        own time (terminated, killed after the dialog's grace period) while the window stays open
        and answering, which closes once it has ended. Closing stopped it without a word, and
        froze the application for seconds waiting for it. True when no run is going."""
        dlg = self._train_dialog
        if dlg is None or not dlg.running:
            return True
        if not self._close_when_trained:
            if not dlg.confirm_stop(self, "The window closes once it has stopped."):
                return False  # the run goes on, the window stays
            self._close_when_trained = True
            dlg.state_changed.connect(self._training_ended_for_closing)
        self.notify("Stopping the training run (finished epochs keep their checkpoints): the window closes "
                    "once it has stopped.", 30000)
        return False

    def _training_ended_for_closing(self, state: str) -> None:
        from app.train_dialog import CANCELLING, RUNNING

        dlg = self._train_dialog
        if state in (RUNNING, CANCELLING) or not self._close_when_trained or dlg is None or dlg.running:
            return
        self._close_when_trained = False
        dlg.state_changed.disconnect(self._training_ended_for_closing)
        QTimer.singleShot(0, self.close)

    def changeEvent(self, ev):  # noqa: N802
        super().changeEvent(ev)
        if ev.type() == QEvent.ActivationChange and self.isActiveWindow():
            # back from the program that re-exported it, say (a box: not from inside this event)
            QTimer.singleShot(0, self.check_file_on_disk)
            # back from another window reviewing the same sweep: its verdicts, not the ones read before
            QTimer.singleShot(0, self.review.reload_verdicts)

    def closeEvent(self, ev):  # noqa: N802
        # (a verdict saved at the question may find the database busy: it then waits as any other)
        if (not self._close_after_training() or not self._close_after_waiting_verdict()
                or not self._keep_unsaved_verdict("closing") or not self._close_after_waiting_verdict()):
            ev.ignore()
            return
        self.model.set_playing(False)
        self._refresh_timer.stop()
        self._settings_save_timer.stop()  # saved just below
        s = self.settings
        s.geometry = bytes(self.saveGeometry().toBase64()).decode()
        s.window_state = bytes(self.saveState().toBase64()).decode()
        problem = s.save()
        if problem:  # the window is going: said where it can still be read
            import sys

            print(f"fetaliqa: {problem}", file=sys.stderr)
            if self.interactive:  # (a desktop launch shows no stderr)
                QMessageBox.warning(self, "Settings", f"{problem[:1].upper()}{problem[1:]}.")
        # The engine stops after the batch in progress; hide first so closing feels instant.
        if self.scoring.any_running:
            self.hide()
        if self._loader is not None:
            # A file being read is told to stop (between chunks); its result must not reach a closed
            # window (it would open the sweep and start scoring nothing stops), and closing must not wait.
            from app.worker import detach_until_finished

            loader, self._loader = self._loader, None
            if loader.isRunning():
                self.hide()
                loader.stop()
                detach_until_finished(loader)
        self._file_check = None  # the sweep's file being read again: its answer is dropped (nothing said)
        if self._train_dialog is not None:  # (a run has ended by now: see _close_after_training)
            self._train_dialog.shutdown()
        self.scoring.shutdown(abandon_loading=True)  # models still loading are not waited for
        self.review.close_store()
        super().closeEvent(ev)
        self.closed.emit()
