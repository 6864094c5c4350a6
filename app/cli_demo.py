"""``fetaliqa demo`` (= ``make demo``): the viewer on the demo sweep with the demo model.

With a display the window opens and scoring starts. Without one (no DISPLAY/WAYLAND_DISPLAY
on Linux, or QT_QPA_PLATFORM=offscreen) the same window is rendered offscreen until every
frame is scored; then the scores (``frames.csv``, ``summary.json``, as ``fetaliqa score``
writes them) and a screenshot are saved in a folder that is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fetaliqa_core.cli._args import positive_seconds

HELP = "Open the viewer on the demo sweep with the demo model (headless: write scores and a screenshot)."

OUTPUT_FOLDER = "demo-output"


def add_arguments(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: auto)")
    parser.add_argument("--out", type=Path, default=None,
                        help="headless output folder (default: <cache>/demo-output)")
    parser.add_argument("--headless", action="store_true",
                        help="render offscreen and write the outputs even when a display exists")
    parser.add_argument("--max-seconds", type=positive_seconds, default=None, metavar="N",
                        help="headless: stop scoring after N seconds and write what was scored")


def run(args) -> int:
    from app.cli import display_available, run_window, save_scores
    from fetaliqa_core import paths, synth
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.models.choice import ModelChoice

    headless = bool(args.headless or not display_available())
    print("preparing the demo sweep (synthesised once into the cache)…", flush=True)
    sweep_path = synth.demo_sweep_path()
    choice = ModelChoice(model="demo", device=args.device)
    if not headless:
        outcome = run_window(sweep_path, choice, headless=False)
        return outcome.code

    out_dir = Path(args.out) if args.out else paths.cache_dir() / OUTPUT_FOLDER
    out_dir.mkdir(parents=True, exist_ok=True)
    shot = out_dir / "screenshot.png"
    print(f"no display: scoring {sweep_path.name} offscreen…", flush=True)
    outcome = run_window(sweep_path, choice, screenshot=shot, exit_when_scored=True,
                         max_seconds=args.max_seconds, headless=True, keep_window=True)
    try:
        written = save_scores(outcome.window, out_dir)
    finally:
        outcome.window = None
    if not written:
        raise FetalIQAError(f"The demo could not score the sweep: {outcome.message}")
    if outcome.screenshot is not None:
        written.append(outcome.screenshot)
    print(f"demo output: {out_dir}")
    for p in written:
        print(f"  {p.name}")
    if not outcome.complete:
        print(f"fetaliqa: scoring did not complete ({outcome.message}); the files hold what was scored",
              file=sys.stderr)
        return 1
    return 0
