"""How long showing a frame takes in the real window while inference runs.

One step = the model moves to another frame, then Qt handles what is pending, which paints
what changed (image, overlay, cursor line, labels) and applies any batch results that arrived
meanwhile, as in normal use. The budget is one display refresh (16 ms at 60 Hz).

``python -m app.bench_display [SWEEP] [--model demo | --cls B --seg B --base W] [--device D]``
or :func:`measure_display` from the benchmark.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BUDGET_MS = 16.0


@dataclass
class DisplayTiming:
    steps: int
    median_ms: float
    p95_ms: float
    max_ms: float
    frames_scored_during: int  # batches kept arriving while the frames were shown
    scoring_running: bool  # inference was still running at the end of the measurement
    within_budget: bool  # p95 under BUDGET_MS


def measure_display(sweep_path: str | Path, choice=None, steps: int = 300, warmup_s: float = 60.0,
                    models=None) -> DisplayTiming:
    """Open the window offscreen on a sweep, start scoring, then time ``steps`` frame changes.

    Waits for the first batch (at most ``warmup_s``) so that timing covers the display while
    results arrive, not model loading.
    """
    from app.cli import ensure_application
    from app.main_window import MainWindow
    from app.settings import AppSettings
    from fetaliqa_core.errors import FetalIQAError

    app = ensure_application(headless=True)
    win = MainWindow(settings=AppSettings(), choice=choice)
    win.interactive = False
    win.resize(1600, 1000)
    win.show()
    if models is not None:
        win.use_models(models)
    if not win.open_path(sweep_path, block=True):
        raise FetalIQAError(f"{sweep_path}: could not be opened for the display benchmark.")
    ended: list[str] = []
    win.scoring_ended.connect(lambda ok, msg: ended.append(msg))
    t_end = time.monotonic() + warmup_s
    while (win.model.results is None or win.model.results.n_done == 0) and not ended \
            and time.monotonic() < t_end:
        app.processEvents()
        time.sleep(0.005)
    n0 = win.model.results.n_done if win.model.results is not None else 0
    n = win.model.n_frames
    times = []
    for k in range(steps):
        t = time.perf_counter()
        win.model.set_frame((k * 7) % n)
        app.processEvents()  # paints the changes; applies batches that arrived
        times.append((time.perf_counter() - t) * 1000.0)
        time.sleep(0.004)  # leave the worker room, as a user scrubbing at ~60 Hz would
    n1 = win.model.results.n_done if win.model.results is not None else 0
    running = win.scoring.running
    win.close()
    arr = np.asarray(times)
    p95 = float(np.percentile(arr, 95))
    return DisplayTiming(steps=steps, median_ms=float(np.median(arr)), p95_ms=p95,
                         max_ms=float(arr.max()), frames_scored_during=int(n1 - n0),
                         scoring_running=bool(running), within_budget=p95 < BUDGET_MS)


def main(argv: list[str] | None = None) -> int:
    from fetaliqa_core import synth
    from fetaliqa_core.models.options import add_model_options, model_choice_from_args

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", nargs="?", help="sweep file (default: the demo sweep)")
    add_model_options(p)
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args(argv)
    sweep = args.sweep or synth.demo_sweep_path()
    timing = measure_display(sweep, model_choice_from_args(args), steps=args.steps)
    print(json.dumps(asdict(timing), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
