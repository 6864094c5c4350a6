"""Train FetalIQA's frame-quality models (classifier, segmenter, or both in one) on ACOUSLIC-AI.

    python -m training.train --task cls --data ACOUSLIC --out runs/cls --base FetalCLIP_weights.pt
    fetaliqa train ...                                    (the same)
    torchrun --nproc_per_node 4 -m training.train ...     (one process per GPU, DDP)

Defaults are the paper's (arXiv 2507.22802): AdamW lr 3e-4, batch 32, 5 epochs, BCE for the classifier,
Dice loss for the segmenter, bf16 autocast on CUDA, best epoch by the lowest validation loss (its
Dice taken once over the whole validation split, as the reference code's, so it does not depend on
--batch-size); split by case 70/10/20 with a fixed seed; only sweeps with a reference AC. The split
is grouped by subject (the project's: the paper's reference code permutes cases, --preset paper).

Run folder (``--out RUN``)::

    RUN/config.json            the settings (checked by --resume)
    RUN/split.json             the case split, the data's and the --extra-labels file's SHA-256 (checked by --resume)
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

Modules: :mod:`training.config` (settings), :mod:`training.data` (split, sampler, loaders),
:mod:`training.modelling`, :mod:`training.losses`, :mod:`training.metrics`, :mod:`training.loop`
(one trial), :mod:`training.checkpoints`, :mod:`training.trials` (the run), this module (CLI).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.config import add_arguments, config_from_args
from training.trials import train


#: What Ctrl-C or SIGTERM leaves of a run (``python -m training.train`` and ``fetaliqa train``).
INTERRUPTED = "interrupted (the last finished epoch's checkpoint is kept; --resume continues)"
INTERRUPTED_EARLY = ("interrupted before a first epoch finished: no checkpoint was kept (--resume starts the run "
                     "again at epoch 1)")


def interrupted_text(out) -> str:
    """What an interruption left of the run in ``out``: a finished epoch's checkpoint or none."""
    from training.checkpoints import CHECKPOINT_DIR

    try:
        kept = out is not None and any(Path(out).glob(f"**/{CHECKPOINT_DIR}/epoch_*.pt"))
    except OSError:
        kept = False
    return INTERRUPTED if kept else INTERRUPTED_EARLY


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    train(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    from fetaliqa_core.cli import run_guarded

    args = build_parser().parse_args(argv)
    # SIGTERM stops like Ctrl-C: the last finished epoch's checkpoint is kept.
    def body() -> int:
        try:
            return run_from_args(args)
        except KeyboardInterrupt:
            print(f"fetaliqa: {interrupted_text(getattr(args, 'out', None))}", file=sys.stderr)
            return 130

    return run_guarded(body, interrupted=INTERRUPTED)

if __name__ == "__main__":
    sys.exit(main())
