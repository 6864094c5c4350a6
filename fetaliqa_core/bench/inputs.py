"""The benchmark's inputs: a synthetic case of ACOUSLIC size written as an uncompressed ``.mha`` and
two bundles with random weights (random LoRA updates, so that merging matters)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import torch

from fetaliqa_core.bench.settings import ACOUSLIC_SHAPE, ACOUSLIC_SWEEPS, LORA_B_STD
from fetaliqa_core.errors import FetalIQAError


def synthetic_case(n_frames: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]], list[str]]:
    """``(N, 562, 744)`` uint8 frames from :func:`fetaliqa_core.synth.synthesize_case`
    (6 sweeps when N divides by 6, else one sweep), with its sweep ranges and kinds."""
    n_sweeps = ACOUSLIC_SWEEPS if n_frames % ACOUSLIC_SWEEPS == 0 else 1
    per = n_frames // n_sweeps
    ranges = [(i * per, (i + 1) * per) for i in range(n_sweeps)]
    from fetaliqa_core.synth import synthesize_case

    case = synthesize_case(seed, n_sweeps=n_sweeps, frames_per_sweep=per,
                           height=ACOUSLIC_SHAPE[0], width=ACOUSLIC_SHAPE[1], kind="optimal")
    return case.frames, list(case.sweep_ranges), list(case.sweep_kinds)


def quick_frames(n_frames: int, seed: int, shape: tuple[int, int] = ACOUSLIC_SHAPE) -> np.ndarray:
    """``(N, H, W)`` uint8 ultrasound-like frames without the synthesiser: speckle inside a fan
    (apex at the top centre, +-30 degrees), a bright ellipse drifting from frame to frame, zeros
    outside the fan."""
    h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - w / 2, yy + 40.0)
    fan = (np.abs(np.arctan2(xx - w / 2, yy + 40.0)) < np.radians(30)) & (r < h + 30)
    out = np.zeros((n_frames, h, w), np.uint8)
    for i in range(n_frames):
        speckle = rng.gamma(2.0, 30.0, size=(h, w)).astype(np.float32)
        cx, cy = w / 2 + 80 * np.sin(i / 25.0), h * 0.55
        blob = (((xx - cx) / 110) ** 2 + ((yy - cy) / 90) ** 2) < 1.0
        img = speckle * (0.6 + 0.8 * blob) * np.exp(-r / (1.5 * h))
        out[i] = np.where(fan, np.clip(img, 0, 255), 0).astype(np.uint8)
    return out


def make_bundles(arch: str, out_dir: Path, seed: int) -> tuple[Path, Path]:
    """A classifier and a binary segmenter bundle on the random base ``arch`` (seed ``seed``), with
    random LoRA updates and heads. Returns their folders."""
    from fetaliqa_core.models.base import random_base
    from fetaliqa_core.models.bundle import manifest_for, save_bundle
    from fetaliqa_core.models.classifier import FetalCLIPClassifier
    from fetaliqa_core.models.lora import LoraSettings
    from fetaliqa_core.models.segmenter import FetalCLIPSegmenter

    dirs = []
    for task, cls in (("cls", FetalCLIPClassifier), ("seg", FetalCLIPSegmenter)):
        visual, info = random_base(arch, seed=seed)
        model = cls(visual, LoraSettings())
        gen = torch.Generator().manual_seed(seed + (1 if task == "cls" else 2))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=gen) * LORA_B_STD)
        target = out_dir / task
        save_bundle(model, target, manifest_for(model, info, description=f"benchmark {arch} {task}"))
        dirs.append(target)
        del model, visual
        gc.collect()
    return dirs[0], dirs[1]


def have_simpleitk() -> bool:
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_inputs(case_frames: int, arch: str, seed: int, workdir: Path) -> tuple[Path, Path, Path]:
    """Write the synthetic case (uncompressed ``workdir/case.mha``) and the two bundles."""
    from fetaliqa_core.io import write_volume

    frames, ranges, kinds = synthetic_case(case_frames, seed)
    case_path = workdir / "case.mha"
    write_volume(case_path, frames, compress=False, sweep_ranges=ranges, sweep_kinds=kinds)
    del frames
    cls_dir, seg_dir = make_bundles(arch, workdir / "bundles", seed)
    return case_path, cls_dir, seg_dir


def prepare_inputs_in_child(case_frames: int, arch: str, seed: int, workdir: Path) -> tuple[Path, Path, Path]:
    """:func:`prepare_inputs` in a separate Python process: synthesising a case and building towers
    leaves freed-but-held heap in a process, which would otherwise count as the product's memory."""
    import subprocess

    code = ("import sys; from pathlib import Path; from fetaliqa_core.bench.inputs import prepare_inputs; "
            "prepare_inputs(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # where fetaliqa_core lives, however it was found
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", code, str(case_frames), arch, str(seed), str(workdir)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        raise FetalIQAError(f"benchmark set-up (synthetic case and bundles in {workdir}) failed: "
                            f"{lines[-1] if lines else f'exit code {proc.returncode}'}")
    return workdir / "case.mha", workdir / "bundles" / "cls", workdir / "bundles" / "seg"
