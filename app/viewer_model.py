"""The viewer's state, without Qt.

Everything the main window shows is derived from one :class:`ViewerModel`: the current frame,
overlay visibility and opacity, the quality threshold, cine playback, the results that have
arrived so far, the flagged frames and the review queue. Widgets observe it through plain
callbacks (:class:`Signal`) and change it only through its methods, so the behaviour behind
every key and click can be tested without a display (the same split as napari's
``ViewerModel`` and its Qt layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from typing import TYPE_CHECKING

from fetaliqa_core.engine import SweepResults

if TYPE_CHECKING:  # the analysis package pulls in OpenCV: imported when first needed
    from fetaliqa_core.analysis.assessment import Assessment, Thresholds

OPACITY_STEP = 0.1  # one press of a / d (ITK-SNAP)
PAGE_STEP = 10  # PageUp / PageDown
DEFAULT_OPACITY = 0.45
DEFAULT_FPS = 15.0
FPS_RANGE = (1.0, 60.0)

QUEUE_KINDS = ("candidates", "disagreements", "unreviewed", "all")
#: Said beside an AC whose outline the field of view cut (:meth:`ViewerModel.ac_caveat`).
EXTRAPOLATED_WORDS = "ellipse extrapolated"


class Signal:
    """A minimal observer list: ``connect(callback)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., None]] = []

    def connect(self, callback: Callable[..., None]) -> None:
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def disconnect(self, callback: Callable[..., None]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args) -> None:
        for cb in list(self._callbacks):
            cb(*args)


@dataclass
class ViewerEvents:
    """What observers can listen to. Arguments are given in brackets."""

    sweep: Signal = field(default_factory=Signal)  # () a new sweep was set
    frame: Signal = field(default_factory=Signal)  # (index)
    overlay: Signal = field(default_factory=Signal)  # () visibility or opacity
    threshold: Signal = field(default_factory=Signal)  # (value)
    playing: Signal = field(default_factory=Signal)  # (bool)
    fps: Signal = field(default_factory=Signal)  # (value)
    results: Signal = field(default_factory=Signal)  # () new per-frame results arrived
    progress: Signal = field(default_factory=Signal)  # () scoring state / counts changed
    review: Signal = field(default_factory=Signal)  # () queue, position or verdicts changed


@dataclass
class FlaggedFrames:
    """Frames worth a look, from the results so far.

    ``best``: per sweep its highest-scored frame (None before any is scored), passing or not
    (``best_passes``): the panel lists a failing one, dimmed; :meth:`chosen_best` is what
    ``fetaliqa score`` calls the sweep's best frame;
    ``candidates``: frames every model calls (``p_cls`` at or above the threshold line and the
    segmenter's own call: ``FrameFlags.candidates``, the frames the answer is chosen from);
    ``disagreements``: scored frames where the classifier and the segmenter disagree about passing.
    """

    best: list[int | None] = field(default_factory=list)
    best_passes: list[bool] = field(default_factory=list)  # per sweep: best frame passes
    best_score: list[float | None] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    disagreements: list[int] = field(default_factory=list)
    chosen: int | None = None  # the case's one frame (challenge convention), None if none passes
    why_none: list[str] = field(default_factory=list)  # per sweep: why no frame is chosen there ("" if one is)

    def chosen_best(self) -> list[int | None]:
        """Per sweep the best frame that passes (summary.json's ``best_frame``), None where none
        does: a sweep whose highest-scored frame fails has no best frame to tag, measure or jump to."""
        return [b if ok else None for b, ok in zip(self.best, self.best_passes)]

    def all_frames(self) -> list[int]:
        """Sorted union of every flagged frame (what n / p step through)."""
        s = set(self.candidates) | set(self.disagreements)
        s |= {b for b, ok in zip(self.best, self.best_passes) if b is not None and ok}
        return sorted(s)

    @classmethod
    def empty(cls, n_sweeps: int) -> "FlaggedFrames":
        return cls(best=[None] * n_sweeps, best_passes=[False] * n_sweeps, best_score=[None] * n_sweeps)

    @classmethod
    def of(cls, a: Assessment) -> "FlaggedFrames":
        """The frames an :class:`~fetaliqa_core.analysis.assessment.Assessment` flags."""
        return cls(
            best=[None if b is None else int(b.frame) for b in a.best],
            best_passes=[bool(b is not None and b.passes) for b in a.best],
            best_score=[None if b is None else float(b.score) for b in a.best],
            candidates=np.flatnonzero(a.flags.candidates).tolist(),
            disagreements=np.flatnonzero(a.flags.disagreements).tolist(),
            chosen=None if a.chosen_frame < 0 else int(a.chosen_frame),
            why_none=[sw.ac_note if sw.best_frame < 0 else "" for sw in a.summary.sweeps],
        )


@dataclass
class ScoringState:
    """What the progress bar shows."""

    running: bool = False
    n_done: int = 0
    n_total: int = 0
    frames_per_second: float = 0.0
    message: str = ""

    @property
    def eta_seconds(self) -> float | None:
        if not self.running or self.frames_per_second <= 0:
            return None
        return (self.n_total - self.n_done) / self.frames_per_second


class ViewerModel:
    """State of one viewer window. Thread-affine: call it from one thread (the UI's)."""

    def __init__(self) -> None:
        self.events = ViewerEvents()
        self.sweep = None
        self.n_frames = 0
        self.sweep_ranges: list[tuple[int, int]] = []
        self.sweep_kinds: list[str] = []
        self._frame = 0
        self._overlay_visible = True
        self._opacity = DEFAULT_OPACITY
        from fetaliqa_core.analysis.assessment import DEFAULT_CLS_THRESHOLD

        self._threshold = DEFAULT_CLS_THRESHOLD
        self._model_thresholds: Thresholds | None = None  # the loaded models' own operating point
        self.models_description = ""
        self._assessment: Assessment | None = None
        self._playing = False
        self._fps = DEFAULT_FPS
        self.results: SweepResults | None = None
        # A cascade's frames re-scored by its teacher (None: no cascade). The answer (flags, best
        # frames, AC) comes from these frames only; the curve shows every frame.
        self.confirmed: np.ndarray | None = None
        # A cascade's teacher pass: the frames handed to it so far, and whether it re-scored them
        # all (a run stopped in that pass has every frame scored by the student, yet its answer
        # comes from part of the candidates only).
        self.teacher_total = 0
        self.teacher_finished = False
        self.scoring = ScoringState()
        self._flags: FlaggedFrames = FlaggedFrames()
        self._ac_cache: dict[int, object] = {}
        self._fov = None  # field of view for AC measurement, per sweep
        self._flags_dirty = False
        self._held_for = None  # while set, the answer keeps its last values (see hold_answer)
        self.results_version = 0  # bumped on every change of the results (cheap change test)
        # Review
        self.queue_kind = "candidates"
        self.queue: list[int] = []
        self.queue_pos = 0
        self._queue_ahead_of: int | None = None  # see set_review_queue's ``ahead_of``
        self.verdicts: dict[int, str] = {}
        self.review_progress: tuple[int, int] = (0, 0)  # "12 / 40 reviewed"

    # -- sweep -----------------------------------------------------------------------------
    def set_sweep(self, sweep) -> None:
        """Show a new sweep (anything with ``n_frames``, ``sweep_ranges``, ``sweep_kinds``)."""
        self.sweep = sweep
        self.n_frames = int(sweep.n_frames)
        self.sweep_ranges = [(int(a), int(b)) for a, b in sweep.sweep_ranges] or [(0, self.n_frames)]
        kinds = list(getattr(sweep, "sweep_kinds", []) or [])
        self.sweep_kinds = kinds + ["unknown"] * (len(self.sweep_ranges) - len(kinds))
        self._frame = 0
        self._playing = False
        self.results = None
        self.confirmed = None
        self.scoring = ScoringState(n_total=self.n_frames)
        self._flags = FlaggedFrames.empty(len(self.sweep_ranges))
        self._flags_dirty = False
        self._held_for = None
        self._assessment = None
        self._ac_cache = {}
        self._fov = None
        self.results_version += 1
        self.queue = []
        self.queue_pos = 0
        self._queue_ahead_of = None
        self.verdicts = {}
        self.review_progress = (0, 0)
        self.events.sweep.emit()
        self.events.frame.emit(self._frame)
        self.events.results.emit()
        self.events.review.emit()

    def sweep_index(self, frame: int | None = None) -> int:
        f = self._frame if frame is None else int(frame)
        for k, (a, b) in enumerate(self.sweep_ranges):
            if a <= f < b:
                return k
        return max(0, len(self.sweep_ranges) - 1)

    # -- frame -----------------------------------------------------------------------------
    @property
    def frame(self) -> int:
        return self._frame

    @frame.setter
    def frame(self, value: int) -> None:
        self.set_frame(value)

    def set_frame(self, value: int) -> None:
        if self.n_frames == 0:
            return
        v = int(min(max(int(value), 0), self.n_frames - 1))
        if v != self._frame:
            self._frame = v
            self.events.frame.emit(v)

    def step(self, delta: int) -> None:
        self.set_frame(self._frame + int(delta))

    def page(self, direction: int) -> None:
        self.step(PAGE_STEP * (1 if direction > 0 else -1))

    def home(self) -> None:
        self.set_frame(0)

    def end(self) -> None:
        self.set_frame(self.n_frames - 1)

    # -- overlay ---------------------------------------------------------------------------
    @property
    def overlay_visible(self) -> bool:
        return self._overlay_visible

    def set_overlay_visible(self, on: bool) -> None:
        if bool(on) != self._overlay_visible:
            self._overlay_visible = bool(on)
            self.events.overlay.emit()

    def toggle_overlay(self) -> None:
        self.set_overlay_visible(not self._overlay_visible)

    @property
    def opacity(self) -> float:
        return self._opacity

    def set_opacity(self, value: float) -> None:
        v = round(min(max(float(value), 0.0), 1.0), 3)
        if v != self._opacity:
            self._opacity = v
            self.events.overlay.emit()

    def change_opacity(self, delta: float) -> None:
        self.set_opacity(self._opacity + delta)

    # -- threshold -------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self._threshold

    def set_models(self, models) -> None:
        """The loaded models (``models.choice.LoadedModels``-like): the threshold goes to the
        classifier bundle's own (the paper's 1 % mask rule with a segmenter alone); the window
        then restores a threshold the user set for these models."""
        from fetaliqa_core.analysis.assessment import Thresholds

        new = Thresholds.of_models(models)
        self._model_thresholds = new
        record = getattr(models, "record", None)  # what files say about the models
        self.models_description = record() if callable(record) else models.describe()
        from fetaliqa_core.models.choice import provenance

        try:
            self.provenance = provenance(models)
        except Exception:  # models that quack without paths (tests): no provenance
            self.provenance = {}
        self._flags_dirty = True
        self._threshold = new.value
        self.events.threshold.emit(self._threshold)

    @property
    def thresholds(self) -> Thresholds:
        """The operating point in use, with the models' own (see ``Thresholds.describe``)."""
        from fetaliqa_core.analysis.assessment import DEFAULT_CLS_THRESHOLD, SEG_THRESHOLD, Thresholds

        base = self._model_thresholds
        if base is None:
            if self.results is not None and not self.results.has_cls:
                base = Thresholds(SEG_THRESHOLD, SEG_THRESHOLD, "p_seg")
            else:
                base = Thresholds(DEFAULT_CLS_THRESHOLD, DEFAULT_CLS_THRESHOLD, "p_cls")
        return base.with_value(self._threshold)

    def set_threshold(self, value: float) -> None:
        v = min(max(float(value), 0.0), 1.0)
        if v != self._threshold:
            self._threshold = v
            self._flags_dirty = True
            self.events.threshold.emit(v)

    # -- cine ------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._playing

    def set_playing(self, on: bool) -> None:
        on = bool(on) and self.n_frames > 1
        if on != self._playing:
            self._playing = on
            self.events.playing.emit(on)

    def toggle_playing(self) -> None:
        self.set_playing(not self._playing)

    @property
    def fps(self) -> float:
        return self._fps

    def set_fps(self, value: float) -> None:
        v = min(max(float(value), FPS_RANGE[0]), FPS_RANGE[1])
        if v != self._fps:
            self._fps = v
            self.events.fps.emit(v)

    def tick(self) -> None:
        """One cine step: next frame, wrapping to the first at the end."""
        if self.n_frames:
            self.set_frame((self._frame + 1) % self.n_frames)

    # -- results ---------------------------------------------------------------------------
    def start_results(self, has_cls: bool, has_seg: bool, cascade: bool = False) -> None:
        """Begin a new set of results (a scoring run with other models clears the old ones).
        ``cascade``: a student's results, whose answer waits for the teacher's frames."""
        self.results = SweepResults(self.n_frames, has_cls=has_cls, has_seg=has_seg)
        self.confirmed = np.zeros(self.n_frames, dtype=bool) if cascade else None
        self.teacher_total = 0
        self.teacher_finished = False
        self._flags = FlaggedFrames.empty(len(self.sweep_ranges))
        self._flags_dirty = True
        self._held_for = None
        self._assessment = None
        self._ac_cache = {}
        self.results_version += 1
        self.events.results.emit()

    def _apply(self, batch) -> None:
        self.results.apply(batch)
        self._flags_dirty = True
        self.results_version += 1

    def apply_batch(self, batch) -> None:
        """Add one ``engine.BatchResult`` (called in the UI thread as batches arrive)."""
        if self.results is None:
            self.start_results(batch.p_cls is not None, batch.p_seg is not None)
        self._apply(batch)
        self._adopt_hints(batch)
        self.scoring.n_done = int(batch.n_done)
        self.scoring.n_total = int(batch.n_total)
        if batch.frames_per_second > 0:
            self.scoring.frames_per_second = float(batch.frames_per_second)
        self.events.results.emit()
        self.events.progress.emit()

    def _adopt_hints(self, batch) -> None:
        hints = getattr(batch, "shape_hints", None)
        if hints:  # the masks were judged in the worker: not again on this thread
            from fetaliqa_core.analysis.assessment import adopt_shape_hints

            adopt_shape_hints(self.results, hints)

    def apply_teacher_batch(self, batch) -> None:
        """A cascade's teacher re-scored these frames: its results replace the student's there,
        and the frames count as confirmed (the only ones the answer is taken from)."""
        if self.results is None:
            return
        if self.confirmed is None:
            self.confirmed = np.zeros(self.n_frames, dtype=bool)
        self._apply(batch)
        self._adopt_hints(batch)
        self.confirmed[batch.indices] = True
        for f in batch.indices.tolist():  # measured on the student's mask, if at all: measure again
            self._ac_cache.pop(f, None)
        self.teacher_total = int(batch.n_total)  # the frames handed to the teacher (it may add some)
        self.scoring.message = f"teacher: {int(self.confirmed.sum())} of {self.teacher_total} candidate frames"
        self.events.results.emit()
        self.events.progress.emit()

    def end_results(self, complete: bool) -> None:
        """The scoring run ended; ``complete``: it scored everything it set out to (a cascade:
        its teacher re-scored every frame handed to it)."""
        if self.confirmed is not None and self.results is not None:
            self.teacher_finished = bool(complete and self.results.complete)

    @property
    def scored_all(self) -> bool:
        """Every frame scored and, for a cascade, every candidate re-scored by the teacher: until
        then the answer is chosen from part of the sweep (so far, and Resume offered)."""
        r = self.results
        return r is not None and r.complete and (self.confirmed is None or self.teacher_finished)

    def partial_count(self) -> tuple[int, int, bool] | None:
        """What the answer rests on while it is partial: (frames done, out of, the teacher's
        candidates rather than the sweep's frames); None once everything is scored. A cascade
        counts its teacher's frames once the student has scored every frame (out of 0 until the
        teacher's first batch says how many it checks)."""
        r = self.results
        if r is None or self.scored_all:
            return None
        if not r.complete:
            return r.n_done, r.n_frames, False
        return int(self.confirmed.sum()), self.teacher_total, True

    def answer_results(self) -> SweepResults | None:
        """The results the answer is taken from: all of them, or a cascade's confirmed frames."""
        if self.results is None or self.confirmed is None:
            return self.results
        return self.results.only(self.confirmed)

    def set_scoring(self, running: bool, message: str = "") -> None:
        self.scoring.running = bool(running)
        self.scoring.message = message
        if running:
            self.scoring.frames_per_second = 0.0
        self.events.progress.emit()

    def frame_values(self, frame: int | None = None) -> dict[str, float | int | None]:
        """p_cls, p_seg, p_opt and mask area of a frame (None where not scored / no model)."""
        f = self._frame if frame is None else int(frame)
        r = self.results
        out: dict[str, float | int | None] = {"p_cls": None, "p_seg": None, "p_opt": None, "area": None}
        if r is None or not (0 <= f < r.n_frames) or not r.done[f]:
            return out
        for name in ("p_cls", "p_seg", "p_opt"):
            v = float(getattr(r, name)[f])
            out[name] = v if math.isfinite(v) else None
        a = int(r.seg_area_px[f])
        out["area"] = a if a >= 0 else None
        return out

    def sweep_fov(self):
        """The sweep's field of view as the answer measures in it (``acouslic.sweep_fov``: ACOUSLIC's
        own mask by name, or the fan found in the frames), found once per sweep."""
        if self._fov is None and self.sweep is not None:
            from fetaliqa_core import acouslic

            self._fov = acouslic.sweep_fov(self.sweep)
        return self._fov

    def _frame_fov(self, frame: int):
        """:meth:`sweep_fov`, or where the sweep's fan changes between frames, ``frame``'s own."""
        fov = self.sweep_fov()
        if fov is None or isinstance(fov, str):
            return fov
        from fetaliqa_core import acouslic

        return fov if acouslic.fan_change(self.sweep) is None else acouslic.frame_fov(self.sweep, frame)

    def field_of_view_pixels(self, frame: int | None = None) -> np.ndarray | None:
        """The field of view ``frame`` (the current one by default) is measured in, as a bool array
        of the frame's shape (None without a sweep): :meth:`sweep_fov`, or where the sweep's fan
        changes between frames, the fan of the frames like it (``acouslic.frame_fov``)."""
        if self.sweep is None:
            return None
        fov = self._frame_fov(self._frame if frame is None else frame)
        if getattr(self, "_fov_pixels_of", None) is not fov:
            from fetaliqa_core.analysis.ac import resolve_fov

            self._fov_pixels = resolve_fov(fov, (self.sweep.height, self.sweep.width))
            self._fov_pixels_of = fov
        return self._fov_pixels

    def mask(self, frame: int | None = None) -> np.ndarray | None:
        """Label mask (224, 224) uint8 of a frame, or None if not scored by a segmenter."""
        if self.results is None:
            return None
        return self.results.mask(self._frame if frame is None else frame)

    # -- flags -----------------------------------------------------------------------------
    @property
    def flags(self) -> FlaggedFrames:
        """Flagged frames, recomputed from the results when they or the threshold changed (not while
        the answer is held: :meth:`hold_answer`)."""
        if self._flags_dirty and self._held_for is None:
            self._flags_dirty = False
            self._assessment = None
            results = self.answer_results()
            if results is not None and results.n_done and self.sweep is not None:
                from fetaliqa_core.analysis.assessment import assess

                self._assessment = assess(self.sweep, results, self.thresholds,
                                          self.models_description, measure=self.measure_ac,
                                          provenance=getattr(self, "provenance", None) or None)
                self._flags = FlaggedFrames.of(self._assessment)
            else:
                self._flags = FlaggedFrames.empty(len(self.sweep_ranges))
        return self._flags

    @property
    def assessment(self) -> Assessment | None:
        """The assessment of the results so far (what ``fetaliqa score`` would write for them),
        or None before the first result."""
        _ = self.flags
        return self._assessment

    @property
    def last_flags(self) -> FlaggedFrames:
        """The flags as last computed, without recomputing (for per-frame display)."""
        return self._flags

    @property
    def flags_dirty(self) -> bool:
        return self._flags_dirty and self._held_for is None

    def hold_answer(self, key) -> None:
        """Keep the flags and the assessment as they are until :meth:`release_answer` with the same
        ``key`` (or a new sweep or scoring run): the masks are being judged again off the window's
        thread (a pixel spacing set: 1-2 s for a full case), and assessing now would judge them here."""
        self._held_for = key

    @property
    def answer_held(self) -> bool:
        return self._held_for is not None

    def release_answer(self, key) -> None:
        """End :meth:`hold_answer` of ``key`` (a later hold, or none, is left as it is)."""
        if self._held_for is key:
            self._held_for = None

    def measure_ac(self, frame: int | None):
        """AC fitted on a frame's mask (``analysis.ACMeasurement``) or None; cached per frame.

        Measured as ``fetaliqa score`` does (``analysis.measure_frame_ac``): the 224x224 model
        mask mapped back onto the frame's pixels, inside the sweep's field of view.
        """
        if frame is None or self.sweep is None or self.results is None:
            return None
        f = int(frame)
        if f in self._ac_cache:
            return self._ac_cache[f]
        if self.results.mask(f) is None:
            return None  # not scored yet: do not cache, it may come
        if self.confirmed is not None and not self.confirmed[f]:
            return None  # a cascade measures only on the frames its teacher re-scored
        from fetaliqa_core import analysis

        ac = analysis.measure_frame_ac(self.sweep, self.results, f, self._frame_fov(f))
        self._ac_cache[f] = ac
        return ac

    @property
    def demo_notice(self) -> str:
        """The demonstration (or test) model's notice when the loaded models include one, else empty."""
        return str(getattr(self, "provenance", {}).get("notice", "") or "")

    @property
    def notice_words(self) -> str:
        """The notice in a few words for the image and the status bar: 'demo model, not for clinical
        use', or 'test model, ...' for models on a randomly initialised base; empty for the user's own."""
        if not self.demo_notice:
            return ""
        return "demo model" if getattr(self, "provenance", {}).get("demo") else "test model"

    @property
    def spacing_problem(self) -> str | None:
        """Why lengths cannot be shown for this sweep (unknown / implausible pixel spacing)."""
        return None if self.sweep is None else getattr(self.sweep, "spacing_problem", None)

    def reading(self, ac, frame: int | None = None):
        """What may be shown of an AC measurement (``analysis.ACReading``) made on ``frame``: mm
        and GA only with a known, plausible pixel spacing; doubtful outside the plausible range or
        where the frame's mask does not outline an abdomen or the classifier does not call the frame,
        and always with a demonstration model (as ``fetaliqa score`` reads it)."""
        from fetaliqa_core import analysis

        a = self.assessment if frame is not None else None
        problem = None if a is None else a.mask_problem(int(frame))
        disagreement = None if a is None else a.disagreement(int(frame))
        prov = getattr(self, "provenance", {}) or {}
        doubt = analysis.units.model_doubt(bool(prov.get("demo")),
                                           None if self.sweep is None or self.spacing_problem
                                           else self.sweep.spacing_mm, bool(prov.get("student_alone")))
        reading = analysis.read_ac(None if ac is None else ac.ac_mm,
                                   self.spacing_problem or getattr(ac, "spacing_problem", None), problem,
                                   disagreement, doubt)
        # measured at the size of the image region holding the outline (a picture-in-picture's), and
        # an outline the fan's edge cut, its ellipse extrapolated past it (`fetaliqa ac` said so, the
        # window showed the number plain): said
        from fetaliqa_core.analysis.assessment import with_ac_notes

        return with_ac_notes(reading, ac, self.extrapolated_note(ac, frame))

    def extrapolated_note(self, ac, frame: int | None = None) -> str:
        """Why part of an AC's ellipse was not seen: its outline cut by the field of view the frame is
        measured in (``analysis.extrapolated_note``, `fetaliqa ac`'s words); empty for a whole outline."""
        if ac is None or not getattr(ac, "truncated", False):
            return ""
        from fetaliqa_core import analysis

        fov = self._frame_fov(self._frame if frame is None else int(frame)) if self.sweep is not None else None
        return analysis.extrapolated_note(ac, fov)

    def ac_caveat(self, ac) -> str:
        """The few words said beside an AC's number wherever it is shown (the label on the image, the
        status bar; the whole reason is in their tooltips): "ellipse extrapolated" for an outline the
        field of view cut; empty when there is nothing to add to the reading's own words."""
        return EXTRAPOLATED_WORDS if getattr(ac, "truncated", False) else ""

    def set_spacing(self, mm: float | tuple[float, float]) -> None:
        """Use a pixel spacing the user gives (mm per pixel: one value for square pixels, or
        ``(row_mm, col_mm)``) for this sweep's lengths; raises FetalIQAError when implausible, or
        when one value is given for pixels that are not square. Measurements are redone with it."""
        if self.sweep is None:
            return
        self.sweep = self.sweep.with_spacing(mm, "set here")
        self._ac_cache.clear()
        self._flags_dirty = True
        self.events.threshold.emit(self._threshold)

    @staticmethod
    def gestational_age(ac) -> object | None:
        """Hadlock GA (``analysis.GestationalAge``) from an AC measurement, or None."""
        if ac is None:
            return None
        from fetaliqa_core import analysis

        return analysis.hadlock_ga(ac.ac_mm)

    def next_flagged(self, direction: int = 1) -> int | None:
        """Move to the next (direction > 0) or previous flagged frame; returns it or None."""
        frames = self.flags.all_frames()
        if not frames:
            return None
        arr = np.asarray(frames)
        if direction > 0:
            later = arr[arr > self._frame]
            target = int(later[0]) if len(later) else None
        else:
            earlier = arr[arr < self._frame]
            target = int(earlier[-1]) if len(earlier) else None
        if target is not None:
            self.set_frame(target)
        return target

    def best_frame(self, sweep: int | None = None) -> int | None:
        k = self.sweep_index() if sweep is None else int(sweep)
        best = self.flags.chosen_best()
        return best[k] if 0 <= k < len(best) else None

    def go_to_best(self) -> int | None:
        """Jump to the best frame of the current sweep (``b``)."""
        b = self.best_frame()
        if b is not None:
            self.set_frame(b)
        return b

    # -- review queue (filled by app.review_session.ReviewSession) -------------------------
    def set_review_queue(self, kind: str, frames: list[int], position: int = 0,
                         progress: tuple[int, int] | None = None, follow: bool = True,
                         ahead_of: int | None = None) -> None:
        """Show a review queue; the viewer follows its current frame (``follow`` False: the
        frame shown stays, as after a verdict withdrawn on a frame the queue no longer holds).

        ``ahead_of``: the frame shown, which is not in the queue and comes before every frame
        of it; ``position`` is then the first queue frame after it, and while that frame is
        shown ] goes to that one (a step from it went one further, and the next unreviewed
        frame was passed over without a word)."""
        if kind not in QUEUE_KINDS:
            raise ValueError(f"unknown queue {kind!r}")
        self.queue_kind = kind
        self.queue = [int(f) for f in frames]
        self.queue_pos = int(min(max(position, 0), max(len(self.queue) - 1, 0)))
        self._queue_ahead_of = None if ahead_of is None or not self.queue else int(ahead_of)
        if progress is not None:
            self.review_progress = (int(progress[0]), int(progress[1]))
        if self.queue and follow:
            self.set_frame(self.queue[self.queue_pos])
        self.events.review.emit()

    @property
    def queue_frame(self) -> int | None:
        if not self.queue or not (0 <= self.queue_pos < len(self.queue)):
            return None
        return self.queue[self.queue_pos]

    def queue_move(self, delta: int) -> int | None:
        """Step through the queue; the viewer follows. Returns the new queue frame (None, and
        nothing moves, when the queue is empty or the frame shown comes before all of it and the
        step is back)."""
        if not self.queue:
            return None
        ahead = self._queue_ahead_of is not None and self._queue_ahead_of == self._frame
        if ahead and delta < 0 and self.queue_pos + delta < 0:
            return None  # no queue frame before the frame shown: it stays
        if ahead and delta > 0:  # the position is already past the frame shown
            delta -= 1
        self._queue_ahead_of = None
        self.queue_pos = int(min(max(self.queue_pos + delta, 0), len(self.queue) - 1))
        self.set_frame(self.queue[self.queue_pos])
        self.events.review.emit()
        return self.queue_frame

    def queue_goto_frame(self, frame: int) -> None:
        """Follow a frame chosen elsewhere (if it is in the queue, it becomes the position)."""
        if frame in self.queue and self.queue_frame != frame:
            self.queue_pos = self.queue.index(frame)
            self._queue_ahead_of = None
            self.events.review.emit()

    def set_verdicts(self, verdicts: dict[int, str], progress: tuple[int, int] | None = None) -> None:
        self.verdicts = {int(k): v for k, v in verdicts.items()}
        if progress is not None:
            self.review_progress = (int(progress[0]), int(progress[1]))
        self.events.review.emit()
