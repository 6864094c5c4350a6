"""One reviewer working through one sweep's flagged frames, without Qt.

Joins the viewer's state (:class:`app.viewer_model.ViewerModel`) to the review database
(:class:`fetaliqa_core.review.ReviewStore`): the store decides what is in each queue and keeps
every verdict and the resume position; this class turns key presses into store calls and keeps
the viewer on the queue's current frame.
"""

from __future__ import annotations

import math

import numpy as np

from app.viewer_model import QUEUE_KINDS, ViewerModel


#: How long moving through a queue waits for another program's write to end before it gives up
#: storing the resume position.
POSITION_WAIT_MS = 250
#: How long reading the verdicts again (a frame shown, the window back in front) waits for another
#: program's write before it keeps what is shown, to try again at the next frame.
RELOAD_WAIT_MS = 50


class ReviewSession:
    """Review of the sweep shown by ``model``; ``bundles`` describes the models for the store."""

    def __init__(self, model: ViewerModel, store, reviewer: str) -> None:
        self.model = model
        self.store = store
        self.reviewer = reviewer.strip()
        self.sweep_id: int | None = None
        self._stored_version: int | None = None
        self._stored_threshold: float | None = None
        self.bundles: dict = {}
        self.notes: dict[int, str] = {}
        self._data_version: int | None = None  # the store's data_version when the verdicts were read

    # -- sweep and model run ---------------------------------------------------------------
    def open_sweep(self) -> int:
        """Register the model's sweep in the store (by content hash) and load the verdicts."""
        self.sweep_id = self.store.add_sweep_from(self.model.sweep)
        self._stored_version = None
        self._load_verdicts()
        return self.sweep_id

    def sync_run(self, force: bool = False) -> bool:
        """Store the results shown now as a model run if they changed since the last one.

        The store's queues and the reviewer/model agreement come from the latest run.
        Returns True when a run was added.
        """
        m = self.model
        if self.sweep_id is None or m.results is None or m.results.n_done == 0:
            return False
        if (not force and self._stored_version == m.results_version
                and self._stored_threshold == m.threshold):
            return False
        r = m.results
        a = m.assessment
        if a is None:
            return False
        # the pixel size this run is measured with (the user may have set one): written when it changed
        usable = getattr(m.sweep, "spacing_problem", None) is None
        wanted = tuple(float(v) for v in m.sweep.spacing_mm) if usable else None
        if self.store.sweep(self.sweep_id).spacing_mm != wanted:
            self.store.add_sweep_from(m.sweep)
        # what may be shown of the AC: no mm / GA without a known, plausible pixel spacing
        reading = m.reading(a.chosen_ac(), a.chosen_frame)
        # only a number to act on is stored: the report prints what is stored as a plain number
        ac_mm, ga_weeks = (reading.ac_mm, reading.ga_weeks) if reading.trusted else (None, None)
        masks = {}
        if r.has_seg:
            flags = m.flags
            wanted = set(flags.candidates) | set(flags.disagreements)
            wanted |= {b for b in flags.best if b is not None}
            masks = {f: r.masks[f] for f in sorted(wanted) if f in r.masks}
        self.store.add_model_run(
            self.sweep_id, self.bundles,
            r.p_cls if r.has_cls else np.full(m.n_frames, np.nan, np.float32),
            r.p_seg if r.has_seg else np.full(m.n_frames, np.nan, np.float32),
            np.maximum(r.seg_area_px, 0), a.flagged, threshold=a.thresholds.cls,
            seg_threshold=a.thresholds.seg, chosen_frame=a.chosen_frame if a.chosen_frame >= 0 else None,
            ac_mm=ac_mm, ga_weeks=ga_weeks, masks=masks)
        self._stored_version = m.results_version
        self._stored_threshold = m.threshold
        return True

    # -- queue -----------------------------------------------------------------------------
    def _load_verdicts(self) -> None:
        self._data_version = self.store.data_version()  # (before reading: a commit between is read again)
        mine = self.store.verdicts(self.sweep_id, self.reviewer)
        verdicts = {v.frame: v.label for v in mine}
        #: the reviewer's saved note per frame, shown again when they come back to it
        self.notes = {v.frame: v.note for v in mine if v.note}
        self.model.set_verdicts(verdicts, self._progress(self.model.queue_kind))

    def reload_if_changed(self, wait_ms: int = RELOAD_WAIT_MS) -> bool:
        """Read this reviewer's verdicts and notes again if another window or program committed
        to the database since they were read, so that the verdict shown as theirs, the queue,
        the progress and the check before a withdrawal are what the database holds: a second
        window saving the same reviewer's verdicts on this sweep left this one showing the old
        verdict as "Your verdict" (and "no verdict of yours to withdraw" on a frame it judged).

        One cheap statement when nothing changed (the store's ``data_version``), so it runs on
        every frame shown. The frame shown stays, and so does whatever the reviewer has chosen or
        typed and not saved (the panel's). While another program holds the database past
        ``wait_ms``, what is shown stays and False is returned (read again at the next call).
        True when the verdicts or notes changed.
        """
        from fetaliqa_core.errors import FetalIQAError

        if self.sweep_id is None:
            return False
        try:
            with self.store.waiting_at_most(wait_ms):
                version = self.store.data_version()
                if version == self._data_version:
                    return False
                mine = self.store.verdicts(self.sweep_id, self.reviewer)
                verdicts = {v.frame: v.label for v in mine}
                notes = {v.frame: v.note for v in mine if v.note}
                if verdicts == self.model.verdicts and notes == self.notes:
                    self._data_version = version
                    return False  # (a resume position moved, or another sweep's verdicts)
                kind = self.model.queue_kind
                frames = self._queue_frames(kind)
                progress = self._queue_progress(kind, frames)
        except FetalIQAError:
            return False  # (busy, or closed: the next save or start says so in its own words)
        self._data_version = version
        self.notes = notes
        self.model.verdicts = verdicts
        at = self.model.queue_frame
        if at in frames:
            self.model.set_review_queue(kind, frames, frames.index(at), progress, follow=False)
        else:  # its frame left the queue (judged in "unreviewed"): ] goes on to the next one after it
            self._stay_near(kind, frames, at, progress)
        return True

    def _stay_near(self, kind: str, frames: list[int], at: int | None, progress: tuple[int, int]) -> None:
        """Load the queue ``frames`` while the viewer stays on ``at``, a frame it no longer holds,
        so that ] goes on to the queue's next frame after it and [ back to the one before it.
        With no queue frame before it, ] goes to the queue's first (the position there, stepped
        from, passed over that one)."""
        before = [k for k, f in enumerate(frames) if at is not None and f < at]
        if before or at is None:
            self.model.set_review_queue(kind, frames, max(before, default=0), progress, follow=False)
        else:
            self.model.set_review_queue(kind, frames, 0, progress, follow=False, ahead_of=at)

    def _progress(self, kind: str) -> tuple[int, int]:
        return self.store.progress(self.sweep_id, self.reviewer, kind)

    best_only = False  # restrict every queue to the best frame of each sweep (and the chosen one)

    def _queue_frames(self, kind: str) -> list[int]:
        frames = self.store.review_queue(self.sweep_id, kind, self.reviewer)
        if self.best_only:
            fl = self.model.flags
            best = {int(b) for b in fl.best if b is not None}
            if fl.chosen is not None and fl.chosen >= 0:
                best.add(int(fl.chosen))
            frames = [f for f in frames if f in best]
        return frames

    def _queue_progress(self, kind: str, frames: list[int]) -> tuple[int, int]:
        if not self.best_only:
            return self._progress(kind)
        reviewed = {v.frame for v in self.store.verdicts(self.sweep_id, self.reviewer)}
        return sum(f in reviewed for f in frames), len(frames)

    def set_queue(self, kind: str, frame: int | None = None) -> None:
        """Load a queue and go to ``frame`` if it is in it, else to its first unreviewed frame."""
        frames = self._queue_frames(kind)
        if frame is not None and frame in frames:
            pos = frames.index(frame)
        else:
            pos = next((k for k, f in enumerate(frames) if f not in self.model.verdicts), 0)
        self.model.set_review_queue(kind, frames, pos, self._queue_progress(kind, frames))

    def resume(self, default_kind: str = "candidates") -> None:
        """Go back to where this reviewer stopped in this sweep (also after a restart)."""
        pos = self.store.last_position(self.sweep_id, self.reviewer)
        # a queue this version does not know (one of a newer version's, a row changed by hand): the
        # default one; it stopped every start of the review with an error
        kind = pos.queue if pos is not None and pos.queue in QUEUE_KINDS else default_kind
        self.set_queue(kind, None if pos is None else pos.frame)
        if pos is not None and self.model.queue_frame != pos.frame and kind != "all":
            # The frame left the queue (e.g. reviewed in "unreviewed"): still show it.
            self.model.set_frame(pos.frame)

    def remember_position(self, frame: int, kind: str | None) -> bool:
        """Store where the reviewer is, if the database lets us within a moment: a resume position
        is not worth a frozen window, nor a verdict reported unsaved after it was saved (another
        program may hold the database's lock for seconds). False when it was not stored."""
        from fetaliqa_core.errors import FetalIQAError

        try:
            self.store.set_position(self.sweep_id, self.reviewer, frame, kind, wait_ms=POSITION_WAIT_MS)
        except FetalIQAError:
            return False
        return True

    def move(self, delta: int) -> int | None:
        frame = self.model.queue_move(delta)
        if frame is not None:
            self.remember_position(frame, self.model.queue_kind)
        return frame

    def record(self, label: str, note: str = "", advance: bool = True, frame: int | None = None,
               wait_ms: int | None = None, view: bool = True) -> object:
        """Commit a verdict on ``frame`` (default: the current frame) and step to the next frame
        of the queue.

        The current frame is the viewer's frame, so a reviewer who scrubbed away from the
        queue judges the frame they are looking at. ``wait_ms``: how long to wait for another
        program's write (``DatabaseBusy`` after it, nothing changed; see ``ReviewStore.record_verdict``).
        ``view`` False: only store it (the viewer shows another sweep since).
        """
        frame = self.model.frame if frame is None else int(frame)
        if view:
            self.reload_if_changed()  # (the next unjudged frame is looked up among what the database holds)
        kind = self.model.queue_kind if view else None
        verdict = self.store.record_verdict(self.sweep_id, frame, self.reviewer, label,
                                            note=note, queue=kind, wait_ms=wait_ms)
        if not view:
            return verdict
        self.model.verdicts[frame] = verdict.label
        if verdict.note:
            self.notes[frame] = verdict.note
        else:
            self.notes.pop(frame, None)
        if advance:
            frames = self._queue_frames(kind)
            if self.best_only:
                later = [f for f in frames if f > frame and f not in self.model.verdicts]
                nxt = later[0] if later else next((f for f in frames if f not in self.model.verdicts), None)
            else:
                nxt = self.store.next_in_queue(self.sweep_id, kind, self.reviewer, frame)
            pos = frames.index(nxt) if nxt is not None and nxt in frames else 0
            self.model.set_review_queue(kind, frames, pos, self._queue_progress(kind, frames))
            if nxt is not None:
                self.remember_position(nxt, kind)  # (the verdict itself is committed by now)
        else:
            self.model.set_verdicts(self.model.verdicts, self._queue_progress(kind, self.model.queue))
        return verdict

    def withdraw(self, frame: int | None = None, wait_ms: int | None = None) -> object:
        """Withdraw this reviewer's verdict on ``frame`` (default: the current frame) and commit
        it (``ReviewStore.withdraw_verdict``: ``DatabaseBusy`` after ``wait_ms``, nothing changed).
        The frame counts as not judged again; the viewer stays on it, and the queue and the
        progress follow (the frame comes back into "unreviewed", and leaves the disagreements it
        was in for the verdict alone)."""
        frame = self.model.frame if frame is None else int(frame)
        kind = self.model.queue_kind
        withdrawal = self.store.withdraw_verdict(self.sweep_id, frame, self.reviewer, queue=kind, wait_ms=wait_ms)
        self.model.verdicts.pop(frame, None)
        self.notes.pop(frame, None)
        frames = self._queue_frames(kind)
        if frame in frames:
            self.model.set_review_queue(kind, frames, frames.index(frame), self._queue_progress(kind, frames),
                                        follow=False)
        else:  # the viewer stays on the frame; ] goes on to the queue's next frame after it
            self._stay_near(kind, frames, frame, self._queue_progress(kind, frames))
        return withdrawal

    def verdict_for(self, frame: int):
        return self.store.verdict_for(self.sweep_id, frame, self.reviewer)
