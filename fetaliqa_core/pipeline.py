"""Headless scoring from end to end: models in, files out.

``load_models`` is the one place that turns the user's choice (the demo model, or FetalCLIP
weights plus bundles, and a device) into loaded models; the command line, the app and the
benchmark all go through it. ``summarise`` turns an engine's results into what the sonographer
acts on, and the ``write_*`` functions produce the files of ``fetaliqa score``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError

SWEEP_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nii", ".nii.gz", ".dcm")


@dataclass
class ModelChoice:
    """What the user asked to score with."""

    model: str | None = "demo"  # "demo", or None when bundles are given
    cls: Path | None = None
    seg: Path | None = None
    base: Path | None = None
    device: str = "auto"
    precision: str | None = None  # "auto" | "bf16" | "fp32"; None: $FETALIQA_PRECISION or auto

    def describe(self) -> str:
        if self.model == "demo":
            return "demo model (tiny, trained on synthetic sweeps)"
        parts = []
        if self.cls:
            parts.append(f"classifier {Path(self.cls).name}")
        if self.seg:
            parts.append(f"segmenter {Path(self.seg).name}")
        return ", ".join(parts)


@dataclass
class LoadedModels:
    cls: object | None
    seg: object | None
    choice: ModelChoice
    device: str
    device_label: str = ""  # e.g. "CPU (2 threads, bf16: AVX512_BF16, bf16 matmul 2.3x fp32)"

    def describe(self) -> str:
        return f"{self.choice.describe()} on {self.device_label or self.device}"


def load_models(choice: ModelChoice) -> LoadedModels:
    """Load the classifier and/or segmenter the user chose (FetalIQAError on any problem)."""
    from fetaliqa_core.models import bundle as bundle_mod
    from fetaliqa_core.models.device import select_device

    device = select_device(choice.device, choice.precision)
    if choice.model == "demo" and not (choice.cls or choice.seg):
        cls, seg = bundle_mod.demo_models(device=device)
    else:
        if not (choice.cls or choice.seg):
            raise FetalIQAError("No model given: pass --model demo, or --cls and/or --seg bundle folders.")
        cls = seg = None
        if choice.cls:
            cls = bundle_mod.load_bundle(Path(choice.cls), base_weights=choice.base, device=device)
        if choice.seg:
            if choice.cls and Path(choice.seg).resolve() == Path(choice.cls).resolve():
                seg = cls  # one joint bundle: one encoder pass gives both
            else:
                seg = bundle_mod.load_bundle(Path(choice.seg), base_weights=choice.base, device=device)
    return LoadedModels(cls=cls, seg=seg, choice=choice, device=str(device.device), device_label=device.description)


@dataclass
class SweepSummary:
    """Per sweep of a case: the best frame and what was measured on it."""

    sweep: int  # 1-based, as in the ACOUSLIC CSV
    kind: str
    first_frame: int
    last_frame: int
    best_frame: int  # -1 when no frame of this sweep passes
    score: float | None
    ac_mm: float | None
    ga_weeks: float | None
    ga_out_of_range: bool = False


@dataclass
class CaseSummary:
    path: str
    content_hash: str
    n_frames: int
    spacing_mm: tuple[float, float]
    models: str
    threshold: float
    chosen_frame: int  # -1 when no frame passes (the challenge's convention)
    sweeps: list[SweepSummary] = field(default_factory=list)
    frames_scored: int = 0
    complete: bool = True

    def to_json(self) -> dict:
        return _finite(asdict(self))


def _finite(obj):
    """JSON has no NaN: None stands for 'not available'."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def sweep_folder_members(path: Path) -> list[Path] | None:
    """Sweep files in a folder of sweeps, or None if ``path`` is not such a folder
    (a file, or a DICOM series folder, which is one sweep)."""
    if not path.is_dir():
        return None
    members = sorted(p for p in path.iterdir()
                     if p.is_file() and p.name.lower().endswith(SWEEP_SUFFIXES[:-1]))
    return members or None


def atomic_output_dir(out: Path):
    """Context manager: files are written into a temporary sibling folder that replaces
    ``out`` only when everything succeeded, so a failed run leaves nothing half-written."""
    import contextlib

    @contextlib.contextmanager
    def _cm():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            # Replace only our own earlier output files, never a folder with other content.
            for p in tmp.iterdir():
                target = out / p.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(p, target)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, out)

    return _cm()


def write_frames_csv(path: Path, sweep, results, flagged: np.ndarray) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "sweep", "p_cls", "p_seg", "seg_area_px", "flagged"])
        for i in range(sweep.n_frames):
            def fmt(v: float) -> str:
                return "" if not np.isfinite(v) else f"{v:.4f}"
            area = int(results.seg_area_px[i])
            w.writerow([i, sweep.sweep_index(i) + 1, fmt(float(results.p_cls[i])),
                        fmt(float(results.p_seg[i])), "" if area < 0 else area, int(bool(flagged[i]))])


def write_summary_json(path: Path, summary: CaseSummary) -> None:
    path.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")


@dataclass
class Analysis:
    """Everything derived from a sweep's results that the CLI and the app show."""

    summary: CaseSummary
    flags: object  # analysis.FrameFlags
    best: list  # analysis.BestFrame | None per sweep
    ac: dict[int, object]  # frame -> analysis.ACMeasurement (best frames and chosen frame)


def analyse(sweep, results, models_desc: str = "", threshold: float = 0.5,
            threshold_seg: float = 0.5) -> Analysis:
    """Flags, best frame per sweep, chosen frame per case, AC and GA on them.

    ``threshold`` applies to the classifier's probability (a bundle carries its own, chosen on
    validation data); ``threshold_seg`` to the mask score, where 0.5 is the paper's 1 % rule.
    """
    from fetaliqa_core import acouslic
    from fetaliqa_core import analysis as an

    p_cls = results.p_cls if results.has_cls else None
    p_seg = results.p_seg if results.has_seg else None
    area = results.seg_area_px.astype(np.float64) if results.has_seg else None
    if area is not None:
        area[area < 0] = np.nan
    p_opt = results.p_opt if results.has_seg else None
    seg_call = results.seg_call if results.has_seg else None
    flags = an.flag_frames(p_cls, p_seg, threshold, threshold_seg, seg_call=seg_call)
    best = an.best_frames(p_cls, p_seg, area, sweep.sweep_ranges, p_opt=p_opt,
                          threshold_cls=threshold, threshold_seg=threshold_seg)
    chosen = an.choose_case_frame(p_cls, p_seg, area, p_opt, threshold, threshold_seg)
    fov = acouslic.sweep_fov(sweep) if results.has_seg else None
    ac: dict[int, object] = {}
    sweeps: list[SweepSummary] = []
    for s, ((start, stop), b) in enumerate(zip(sweep.sweep_ranges, best)):
        frame = b.frame if (b is not None and b.passes) else -1
        m = None
        if frame >= 0 and results.has_seg:
            m = an.measure_frame_ac(sweep, results, frame, fov)
            if m is not None:
                ac[frame] = m
        ga = an.hadlock_ga(m.ac_mm) if m is not None else None
        sweeps.append(SweepSummary(
            sweep=s + 1, kind=sweep.sweep_kinds[s], first_frame=start, last_frame=stop - 1,
            best_frame=frame, score=(b.score if frame >= 0 else None),
            ac_mm=(round(m.ac_mm, 1) if m else None),
            ga_weeks=(round(ga.weeks, 1) if ga else None),
            ga_out_of_range=bool(ga.out_of_range) if ga else False))
    if chosen >= 0 and chosen not in ac and results.has_seg:
        m = an.measure_frame_ac(sweep, results, chosen, fov)
        if m is not None:
            ac[chosen] = m
    summary = CaseSummary(
        path=str(sweep.path) if sweep.path else "", content_hash=sweep.content_hash,
        n_frames=sweep.n_frames, spacing_mm=tuple(sweep.spacing_mm), models=models_desc,
        threshold=threshold, chosen_frame=int(chosen), sweeps=sweeps,
        frames_scored=results.n_done, complete=results.complete)
    return Analysis(summary=summary, flags=flags, best=best, ac=ac)
