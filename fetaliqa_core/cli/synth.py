"""``fetaliqa synth``: write a synthetic dataset in the ACOUSLIC-AI layout."""

from __future__ import annotations

import argparse
import sys
import time

from fetaliqa_core.cli._args import job_count, non_negative_int, positive_int

HELP = "Write synthetic blind-sweep cases (images, masks, circumference CSV) in the ACOUSLIC-AI layout."


def _frame_size(text: str) -> int:
    value = positive_int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"{value} pixels is too small; use at least 32")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fetaliqa_core import synth

    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create")
    parser.add_argument("--cases", type=positive_int, default=1, metavar="N", help="number of cases (default 1)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--sweeps", type=positive_int, default=synth.DEFAULT_SWEEPS,
                        help=f"sweeps per case (default {synth.DEFAULT_SWEEPS}; first half transverse)")
    parser.add_argument("--frames-per-sweep", type=positive_int, default=synth.DEFAULT_FRAMES_PER_SWEEP,
                        help=f"frames per sweep (default {synth.DEFAULT_FRAMES_PER_SWEEP})")
    parser.add_argument("--height", type=_frame_size, default=synth.DEFAULT_HEIGHT,
                        help=f"frame height in pixels (default {synth.DEFAULT_HEIGHT})")
    parser.add_argument("--width", type=_frame_size, default=synth.DEFAULT_WIDTH,
                        help=f"frame width in pixels (default {synth.DEFAULT_WIDTH})")
    parser.add_argument("--no-compress", action="store_true",
                        help="write image volumes uncompressed (open instantly, 2-3x larger); masks "
                             "are always compressed")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset synth wrote into --out before (its cases go; a dataset synth did not write is never touched)")
    parser.add_argument("--fan-variety", action="store_true",
                        help="put half of the cases on other curved-array fans than ACOUSLIC-AI's (opening, "
                             "probe-face radius, depth), so that models do not learn one fan's outline")
    parser.add_argument("--jobs", type=job_count, default=1, metavar="N",
                        help="cases made in parallel (worker processes, ~1.5 GB memory each at full size; "
                             "the output does not depend on it)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    from fetaliqa_core import synth

    start = time.perf_counter()

    def progress(done: int, total: int, case: synth.CaseSummary) -> None:
        if args.quiet:
            return
        print(f"[{done}/{total}] {case.uuid}  {case.kind}  {time.perf_counter() - start:.1f} s", file=sys.stderr)

    uuids = synth.write_dataset(args.out, cases=args.cases, seed=args.seed, n_sweeps=args.sweeps,
                                frames_per_sweep=args.frames_per_sweep, height=args.height,
                                width=args.width, compress=not args.no_compress, overwrite=args.overwrite,
                                jobs=args.jobs, progress=progress, fan_variety=args.fan_variety)
    if not args.quiet:
        print(f"wrote {len(uuids)} case{'' if len(uuids) == 1 else 's'} to {args.out}")
    return 0
