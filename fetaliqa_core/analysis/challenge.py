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
from fetaliqa_core.analysis.ac import FovArg, measure_ac, resolve_fov
from fetaliqa_core.analysis.metrics import dice

#: DSC_soft: an unannotated chosen frame is compared with the nearest annotated frame of the
#: same sweep within this many frames, the Dice scaled by ``1 - |d| / DSC_SOFT_WINDOW``.
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
    """Challenge metrics of one case (see :func:`case_metrics`)."""

    chosen_frame: int
    wfss: float
    nae_ac: float
    dsc_soft: float
    score: float
    ac_pred_mm: float | None
    ac_gt_mm: float | None
    dsc_reference_frame: int | None
    dsc_distance: int | None

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
    """WFSS, NAE_AC, DSC_soft and the ranking score of one case, as the challenge scores them.

    gt_masks: ``(N, H, W)`` ground-truth labels. chosen_frame: the algorithm's frame or -1.
    pred_mask: ``(H, W)`` predicted mask of the chosen frame on the original geometry (None or
    ignored when -1). ac_gt_per_sweep: reference AC (mm) per sweep, None/NaN where the sweep has
    none. sweep_ranges: default :func:`fetaliqa_core.acouslic.case_sweep_ranges` (6 x 140). ac_pred_mm: the predicted
    AC when already measured (else measured here with :func:`measure_ac`, ``min_area_px=0``
    like the challenge).

    - NAE_AC = |gt - pred| / max(gt, pred); 1 when either is missing (no frame, sweep without
      reference AC, mask not measurable).
    - WFSS: :func:`wfss`.
    - DSC_soft: Dice (both masks restricted to the FOV, as the challenge does) of ``pred_mask``
      with the chosen frame's annotation; when that frame is unannotated, with the nearest
      annotated frame of the same sweep within +-15 frames, scaled by ``1 - |d| / 15`` (of two
      equally near frames the better-matching counts); 0 when none or -1. In a case with no
      annotation at all it is 0, or 1 for -1 with ``credit_abstention``.
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

    annotated = (gt != 0).any(axis=(1, 2))
    w_score = wfss(gt, chosen, credit_abstention=credit_abstention)

    pred = None
    if chosen != -1 and pred_mask is not None:
        pred = np.asarray(pred_mask)
        if pred.shape != (h, w):
            raise ValueError(f"pred_mask shape {pred.shape} differs from the frames' {(h, w)}")

    # AC
    sweep = _sweep_of(chosen, ranges) if chosen != -1 else None
    ac_gt = _valid_ac(ac_gt_per_sweep[sweep]) if sweep is not None and sweep < len(ac_gt_per_sweep) else None
    ac_pred = _valid_ac(ac_pred_mm)
    if ac_pred is None and ac_pred_mm is None and pred is not None:
        m = measure_ac(pred, spacing_mm, fov=fov, min_area_px=0)
        ac_pred = None if m is None else m.ac_mm
    if ac_gt is None or ac_pred is None:
        nae = 1.0
    else:
        nae = abs(ac_gt - ac_pred) / max(ac_gt, ac_pred, 1e-6)

    # DSC_soft
    ref: int | None = None
    dist: int | None = None
    if not annotated.any():
        dsc = 1.0 if (credit_abstention and chosen == -1) else 0.0
    elif chosen == -1:
        dsc = 0.0
    else:
        fov_mask = resolve_fov(fov, (h, w))
        p = np.zeros((h, w), bool) if pred is None else pred != 0
        if fov_mask is not None:
            p = p & fov_mask

        def frame_dice(j: int) -> float:
            g = gt[j] != 0
            if fov_mask is not None:
                g = g & fov_mask
            return dice(p, g, empty_value=0.0)

        if annotated[chosen]:
            ref, dist, dsc = chosen, 0, frame_dice(chosen)
        else:
            start, stop = ranges[sweep] if sweep is not None else (0, n)
            dsc = 0.0
            for d in range(1, DSC_SOFT_WINDOW):
                options = [j for j in (chosen - d, chosen + d) if start <= j < stop and annotated[j]]
                if options:
                    scale = 1.0 - d / DSC_SOFT_WINDOW
                    scored = [(frame_dice(j) * scale, j) for j in options]
                    dsc, ref = max(scored)
                    dist = d
                    break
    score = 0.5 * (1.0 - nae) + 0.25 * w_score + 0.25 * dsc
    return CaseMetrics(
        chosen_frame=chosen,
        wfss=float(w_score),
        nae_ac=float(nae),
        dsc_soft=float(dsc),
        score=float(score),
        ac_pred_mm=ac_pred,
        ac_gt_mm=ac_gt,
        dsc_reference_frame=ref,
        dsc_distance=dist,
    )


def aggregate_case_metrics(cases: Sequence[CaseMetrics]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over cases of wfss, nae_ac, dsc_soft and score.

    The score's mean equals the challenge's 0.5(1 - mean NAE) + 0.25 mean WFSS + 0.25 mean DSC;
    its std is the std of the per-case scores (the challenge's leaderboard combines the stds
    linearly instead, which is not a standard deviation).
    """
    out: dict[str, dict[str, float]] = {}
    for key in ("wfss", "nae_ac", "dsc_soft", "score"):
        vals = np.array([getattr(c, key) for c in cases], dtype=np.float64)
        if vals.size == 0:
            out[key] = {"mean": float("nan"), "std": float("nan"), "n": 0}
        else:
            out[key] = {"mean": float(vals.mean()), "std": float(vals.std()), "n": int(vals.size)}
    return out
