"""Benchmark: the product's scoring path against the seed-style path and the hardware limit.

Everything runs in one process on one set of synthetic frames of ACOUSLIC size (562 x 744
uint8), written first to an uncompressed ``.mha`` file in a temporary folder. Two paths score
the same frames with the same weights:

seed-style
    the way the reference code does the work: SimpleITK reads the whole volume; each frame is
    preprocessed on its own with PIL (zero-pad to a square, bicubic resize to 224, grey to RGB,
    open_clip's eval transform); the LoRA adapters stay unmerged inside peft; batches of 32
    under bf16 autocast on CUDA (fp32 without autocast on the CPU, where bf16 autocast is about
    6x slower: FACTS.md section 3); classifier and segmenter as two separate passes, the
    segmenter taking its four block outputs by forward hooks and resizing the 16x16 grids to
    14x14 with bilinear ``F.interpolate`` on NCHW views.
ours
    ``io.load_sweep`` (memory-mapped) -> ``engine.ScoringEngine`` -> ``preprocess_frames``
    (batched, on the device) -> ``LoadedModel.predict`` (LoRA merged, inference mode, bf16
    weights on CUDA, fp32 on the CPU), at the device's batch size.

Both paths run the same bundles: a random base of the chosen architecture with random LoRA
updates (so that merging matters) and random heads, saved with ``save_bundle`` and loaded with
``load_bundle`` (merged for ours, ``merge=False`` for the seed-style path). The report also
checks that the two paths compute the same function (agreement of inputs and outputs).

Figures reported: preprocessing, classifier and segmenter frames/s for each path; time from
opening the file to the first result and to the complete curve (classifier and segmenter);
reopening a cached sweep; peak resident memory per phase (sampled) and peak GPU memory; the
device's measured matrix-product rate turned into a frames/s ceiling from the models' FLOPs per
frame; and the time to show a frame with its overlay in the app's frame view while the engine
runs.

Units: frames/s, seconds, milliseconds, bytes (shown as GB = 10^9 bytes).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fetaliqa_core.errors import FetalIQAError, UsageError

BENCH_FORMAT = 1
ACOUSLIC_SHAPE = (562, 744)
ACOUSLIC_CASE_FRAMES = 840  # 6 sweeps x 140 frames
ACOUSLIC_SWEEPS = 6
SEED_BATCH = 32  # the reference's batch size
# ViT-L/14 takes ~1.4 s per frame per encoder pass on a 2-core CPU: the default frame count for
# the real architecture on a CPU keeps both paths within a few minutes.
CPU_FETALCLIP_FRAMES = 16
GUI_FRAMES = 300
GUI_IDLE_FRAMES = 60
GUI_VIEW_SIZE = (1280, 900)  # the frame view's size in pixels while timing (about a laptop window)
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


# ============================================================================ settings and report
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
        return _finite(asdict(self))

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


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: None stands for 'not measured'."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    return obj


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


# ============================================================================ machine and memory
def machine_info(device: torch.device) -> dict:
    """CPU, memory, load and accelerator of this computer."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": _cpu_capability(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "memory_bytes": _total_memory(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=int(props.total_memory),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def _cpu_capability() -> str | None:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16")
            return [f for f in wanted if f in have]
    return []


def _total_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None


def _current_rss() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None


def max_rss_bytes() -> int | None:
    """The process's peak resident memory so far (getrusage; None where there is none: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class MemoryWatch:
    """Peak resident memory of each phase, sampled by a thread every ``interval`` seconds, and peak
    GPU memory (``torch.cuda.max_memory_allocated``) when the device is CUDA.

    ``getrusage`` only knows the peak of the whole process; sampling tells the phases apart (a
    spike shorter than the interval can be missed, so the process peak is reported as well).
    """

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device = device
        self.interval = interval
        self.phases: dict[str, dict] = {}
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if _current_rss() is not None:
            self._thread = threading.Thread(target=self._loop, name="fetaliqa-bench-rss", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _current_rss() or 0
            with self._lock:
                self._peak = max(self._peak, rss)

    @contextlib.contextmanager
    def phase(self, name: str):
        start = _current_rss() or 0
        with self._lock:
            self._peak = start
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield
        finally:
            end = _current_rss() or 0
            with self._lock:
                peak = max(self._peak, end)
            entry = {"rss_start_bytes": start, "rss_peak_bytes": peak, "rss_end_bytes": end}
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                entry["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
            self.phases[name] = entry

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ============================================================================ hardware ceiling
def measure_matmul(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int | None = None) -> dict:
    """Rate of a large square matrix product in ``dtype`` (random inputs), in FLOP/s.

    Returns ``{"n", "dtype", "reps", "median_flops", "best_flops", "times_s"}``; the median is the
    figure used for the ceiling (the best is shown beside it: on a shared CPU the spread is wide).
    """
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 2048)
    reps = reps or (20 if cuda else 7)
    gen = torch.Generator().manual_seed(1234)
    # three pairs, rotated, so that repeated runs do not reuse one operand pair from cache
    pairs = [(torch.randn(n, n, generator=gen).to(device, dtype), torch.randn(n, n, generator=gen).to(device, dtype))
             for _ in range(2 if cuda else 1)]
    with torch.inference_mode():
        for a, b in pairs:
            torch.mm(a, b)
        _sync(device)
        times = []
        for i in range(reps):
            a, b = pairs[i % len(pairs)]
            if cuda:
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                torch.mm(a, b)
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1000.0)
            else:
                t0 = time.perf_counter()
                torch.mm(a, b)
                times.append(time.perf_counter() - t0)
    flops = 2.0 * n ** 3
    return {"n": n, "dtype": _dtype_name(dtype), "reps": reps, "median_flops": flops / statistics.median(times),
            "best_flops": flops / min(times), "times_s": times}


def _merge_matmul(*runs: dict) -> dict:
    """Several :func:`measure_matmul` results of one size and dtype as one."""
    times = [t for r in runs for t in r["times_s"]]
    flops = 2.0 * runs[0]["n"] ** 3
    return {"n": runs[0]["n"], "dtype": runs[0]["dtype"], "reps": len(times),
            "median_flops": flops / statistics.median(times), "best_flops": flops / min(times), "times_s": times}


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def _mha_flops(query, key, value, embed_dim, num_head, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten._native_multi_head_attention`` (the fused attention PyTorch runs for
    ``nn.MultiheadAttention`` in inference): q/k/v projections, QK^T, AV, output projection.
    Shapes: query ``(B, T, E)``, key/value ``(B, S, E)`` (batch first)."""
    b, t, e = query
    s = key[1]
    projections = 2 * b * t * e * e + 2 * 2 * b * s * e * e + 2 * b * t * e * e
    attention = 2 * 2 * b * t * s * e
    return projections + attention


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def count_flops(fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> dict:
    """FLOPs of ``fn(x)`` by ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add).

    PyTorch's counter has no formula for the fused attention kernels the CPU runs
    (``_native_multi_head_attention``, ``_scaled_dot_product_flash_attention_for_cpu``) and would
    miss about a third of a ViT's work; formulas for those are added here.
    Returns ``{"total": FLOPs, "by_op": {op: FLOPs}}`` for the batch in ``x``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    custom = {}
    if hasattr(aten, "_native_multi_head_attention"):
        custom[aten._native_multi_head_attention] = _mha_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    with torch.inference_mode(), counter:
        fn(x)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def vit_flops(config: dict) -> int:
    """Analytic FLOPs of one image through an open_clip ViT (patch embedding, blocks, projection);
    FetalCLIP's ViT-L/14 gives 162.03 G, as open_clip's own profile."""
    v = config["vision_cfg"]
    d, layers, p, size = v["width"], v["layers"], v["patch_size"], v["image_size"]
    mlp = int(d * v.get("mlp_ratio", 4.0))
    tokens = (size // p) ** 2 + 1
    per_block = 2 * tokens * (4 * d * d + 2 * d * mlp) + 2 * 2 * tokens * tokens * d
    patch = 2 * (tokens - 1) * 3 * p * p * d
    return int(layers * per_block + patch + 2 * d * config["embed_dim"])


# ============================================================================ synthetic case + bundles
def synthetic_case(n_frames: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]], list[str]]:
    """``(N, 562, 744)`` uint8 frames from :func:`fetaliqa_core.synth.synthesize_case`
    (6 sweeps when N divides by 6, else one sweep), with its sweep ranges and kinds.

    Without SimpleITK (the GPU machines' image) the synthesiser cannot read the bundled FOV mask;
    :func:`quick_frames` stands in: the same size and dtype, which is all the timings depend on."""
    n_sweeps = ACOUSLIC_SWEEPS if n_frames % ACOUSLIC_SWEEPS == 0 else 1
    per = n_frames // n_sweeps
    ranges = [(i * per, (i + 1) * per) for i in range(n_sweeps)]
    if not _have_simpleitk():
        kinds = (["transverse"] * 3 + ["sagittal"] * 3) if n_sweeps == ACOUSLIC_SWEEPS else ["unknown"]
        return quick_frames(n_frames, seed), ranges, kinds
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


def _have_simpleitk() -> bool:
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        return False
    return True


def write_plain_mha(path: Path, frames: np.ndarray, spacing_mm: tuple[float, float],
                    ranges: list[tuple[int, int]], kinds: list[str]) -> None:
    """Uncompressed MetaImage ``(N, H, W)`` uint8, written without SimpleITK (the GPU machines'
    image lacks it, and its wheel alone nearly fills what a device call may carry). The header is
    the one SimpleITK writes, with the sweep layout keys ``io.load_sweep`` reads."""
    from fetaliqa_core.io import META_SWEEP_KINDS, META_SWEEP_RANGES

    n, h, w = frames.shape
    header = "\n".join([
        "ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        "CompressedData = False", "TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = 0 0 0",
        "CenterOfRotation = 0 0 0", f"ElementSpacing = {spacing_mm[1]} {spacing_mm[0]} 1",
        f"DimSize = {w} {h} {n}", "ElementType = MET_UCHAR",
        f"{META_SWEEP_RANGES} = " + ",".join(f"{a}-{b}" for a, b in ranges),
        f"{META_SWEEP_KINDS} = " + ",".join(kinds), "ElementDataFile = LOCAL"]) + "\n"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
    os.replace(tmp, path)


def prepare_inputs(case_frames: int, arch: str, seed: int, workdir: Path) -> tuple[Path, Path, Path]:
    """Write the synthetic case (uncompressed ``workdir/case.mha``) and the two bundles."""
    from fetaliqa_core.io import write_volume

    frames, ranges, kinds = synthetic_case(case_frames, seed)
    case_path = workdir / "case.mha"
    if _have_simpleitk():
        write_volume(case_path, frames, compress=False, sweep_ranges=ranges, sweep_kinds=kinds)
    else:
        write_plain_mha(case_path, frames, (0.28, 0.28), ranges, kinds)
    del frames
    cls_dir, seg_dir = make_bundles(arch, workdir / "bundles", seed)
    return case_path, cls_dir, seg_dir


def prepare_inputs_in_child(case_frames: int, arch: str, seed: int, workdir: Path) -> tuple[Path, Path, Path]:
    """:func:`prepare_inputs` in a separate Python process: synthesising a case and building towers
    leaves freed-but-held heap in a process, which would otherwise count as the product's memory."""
    import subprocess

    code = ("import sys; from pathlib import Path; from fetaliqa_core.bench import prepare_inputs; "
            "prepare_inputs(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))")
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # where fetaliqa_core lives, however it was found
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", code, str(case_frames), arch, str(seed), str(workdir)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
        raise FetalIQAError(f"benchmark set-up (synthetic case and bundles in {workdir}) failed: "
                            f"{lines[-1] if lines else f'exit code {proc.returncode}'}")
    return workdir / "case.mha", workdir / "bundles" / "cls", workdir / "bundles" / "seg"


# ============================================================================ seed-style path
def seed_style_transform(size: int = 224):
    """open_clip's eval transform (resize shortest side bicubic, centre crop, RGB, ToTensor, OpenAI
    normalisation), as the reference applied it after its own pad + resize."""
    import open_clip

    return open_clip.image_transform(size, is_train=False)


def seed_style_preprocess(frame: np.ndarray, transform, size: int = 224) -> torch.Tensor:
    """One ``(H, W)`` uint8 frame -> ``(3, size, size)`` float32, with PIL, the reference's way."""
    from PIL import Image

    h, w = frame.shape
    side = max(h, w)
    square = Image.new("L", (side, side), 0)
    square.paste(Image.fromarray(np.ascontiguousarray(frame)), ((side - w) // 2, (side - h) // 2))
    return transform(square.resize((size, size), Image.BICUBIC).convert("RGB"))


class SeedStyleSegmenter(nn.Module):
    """The reference's way of running FetalCLIP_SEG on an unmerged :class:`FetalCLIPSegmenter`:
    a full forward of the vision tower with forward hooks on the tapped blocks, class token
    dropped, tokens viewed as NCHW grids and resized 16->14 with bilinear ``F.interpolate``, then
    the same decoder. ``(B, 3, 224, 224)`` -> ``(B, n_classes, 224, 224)`` logits."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter
        visual = segmenter.encoder.visual
        self.grid = tuple(segmenter.encoder.grid)
        self.target = int(visual.image_size[0]) // 16
        self._taps: list[torch.Tensor] = []
        self._handles = [visual.transformer.resblocks[b - 1].register_forward_hook(self._hook)
                         for b in segmenter.seg.blocks]

    def _hook(self, module, inputs, output) -> None:
        self._taps.append(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._taps = []
        self.segmenter.encoder.visual(x)
        b = x.shape[0]
        gh, gw = self.grid
        grids = [t[:, -gh * gw:, :].reshape(b, gh, gw, -1).permute(0, 3, 1, 2) for t in self._taps]
        grids = [F.interpolate(g, size=(self.target, self.target), mode="bilinear", align_corners=False)
                 for g in grids]
        self._taps = []
        return self.segmenter.seg.decoder(x, grids)

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()


def _seg_foreground(prob: torch.Tensor) -> np.ndarray:
    """``(B, C, S, S)`` probabilities -> ``(B, S, S)`` bool foreground (P(abdomen) > 0.5)."""
    from fetaliqa_core.models.segmenter import PIXEL_THRESHOLD, foreground_probability

    return (foreground_probability(prob.float()) > PIXEL_THRESHOLD).numpy()


def run_seed_style(path: Path, n_frames: int, case_frames: int, cls_net: nn.Module, seg_net: nn.Module,
                   device: torch.device, batch: int, log: Callable[[str], None]) -> dict:
    """Time the seed-style path on the first ``n_frames`` frames of the file at ``path``."""
    from fetaliqa_core.models.segmenter import segmentation_probabilities

    transform = seed_style_transform()
    cuda = device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    # warm-up (not timed) at the first timed batch's shape: kernels, allocator, and the oneDNN
    # primitives a CPU creates per shape (about a second for a new batch size)
    warm = torch.stack([seed_style_preprocess(np.zeros(ACOUSLIC_SHAPE, np.uint8) + 60, transform)]
                       * min(batch, n_frames)).to(device)
    with torch.no_grad(), autocast():
        cls_net(warm)
        seg_net(warm)
    _sync(device)
    del warm

    t_open = time.perf_counter()
    if _have_simpleitk():
        import SimpleITK as sitk

        reader = "SimpleITK, whole volume"
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # the whole file, as the reference
    else:
        from fetaliqa_core.io import load_sweep

        reader = "whole volume copied into memory (no SimpleITK here)"
        volume = np.array(load_sweep(path).frames)
    read_s = time.perf_counter() - t_open
    frames = volume[:n_frames]
    prep_s = {"cls": 0.0, "seg": 0.0}
    model_s = {"cls": 0.0, "seg": 0.0}
    first: float | None = None
    p_cls: list[np.ndarray] = []
    fg: list[np.ndarray] = []
    inputs_kept: list[torch.Tensor] = []
    for task, net in (("cls", cls_net), ("seg", seg_net)):
        log(f"  seed-style {task}: {n_frames} frames, batch {batch}")
        for start in range(0, n_frames, batch):
            t0 = time.perf_counter()
            x = torch.stack([seed_style_preprocess(f, transform) for f in frames[start:start + batch]])
            if task == "cls" and start == 0:
                inputs_kept.append(x[:AGREEMENT_PREPROCESS_FRAMES].clone())
            x = x.to(device)
            _sync(device)
            t1 = time.perf_counter()
            with torch.no_grad(), autocast():
                out = net(x)
            if task == "cls":
                p_cls.append(torch.sigmoid(out.float())[:, 0].cpu().numpy())
            else:
                fg.append(_seg_foreground(segmentation_probabilities(out.float()).cpu()))
            t2 = time.perf_counter()
            prep_s[task] += t1 - t0
            model_s[task] += t2 - t1
            if first is None:
                first = t2 - t_open
    done_s = time.perf_counter() - t_open
    del volume, frames
    scale = case_frames / n_frames
    cpu_autocast = None if cuda else cpu_autocast_check(cls_net, inputs_kept[0][:1])
    return {
        "frames": n_frames,
        "batch": batch,
        "precision": "bf16 autocast, fp32 weights" if cuda else "fp32, no autocast (see cpu_bf16_autocast)",
        "cpu_bf16_autocast": cpu_autocast,
        "reader": reader,
        "read_s": read_s,
        "preprocess_s": prep_s["cls"] + prep_s["seg"],
        "preprocess_fps": 2 * n_frames / (prep_s["cls"] + prep_s["seg"]),
        "cls_fps": n_frames / model_s["cls"],
        "seg_fps": n_frames / model_s["seg"],
        "open_to_first_s": first,
        "open_to_done_s": done_s,
        # the work per frame is the same for every frame: scale the part after reading the file
        "open_to_complete_s": done_s if n_frames >= case_frames else read_s + (done_s - read_s) * scale,
        "complete_estimated": n_frames < case_frames,
        "_p_cls": np.concatenate(p_cls),
        "_fg": np.concatenate(fg),
        "_inputs": torch.cat(inputs_kept),
    }


def cpu_autocast_check(net: nn.Module, x: torch.Tensor) -> dict:
    """Seconds per frame of ``net`` on the CPU in fp32 and under bf16 autocast (the reference's
    setting), each the best of two runs after one warm-up: why the seed-style path runs fp32 on a
    CPU."""
    def timed(ctx_factory) -> float:
        with torch.no_grad(), ctx_factory():
            net(x)
        best = math.inf
        for _ in range(2):
            t0 = time.perf_counter()
            with torch.no_grad(), ctx_factory():
                net(x)
            best = min(best, time.perf_counter() - t0)
        return best / len(x)

    fp32 = timed(contextlib.nullcontext)
    bf16 = timed(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    return {"frames": len(x), "fp32_s_per_frame": fp32, "bf16_autocast_s_per_frame": bf16,
            "bf16_over_fp32": bf16 / fp32}


# ============================================================================ ours
class MatmulProbe:
    """One timed matrix product of side ``n`` in ``dtype``, on demand: the device's rate at this
    moment, taken beside each model batch so that both see the same load from other processes."""

    def __init__(self, device: torch.device, dtype: torch.dtype, n: int | None = None) -> None:
        self.device = device
        self.n = n or (8192 if device.type == "cuda" else 2048)
        gen = torch.Generator().manual_seed(99)
        self.a = torch.randn(self.n, self.n, generator=gen).to(device, dtype)
        self.b = torch.randn(self.n, self.n, generator=gen).to(device, dtype)
        self.rate()  # warm-up

    def rate(self) -> float:
        """FLOP/s of one product now (best of three on CUDA, where one takes about a millisecond)."""
        times = []
        with torch.inference_mode():
            for _ in range(3 if self.device.type == "cuda" else 1):
                _sync(self.device)
                t0 = time.perf_counter()
                torch.mm(self.a, self.b)
                _sync(self.device)
                times.append(time.perf_counter() - t0)
        return 2.0 * self.n ** 3 / min(times)


def run_ours_components(sweep, n_frames: int, cls_lm, seg_lm, batch: int, log: Callable[[str], None],
                        probe: MatmulProbe | None = None) -> dict:
    """Preprocessing, classifier and segmenter throughput of the product's path, timed apart
    (each batch: ``preprocess_frames`` on the device, synchronised; then ``predict``). With a
    ``probe``, the matrix-product rate is measured right before each full batch."""
    from fetaliqa_core.preprocess import preprocess_frames

    device, dtype = cls_lm.device, cls_lm.dtype
    # warm-up at the first timed batch's shape (see run_seed_style)
    warm = preprocess_frames(np.asarray(sweep.frames[:min(batch, n_frames)]), device=device, dtype=dtype)
    cls_lm.predict(warm)
    seg_lm.predict(warm)
    _sync(device)
    del warm
    prep_s = {"cls": 0.0, "seg": 0.0}
    model_s = {"cls": 0.0, "seg": 0.0}
    batch_s: dict[str, list[float]] = {"cls": [], "seg": []}
    batch_rate: dict[str, list[float]] = {"cls": [], "seg": []}
    p_cls: list[np.ndarray] = []
    fg: list[np.ndarray] = []
    first_inputs = None
    for task, lm in (("cls", cls_lm), ("seg", seg_lm)):
        log(f"  ours {task}: {n_frames} frames, batch {batch}")
        for start in range(0, n_frames, batch):
            stop = min(start + batch, n_frames)
            t0 = time.perf_counter()
            x = preprocess_frames(sweep.frames[start:stop], device=device, dtype=dtype)
            _sync(device)
            rate = probe.rate() if (probe is not None and stop - start == batch) else None
            t1 = time.perf_counter()
            pred = lm.predict(x)  # returns CPU tensors: synchronised
            t2 = time.perf_counter()
            if task == "cls":
                p_cls.append(pred.p_cls.numpy())
                if first_inputs is None:
                    first_inputs = x[:AGREEMENT_PREPROCESS_FRAMES].float().cpu()
            else:
                fg.append(_seg_foreground(pred.seg_prob))
            prep_s[task] += t1 - t0
            model_s[task] += t2 - t1
            if stop - start == batch:
                batch_s[task].append((t2 - t1) / batch)
                if rate is not None:
                    batch_rate[task].append(rate)
    per_frame = {t: (statistics.median(v) if v else model_s[t] / n_frames) for t, v in batch_s.items()}
    best = {t: (min(v) if v else model_s[t] / n_frames) for t, v in batch_s.items()}
    return {
        "frames": n_frames,
        "batch": batch,
        "precision": f"{_dtype_name(dtype)} weights, LoRA merged, inference_mode",
        "preprocess_fps": 2 * n_frames / (prep_s["cls"] + prep_s["seg"]),
        "cls_fps": n_frames / model_s["cls"],
        "seg_fps": n_frames / model_s["seg"],
        "cls_s_per_frame_median": per_frame["cls"],
        "seg_s_per_frame_median": per_frame["seg"],
        "cls_s_per_frame_best": best["cls"],
        "seg_s_per_frame_best": best["seg"],
        "full_batches": {t: len(v) for t, v in batch_s.items()},
        "batch_s_per_frame": batch_s,
        "batch_matmul_flops": batch_rate,
        "_p_cls": np.concatenate(p_cls),
        "_fg": np.concatenate(fg),
        "_inputs": first_inputs,
    }


def run_engine(path: Path, cls_lm, seg_lm, batch: int, cache_root: Path, stop_after: int | None = None) -> dict:
    """Open the file and score it with :class:`ScoringEngine` (classifier + segmenter), timing
    from ``load_sweep`` to the first batch and to the end (all frames, or ``stop_after``)."""
    from fetaliqa_core.engine import ResultCache, ScoringEngine
    from fetaliqa_core.io import load_sweep

    t0 = time.perf_counter()
    sweep = load_sweep(path)
    opened = time.perf_counter() - t0
    engine = ScoringEngine(sweep, cls_lm, seg_lm, cache=ResultCache(cache_root), batch_size=batch)
    first = None
    first_n = 0
    n_done = 0
    from_cache = False
    for result in engine.iter_batches():
        if first is None:
            first = time.perf_counter() - t0
            first_n = len(result.indices)
            from_cache = result.from_cache
        n_done = result.n_done
        if stop_after is not None and n_done >= stop_after:
            engine.cancel()
    total = time.perf_counter() - t0
    return {"open_s": opened, "open_to_first_s": first, "first_batch_frames": first_n, "open_to_done_s": total,
            "frames_done": n_done, "complete": engine.results.complete, "first_from_cache": from_cache,
            "_sweep": sweep, "_results": engine.results}


def run_reopen(path: Path, cls_lm, seg_lm, batch: int, cache_root: Path) -> dict:
    """Open the file again with a results cache already written: time to all cached results."""
    from fetaliqa_core.engine import ResultCache, ScoringEngine
    from fetaliqa_core.io import load_sweep

    t0 = time.perf_counter()
    sweep = load_sweep(path)
    engine = ScoringEngine(sweep, cls_lm, seg_lm, cache=ResultCache(cache_root), batch_size=batch)
    out = {"cache_hit": False, "seconds": None, "frames": 0}
    for result in engine.iter_batches():
        out.update(cache_hit=bool(result.from_cache), seconds=time.perf_counter() - t0, frames=int(result.n_done))
        engine.cancel()  # a partial cache would resume scoring: the cached part is what is timed
    out["complete"] = bool(engine.results.complete) if out["cache_hit"] else False
    return out


# ============================================================================ GUI frame display
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
        qtw = importlib.import_module("PySide6.QtWidgets")
        frame_view = importlib.import_module("app.frame_view")
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
        display = importlib.import_module("app.bench_display")
    except ImportError as exc:
        return {"skipped": f"app.bench_display cannot be imported ({exc})"}
    from fetaliqa_core.pipeline import LoadedModels, ModelChoice

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


# ============================================================================ agreement
def agreement(seed: dict, ours: dict) -> dict:
    """Do the two paths compute the same function? Inputs in 8-bit grey levels; outputs as the
    largest classifier probability difference and the share of mask pixels that agree."""
    from fetaliqa_core.preprocess import OPENAI_STD

    n = min(len(seed["_inputs"]), len(ours["_inputs"]))
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1) * 255.0
    d = ((seed["_inputs"][:n].float() - ours["_inputs"][:n].float()) * std).abs()
    fg_s, fg_o = seed["_fg"], ours["_fg"]
    union = np.logical_or(fg_s, fg_o).sum()
    return {
        "preprocess_frames": n,
        "preprocess_max_abs_grey": float(d.max()),
        "preprocess_mean_abs_grey": float(d.mean()),
        "cls_max_abs_p": float(np.abs(seed["_p_cls"] - ours["_p_cls"]).max()),
        "seg_pixel_agreement": float((fg_s == fg_o).mean()),
        "seg_iou": float(np.logical_and(fg_s, fg_o).sum() / union) if union else 1.0,
    }


# ============================================================================ the run
def run_bench(settings: BenchSettings, log: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Run everything :class:`BenchSettings` asks for and return the report."""
    from fetaliqa_core.models.base import load_base_config
    from fetaliqa_core.models.bundle import load_bundle
    from fetaliqa_core.models.device import DeviceChoice, select_device

    choice = select_device(settings.device)
    device = choice.device
    settings = resolve(settings, device.type)
    batch = settings.batch_size or choice.batch_size
    config = load_base_config(settings.arch)
    report = BenchReport(settings={**_finite(asdict(settings)), "device_resolved": str(device),
                                   "dtype": _dtype_name(choice.dtype), "batch_size": batch},
                         machine=machine_info(device))
    watch = MemoryWatch(device)
    owned_tmp = None
    if settings.workdir is None:
        owned_tmp = tempfile.TemporaryDirectory(prefix="fetaliqa-bench-")
        workdir = Path(owned_tmp.name)
    else:
        workdir = Path(settings.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        # ---------------------------------------------------------------- set-up
        with watch.phase("setup"):
            log(f"set-up: synthetic case of {settings.case_frames} frames {ACOUSLIC_SHAPE[0]}x{ACOUSLIC_SHAPE[1]}, "
                f"bundles for {settings.arch}")
            t0 = time.perf_counter()
            case_path, cls_dir, seg_dir = prepare_inputs_in_child(settings.case_frames, settings.arch,
                                                                  settings.seed, workdir)
            report.notes.append(f"set-up (synthesis, file, bundles; in a child process so that its memory "
                                f"does not count) took {time.perf_counter() - t0:.1f} s")
            if not _have_simpleitk():
                report.notes.append("SimpleITK is not installed here: frames from bench.quick_frames (speckle in a "
                                    "fan) instead of the synthesiser, case file written by bench.write_plain_mha, "
                                    "and the seed-style path copies the whole volume instead of SimpleITK reading it")
        _free_memory(device)

        # ---------------------------------------------------------------- ours
        with watch.phase("ours-load"):
            t0 = time.perf_counter()
            cls_lm = load_bundle(cls_dir, device=choice)
            seg_lm = load_bundle(seg_dir, device=choice)
            load_s = time.perf_counter() - t0
        log(f"ours: bundles loaded in {load_s:.1f} s; case file opened by the engine")
        # the matrix-product rate is taken just before and just after the scoring, so that a busy
        # spell of other processes on a shared computer weighs on both alike (outside the memory
        # phases: its matrices are not the product's memory)
        mm_before = measure_matmul(device, choice.dtype, n=settings.matmul_size)
        with watch.phase("ours-score"):
            cold = None
            if device.type == "cuda":
                # the first pass in a fresh process pays for kernel selection and compilation per
                # batch shape; timed apart, the case is then opened again (a new cache, no hit)
                log("  first (cold) pass over the case")
                cold = run_engine(case_path, cls_lm, seg_lm, batch, workdir / "results-cache-cold",
                                  stop_after=None if settings.frames >= settings.case_frames else settings.frames)
                cold.pop("_sweep")
                cold.pop("_results")
            cache_root = workdir / "results-cache"
            engine = run_engine(case_path, cls_lm, seg_lm, batch, cache_root,
                                stop_after=None if settings.frames >= settings.case_frames else settings.frames)
            sweep = engine.pop("_sweep")
            engine.pop("_results")
            # a shared CPU: pair each batch with the matmul rate of that moment (a GPU here is not
            # shared, and the probe's matrices would count as the product's GPU memory)
            probe = MatmulProbe(device, choice.dtype, settings.matmul_size) if device.type == "cpu" else None
            components = run_ours_components(sweep, settings.frames, cls_lm, seg_lm, batch, log, probe)
            del probe
            log("  first result with batch 1")
            first_b1 = run_engine(case_path, cls_lm, seg_lm, 1, workdir / "results-cache-b1", stop_after=1)
            log("  reopening the cached sweep")
            reopen = run_reopen(case_path, cls_lm, seg_lm, batch, cache_root)
        mm_after = measure_matmul(device, choice.dtype, n=settings.matmul_size)
        ours = dict(components)
        ours.update(model_load_s=load_s, open_s=engine["open_s"], open_to_first_s=engine["open_to_first_s"],
                    first_batch_frames=engine["first_batch_frames"], engine_frames_done=engine["frames_done"],
                    open_to_first_batch1_s=first_b1["open_to_first_s"],
                    cold_open_to_first_s=None if cold is None else cold["open_to_first_s"],
                    cold_open_to_done_s=None if cold is None else cold["open_to_done_s"])
        done = engine["open_to_done_s"]
        if engine["complete"]:
            ours.update(open_to_done_s=done, open_to_complete_s=done, complete_estimated=False)
        else:
            # scale the scoring part (after the first batch) to the whole case
            first, n_first = engine["open_to_first_s"], engine["first_batch_frames"]
            rest = max(engine["frames_done"] - n_first, 1)
            est = first + (done - first) * (settings.case_frames - n_first) / rest
            ours.update(open_to_done_s=done, open_to_complete_s=est, complete_estimated=True)
        report.reopen = reopen

        # ---------------------------------------------------------------- FLOPs and the ceiling
        log("FLOPs per frame and the matrix-product rate")
        x1 = preprocess_one(sweep, device, choice.dtype)
        cls_flops = count_flops(cls_lm.model, x1)
        seg_flops = count_flops(seg_lm.model, x1)
        analytic = vit_flops(config)
        report.flops = {"method": "torch.utils.flop_counter.FlopCounterMode on one frame through the loaded "
                                  "(merged) models, with formulas added for the fused attention kernels",
                        "cls": cls_flops["total"], "seg": seg_flops["total"], "cls_by_op": cls_flops["by_op"],
                        "seg_by_op": seg_flops["by_op"], "vit_analytic": analytic,
                        "vit_reference_fetalclip": 162.03e9}
        mm = _merge_matmul(mm_before, mm_after)
        rate = mm["median_flops"]
        ceiling = {"matmul": {k: v for k, v in mm.items() if k != "times_s"}, "rate_flops": rate,
                   "cls_fps": rate / cls_flops["total"], "seg_fps": rate / seg_flops["total"],
                   "cls_seg_fps": rate / (cls_flops["total"] + seg_flops["total"])}
        for task in ("cls", "seg"):
            # median batch vs median matmul, and best batch vs best matmul (least disturbed by others)
            limit = report.flops[task] / rate
            measured = ours[f"{task}_s_per_frame_median"]
            ceiling[f"{task}_limit_s_per_frame"] = limit
            ceiling[f"{task}_measured_s_per_frame"] = measured
            ceiling[f"{task}_over_limit"] = measured / limit - 1.0
            ceiling[f"{task}_fraction_of_ceiling"] = limit / measured
            limit_best = report.flops[task] / mm["best_flops"]
            ceiling[f"{task}_limit_s_per_frame_best"] = limit_best
            ceiling[f"{task}_measured_s_per_frame_best"] = ours[f"{task}_s_per_frame_best"]
            ceiling[f"{task}_over_limit_best"] = ours[f"{task}_s_per_frame_best"] / limit_best - 1.0
            # each batch against the matrix-product rate measured right before it
            paired = [t / (report.flops[task] / r) - 1.0
                      for t, r in zip(ours["batch_s_per_frame"][task], ours["batch_matmul_flops"][task])]
            ceiling[f"{task}_over_limit_paired"] = paired
            ceiling[f"{task}_over_limit_paired_median"] = statistics.median(paired) if paired else None
        ceiling["case_limit_s"] = settings.case_frames / ceiling["cls_seg_fps"]
        if device.type == "cpu":
            # for comparison only: the CPU path runs fp32 (models.device); some CPUs multiply bf16 faster
            bf16 = measure_matmul(device, torch.bfloat16, n=settings.matmul_size)
            ceiling["cpu_bf16_matmul"] = {k: v for k, v in bf16.items() if k != "times_s"}
        report.ceiling = ceiling
        _free_memory(device)

        # ---------------------------------------------------------------- GUI
        if not settings.skip_gui:
            log("GUI: frame display")
            with watch.phase("gui"):
                window = measure_window_display(case_path, cls_lm, seg_lm, cls_dir, seg_dir, workdir / "app-home",
                                                settings.gui_frames, log)
                view = measure_frame_display(sweep, cls_lm, seg_lm, settings.gui_frames,
                                             1 if device.type == "cpu" else batch, log)
                report.gui = {"window": window, "frame_view": view}
        del cls_lm, seg_lm, sweep
        _free_memory(device)

        # ---------------------------------------------------------------- seed-style
        if not settings.skip_seed:
            with watch.phase("seed"):
                seed_choice = DeviceChoice(device=device, dtype=torch.float32, batch_size=settings.seed_batch)
                log("seed-style: loading the same bundles without merging LoRA")
                cls_seed = load_bundle(cls_dir, device=seed_choice, merge=False)
                seg_seed = load_bundle(seg_dir, device=seed_choice, merge=False)
                seg_model = seg_seed.model
                if hasattr(seg_model.seg, "use_channels_last"):
                    seg_model.seg.use_channels_last(False)  # the reference ran NCHW
                seg_net = SeedStyleSegmenter(seg_model).eval()
                seed = run_seed_style(case_path, settings.frames, settings.case_frames, cls_seed.model, seg_net,
                                      device, settings.seed_batch, log)
                seg_net.remove_hooks()
                del cls_seed, seg_seed, seg_model, seg_net
            report.agreement = agreement(seed, ours)
            report.seed = {k: v for k, v in seed.items() if not k.startswith("_")}
            _free_memory(device)
        report.ours = {k: v for k, v in ours.items() if not k.startswith("_")}
    finally:
        watch.close()
        if owned_tmp is not None:
            owned_tmp.cleanup()

    ours_phases = [watch.phases[k] for k in ("ours-load", "ours-score") if k in watch.phases]
    report.memory = {"phases": watch.phases, "process_peak_rss_bytes": max_rss_bytes(),
                     "ours_peak_rss_bytes": max((p["rss_peak_bytes"] for p in ours_phases), default=None),
                     "ours_models_rss_bytes": watch.phases.get("ours-load", {}).get("rss_end_bytes"),
                     "ours_peak_gpu_bytes": max((p.get("gpu_peak_bytes", 0) for p in ours_phases), default=None)
                     if device.type == "cuda" else None,
                     "seed_peak_rss_bytes": watch.phases.get("seed", {}).get("rss_peak_bytes"),
                     "seed_peak_gpu_bytes": watch.phases.get("seed", {}).get("gpu_peak_bytes")}
    report.machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report.targets = evaluate_targets(report)
    report.notes.extend(_standard_notes(report))
    return report


def preprocess_one(sweep, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    from fetaliqa_core.preprocess import preprocess_frames

    return preprocess_frames(np.asarray(sweep.frames[:1]), device=device, dtype=dtype)


# ============================================================================ targets and text
def _target(name: str, measured: float | None, limit: float, unit: str, applies: bool, met: bool | None,
            note: str = "") -> dict:
    return {"target": name, "measured": measured, "limit": limit, "unit": unit,
            "status": "n/a" if not applies else ("not measured" if met is None else ("met" if met else "NOT met")),
            "note": note}


def evaluate_targets(r: BenchReport) -> list[dict]:
    """The issue's targets, each with what this run measured and whether it is met (``n/a`` when
    this run's device or architecture is not the one the target is about)."""
    dev = r.settings["device_resolved"].split(":")[0]
    arch = r.settings["arch"]
    full = r.settings["case_frames"] >= ACOUSLIC_CASE_FRAMES
    o, s = r.ours, r.seed or {}
    gpu = dev == "cuda" and arch == "fetalclip"
    cpu_real = dev == "cpu" and arch == "fetalclip"
    out = []
    case_s = o.get("open_to_complete_s") if not o.get("complete_estimated") else None
    out.append(_target("GPU: full case open -> complete cls+seg", case_s, TARGET_GPU_CASE_S, "s", gpu and full,
                       None if case_s is None else case_s <= TARGET_GPU_CASE_S))
    speedup = (s["open_to_complete_s"] / o["open_to_complete_s"]) if s.get("open_to_complete_s") and \
        o.get("open_to_complete_s") else None
    out.append(_target("GPU: full case >= 10x faster than seed-style", speedup, TARGET_GPU_SPEEDUP, "x", gpu and full,
                       None if speedup is None else speedup >= TARGET_GPU_SPEEDUP))
    c = r.ceiling
    for task, label in (("cls", "classifier"), ("seg", "segmenter")):
        over = c.get(f"{task}_over_limit_paired_median")
        if over is None:
            over = c.get(f"{task}_over_limit")
        median = c.get(f"{task}_over_limit")
        out.append(_target(f"CPU real arch: {label} within 10 % of matmul-bound time per frame",
                           None if over is None else 100.0 * over, 100.0 * TARGET_CPU_LIMIT_MARGIN,
                           "% over limit", cpu_real, None if over is None else over <= TARGET_CPU_LIMIT_MARGIN,
                           f"each batch vs the matmul rate measured just before it, median of "
                           f"{len(c.get(f'{task}_over_limit_paired') or [])} batches" +
                           ("" if median is None else f"; median vs median: {100.0 * median:+.0f} %")))
    first = o.get("open_to_first_s")
    out.append(_target(f"CPU real arch: first result <= {TARGET_CPU_FIRST_S:g} s after opening", first,
                       TARGET_CPU_FIRST_S, "s", cpu_real, None if first is None else first <= TARGET_CPU_FIRST_S,
                       f"engine batch {o.get('first_batch_frames')}; with batch 1: "
                       f"{_fmt(o.get('open_to_first_batch1_s'), 's')}"))
    rss = r.memory.get("ours_peak_rss_bytes")
    out.append(_target("CPU real arch: peak RSS < 3 GB for a full-size case", None if rss is None else rss / GB,
                       TARGET_RSS_BYTES / GB, "GB", cpu_real and full,
                       None if rss is None else rss < TARGET_RSS_BYTES))
    gui = r.gui or {}
    window, view = gui.get("window") or {}, gui.get("frame_view") or {}
    if window.get("p95_ms") is not None:
        p95, note = window["p95_ms"], (f"whole main window, scoring {'running' if window.get('scoring_running') else 'ENDED'}"
                                       f" at the end; frame view alone: "
                                       f"{_fmt((view.get('engine_running') or {}).get('p95_ms'), 'ms')}")
    else:
        p95, note = (view.get("engine_running") or {}).get("p95_ms"), "frame view widget alone"
    out.append(_target("frame display p95 while the engine runs", p95, TARGET_DISPLAY_P95_MS, "ms", True,
                       None if p95 is None else p95 <= TARGET_DISPLAY_P95_MS, note))
    return out


def _standard_notes(r: BenchReport) -> list[str]:
    notes = []
    dev = r.settings["device_resolved"].split(":")[0]
    check = (r.seed or {}).get("cpu_bf16_autocast")
    if dev == "cpu" and check:
        notes.append(f"seed-style on the CPU runs fp32 without autocast: bf16 autocast of its classifier took "
                     f"{check['bf16_over_fp32']:.1f}x the fp32 time here ({check['frames']} frame; FACTS.md measured "
                     f"~6x on a CPU without bf16 instructions)")
    if r.ours.get("complete_estimated"):
        notes.append(f"the engine scored {r.ours.get('engine_frames_done')} of {r.settings['case_frames']} frames; "
                     "'complete case' times are extrapolated from the per-frame rate (marked est.)")
    if r.settings["arch"] == "fetalclip" and dev == "cpu":
        notes.append(f"real architecture on the CPU timed on {r.settings['frames']} frames "
                     f"(~1.4 s per frame per encoder pass); the case file has {r.settings['case_frames']} frames")
    return notes


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if unit == "GB":
        return f"{value:.2f} GB"
    a = abs(value)
    text = f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 0.1 else f"{value:.3f}"
    return f"{text} {unit}".strip()


def format_report(r: BenchReport) -> str:
    """The human-readable table printed by ``fetaliqa bench``."""
    st, m = r.settings, r.machine
    lines = []
    dev = st["device_resolved"]
    where = m.get("gpu") or f"{m.get('cpu_model')} ({m.get('cpu_count')} cores, {m.get('cpu_capability')})"
    mem = m.get("memory_bytes")
    lines.append(f"FetalIQA benchmark: arch {st['arch']}, device {dev} ({st['dtype']}), batch {st['batch_size']} "
                 f"(seed-style {st['seed_batch']})")
    lines.append(f"machine: {where}; {mem / 2**30:.1f} GiB RAM; torch {m.get('torch')}; "
                 f"load avg {_load(m.get('load_average_start'))} at start, {_load(m.get('load_average_end'))} at end"
                 if mem else f"machine: {where}; torch {m.get('torch')}")
    lines.append(f"frames: {st['frames']} timed per path, case file {st['case_frames']} frames of "
                 f"{ACOUSLIC_SHAPE[0]}x{ACOUSLIC_SHAPE[1]} uint8 (uncompressed .mha)")
    lines.append("")
    head = f"{'':44s}{'seed-style':>12s}{'ours':>12s}{'ours vs seed':>14s}"
    lines.append(head)
    lines.append("-" * len(head))
    for row in r.comparison_rows():
        factor = "-" if row["ours_vs_seed"] is None else f"{row['ours_vs_seed']:.2f}x"
        lines.append(f"{row['metric'] + ' (' + row['unit'] + ')':44s}{_fmt(row['seed']):>12s}"
                     f"{_fmt(row['ours']):>12s}{factor:>14s}")
    mem_ = r.memory
    lines.append(f"{'peak RSS (GB)':44s}{_fmt(_gb(mem_.get('seed_peak_rss_bytes'))):>12s}"
                 f"{_fmt(_gb(mem_.get('ours_peak_rss_bytes'))):>12s}")
    ph = mem_.get("phases", {})
    lines.append(f"  (RSS per phase, start -> peak GB: " + ", ".join(
        f"{k} {_gb(v['rss_start_bytes']):.2f} -> {_gb(v['rss_peak_bytes']):.2f}" for k, v in ph.items()) +
        "; phases run in this order in one process, so a later phase starts with what earlier ones left)")
    if mem_.get("ours_peak_gpu_bytes") is not None:
        lines.append(f"{'peak GPU memory allocated (GB)':44s}{_fmt(_gb(mem_.get('seed_peak_gpu_bytes'))):>12s}"
                     f"{_fmt(_gb(mem_.get('ours_peak_gpu_bytes'))):>12s}")
    lines.append("(ours vs seed: frames/s ours/seed, times seed/ours; > 1 means ours is faster)")
    o = r.ours
    if o.get("cold_open_to_done_s") is not None:
        lines.append(f"ours, first pass in this process (cold: kernel selection per batch shape): first result "
                     f"{_fmt(o.get('cold_open_to_first_s'), 's')}, done {_fmt(o.get('cold_open_to_done_s'), 's')}; "
                     "the table shows the second pass")
    lines.append(f"ours: bundles loaded in {_fmt(o.get('model_load_s'), 's')}; file opened in {_fmt(o.get('open_s'), 's')}; "
                 f"first result after {o.get('first_batch_frames')} frames; with engine batch 1: "
                 f"{_fmt(o.get('open_to_first_batch1_s'), 's')}")
    rp = r.reopen
    if rp:
        lines.append(f"reopening the cached sweep: {_fmt(rp.get('seconds'), 's')} to {rp.get('frames')} cached results "
                     f"({'hit' if rp.get('cache_hit') else 'MISS'}{'' if rp.get('complete') else ', partial'})")
    if r.agreement:
        a = r.agreement
        lines.append(f"agreement seed vs ours: input max |d| {a['preprocess_max_abs_grey']:.2f} grey levels "
                     f"(mean {a['preprocess_mean_abs_grey']:.3f}); classifier max |dp| {a['cls_max_abs_p']:.4f}; "
                     f"mask pixels agreeing {100 * a['seg_pixel_agreement']:.3f} % (IoU {a['seg_iou']:.4f})")
    lines.append("")
    c, fl = r.ceiling, r.flops
    if c:
        mm = c["matmul"]
        lines.append(f"hardware: {mm['dtype']} matmul {mm['n']}x{mm['n']}: {c['rate_flops'] / 1e9:.1f} GFLOP/s median "
                     f"(best {mm['best_flops'] / 1e9:.1f}) over {mm['reps']} runs")
        if "cpu_bf16_matmul" in c:
            lines.append(f"          (bf16 matmul on this CPU, for comparison: "
                         f"{c['cpu_bf16_matmul']['median_flops'] / 1e9:.1f} GFLOP/s median)")
        lines.append(f"FLOPs per frame (FlopCounterMode, merged models): classifier {fl['cls'] / 1e9:.2f} G, "
                     f"segmenter {fl['seg'] / 1e9:.2f} G (ViT analytic {fl['vit_analytic'] / 1e9:.2f} G)")
        lines.append(f"matmul-bound ceiling: classifier {_fmt(c['cls_fps'])} frames/s, segmenter {_fmt(c['seg_fps'])}, "
                     f"both {_fmt(c['cls_seg_fps'])} -> full case {_fmt(c['case_limit_s'], 's')}")
        for task, label in (("cls", "classifier"), ("seg", "segmenter")):
            lines.append(f"ours {label}: median {c[f'{task}_measured_s_per_frame'] * 1000:.1f} ms/frame vs limit "
                         f"{c[f'{task}_limit_s_per_frame'] * 1000:.1f} ms ({100 * c[f'{task}_over_limit']:+.0f} %); "
                         f"best {c[f'{task}_measured_s_per_frame_best'] * 1000:.1f} ms vs "
                         f"{c[f'{task}_limit_s_per_frame_best'] * 1000:.1f} ms at the best matmul rate "
                         f"({100 * c[f'{task}_over_limit_best']:+.0f} %)"
                         + ("; paired per batch: " + ", ".join(f"{100 * v:+.0f} %" for v in c[f"{task}_over_limit_paired"])
                            if c[f"{task}_over_limit_paired"] else ""))
    if r.gui is not None:
        w, g = r.gui.get("window") or {}, r.gui.get("frame_view") or {}
        if "skipped" in w:
            lines.append(f"main window display: skipped ({w['skipped']})")
        elif w:
            lines.append(f"main window display (set_frame + repaint, app scoring meanwhile): median {w['median_ms']:.1f} ms "
                         f"p95 {w['p95_ms']:.1f} max {w['max_ms']:.1f} (n={w['steps']}, {w['frames_scored_during']} "
                         f"frames scored meanwhile, scoring {'still running' if w['scoring_running'] else 'ended'})")
        if "skipped" in g:
            lines.append(f"frame view display: skipped ({g['skipped']})")
        elif g:
            i, b = g["idle"], g["engine_running"]
            lines.append(f"frame view alone ({g['qt_platform']}, {g['view_size'][0]}x{g['view_size'][1]}, frame + overlay, "
                         f"one paint): idle median {i['median_ms']:.1f} ms p95 {i['p95_ms']:.1f}; engine running "
                         f"median {b['median_ms']:.1f} ms p95 {b['p95_ms']:.1f} max {b['max_ms']:.1f} "
                         f"(n={b['n']}, {g['engine_batches_during']} engine batches meanwhile)")
    lines.append("")
    lines.append("targets:")
    for t in r.targets:
        lines.append(f"  [{t['status']:>12s}] {t['target']}: {_fmt(t['measured'], t['unit'])} "
                     f"(limit {_fmt(t['limit'], t['unit'])}){'; ' + t['note'] if t['note'] else ''}")
    if r.notes:
        lines.append("notes:")
        lines.extend(f"  - {n}" for n in r.notes)
    return "\n".join(lines)


def _gb(value: int | None) -> float | None:
    return None if value is None else value / GB


def _load(values) -> str:
    return "-" if not values else "/".join(f"{v:.2f}" for v in values)


def write_json(report: BenchReport, path: Path) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise FetalIQAError(f"cannot write the benchmark report {path} ({exc.strerror}); choose a writable "
                            "--json path") from None
