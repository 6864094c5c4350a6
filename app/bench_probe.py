"""The benchmark's display probe (registered in ``pyproject.toml`` under ``fetaliqa.bench_probes``):
how long the app takes to show a frame with its overlay while the engine scores, for the whole main
window (:func:`app.bench_display.measure_display`) and for the frame view widget alone."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

GUI_IDLE_FRAMES = 60
GUI_VIEW_SIZE = (1280, 900)  # the frame view's size in pixels while timing (about a laptop window)


def bench_probe(inp) -> dict:
    """``fetaliqa bench``'s display figures: ``{"window": ..., "frame_view": ...}`` for a
    :class:`fetaliqa_core.bench.settings.BenchProbeInput`."""
    inp.log("GUI: frame display")
    window = measure_window_display(inp.case_path, inp.cls_lm, inp.seg_lm, inp.cls_dir, inp.seg_dir, inp.home,
                                    inp.steps, inp.log)
    view = measure_frame_display(inp.sweep, inp.cls_lm, inp.seg_lm, inp.steps, inp.engine_batch, inp.log)
    return {"window": window, "frame_view": view}


def overlay_mask(frame: int, size: int = 224) -> np.ndarray:
    """A ``(size, size)`` uint8 label mask (an ellipse, label 1 or 2) that moves with ``frame``."""
    yy, xx = np.mgrid[0:size, 0:size]
    cx = size * (0.35 + 0.3 * ((frame * 7) % 97) / 97.0)
    cy = size * (0.45 + 0.1 * ((frame * 3) % 31) / 31.0)
    inside = ((xx - cx) / (size * 0.18)) ** 2 + ((yy - cy) / (size * 0.14)) ** 2 <= 1.0
    return (inside * (1 + frame % 2)).astype(np.uint8)


def measure_frame_display(sweep, cls_lm, seg_lm, n_show: int, engine_batch: int,
                          log: Callable[[str], None]) -> dict:
    """Milliseconds to show a frame with its overlay in the app's ``FrameView`` (offscreen when
    there is no display): ``set_frame`` + ``set_mask`` + one pass of the event loop, which paints
    the view once (frame and overlay; offscreen there is no flush to a screen), first
    with nothing else running, then while a :class:`ScoringEngine` scores the sweep in a worker
    thread, as in the app."""
    try:
        from PySide6 import QtWidgets as qtw

        from app import frame_view
    except ImportError as exc:
        return {"skipped": f"the app's frame view cannot be imported ({exc})"}
    from fetaliqa_core.engine import ScoringEngine

    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = qtw.QApplication.instance() or qtw.QApplication(["fetaliqa-bench"])
    view = frame_view.FrameView()
    view.resize(*GUI_VIEW_SIZE)
    view.show()
    app.processEvents()
    masks = [overlay_mask(i) for i in range(min(sweep.n_frames, 64))]

    def show(i: int) -> float:
        mask = masks[i % len(masks)].copy()  # a new array per frame, as results arrive
        t0 = time.perf_counter()
        view.set_frame(sweep.frames[i])
        view.set_mask(mask)
        app.processEvents()  # delivers the view's update: exactly one paint of frame + overlay
        return (time.perf_counter() - t0) * 1000.0

    def stats(ms: list[float]) -> dict:
        arr = np.asarray(ms)
        return {"n": len(ms), "median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)),
                "max_ms": float(arr.max())}

    for i in range(5):  # first paints create caches
        show(i % sweep.n_frames)
    idle = stats([show(i % sweep.n_frames) for i in range(min(GUI_IDLE_FRAMES, n_show))])

    stop = threading.Event()
    batches = [0]
    engines: list = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while not stop.is_set():
                engine = ScoringEngine(sweep, cls_lm, seg_lm, cache=False, batch_size=engine_batch)
                engines.append(engine)
                for _ in engine.iter_batches():
                    batches[0] += 1
                    if stop.is_set():
                        engine.cancel()
        except BaseException as exc:  # reported, never lost in the thread
            errors.append(exc)

    log(f"  frame display: {n_show} frames while the engine scores (batch {engine_batch})")
    worker = threading.Thread(target=work, name="fetaliqa-bench-engine", daemon=True)
    worker.start()
    time.sleep(0.2)
    busy_ms = []
    for k in range(n_show):
        busy_ms.append(show((k * 5) % sweep.n_frames))  # scrubbing in steps of 5 frames
    batches_during = batches[0]
    stop.set()
    for engine in list(engines):
        engine.cancel()
    worker.join()
    view.close()
    view.deleteLater()
    app.processEvents()
    if errors:
        raise errors[0]
    return {"widget": "app.frame_view.FrameView", "qt_platform": app.platformName(),
            "view_size": list(GUI_VIEW_SIZE), "what": "set_frame + set_mask + processEvents (one paint)",
            "idle": idle, "engine_running": stats(busy_ms), "engine_batches_during": batches_during}


@contextlib.contextmanager
def _temporary_home(home: Path):
    """Point FETALIQA_HOME (settings, results cache) at ``home`` for a while, so that the app's
    window used for timing leaves nothing in the user's profile."""
    old = os.environ.get("FETALIQA_HOME")
    os.environ["FETALIQA_HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FETALIQA_HOME", None)
        else:
            os.environ["FETALIQA_HOME"] = old


def measure_window_display(case_path: Path, cls_lm, seg_lm, cls_dir: Path, seg_dir: Path, home: Path,
                           steps: int, log: Callable[[str], None]) -> dict:
    """The whole main window (``app.bench_display.measure_display``): open the case, start
    scoring with the loaded models, then time ``steps`` frame changes with a synchronous repaint
    of the window while batches arrive."""
    try:
        from app import bench_display as display
    except ImportError as exc:
        return {"skipped": f"app.bench_display cannot be imported ({exc})"}
    from fetaliqa_core.models.choice import LoadedModels, ModelChoice

    device = str(cls_lm.device)
    choice = ModelChoice(model=None, cls=cls_dir, seg=seg_dir, device=device)
    models = LoadedModels(cls=cls_lm, seg=seg_lm, choice=choice, device=device)
    log(f"  main window: {steps} frame changes while the app scores the case")
    with _temporary_home(home):
        timing = display.measure_display(case_path, choice=choice, steps=steps, warmup_s=180.0, models=models)
    out = asdict(timing)
    out.update(widget="app.main_window.MainWindow via app.bench_display.measure_display",
               what="model.set_frame + window.repaint (synchronous), queued results applied between steps")
    return out

