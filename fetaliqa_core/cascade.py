"""Student first, teacher where it matters: a two-stage scoring of one sweep.

1. A distilled student (``kind: "student"`` bundle, classifier and segmenter in one small network)
   scores every frame, progressively, as :class:`~fetaliqa_core.engine.ScoringEngine` does.
2. In each sweep, the student's candidate frames (its combined score at or above the threshold:
   ``FrameFlags.near_candidates``, a wider net than the frames the window flags) form runs of
   consecutive frames; the best runs of each sweep, widened by a margin, are re-scored by the teacher
   (the FetalCLIP classifier and segmenter the student learnt from).

3. Where a run of frames the teacher calls reaches the edge of what it was handed, the teacher
   follows it (:func:`follow_runs`, a few frames at a time) until the run ends, so the runs the
   answer is chosen from are whole, as in the teacher's own full scoring. "Calls" are the frames
   every teacher model calls (:func:`teacher_calls`) and the frames the teacher's frame choice
   builds its runs from (:func:`teacher_positive`: where its models never agree, the frames its
   choice falls back to).

The assessment (chosen frame, best frame per sweep, AC) is made on the teacher's results only,
so every number shown comes from the teacher; frames the teacher did not see are never chosen.
The curve shows the merged results (the teacher's where it scored) and marks the frames the
teacher confirmed. The teacher sees a bounded share of the frames (:data:`MAX_TEACHER_FRACTION`,
beyond the best run of each sweep).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fetaliqa_core.analysis.frame_choice import close_gaps
from fetaliqa_core.engine import BatchResult, ScoringEngine, SweepResults
from fetaliqa_core.export import CASCADE_JSON

# Chosen on 12 held-out synthetic full cases (the demo teacher and its student, by replaying the
# choice on both models' complete results). Without following runs: margin 2 / runs of 12 gave the
# teacher's own frame in 7 of 12 cases with 9.7 % of the frames re-scored, margin 4 / runs of 16 in
# 11 of 12 with 13.5 %. With the teacher following its runs (:func:`follow_runs`), margin 2 / runs
# of 16 gave 12 of 12 with 13.4 % (the shipped student) and 13.5 % (the student re-distilled on
# the teacher's flagged frames); margin 4 / runs of 16 also 12 of 12, with 14.4 %. Candidates up to
# 4 frames apart taken as one run: 12 of 12 with 13.9 %, and on a later case the teacher's frame
# lay in a piece of the student's run that a gap of 3 frames had split off and the budget left out.
RUNS_PER_SWEEP = 2  # candidate runs of the student re-scored per sweep
RUN_MARGIN = 2  # frames added on each side of a run (a run's edges are where the student is least sure)
MAX_TEACHER_FRACTION = 0.10  # share of the case's frames the teacher may see beyond each sweep's best run
MAX_RUN_FRAMES = 16  # a longer run is cut to this many frames around the student's best frame in it
RUN_GAP = 4  # candidate frames this few frames apart are one run (a student's run breaks where it is unsure)
FOLLOW_STEP = 4  # frames the teacher adds at a time beyond the edge of a run it is following
MAX_FOLLOW_FRACTION = 0.10  # share of the case's frames the teacher may add by following runs


def candidate_runs(combined: np.ndarray, candidates: np.ndarray, sweep_ranges, runs_per_sweep: int = RUNS_PER_SWEEP,
                   margin: int = RUN_MARGIN, max_fraction: float = MAX_TEACHER_FRACTION,
                   max_run: int = MAX_RUN_FRAMES, fallback: bool = True, gap: int = RUN_GAP) -> np.ndarray:
    """Frames the teacher re-scores, sorted.

    Per sweep, runs of consecutive candidate frames ranked by their best combined score; the best
    run of each sweep always, then further runs (up to ``runs_per_sweep`` per sweep) in order of
    score across the case while the total stays within ``max_fraction`` of the frames. Each run
    is widened by ``margin`` frames inside its sweep; a run longer than ``max_run`` frames is first
    cut to that many around its best frame. Candidates at most ``gap`` frames apart are one run.
    The budget is never below two full runs' worth of frames: in a file of one or two sweeps a
    tenth of the frames is less than the best run alone, and a second run the student flags there
    would never reach the teacher (one such case chose frame 36 where the teacher alone chose 58).
    ``fallback``: a sweep where the student flags nothing
    still sends its ``max_run`` best-scored frames (around its highest combined score), so a
    student that misses a sweep's good frames does not decide alone that there are none.
    """
    combined = np.asarray(combined, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=bool)
    n = len(candidates)
    firsts: list[np.ndarray] = []
    others: list[tuple[float, np.ndarray]] = []
    for start, stop in sweep_ranges:
        flags = close_gaps(candidates[start:stop], gap)
        if not flags.any():
            values = combined[start:stop]
            if fallback and np.isfinite(values).any():
                peak = start + int(np.nanargmax(values))
                lo = min(max(start, peak - max_run // 2), max(start, stop - max_run))
                firsts.append(np.arange(lo, min(stop, lo + max_run)))
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
        runs = []
        for a, b in zip(edges[::2], edges[1::2]):
            values = combined[start + a:start + b]
            score = float(np.nanmax(values))
            if b - a > max_run:
                peak = a + int(np.nanargmax(values))
                a = min(max(a, peak - max_run // 2), b - max_run)
                b = a + max_run
            lo, hi = max(start, start + a - margin), min(stop, start + b + margin)
            runs.append((score, np.arange(lo, hi)))
        runs.sort(key=lambda r: -r[0])
        firsts.append(runs[0][1])
        others.extend(runs[1:runs_per_sweep])
    chosen = np.zeros(n, dtype=bool)
    for frames in firsts:
        chosen[frames] = True
    budget = max(int(max_fraction * n), 2 * (max_run + 2 * margin))
    for _, frames in sorted(others, key=lambda r: -r[0]):
        if chosen.sum() + (~chosen[frames]).sum() > max(budget, int(chosen.sum())):
            continue
        chosen[frames] = True
    return np.flatnonzero(chosen)


def follow_runs(scored: np.ndarray, calls: np.ndarray, sweep_ranges, step: int = FOLLOW_STEP) -> np.ndarray:
    """Frames to score next so that no run of called frames is cut by the edge of what was scored.

    ``scored``: frames the teacher has scored; ``calls``: its positive calls (False where it did
    not score). Wherever a called frame lies at, or one frame inside, the edge of a scored stretch
    (a gap of one frame still joins a run) and the sweep goes on past that edge, the next ``step``
    frames beyond it. Sorted indices; empty when every run is seen whole.
    """
    scored = np.asarray(scored, dtype=bool)
    calls = np.asarray(calls, dtype=bool) & scored
    out: list[np.ndarray] = []
    for start, stop in sweep_ranges:
        s = scored[start:stop]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], s.astype(np.int8), [0]])))
        for a, b in zip(edges[::2] + start, edges[1::2] + start):
            if a > start and calls[a:min(a + 2, b)].any():
                out.append(np.arange(max(start, a - step), a))
            if b < stop and calls[max(a, b - 2):b].any():
                out.append(np.arange(b, min(stop, b + step)))
    return np.unique(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def teacher_calls(results: SweepResults, thresholds) -> np.ndarray:
    """Frames the teacher calls positive: every model it has calls the frame (the frames the
    answer's runs are made of), False where it did not score."""
    from fetaliqa_core.analysis.assessment import flag_frames

    f = flag_frames(results.p_cls, results.p_seg, thresholds.cls, thresholds.seg)
    calls = np.ones(results.n_frames, dtype=bool)
    if results.has_cls:
        calls &= f.cls_call
    if results.has_seg:
        calls &= f.seg_call
    return calls & results.done


def teacher_positive(sweep, results: SweepResults, thresholds) -> np.ndarray:
    """The frames the teacher's own frame choice builds its runs from, on what it has scored:
    the classifier's calls on a plausible mask, or, where there is none, the frames its choice
    falls back to (plausible masks, else the classifier's calls), as
    :func:`~fetaliqa_core.analysis.frame_choice.choose` does. Not a superset of
    :func:`teacher_calls` (a call on an implausible mask is not among them). False where it did
    not score."""
    from fetaliqa_core.analysis.assessment import assess

    return assess(sweep, results, thresholds).choice.positive & results.done


@dataclass
class CascadeBatch:
    """One finished batch of either stage."""

    stage: str  # "student" | "teacher"
    batch: BatchResult


class CascadeEngine:
    """Scores one sweep with a student, then its candidate runs with the teacher.

    ``student``: a loaded joint bundle (a distilled student); ``cls``/``seg``: the teacher's
    loaded bundles (one may be None). Results: :attr:`merged` (curve), :attr:`confirmed` (frames
    the teacher scored), :attr:`teacher_results` (what the assessment uses); :attr:`results` and
    :attr:`complete` read like a ``ScoringEngine``'s.
    """

    def __init__(self, sweep, student, cls=None, seg=None, *, cache=True, thresholds=None,
                 runs_per_sweep: int = RUNS_PER_SWEEP, margin: int = RUN_MARGIN,
                 max_fraction: float = MAX_TEACHER_FRACTION, follow_fraction: float = MAX_FOLLOW_FRACTION) -> None:
        from fetaliqa_core.analysis.assessment import Thresholds

        self.sweep = sweep
        self.student = ScoringEngine(sweep, cls=student, seg=student, cache=cache)
        self.teacher_models = (cls, seg)
        self.thresholds = thresholds or Thresholds.of_models(_Pair(cls, seg))
        self.params = dict(runs_per_sweep=runs_per_sweep, margin=margin, max_fraction=max_fraction)
        self.follow_fraction = follow_fraction
        self.teacher: ScoringEngine | None = None
        self.merged: SweepResults | None = None
        self.confirmed = np.zeros(sweep.n_frames, dtype=bool)
        self.teacher_plan: np.ndarray | None = None  # the frames handed to the teacher, once it starts
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        self.student.cancel()
        if self.teacher is not None:
            self.teacher.cancel()

    def focus(self, frame: int | None) -> None:
        self.student.focus(frame)

    @property
    def teacher_results(self) -> SweepResults | None:
        return None if self.teacher is None else self.teacher.results

    @property
    def results(self) -> SweepResults:
        """Every frame: the student's, with the teacher's where it re-scored (once it started)."""
        return self.merged if self.merged is not None else self.student.results

    @property
    def complete(self) -> bool:
        """The student scored every frame and the teacher every frame handed to it."""
        return bool(self.student.results.complete and self.teacher_plan is not None
                    and self.confirmed[self.teacher_plan].all())

    def teacher_frames(self) -> np.ndarray:
        """The frames the teacher re-scores, from the student's complete results."""
        from fetaliqa_core.analysis.assessment import flag_frames

        r = self.student.results
        flags = flag_frames(r.p_cls, r.p_seg, self.thresholds.cls, self.thresholds.seg)
        # the wider net (the combined score at the threshold): a frame the student's classifier
        # nearly calls and its segmenter calls strongly still reaches the teacher, who decides
        return candidate_runs(flags.combined, flags.near_candidates, self.sweep.sweep_ranges, **self.params)

    def iter_batches(self) -> Iterator[CascadeBatch]:
        for batch in self.student.iter_batches():
            yield CascadeBatch("student", batch)
        self.merged = copy.deepcopy(self.student.results)
        if self._cancelled or not self.student.results.complete:
            return
        cls, seg = self.teacher_models
        self.teacher_plan = self.teacher_frames()
        self.teacher = ScoringEngine(self.sweep, cls=cls, seg=seg, cache=False, frames=self.teacher_plan)
        budget = len(self.teacher_plan) + int(self.follow_fraction * self.sweep.n_frames)
        while True:
            for batch in self.teacher.iter_batches():
                self._merge(batch)
                # counted out of the frames handed to the teacher, not the sweep's
                batch.n_total = len(self.teacher_plan)
                yield CascadeBatch("teacher", batch)
            if self._cancelled or not self.confirmed[self.teacher_plan].all():
                return
            calls = teacher_calls(self.teacher.results, self.thresholds)
            calls |= teacher_positive(self.sweep, self.teacher.results, self.thresholds)
            more = follow_runs(self.confirmed, calls, self.sweep.sweep_ranges)
            more = more[:max(0, budget - len(self.teacher_plan))]
            if not len(more):
                return
            self.teacher_plan = np.union1d(self.teacher_plan, more)
            self.teacher.score_also(more)

    def _merge(self, batch: BatchResult) -> None:
        """The teacher's results replace the student's for these frames."""
        self.merged.apply(batch)
        self.confirmed[batch.indices] = True

    def run(self, on_batch: Callable[[CascadeBatch], None] | None = None) -> "CascadeEngine":
        for b in self.iter_batches():
            if on_batch is not None:
                on_batch(b)
        return self


def write_cascade_scores(out, sweep, merged, confirmed: np.ndarray, assessment, student_path,
                         challenge: bool = False, extra=None, complete: bool | None = None,
                         teacher_planned: int | None = None, layout: bool = True) -> list:
    """Write a cascade's scores as ``fetaliqa score --cascade`` and the app both do: ``frames.csv``
    from the merged results (the student's, the teacher's where it re-scored, as its last column
    ``scored_by`` says), the summary from
    ``assessment`` (made on the teacher's frames only) and ``cascade.json`` listing those frames.
    ``extra(folder)`` may add files, and ``layout`` lays the challenge's files out, as in
    :func:`fetaliqa_core.export.write_scores`.
    ``complete``: the teacher re-scored every frame handed to it (:attr:`CascadeEngine.complete`;
    None: the merged results' own). A run stopped in the teacher's pass has every frame scored by
    the student, yet its answer comes from part of the candidates: not complete, and the files say
    of how many (``teacher_planned``: the frames handed to the teacher), in ``choice_note`` and
    ``cascade.json`` as the window says it (they said only ``complete: false`` beside 840 of 840
    frames scored)."""
    import copy
    import dataclasses
    import json
    from pathlib import Path

    from fetaliqa_core import export

    confirmed = np.asarray(confirmed, dtype=bool)
    # every frame was scored (by the student); the numbers shown come from the teacher's frames
    assessment.summary.frames_scored = merged.n_done
    assessment.summary.complete = bool(merged.complete if complete is None else complete and merged.complete)
    record = {"student": str(student_path), "teacher_frames": np.flatnonzero(confirmed).tolist(),
              "teacher_frame_count": int(confirmed.sum()), "n_frames": int(sweep.n_frames),
              "note": "chosen frame, best frames and AC come from the teacher's results on these frames"}
    stopped = stopped_note(merged, confirmed, teacher_planned) if not assessment.summary.complete else ""
    if stopped:
        if teacher_planned:
            record["teacher_frames_planned"] = int(teacher_planned)
        # written, not kept: the window's own answer says it in its own words
        summary = assessment.summary
        assessment = copy.copy(assessment)
        assessment.summary = dataclasses.replace(
            summary, choice_note="; ".join(t for t in (summary.choice_note, stopped) if t))

    def hook(folder: Path) -> None:
        (Path(folder) / CASCADE_JSON).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if extra is not None:
            extra(folder)

    return export.write_scores(out, sweep, merged, assessment, challenge=challenge, extra=hook, teacher=confirmed,
                               layout=layout)


def stopped_note(merged, confirmed: np.ndarray, teacher_planned: int | None) -> str:
    """What a cascade stopped before its end rests on, for the files: the candidate frames the
    teacher re-scored out of those handed to it, or the student's frames scored when the teacher
    never started; "" when nothing says which."""
    done = int(np.asarray(confirmed, dtype=bool).sum())
    if merged is not None and not merged.complete:
        return (f"the run was stopped while the student scored ({merged.n_done} of {merged.n_frames} frames): "
                f"the teacher re-scored {'none of them' if not done else f'{done} frames'}; score the sweep "
                "again for an answer")
    if teacher_planned:
        return (f"the run was stopped: chosen among the {done} of {int(teacher_planned)} candidate frames the "
                "teacher had re-scored; the others may hold a better one (score the sweep again)")
    return ""


@dataclass
class _Pair:
    cls: object
    seg: object
