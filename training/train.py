"""Train FetalIQA's frame-quality models (classifier, segmenter, or both in one) on ACOUSLIC-AI.

    python -m training.train --task cls --data ACOUSLIC --out runs/cls --base FetalCLIP_weights.pt
    fetaliqa train ...                                    (the same)
    torchrun --nproc_per_node 4 -m training.train ...     (one process per GPU, DDP)

Defaults are the paper's (FACTS.md §1): AdamW lr 3e-4, batch 32, 5 epochs, BCE for the classifier,
Dice loss for the segmenter, bf16 autocast on CUDA, best epoch by the lowest validation loss;
split by case 70/10/20 with a fixed seed, grouped by subject; only sweeps with a reference AC.

Run folder (``--out RUN``)::

    RUN/config.json            the settings (checked by --resume)
    RUN/split.json             the case split
    RUN/trial_<k>/checkpoints/epoch_<e>.pt, best.pt   (trainable tensors + optimiser state)
    RUN/trial_<k>/metrics.json, curves.png, bundle/
    RUN/metrics.json           all trials: test metrics, mean +- std
    RUN/bundle/                the bundle of the trial with the lowest validation loss
    RUN/base_weights.pt        only with --full-finetune: the trained tower in FetalCLIP's format

Machine-readable lines on stdout (for the app's Train dialog; one line each, ``key=value``)::

    PROGRESS trial=1/1 epoch=1/5 step=10/100 loss=0.4123 frames_per_s=85.2
    VALIDATION trial=1/1 epoch=1/5 val_loss=0.3012 f1=0.7120 best=1
    TEST trial=1/1 f1=0.7011 accuracy=0.9512 ...
    BUNDLE /abs/path/RUN/bundle

Human-readable progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError, UsageError, exit_code
from training.dataset import DEFAULT_CACHE_CASES, SPLIT_FRACTIONS, SPLIT_SEED

TASKS = ("cls", "seg", "joint")
SEG_LOSSES = ("dice", "dice_ce")
CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
# settings that must not change when a run is resumed (the rest, e.g. --epochs, may)
RESUME_KEYS = ("task", "data", "base", "base_config", "lr", "weight_decay", "batch_size", "seed",
               "split_seed", "all_sweeps", "seg_classes", "seg_loss", "init_filters", "extra_labels",
               "full_finetune", "lora_r", "lora_alpha", "lora_dropout", "neg_ratio", "augment", "max_steps",
               "val_frames", "threshold", "seg_prior")


# ------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``RUN/config.json``)."""

    task: str
    data: str
    out: str
    base: str | None = None  # FetalCLIP_weights.pt; None: random base of base_config
    base_config: str | None = None  # "fetalclip" (default with --base), "tiny", or a JSON path
    epochs: int = 5
    lr: float = 3e-4
    weight_decay: float = 0.01  # AdamW's default
    batch_size: int = 32
    trials: int = 1
    seed: int = 0
    split_seed: int = SPLIT_SEED
    all_sweeps: bool = False
    resume: bool = False
    device: str = "auto"
    workers: int | None = None  # None: min(8, CPUs - 1)
    threads: int | None = None  # torch CPU threads of the training process (None: torch's default)
    seg_classes: int = 1
    seg_loss: str = "dice"
    init_filters: int = 32
    extra_labels: str | None = None
    full_finetune: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    neg_ratio: float | None = None  # keep all positives and this many negatives per positive, per epoch
    max_steps: int | None = None  # cap on optimiser steps per epoch (quick runs, GPU check)
    val_frames: int | None = None  # validate on all positives + negatives up to this many frames
    threshold: str = "0.5"  # classifier operating point written into the bundle, or "auto"
    seg_prior: float | None = None  # initial P(abdomen) per pixel of the segmentation head (None: default init)
    test: bool = True  # evaluate the best epoch on the test split
    augment: bool = True
    cache_cases: int = DEFAULT_CACHE_CASES
    keep_checkpoints: int = 2  # per-epoch checkpoints kept (best.pt always kept)
    progress_bar: bool = True
    description: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.out)

    @property
    def config_name(self) -> str:
        return self.base_config or "fetalclip"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fetaliqa train`` / ``python -m training.train``."""
    p = parser
    p.add_argument("--task", choices=TASKS, required=True,
                   help="cls: classifier; seg: segmenter (quality call by mask area); joint: both heads on one encoder")
    p.add_argument("--data", required=True, help="dataset folder in the ACOUSLIC-AI layout (images/, masks/, circumferences/)")
    p.add_argument("--out", required=True, help="run folder (created; checkpoints, curves, metrics, the bundle)")
    p.add_argument("--base", default=None, help="FetalCLIP weights file (FetalCLIP_weights.pt); omit for a random base")
    p.add_argument("--base-config", default=None,
                   help="base architecture: fetalclip (default), tiny, or a config JSON path")
    p.add_argument("--epochs", type=int, default=5, help="epochs (paper: 5)")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (paper: 3e-4)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--batch-size", type=int, default=32, help="frames per step, over all processes (paper: 32)")
    p.add_argument("--trials", type=int, default=1, help="independent runs (seeds seed..seed+N-1); reports mean +- std")
    p.add_argument("--seed", type=int, default=0, help="training seed (initialisation, order, augmentation)")
    p.add_argument("--split-seed", type=int, default=SPLIT_SEED, help=f"seed of the case split (default {SPLIT_SEED})")
    p.add_argument("--all-sweeps", action="store_true", help="train on every sweep, not only those with an AC value")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default: min(8, CPUs-1))")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the model (default: PyTorch's; 1 is fastest on a busy, shared CPU)")
    p.add_argument("--seg-classes", type=int, choices=(1, 3), default=1,
                   help="segmenter head: 1 abdomen mask, 3 background/optimal/suboptimal")
    p.add_argument("--seg-loss", choices=SEG_LOSSES, default="dice", help="dice (paper) or dice_ce (Dice + cross-entropy)")
    p.add_argument("--init-filters", type=int, default=32, help="UNETR decoder width (paper: 32)")
    p.add_argument("--seg-prior", type=float, default=None,
                   help="start the segmentation head at this P(abdomen) per pixel (e.g. 0.03: most pixels "
                        "are background) instead of PyTorch's default initialisation")
    p.add_argument("--extra-labels", default=None,
                   help="CSV of frame labels (uuid, frame, label) that override the mask-derived "
                        "classification targets of training frames (e.g. reviewers' verdicts)")
    p.add_argument("--full-finetune", action="store_true",
                   help="train every weight of the vision tower instead of LoRA; also writes the trained "
                        "tower as a base weights file in FetalCLIP's format")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (paper: 8)")
    p.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (paper: 16)")
    p.add_argument("--lora-dropout", type=float, default=0.1, help="LoRA dropout (paper: 0.1)")
    p.add_argument("--neg-ratio", type=float, default=None,
                   help="class balance: per epoch keep every positive frame and this many negatives per "
                        "positive (default: all frames, as the paper)")
    p.add_argument("--max-steps", type=int, default=None, help="at most this many steps per epoch (quick runs)")
    p.add_argument("--val-frames", type=int, default=None,
                   help="validate on every positive frame and random negatives up to this many frames "
                        "(default: the whole validation split)")
    p.add_argument("--threshold", default="0.5",
                   help="classifier threshold written into the bundle (paper: 0.5), or 'auto': the one with the "
                        "best F1 on the whole validation split (use it with --neg-ratio, which shifts the "
                        "classifier's prior)")
    p.add_argument("--no-test", dest="test", action="store_false", help="skip the test-split evaluation")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no on-the-fly augmentation")
    p.add_argument("--cache-cases", type=int, default=DEFAULT_CACHE_CASES,
                   help="decoded compressed volumes kept per loader process")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="per-epoch checkpoints to keep")
    p.add_argument("--no-progress-bar", dest="progress_bar", action="store_false", help="no progress bar on stderr")
    p.add_argument("--description", default="", help="free text stored in the bundle's manifest")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in names}
    for key in ("data", "out", "base", "extra_labels"):
        if values.get(key) is not None:
            values[key] = str(Path(values[key]).expanduser().resolve())
    return TrainConfig(**values)


def validate_config(cfg: TrainConfig) -> None:
    if cfg.task not in TASKS:
        raise UsageError(f"--task {cfg.task!r} is not one of {', '.join(TASKS)}")
    for name, value, low in (("--epochs", cfg.epochs, 1), ("--batch-size", cfg.batch_size, 1),
                             ("--trials", cfg.trials, 1), ("--init-filters", cfg.init_filters, 1),
                             ("--cache-cases", cfg.cache_cases, 1), ("--lora-r", cfg.lora_r, 1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}; got {value}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UsageError(f"--lr must be a positive number; got {cfg.lr}")
    if cfg.threshold != "auto":
        try:
            value = float(cfg.threshold)
        except ValueError:
            value = float("nan")
        if not 0.0 < value < 1.0:
            raise UsageError(f"--threshold must be 'auto' or a number between 0 and 1; got {cfg.threshold!r}")
    if cfg.seg_prior is not None and not 0.0 < cfg.seg_prior < 1.0:
        raise UsageError(f"--seg-prior must be between 0 and 1; got {cfg.seg_prior}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1; got {cfg.max_steps}")
    if cfg.neg_ratio is not None and not cfg.neg_ratio >= 0:
        raise UsageError(f"--neg-ratio must be >= 0; got {cfg.neg_ratio}")
    if cfg.threads is not None and cfg.threads < 1:
        raise UsageError(f"--threads must be at least 1; got {cfg.threads}")
    if cfg.workers is not None and cfg.workers < 0:
        raise UsageError(f"--workers must be >= 0; got {cfg.workers}")
    if cfg.task == "cls" and cfg.seg_classes != 1:
        raise UsageError("--seg-classes applies to --task seg or joint only")
    if cfg.base is not None and not Path(cfg.base).is_file():
        raise FetalIQAError(f"--base {cfg.base}: no such file; give the path of FetalCLIP_weights.pt "
                            "(or omit --base and pass --base-config tiny for a small random base)")
    if cfg.base is None and cfg.base_config is None:
        raise UsageError("give --base FetalCLIP_weights.pt (the paper's model), or --base-config tiny|fetalclip "
                            "to train on a randomly initialised base")


# ------------------------------------------------------------------------------------------
# Processes and devices
# ------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str):
    """Set up DDP when launched by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on CPU.

    Returns ``(DistInfo, torch.device)``.
    """
    import torch

    from fetaliqa_core.models.device import select_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), select_device(device_pref).device
    import datetime

    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = str(device_pref).lower() not in ("cpu", "mps") and torch.cuda.is_available()
    if want_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(world, rank, local), device


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def _broadcast_object(info: DistInfo, obj):
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather_objects(info: DistInfo, obj) -> list:
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


class Reporter:
    """Progress for people (tqdm on stderr) and for programs (``PROGRESS`` lines on stdout)."""

    def __init__(self, enabled: bool, bar: bool) -> None:
        self.enabled = enabled
        self.bar_enabled = enabled and bar
        self._bar = None

    def line(self, kind: str, **fields) -> None:
        if not self.enabled:
            return
        parts = [kind]
        for k, v in fields.items():
            if isinstance(v, float):
                v = f"{v:.4g}" if math.isfinite(v) else "nan"
            parts.append(f"{k}={v}")
        text = " ".join(parts)
        if self._bar is not None:
            self._bar.clear()
        print(text, flush=True)
        if self._bar is not None:
            self._bar.refresh()

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str):
        if not self.bar_enabled:
            return None
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False, mininterval=0.5)
        return self._bar

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating,)):
        return _json_safe(float(obj))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ------------------------------------------------------------------------------------------
# Model, loss, metrics
# ------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, device, seed: int):
    """The model of ``cfg.task`` on its base, trainable parts initialised from ``seed``.

    Returns ``(model, BaseInfo)``; the model is on ``device`` in fp32 (autocast does bf16 on CUDA).
    """
    import torch

    from fetaliqa_core.models.base import build_vision_tower
    from fetaliqa_core.models.classifier import FetalCLIPClassifier
    from fetaliqa_core.models.joint import FetalCLIPJoint
    from fetaliqa_core.models.lora import LoraSettings
    from fetaliqa_core.models.segmenter import FetalCLIPSegmenter

    visual, base_info = build_vision_tower(cfg.config_name, cfg.base, device="cpu", dtype=torch.float32, seed=0)
    lora = None if cfg.full_finetune else LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    torch.manual_seed(seed)
    if cfg.task == "cls":
        model = FetalCLIPClassifier(visual, lora)
    elif cfg.task == "seg":
        model = FetalCLIPSegmenter(visual, lora, n_classes=cfg.seg_classes, init_filters=cfg.init_filters)
    else:
        model = FetalCLIPJoint(visual, lora, n_classes=cfg.seg_classes, init_filters=cfg.init_filters)
    if cfg.full_finetune:
        model.encoder.visual.requires_grad_(True)
    if cfg.seg_prior is not None and getattr(model, "seg", None) is not None:
        init_segmentation_prior(model.seg.decoder.out, cfg.seg_prior)
    return model.to(device), base_info


def init_segmentation_prior(out_conv, prior: float) -> None:
    """Set the bias of the decoder's last 1x1 convolution so that every pixel starts at
    P(abdomen) = ``prior`` (the rest background; for 3 classes split evenly between optimal and
    suboptimal). Weights are scaled down so the bias dominates at the start."""
    import math

    import torch

    with torch.no_grad():
        out_conv.weight.mul_(0.1)
        if out_conv.out_channels == 1:
            out_conv.bias.fill_(math.log(prior / (1.0 - prior)))
        else:
            fg = prior / (out_conv.out_channels - 1)
            out_conv.bias.copy_(torch.tensor([math.log(1.0 - prior)] + [math.log(fg)] * (out_conv.out_channels - 1)))


def frozen_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model) -> dict:
    """What a checkpoint stores: trainable parameters and buffers (the frozen base is not saved)."""
    frozen = frozen_names(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model, state: dict, source: str) -> None:
    import torch

    expected = set(trainable_state(model))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise FetalIQAError(f"{source} does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected "
                            "tensors): the run's settings changed; start a new --out")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)


def model_outputs(model, x, task: str):
    """``(cls_logits (B,) | None, seg_logits (B, C, 224, 224) | None)``."""
    out = model(x)
    if task == "cls":
        return out[:, 0], None
    if task == "seg":
        return None, out
    return out[0][:, 0], out[1]


def dice_loss(seg_logits, masks, n_classes: int, eps: float = 1e-5):
    """Soft Dice loss, per frame and class, averaged (MONAI's ``DiceLoss`` defaults).

    seg_logits ``(B, C, S, S)``; masks ``(B, S, S)`` uint8 labels 0/1/2. C=1: sigmoid vs
    abdomen (label > 0); C=3: softmax vs one-hot labels, background included.
    """
    import torch
    import torch.nn.functional as F

    logits = seg_logits.float()
    if n_classes == 1:
        prob = torch.sigmoid(logits)
        target = (masks > 0).float().unsqueeze(1)
    else:
        prob = torch.softmax(logits, dim=1)
        target = F.one_hot(masks.long().clamp_(0, n_classes - 1), n_classes).permute(0, 3, 1, 2).float()
    inter = (prob * target).sum(dim=(2, 3))
    denom = prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean()


def seg_ce_loss(seg_logits, masks, n_classes: int):
    import torch.nn.functional as F

    logits = seg_logits.float()
    if n_classes == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], (masks > 0).float())
    return F.cross_entropy(logits, masks.long().clamp(0, n_classes - 1))


def compute_loss(cfg: TrainConfig, cls_logits, seg_logits, targets, masks):
    """Loss of one batch: BCE-with-logits (classifier), Dice (segmenter); the sum for ``joint``."""
    import torch.nn.functional as F

    loss = 0.0
    if cls_logits is not None:
        loss = loss + F.binary_cross_entropy_with_logits(cls_logits.float(), targets)
    if seg_logits is not None:
        loss = loss + dice_loss(seg_logits, masks, cfg.seg_classes)
        if cfg.seg_loss == "dice_ce":
            loss = loss + seg_ce_loss(seg_logits, masks, cfg.seg_classes)
    return loss


def to_model_input(frames, device):
    """Loader frames (uint8 ``(B, H, W)`` tensor, or a list of ``(H, W)`` of mixed sizes) -> ``(B, 3, 224, 224)``."""
    import torch

    from fetaliqa_core.preprocess import preprocess_frames

    if isinstance(frames, list):
        return torch.cat([preprocess_frames(f, device=device) for f in frames])
    return preprocess_frames(frames, device=device)


def autocast_context(device):
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class FramePredictions:
    """Per-frame outputs on a split (arrays ``(M,)`` in index order)."""

    index: np.ndarray  # int64 item index
    p_cls: np.ndarray  # float32, NaN without a classifier
    seg_area: np.ndarray  # int64 foreground pixels at 224 (-1 without a segmenter)
    seg_call: np.ndarray  # bool, the paper's 1 % area rule
    dice: np.ndarray  # float64, foreground Dice at 224 (NaN where prediction and truth are empty)
    loss_sum: float
    n: int


def predict_index(model, dataset, task: str, cfg: TrainConfig, device, info: DistInfo, workers: int) -> FramePredictions:
    """Run the model over ``dataset`` (this process's share under DDP), gathered on every rank."""
    import torch
    from torch.utils.data import DataLoader

    from fetaliqa_core.analysis import dice_per_frame
    from fetaliqa_core.models.segmenter import mask_area, mask_quality_call, segmentation_probabilities
    from training.dataset import CaseChunkSampler, collate

    sampler = CaseChunkSampler(dataset.index, shuffle=False, num_replicas=info.world_size, rank=info.rank, pad=False)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda")
    parts: dict[str, list] = {"index": [], "p_cls": [], "seg_area": [], "seg_call": [], "dice": []}
    loss_sum, n = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x = to_model_input(batch["frame"], device)
            targets = batch["target"].to(device)
            masks = batch["mask"].to(device) if "mask" in batch else None
            with autocast_context(device):
                cls_logits, seg_logits = model_outputs(model, x, task)
            b = int(targets.shape[0])
            loss_sum += float(compute_loss(cfg, cls_logits, seg_logits, targets, masks)) * b
            n += b
            parts["index"].append(batch["index"].numpy())
            if cls_logits is not None:
                parts["p_cls"].append(torch.sigmoid(cls_logits.float()).cpu().numpy())
            else:
                parts["p_cls"].append(np.full(b, np.nan, np.float32))
            if seg_logits is not None:
                prob = segmentation_probabilities(seg_logits)
                parts["seg_area"].append(mask_area(prob).cpu().numpy())
                parts["seg_call"].append(mask_quality_call(prob).cpu().numpy())
                if prob.shape[1] == 1:
                    fg = (prob[:, 0] > 0.5).cpu().numpy()
                else:
                    fg = (1.0 - prob[:, 0] > 0.5).cpu().numpy()
                parts["dice"].append(dice_per_frame(fg, (masks > 0).cpu().numpy()))
            else:
                parts["seg_area"].append(np.full(b, -1, np.int64))
                parts["seg_call"].append(np.zeros(b, bool))
                parts["dice"].append(np.full(b, np.nan))
    model.train(was_training)
    local = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
    local["loss_sum"], local["n"] = loss_sum, n
    gathered = _gather_objects(info, local)
    merged = {k: np.concatenate([g[k] for g in gathered]) for k in parts}
    order = np.argsort(merged["index"], kind="stable")
    return FramePredictions(
        index=merged["index"][order].astype(np.int64), p_cls=merged["p_cls"][order].astype(np.float32),
        seg_area=merged["seg_area"][order].astype(np.int64), seg_call=merged["seg_call"][order].astype(bool),
        dice=merged["dice"][order].astype(np.float64),
        loss_sum=float(sum(g["loss_sum"] for g in gathered)), n=int(sum(g["n"] for g in gathered)))


def frame_metrics(pred: FramePredictions, truth: np.ndarray, task: str, threshold: float = 0.5) -> dict:
    """Per-frame metrics: the classifier's (threshold on p) and/or the segmenter's (area rule, Dice).

    truth: ``(M,)`` bool, frame positive. Keys: ``loss``, ``accuracy f1 precision recall
    specificity`` (classifier; for ``seg`` the segmenter-as-classifier), ``seg_*`` (for ``joint``)
    and ``dice`` (mean over frames with an abdomen in the truth or the prediction).
    """
    from fetaliqa_core.analysis import binary_metrics

    out: dict = {"loss": pred.loss_sum / max(pred.n, 1), "n_frames": int(pred.n), "n_positive": int(truth.sum())}
    keys = ("accuracy", "f1", "precision", "recall", "specificity")
    if task in ("cls", "joint"):
        m = binary_metrics(truth, pred.p_cls >= threshold)
        out.update({k: getattr(m, k) for k in keys})
    if task in ("seg", "joint"):
        m = binary_metrics(truth, pred.seg_call)
        prefix = "seg_" if task == "joint" else ""
        out.update({prefix + k: getattr(m, k) for k in keys})
        finite = pred.dice[np.isfinite(pred.dice)]
        out["dice"] = float(finite.mean()) if finite.size else float("nan")
        pos = pred.dice[truth & np.isfinite(pred.dice)]
        out["dice_positive"] = float(pos.mean()) if pos.size else float("nan")
    return out


def best_f1_threshold(p: np.ndarray, truth: np.ndarray) -> float:
    """The threshold in [0.05, 0.95] (steps of 0.01) with the highest F1 of ``p >= t`` against
    ``truth``; ties go to the threshold closest to 0.5."""
    from fetaliqa_core.analysis import binary_metrics

    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scores = np.array([binary_metrics(truth, p >= t).f1 for t in grid])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


def _epoch_ckpt(trial_dir: Path, epoch: int) -> Path:
    return trial_dir / CHECKPOINT_DIR / f"epoch_{epoch:03d}.pt"


def latest_checkpoint(trial_dir: Path) -> Path | None:
    folder = trial_dir / CHECKPOINT_DIR
    found = sorted(folder.glob("epoch_*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def save_checkpoint(path: Path, model, optimizer, epoch: int, history: list, best: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"epoch": epoch, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                "history": json.dumps(_json_safe(history)), "best": json.dumps(_json_safe(best))}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        ckpt["history"] = json.loads(ckpt["history"])
        ckpt["best"] = json.loads(ckpt["best"])
        return ckpt
    except Exception as exc:  # noqa: BLE001 - any damage: one clear message
        raise FetalIQAError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it to resume "
                            "from the epoch before") from None


def _prune_checkpoints(trial_dir: Path, keep: int) -> None:
    folder = trial_dir / CHECKPOINT_DIR
    found = sorted(folder.glob("epoch_*.pt"))
    for old in found[: max(0, len(found) - max(keep, 1))]:
        old.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


@dataclass
class Splits:
    train: object
    val: object
    test: object
    split_record: dict = field(default_factory=dict)


def prepare_splits(cfg: TrainConfig, reporter: Reporter) -> Splits:
    from fetaliqa_core import paths
    from training.dataset import apply_extra_labels, build_index, read_cases, read_extra_labels, split_cases

    cases = read_cases(cfg.data)
    split = split_cases(cases, seed=cfg.split_seed)
    cache = paths.cache_dir() / "training_index"
    idx = {name: build_index(split[name], all_sweeps=cfg.all_sweeps, cache_dir=cache) for name in split}
    if not len(idx["train"]):
        raise FetalIQAError(f"--data {cfg.data}: the training split has no frame (no sweep with an AC value); "
                            "add cases or pass --all-sweeps")
    if not len(idx["val"]):
        raise FetalIQAError(f"--data {cfg.data}: the validation split is empty ({len(cases)} cases in "
                            f"{len({c.subject_id for c in cases})} subjects); the 70/10/20 split needs at least 3 "
                            "subjects with frames")
    if cfg.extra_labels:
        changed = apply_extra_labels(idx["train"], read_extra_labels(cfg.extra_labels))
        reporter.message(f"extra labels: {changed} training frame(s) relabelled from {cfg.extra_labels}")
    record = {"seed": cfg.split_seed, "fractions": list(SPLIT_FRACTIONS), "all_sweeps": cfg.all_sweeps}
    for name in split:
        record[name] = {"cases": [c.uuid for c in split[name]],
                        "subjects": sorted({c.subject_id for c in split[name]}),
                        "frames": len(idx[name]), "positive_frames": idx[name].n_positive}
    for name in ("train", "val", "test"):
        reporter.message(f"{name}: {idx[name].summary()}")
    return Splits(idx["train"], idx["val"], idx["test"], record)


def _check_resume(cfg: TrainConfig) -> None:
    run = cfg.run_dir
    saved_path = run / CONFIG_FILE
    if not cfg.resume:
        if run.exists() and any(run.iterdir()):
            raise FetalIQAError(f"--out {run} already holds a run; pass --resume to continue it or choose an empty folder")
        return
    if not saved_path.is_file():
        raise FetalIQAError(f"--resume: {run} holds no run to resume ({CONFIG_FILE} missing); drop --resume to start one")
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    now = cfg.to_json()
    changed = [k for k in RESUME_KEYS if saved.get(k) != now.get(k)]
    if changed:
        k = changed[0]
        raise FetalIQAError(f"--resume: the run in {run} was started with {k}={saved.get(k)!r}, now {now.get(k)!r}; "
                            "resume with the same settings (only --epochs, --trials, --device, --workers may change)")


def train(cfg: TrainConfig) -> dict:
    """Train ``cfg.trials`` models and export the best as a bundle. Returns the run summary
    (also written to ``RUN/metrics.json``); its ``"bundle"`` is the bundle's path."""
    validate_config(cfg)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    info, device = init_distributed(cfg.device)
    reporter = Reporter(info.is_main, cfg.progress_bar)
    try:
        problem = None
        if info.is_main:
            try:
                _check_resume(cfg)
            except FetalIQAError as exc:
                problem = str(exc)
        problem = _broadcast_object(info, problem)  # every rank stops, none waits for the others
        if problem:
            raise FetalIQAError(problem)
        run = cfg.run_dir
        splits = prepare_splits(cfg, reporter)
        if info.is_main:
            run.mkdir(parents=True, exist_ok=True)
            _write_json(run / CONFIG_FILE, cfg.to_json())
            _write_json(run / "split.json", splits.split_record)
        reporter.message(f"device: {device}" + (f" x {info.world_size} processes" if info.enabled else ""))
        results = []
        for trial in range(1, cfg.trials + 1):
            results.append(run_trial(cfg, trial, splits, info, device, reporter))
        summary = summarise_trials(cfg, results)
        if info.is_main:
            best = min(results, key=lambda r: r["best_val_loss"])
            final = run / "bundle"
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(best["bundle"], final)
            summary["bundle"] = str(final)
            summary["best_trial"] = best["trial"]
            if cfg.full_finetune:
                shutil.copy2(best["base_weights"], run / "base_weights.pt")
                summary["base_weights"] = str(run / "base_weights.pt")
            _write_json(run / "metrics.json", summary)
            for key, stats in summary.get("test_summary", {}).items():
                if key in ("n_frames", "n_positive"):
                    continue
                reporter.line("SUMMARY", metric=key, mean=stats["mean"], std=stats["std"], n=stats["n"])
            print(f"BUNDLE {final}", flush=True)
        _barrier(info)
        return summary
    finally:
        reporter.close_bar()
        if info.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def summarise_trials(cfg: TrainConfig, results: list[dict]) -> dict:
    summary: dict = {"task": cfg.task, "trials": results}
    tests = [r["test"] for r in results if r.get("test")]
    if tests:
        stats = {}
        for key in tests[0]:
            vals = np.array([t[key] for t in tests if isinstance(t.get(key), (int, float))], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                stats[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=0)), "n": int(vals.size)}
        summary["test_summary"] = stats
    return summary


def _make_loader(dataset, sampler, cfg: TrainConfig, per_rank_batch: int, workers: int, device):
    from torch.utils.data import DataLoader

    from training.dataset import collate

    return DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", drop_last=False,
                      persistent_workers=False, prefetch_factor=4 if workers > 0 else None)


def _chunking(index, with_masks: bool, cache_cases: int) -> int | None:
    """Shuffle chunk (cases) for compressed volumes; None (full shuffle) when all are memory-mapped."""
    from training.dataset import is_memory_mapped

    paths_ = [c.image_path for c in index.cases] + ([c.mask_path for c in index.cases] if with_masks else [])
    return None if all(is_memory_mapped(p) for p in paths_) else cache_cases


def _balanced_subset(sampler_order: np.ndarray, index, neg_ratio: float | None, seed: int, epoch: int) -> np.ndarray:
    if neg_ratio is None:
        return sampler_order
    pos = index.target[sampler_order] > 0.5
    n_neg = int(round(neg_ratio * max(int(pos.sum()), 1)))
    rng = np.random.default_rng([seed, epoch, 11])
    neg_positions = np.flatnonzero(~pos)
    keep_neg = set(rng.choice(neg_positions, size=min(n_neg, neg_positions.size), replace=False).tolist())
    mask = pos | np.isin(np.arange(sampler_order.size), list(keep_neg))
    return sampler_order[mask]


class _EpochSampler:
    """:class:`CaseChunkSampler` with optional per-epoch negative subsampling (``--neg-ratio``)."""

    def __init__(self, base, neg_ratio: float | None, seed: int) -> None:
        self.base = base
        self.neg_ratio = neg_ratio
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def _mine(self) -> np.ndarray:
        b = self.base
        order = _balanced_subset(b.order(), b.index, self.neg_ratio, self.seed, b.epoch)
        if b.num_replicas == 1:
            return order
        total = int(math.ceil(len(order) / b.num_replicas)) * b.num_replicas
        if total > len(order) and len(order):
            order = np.concatenate([order, order[: total - len(order)]])
        return order[b.rank::b.num_replicas]

    def __iter__(self):
        return iter(self._mine().tolist())

    def __len__(self) -> int:
        return len(self._mine())


def run_trial(cfg: TrainConfig, trial: int, splits: Splits, info: DistInfo, device, reporter: Reporter) -> dict:
    """One training run (seed ``cfg.seed + trial - 1``); returns its result record."""
    import torch

    from fetaliqa_core.models.bundle import manifest_for, save_bundle
    from training.augment import Augmenter
    from training.dataset import CaseChunkSampler, FrameDataset, subsample_index
    from training.plot import draw_curves

    trial_dir = cfg.run_dir / f"trial_{trial}"
    done_file = trial_dir / "metrics.json"
    tag = f"{trial}/{cfg.trials}"
    if cfg.resume and done_file.is_file() and (trial_dir / "bundle" / "manifest.json").is_file():
        result = json.loads(done_file.read_text(encoding="utf-8"))
        if result.get("epochs_done", 0) >= cfg.epochs:
            reporter.message(f"trial {tag}: already finished, kept")
            return result
    seed = cfg.seed + trial - 1
    with_masks = cfg.task in ("seg", "joint")
    model, base_info = build_model(cfg, device, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = int(sum(p.numel() for p in params))
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    history: list[dict] = []
    best = {"val_loss": float("inf"), "epoch": 0}
    start_epoch = 1
    last = latest_checkpoint(trial_dir) if cfg.resume else None
    if last is not None:
        ckpt = load_checkpoint(last)
        load_trainable_state(model, ckpt["model"], str(last))
        optimizer.load_state_dict(ckpt["optimizer"])
        history, best = ckpt["history"], ckpt["best"]
        start_epoch = int(ckpt["epoch"]) + 1
        reporter.message(f"trial {tag}: resumed after epoch {ckpt['epoch']} from {last}")

    ddp_model = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # the segmenter skips the pooled head of the tower: with every weight trainable
        # (--full-finetune) those weights get no gradient
        unused = cfg.full_finetune and cfg.task == "seg"
        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=unused)

    workers = cfg.workers if cfg.workers is not None else default_workers()
    augment = Augmenter() if cfg.augment else None
    train_ds = FrameDataset(splits.train, with_masks, augment, seed=seed, cache_cases=cfg.cache_cases)
    val_index = subsample_index(splits.val, cfg.val_frames, cfg.split_seed)
    val_ds = FrameDataset(val_index, with_masks, None, seed=seed, cache_cases=cfg.cache_cases)
    chunk = _chunking(splits.train, with_masks, cfg.cache_cases)
    base_sampler = CaseChunkSampler(splits.train, chunk_cases=chunk, shuffle=True, seed=seed,
                                    num_replicas=info.world_size, rank=info.rank)
    sampler = _EpochSampler(base_sampler, cfg.neg_ratio, seed)
    per_rank_batch = max(1, cfg.batch_size // info.world_size)
    loader = _make_loader(train_ds, sampler, cfg, per_rank_batch, workers, device)
    val_truth = val_index.label > 0

    step_losses: list[float] = [x for h in history for x in h.get("step_losses", [])]
    steps_per_epoch = 0
    train_time = 0.0
    train_frames = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(start_epoch, cfg.epochs + 1):
        torch.manual_seed(seed * 100003 + epoch)  # dropout etc.: same stream whether resumed or not
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        n_steps = len(loader)
        if cfg.max_steps is not None:
            n_steps = min(n_steps, cfg.max_steps)
        steps_per_epoch = n_steps
        model.train()
        bar = reporter.bar(n_steps, f"trial {tag} epoch {epoch}/{cfg.epochs}")
        epoch_losses: list[float] = []
        log_every = max(1, n_steps // 50)
        window_loss, window_n = 0.0, 0
        t0 = time.perf_counter()
        frames_done = 0
        for step, batch in enumerate(loader, start=1):
            if step > n_steps:
                break
            x = to_model_input(batch["frame"], device)
            targets = batch["target"].to(device, non_blocking=True)
            masks = batch["mask"].to(device, non_blocking=True) if "mask" in batch else None
            with autocast_context(device):
                cls_logits, seg_logits = model_outputs(ddp_model, x, cfg.task)
            loss = compute_loss(cfg, cls_logits, seg_logits, targets, masks)
            finite = torch.isfinite(loss.detach()).float().reshape(1)
            if info.enabled:  # all ranks stop together
                import torch.distributed as dist

                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not bool(finite.item()):
                raise FetalIQAError(f"training diverged (loss {float(loss)}) at epoch {epoch}, step {step}; "
                                    "lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            epoch_losses.append(value)
            window_loss += value
            window_n += 1
            frames_done += int(targets.shape[0]) * info.world_size
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
            if step % log_every == 0 or step == n_steps:
                elapsed = time.perf_counter() - t0
                reporter.line("PROGRESS", trial=tag, epoch=f"{epoch}/{cfg.epochs}", step=f"{step}/{n_steps}",
                              loss=window_loss / max(window_n, 1), frames_per_s=frames_done / max(elapsed, 1e-9))
                window_loss, window_n = 0.0, 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        train_frames += frames_done
        reporter.close_bar()

        val_pred = predict_index(model, val_ds, cfg.task, cfg, device, info, workers)
        val = frame_metrics(val_pred, val_truth, cfg.task)
        improved = val["loss"] < best["val_loss"]
        record = {"epoch": epoch, "train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
                  "val": val, "time_s": epoch_time, "steps": len(epoch_losses), "step_losses": epoch_losses}
        history.append(record)
        step_losses.extend(epoch_losses)
        if improved:
            best = {"val_loss": val["loss"], "epoch": epoch}
        main_metric = "f1" if "f1" in val else "dice"
        reporter.line("VALIDATION", trial=tag, epoch=f"{epoch}/{cfg.epochs}", train_loss=record["train_loss"],
                      val_loss=val["loss"], **{main_metric: val.get(main_metric, float("nan"))},
                      best=int(improved))
        if info.is_main:
            if improved:
                best_path = trial_dir / CHECKPOINT_DIR / "best.pt"
                save_checkpoint(best_path, model, optimizer, epoch, [], best)
            save_checkpoint(_epoch_ckpt(trial_dir, epoch), model, optimizer, epoch, history, best)
            _prune_checkpoints(trial_dir, cfg.keep_checkpoints)
            curves = {k: [h["val"].get(k, float("nan")) for h in history] for k in ("f1", "seg_f1", "dice")
                      if any(k in h["val"] for h in history)}
            draw_curves(trial_dir / "curves.png", step_losses, max(steps_per_epoch, 1),
                        [h["val"]["loss"] for h in history], curves,
                        title=f"{cfg.task} trial {tag}")
        _barrier(info)

    # best epoch -> test metrics and the bundle
    best_path = trial_dir / CHECKPOINT_DIR / "best.pt"
    if best["epoch"] and best_path.is_file():
        load_trainable_state(model, load_checkpoint(best_path)["model"], str(best_path))
    threshold = 0.5
    if cfg.task in ("cls", "joint"):
        if cfg.threshold == "auto":
            full_val = FrameDataset(splits.val, with_masks, None, seed=seed, cache_cases=cfg.cache_cases)
            pred = predict_index(model, full_val, cfg.task, cfg, device, info, workers)
            threshold = best_f1_threshold(pred.p_cls, splits.val.label > 0)
            reporter.message(f"trial {tag}: threshold {threshold:.3f} (best F1 on the validation split)")
        else:
            threshold = float(cfg.threshold)
    test = None
    if cfg.test and len(splits.test):
        test_ds = FrameDataset(splits.test, with_masks, None, seed=seed, cache_cases=cfg.cache_cases)
        test = frame_metrics(predict_index(model, test_ds, cfg.task, cfg, device, info, workers),
                             splits.test.label > 0, cfg.task, threshold)
        reporter.line("TEST", trial=tag, **{k: v for k, v in test.items() if isinstance(v, float)})

    peak_mb = None
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    result = {
        "trial": trial, "seed": seed, "epochs_done": cfg.epochs, "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"], "trainable_params": n_trainable, "threshold": threshold,
        "history": [{k: v for k, v in h.items() if k != "step_losses"} for h in history],
        "test": test,
        "train_time_s": train_time, "train_frames_per_s": train_frames / train_time if train_time else None,
        "steps_per_s": (steps_per_epoch * max(cfg.epochs - start_epoch + 1, 0)) / train_time if train_time else None,
        "peak_gpu_memory_mb": peak_mb, "device": str(device), "world_size": info.world_size,
    }
    if info.is_main:
        bundle_dir = trial_dir / "bundle"
        base_for_bundle = base_info
        if cfg.full_finetune:
            base_path = trial_dir / "base_weights.pt"
            export_base_weights(model, cfg.config_name, base_path)
            from fetaliqa_core.models.base import file_sha256

            base_for_bundle = replace(base_info, sha256=file_sha256(base_path), weights_path=str(base_path))
            result["base_weights"] = str(base_path)
        metrics = {"test": test, "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
                   "training": training_record(cfg, seed, splits)}
        description = cfg.description or _describe(cfg)
        manifest = manifest_for(model, base_for_bundle, threshold=threshold, metrics=_json_safe(metrics),
                                description=description)
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        save_bundle(model, bundle_dir, manifest)
        result["bundle"] = str(bundle_dir)
        _write_json(done_file, result)
    _barrier(info)
    result["bundle"] = str(trial_dir / "bundle")
    return result


def _describe(cfg: TrainConfig) -> str:
    what = {"cls": "classifier", "seg": "segmenter", "joint": "classifier + segmenter"}[cfg.task]
    how = "full fine-tuning of the vision tower" if cfg.full_finetune else f"LoRA r={cfg.lora_r}"
    base = Path(cfg.base).name if cfg.base else f"random {cfg.config_name} base"
    return f"{what} trained by training.train ({how}) on {Path(cfg.data).name} over {base}"


def training_record(cfg: TrainConfig, seed: int, splits: Splits) -> dict:
    """What went into a bundle (stored in its manifest's metrics)."""
    return {"data": cfg.data, "split_seed": cfg.split_seed, "all_sweeps": cfg.all_sweeps, "seed": seed,
            "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "seg_loss": cfg.seg_loss,
            "full_finetune": cfg.full_finetune, "augment": cfg.augment, "neg_ratio": cfg.neg_ratio,
            "max_steps": cfg.max_steps, "val_subsample": cfg.val_frames, "base": cfg.base,
            "train_frames": len(splits.train), "val_frames": len(splits.val), "test_frames": len(splits.test)}


def export_base_weights(model, config_name: str, path: Path) -> Path:
    """The model's (fully fine-tuned) vision tower as a full CLIP state dict in FetalCLIP's format:
    ``visual.*`` from the model, the text tower and ``logit_scale`` from a seeded random CLIP of the
    same config (the product never runs the text tower)."""
    from fetaliqa_core.models.base import random_clip_state_dict, save_base_weights

    state = random_clip_state_dict(config_name, seed=0)
    visual = model.encoder.visual.state_dict()
    for k, v in visual.items():
        key = f"visual.{k}"
        if key not in state:
            raise FetalIQAError(f"internal: vision tower key {k} has no place in the CLIP state dict")
        state[key] = v.detach().float().cpu()
    return save_base_weights(state, path)


# ------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    train(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except FetalIQAError as exc:
        print(f"fetaliqa: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("fetaliqa: interrupted (the last finished epoch's checkpoint is kept; --resume continues)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
