"""Two checks that let a model's numbers be judged (the demo models' are in resources/README.md).

``overfit``: can the model learn at all? A handful of training frames (half with an abdomen),
no augmentation, the classifier of ``training.train`` (LoRA + head on the given base) trained on
them alone until it gets them right; prints the accuracy on those frames per step. A pipeline
that cannot reach ~100 % here has a bug, not too little data.

``reference``: how hard is the synthetic task? A small CNN built by name from timm with random
weights (e.g. ``resnet18``) trained as a frame classifier on the same training frames (same
split, balance and augmentation) for a wall-clock budget, then scored on the validation split
(its negatives thinned to ``--val-frames`` and weighted back). Run it beside a demo model's
training for the same time on the same machine.

    python -m training.sanity overfit --data DIR --base WEIGHTS --base-config tiny --frames 8
    python -m training.sanity reference --data DIR --model resnet18 --minutes 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _splits(data: str, all_sweeps: bool = True):
    from training.config import TrainConfig
    from training.data import prepare_splits
    from training.reporting import Reporter

    cfg = TrainConfig(task="cls", data=str(Path(data).expanduser().resolve()), out="-", all_sweeps=all_sweeps)
    return cfg, prepare_splits(cfg, Reporter(False, False))


def _subset(index, rows: np.ndarray):
    from training.dataset import FrameIndex

    return FrameIndex(index.cases, index.case_idx[rows], index.frame_idx[rows], index.sweep_idx[rows],
                      index.label[rows], index.target[rows].copy())


def _batches(dataset, order: np.ndarray, batch: int):
    from training.dataset import collate

    for i in range(0, len(order), batch):
        yield collate([dataset[int(j)] for j in order[i:i + batch]])


def overfit(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from training.config import TrainConfig
    from training.dataset import FrameDataset
    from training.modelling import autocast_context, build_model, model_outputs, to_model_input

    torch.set_num_threads(1)
    _, splits = _splits(args.data)
    idx = splits.train
    rng = np.random.default_rng(args.seed)
    half = args.frames // 2
    pos, neg = np.flatnonzero(idx.label > 0), np.flatnonzero(idx.label == 0)
    rows = np.sort(np.r_[rng.choice(pos, half, replace=False), rng.choice(neg, args.frames - half, replace=False)])
    ds = FrameDataset(_subset(idx, rows), with_masks=False)
    cfg = TrainConfig(task="cls", data=args.data, out="-", base=args.base, base_config=args.base_config,
                      lora_dropout=0.0)
    device = torch.device("cpu")
    model, _ = build_model(cfg, device, args.seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    batch = next(_batches(ds, np.arange(len(ds)), len(ds)))
    x, y = to_model_input(batch["frame"], device), batch["target"]
    history = []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train()
        with autocast_context(device, args.precision):
            logits, _ = model_outputs(model, x, "cls")
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad(), autocast_context(device, args.precision):
            acc = float(((model_outputs(model, x, "cls")[0].float() > 0) == (y > 0.5)).float().mean())
        history.append({"step": step, "loss": float(loss), "accuracy": acc})
        print(f"step {step}: loss {float(loss):.4f}, accuracy on the {len(ds)} frames {acc:.3f}", flush=True)
        if acc == 1.0 and float(loss) < 0.05:
            break
    return {"check": "overfit", "frames": len(ds), "steps": len(history), "final": history[-1],
            "seconds": time.perf_counter() - t0, "history": history}


def _reference_model(name: str, seed: int):
    """A timm model by name, or ``fetalclip:CONFIG`` (e.g. ``fetalclip:tiny``): the product's own
    vision tower from a random initialisation with a linear frame head, trained whole, so the
    architecture's learnability is measured in the same loop as the CNN's."""
    import torch
    from torch import nn

    if not name.startswith("fetalclip:"):
        import timm

        return timm.create_model(name, pretrained=False, num_classes=1)
    from fetaliqa_core.models.base import build_vision_tower

    visual, _ = build_vision_tower(name.split(":", 1)[1], None, seed=seed)
    visual.requires_grad_(True)
    visual.train()
    torch.manual_seed(seed + 1)
    return nn.Sequential(visual, nn.Linear(visual.output_dim, 1))


def reference(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from training.augment import Augmenter
    from training.dataset import FrameDataset, subsample_index
    from training.metrics import best_f1_threshold
    from training.modelling import autocast_context, to_model_input

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cfg, splits = _splits(args.data)
    device = torch.device("cpu")
    model = _reference_model(args.model, args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    train = FrameDataset(splits.train, with_masks=False, augment=Augmenter(), seed=args.seed)
    rng = np.random.default_rng(args.seed)
    pos, neg = np.flatnonzero(splits.train.label > 0), np.flatnonzero(splits.train.label == 0)
    deadline = time.perf_counter() + 60.0 * args.minutes
    steps, frames, epoch = 0, 0, 0
    model.train()
    while time.perf_counter() < deadline:
        epoch += 1
        train.set_epoch(epoch)
        order = rng.permutation(np.r_[pos, rng.choice(neg, min(neg.size, int(args.neg_ratio * pos.size)),
                                                      replace=False)])
        for b in _batches(train, order, args.batch_size):
            if time.perf_counter() >= deadline:
                break
            x = to_model_input(b["frame"], device)
            with autocast_context(device, args.precision):
                logits = model(x)[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits.float(), b["target"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            frames += int(b["target"].shape[0])
            if steps % 10 == 0:
                print(f"step {steps}: loss {float(loss):.4f} ({frames} frames)", flush=True)
    model.eval()
    val_index = subsample_index(splits.val, args.val_frames, cfg.split_seed)
    val = FrameDataset(val_index, with_masks=False)
    probs = []
    with torch.no_grad():
        for b in _batches(val, np.arange(len(val)), args.batch_size):
            with autocast_context(device, args.precision):
                probs.append(torch.sigmoid(model(to_model_input(b["frame"], device))[:, 0].float()).numpy())
    p = np.concatenate(probs)
    truth = val_index.label > 0
    w = int((splits.val.label == 0).sum()) / max(int((~truth).sum()), 1)
    t = best_f1_threshold(p, truth, neg_weight=w)
    call = p >= t
    tp, fp, fn = int((call & truth).sum()), float((call & ~truth).sum()) * w, int((~call & truth).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"check": "reference", "model": args.model, "params": int(sum(q.numel() for q in model.parameters())),
            "minutes": args.minutes, "steps": steps, "train_frames_seen": frames, "epochs_started": epoch,
            "val_frames": int(len(val)), "val_positive": int(truth.sum()), "threshold_best_f1": t,
            "val_f1_at_best_threshold": f1,
            "note": "F1 on the validation split at its own best threshold (negatives thinned and weighted back)"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="check", required=True)
    o = sub.add_parser("overfit", help="learn a handful of frames")
    o.add_argument("--frames", type=int, default=8)
    o.add_argument("--steps", type=int, default=60)
    o.add_argument("--lr", type=float, default=3e-3)
    o.add_argument("--base", default=None)
    o.add_argument("--base-config", default="tiny")
    r = sub.add_parser("reference", help="a small timm CNN from random weights on the same task")
    r.add_argument("--model", default="resnet18",
                   help="a timm model name, or fetalclip:CONFIG for the product's own tower from random weights")
    r.add_argument("--minutes", type=float, default=20.0)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--neg-ratio", type=float, default=2.0)
    r.add_argument("--val-frames", type=int, default=600)
    for q in (o, r):
        q.add_argument("--data", required=True)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None)
        q.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    result = overfit(args) if args.check == "overfit" else reference(args)
    text = json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
