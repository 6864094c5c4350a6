"""What the benchmark runs (:class:`BenchSettings`), what it reports (:class:`BenchReport`), its targets' limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from fetaliqa_core import acouslic
from fetaliqa_core.errors import FetalIQAError, UsageError
from fetaliqa_core.files import json_safe

BENCH_FORMAT = 1
ACOUSLIC_SHAPE = acouslic.FRAME_SHAPE
ACOUSLIC_CASE_FRAMES = acouslic.FRAMES_PER_CASE
ACOUSLIC_SWEEPS = acouslic.SWEEPS
SEED_BATCH = 32  # the reference's batch size
# ViT-L/14 takes ~1.4 s per frame per encoder pass on a 2-core CPU: the default frame count for
# the real architecture on a CPU keeps both paths within a few minutes.
CPU_FETALCLIP_FRAMES = 16
GUI_FRAMES = 300
LORA_B_STD = 0.02  # random LoRA updates, so merged and unmerged models differ in their weights
AGREEMENT_PREPROCESS_FRAMES = 8
GB = 1e9

# Targets of the benchmark issue.
TARGET_GPU_CASE_S = 1.5  # full 840-frame case, open -> complete classifier + segmenter results
TARGET_GPU_SPEEDUP = 10.0  # ... and this many times faster than the seed-style path
TARGET_CPU_LIMIT_MARGIN = 0.10  # real architecture within 10 % of the matmul-bound time per frame
TARGET_CPU_FIRST_S = 6.0  # first result within 6 s of opening
TARGET_RSS_BYTES = 3 * GB  # peak RSS for a full-size case
TARGET_DISPLAY_P95_MS = 16.0  # one frame with overlay, while the engine runs


@dataclass
class BenchSettings:
    """What to run. ``frames``/``case_frames`` of None take the defaults of :func:`resolve`."""

    device: str = "auto"
    arch: str = "fetalclip"
    frames: int | None = None  # frames timed through each path
    case_frames: int | None = None  # frames in the case file (open -> first result, RSS, reopen)
    batch_size: int | None = None  # ours; None: the device's batch size
    seed_batch: int = SEED_BATCH
    skip_seed: bool = False
    skip_gui: bool = False
    gui_frames: int = GUI_FRAMES
    seed: int = 0
    matmul_size: int | None = None  # side of the timed matrix product (default 8192 CUDA, 2048 CPU)
    workdir: Path | None = None  # where the case file and bundles go (default: a temporary folder)


@dataclass
class BenchReport:
    """Everything measured; :meth:`to_json` is what ``--json`` writes."""

    settings: dict
    machine: dict
    flops: dict = field(default_factory=dict)
    ceiling: dict = field(default_factory=dict)
    ours: dict = field(default_factory=dict)
    seed: dict | None = None
    agreement: dict = field(default_factory=dict)
    reopen: dict = field(default_factory=dict)
    gui: dict | None = None
    memory: dict = field(default_factory=dict)
    targets: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    format: int = BENCH_FORMAT

    def to_json(self) -> dict:
        return json_safe(asdict(self))  # None stands for 'not measured'

    def comparison_rows(self) -> list[dict]:
        """Rows of the main table: metric, unit, seed, ours, ours-vs-seed factor (> 1 = ours better)."""
        s = self.seed or {}
        o = self.ours
        case = self.settings["case_frames"]
        rows = [
            ("preprocessing", "frames/s", s.get("preprocess_fps"), o.get("preprocess_fps"), True),
            ("classifier", "frames/s", s.get("cls_fps"), o.get("cls_fps"), True),
            ("segmenter", "frames/s", s.get("seg_fps"), o.get("seg_fps"), True),
            ("open -> first result", "s", s.get("open_to_first_s"), o.get("open_to_first_s"), False),
            (f"open -> {self.settings['frames']} frames cls+seg", "s", s.get("open_to_done_s"),
             o.get("open_to_done_s"), False),
            (f"open -> complete case ({case} frames){' est.' if o.get('complete_estimated') else ''}", "s",
             s.get("open_to_complete_s"), o.get("open_to_complete_s"), False),
        ]
        out = []
        for metric, unit, seed, ours, higher_better in rows:
            factor = None
            if seed and ours:
                factor = ours / seed if higher_better else seed / ours
            out.append({"metric": metric, "unit": unit, "seed": seed, "ours": ours, "ours_vs_seed": factor})
        return out


@dataclass
class BenchProbeInput:
    """What a display probe (entry point group ``fetaliqa.bench_probes``) gets: the case file and
    its opened sweep, the loaded models and their bundle folders, a home folder for settings and
    caches, the number of frame changes to time and the engine's batch size meanwhile."""

    case_path: Path
    sweep: Any
    cls_lm: Any
    seg_lm: Any
    cls_dir: Path
    seg_dir: Path
    home: Path
    steps: int
    engine_batch: int
    log: Callable[[str], None]


def resolve(settings: BenchSettings, device_type: str) -> BenchSettings:
    """Fill in default frame counts and check the numbers (FetalIQAError on a bad setting)."""
    from fetaliqa_core.models.base import CONFIG_NAMES

    arch = settings.arch.lower()
    if arch not in CONFIG_NAMES:
        raise FetalIQAError(f"--arch {settings.arch!r} is not known; choose one of {', '.join(CONFIG_NAMES)}")
    frames = settings.frames
    if frames is None:
        frames = CPU_FETALCLIP_FRAMES if (arch == "fetalclip" and device_type == "cpu") else ACOUSLIC_CASE_FRAMES
    if frames < 1:
        raise FetalIQAError(f"--frames must be at least 1; got {frames}")
    case_frames = settings.case_frames if settings.case_frames is not None else max(frames, ACOUSLIC_CASE_FRAMES)
    if case_frames < frames:
        raise UsageError(f"--case-frames ({case_frames}) must be at least --frames ({frames})")
    for name in ("batch_size", "seed_batch", "gui_frames"):
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise FetalIQAError(f"--{name.replace('_', '-')} must be at least 1; got {value}")
    return BenchSettings(device=settings.device, arch=arch, frames=frames, case_frames=case_frames,
                         batch_size=settings.batch_size, seed_batch=settings.seed_batch,
                         skip_seed=settings.skip_seed, skip_gui=settings.skip_gui,
                         gui_frames=settings.gui_frames, seed=settings.seed, matmul_size=settings.matmul_size,
                         workdir=settings.workdir)
