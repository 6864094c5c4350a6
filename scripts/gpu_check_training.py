"""GPU check of training: real-size ``cls`` training in bf16 on a random FetalCLIP-size base.

What it does (one NVIDIA H100/H200; about two minutes):

1. writes a small synthetic dataset at the real frame size (562 x 744, uncompressed, so frames are
   memory-mapped as with an unpacked ACOUSLIC-AI copy);
2. runs ``--steps`` optimiser steps (default 200) of the classifier exactly as ``training.train``
   does them (same dataset, on-the-fly augmentation, loader workers, GPU preprocessing from uint8,
   LoRA r=8 on a frozen ViT-L/14, bf16 autocast, AdamW, batch 32), timing the steps after a
   warm-up; then the same model on frames already on the GPU (the compute-only ceiling, so a
   data-loading bottleneck shows as the gap between the two);
3. runs ``training.train`` end to end for a few steps (``--e2e-steps``) and loads the bundle it
   wrote through the product path (``load_bundle`` on CUDA).

Reports steps/s, frames/s and peak GPU memory (``torch.cuda.max_memory_allocated``) as text and
JSON (``--out``, default ``$OUT/gpu_check_training.json`` when ``$OUT`` is set). Exit status 0
when every step finished with a finite loss and the end-to-end run produced a loadable bundle.

Usage::

    python scripts/gpu_check_training.py                                  # real size, CUDA
    python scripts/gpu_check_training.py --config tiny --device cpu --steps 3 --warmup 1 \\
        --batch-size 4 --workers 0 --cases 4 --frames-per-sweep 2 --e2e-steps 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="fetalclip", help="base config (fetalclip = real size)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10, help="steps not timed")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=min(8, max((os.cpu_count() or 2) - 2, 0)))
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--frames-per-sweep", type=int, default=12)
    p.add_argument("--height", type=int, default=562)
    p.add_argument("--width", type=int, default=744)
    p.add_argument("--e2e-steps", type=int, default=10, help="steps of the end-to-end training.train run")
    p.add_argument("--out", default=None, help="JSON result path")
    args = p.parse_args(argv)

    os.environ.setdefault("FETALIQA_HOME", tempfile.mkdtemp(prefix="fetaliqa-home-"))
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from fetaliqa_core.models.bundle import load_bundle
    from fetaliqa_core.synth import write_dataset
    from training.augment import Augmenter
    from training.dataset import FrameDataset, build_index, collate, read_cases
    from training.config import TrainConfig
    from training.losses import compute_loss
    from training.modelling import autocast_context, build_model, model_outputs, to_model_input
    from training.trials import train

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check_training: no CUDA device here", file=sys.stderr)
        return 1
    result: dict = {"config": args.config, "device": str(device), "batch_size": args.batch_size,
                    "steps": args.steps, "warmup": args.warmup, "workers": args.workers,
                    "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    ok = True
    work = Path(tempfile.mkdtemp(prefix="fetaliqa-gpu-train-"))
    data = work / "data"
    t = time.perf_counter()
    write_dataset(data, cases=args.cases, seed=0, frames_per_sweep=args.frames_per_sweep, height=args.height,
                  width=args.width, compress=False)
    result["synth_s"] = round(time.perf_counter() - t, 1)
    cases = read_cases(data)
    index = build_index(cases, all_sweeps=True)
    print(f"data: {len(cases)} cases, {len(index)} frames of {args.height}x{args.width} "
          f"({index.n_positive} positive), synthesised in {result['synth_s']} s", flush=True)

    # 1. timed steps, the training loop's own functions
    cfg = TrainConfig(task="cls", data=str(data), out=str(work / "unused"), base_config=args.config,
                      batch_size=args.batch_size)
    t = time.perf_counter()
    model, _ = build_model(cfg, device, seed=0)
    _sync(device)
    result["model_build_s"] = round(time.perf_counter() - t, 1)
    params = [q for q in model.parameters() if q.requires_grad]
    result["trainable_params"] = int(sum(q.numel() for q in params))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    dataset = FrameDataset(index, with_masks=False, augment=Augmenter(), seed=0)
    total = args.steps + args.warmup
    sampler = RandomSampler(dataset, replacement=True, num_samples=total * args.batch_size,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        collate_fn=collate, pin_memory=device.type == "cuda",
                        prefetch_factor=4 if args.workers else None, persistent_workers=args.workers > 0)
    model.train()
    losses: list[float] = []
    t_start = None
    last_batch = None
    for step, batch in enumerate(loader, start=1):
        if step == args.warmup + 1:
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t_start = time.perf_counter()
        x = to_model_input(batch["frame"], device)
        y = batch["target"].to(device, non_blocking=True)
        with autocast_context(device):
            cls_logits, _ = model_outputs(model, x, "cls")
        loss = compute_loss(cfg, cls_logits, None, y, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        last_batch = batch
        if step % 50 == 0:
            print(f"step {step}/{total} loss {np.mean(losses[-50:]):.4f}", flush=True)
    _sync(device)
    elapsed = time.perf_counter() - (t_start or time.perf_counter())
    timed = max(total - args.warmup, 0)
    result["loader_steps_per_s"] = round(timed / elapsed, 3) if elapsed > 0 and timed else None
    result["loader_frames_per_s"] = round(timed * args.batch_size / elapsed, 1) if elapsed > 0 and timed else None
    result["loader_peak_gpu_mb"] = _peak_mb(device)
    result["losses_finite"] = bool(np.all(np.isfinite(losses)))
    ok &= result["losses_finite"]

    # 2. compute only: the same steps on one batch already on the device
    x = to_model_input(last_batch["frame"], device)
    y = last_batch["target"].to(device)
    n_compute = max(min(args.steps, 50), 1)
    for i in range(n_compute + min(args.warmup, 5)):
        if i == min(args.warmup, 5):
            _sync(device)
            t0 = time.perf_counter()
        with autocast_context(device):
            cls_logits, _ = model_outputs(model, x, "cls")
        loss = compute_loss(cfg, cls_logits, None, y, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    dt = time.perf_counter() - t0
    result["compute_steps_per_s"] = round(n_compute / dt, 3)
    result["compute_frames_per_s"] = round(n_compute * args.batch_size / dt, 1)
    result["peak_gpu_mb"] = _peak_mb(device)
    del model, opt, loader
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 3. the whole training.train path for a few steps, then the product's loader
    try:
        summary = train(TrainConfig(task="cls", data=str(data), out=str(work / "run"), base_config=args.config,
                                    batch_size=args.batch_size, epochs=1, max_steps=args.e2e_steps,
                                    all_sweeps=True, device=args.device, workers=args.workers,
                                    progress_bar=False))
        loaded = load_bundle(summary["bundle"], device=args.device)
        result["e2e_bundle_ok"] = loaded.task == "cls"
        trial = summary["trials"][0]
        result["e2e_train_frames_per_s"] = trial.get("train_frames_per_s")
        result["e2e_peak_gpu_mb"] = trial.get("peak_gpu_memory_mb")
    except Exception as exc:  # noqa: BLE001 - report, do not hide the other numbers
        result["e2e_bundle_ok"] = False
        result["e2e_error"] = f"{type(exc).__name__}: {exc}"
    ok &= bool(result["e2e_bundle_ok"])
    result["ok"] = bool(ok)

    import shutil

    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    out = args.out or (os.path.join(os.environ["OUT"], "gpu_check_training.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
