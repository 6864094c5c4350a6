"""The product's path: engine, batched preprocessing and merged models, timed per component; and the
check that both paths compute the same function."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fetaliqa_core.bench.machine import dtype_name, sync
from fetaliqa_core.bench.seed_style import seg_foreground
from fetaliqa_core.bench.settings import AGREEMENT_PREPROCESS_FRAMES


class MatmulProbe:
    """One timed matrix product of side ``n`` in ``dtype``, on demand: the device's rate at this
    moment, taken beside each model batch so that both see the same load from other processes."""

    def __init__(self, device: torch.device, dtype: torch.dtype, n: int | None = None) -> None:
        self.device = device
        self.n = n or (8192 if device.type == "cuda" else 2048)
        gen = torch.Generator().manual_seed(99)
        self.a = torch.randn(self.n, self.n, generator=gen).to(device, dtype)
        self.b = torch.randn(self.n, self.n, generator=gen).to(device, dtype)
        self.rate()  # warm-up

    def rate(self) -> float:
        """FLOP/s of one product now (best of three on CUDA, where one takes about a millisecond)."""
        times = []
        with torch.inference_mode():
            for _ in range(3 if self.device.type == "cuda" else 1):
                sync(self.device)
                t0 = time.perf_counter()
                torch.mm(self.a, self.b)
                sync(self.device)
                times.append(time.perf_counter() - t0)
        return 2.0 * self.n ** 3 / min(times)


def run_ours_components(sweep, n_frames: int, cls_lm, seg_lm, batch: int, log: Callable[[str], None],
                        probe: MatmulProbe | None = None) -> dict:
    """Preprocessing, classifier and segmenter throughput of the product's path, timed apart
    (each batch: ``preprocess_frames`` on the device, synchronised; then ``predict``). With a
    ``probe``, the matrix-product rate is measured right before each full batch's ``predict``,
    outside both timed spans: a 2048-side product takes longer than preprocessing a batch, and
    counted as preprocessing it made ours read several times slower than the seed-style path."""
    from fetaliqa_core.preprocess import preprocess_frames

    device, dtype = cls_lm.device, cls_lm.dtype
    # warm-up at the first timed batch's shape (see run_seed_style)
    warm = preprocess_frames(np.asarray(sweep.frames[:min(batch, n_frames)]), device=device, dtype=dtype)
    cls_lm.predict(warm)
    seg_lm.predict(warm)
    sync(device)
    del warm
    prep_s = {"cls": 0.0, "seg": 0.0}
    model_s = {"cls": 0.0, "seg": 0.0}
    batch_s: dict[str, list[float]] = {"cls": [], "seg": []}
    batch_rate: dict[str, list[float]] = {"cls": [], "seg": []}
    p_cls: list[np.ndarray] = []
    fg: list[np.ndarray] = []
    first_inputs = None
    for task, lm in (("cls", cls_lm), ("seg", seg_lm)):
        log(f"  ours {task}: {n_frames} frames, batch {batch}")
        for start in range(0, n_frames, batch):
            stop = min(start + batch, n_frames)
            t0 = time.perf_counter()
            x = preprocess_frames(sweep.frames[start:stop], device=device, dtype=dtype)
            sync(device)
            t_prep = time.perf_counter()
            # the device's rate at this moment, paired with the batch below; timed in neither span
            rate = probe.rate() if (probe is not None and stop - start == batch) else None
            t1 = time.perf_counter()
            pred = lm.predict(x)  # returns CPU tensors: synchronised
            t2 = time.perf_counter()
            if task == "cls":
                p_cls.append(pred.p_cls.numpy())
                if first_inputs is None:
                    first_inputs = x[:AGREEMENT_PREPROCESS_FRAMES].float().cpu()
            else:
                fg.append(seg_foreground(pred.seg_prob))
            prep_s[task] += t_prep - t0
            model_s[task] += t2 - t1
            if stop - start == batch:
                batch_s[task].append((t2 - t1) / batch)
                if rate is not None:
                    batch_rate[task].append(rate)
    per_frame = {t: (statistics.median(v) if v else model_s[t] / n_frames) for t, v in batch_s.items()}
    best = {t: (min(v) if v else model_s[t] / n_frames) for t, v in batch_s.items()}
    return {
        "frames": n_frames,
        "batch": batch,
        "precision": f"{dtype_name(dtype)} weights, LoRA merged, inference_mode",
        "preprocess_fps": 2 * n_frames / (prep_s["cls"] + prep_s["seg"]),
        "cls_fps": n_frames / model_s["cls"],
        "seg_fps": n_frames / model_s["seg"],
        "cls_s_per_frame_median": per_frame["cls"],
        "seg_s_per_frame_median": per_frame["seg"],
        "cls_s_per_frame_best": best["cls"],
        "seg_s_per_frame_best": best["seg"],
        "full_batches": {t: len(v) for t, v in batch_s.items()},
        "batch_s_per_frame": batch_s,
        "batch_matmul_flops": batch_rate,
        "_p_cls": np.concatenate(p_cls),
        "_fg": np.concatenate(fg),
        "_inputs": first_inputs,
    }


def run_engine(path: Path, cls_lm, seg_lm, batch: int, cache_root: Path, stop_after: int | None = None) -> dict:
    """Open the file and score it with :class:`ScoringEngine` (classifier + segmenter), timing
    from ``load_sweep`` to the first batch and to the end (all frames, or ``stop_after``)."""
    from fetaliqa_core.engine import ResultCache, ScoringEngine
    from fetaliqa_core.io import load_sweep

    t0 = time.perf_counter()
    sweep = load_sweep(path)
    opened = time.perf_counter() - t0
    engine = ScoringEngine(sweep, cls_lm, seg_lm, cache=ResultCache(cache_root), batch_size=batch)
    first = None
    first_n = 0
    n_done = 0
    from_cache = False
    for result in engine.iter_batches():
        if first is None:
            first = time.perf_counter() - t0
            first_n = len(result.indices)
            from_cache = result.from_cache
        n_done = result.n_done
        if stop_after is not None and n_done >= stop_after:
            engine.cancel()
    total = time.perf_counter() - t0
    return {"open_s": opened, "open_to_first_s": first, "first_batch_frames": first_n, "open_to_done_s": total,
            "frames_done": n_done, "complete": engine.results.complete, "first_from_cache": from_cache,
            "engine_seconds": dict(engine.timings), "_sweep": sweep, "_results": engine.results}


def run_reopen(path: Path, cls_lm, seg_lm, batch: int, cache_root: Path) -> dict:
    """Open the file again with a results cache already written: time to all cached results."""
    from fetaliqa_core.engine import ResultCache, ScoringEngine
    from fetaliqa_core.io import load_sweep

    t0 = time.perf_counter()
    sweep = load_sweep(path)
    engine = ScoringEngine(sweep, cls_lm, seg_lm, cache=ResultCache(cache_root), batch_size=batch)
    out = {"cache_hit": False, "seconds": None, "frames": 0}
    for result in engine.iter_batches():
        out.update(cache_hit=bool(result.from_cache), seconds=time.perf_counter() - t0, frames=int(result.n_done))
        engine.cancel()  # a partial cache would resume scoring: the cached part is what is timed
    out["complete"] = bool(engine.results.complete) if out["cache_hit"] else False
    return out


def agreement(seed: dict, ours: dict) -> dict:
    """Do the two paths compute the same function? Inputs in 8-bit grey levels; outputs as the
    largest classifier probability difference and the share of mask pixels that agree."""
    from fetaliqa_core.preprocess import OPENAI_STD

    n = min(len(seed["_inputs"]), len(ours["_inputs"]))
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1) * 255.0
    d = ((seed["_inputs"][:n].float() - ours["_inputs"][:n].float()) * std).abs()
    fg_s, fg_o = seed["_fg"], ours["_fg"]
    union = np.logical_or(fg_s, fg_o).sum()
    return {
        "preprocess_frames": n,
        "preprocess_max_abs_grey": float(d.max()),
        "preprocess_mean_abs_grey": float(d.mean()),
        "cls_max_abs_p": float(np.abs(seed["_p_cls"] - ours["_p_cls"]).max()),
        "seg_pixel_agreement": float((fg_s == fg_o).mean()),
        "seg_iou": float(np.logical_and(fg_s, fg_o).sum() / union) if union else 1.0,
    }


def preprocess_one(sweep, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    from fetaliqa_core.preprocess import preprocess_frames

    return preprocess_frames(np.asarray(sweep.frames[:1]), device=device, dtype=dtype)
