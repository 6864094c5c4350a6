"""Pretrain a small FetalCLIP-family base: full-parameter training of its vision tower.

The demo needs a base whose features mean something: LoRA adapters on a randomly initialised
tower have nothing to adapt. This trains every weight of the tower (e.g. the ``tiny`` config) on
frames of an ACOUSLIC-layout dataset with two dense, cheap objectives, then keeps the tower only:

- frame level: ``Linear(embed_dim, 1)`` on the pooled embedding, BCE against "mask non-empty";
- patch level: ``LayerNorm + Linear(width, 3)`` on the last block's patch tokens, soft
  cross-entropy against the share of background / optimal / suboptimal pixels in each 14 x 14
  patch (the mask padded and resized as the model sees the frame).

Both heads are discarded. The tower is written in FetalCLIP's format (the full CLIP state dict,
``torch.save`` of tensors only, so ``torch.load(weights_only=True)`` reads it; the text tower is
a seeded random one, which the product never runs). It is **not** FetalCLIP: it has seen only the
training data given here (for the demo: synthetic sweeps).

    python -m training.pretrain_base --data DIR --out DIR --base-config tiny [--epochs 4 ...]

Writes ``OUT/base_weights.pt``, ``OUT/base_weights.json`` (provenance and metrics),
``OUT/metrics.json`` and ``OUT/curves.png``; prints ``BASE <path>`` last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fetaliqa_core.cli._args import (
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
    thread_count,
)
from fetaliqa_core.errors import FetalIQAError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder in the ACOUSLIC-AI layout")
    p.add_argument("--out", required=True, help="output folder (created; must be empty)")
    p.add_argument("--base-config", default="tiny", help="architecture to pretrain (default tiny)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random initial tower")
    p.add_argument("--init-weights", default=None,
                   help="start from this base weights file (FetalCLIP format) instead of a random tower, "
                        "e.g. to continue an earlier pretraining on other frames")
    p.add_argument("--epochs", type=positive_int, default=4)
    p.add_argument("--lr", type=positive_number, default=5e-4)
    p.add_argument("--weight-decay", type=non_negative_number, default=0.05)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--split-seed", type=non_negative_int, default=None, help="case split seed (default: training's)")
    p.add_argument("--all-sweeps", action="store_true", help="use every sweep, not only those with an AC value")
    p.add_argument("--neg-ratio", type=float, default=1.0,
                   help="per epoch: every positive frame and this many negatives per positive (default 1)")
    p.add_argument("--patch-weight", type=float, default=1.0, help="weight of the patch-level loss")
    p.add_argument("--patch-fg-weight", type=float, default=4.0,
                   help="weight of the optimal/suboptimal shares in the patch loss (abdomen patches are rare)")
    p.add_argument("--val-frames", type=int, default=256,
                   help="validate on every positive and enough negatives to make this many frames (0: all)")
    p.add_argument("--max-steps", type=int, default=None, help="at most this many steps per epoch")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads (1 is fastest on a busy CPU)")
    p.add_argument("--no-progress-bar", dest="progress_bar", action="store_false")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                   help="bf16 autocast: auto (CUDA; CPUs with bf16 matrix instructions where it pays), bf16, fp32")


def _model(config_name: str, init_seed: int, device, init_weights: str | None = None):
    import torch
    from torch import nn

    from fetaliqa_core.models.base import build_vision_tower
    from fetaliqa_core.models.lora import FetalCLIPEncoder

    visual, info = build_vision_tower(config_name, init_weights, device="cpu", seed=init_seed)
    encoder = FetalCLIPEncoder(visual, None)
    encoder.visual.requires_grad_(True)

    class Pretrain(nn.Module):
        """``(B, 3, 224, 224)`` -> ``((B,) frame logits, (B, L, 3) patch logits)``."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.frame_head = nn.Linear(encoder.embed_dim, 1)
            self.patch_head = nn.Sequential(nn.LayerNorm(encoder.width), nn.Linear(encoder.width, 3))

        def forward(self, x):
            pooled, tokens = self.encoder.features(x, (self.encoder.depth,), pooled=True)
            return self.frame_head(pooled)[:, 0], self.patch_head(tokens[0])

    torch.manual_seed(init_seed + 1)
    model = Pretrain().to(device)
    return model, info


def patch_targets(masks, patch: int):
    """``(B, S, S)`` uint8 labels -> ``(B, (S/patch)^2, 3)`` share of each label per patch."""
    import torch.nn.functional as F

    onehot = F.one_hot(masks.long().clamp(0, 2), 3).permute(0, 3, 1, 2).float()
    frac = F.avg_pool2d(onehot, patch)
    return frac.flatten(2).transpose(1, 2)


def _losses(model, batch, device, patch: int, patch_weight: float, fg_weight: float = 1.0, precision=None):
    import torch
    import torch.nn.functional as F

    from training.modelling import autocast_context, to_model_input

    x = to_model_input(batch["frame"], device)
    target = batch["target"].to(device)
    masks = batch["mask"].to(device)
    with autocast_context(device, precision):
        frame_logits, patch_logits = model(x)
    frame_loss = F.binary_cross_entropy_with_logits(frame_logits.float(), target)
    soft = patch_targets(masks, patch)
    weights = torch.tensor([1.0, fg_weight, fg_weight], device=soft.device)
    patch_loss = -(soft * weights * torch.log_softmax(patch_logits.float(), dim=-1)).sum(-1).mean()
    return frame_loss + patch_weight * patch_loss, frame_logits.detach(), patch_logits.detach(), soft


def _evaluate(model, dataset, args, device, patch: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from fetaliqa_core.analysis import binary_metrics
    from training.dataset import CaseChunkSampler, collate

    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=CaseChunkSampler(dataset.index, shuffle=False),
                        num_workers=0, collate_fn=collate)
    model.eval()
    loss_sum, n = 0.0, 0
    p_frame, truth, p_patch, t_patch = [], [], [], []
    with torch.no_grad():
        for batch in loader:
            loss, fl, pl, soft = _losses(model, batch, device, patch, args.patch_weight, args.patch_fg_weight,
                                         args.precision)
            b = int(fl.shape[0])
            loss_sum += float(loss) * b
            n += b
            p_frame.append(torch.sigmoid(fl.float()).cpu().numpy())
            truth.append(batch["target"].numpy() > 0.5)
            p_patch.append((torch.softmax(pl.float(), -1)[..., 0] < 0.5).cpu().numpy().reshape(-1))
            t_patch.append((soft[..., 0] < 0.5).cpu().numpy().reshape(-1))
    model.train()
    frame = binary_metrics(np.concatenate(truth), np.concatenate(p_frame) >= 0.5)
    patches = binary_metrics(np.concatenate(t_patch), np.concatenate(p_patch))
    return {"loss": loss_sum / max(n, 1), "frame_f1": frame.f1, "frame_accuracy": frame.accuracy,
            "patch_f1": patches.f1}


def pretrain(args: argparse.Namespace) -> Path:
    import torch

    from fetaliqa_core.models.base import load_base_config
    from training.augment import Augmenter
    from training.dataset import SPLIT_SEED, CaseChunkSampler, FrameDataset, subsample_index
    from training.plot import draw_curves
    from training.config import TrainConfig
    from training.data import EpochSampler, chunking, make_loader, prepare_splits
    from training.distributed import default_workers, init_distributed
    from training.modelling import export_base_weights
    from training.reporting import Reporter, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise FetalIQAError(f"--out {out} is not empty; choose a new folder")
    config = load_base_config(args.base_config)
    patch = int(config["vision_cfg"]["patch_size"])
    _, device = init_distributed(args.device)
    reporter = Reporter(True, args.progress_bar)
    cfg = TrainConfig(task="seg", data=str(Path(args.data).expanduser().resolve()), out=str(out),
                      base_config=args.base_config, split_seed=args.split_seed if args.split_seed is not None
                      else SPLIT_SEED, all_sweeps=args.all_sweeps, batch_size=args.batch_size)
    splits = prepare_splits(cfg, reporter)
    model, info = _model(args.base_config, args.init_seed, device, args.init_weights)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                            weight_decay=args.weight_decay)
    workers = args.workers if args.workers is not None else default_workers()
    train_ds = FrameDataset(splits.train, True, Augmenter(), seed=args.seed)
    val_ds = FrameDataset(subsample_index(splits.val, args.val_frames, args.seed), True, None, seed=args.seed)
    sampler = EpochSampler(CaseChunkSampler(splits.train, chunk_cases=chunking(splits.train, True, 4),
                                             seed=args.seed), args.neg_ratio, args.seed)
    loader = make_loader(train_ds, sampler, cfg, args.batch_size, workers, device)
    steps_total = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(steps_total * args.epochs, 1),
                                                pct_start=0.15)
    history, step_losses = [], []
    best = (float("inf"), None, 0)
    t_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        torch.manual_seed(args.seed * 100003 + epoch)
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        n_steps = steps_total
        bar = reporter.bar(n_steps, f"pretrain epoch {epoch}/{args.epochs}")
        t0 = time.perf_counter()
        losses = []
        for step, batch in enumerate(loader, start=1):
            if step > n_steps:
                break
            loss, *_ = _losses(model, batch, device, patch, args.patch_weight, args.patch_fg_weight,
                               args.precision)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
            if step % max(1, n_steps // 20) == 0 or step == n_steps:
                reporter.line("PROGRESS", trial="1/1", epoch=f"{epoch}/{args.epochs}", step=f"{step}/{n_steps}",
                              loss=float(np.mean(losses[-max(1, n_steps // 20):])),
                              frames_per_s=step * args.batch_size / max(time.perf_counter() - t0, 1e-9))
        reporter.close_bar()
        step_losses.extend(losses)
        val = _evaluate(model, val_ds, args, device, patch)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val": val,
                        "time_s": time.perf_counter() - t0})
        improved = val["loss"] < best[0]
        if improved:
            best = (val["loss"], {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
        reporter.line("VALIDATION", trial="1/1", epoch=f"{epoch}/{args.epochs}", val_loss=val["loss"],
                      f1=val["frame_f1"], patch_f1=val["patch_f1"], best=int(improved))
        draw_curves(out / "curves.png", step_losses, n_steps, [h["val"]["loss"] for h in history],
                    {"frame_f1": [h["val"]["frame_f1"] for h in history],
                     "patch_f1": [h["val"]["patch_f1"] for h in history]}, title="base pretraining")
    model.load_state_dict(best[1])
    weights = export_base_weights(model, args.base_config, out / "base_weights.pt")
    from fetaliqa_core.models.base import file_sha256

    start = (f"the tower in {args.init_weights} (sha256 {info.sha256})" if args.init_weights
             else f"a random initialisation (seed {args.init_seed})")
    previous = None
    if args.init_weights:
        sidecar = Path(args.init_weights).with_suffix(".json")
        if sidecar.is_file():
            previous = json.loads(sidecar.read_text(encoding="utf-8"))
    record = {
        "what": f"{args.base_config} FetalCLIP-family vision tower, every weight trained from {start} by "
                "training.pretrain_base; not FetalCLIP",
        "previous_stage": previous,
        "data": cfg.data, "split_seed": cfg.split_seed, "all_sweeps": args.all_sweeps, "epochs": args.epochs,
        "best_epoch": best[2], "lr": args.lr, "batch_size": args.batch_size, "neg_ratio": args.neg_ratio,
        "objectives": ["frame BCE on the pooled embedding", "patch label shares (soft CE) on the last block"],
        "val": history[best[2] - 1]["val"], "sha256": file_sha256(weights),
        "train_time_s": time.perf_counter() - t_start,
    }
    write_json(out / "base_weights.json", record)
    write_json(out / "metrics.json", {"history": history, **record})
    print(f"BASE {weights}", flush=True)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pretrain_base", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    from fetaliqa_core.cli import run_guarded

    # Ctrl-C / SIGTERM: one line and status 130, not a traceback
    return run_guarded(lambda: pretrain(args) and 0)


if __name__ == "__main__":
    sys.exit(main())
