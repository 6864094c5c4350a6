"""``fetaliqa bench``: speed and memory of the product's path against the seed-style path and the
device's matrix-product limit (see ``fetaliqa_core.bench`` and docs/BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fetaliqa_core.cli._args import positive_int
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.options import add_model_options

HELP = "Measure scoring speed and memory against the seed-style pipeline and the hardware limit."


SECTIONS = ("preprocess", "precision", "rss", "student", "heldout")


def _sections(text: str) -> tuple[str, ...]:
    """argparse type for --sections: names from :data:`SECTIONS` (an unknown one gave an empty report)."""
    import argparse

    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'}: give one or more of {', '.join(SECTIONS)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, bundles=False, precision=False)
    parser.add_argument("--arch", default="fetalclip", choices=("fetalclip", "tiny"),
                        help="vision tower with random weights: fetalclip (ViT-L/14, default) or tiny")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="frames timed through each path (default 840; 16 for fetalclip on a CPU)")
    parser.add_argument("--case-frames", type=positive_int, default=None,
                        help="frames in the case file that is opened and scored (default: max(frames, 840)); "
                             "when larger than --frames the engine stops after --frames frames and the "
                             "complete-case times are extrapolated")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="our batch size (default: the device's, 128 on CUDA, 8 on a CPU, 4 on a CPU in fp32)")
    parser.add_argument("--gui-frames", type=positive_int, default=300,
                        help="frames shown when timing the frame display (default 300)")
    parser.add_argument("--matmul-size", type=positive_int, default=None, metavar="N",
                        help="side of the timed matrix product (default 8192 on CUDA, 2048 on a CPU)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the report as JSON here")
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed-style path")
    parser.add_argument("--skip-gui", action="store_true", help="do not time the frame display")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    g = parser.add_argument_group("CPU speed paths (--speed)")
    g.add_argument("--speed", action="store_true",
                   help="only the CPU speed paths, side by side: preprocessing, bf16 vs fp32 on the real "
                        "architecture, one base for two bundles (peak RSS), the student, student and cascade vs teacher")
    g.add_argument("--student", type=Path, default=None, metavar="BUNDLE", help="student bundle (default: the demo student)")
    g.add_argument("--sections", type=_sections, default="preprocess,precision,rss,student,heldout",
                   help="comma-separated subset of preprocess, precision, rss, student, heldout")
    g.add_argument("--real-frames", type=positive_int, default=4,
                   help="frames timed through the real architecture per precision (default 4)")
    g.add_argument("--heldout-cases", type=positive_int, default=10, help="held-out synthetic cases (default 10)")
    g.add_argument("--heldout-frames-per-sweep", type=positive_int, default=24,
                   help="frames per sweep of each held-out case (default 24; the student-vs-teacher and cascade "
                        "figures are replayed on them)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "speed", False):
        return _run_speed(args)
    from fetaliqa_core.bench import BenchSettings, format_report, run_bench, write_json

    settings = BenchSettings(device=args.device, arch=args.arch, frames=args.frames, case_frames=args.case_frames,
                             batch_size=args.batch_size, skip_seed=args.skip_seed, skip_gui=args.skip_gui,
                             gui_frames=args.gui_frames, matmul_size=args.matmul_size)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    report = run_bench(settings, log=log)
    print(format_report(report))
    if args.json is not None:
        write_json(report, args.json)
        print(f"report written to {args.json}")
    return 0


def _run_speed(args: argparse.Namespace) -> int:
    import json

    from fetaliqa_core.bench.speed import run_speed_bench

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    report = run_speed_bench(student_dir=args.student, real_frames=args.real_frames, heldout_cases=args.heldout_cases,
                             heldout_per_sweep=args.heldout_frames_per_sweep, log=log,
                             sections=args.sections)
    text = json.dumps(report, indent=1, default=float)
    print(text)
    from fetaliqa_core.bench.speed import target_lines

    for line in target_lines(report):
        log(line)
    if args.json is not None:
        from fetaliqa_core.files import atomic_write
        from fetaliqa_core.paths import os_error_cause

        try:
            atomic_write(args.json, text + "\n")  # (a link there is replaced, not written through)
        except OSError as exc:  # (named by the file asked for, not the temporary one beside it)
            raise FetalIQAError(f"{args.json}: the report cannot be written ({os_error_cause(exc)}); it is printed "
                                "above. Give --json a file in a folder you can write to.") from None
        print(f"report written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m fetaliqa_core.cli.bench``: the same command without the dispatcher, for machines
    that lack the app's dependencies (the GPU run in scripts/gpu_bench.sh)."""
    from fetaliqa_core.cli import run_command

    return run_command(sys.modules[__name__], argv, prog="fetaliqa bench")


if __name__ == "__main__":
    sys.exit(main())
