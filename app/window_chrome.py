"""The main window's toolbar, menus, key bindings and status bar (built once, wired to the
window's methods). Kept apart from :mod:`app.main_window` so each file stays readable."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
)

from app import keymap, theme, window_tools
from app.frame_view import WINDOW_LEVEL_PRESETS
from app.viewer_model import OPACITY_STEP

PROGRESS_MIN_WIDTH = 270  # px: "840 / 840 frames · 10.0/s · 59 min 59 s left" stays whole
MODEL_LABEL_WIDTH = 420  # px at most; elided below that, the full description in the tooltip
#: The least room the status bar's passing message and the model's names keep (in characters of the
#: label's font): at 1280 x 720 the answer took all the room and both showed nothing (40 px).
MESSAGE_MIN_CHARS = 26
#: The status bar's answer where none of its forms with the AC fits (a window under 1024 px wide):
#: the answer's label keeps room for it, so that something says where the AC is.
NARROW_ANSWER = "AC (see tooltip)"
MODEL_NAME_MIN_CHARS = 24  # the model's names are kept whole up to this many characters, elided beyond


_TYPING_KEYS = {Qt.Key_Return, Qt.Key_Enter, Qt.Key_Escape, Qt.Key_Backspace, Qt.Key_Delete,
                Qt.Key_Left, Qt.Key_Right, Qt.Key_Up, Qt.Key_Down, Qt.Key_Home, Qt.Key_End,
                Qt.Key_Period, Qt.Key_Comma, Qt.Key_Minus}


def _owns_key(ev) -> bool:
    """While a number box has the focus, the keys typed into it are its own, not the window's
    single-key shortcuts (1 / 2 / 0 review verdicts, arrows, Enter)."""
    return ev.type() == QEvent.ShortcutOverride and (ev.key() in _TYPING_KEYS or Qt.Key_0 <= ev.key() <= Qt.Key_9)


class FrameNumberBox(QSpinBox):
    """The go-to-frame box: Enter jumps and Esc leaves, both hand the keys back (``done``)."""

    done = Signal()

    def event(self, ev):  # noqa: D102
        if _owns_key(ev):
            ev.accept()
            return True
        return super().event(ev)

    def keyPressEvent(self, ev):  # noqa: N802
        if ev.key() == Qt.Key_Escape:
            self.done.emit()
            return
        super().keyPressEvent(ev)
        if ev.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.done.emit()


class FpsBox(QDoubleSpinBox):
    """The cine speed box; typing a number in it does not trigger the window's keys."""

    def event(self, ev):  # noqa: D102
        if _owns_key(ev):
            ev.accept()
            return True
        return super().event(ev)


def whole_numbers(text: str, shown: str) -> str:
    """``shown``, an elided form of ``text``, without any number of ``text`` it would show in part:
    the elision goes back to before that number's word ("AC 2…" of "AC 265.9 mm" said a wrong number;
    now "AC …"). A number is never cut; the words around it may be."""
    if shown == text or "…" not in shown:
        return shown
    kept = set(text.split())
    if all(w in kept or not any(c.isdigit() for c in w) for w in shown.replace("…", " ").split()):
        return shown  # (every number shown is one of the text's, whole)
    head, _, tail = shown.partition("…")
    head_words, tail_words = head.split(" "), tail.split(" ")
    # the cut word is the last of the part before the ellipsis, or the first after it
    if head_words and any(c.isdigit() for c in head_words[-1]) and head_words[-1] not in kept:
        head_words = head_words[:-1]
    if tail_words and any(c.isdigit() for c in tail_words[0]) and tail_words[0] not in kept:
        tail_words = tail_words[1:]
    head, tail = " ".join(head_words).rstrip(), " ".join(tail_words).lstrip()
    return f"{head} …" + (f" {tail}" if tail else "") if head else ("…" + (f" {tail}" if tail else ""))


class ElidedLabel(QLabel):
    """A one-line label that elides its text to the room it gets (the whole text in the
    tooltip) instead of being cut mid-word."""

    def __init__(self, text: str = "", mode=Qt.ElideRight, all_or_nothing: bool = False) -> None:
        super().__init__()
        self._full = text
        self._mode = mode
        self._all_or_nothing = all_or_nothing  # a value cut off says nothing ('threshold …'): the whole or nothing
        self._shorter: list[str] = []  # shorter forms of the text, shown whole where the text is not
        self.setMinimumWidth(40)
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)

    def full_text(self) -> str:
        return self._full

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming)
        self.set_full_text(text)

    def clear(self) -> None:
        self.set_full_text("")

    def set_full_text(self, text: str, tooltip: str | None = None) -> None:
        self._full = text
        self._shorter = []
        self.setToolTip(tooltip if tooltip is not None else text)
        self.updateGeometry()  # its size hint is the whole text's: a layout gives it that room if it can
        self._elide()

    def set_forms(self, forms: list[str], tooltip: str | None = None, keep_shortest: bool = False) -> None:
        """The text, longest form first: the longest that fits is shown. ``keep_shortest``: the
        label never gets narrower than its shortest form (what must always be read: a changed
        threshold was shown as nothing at 1366 px)."""
        forms = [f for f in forms if f] or [""]
        self.set_full_text(forms[0], tooltip)
        self._shorter = forms[1:]
        if keep_shortest:
            m = self.contentsMargins()
            self.setMinimumWidth(max(40, self.fontMetrics().horizontalAdvance(forms[-1]) + 2 * self.margin() + 4
                                     + m.left() + m.right()))
        self._elide()

    def sizeHint(self):  # noqa: N802
        hint = super().sizeHint()
        margins = self.contentsMargins()
        hint.setWidth(self.fontMetrics().horizontalAdvance(self._full) + margins.left() + margins.right()
                      + 2 * self.margin() + 12)
        return hint

    def resizeEvent(self, ev):  # noqa: N802
        super().resizeEvent(ev)
        self._elide()

    def _elide(self) -> None:
        # the room inside the label's margins (the status bar gives its labels some): eliding to
        # the whole width still cut the last characters
        room = max(self.contentsRect().width() - 2 * self.margin() - 2, 10)
        for text in self._alternatives():  # the first that fits whole
            if self.fontMetrics().horizontalAdvance(text) <= room:
                super().setText(text)
                return
        if self._all_or_nothing:
            super().setText("")
            return
        shown = whole_numbers(self._alternatives()[-1],
                              self.fontMetrics().elidedText(self._alternatives()[-1], self._mode, room))
        # a letter and an ellipsis say nothing: nothing then (the tooltip has the whole text)
        super().setText("" if len(shown.rstrip("…. ")) < 4 else shown)

    def _alternatives(self) -> list[str]:
        """The texts to show, longest first."""
        return [self._full, *self._shorter]


class AnswerLabel(ElidedLabel):
    """The status bar's answer (chosen frame, AC, and the demo models' notice at its end). When the
    window is narrow it shows the longest of its shorter forms that fits (given with
    :meth:`set_answer`: the asides dropped first, then 'chosen frame N:'), so that the AC's
    number and the notice stay (cut at its end, 'demo, not clinical' was lost first; cut in its
    middle, the number). ``text()`` is the whole answer; the tooltip is set apart (the reasons)."""

    _reasons = ""  # the tooltip given (the reasons), without the answer said in it

    def __init__(self) -> None:
        super().__init__(mode=Qt.ElideRight)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)

    def text(self) -> str:  # noqa: D401 - Qt naming
        return self._full

    def setToolTip(self, tip: str) -> None:  # noqa: N802 (Qt naming)
        self._reasons = tip
        self._tip()

    def set_full_text(self, text: str, tooltip: str | None = None) -> None:
        self._all_or_nothing = False  # (a message, not an answer: elided, its numbers kept whole)
        super().set_full_text(text, tooltip)

    def set_answer(self, forms: list[str]) -> None:
        """The answer, longest form first (the tooltip is left as it is). One of them is shown
        whole, or none: an answer cut at its end lost its doubt ("AC 31.8 mm (…") or its number's
        digits ("AC 2…"); the last form may be a few words without the number, and the whole
        answer is then the tooltip's first line."""
        self.set_forms(forms, self._reasons)
        self._all_or_nothing = True
        self._elide()

    def _elide(self) -> None:
        super()._elide()
        self._tip()

    def _tip(self) -> None:
        shown = QLabel.text(self)
        whole = self._full if self._full and shown != self._full else ""
        QLabel.setToolTip(self, "\n".join(t for t in (whole, self._reasons) if t))

    def forms(self) -> list[str]:
        """The forms given to :meth:`set_answer`, longest first."""
        return [self._full, *self._shorter]


def segmenter_labels(models) -> tuple[int, ...]:
    """The overlay labels the loaded segmenter can draw: a 3-class head grades the plane
    (optimal, suboptimal), a binary head marks the abdomen; all when it cannot be told."""
    seg = getattr(models, "seg", None) if models is not None else None
    if models is not None and seg is None:
        return ()
    manifest = getattr(seg, "manifest", None)
    n = getattr(manifest, "n_classes", None)
    if n == 1:
        return (3,)
    if n == 3:
        return (1, 2)
    return tuple(theme.LABEL_NAMES)


def legend_html(labels) -> str:
    parts = []
    for label in labels:
        r, g, b = theme.LABEL_COLOURS[label]
        parts.append(f"<span style='color:rgb({r},{g},{b})'>■</span> {theme.LABEL_NAMES[label]}")
    if not parts:
        return ""
    return "&nbsp;&nbsp;" + "&nbsp;&nbsp;".join(parts) + "&nbsp;&nbsp;"


def build_review_menu(win, rm) -> None:
    """The review panel's controls as a menu (Alt+R), for keyboard use: the panel's own controls
    take no keyboard focus, so that the arrow keys and digits always reach the frame and the
    verdicts. The menu reads the panel's state each time it opens and sets the panel's controls,
    so the two cannot disagree."""
    from PySide6.QtGui import QActionGroup

    review = win.review
    win.act_review_start = rm.addAction("Start review", review.start)
    queues = rm.addMenu("Queue")
    group = QActionGroup(win)
    group.setExclusive(True)
    win.review_queue_actions = {}
    for i in range(review.queue_combo.count()):
        act = queues.addAction(review.queue_combo.itemText(i))
        act.setCheckable(True)
        act.triggered.connect(lambda _=False, i=i: review.queue_combo.setCurrentIndex(i))
        group.addAction(act)
        win.review_queue_actions[review.queue_combo.itemData(i)] = act
    win.act_review_best_only = rm.addAction(review.best_only.text())
    win.act_review_blinded = rm.addAction(review.blinded.text())
    for act, box in ((win.act_review_best_only, review.best_only), (win.act_review_blinded, review.blinded)):
        act.setCheckable(True)
        act.setToolTip(box.toolTip())
        act.triggered.connect(lambda checked=False, box=box: box.setChecked(bool(checked)))
    rm.addSeparator()
    win.act_review_reviewer = rm.addAction("Change reviewer…", review._ask_reviewer)
    rm.addAction(win.act_export)
    rm.addAction(win.act_labels)
    rm.addAction(win.act_history)

    def sync() -> None:
        win.act_review_start.setEnabled(not review.start_button.isHidden())
        queues.setEnabled(review.queue_combo.isEnabled())
        for kind, act in win.review_queue_actions.items():
            act.setChecked(review.queue_combo.currentData() == kind)
        for act, box in ((win.act_review_best_only, review.best_only), (win.act_review_blinded, review.blinded)):
            act.setEnabled(box.isEnabled())
            act.setChecked(box.isChecked())

    rm.aboutToShow.connect(sync)
    win.sync_review_menu = sync


def build_actions(win) -> None:
    """Toolbar, menus and the window-wide keys of :data:`app.keymap.KEYMAP`."""
    m = win.model
    tb = win.addToolBar("Main")
    tb.setObjectName("main_toolbar")
    tb.setMovable(False)
    tb.setIconSize(QSize(16, 16))
    tb.setToolButtonStyle(Qt.ToolButtonTextOnly)

    def action(text, slot, tip="", **kw) -> QAction:
        act = QAction(text, win, **kw)
        act.triggered.connect(slot)
        if tip:
            act.setToolTip(tip)
        return act

    win.act_open = action("Open…", win.open_dialog, shortcut=QKeySequence.Open)
    win.act_open_folder = action("Open folder…", win.open_folder_dialog, shortcut=QKeySequence("Ctrl+Shift+O"),
                                 tip="Open a DICOM series folder as one sweep")
    win.act_open_demo = action("Open demo sweep", win.open_demo_sweep,
                               tip="The synthetic sweep `fetaliqa demo` opens (made once, into the cache)")
    win.act_models = action("Models…", win.models_dialog)
    win.act_train = action("Train…", win.train_dialog, shortcut=QKeySequence("Ctrl+T"))
    win.act_rescore = action("Score again", lambda: win.start_scoring(user=True))
    win.act_cancel = action("Stop scoring…", win.ask_cancel_scoring)
    win.act_threshold_own = action("Use the models' threshold", win.use_models_threshold)
    win.act_threshold_own.setToolTip("Put the threshold line back at the models' own (a moved one is remembered "
                                     "for these models, in later windows and headless runs too)")
    win.act_overlay = QAction("Overlay", win, checkable=True, checked=m.overlay_visible)
    win.act_overlay.toggled.connect(m.set_overlay_visible)
    win.act_overlay.setToolTip("Show the segmentation overlay (s)")
    def unless_blinded(jump):
        """A jump to the frames the model singled out shows its call: not during a blinded review."""
        def go() -> None:
            if win.review.active and win.review.blinded.isChecked():
                win.notify("Blinded review: jumping to the model's flagged or best frames would show its "
                           "call. Step with ← / → or through the queue ([ / ]).", 8000)
                return
            jump()
        return go

    def go_to_best() -> None:
        """``b``: the sweep's best frame, or why it has none (as ``fetaliqa score``'s best_frame -1)."""
        if m.go_to_best() is None:
            k = m.sweep_index()
            why = m.flags.why_none[k].rstrip(".") if k < len(m.flags.why_none) else ""
            win.notify(f"Sweep {k + 1} has no best frame: {why or 'no frame scored there passes yet'}.", 8000)

    win.jumps = {"best_frame": unless_blinded(go_to_best),
                 "prev_flagged": unless_blinded(lambda: m.next_flagged(-1)),
                 "next_flagged": unless_blinded(lambda: m.next_flagged(1))}
    win.act_best = action("Best frame", win.jumps["best_frame"], "Best frame of this sweep (b)")
    win.act_prev_flag = action("◀ Flagged", win.jumps["prev_flagged"], "Previous flagged frame (p)")
    win.act_next_flag = action("Flagged ▶", win.jumps["next_flagged"], "Next flagged frame (n)")
    # the same jumps as View menu entries that show their keys (and own them: the toolbar's are
    # disabled during a blinded review, where a key still says why it does not jump)
    win.menu_jumps = {"next_flagged": action("Next flagged frame", win.jumps["next_flagged"]),
                      "prev_flagged": action("Previous flagged frame", win.jumps["prev_flagged"]),
                      "best_frame": action("Best frame of this sweep", win.jumps["best_frame"])}
    win.act_fit = action("Fit", lambda: win.frame_view.view.autoRange(padding=0.0),
                         "Fit the frame to the view (double-click)")
    win.act_goto = action("Go to frame…", win.go_to_frame)
    win.act_spacing = action("Set pixel spacing…", lambda: window_tools.ask_spacing(win),
                             "mm per pixel, for a sweep whose file records none: lengths in mm and GA need it")
    # (no argument: the menu's 'checked' False reached export_frame as the path, a TypeError on stderr)
    win.act_export_frame = action("Export frame as PNG…", lambda: win.export_frame())
    win.act_export = action("Export report…", win.review.export_report)
    win.act_labels = action("Export reviewer labels…", win.review.export_labels)
    win.act_history = action("Export verdict history…", win.review.export_history,
                             "Every verdict entered, the replaced and withdrawn ones too (CSV)")
    win.act_quit = action("Quit", win.close, shortcut=QKeySequence.Quit)
    win.act_keys = action("Keyboard shortcuts", win.show_keys)
    win.act_about = action("About FetalIQA", win.show_about)

    win.opacity_slider = QSlider(Qt.Horizontal)
    win.opacity_slider.setRange(0, 100)
    win.opacity_slider.setValue(int(round(m.opacity * 100)))
    win.opacity_slider.setFixedWidth(90)
    win.opacity_slider.setFocusPolicy(Qt.NoFocus)
    win.opacity_slider.setToolTip("Overlay opacity (a / d)")

    tb.addAction(win.act_open)
    tb.addAction(win.act_models)
    tb.addSeparator()
    tb.addAction(win.act_overlay)
    tb.addWidget(win.opacity_slider)
    win.legend_label = QLabel(legend_html(segmenter_labels(None)))
    win.legend_label.setToolTip("Overlay colours of the loaded segmenter")
    tb.addWidget(win.legend_label)
    tb.addSeparator()
    tb.addAction(win.act_prev_flag)
    tb.addAction(win.act_best)
    tb.addAction(win.act_next_flag)
    tb.addSeparator()
    tb.addAction(win.act_fit)
    for w in tb.findChildren(QToolButton):
        w.setFocusPolicy(Qt.NoFocus)

    menu = win.menuBar()
    fm = menu.addMenu("&File")
    fm.addAction(win.act_open)
    fm.addAction(win.act_open_folder)
    win.recent_menu = fm.addMenu("Open recent")
    fm.addAction(win.act_open_demo)
    fm.addAction(win.act_export_frame)
    fm.addAction(win.act_export)
    fm.addAction(win.act_labels)
    fm.addAction(win.act_history)
    fm.addSeparator()
    fm.addAction(win.act_quit)
    vm = menu.addMenu("&View")
    vm.addAction(win.act_overlay)
    vm.addAction(win.act_fit)
    vm.addAction(win.act_goto)
    for act in win.menu_jumps.values():
        vm.addAction(act)
    vm.addAction(win.act_spacing)
    wl = vm.addMenu("Window/level")
    win.window_level_actions = []
    for name in WINDOW_LEVEL_PRESETS:
        act = wl.addAction(name)
        act.triggered.connect(lambda _=False, n=name: win.frame_view.apply_window_level_preset(n))
        win.window_level_actions.append(act)
    vm.addSeparator()
    vm.addAction(win.flagged_dock.toggleViewAction())
    vm.addAction(win.review_dock.toggleViewAction())
    sm = menu.addMenu("&Scoring")
    sm.addAction(win.act_models)
    sm.addAction(win.act_train)
    sm.addAction(win.act_rescore)
    sm.addAction(win.act_cancel)
    sm.addAction(win.act_threshold_own)
    build_review_menu(win, menu.addMenu("&Review"))
    hm = menu.addMenu("&Help")
    hm.addAction(win.act_keys)
    hm.addAction(win.act_about)

    review = win.review
    win.shortcuts = keymap.bind(win, {
        "prev_frame": lambda: m.step(-1), "next_frame": lambda: m.step(1),
        "page_back": lambda: m.page(-1), "page_on": lambda: m.page(1),
        "first_frame": m.home, "last_frame": m.end,
        "play": m.toggle_playing,
        "opacity_down": lambda: m.change_opacity(-OPACITY_STEP),
        "opacity_up": lambda: m.change_opacity(OPACITY_STEP),
        "reset_window_level": win.frame_view.reset_window_level,
        "review_optimal": lambda: review.choose("optimal"),
        "review_suboptimal": lambda: review.choose("suboptimal"),
        "review_not_usable": lambda: review.choose("not_usable"),
        "review_save": review.save_and_next, "review_withdraw": review.withdraw,
        "review_prev": lambda: review.move(-1), "review_next": lambda: review.move(1),
    }, menu_actions={"toggle_overlay": win.act_overlay, "go_to_frame": win.act_goto,
                     "cancel_scoring": win.act_cancel, "export_frame": win.act_export_frame,
                     "show_keys": win.act_keys, **win.menu_jumps})


def build_status(win) -> None:
    """Frame, values, AC, model, progress and the scoring button, in a status bar that fits a
    1024 px wide window: the passing message and the model label give way first."""
    sb = win.statusBar()
    sb.setSizeGripEnabled(False)
    win.status_frame = ElidedLabel()
    win.status_frame.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)
    win.status_values = QLabel()
    win.status_ac = AnswerLabel()
    win.status_threshold = ElidedLabel(all_or_nothing=True)
    win.status_model = ElidedLabel()
    win.status_model.setObjectName("dim")
    win.status_model.setMaximumWidth(MODEL_LABEL_WIDTH)
    win.status_message = ElidedLabel()
    win.status_message.setObjectName("dim")
    win._message_timer = QTimer(win)
    win._message_timer.setSingleShot(True)
    win._message_timer.timeout.connect(win.status_message.clear)
    win.progress = QProgressBar()
    win.progress.setRange(0, 1)
    win.progress.setValue(0)
    win.progress.setFormat("")
    win.progress.setMinimumWidth(PROGRESS_MIN_WIDTH)
    win.progress.setMaximumWidth(300)
    win.progress.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
    # One button: "Stop" while scoring (asks first), "Resume" when frames are left unscored,
    # "Score again" when everything is scored.
    win.cancel_button = QPushButton("Stop…")
    win.cancel_button.setFocusPolicy(Qt.NoFocus)
    win.cancel_button.clicked.connect(win.scoring_button_clicked)
    win.cancel_button.setEnabled(False)
    # The frame's own values are in the frame view's corner and the go-to box: the status bar
    # keeps what a narrow window must still show (sweep, the case's AC/GA, the threshold).
    for w in (win.status_frame, win.status_ac, win.status_threshold):
        w.setMinimumWidth(40)  # may shrink below its text when the window is narrow (elided, not cut)
        sb.addWidget(w)
    m = win.status_ac.contentsMargins()
    win.status_ac.setMinimumWidth(win.status_ac.fontMetrics().horizontalAdvance(NARROW_ANSWER) + 2 * win.status_ac.margin()
                                  + 4 + m.left() + m.right())
    win.status_threshold.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)
    win.status_message.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
    # the answer gives way (to its shorter forms) before the message and the model's names do
    win.status_message.setMinimumWidth(win.status_message.fontMetrics().averageCharWidth() * MESSAGE_MIN_CHARS)
    sb.addWidget(win.status_message, 1)
    # while the settings cannot be saved (the reason in its tooltip): a passing message was replaced at once
    win.status_settings = QLabel("⚠ settings not saved")
    win.status_settings.setObjectName("warn")
    win.status_settings.hide()
    sb.addPermanentWidget(win.status_settings)
    sb.addPermanentWidget(win.status_model, 1)
    sb.addPermanentWidget(win.progress, 1)
    sb.addPermanentWidget(win.cancel_button)
