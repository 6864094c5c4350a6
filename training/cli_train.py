"""``fetaliqa train``: train a classifier, segmenter or joint model and export a bundle
(the same as ``python -m training.train``; see :mod:`training.train`)."""

from __future__ import annotations

import argparse

HELP = "Train a frame-quality model on an ACOUSLIC-layout dataset and export a model bundle."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.config import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    import sys

    from training.train import interrupted_text, run_from_args

    try:
        return run_from_args(args)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say what is kept, as python -m training.train does
        print(f"fetaliqa: {interrupted_text(getattr(args, 'out', None))}", file=sys.stderr)
        return 130
