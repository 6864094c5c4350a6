"""The ACOUSLIC-AI challenge's metrics of one case (WFSS, NAE_AC, DSC_soft, ranking score) and
their aggregate over cases.

Ground-truth masks are ``(N, H, W)`` labels: 1 optimal plane, 2 suboptimal plane, 0 background
(both 1 and 2 count as abdomen).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fetaliqa_core import acouslic
from fetaliqa_core.analysis.ac import FovArg, measure_ac, measure_ac_evaluator, resolve_fov

#: DSC_soft: when the chosen frame's annotation is empty, the evaluator compares the prediction
#: with an annotated frame of the same sweep at most this many frames away (the previous one
#: first), the Dice scaled by ``1 - |d| / DSC_SOFT_WINDOW`` (so a frame 15 away counts 0).
DSC_SOFT_WINDOW = 15


def wfss(gt_masks: np.ndarray, chosen_frame: int, credit_abstention: bool = False) -> float:
    """Weighted frame selection score of the challenge.

    gt_masks: ``(N, H, W)`` labels (1 optimal, 2 suboptimal). 1 if the chosen frame has label 1;
    1 if it has label 2 and the case has no label 1 anywhere; 0.6 if it has label 2 while an
    optimal frame exists; 0 otherwise, including ``chosen_frame == -1`` in an annotated case.
    A case with no annotation at all scores 0 in the challenge whatever was chosen;
    ``credit_abstention=True`` instead gives 1 for answering -1 there (and 0 for any frame).
    """
    gt = np.asarray(gt_masks)
    n = gt.shape[0]
    has_opt_frame = (gt == 1).any(axis=(1, 2))
    has_sub_frame = (gt == 2).any(axis=(1, 2))
    if not (has_opt_frame.any() or has_sub_frame.any()):
        return 1.0 if (credit_abstention and chosen_frame == -1) else 0.0
    if chosen_frame == -1:
        return 0.0
    if not 0 <= chosen_frame < n:
        raise ValueError(f"chosen frame {chosen_frame} is outside 0..{n - 1}")
    if has_opt_frame[chosen_frame]:
        return 1.0
    if has_sub_frame[chosen_frame]:
        return 0.6 if has_opt_frame.any() else 1.0
    return 0.0


@dataclass(frozen=True)
class CaseMetrics:
    """Challenge metrics of one case (see :func:`case_metrics`).

    ``dsc_soft`` and ``score`` are the evaluator's values, ``inf`` where the evaluator's Dice is
    undefined (``dsc_defined`` False: its mean over cases is then ``inf``). ``ac_pred_mm`` is
    the evaluator's AC of the predicted mask (the one NAE_AC uses); ``ac_project_mm`` the
    project's own AC of the same mask (outline extrapolated across the fan edge) and
    ``nae_ac_project`` the NAE it would give, reported beside, never in place of, the evaluator's.
    """

    chosen_frame: int
    wfss: float
    nae_ac: float
    dsc_soft: float
    score: float
    ac_pred_mm: float | None
    ac_gt_mm: float | None
    dsc_reference_frame: int | None
    dsc_distance: int | None
    dsc_defined: bool = True
    ac_project_mm: float | None = None
    nae_ac_project: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _sweep_of(frame: int, sweep_ranges: Sequence[tuple[int, int]]) -> int | None:
    for s, (start, stop) in enumerate(sweep_ranges):
        if start <= frame < stop:
            return s
    return None


def _valid_ac(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) and v > 0 else None


def _nae(gt: float | None, pred: float | None) -> float:
    if gt is None or pred is None:
        return 1.0
    return abs(gt - pred) / max(gt, pred, 1e-6)


def _sitk_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks as SimpleITK's label-overlap filter gives it: ``inf`` for two
    empty masks (0 / 0), 0 when only one is empty."""
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return math.inf
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def reference_frame(annotated: np.ndarray, frame: int, sweep: tuple[int, int]) -> int | None:
    """The annotated frame the evaluator compares an unannotated chosen frame with: the nearest
    *previous* annotated frame at most :data:`DSC_SOFT_WINDOW` back (inside the sweep); only
    when there is none, the nearest next one at most that far ahead; None when neither.
    ``annotated``: ``(N,)`` bool, the frame's raw annotation is non-empty (not FOV-masked)."""
    start, stop = sweep
    for j in range(frame - 1, max(start, frame - DSC_SOFT_WINDOW) - 1, -1):
        if annotated[j]:
            return j
    for j in range(frame + 1, min(stop, frame + DSC_SOFT_WINDOW + 1)):
        if annotated[j]:
            return j
    return None


def dsc_soft_evaluator(
    gt_masks: np.ndarray,
    chosen_frame: int,
    pred_mask: np.ndarray | None,
    sweep_ranges: Sequence[tuple[int, int]],
    fov: np.ndarray | None,
) -> tuple[float, int | None, int | None]:
    """DSC_soft exactly as the organisers' evaluator computes it: ``(value, reference frame,
    distance)``.

    - -1 (no frame): the evaluator indexes the annotation with -1, i.e. the case's LAST frame,
      and compares it with an empty mask: 0 when that frame is annotated inside the FOV, ``inf``
      (SimpleITK's Dice of two empty images) otherwise.
    - The chosen frame's annotation and the prediction are both FOV-masked. Both non-empty:
      their Dice. Prediction empty: 0, or ``inf`` when the annotation is empty too.
    - Annotation (FOV-masked) empty, prediction not: :func:`reference_frame` (previous annotated
      frame within 15 first, then next); that frame's annotation is NOT FOV-masked; Dice scaled
      by ``1 - |d| / 15``. No such frame: 0.
    """
    gt = np.asarray(gt_masks)
    n, h, w = gt.shape
    fov_b = np.ones((h, w), bool) if fov is None else np.asarray(fov, bool)
    chosen = int(chosen_frame)
    if chosen == -1:
        return _sitk_dice((np.asarray(gt[-1]) != 0) & fov_b, np.zeros((h, w), bool)), None, None
    g = (np.asarray(gt[chosen]) != 0) & fov_b
    p = np.zeros((h, w), bool) if pred_mask is None else (np.asarray(pred_mask) != 0) & fov_b
    if not p.any() or g.any():
        return _sitk_dice(g, p), chosen, 0
    sweep = _sweep_of(chosen, sweep_ranges)
    bounds = sweep_ranges[sweep] if sweep is not None else (0, n)
    annotated = (gt.reshape(n, -1) != 0).any(axis=1)
    ref = reference_frame(annotated, chosen, bounds)
    if ref is None:
        return 0.0, None, None
    d = abs(ref - chosen)
    return _sitk_dice(np.asarray(gt[ref]) != 0, p) * (1.0 - d / DSC_SOFT_WINDOW), ref, d


def case_metrics(
    gt_masks: np.ndarray,
    chosen_frame: int,
    pred_mask: np.ndarray | None,
    ac_gt_per_sweep: Sequence[float | None],
    sweep_ranges: Sequence[tuple[int, int]] | None = None,
    spacing_mm: float | Sequence[float] = acouslic.SPACING_MM,
    fov: FovArg = "acouslic",
    ac_pred_mm: float | None = None,
    credit_abstention: bool = False,
) -> CaseMetrics:
    """WFSS, NAE_AC, DSC_soft and the ranking score of one case, equal to the organisers'
    evaluator on ACOUSLIC-AI cases (quirks included; see FRAME_CHOICE.md in docs/).

    gt_masks: ``(N, H, W)`` ground-truth labels. chosen_frame: the algorithm's frame or -1.
    pred_mask: ``(H, W)`` predicted mask of the chosen frame on the original geometry (None:
    empty; ignored for -1, as the evaluator replaces it by an empty mask). ac_gt_per_sweep:
    reference AC (mm) per sweep, None/NaN where the sweep has none. sweep_ranges: default
    :func:`fetaliqa_core.acouslic.case_sweep_ranges` (6 x 140). ac_pred_mm: a project AC of the
    mask already measured (else measured here with :func:`measure_ac`); it is reported beside
    the evaluator's, which NAE_AC always uses (:func:`measure_ac_evaluator`).

    - NAE_AC = |gt - pred| / max(gt, pred) with the reference AC of the chosen frame's sweep; 1
      when either is missing (-1, a sweep without reference AC, no ellipse found).
    - WFSS: :func:`wfss`.
    - DSC_soft: :func:`dsc_soft_evaluator` (may be ``inf`` where the evaluator's is). In a case
      with no annotation at all ``credit_abstention=True`` gives 1 for -1 (a project option).
    - score = 0.5 (1 - NAE_AC) + 0.25 WFSS + 0.25 DSC_soft.
    """
    gt = np.asarray(gt_masks)
    if gt.ndim != 3:
        raise ValueError(f"gt_masks must be (N, H, W), got shape {gt.shape}")
    n, h, w = gt.shape
    ranges = list(sweep_ranges) if sweep_ranges is not None else acouslic.case_sweep_ranges(n)
    chosen = int(chosen_frame)
    if chosen != -1 and not 0 <= chosen < n:
        raise ValueError(f"chosen frame {chosen} is outside 0..{n - 1} (or -1)")
    w_score = wfss(gt, chosen, credit_abstention=credit_abstention)

    pred = None
    if chosen != -1 and pred_mask is not None:
        pred = np.asarray(pred_mask)
        if pred.shape != (h, w):
            raise ValueError(f"pred_mask shape {pred.shape} differs from the frames' {(h, w)}")

    sweep = _sweep_of(chosen, ranges) if chosen != -1 else None
    ac_gt = None
    if sweep is not None and sweep < len(ac_gt_per_sweep):
        ac_gt = _valid_ac(ac_gt_per_sweep[sweep])
    ac_eval = ac_proj = None
    if pred is not None and pred.any():
        ac_eval = _valid_ac(measure_ac_evaluator(pred, spacing_mm, fov=fov))
        if ac_pred_mm is not None:
            ac_proj = _valid_ac(ac_pred_mm)
        else:
            m = measure_ac(pred, spacing_mm, fov=fov, min_area_px=0)
            ac_proj = None if m is None else _valid_ac(m.ac_mm)
    nae = _nae(ac_gt, ac_eval)

    ref = dist = None
    if credit_abstention and chosen == -1 and not gt.any():
        dsc = 1.0
    else:
        dsc, ref, dist = dsc_soft_evaluator(gt, chosen, pred, ranges, resolve_fov(fov, (h, w)))
    score = 0.5 * (1.0 - nae) + 0.25 * w_score + 0.25 * dsc
    return CaseMetrics(
        chosen_frame=chosen,
        wfss=float(w_score),
        nae_ac=float(nae),
        dsc_soft=float(dsc),
        score=float(score),
        ac_pred_mm=ac_eval,
        ac_gt_mm=ac_gt,
        dsc_reference_frame=ref,
        dsc_distance=dist,
        dsc_defined=bool(math.isfinite(dsc)),
        ac_project_mm=ac_proj,
        nae_ac_project=(None if ac_gt is None else float(_nae(ac_gt, ac_proj))),
    )


def aggregate_case_metrics(cases: Sequence[CaseMetrics]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over cases of wfss, nae_ac, dsc_soft and score.

    The score's mean equals the challenge's 0.5(1 - mean NAE) + 0.25 mean WFSS + 0.25 mean DSC;
    its std is the std of the per-case scores (the challenge's leaderboard combines the stds
    linearly instead, which is not a standard deviation).

    Where the evaluator's DSC_soft is undefined (``inf``; see :func:`dsc_soft_evaluator`) its own
    mean is ``inf``: ``evaluator_mean`` keeps that, while ``mean`` and ``std`` count such a case's
    DSC_soft as 0 so methods can still be compared, and ``undefined`` says how many cases that
    was.
    """
    out: dict[str, dict[str, float]] = {}
    bad = np.array([not math.isfinite(c.dsc_soft) for c in cases], dtype=bool)
    for key in ("wfss", "nae_ac", "dsc_soft", "score"):
        raw = np.array([getattr(c, key) for c in cases], dtype=np.float64)
        vals = raw.copy()
        if key == "dsc_soft":
            vals[bad] = 0.0
        elif key == "score":
            vals[bad] = [0.5 * (1.0 - c.nae_ac) + 0.25 * c.wfss for c, b in zip(cases, bad) if b]
        undefined = int(bad.sum()) if key in ("dsc_soft", "score") else 0
        if vals.size == 0:
            out[key] = {"mean": float("nan"), "std": float("nan"), "n": 0, "undefined": 0,
                        "evaluator_mean": float("nan")}
        else:
            out[key] = {"mean": float(vals.mean()), "std": float(vals.std()), "n": int(vals.size),
                        "undefined": undefined,
                        "evaluator_mean": math.inf if undefined else float(raw.mean())}
    return out
