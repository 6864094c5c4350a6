"""``fetaliqa train``: train a classifier, segmenter or joint model and export a bundle
(the same as ``python -m training.train``; see :mod:`training.train`)."""

from __future__ import annotations

import argparse

HELP = "Train a frame-quality model on an ACOUSLIC-layout dataset and export a model bundle."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from training.config import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from training.train import run_from_args

    return run_from_args(args)
