"""Review panel: a trainer goes through a queue of flagged frames and enters verdicts.

Keys (window-wide while a review is open): ``1`` optimal, ``2`` suboptimal, ``0`` not usable
(choose the label), Enter save-and-next, Backspace / Del withdraw the verdict on the frame shown,
``[`` / ``]`` previous / next in the queue. Each verdict, and each withdrawal, is committed to
the review database when it is saved. The viewer (frame, overlay, curve cursor) follows the
queue. The reviewer's name is asked once and remembered.
"""

from __future__ import annotations

import functools
import html
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEvent, QEventLoop, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QProgressDialog,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.review_session import ReviewSession
from app.settings import AppSettings
from app.viewer_model import QUEUE_KINDS, ViewerModel
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.review.store import DatabaseBusy, DatabaseReplaced

LABEL_KEYS = {"1": "optimal", "2": "suboptimal", "0": "not_usable"}
LABEL_TITLES = {"optimal": "1  Optimal", "suboptimal": "2  Suboptimal", "not_usable": "0  Not usable"}
# "disagreements" holds the frames where the two models disagree (the flagged panel's "Models
# disagree") plus those where a verdict disagrees with the model's call: the title says both.
QUEUE_TITLES = {"candidates": "Candidates", "disagreements": "Models disagree, or you and the model",
                "unreviewed": "Unreviewed", "all": "All frames"}


#: Saving a verdict while another program writes to the review database: one attempt waits at
#: most SAVE_WAIT_MS, the panel tries again every SAVE_RETRY_MS, and gives up (saying so, the
#: verdict kept to save again) after SAVE_GIVE_UP_S. The window never waits out a lock.
SAVE_WAIT_MS = 100
SAVE_RETRY_MS = 400
SAVE_GIVE_UP_S = 20.0


@dataclass
class _Save:
    """A verdict being saved: what the reviewer entered, and on which frame of which session."""

    session: ReviewSession
    frame: int
    label: str
    note: str
    was_blinded: bool
    started: float


class NoteEdit(QLineEdit):
    """The review note. Esc leaves it (``done``): the window's keys (verdicts, arrows) work
    again, as after Enter in the go-to-frame box. Enter saves (``returnPressed``), and the panel
    then hands the keys back too."""

    done = Signal()

    def event(self, ev):  # noqa: D102
        if ev.type() == QEvent.ShortcutOverride and ev.key() == Qt.Key_Escape:
            ev.accept()  # Esc is the note's (leave it), not the window's (stop scoring)
            return True
        return super().event(ev)

    def keyPressEvent(self, ev):  # noqa: N802
        if ev.key() == Qt.Key_Escape:
            self.done.emit()
            return
        super().keyPressEvent(ev)


@dataclass
class _Start:
    """A verdict key pressed before the review started, while the database was busy: the label
    and the frame it judges, whether Enter was pressed too, and since when it waits."""

    label: str
    frame: int
    started: float
    sweep: object = None
    save: bool = False


class ReviewPanel(QWidget):
    """``message(str)`` reports what happened (for the status bar); ``keys_back`` asks the window
    to take the keyboard back from the note (Enter or Esc in it)."""

    message = Signal(str)
    keys_back = Signal()
    blinding_changed = Signal()  # what the viewer may show of the model's call changed
    saving_ended = Signal(bool)  # a verdict that waited for the database: saved (True) or given up

    def __init__(self, model: ViewerModel, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.settings = settings
        self.session: ReviewSession | None = None
        self._store = None
        self._renderer = None  # the report being written (app.worker.ReportRenderer), if any
        self.bundles: dict = {}
        self._pending: str | None = None
        self._pending_frame = -1  # the frame the pending verdict was chosen on
        self._recording = False  # a verdict being saved (its save moves to the next frame)
        self._saving: _Save | None = None  # a verdict waiting for another program's write to end
        self._starting: _Start | None = None  # a verdict key waiting for the review to start

        self.reviewer_label = QLabel()
        self.reviewer_label.setObjectName("dim")
        self.change_reviewer = QPushButton("Change…")
        self.change_reviewer.setFocusPolicy(Qt.NoFocus)
        self.change_reviewer.clicked.connect(self._ask_reviewer)
        self.start_button = QPushButton("Start review")
        self.start_button.clicked.connect(self.start)

        self.queue_combo = QComboBox()
        for kind in QUEUE_KINDS:
            self.queue_combo.addItem(QUEUE_TITLES[kind], kind)
        self.queue_combo.setFocusPolicy(Qt.NoFocus)
        self.queue_combo.currentIndexChanged.connect(self._queue_changed)

        self.best_only = QCheckBox("Best frames only")
        self.best_only.setToolTip("Restrict the queue to the best frame of each sweep (and the chosen frame)")
        self.best_only.setFocusPolicy(Qt.NoFocus)
        self.best_only.toggled.connect(self._best_only_toggled)
        self.blinded = QCheckBox("Blinded: my verdict first")
        self.blinded.setToolTip("Hide the model's call (scores, overlay, curve, flags) on a frame until "
                                "you have saved your verdict on it. The Candidates, Unreviewed and disagreement "
                                "queues hold frames the model singled out: for a review blind to that too, "
                                "choose All frames")
        self.blinded.setFocusPolicy(Qt.NoFocus)
        self.blinded.toggled.connect(self._blinded_toggled)
        self.progress_label = QLabel("0 / 0 reviewed")
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(6)
        self.progress_bar.setStyleSheet("QProgressBar { min-width: 0; }")
        self.where_label = QLabel("")
        self.where_label.setWordWrap(True)
        self.verdict_label = QLabel("")
        self.verdict_label.setObjectName("dim")

        self.label_buttons: dict[str, QPushButton] = {}
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        row = QHBoxLayout()
        for label in LABEL_KEYS.values():
            b = QPushButton(LABEL_TITLES[label])
            b.setObjectName(f"verdict_{label}")
            b.setCheckable(True)
            b.setFocusPolicy(Qt.NoFocus)
            b.clicked.connect(lambda _=False, lab=label: self.choose(lab))
            self._group.addButton(b)
            self.label_buttons[label] = b
            row.addWidget(b)
        # a key pressed on the wrong frame is taken back here (the frame counts as not judged)
        self.withdraw_button = QPushButton("⌫  Withdraw")
        self.withdraw_button.setObjectName("verdict_withdraw")
        self.withdraw_button.setToolTip("Withdraw your verdict on this frame (Backspace or Del): it counts as not "
                                        "reviewed again, in the queue, the progress, the report and the labels; "
                                        "the verdict history keeps it")
        self.withdraw_button.setFocusPolicy(Qt.NoFocus)
        self.withdraw_button.clicked.connect(self.withdraw)
        # beside the verdict it withdraws, above the verdict buttons (in their row it widened the panel)
        verdict_row = QHBoxLayout()
        verdict_row.addWidget(self.verdict_label, 1)
        verdict_row.addWidget(self.withdraw_button)

        self.note = NoteEdit()
        self.note.setPlaceholderText("note (optional)")
        self.note.setToolTip("Enter saves the verdict with this note and hands the keys back to the frame; "
                             "Esc hands them back without saving")
        self.note.returnPressed.connect(self.save_and_next)
        self.note.done.connect(self.keys_back)
        self.prev_button = QPushButton("◀ Prev")
        self.next_button = QPushButton("Next ▶")
        self.save_button = QPushButton("Save && next  ⏎")
        for b in (self.prev_button, self.next_button, self.save_button):
            b.setFocusPolicy(Qt.NoFocus)
        self.prev_button.clicked.connect(lambda: self.move(-1))
        self.next_button.clicked.connect(lambda: self.move(1))
        self.save_button.clicked.connect(self.save_and_next)
        self.export_button = QPushButton("Export report…")
        self.export_button.setFocusPolicy(Qt.NoFocus)
        self.export_button.clicked.connect(self.export_report)

        top = QHBoxLayout()
        top.addWidget(self.reviewer_label, 1)
        top.addWidget(self.change_reviewer)
        qrow = QHBoxLayout()
        qrow.addWidget(QLabel("Queue"))
        qrow.addWidget(self.queue_combo, 1)
        nav = QHBoxLayout()
        nav.addWidget(self.prev_button)
        nav.addWidget(self.next_button)
        nav.addWidget(self.save_button, 1)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 8, 8, 8)
        lay.addLayout(top)
        lay.addWidget(self.start_button)
        lay.addLayout(qrow)
        opts = QHBoxLayout()
        opts.addWidget(self.best_only)
        opts.addWidget(self.blinded)
        opts.addStretch(1)
        lay.addLayout(opts)
        lay.addWidget(self.progress_label)
        lay.addWidget(self.progress_bar)
        lay.addWidget(self.where_label)
        lay.addLayout(verdict_row)
        lay.addLayout(row)
        lay.addWidget(self.note)
        lay.addLayout(nav)
        lay.addStretch(1)
        lay.addWidget(self.export_button)

        model.events.review.connect(self.refresh)
        model.events.frame.connect(self._frame_changed)
        model.events.sweep.connect(self.close_session)
        self._update_reviewer_label()
        self._set_active(False)

    # -- session ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.session is not None

    def hides_model(self, frame: int | None = None) -> bool:
        """Blinded review: the model's call on ``frame`` (default: the current one) stays hidden
        until this reviewer has saved a verdict on it."""
        if self.session is None or not self.blinded.isChecked() or self.model.sweep is None:
            return False
        return (self.model.frame if frame is None else frame) not in self.model.verdicts

    def _blinded_toggled(self, on: bool) -> None:
        if on and self.model.queue_kind != "all":
            # a queue of the model's flagged frames tells its call by being one
            self.message.emit(f"Blinded review: the '{QUEUE_TITLES.get(self.model.queue_kind, self.model.queue_kind)}' "
                              "queue holds frames the model singled out; choose All frames to be blind to that too.")
        self.blinding_changed.emit()

    def _best_only_toggled(self, on: bool) -> None:
        if self.session is None:
            return
        self.session.best_only = on
        self.session.set_queue(self.model.queue_kind, self.model.frame)

    def store(self):
        if self._store is None:
            from fetaliqa_core.review import ReviewStore

            db = self.settings.review_db or None
            store = ReviewStore(Path(db) if db else None, open_wait_ms=SAVE_WAIT_MS)  # (busy: start retries)
            try:
                # a database whose rows are damaged is refused before a review writes into it
                # (its reports and exports would refuse it afterwards, with the new verdicts in it)
                store.sweeps()
                store.verdicts()
            except FetalIQAError:
                store.close()
                raise
            self._store = store
        return self._store

    def unsaved_verdict(self) -> tuple[int, str] | None:
        """The verdict chosen on the frame shown but not saved yet (Enter): ``(frame, label)``.
        None while it is being saved (it waits for the database: :meth:`waiting_verdict`)."""
        if (self.session is None or self._pending is None or self._pending_frame != self.model.frame
                or self._saving is not None):
            return None
        return self._pending_frame, self._pending

    def waiting_verdict(self) -> tuple[int, str] | None:
        """The verdict entered (Enter) that waits for the review database another program holds:
        ``(frame, label)``; None when none waits."""
        job = self._saving
        if job is None and self._starting is not None and self._starting.save:
            return self._starting.frame, self._starting.label  # entered before the review could start
        return None if job is None else (job.frame, job.label)

    def drop_waiting_verdict(self) -> None:
        """Give up the verdict that waits for the database (the trainer chose to close without it):
        it is no longer chosen either (closing asked a second time whether to save it, and saving
        it waited out the lock on the window's thread)."""
        job, self._saving = self._saving, None
        self._starting = None
        if job is not None and self._pending_frame == job.frame:
            self._pending = None

    def close_store(self) -> None:
        self.finish_saving()
        if self._renderer is not None:  # a report being written reads the store: it stops first
            self._renderer.cancel()
            self._renderer.wait()
        self.session = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def _update_reviewer_label(self) -> None:
        name = self.settings.reviewer or "—"
        self.reviewer_label.setText(f"Reviewer: <b>{html.escape(name)}</b>")  # a name is text, never markup

    def _ask_reviewer(self) -> bool:
        name, ok = QInputDialog.getText(self, "Reviewer", "Your name (saved with each verdict):",
                                        text=self.settings.reviewer)
        name = name.strip() if ok else ""
        if not name:
            return False
        self.settings.reviewer = name
        self.settings.save()
        self._update_reviewer_label()
        if self.session is not None:
            self.start()
        return True

    def start(self, waiting: _Start | None = None) -> bool:
        """Open the review of the current sweep, resuming where this reviewer stopped. Each
        statement waits a moment at most for another program's write: while the database is
        busy, a verdict key (``waiting``) is kept and the start tried again shortly (as a verdict
        being saved is), the window going on; the Start button says it is busy."""
        if self.model.sweep is None:
            self.message.emit("Open a sweep to review it.")
            return False
        if not (self.settings.reviewer or "").strip() and not self._ask_reviewer():
            return False  # (a name of spaces in the settings made every save fail)
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            store = self.store()
            with store.waiting_at_most(SAVE_WAIT_MS):
                known = store.known_reviewer(self.settings.reviewer)
                if known != self.settings.reviewer:  # the same person as the database spells them
                    self.settings.reviewer = known
                    self.settings.save()
                self._update_reviewer_label()
                session = ReviewSession(self.model, store, self.settings.reviewer)
                session.bundles = dict(self.bundles)
                session.best_only = self.best_only.isChecked()
                session.open_sweep()
                session.sync_run()
                self.session = session
                session.resume()
        except DatabaseBusy as exc:
            self.session = None
            if waiting is not None and time.monotonic() - waiting.started < SAVE_GIVE_UP_S:
                self._starting = waiting
                what = "saved" if waiting.save else "kept (Enter saves it)"
                self.message.emit(f"Frame {waiting.frame}: {waiting.label.replace('_', ' ')} — the review database is "
                                  "busy (another program is writing to it): the review starts as soon as it lets "
                                  f"it, and this verdict is {what}…")
                QTimer.singleShot(SAVE_RETRY_MS, self._retry_start)
                return False
            lost = (f" Frame {waiting.frame}'s verdict ({waiting.label.replace('_', ' ')}) was not saved: press its "
                    "key again." if waiting is not None else "")
            QMessageBox.warning(self, "Review", f"{exc}{lost}")
            self.message.emit("The review did not start: the review database is busy." + (
                f" Frame {waiting.frame}'s verdict was not saved." if waiting is not None else ""))
            return False
        except FetalIQAError as exc:
            self.session = None
            said = for_the_window(str(exc))
            if said == self._start_refused:  # (a verdict key after the box tried again: the same box twice)
                self.message.emit(f"The review did not start: {said}")
            else:
                self._start_refused = said
                QMessageBox.warning(self, "Review", said)
            return False
        finally:
            QApplication.restoreOverrideCursor()
        self._start_refused = ""
        self._set_active(True)
        self._select_combo(self.model.queue_kind)
        self.refresh()
        self.blinding_changed.emit()
        self.message.emit(f"Reviewing as {self.settings.reviewer}: resumed at frame {self.model.frame}.")
        return True

    #: why the last start was refused (said in a box once; the same reason again in the status bar)
    _start_refused = ""

    def close_session(self) -> None:
        self.session = None  # (a verdict still waiting for the database is saved to its own sweep)
        self._pending = None
        self._set_active(False)
        self.refresh()
        self.blinding_changed.emit()

    def results_updated(self, final: bool = False) -> None:
        """New results (scoring finished or models changed): store the run, refresh the queue."""
        if self.session is None:
            return
        self.session.bundles = dict(self.bundles)
        if self.session.sync_run() or final:
            self.session.set_queue(self.model.queue_kind, self.model.queue_frame)

    def _set_active(self, on: bool) -> None:
        for w in (self.queue_combo, self.note, self.prev_button, self.next_button, self.save_button,
                  self.withdraw_button, *self.label_buttons.values()):
            w.setEnabled(on)
        self.start_button.setVisible(not on)

    def _select_combo(self, kind: str) -> None:
        idx = self.queue_combo.findData(kind)
        if idx >= 0 and idx != self.queue_combo.currentIndex():
            self.queue_combo.blockSignals(True)
            self.queue_combo.setCurrentIndex(idx)
            self.queue_combo.blockSignals(False)

    def _queue_changed(self, _index: int) -> None:
        if self.session is None:
            return
        kind = self.queue_combo.currentData()
        try:
            self.session.set_queue(kind, self.model.frame)
        except FetalIQAError as exc:  # (a slot: an exception here went to stderr only)
            QMessageBox.warning(self, "Review", for_the_window(str(exc)))
            return
        self.session.remember_position(self.model.frame, kind)

    # -- actions ---------------------------------------------------------------------------
    def choose(self, label: str) -> None:
        """Choose a label (keys 1 / 2 / 0); Enter saves it."""
        if self.session is None:
            shown = self.model.frame
            if self._starting is not None:  # the review waits for the database: this key replaces the last
                self._starting.label, self._starting.frame = label, shown
                self.message.emit(f"Frame {shown}: {label.replace('_', ' ')} — kept until the review database "
                                  "lets the review start (another program is writing to it).")
                return
            if not self.start(_Start(label, shown, time.monotonic(), self.model.sweep)):
                return
            if self.model.frame != shown:
                # the review resumed elsewhere, but the key judges the frame that was shown, the one
                # the reviewer looked at (frame 5's "1" + Enter saved the resumed frame 17 as optimal)
                self.model.set_frame(shown)
        self._pending = label
        self._pending_frame = self.model.frame
        self.label_buttons[label].setChecked(True)
        job = self._saving
        if job is not None and job.session is self.session and job.frame == self.model.frame:
            job.label = label  # changed before the busy database took the first one: this one is saved
            self.message.emit(f"Frame {job.frame}: {label.replace('_', ' ')} — saved as soon as the review "
                              "database lets it.")
            return
        self.message.emit(f"Frame {self.model.frame}: {label.replace('_', ' ')} — Enter saves and goes on.")

    def save_and_next(self) -> None:
        """Enter: save the verdict chosen on the frame shown, with the note, and go on. Pressed in
        the note, it also hands the keys back to the frame: the focus stayed in the note, and the
        next frame's verdict keys were typed into it, then saved as that frame's note."""
        in_note = self.note.hasFocus()
        try:
            self._save_and_next(in_note)
        finally:
            if in_note:
                self.keys_back.emit()

    def _save_and_next(self, in_note: bool) -> None:
        if self.session is None:
            if self._starting is not None:
                self._starting.save = True
                self.message.emit(f"Frame {self._starting.frame}'s verdict is saved as soon as the review database "
                                  "lets the review start (another program is writing to it).")
            return
        if self._saving is not None:
            self.message.emit(f"Still saving frame {self._saving.frame}'s verdict: the review database is busy.")
            return
        if self._pending is None:
            kept = " The note keeps what you typed; the keys work on the frame again." if in_note else ""
            self.message.emit(f"Choose a verdict first: 1 optimal, 2 suboptimal, 0 not usable.{kept}")
            return
        frame = self.model.frame
        self._attempt_save(_Save(self.session, frame, self._pending, self.note.text().strip(),
                                 self.hides_model(frame), time.monotonic()))

    def withdraw(self) -> bool:
        """Withdraw this reviewer's verdict on the frame shown (Backspace / Del, the Withdraw
        button): the frame counts as not judged again, and a blinded review hides the model's call
        on it again. A label chosen but not saved is only cleared. The withdrawal is committed at
        once, waiting at most a moment for another program's write: while the database is busy
        (or a verdict still waits for it) it is refused, saying so, the verdict shown as it
        stands, rather than kept waiting where closing the window could lose it. True when a
        verdict was withdrawn."""
        if self.session is None:
            self.message.emit("Start the review to withdraw a verdict: no review is open.")
            return False
        frame = self.model.frame
        if self._saving is not None:
            self.message.emit(f"Frame {self._saving.frame}'s verdict still waits for the review database (another "
                              "program is writing to it): withdraw once it is saved.")
            return False
        self.reload_verdicts()  # (another window may have judged or withdrawn it since it was shown)
        label = self.model.verdicts.get(frame)
        if label is None:
            if self._pending is not None and self._pending_frame == frame:
                self._pending = None
                self._sync_buttons()
                self.message.emit(f"Frame {frame}: the label chosen is cleared (it was not saved).")
            else:
                self.message.emit(f"Frame {frame} has no verdict of yours to withdraw.")
            return False
        try:
            self.session.withdraw(frame, wait_ms=SAVE_WAIT_MS)
        except DatabaseBusy as exc:
            QMessageBox.warning(self, "Review", f"{for_the_window(str(exc))} Your verdict on frame {frame} ({label.replace('_', ' ')}) "
                                "stands, not withdrawn: press Backspace again in a moment.")
            return False
        except FetalIQAError as exc:
            QMessageBox.warning(self, "Review", for_the_window(str(exc)))
            return False
        self._pending = None
        self.note.setText("")
        hidden = " The model's call on it is hidden again (blinded review)." if self.hides_model(frame) else ""
        self.message.emit(f"Withdrew your verdict on frame {frame} ({label.replace('_', ' ')}): it counts as not "
                          f"reviewed.{hidden}")
        self.blinding_changed.emit()
        self.refresh()
        return True

    def _attempt_save(self, job: _Save, wait_ms: int | None = SAVE_WAIT_MS) -> bool:
        """Save ``job``'s verdict; while another program holds the database, try again later
        (the window goes on). A verdict of a review since closed (another sweep opened, another
        reviewer) is still saved, to its own sweep, without touching what the viewer shows now.
        ``wait_ms`` None: the last try before the database closes, waiting its full busy timeout.
        True when it was saved."""
        self._saving = None
        current = self.session is job.session
        here = current and self.model.frame == job.frame  # (else the reviewer moved on while it waited)
        earlier = "" if current else " (of the sweep reviewed before)"
        try:
            self._recording = True  # (the move to the next frame is the save's, not a verdict left behind)
            try:
                job.session.record(job.label, job.note, advance=here, frame=job.frame, wait_ms=wait_ms, view=current)
            finally:
                self._recording = False
        except DatabaseBusy as exc:
            if wait_ms is not None and time.monotonic() - job.started < SAVE_GIVE_UP_S:
                self._saving = job
                self.message.emit(f"Saving frame {job.frame}'s verdict{earlier}: the review database is busy "
                                  "(another program is writing to it); trying again…")
                QTimer.singleShot(SAVE_RETRY_MS, self._retry_save)
                return False
            if here:
                self._pending = job.label
                self._sync_buttons()
                again = "press Enter to try again"
            elif current:
                again = f"go back to frame {job.frame} to enter it again"
            else:
                again = "open that sweep again to enter it"
            QMessageBox.warning(self, "Review", f"{for_the_window(str(exc))} Frame {job.frame}'s verdict{earlier} was not saved: {again}.")
            self.saving_ended.emit(False)
            return False
        except DatabaseReplaced as exc:
            # (the file at the path is another, or none: the verdict stays chosen, and closing the
            # window asks about it, rather than being dropped with the box)
            if here:
                self._pending = job.label
                self._sync_buttons()
            QMessageBox.warning(self, "Review", f"{for_the_window(str(exc))} Frame {job.frame}'s verdict{earlier} "
                                f"({job.label.replace('_', ' ')}) was not saved: enter it again once the window "
                                "is started again.")
            self.saving_ended.emit(False)
            return False
        except FetalIQAError as exc:
            QMessageBox.warning(self, "Review", for_the_window(str(exc)))
            self.saving_ended.emit(False)
            return False
        if not current:
            self.message.emit(f"Saved frame {job.frame}{earlier}: {job.label.replace('_', ' ')}.")
            self.saving_ended.emit(True)
            return True
        reveal = f" The model's call: {self.model_call(job.frame)}." if job.was_blinded else ""
        done, total = self.model.review_progress
        finished = (f" Queue finished: all {total} frames judged; a verdict key now judges the frame shown "
                    f"({self.model.frame}). Choose another queue or frame." if total and done >= total else "")
        self.message.emit(f"Saved frame {job.frame}: {job.label.replace('_', ' ')}.{reveal}{finished}")
        self.blinding_changed.emit()
        if here:
            self._pending = None
            self.note.setText(self.session.notes.get(self.model.frame, ""))  # the frame now shown (the next)
        self._sync_buttons()
        self._update_where()
        self.saving_ended.emit(True)
        return True

    def _retry_start(self, final: bool = False) -> None:
        """Try again to start the review a verdict key waits for (:meth:`start`); once started,
        the key judges the frame it was pressed on, and Enter pressed meanwhile saves it.
        ``final``: the last try before the database closes."""
        job, self._starting = self._starting, None
        if job is None or self.session is not None:
            return
        if self.model.sweep is not job.sweep:  # another sweep was opened meanwhile: the key was for the last one
            self.message.emit(f"The verdict key pressed on frame {job.frame} of the sweep shown before was not "
                              "kept: the review database was busy until another sweep was opened.")
            return
        if final:
            job.started = -SAVE_GIVE_UP_S  # no further retry: refused with a box if still busy
        if not self.start(job):
            return
        if self.model.frame != job.frame:
            self.model.set_frame(job.frame)
        self.choose(job.label)
        if job.save:
            self.save_and_next()

    def _retry_save(self) -> None:
        if self._saving is not None:
            self._attempt_save(self._saving)

    def finish_saving(self) -> None:
        """Before the review database closes: a verdict still waiting for it gets one last try,
        waiting its full busy timeout."""
        if self._starting is not None and self._starting.save:
            self._retry_start(final=True)
        if self._saving is not None:
            self._attempt_save(self._saving, wait_ms=None)

    def model_call(self, frame: int) -> str:
        """The model's call on a frame in words (shown after a blinded verdict)."""
        fl = self.model.flags
        call = "flagged" if frame in set(fl.candidates) else "not flagged"
        if frame == fl.chosen:
            call += ", the case's chosen frame"
        elif frame in fl.chosen_best():
            call += ", best frame of its sweep"
        return call

    def move(self, delta: int) -> None:
        if self.session is not None:
            try:
                self.session.move(delta)
            except FetalIQAError as exc:  # (a key's slot: an exception here went to stderr only)
                QMessageBox.warning(self, "Review", for_the_window(str(exc)))

    def export_report(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export review report", str(Path.home() / "fetaliqa-review.pdf"),
            "PDF (*.pdf);;HTML (*.html);;CSV (*.csv)")
        if path:
            self.write_report(Path(path))

    def write_report(self, out: Path) -> Path | None:
        """Write the report of the sweep under review (all sweeps in the database when none).

        Each sweep's frames are read again for its thumbnails, and a PDF laid out, on a thread
        of its own (:class:`app.worker.ReportRenderer`): the window keeps drawing behind a modal
        progress dialog, one step a sweep, whose Cancel writes nothing. The file is written here
        at the end.
        """
        from app.report_pdf import write_pdf
        from app.worker import ReportRenderer
        from fetaliqa_core.io import load_sweep
        from fetaliqa_core.review.report import check_output, save_report

        if out.suffix.lower() not in (".pdf", ".html", ".csv"):
            out = out.with_suffix(".pdf")
        current = self.model.sweep
        ids = [self.session.sweep_id] if self.session is not None else None
        try:
            # as `fetaliqa review export` refuses it, on the name written (the dialog asked
            # before ".pdf" was added, and only about a file the user picked): someone's
            # minutes.pdf or budget.csv, a link, a pipe, the database itself
            check_output(out, self.store(), option=None)
            n_sweeps = len(ids) if ids is not None else len(self.store().sweeps())
            if self.session is not None:
                self.session.sync_run()
        except FetalIQAError as exc:
            QMessageBox.warning(self, "Export report", str(exc))
            return None

        def frames_of(path: str):  # in the renderer's thread
            # the sweep, not its frames: the report compares its content hash with the one
            # reviewed (a file replaced under the same name has the same path)
            if current is not None and current.path is not None and str(current.path) == str(path):
                return current
            return load_sweep(path).in_memory()  # (a file rewritten meanwhile: a line, not SIGBUS)

        progress = QProgressDialog("Writing the report…", "Cancel", 0, max(n_sweeps, 1), self)
        progress.setWindowTitle("Export report")
        progress.setWindowModality(Qt.WindowModal)
        progress.setMinimumDuration(0)  # modal at once: the window takes no keys while it runs
        renderer = ReportRenderer(self.store(), out, ids, frames_of)
        self._renderer = renderer
        loop = QEventLoop()

        def reading(done: int, name: str) -> None:
            progress.setValue(min(done, n_sweeps))
            progress.setLabelText(f"Reading sweep {done + 1} of {n_sweeps}: {name}" if name
                                  else "Laying out the PDF…")
            if progress.wasCanceled():
                renderer.cancel()

        renderer.reading.connect(reading)
        progress.canceled.connect(renderer.cancel)
        renderer.finished.connect(loop.quit)
        QApplication.setOverrideCursor(Qt.BusyCursor)
        try:
            renderer.start()
            if not renderer.isFinished():
                loop.exec()  # returns when the renderer ends (or the application quits)
            QApplication.processEvents()  # its last progress steps, queued before it ended
            if progress.wasCanceled() or not renderer.isFinished():
                renderer.cancel()
            renderer.wait()
            if renderer.cancelled:
                self.message.emit("Report cancelled: nothing written")
                return None
            if renderer.error is not None:
                QMessageBox.warning(self, "Export report", renderer.error)
                return None
            progress.setLabelText("Writing the file…")
            def pdf_writer(_html: str, path: Path) -> Path:
                if renderer.pdf is None:
                    raise FetalIQAError("The PDF was not laid out; write .html instead.")
                return write_pdf(renderer.pdf, path)

            result = save_report(renderer.text or "", out, pdf_writer=pdf_writer)
        except FetalIQAError as exc:
            QMessageBox.warning(self, "Export report", str(exc))
            return None
        finally:
            self._renderer = None
            progress.close()
            progress.deleteLater()
            renderer.deleteLater()
            QApplication.restoreOverrideCursor()
        self.message.emit(f"Report written: {result}")
        return result

    def export_labels(self) -> None:
        self._export_csv("Export reviewer labels (training CSV)", "fetaliqa-labels.csv", self.write_labels)

    def write_labels(self, out: Path) -> int | None:
        """Every reviewer's latest label per frame, all sweeps, as the training script takes them."""
        from fetaliqa_core.review.report import write_labels_csv

        return self._write_csv(functools.partial(write_labels_csv, option=None), out, "Export labels", "labels")

    def export_history(self) -> None:
        self._export_csv("Export verdict history (CSV)", "fetaliqa-verdict-history.csv", self.write_history)

    def write_history(self, out: Path) -> int | None:
        """Every verdict ever entered, replaced ones too, and every withdrawal, all sweeps (as
        `fetaliqa review history`)."""
        from fetaliqa_core.review.report import write_history_csv

        return self._write_csv(functools.partial(write_history_csv, option=None), out, "Export verdict history",
                               "rows (replaced verdicts and withdrawals included)")

    def _export_csv(self, title: str, name: str, write) -> None:
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path.home() / name), "CSV (*.csv)")
        if path:
            write(Path(path))

    def _write_csv(self, write, out: Path, title: str, what: str) -> int | None:
        """``write(store, out)`` (a CSV export), its refusal in a box, its count in the status bar."""
        try:
            n = write(self.store(), out)
        except FetalIQAError as exc:
            QMessageBox.warning(self, title, str(exc))
            return None
        self.message.emit(f"{n} {what} written: {out}")
        return n

    # -- display ---------------------------------------------------------------------------
    def _frame_changed(self, frame: int) -> None:
        self.model.queue_goto_frame(frame)
        if self.session is not None:
            # another window (or program) may have judged or withdrawn a verdict of this reviewer
            # since: the frame shows what the database holds (one cheap statement when nothing changed)
            self.session.reload_if_changed()
        left = self._pending_frame if self._pending is not None and not self._recording else None
        if left is not None and left != frame:
            # a verdict chosen but not saved (Enter) was dropped without a word, and the status bar
            # went on saying "Enter saves" beside the next frame
            self.message.emit(f"Frame {left}: {self._pending.replace('_', ' ')} was not saved (Enter saves); go "
                              f"back to frame {left} to judge it again.")
        self._pending = None
        # a note belongs to its frame: the one typed here is not carried to the next frame, and
        # a frame judged before shows its saved note (a corrected label would save it empty)
        self.note.setText(self.session.notes.get(frame, "") if self.session is not None else "")
        self._sync_buttons()
        self._update_where()

    def reload_verdicts(self) -> bool:
        """Show this reviewer's verdicts as the database holds them now, when another window or
        program changed them (the window calls it when it comes back to the front). A label
        chosen and not saved stays chosen, and a note typed stays; a note not touched shows the
        one saved now. True when something shown changed."""
        s = self.session
        if s is None:
            return False
        frame = self.model.frame
        before = s.notes.get(frame, "")
        if not s.reload_if_changed():
            return False
        if self.note.text() == before:  # not edited since it was shown
            self.note.setText(s.notes.get(frame, ""))
        self.blinding_changed.emit()  # (the frame's corner says its verdict; blinded: the model's call)
        return True

    def _sync_buttons(self) -> None:
        label = self._pending or self.model.verdicts.get(self.model.frame)
        self._group.setExclusive(False)
        for name, b in self.label_buttons.items():
            b.setChecked(name == label)
        self._group.setExclusive(True)
        self.withdraw_button.setEnabled(self.session is not None and label is not None)

    def _update_where(self) -> None:
        m = self.model
        if self.session is None:
            self.where_label.setText("")
            self.verdict_label.setText("Press Start review, or a verdict key (1 / 2 / 0)."
                                       if m.sweep is not None else "")
            return
        qf = m.queue_frame
        pos = f"{m.queue_pos + 1} of {len(m.queue)} in queue" if qf == m.frame and m.queue else "not in this queue"
        k = m.sweep_index()
        kind = m.sweep_kinds[k] if k < len(m.sweep_kinds) else ""
        self.where_label.setText(f"<b>Frame {m.frame}</b> · sweep {k + 1} {kind} · {pos}")
        saved = m.verdicts.get(m.frame)
        self.verdict_label.setText(f"Your verdict: {saved.replace('_', ' ')}" if saved else "Not reviewed yet")

    def refresh(self) -> None:
        done, total = self.model.review_progress
        self.progress_label.setText(f"<b>{done} / {total}</b> reviewed")
        self.progress_bar.setMaximum(max(total, 1))
        self.progress_bar.setValue(done)
        if self.session is not None:
            self._select_combo(self.model.queue_kind)
        self._sync_buttons()
        self._update_where()


def for_the_window(message: str) -> str:
    """A review database's refusal, its advice put in the window's terms: it said "choose another
    file with --db", a command-line option the window has no control for."""
    return (message.replace("or choose another file with --db.",
                            "or start the window again with --db FILE to use another file.")
            .replace("choose another file with --db.", "start the window again with --db FILE to use another file.")
            .replace("give that with --db.", "start the window again with --db on it.")
            .replace("Open it again to go on.", "Close the window and start it again to open it."))
