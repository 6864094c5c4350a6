"""From a sweep's per-frame results to what the sonographer acts on: the one assessment.

:func:`assess` turns a sweep's per-frame results (``engine.SweepResults``) and the operating
point (:class:`Thresholds`: the classifier bundle's own threshold, or the one the user set; the
segmenter's call is the paper's rule, mask >= 1 % of the 224 x 224 input) into an
:class:`Assessment`: per-frame calls and flags, the best frame of each sweep, the one frame of
the case, and the abdominal circumference (AC) and gestational age (GA) measured on them.
``fetaliqa score``, ``fetaliqa eval``, the viewer, the headless demo and the review store all
call it, so they flag the same frames.

Below it, the pieces work on plain arrays: frame arrays are ``(N,)`` with one entry per frame of
the case, NaN where a model did not score the frame.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from fetaliqa_core.analysis import frame_choice
from fetaliqa_core.analysis.ac import ACMeasurement, extrapolated_note, hadlock_ga, measure_frame_ac
from fetaliqa_core.analysis.units import model_doubt, models_disagree, read_ac

#: Threshold on the segmenter's score ``p_seg = f / (f + 0.01)`` (``f``: share of the 224 x 224
#: input covered by the mask): 0.5 exactly where the mask covers 1 %, the paper's rule.
SEG_THRESHOLD = 0.5
#: Threshold on ``p_cls`` when the classifier does not carry its own.
DEFAULT_CLS_THRESHOLD = 0.5


def _frame_array(x: np.ndarray | None, n: int, name: str) -> np.ndarray:
    if x is None:
        return np.full(n, np.nan, dtype=np.float64)
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    return arr


def _n_frames(*arrays: np.ndarray | None) -> int:
    for a in arrays:
        if a is not None:
            return int(np.asarray(a).reshape(-1).shape[0])
    raise ValueError("at least one of p_cls / p_seg must be given")


def combined_score(p_cls: np.ndarray | None, p_seg: np.ndarray | None) -> np.ndarray:
    """Per-frame quality ``(N,)``: mean of ``p_cls`` and ``p_seg`` where both are scored, the
    one that is scored otherwise, NaN where neither (NaN marks "not scored / no model")."""
    n = _n_frames(p_cls, p_seg)
    stack = np.stack([_frame_array(p_cls, n, "p_cls"), _frame_array(p_seg, n, "p_seg")])
    count = np.isfinite(stack).sum(axis=0)
    total = np.where(np.isfinite(stack), stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def smooth_curve(
    values: np.ndarray, sweep_ranges: Sequence[tuple[int, int]] | None = None, window: int = 5
) -> np.ndarray:
    """NaN-aware centred moving average ``(N,) -> (N,)`` that never mixes two sweeps.

    Unscored frames (NaN) are ignored in the average; a frame with no scored neighbour in its
    window stays NaN. ``window`` is odd (even values are rounded up).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = v.shape[0]
    half = max(int(window), 1) // 2
    ranges = list(sweep_ranges) if sweep_ranges is not None else [(0, n)]
    out = np.full(n, np.nan)
    for start, stop in ranges:
        seg = v[start:stop]
        ok = np.isfinite(seg)
        csum = np.concatenate([[0.0], np.cumsum(np.where(ok, seg, 0.0))])
        ccnt = np.concatenate([[0], np.cumsum(ok)])
        idx = np.arange(seg.shape[0])
        lo = np.clip(idx - half, 0, seg.shape[0])
        hi = np.clip(idx + half + 1, 0, seg.shape[0])
        cnt = ccnt[hi] - ccnt[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = np.where(cnt > 0, (csum[hi] - csum[lo]) / np.maximum(cnt, 1), np.nan)
    return out


@dataclass(frozen=True)
class FrameFlags:
    """Per-frame calls, all ``(N,)``. A model's call is False where it did not score the frame.

    ``combined``: :func:`combined_score`. ``candidates`` (the flagged frames): every model that
    scored the frame calls it (``p_cls`` at or above the classifier's threshold, the line the
    window's curve lets the user drag, and the segmenter's own call), as the answer's frames are
    called (:func:`~fetaliqa_core.analysis.frame_choice.choose`). ``disagreements``: both models
    scored the frame and their calls differ. ``near_candidates``: the combined score reaches the
    threshold of the models that scored the frame (their mean when both), a wider net in which one
    model's strong call carries the other's near miss: a cascade's student sends these frames to
    its teacher (:func:`~fetaliqa_core.cascade.candidate_runs`); nothing shown calls them flagged.
    (Flagged frames were once these: with the line dragged to 0.99 a frame of ``p_cls`` 0.64 and
    ``p_seg`` 0.90 stayed a candidate while the answer said no frame reached the threshold.)
    """

    scored_cls: np.ndarray
    scored_seg: np.ndarray
    cls_call: np.ndarray
    seg_call: np.ndarray
    combined: np.ndarray
    candidates: np.ndarray
    disagreements: np.ndarray
    near_candidates: np.ndarray


def flag_frames(
    p_cls: np.ndarray | None,
    p_seg: np.ndarray | None,
    threshold_cls: float = 0.5,
    threshold_seg: float = 0.5,
    seg_call: np.ndarray | None = None,
) -> FrameFlags:
    """Candidate good frames (flagged: every model that scored the frame calls it) and
    classifier/segmenter disagreements (see :class:`FrameFlags`).

    p_cls, p_seg: ``(N,)`` scores in [0, 1], NaN where not scored (or None: no such model).
    seg_call: optional ``(N,)`` bool segmenter call (e.g. the 1 % area rule) used instead of
    ``p_seg >= threshold_seg``; it only counts where ``p_seg`` is scored.
    """
    n = _n_frames(p_cls, p_seg)
    pc = _frame_array(p_cls, n, "p_cls")
    ps = _frame_array(p_seg, n, "p_seg")
    scored_cls = np.isfinite(pc)
    scored_seg = np.isfinite(ps)
    cls_call = scored_cls & (np.where(scored_cls, pc, -np.inf) >= threshold_cls)
    if seg_call is None:
        s_call = scored_seg & (np.where(scored_seg, ps, -np.inf) >= threshold_seg)
    else:
        sc = np.asarray(seg_call, dtype=bool).reshape(-1)
        if sc.shape[0] != n:
            raise ValueError(f"seg_call has {sc.shape[0]} entries, expected {n}")
        s_call = scored_seg & sc
    combined = combined_score(pc, ps)
    thr_sum = np.where(scored_cls, threshold_cls, 0.0) + np.where(scored_seg, threshold_seg, 0.0)
    thr_cnt = scored_cls.astype(int) + scored_seg.astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        thr = np.where(thr_cnt > 0, thr_sum / np.maximum(thr_cnt, 1), np.inf)
    near = np.isfinite(combined) & (np.where(np.isfinite(combined), combined, -np.inf) >= thr)
    # flagged: no model that scored the frame says no (a model that did not score it has no say)
    candidates = (scored_cls | scored_seg) & (cls_call | ~scored_cls) & (s_call | ~scored_seg)
    disagreements = scored_cls & scored_seg & (cls_call != s_call)
    return FrameFlags(scored_cls, scored_seg, cls_call, s_call, combined, candidates, disagreements, near)


@dataclass(frozen=True)
class BestFrame:
    """The best frame of one sweep. ``passes``: it is a candidate (above threshold);
    ``optimal``: the 3-class segmenter calls its plane optimal (None when unknown)."""

    sweep: int
    frame: int
    score: float
    passes: bool
    optimal: bool | None
    area_px: int


def _ranking(
    seg_area_px: np.ndarray | None, p_opt: np.ndarray | None, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask area (0 where unknown) and the optimal call / its availability per frame."""
    area = np.zeros(n) if seg_area_px is None else _frame_array(seg_area_px, n, "seg_area_px")
    area = np.where(np.isfinite(area) & (area > 0), area, 0.0)
    po = _frame_array(p_opt, n, "p_opt")
    known = np.isfinite(po)
    optimal = known & (np.where(known, po, 0.0) >= 0.5)
    return area, optimal, known


def _pick(
    idx: np.ndarray, flags: FrameFlags, area: np.ndarray, optimal: np.ndarray
) -> int | None:
    """Index (into the case) of the best of the frames ``idx``: passing first, then frames
    called optimal (among passing ones), then highest combined score, larger mask, earlier."""
    comb = flags.combined[idx]
    ok = np.isfinite(comb)
    if not ok.any():
        return None
    idx = idx[ok]
    comb = comb[ok]
    passes = flags.candidates[idx]
    opt = optimal[idx] & passes
    # np.lexsort sorts by the last key first; ascending, so negate what should be largest.
    order = np.lexsort((idx, -area[idx], -comb, ~opt, ~passes))
    return int(idx[order[0]])


def best_frames(
    p_cls: np.ndarray | None,
    p_seg: np.ndarray | None,
    seg_area_px: np.ndarray | None,
    sweep_ranges: Sequence[tuple[int, int]],
    p_opt: np.ndarray | None = None,
    threshold_cls: float = 0.5,
    threshold_seg: float = 0.5,
) -> list[BestFrame | None]:
    """Best frame of each sweep (None for a sweep with no scored frame).

    Ranking among the sweep's scored frames: candidates (above threshold) first; among those,
    frames the 3-class segmenter calls optimal (``p_opt >= 0.5``, ``p_opt`` = share of the mask
    labelled optimal, NaN where unknown) before suboptimal ones; then the highest
    :func:`combined_score`; ties by the larger ``seg_area_px``, then the earlier frame.
    """
    n = _n_frames(p_cls, p_seg)
    flags = flag_frames(p_cls, p_seg, threshold_cls, threshold_seg)
    area, optimal, known = _ranking(seg_area_px, p_opt, n)
    out: list[BestFrame | None] = []
    for s, (start, stop) in enumerate(sweep_ranges):
        f = _pick(np.arange(start, stop), flags, area, optimal)
        if f is None:
            out.append(None)
            continue
        out.append(
            BestFrame(
                sweep=s,
                frame=f,
                score=float(flags.combined[f]),
                passes=bool(flags.candidates[f]),
                optimal=bool(optimal[f]) if known[f] else None,
                area_px=int(area[f]),
            )
        )
    return out


def choose_case_frame(
    p_cls: np.ndarray | None,
    p_seg: np.ndarray | None,
    seg_area_px: np.ndarray | None = None,
    p_opt: np.ndarray | None = None,
    threshold_cls: float = 0.5,
    threshold_seg: float = 0.5,
) -> int:
    """The one frame per case the challenge asks for, or -1 when no frame passes.

    Only candidates (see :class:`FrameFlags`) are eligible; among them the ranking of
    :func:`best_frames` applies across all sweeps (optimal-called first when ``p_opt`` is given,
    then combined score, then mask area, then the earlier frame).
    """
    n = _n_frames(p_cls, p_seg)
    flags = flag_frames(p_cls, p_seg, threshold_cls, threshold_seg)
    if not flags.candidates.any():
        return -1
    area, optimal, _ = _ranking(seg_area_px, p_opt, n)
    f = _pick(np.flatnonzero(flags.candidates), flags, area, optimal)
    return -1 if f is None else f



# --------------------------------------------------------------------------------------------
# The assessment of one sweep
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The operating point: one threshold, on ``p_cls`` when there is a classifier, else on
    ``p_seg`` (where :data:`SEG_THRESHOLD` is the paper's 1 % rule).

    ``value`` is the one in use, ``model`` the models' own (the classifier bundle's threshold,
    chosen on validation data when it was trained). With a classifier the segmenter's call stays
    the paper's rule.
    """

    value: float
    model: float
    score: str = "p_cls"  # "p_cls" | "p_seg": the score ``value`` applies to

    @classmethod
    def of_models(cls, models, value: float | None = None) -> "Thresholds":
        """The models' own operating point (``models``: ``LoadedModels``-like, with ``cls`` and
        ``seg``), with ``value`` in its place when given."""
        c = getattr(models, "cls", None)
        if c is not None:
            own = float(getattr(c, "threshold", DEFAULT_CLS_THRESHOLD))
            t = cls(value=own, model=own, score="p_cls")
        else:
            t = cls(value=SEG_THRESHOLD, model=SEG_THRESHOLD, score="p_seg")
        return t if value is None else t.with_value(value)

    def with_value(self, value: float) -> "Thresholds":
        """The same models' operating point moved to ``value`` (clamped to [0, 1])."""
        return replace(self, value=min(max(float(value), 0.0), 1.0))

    @property
    def changed(self) -> bool:
        """The user moved the threshold away from the models' own."""
        return round(self.value, 3) != round(self.model, 3)

    @property
    def cls(self) -> float:
        """Threshold on ``p_cls``."""
        return self.value if self.score == "p_cls" else DEFAULT_CLS_THRESHOLD

    @property
    def seg(self) -> float:
        """Threshold on ``p_seg``."""
        return self.value if self.score == "p_seg" else SEG_THRESHOLD

    def describe(self) -> str:
        """``"threshold 0.70"``, or ``"threshold 0.62 (model: 0.70)"`` when the user changed it."""
        text = f"threshold {self.value:.2f}"
        return f"{text} (model: {self.model:.2f})" if self.changed else text


@dataclass
class SweepSummary:
    """Per sweep of a case: the best frame and what was measured on it."""

    sweep: int  # 1-based, as in the ACOUSLIC CSV
    kind: str
    first_frame: int
    last_frame: int
    best_frame: int  # -1 when no frame of this sweep passes
    score: float | None
    ac_mm: float | None  # None when not measurable or when the pixel spacing is unknown
    ga_weeks: float | None  # only with a trusted AC inside Hadlock's range
    ga_out_of_range: bool | None = None  # None: no AC shown
    ac_status: str = "none"  # "ok" | "doubtful" | "no units" | "none" (analysis.units)
    ga: str = ""  # "24w 3d"
    ac_note: str = ""  # why doubtful / not shown
    p_cls: float | None = None  # the models' own scores at the best frame (None: no such model or frame)
    p_seg: float | None = None
    #: the plane at the best frame as a 3-class segmenter grades it ("optimal" | "suboptimal"; None:
    #: no such segmenter, or no frame): a measurement on a suboptimal plane is to be read as such
    plane: str | None = None
    #: the outline at the best frame was cut by the field of view, so part of the ellipse whose AC is
    #: given is extrapolated, not seen (``ac_note`` says it in `fetaliqa ac`'s words,
    #: :func:`~fetaliqa_core.analysis.ac.extrapolated_note`); None: no AC shown. Said, not doubted: whether
    #: such an outline makes the AC doubtful is the frame choice's to judge
    ac_extrapolated: bool | None = None


def _score_at(scores, frame: int, has: bool) -> float | None:
    if frame < 0 or not has or not np.isfinite(scores[frame]):
        return None
    return round(float(scores[frame]), 4)


@dataclass
class CaseSummary:
    """What ``summary.json`` holds: the case, the operating point, the chosen frame, per sweep
    the best frame with its AC and GA."""

    path: str
    content_hash: str
    n_frames: int
    spacing_mm: tuple[float, float] | None  # None: unknown or implausible (``spacing_problem`` says why)
    models: str
    threshold: float  # in use, on ``threshold_score``
    model_threshold: float  # the models' own
    threshold_score: str  # "p_cls" | "p_seg"
    threshold_changed: bool
    chosen_frame: int  # -1 when no frame passes (the challenge's convention)
    sweeps: list[SweepSummary] = field(default_factory=list)
    frames_scored: int = 0
    complete: bool = True
    frame_numbering: str = "0-based"
    chosen_ac: dict = field(default_factory=dict)  # analysis.units.ACReading of the chosen frame
    choice_basis: str = ""  # frame_choice.Choice.basis
    choice_note: str = ""  # set when the models disagree everywhere and the choice rests on one
    spacing_source: str = ""
    spacing_problem: str | None = None  # set: no mm and no GA anywhere, and why
    read_notes: list = field(default_factory=list)  # io.Sweep.read_notes: what reading the file did
    #: where the ACs are measured (as `ac --json` names it): "acouslic" (the challenge's fan), "the
    #: sweep's own fan" (another probe's, found in the frames); "" without a segmenter
    field_of_view: str = ""
    app_version: str = ""
    precision: str = ""  # the number format the models ran in ("bf16" / "fp32"; also named in ``models``)
    precision_reason: str = ""  # why: "forced", "no bf16 matrix instructions", ...
    bundles: list = field(default_factory=list)  # {"role", "name", "sha256", "demo", "base_sha256"} per bundle
    base_sha256: str | None = None  # the first model's base weights' file hash ("random:<seed>"; None: a student's own tower)
    encoder_passes: int | None = None  # per batch: 1 when one model gives both outputs, 2 for two models
    encoder_note: str = ""  # for a classifier and a segmenter: one encoder pass or two, and why
    demo: bool = False
    random_base: bool = False  # a test model on a randomly initialised base
    #: a distilled student scored without its teacher (no cascade): every AC doubtful
    #: (units.STUDENT_ALONE_DOUBT)
    student_alone: bool = False
    notice: str = ""  # the demonstration (or test) model's notice when a number came from it

    def to_json(self) -> dict:
        from fetaliqa_core.files import json_safe

        return json_safe(asdict(self))


@dataclass
class Assessment:
    """Everything derived from one sweep's results: what the CLI writes and the app shows.

    ``flags``: per-frame calls (``flags.candidates`` are the flagged frames); ``best``: per sweep
    the best scored frame or None (``passes`` says whether it is above threshold);
    ``chosen_frame``: the case's one frame, -1 when none passes; ``ac``: AC measured on the best
    passing frames and the chosen one (frame -> measurement, absent where not measurable);
    ``summary``: the same for ``summary.json``.
    """

    thresholds: Thresholds
    flags: FrameFlags
    best: list[BestFrame | None]
    chosen_frame: int
    ac: dict[int, ACMeasurement]
    summary: CaseSummary
    choice: frame_choice.Choice | None = None
    #: the classifier's scores the choice read (None without a classifier)
    p_cls: np.ndarray | None = None

    @property
    def flagged(self) -> np.ndarray:
        """``(N,)`` bool: the frames flagged as candidates."""
        return self.flags.candidates

    def chosen_ac(self) -> ACMeasurement | None:
        return self.ac.get(self.chosen_frame) if self.chosen_frame >= 0 else None

    def mask_problem(self, frame: int) -> str | None:
        """Why ``frame``'s mask is not an abdomen's outline (the frame choice's verdict), None
        when it is or when there is no segmenter: an AC measured there is doubtful."""
        return _mask_problem(self.choice, frame)

    def disagreement(self, frame: int) -> str | None:
        """Why one model contradicts an AC measured on ``frame``: the classifier scored the frame
        below its threshold (:func:`~fetaliqa_core.analysis.units.classifier_doubt`), or the
        segmenter's own call there is no (:func:`~fetaliqa_core.analysis.units.segmenter_doubt`);
        None when both call it, or only one model ran."""
        return _disagreement(self.p_cls, self.thresholds, frame, self.flags)


def _disagreement(p_cls: np.ndarray | None, thresholds: "Thresholds", frame: int,
                  flags: FrameFlags | None = None) -> str | None:
    """Why one model contradicts an AC measured on ``frame``: the classifier scored it below its
    threshold, or (with a classifier beside it) the segmenter's own call is no, its mask under
    the paper's 1 % (an outline it does not stand by). None when neither."""
    if p_cls is None or not 0 <= frame < len(p_cls):
        return None
    seg_called = None if flags is None or not flags.scored_seg[frame] else bool(flags.seg_call[frame])
    return models_disagree(float(p_cls[frame]), thresholds.cls, seg_called, thresholds.seg)


def _mask_problem(choice: frame_choice.Choice | None, frame: int) -> str | None:
    shapes = None if choice is None else choice.shapes
    return shapes[frame].problem if shapes is not None and 0 <= frame < len(shapes) else None


def assess(sweep, results, thresholds: Thresholds, models: str = "",
           measure: Callable[[int], ACMeasurement | None] | None = None,
           provenance: dict | None = None) -> Assessment:
    """The assessment of one sweep from its per-frame results.

    sweep: ``io.Sweep``-like (``n_frames``, ``sweep_ranges``, ``sweep_kinds``, ``height``,
    ``width``, ``spacing_mm``, ``path``, ``content_hash``, ``frames``). results:
    ``engine.SweepResults``-like (``has_cls``, ``has_seg``, ``p_cls``, ``p_seg``, ``p_opt``,
    ``seg_area_px``, ``mask(frame)``, ``n_done``, ``complete``); unscored frames are NaN / -1
    and are never flagged. thresholds: :class:`Thresholds`. models: their description for the
    summary. measure: ``frame -> ACMeasurement | None`` (default
    :func:`~fetaliqa_core.analysis.ac.measure_frame_ac` inside the sweep's field of view); the
    viewer passes its per-frame cache. provenance: ``{"app_version", "precision", "precision_reason",
    "bundles", "base_sha256", "encoder_passes", "encoder_note", "demo", "notice"}`` (:func:`fetaliqa_core.models.choice.provenance`) for the summary; with a demonstration
    model every AC is doubtful (:data:`~fetaliqa_core.analysis.units.DEMO_MODEL_DOUBT`).

    Lengths: with the sweep's ``spacing_problem`` set (unknown or implausible pixel spacing) the
    summary holds no mm and no GA, and says why (:func:`~fetaliqa_core.analysis.units.read_ac`).
    """
    p_cls = results.p_cls if results.has_cls else None
    p_seg = results.p_seg if results.has_seg else None
    area = p_opt = None
    if results.has_seg:
        area = results.seg_area_px.astype(np.float64)
        area[area < 0] = np.nan
        p_opt = results.p_opt
    if p_cls is None and p_seg is None:
        raise ValueError("results of a sweep without any model")
    thr_cls, thr_seg = thresholds.cls, thresholds.seg
    flags = flag_frames(p_cls, p_seg, thr_cls, thr_seg)
    shapes = mask_shapes(sweep, results) if results.has_seg else None
    choice = frame_choice.choose(sweep.sweep_ranges, p_cls, thr_cls, shapes, p_opt,
                                 seg_call=flags.seg_call if results.has_seg else None)
    chosen = choice.frame
    best = _best_of_choice(choice, sweep.sweep_ranges, flags, area, p_opt)

    if measure is None:

        def measure(frame: int) -> ACMeasurement | None:
            # (in the frame's own field of view: the sweep's, but where its fan changes between frames)
            return measure_frame_ac(sweep, results, frame)

    ac: dict[int, ACMeasurement] = {}

    def ac_on(frame: int) -> ACMeasurement | None:
        if frame < 0 or not results.has_seg:
            return None
        if frame not in ac:
            m = measure(frame)
            if m is None:
                return None
            ac[frame] = m
        return ac[frame]

    kinds = list(getattr(sweep, "sweep_kinds", []) or [])
    spacing_problem = getattr(sweep, "spacing_problem", None)
    prov = provenance or {}
    doubt_of_models = model_doubt(bool(prov.get("demo")), None if spacing_problem else sweep.spacing_mm,
                                  bool(prov.get("student_alone")))
    sweeps: list[SweepSummary] = []
    for s, ((start, stop), b) in enumerate(zip(sweep.sweep_ranges, best)):
        frame = b.frame if (b is not None and b.passes) else -1
        m = ac_on(frame)
        r = with_ac_notes(read_ac(None if m is None else m.ac_mm, spacing_problem or _region_problem(m),
                                 _mask_problem(choice, frame), _disagreement(p_cls, thresholds, frame, flags),
                                 doubt_of_models), m, _cut_note(m))
        if frame < 0:
            why = _why_no_frame(flags, choice, start, stop)
            r = replace(r, note=why if why == "no frame scored" else why + _dim_frames(sweep, start, stop))
        elif m is None:
            r = replace(r, note=_why_no_ac(results, frame))
        sweeps.append(SweepSummary(
            sweep=s + 1, kind=kinds[s] if s < len(kinds) else "unknown",
            first_frame=int(start), last_frame=int(stop) - 1,
            best_frame=int(frame), score=(float(b.score) if frame >= 0 else None),
            ac_mm=r.ac_mm, ga_weeks=r.ga_weeks,  # two decimals, as chosen_ac and `ac --json` give it
            ga_out_of_range=(bool(hadlock_ga(m.ac_mm).out_of_range) if m is not None and r.ac_mm is not None
                             else None),  # null where no AC is shown, as in cases.csv
            ac_status=r.status, ga=r.ga_text, ac_note=r.note,
            p_cls=_score_at(results.p_cls, frame, results.has_cls),
            p_seg=_score_at(results.p_seg, frame, results.has_seg),
            plane=(None if frame < 0 or b is None or b.optimal is None
                   else ("optimal" if b.optimal else "suboptimal")),
            ac_extrapolated=bool(m.truncated) if m is not None and r.ac_mm is not None else None))
    chosen_m = ac_on(chosen)
    chosen_reading = with_ac_notes(read_ac(None if chosen_m is None else chosen_m.ac_mm,
                                          spacing_problem or _region_problem(chosen_m), _mask_problem(choice, chosen),
                                          _disagreement(p_cls, thresholds, chosen, flags), doubt_of_models), chosen_m,
                                  _cut_note(chosen_m))
    if chosen >= 0 and chosen_m is None:
        chosen_reading = replace(chosen_reading, note=_why_no_ac(results, chosen))
    elif chosen < 0 and sweeps:
        chosen_reading = replace(chosen_reading, note=_why_no_case_frame(sweeps))
    choice_note = ""
    if p_cls is not None and p_seg is not None and chosen >= 0 and choice.basis != "all models":
        alone = "the segmenter's masks" if choice.basis == "segmenter" else "the classifier's scores"
        # not "the models disagree": their calls may agree on every frame (the flagged panel's
        # "Models disagree (0)") while no mask the classifier backs is shaped like an abdomen's
        choice_note = (f"no frame is backed by both models (the classifier's call, p_cls >= {thr_cls:.2f}, and a "
                       f"segmenter mask shaped like an abdomen's outline): chosen on {alone} alone")
        if results.n_done < sweep.n_frames:  # a cascade's teacher, or a run not finished: say of which frames
            choice_note += f" (of the {results.n_done} of {sweep.n_frames} frames these models scored)"
    if prov.get("student_note"):  # a cascade's student of other models: what the teacher never saw
        choice_note = "; ".join(t for t in (choice_note, str(prov["student_note"])) if t)
    summary = CaseSummary(
        path=str(sweep.path) if getattr(sweep, "path", None) else "",
        content_hash=str(getattr(sweep, "content_hash", "")),
        n_frames=int(sweep.n_frames),
        spacing_mm=None if spacing_problem else tuple(float(v) for v in sweep.spacing_mm),
        models=models, threshold=float(thresholds.value), model_threshold=float(thresholds.model),
        threshold_score=thresholds.score, threshold_changed=thresholds.changed,
        chosen_frame=int(chosen), sweeps=sweeps,
        frames_scored=int(results.n_done), complete=bool(results.complete),
        chosen_ac=chosen_reading.to_dict(), choice_basis=choice.basis,
        choice_note=choice_note,
        spacing_source=str(getattr(sweep, "spacing_source", "")), spacing_problem=spacing_problem,
        read_notes=[str(n) for n in getattr(sweep, "read_notes", ())],
        field_of_view=_field_of_view_name(sweep) if results.has_seg else "",
        app_version=str(prov.get("app_version", "")), bundles=list(prov.get("bundles", [])),
        precision=str(prov.get("precision", "")), precision_reason=str(prov.get("precision_reason", "")),
        base_sha256=prov.get("base_sha256"),
        encoder_passes=prov.get("encoder_passes"), encoder_note=str(prov.get("encoder_note") or ""),
        demo=bool(prov.get("demo", False)),
        random_base=bool(prov.get("random_base", False)),
        student_alone=bool(prov.get("student_alone", False)),
        notice=str(prov.get("notice", "")) if prov.get("demo") or prov.get("random_base") else "")
    return Assessment(thresholds=thresholds, flags=flags, best=best, chosen_frame=int(chosen),
                      ac=ac, summary=summary, choice=choice, p_cls=p_cls)


def _region_problem(m: ACMeasurement | None) -> str | None:
    """Why no length may be shown for the outline ``m`` measured although the sweep has a pixel size:
    it lies outside or across image regions calibrated differently (a picture-in-picture's)."""
    return None if m is None else getattr(m, "spacing_problem", None)


def with_ac_notes(r, m: ACMeasurement | None, cut: str = ""):
    """``r`` saying, with its length, that ``m``'s outline was cut by the field of view, its ellipse
    extrapolated past it (``cut``: :func:`_cut_note`), and that ``m`` was measured at the size of the
    image region holding the outline, not at the sweep's (``ACMeasurement.spacing_note``): the reason,
    the cut, the region, in that order; the window's readings of any frame are said the same way."""
    note = "" if m is None else getattr(m, "spacing_note", "")
    if not (note or cut) or r.ac_mm is None:
        return r
    return replace(r, note="; ".join(t for t in (r.note, cut, note) if t))


def _cut_note(m: ACMeasurement | None) -> str:
    """What is said beside an AC whose outline the field of view cut (``m.truncated``): `fetaliqa
    ac`'s and the window's words (:func:`~fetaliqa_core.analysis.ac.extrapolated_note`); empty for a
    whole outline. An answer whose ellipse was partly extrapolated read as plainly as a whole one in
    `score`'s lines, summary.json and summary.csv. Every AC here is measured inside a field of view
    (:func:`~fetaliqa_core.analysis.ac.measure_frame_ac`: the frame's own, never none)."""
    return extrapolated_note(m, fov="the frame's")


#: The field of view's name where the sweep's fan changes between frames (its depth or width changed
#: while scanning): each frame measured in the fan of the frames like it.
FANS_OF_RUNS = "the fan of its run of frames"


def _field_of_view_name(sweep) -> str:
    """The field of view the sweep's ACs are measured in, named as ``ac --json`` names it."""
    from fetaliqa_core import acouslic

    try:
        if isinstance(acouslic.sweep_fov(sweep), str):
            return "acouslic"
        return "the sweep's own fan" if acouslic.fan_change(sweep) is None else FANS_OF_RUNS
    except (AttributeError, TypeError, ValueError):  # (a stand-in sweep without frames)
        return ""


#: ``id(results) -> (weak reference to it, its cache)``. Keyed by identity: results objects are
#: dataclasses that compare by value, so they have no hash and cannot key a WeakKeyDictionary
#: (which silently left every call without a cache: the viewer re-judged every mask 10 times a
#: second while scoring, stalling its window for up to 1.8 s).
_SHAPES: dict[int, tuple[weakref.ref, dict]] = {}


def _shape_cache(results) -> dict:
    """The shape cache of one results object, dropped when that object is."""
    key = id(results)
    entry = _SHAPES.get(key)
    if entry is not None and entry[0]() is results:
        return entry[1]

    def forget(ref: weakref.ref, key: int = key) -> None:
        if _SHAPES.get(key, (None,))[0] is ref:
            _SHAPES.pop(key, None)

    try:
        ref = weakref.ref(results, forget)
    except TypeError:  # not weak-referenceable: no cache
        return {}
    cache: dict = {}
    _SHAPES[key] = (ref, cache)
    return cache


def shape_hints(sweep, results, frames) -> dict:
    """What :func:`mask_shapes` has judged of ``frames`` of ``results`` (judging what it has not
    yet), for another results object that holds the same mask arrays to take over
    (:func:`adopt_shape_hints`): a worker thread judges them, the window's thread does not."""
    mask_shapes(sweep, results)
    cache = _shape_cache(getattr(results, "shape_cache_owner", None) or results)
    wanted = {int(f) for f in frames}
    return {k: v for k, v in list(cache.items())
            if k[0] == "fov" or (isinstance(k[0], int) and k[0] in wanted)}


def adopt_shape_hints(results, hints: dict) -> None:
    """Take over :func:`shape_hints` where ``results`` holds the very mask judged (a frame scored
    again since has another mask, and is judged anew)."""
    cache = _shape_cache(getattr(results, "shape_cache_owner", None) or results)
    for k, v in hints.items():
        if k[0] == "fov" or (isinstance(k[0], int) and results.mask(k[0]) is v[0]):
            cache.setdefault(k, v)


def mask_shapes(sweep, results) -> list[frame_choice.MaskShape]:
    """:func:`frame_choice.mask_shape` of every scored frame's mask, in the sweep's field of view
    at model resolution, with the model pixel's size in mm when the sweep's spacing is known and
    plausible, and the frame's grey levels at that size for the outline's check. Cached per
    results object and mask array (copies made by ``SweepResults.only`` share their parent's
    cache and masks)."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.preprocess import pad_geometry, preprocess_masks, resize_frames_uint8

    cache = _shape_cache(getattr(results, "shape_cache_owner", None) or results)
    size = int(getattr(results, "mask_size", 224))

    def model_fov(fov) -> np.ndarray:
        fov = acouslic.fov_mask((sweep.height, sweep.width)) if isinstance(fov, str) else np.asarray(fov)
        return preprocess_masks(fov.astype(np.uint8), size=size).numpy().reshape(size, size) > 0

    key = ("fov", sweep.height, sweep.width)
    if key not in cache:
        cache[key] = model_fov(acouslic.sweep_fov(sweep))
    fov224 = cache[key]
    # where the sweep's fan changes between frames, each frame is judged in the fan of the frames
    # like it, as its AC is measured (an outline cut by a shortened fan's depth arc read whole)
    change = acouslic.fan_change(sweep) if getattr(sweep, "frames", None) is not None else None
    runs = ("fov", sweep.height, sweep.width, "runs")
    if change is not None and runs not in cache:
        cache[runs] = [fov224 if own is acouslic.sweep_fov(sweep) else model_fov(own) for own in change.fans]

    def fov_of(i: int) -> np.ndarray:
        return fov224 if change is None else cache[runs][change.run_of(i)]
    spacing = getattr(sweep, "measurement_spacing_mm", tuple(sweep.spacing_mm))
    geometry = pad_geometry(sweep.height, sweep.width)
    size = fov224.shape[0]
    scale = size / geometry.side

    def mask_px(spacing_mm) -> tuple[float, float] | None:
        return None if spacing_mm is None else (float(spacing_mm[0]) / scale, float(spacing_mm[1]) / scale)

    px_mm = mask_px(spacing)
    # image regions at their own pixel sizes (a picture-in-picture): a mask is judged at the size of
    # the region holding it, as its AC is measured (an inset abdomen of 136 mm, judged at the main
    # image's size, was "implausible size": a false doubt), at none where that size is unknown
    # (a size the user gave stands for every pixel, as the AC is measured with it)
    from fetaliqa_core.io.spacing import SPACING_FROM_USER

    given = getattr(sweep, "spacing_source", None) == SPACING_FROM_USER
    calibrations = tuple(getattr(sweep, "region_calibrations", ()) or ()) if spacing is not None and not given else ()
    regions = tuple(((round((x0 + geometry.left) * scale), round((y0 + geometry.top) * scale),
                      round((x1 + geometry.left) * scale), round((y1 + geometry.top) * scale)), sp)
                    for (x0, y0, x1, y1), sp in calibrations)

    def px_of(mask) -> tuple[float, float] | None:
        if not regions:
            return px_mm
        from fetaliqa_core.io.spacing import outline_spacing

        return mask_px(outline_spacing(regions, spacing, np.asarray(mask) > 0)[0])

    frames = getattr(sweep, "frames", None)

    def grey(i: int):
        """Frame ``i``'s grey levels as the model sees them (its size), for the outline's check;
        None when the sweep-like object carries no frames of the sweep's size."""
        if frames is None or len(frames) != int(sweep.n_frames):
            return None
        frame = np.asarray(frames[i])
        if frame.dtype != np.uint8 or frame.ndim != 2:
            return None
        return resize_frames_uint8(frame[None], size)[0] if frame.shape != (size, size) else frame

    out: list[frame_choice.MaskShape] = []
    for i in range(int(sweep.n_frames)):
        m = results.mask(i)
        if m is None:
            out.append(frame_choice.NO_MASK)
            continue
        k = (i, px_mm, regions)
        hit = cache.get(k)
        if hit is None or hit[0] is not m:  # a frame scored again (a cascade's teacher) has a new mask
            hit = cache[k] = (m, frame_choice.mask_shape(m, fov_of(i), px_of(m), grey=lambda i=i: grey(i)))
        out.append(hit[1])
    return out


def _why_no_ac(results, frame: int) -> str:
    """Why a chosen frame has no AC: it is measured on the segmenter's mask, and there is no
    segmenter, no mask at that frame, or one too small or thin to fit an ellipse to."""
    if not results.has_seg:
        return "no AC: it is measured on a segmenter's mask, and no segmenter is loaded"
    area = results.seg_area_px[frame] if 0 <= frame < len(results.seg_area_px) else float("nan")
    if not np.isfinite(area) or area <= 0:
        return "no AC: the segmenter draws no mask at this frame (it was chosen on the classifier's call)"
    size = int(getattr(results, "mask_size", 0) or 0)
    if size and area >= 0.9 * size * size:
        return ("no AC: the segmenter's mask at this frame covers (nearly) the whole image: it has no outline to "
                "fit an ellipse to")
    return (f"no AC: the segmenter's mask at this frame ({int(area)} pixel(s) at the model's resolution) is "
            "too small or too thin to fit an ellipse to, or lies outside the field of view")


def _why_no_frame(flags: FrameFlags, choice, start: int, stop: int) -> str:
    """Why a sweep has no chosen frame, in the words ``score`` and the viewer use. A frame is
    chosen where the models' calls meet a mask that outlines an abdomen (frame_choice.choose):
    frames above a threshold can still miss one or the other. Where the models scored part of the
    sweep (a cascade's teacher, a run not finished) the reason says of how many frames: "no frame
    reaches the threshold" was read as true of frames the teacher never saw."""
    why = _why_none_scored(flags, choice, start, stop)
    n_scored = int((flags.scored_cls[start:stop] | flags.scored_seg[start:stop]).sum())
    if 0 < n_scored < stop - start:
        why += f" (of the {n_scored} of {stop - start} frames these models scored)"
    return why


def _why_none_scored(flags: FrameFlags, choice, start: int, stop: int) -> str:
    """:func:`_why_no_frame` of the frames scored."""
    sl = slice(start, stop)
    if not (flags.scored_cls[sl] | flags.scored_seg[sl]).any():
        return "no frame scored"
    shapes = choice.shapes
    plaus = None if shapes is None else np.array([shapes[i].plausible for i in range(start, stop)], bool)
    if plaus is not None:
        plaus &= flags.seg_call[sl]  # as the choice counts them: masks the segmenter itself calls
    cls_calls = flags.cls_call[sl] if flags.scored_cls[sl].any() else None
    calls = cls_calls if cls_calls is not None else flags.seg_call[sl]
    n_calls, n_plaus = int(calls.sum()), (0 if plaus is None else int(plaus.sum()))
    who = "the classifier's threshold" if cls_calls is not None else "threshold"
    if plaus is not None and n_calls and not n_plaus:
        return (f"{n_calls} frame(s) above {who}, but no mask there is shaped like an abdomen's outline (shape, size or "
                "place implausible), so none is chosen")
    if cls_calls is not None and n_plaus and not n_calls:
        return (f"no frame above the classifier's threshold; the segmenter's mask is shaped like an abdomen's "
                f"outline on {n_plaus} frame(s) the classifier does not call")
    if n_calls and n_plaus:
        return (f"{n_calls} frame(s) above the classifier's threshold and {n_plaus} with a mask shaped like "
                "an abdomen's outline, but never the same frame, so none is chosen")
    if cls_calls is not None:
        # (frames are flagged only where the classifier calls them: none is, here)
        return ("no frame reaches the classifier's threshold" +
                (" and no mask is shaped like an abdomen's outline" if plaus is not None else ""))
    return "no frame above threshold" if plaus is None else "no frame has a mask shaped like an abdomen's outline"


#: A sweep whose brightest grey (99th percentile over a few of its frames) is at most this is blank:
#: the probe off the skin, or a recording of nothing.
BLANK_GREY = 8
#: ... and at most this, dim: the gain turned low (the models learnt from images whose tissue
#: reaches 150-255; sweeps of four generators reach 68 and more, a low-gain one 30).
DIM_GREY = 50


def _dim_frames(sweep, start: int, stop: int) -> str:
    """Words to add to why a sweep has no frame when its frames are blank or dim (a low-gain sweep
    and a black one got the same words as any other: nothing said why no frame could pass)."""
    top = top_grey(sweep, start, stop)
    if top is None:
        return ""
    if top <= BLANK_GREY:
        return "; its frames are blank: nothing but black"
    if top <= DIM_GREY and np.asarray(sweep.frames[start:start + 1]).dtype == np.uint8:
        return (f"; its frames are dim: their brightest grey is about {top:.0f} of 255 (a sweep recorded at a "
                "low gain shows too little for the models)")
    return ""


_TOP_GREY_KEPT = "_fetaliqa_top_grey"


def top_grey(sweep, start: int, stop: int) -> float | None:
    """The brightest grey of frames ``start..stop`` (99th percentile over 8 frames spread over
    them), None where the frames cannot be read so. Worked out once per sweep object and range and
    kept on it, as :func:`fetaliqa_core.acouslic.sweep_fov` keeps the field of view: it depends on
    the pixels only, and the window assesses the results after every batch (10-17 ms a sweep each
    time, on the window's thread, stalled it every few seconds while a case scored)."""
    kept = getattr(sweep, "__dict__", {}).get(_TOP_GREY_KEPT)
    key = (int(start), int(stop))
    if kept is not None and key in kept:
        return kept[key]
    try:
        picks = np.unique(np.linspace(start, stop - 1, 8).astype(int))
        top = float(np.percentile(np.asarray(sweep.frames[picks]), 99))
    except (TypeError, ValueError, IndexError, AttributeError):
        top = None
    if isinstance(getattr(sweep, "__dict__", None), dict):
        sweep.__dict__.setdefault(_TOP_GREY_KEPT, {})[key] = top
    return top


def _why_no_case_frame(sweeps: list[SweepSummary]) -> str:
    """Why a case has no chosen frame: its sweeps' reasons, each once, with the sweeps it holds for
    (the case's answer said nothing; the reasons were only in each sweep's line)."""
    if len(sweeps) == 1:
        return sweeps[0].ac_note
    by_reason: dict[str, list[int]] = {}
    for sw in sweeps:
        by_reason.setdefault(sw.ac_note, []).append(sw.sweep)
    if len(by_reason) == 1:
        return f"in every sweep, {sweeps[0].ac_note}"
    return "; ".join(f"sweep{'s' if len(n) > 1 else ''} {', '.join(map(str, n))}: {why}" for why, n in by_reason.items())


def _best_of_choice(choice, ranges, flags: FrameFlags, area, p_opt) -> list[BestFrame | None]:
    """Per sweep the chosen frame as a :class:`BestFrame`; where the sweep has no run, its
    highest-scored frame (not passing), None when nothing there is scored."""
    n = flags.combined.shape[0]
    area_a, optimal, known = _ranking(area, p_opt, n)
    out: list[BestFrame | None] = []
    for s, (start, stop) in enumerate(ranges):
        f = choice.per_sweep[s]
        passes = f >= 0
        if not passes:
            f = _pick(np.arange(start, stop), flags, area_a, optimal)
            if f is None:
                out.append(None)
                continue
        score = float(choice.evidence[f]) if passes else float(flags.combined[f])
        out.append(BestFrame(sweep=s, frame=int(f), score=score, passes=passes,
                             optimal=bool(optimal[f]) if known[f] else None, area_px=int(area_a[f])))
    return out
