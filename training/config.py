"""The settings of a training run: :class:`TrainConfig`, its command-line options and its checks."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from fetaliqa_core.cli._args import non_negative_int, non_negative_number, thread_count
from fetaliqa_core.errors import FetalIQAError, UsageError
from fetaliqa_core.models.tasks import TASKS
from training.dataset import DEFAULT_CACHE_CASES, REFERENCE_SPLIT_SEED, SPLIT_SEED

SEG_LOSSES = ("dice", "dice_ce", "batch_dice", "batch_dice_ce")
CONFIG_FILE = "config.json"
# settings that must not change when a run is resumed (the rest, e.g. --epochs, may)
RESUME_KEYS = ("task", "data", "base", "base_config", "lr", "weight_decay", "batch_size", "seed",
               "split_seed", "all_sweeps", "seg_classes", "seg_loss", "init_filters", "extra_labels",
               "full_finetune", "lora_r", "lora_alpha", "lora_dropout", "neg_ratio", "augment", "max_steps",
               "val_frames", "threshold", "seg_prior", "preset", "lora_targets", "split_method", "offline_copies",
               "augment_recipe", "pre_resize", "decoder_block")

#: Training recipes. ``paper``: the paper's (arXiv 2507.22802) wherever the paper or its reference
#: code is exact - LoRA on the MLP projections only (the reference's attention adapter never ran:
#: 1.97 M trainable parameters on ViT-L/14), the reference's decoder (its UNETR layout, every
#: convolution depthwise-separable with BatchNorm: 1.59 M parameters, 2.3 GMAC at 224 for ViT-L/14
#: and 32 filters), the smp-style Dice over the batch, frames padded and
#: pre-resized with OpenCV's bicubic (no antialiasing), two offline augmented copies per frame
#: (jitter p=0.5, CLAHE p=0.5 clip 1-4, affine; at full size on the padded square, then the
#: pre-resize), a seeded permutation of the
#: cases as split (the reference's seed and truncated cut), AdamW 3e-4, batch 32, 5 epochs, 5
#: trials. ``fetaliqa`` (the default): the project's - LoRA on attention and MLP, Dice over the batch + cross-entropy (false positives on
#: frames without abdomen are punished), the models' own antialiased resize, on-the-fly
#: augmentation, a split grouped by subject, one trial.
PRESETS: dict[str, dict] = {
    "fetaliqa": {"lora_targets": None, "seg_loss": "batch_dice_ce", "split_method": "grouped", "offline_copies": 0,
                 "augment_recipe": "fetaliqa", "pre_resize": None, "decoder_block": "res", "epochs": 5, "trials": 1,
                 "lr": 3e-4, "batch_size": 32, "split_seed": SPLIT_SEED},
    "paper": {"lora_targets": ["mlp.c_fc", "mlp.c_proj"], "seg_loss": "batch_dice", "split_method": "permutation",
              "offline_copies": 2, "augment_recipe": "paper", "pre_resize": "cv2_cubic", "decoder_block": "sepconv_bn",
              "epochs": 5, "trials": 5, "lr": 3e-4, "batch_size": 32, "split_seed": REFERENCE_SPLIT_SEED},
}


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
    seg_loss: str = "batch_dice_ce"
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
    preset: str = "fetaliqa"  # see PRESETS; the fields below follow it unless given
    lora_targets: list | None = None  # None: every allowed target (attention and MLP)
    split_method: str = "grouped"  # grouped (by subject) | permutation (the reference's)
    offline_copies: int = 0  # augmented copies per frame per epoch (reference: 2); 0: on the fly
    augment_recipe: str = "fetaliqa"  # fetaliqa | paper (see training.augment)
    pre_resize: str | None = None  # None | cv2_cubic (the reference's OpenCV pre-resize)
    decoder_block: str = "res"  # res (the project's UNETR decoder) | sepconv_bn (the reference's decoder)
    # bf16 autocast: auto (CUDA; CPUs with bf16 matrix instructions), bf16, fp32; None: FETALIQA_PRECISION or auto
    precision: str | None = None

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
    p.add_argument("--task", choices=tuple(TASKS), required=True,
                   help="cls: classifier; seg: segmenter (quality call by mask area); joint: both heads on one encoder")
    p.add_argument("--data", required=True, help="dataset folder in the ACOUSLIC-AI layout (images/, masks/, circumferences/)")
    p.add_argument("--out", required=True, help="run folder (created; checkpoints, curves, metrics, the bundle)")
    p.add_argument("--base", default=None, help="FetalCLIP weights file (FetalCLIP_weights.pt); omit for a random base")
    p.add_argument("--base-config", default=None,
                   help="base architecture: fetalclip (default), tiny, or a config JSON path")
    p.add_argument("--preset", choices=sorted(PRESETS), default="fetaliqa",
                   help="training recipe: fetaliqa (the project's, default) or paper (the paper's and its reference "
                        "code's wherever they are exact: MLP-only LoRA, batch Dice, 2 offline augmented copies per "
                        "frame (CLAHE p=0.5; made at full size, then the OpenCV pre-resize), the reference's permutation "
                        "split and seed, 5 epochs, 5 trials, the best epoch by a validation loss whose Dice is one "
                        "over the whole validation split). One difference: the segmenter's encoder LoRA trains, "
                        "where the reference ran its encoder without gradients (only its decoder learnt). Options "
                        "given explicitly win")
    p.add_argument("--epochs", type=int, default=None, help="epochs (both presets: 5)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (both presets: 3e-4)")
    p.add_argument("--weight-decay", type=non_negative_number, default=0.01, help="AdamW weight decay (default 0.01)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="frames per step, over all processes (both presets: 32)")
    p.add_argument("--trials", type=int, default=None,
                   help="independent runs (seeds seed..seed+N-1); reports their test metrics' mean +- std in "
                        "RUN/metrics.json, and RUN/bundle is the one of lowest validation loss (fetaliqa: 1, paper: 5)")
    p.add_argument("--lora-targets", nargs="+", default=None, choices=("attn", "mlp.c_fc", "mlp.c_proj"),
                   help="modules of each block that carry LoRA (fetaliqa: all three, paper: mlp.c_fc mlp.c_proj)")
    p.add_argument("--decoder-block", choices=("res", "sepconv_bn"), default=None,
                   help="segmentation decoder: res (fetaliqa's UNETR, residual units) or the reference's depthwise-"
                        "separable UNETR with BatchNorm (paper; 1.59 M parameters on ViT-L/14)")
    p.add_argument("--split-method", choices=("grouped", "permutation"), default=None,
                   help="case split: grouped by subject (fetaliqa) or a seeded permutation of cases (paper)")
    p.add_argument("--offline-copies", type=int, default=None,
                   help="augmented copies of every frame per epoch, fixed across epochs (paper: 2); 0 augments "
                        "on the fly (fetaliqa)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="training seed (initialisation, order, augmentation)")
    p.add_argument("--split-seed", type=non_negative_int, default=None,
                   help=f"seed of the case split (fetaliqa: {SPLIT_SEED}; paper: {REFERENCE_SPLIT_SEED}, the reference "
                        "code's, which with its truncated 70/10/20 cut gives its split of the 300 ACOUSLIC-AI cases)")
    p.add_argument("--all-sweeps", action="store_true", help="train on every sweep, not only those with an AC value")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default: min(8, CPUs-1))")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="CPU threads for the model (default: PyTorch's; 1 is fastest on a busy, shared CPU)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=None,
                   help="bf16 autocast for training: auto (on CUDA, and on CPUs with bf16 matrix instructions "
                        "where it measurably pays), bf16 or fp32 (default auto; FETALIQA_PRECISION sets auto's "
                        "answer)")
    p.add_argument("--seg-classes", type=int, choices=(1, 3), default=1,
                   help="segmenter head: 1 abdomen mask, 3 background/optimal/suboptimal")
    p.add_argument("--seg-loss", choices=SEG_LOSSES, default=None,
                   help="segmentation loss: soft Dice per frame (dice) or over the batch (batch_dice, the reference "
                        "code's), each optionally + cross-entropy (_ce). Per-frame Dice gives a false positive on "
                        "a frame without abdomen almost no gradient; batch_dice_ce punishes it (fetaliqa: "
                        "batch_dice_ce, paper: batch_dice)")
    p.add_argument("--init-filters", type=int, default=32, help="UNETR decoder width (paper: 32)")
    p.add_argument("--seg-prior", type=float, default=None,
                   help="start the segmentation head at this P(abdomen) per pixel (e.g. 0.03: most pixels "
                        "are background) instead of PyTorch's default initialisation")
    p.add_argument("--extra-labels", default=None,
                   help="CSV of frame labels (uuid, frame, label, optionally content_hash) that override the "
                        "mask-derived classification targets of training frames (e.g. `fetaliqa review labels`); "
                        "a label given on other pixels than the case's file, or a frame whose labels disagree, "
                        "relabels nothing")
    p.add_argument("--full-finetune", action="store_true",
                   help="train every weight of the vision tower instead of LoRA; also writes the trained "
                        "tower as a base weights file in FetalCLIP's format")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (paper: 8)")
    p.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha (paper: 16)")
    p.add_argument("--lora-dropout", type=float, default=0.1, help="LoRA dropout (paper: 0.1)")
    p.add_argument("--neg-ratio", type=float, default=None,
                   help="class balance: per epoch keep every positive frame and this many negatives per "
                        "positive (default: all frames, as the paper)")
    p.add_argument("--max-steps", type=int, default=None, help="at most this many optimiser steps per pass over the training frames (quick runs); "
                        "an epoch with offline augmented copies (--preset paper: 2) makes one pass per copy "
                        "and one without, so up to 3x this many")
    p.add_argument("--val-frames", type=int, default=None,
                   help="validate on every positive frame and random negatives up to this many frames "
                        "(default: the whole validation split)")
    p.add_argument("--threshold", default="0.5",
                   help="classifier threshold written into the bundle (paper: 0.5), or 'auto': the one with the "
                        "best F1 on the whole validation split (use it with --neg-ratio, which shifts the "
                        "classifier's prior)")
    p.add_argument("--no-test", dest="test", action="store_false", help="skip the test-split evaluation")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no augmentation: neither on the fly nor offline augmented copies "
                        "(--preset paper then trains one pass an epoch, on the frames as they are)")
    p.add_argument("--cache-cases", type=int, default=DEFAULT_CACHE_CASES,
                   help="decoded compressed volumes kept per loader process")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="per-epoch checkpoints to keep")
    p.add_argument("--no-progress-bar", dest="progress_bar", action="store_false", help="no progress bar on stderr")
    p.add_argument("--description", default="", help="free text stored in the bundle's manifest")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in names}
    copies_given = values.get("offline_copies") is not None
    for key, value in PRESETS[values.get("preset") or "fetaliqa"].items():
        if values.get(key) is None:
            values[key] = value
    if values.get("augment") is False and not copies_given:
        # --no-augment: no augmented copies either (the paper preset's 2 copies were trained as 3
        # identical unaugmented passes an epoch); config.json and the manifest record 0
        values["offline_copies"] = 0
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
    # upper bounds: a value past them only fills the disk or memory before it fails
    from fetaliqa_core.validate import INIT_FILTERS_RANGE

    for name, value, high in (("--trials", cfg.trials, 100), ("--init-filters", cfg.init_filters, INIT_FILTERS_RANGE[1]),
                              ("--offline-copies", cfg.offline_copies, 100)):
        if value is not None and value > high:
            raise UsageError(f"{name} must be at most {high}; got {value}")
    for name, value in (("--keep-checkpoints", cfg.keep_checkpoints), ("--val-frames", cfg.val_frames),
                        ("--offline-copies", cfg.offline_copies)):
        if value is not None and value < 0:
            raise UsageError(f"{name} must be 0 or more; got {value}")
    if not cfg.augment and cfg.offline_copies:
        raise UsageError(f"--no-augment and --offline-copies {cfg.offline_copies} contradict each other: offline "
                         "copies are augmented copies; drop one of them")
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
    if not TASKS[cfg.task].has_seg and cfg.seg_classes != 1:
        raise UsageError("--seg-classes applies to --task seg or joint only")
    if cfg.base is not None and not Path(cfg.base).is_file():
        what = "is not a regular file (a folder, pipe or device)" if Path(cfg.base).exists() else "no such file"
        raise FetalIQAError(f"--base {cfg.base}: {what}; give the path of FetalCLIP_weights.pt "
                            "(or omit --base and pass --base-config tiny for a small random base)")
    if cfg.base is not None and cfg.base_config is None:
        # a small base of the tiny family (the demo's, one pretrained here) needs no --base-config:
        # the window's Train dialog has no such field, and training stopped on "pass --base-config tiny"
        from fetaliqa_core.models.base import config_of_weights

        found = config_of_weights(cfg.base)
        if found is not None and found != "fetalclip":
            cfg.base_config = found
            print(f"--base {cfg.base} holds the {found} architecture: trained with --base-config {found}",
                  file=sys.stderr)
    if cfg.base is None and cfg.base_config is None:
        raise UsageError("give --base FetalCLIP_weights.pt (the paper's model), or --base-config tiny|fetalclip "
                         "to train on a randomly initialised base")
