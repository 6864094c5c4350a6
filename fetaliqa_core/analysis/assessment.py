"""From a sweep's per-frame scores to what the sonographer acts on: per-frame calls and flags,
the best frame of each sweep and the one frame of the case.

Frame arrays are ``(N,)`` with one entry per frame of the case, NaN where a model did not score
the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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

    ``combined``: :func:`combined_score`. ``candidates``: combined score >= the threshold of the
    models that scored the frame (their mean when both). ``disagreements``: both models scored
    the frame and their calls differ.
    """

    scored_cls: np.ndarray
    scored_seg: np.ndarray
    cls_call: np.ndarray
    seg_call: np.ndarray
    combined: np.ndarray
    candidates: np.ndarray
    disagreements: np.ndarray


def flag_frames(
    p_cls: np.ndarray | None,
    p_seg: np.ndarray | None,
    threshold_cls: float = 0.5,
    threshold_seg: float = 0.5,
    seg_call: np.ndarray | None = None,
) -> FrameFlags:
    """Candidate good frames and classifier/segmenter disagreements.

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
    candidates = np.isfinite(combined) & (np.where(np.isfinite(combined), combined, -np.inf) >= thr)
    disagreements = scored_cls & scored_seg & (cls_call != s_call)
    return FrameFlags(scored_cls, scored_seg, cls_call, s_call, combined, candidates, disagreements)


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

