"""The one place that decides where models run, in which dtype, and how many frames per batch.

Precision: bf16 on CUDA; on a CPU, bf16 only where the CPU has bf16 matrix instructions (Intel
AMX, AVX-512 BF16) *and* a short measured matrix product does not find bf16 slower than fp32
there (on a CPU without them bf16 runs several times slower than fp32); fp32 elsewhere.
The measured decision is kept in the cache folder for this CPU and torch version, so that the
same command on the same machine runs in the same precision (and gives the same answer) even
when a later probe would be disturbed by other programs. The user can force either
(``precision="bf16"`` / ``"fp32"``, ``--precision``, or the ``FETALIQA_PRECISION`` environment
variable). A forced bf16 on a CPU whose flags show no bf16 matrix instructions is honoured, but
said once a process (a warning on stderr) and in the choice's description, since it costs a
several-fold slowdown that nothing else shows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.options import DEVICE_CHOICES, PRECISION_CHOICES

# Frames per forward pass. CUDA: batch 128 reached the throughput plateau of a ViT-L/14 in bf16
# on an H200 (2687 frames/s, merged LoRA, bf16). CPU: larger batches give no speed-up (the tower is compute-bound at
# batch 1) and only delay the first results.
BATCH_SIZE = {"cuda": 128, "mps": 16, "cpu": 8}
# CPU in fp32: half the batch. Activations and the matmul library's packed weights are twice
# bf16's size; the real classifier + segmenter pair with a full case in memory peaked at 3.08 GB
# with batch 8 and 2.71 GB with batch 4, and batch 4 was no slower (2.32-2.46 against 2.45-2.58 s
# a frame; the demo models and the student 52 against 57 and 12 against 13 ms a frame).
CPU_FP32_BATCH = 4
PRECISION_ENV = "FETALIQA_PRECISION"
# CPU flags (Linux /proc/cpuinfo names) of bf16 matrix instructions
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 is chosen on a CPU whose flags cannot be read only when the probe's bf16 product takes at
# most this share of fp32's. Where the CPU reports bf16 matrix instructions, bf16 is chosen unless
# the probe finds it slower than fp32: the instructions make it 2-8x faster, and a probe on a busy
# machine (another program on the cores) measured both near-equal and chose fp32 one time, bf16
# the next, so that the same sweep got another answer on the same machine.
BF16_MAX_TIME_RATIO = 0.8
BF16_FLAGGED_MAX_TIME_RATIO = 1.0
# Said where bf16 is forced on a CPU without bf16 matrix instructions: measured on an AVX2-only
# CPU, scoring ran at 1.0 frames/s in bf16 against ~7 in fp32, training at 0.58 against 4.5.
SLOW_BF16 = "this CPU has no bf16 matrix instructions, so bf16 runs several times slower than fp32 here"
_slow_bf16_warned = False


def bf16_pays(flags: tuple[str, ...], fp32_gflops: float, bf16_gflops: float) -> bool:
    """Whether the probe's rates make bf16 this CPU's automatic precision (see above)."""
    limit = BF16_FLAGGED_MAX_TIME_RATIO if flags else BF16_MAX_TIME_RATIO
    return fp32_gflops / bf16_gflops <= limit


@dataclass(frozen=True)
class CpuPrecisionProbe:
    """What decided a CPU's automatic precision (measured once per process)."""

    flags: tuple[str, ...]  # bf16 matrix-instruction flags the CPU reports
    flags_known: bool  # False where the CPU's flags cannot be read (not Linux)
    fp32_gflops: float | None  # probe product rates, None when not measured
    bf16_gflops: float | None
    use_bf16: bool

    @property
    def reason(self) -> str:
        return self._words(rates=True)

    @property
    def record_reason(self) -> str:
        """:attr:`reason` without the measured rates, for files (``summary.json``): the same
        set-up always writes the same text."""
        return self._words(rates=False)

    def _words(self, rates: bool) -> str:
        if self.flags_known and not self.flags:
            return "no bf16 matrix instructions"
        what = "/".join(f.upper() for f in self.flags) or "bf16"
        if self.bf16_gflops is None or self.fp32_gflops is None:
            return f"{what} not measured"
        if rates:
            return f"{what}, bf16 matmul {self.bf16_gflops / self.fp32_gflops:.1f}x fp32"
        return f"{what}, bf16 measured {'faster' if self.use_bf16 else 'not faster'} than fp32"

    def to_dict(self) -> dict:
        return {"flags": list(self.flags), "flags_known": self.flags_known, "fp32_gflops": self.fp32_gflops,
                "bf16_gflops": self.bf16_gflops, "use_bf16": self.use_bf16, "reason": self.reason}


@dataclass(frozen=True)
class DeviceChoice:
    """Where and how the models run."""

    device: torch.device
    dtype: torch.dtype  # weights and activations: bf16 on CUDA and bf16-capable CPUs, else fp32
    batch_size: int
    precision_reason: str = ""  # why this dtype ("forced", or what the CPU probe found)
    warning: str = ""  # what the user should know of this choice (forced bf16 on a CPU without bf16 instructions)
    record_reason: str = ""  # precision_reason without measured rates (for files); "": the same

    @property
    def precision_record(self) -> str:
        """Why this dtype, in words that do not change from run to run (``summary.json``)."""
        if self.record_reason or self.precision_reason:
            return self.record_reason or self.precision_reason
        return {"cuda": "auto: bf16 on a CUDA GPU", "mps": "auto: fp32 on Apple MPS"}.get(self.device.type, "auto")

    @property
    def precision(self) -> str:
        return _dtype_name(self.dtype)

    @property
    def description(self) -> str:
        why = f": {self.precision_reason}" if self.precision_reason else ""
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
            return f"{name} (CUDA, {self.precision}{why})"
        if self.device.type == "mps":
            return f"Apple GPU (MPS, {self.precision}{why})"
        n = torch.get_num_threads()
        return f"CPU ({n} thread{'' if n == 1 else 's'}, {self.precision}{why})"


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@lru_cache(maxsize=1)
def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in Linux's /proc/cpuinfo (read once a process), None where
    it cannot be read or has no such field."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.lower().startswith(field):
            return line.split(":", 1)[1].strip() if ":" in line else ""
    return None


def cpu_bf16_flags() -> tuple[tuple[str, ...], bool]:
    """(bf16 matrix-instruction flags of this CPU, whether the flags could be read at all)."""
    flags = _cpuinfo("flags")
    if flags is None:
        return (), False
    have = set(flags.split())
    return tuple(f for f in CPU_BF16_FLAGS if f in have), True


def cpu_lacks_bf16() -> bool:
    """Whether this CPU's flags are known and show no bf16 matrix instructions: bf16 then runs
    several times slower than fp32 (a 2048 x 2048 bf16 product took 98 s on an AVX2-only CPU,
    fp32 0.22 s). Where the flags cannot be read, nothing is assumed."""
    flags, known = cpu_bf16_flags()
    return known and not flags


def _warn_slow_bf16() -> None:
    """One warning a process: bf16 forced on a CPU without bf16 matrix instructions."""
    global _slow_bf16_warned
    if _slow_bf16_warned:
        return
    _slow_bf16_warned = True
    logging.getLogger("fetaliqa").warning(
        "warning: bf16 forced (--precision, %s or the window's Models... choice); %s. "
        "Choose auto (--precision auto; fp32 on this CPU) for speed.", PRECISION_ENV, SLOW_BF16)


def _matmul_seconds(dtype: torch.dtype, m: int = 512, n: int = 1024, k: int = 1024, reps: int = 3) -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(dtype)
    b = torch.randn(k, n, generator=gen).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        torch.mm(a, b)  # warm-up (oneDNN picks its kernel)
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    return best


def measure_cpu_matmul(m: int = 512, n: int = 1024, k: int = 1024, rounds: int = 5) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s of a ``(m,k) @ (k,n)`` product, measured alternately so that both
    see the same load from other processes; the best of ``rounds`` each (~0.2 s in all)."""
    fp32 = bf16 = float("inf")
    for _ in range(rounds):
        fp32 = min(fp32, _matmul_seconds(torch.float32, m, n, k))
        bf16 = min(bf16, _matmul_seconds(torch.bfloat16, m, n, k))
    flop = 2.0 * m * n * k
    return flop / fp32 / 1e9, flop / bf16 / 1e9


#: The kept probe (in the cache folder): one small JSON object.
PROBE_FILE = "cpu_precision.json"
_PROBE_FILE_LIMIT = 4096


def _machine_key(flags: tuple[str, ...]) -> dict:
    """What the probe's answer depends on: the CPU (model name, bf16 flags, cores), the threads
    torch uses and its version."""
    import platform

    model = (_cpuinfo("model name") or "")[:200]
    return {"cpu": model or platform.processor()[:200], "flags": list(flags), "cores": os.cpu_count() or 0,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def _kept_probe(key: dict, flags: tuple[str, ...], known: bool) -> CpuPrecisionProbe | None:
    """The probe measured before on this machine, if the cache holds one for ``key``."""
    from fetaliqa_core import paths

    from fetaliqa_core.validate import read_json_bounded

    try:
        path = paths.cache_dir() / PROBE_FILE
        if not path.exists():
            return None
        # bounded, and a regular file only: a pipe put there hung every run on this machine
        kept = read_json_bounded(path, "the kept precision probe", "", max_bytes=_PROBE_FILE_LIMIT)
        if not isinstance(kept, dict) or kept.get("key") != key:
            return None
        fp32, bf16 = float(kept["fp32_gflops"]), float(kept["bf16_gflops"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError, OverflowError,
            FetalIQAError):
        return None  # none kept, unreadable or damaged (deeply nested, huge numbers): measure again
    if not all(math.isfinite(v) and v > 0 for v in (fp32, bf16)):
        return None
    return CpuPrecisionProbe(flags, known, fp32, bf16, use_bf16=bf16_pays(flags, fp32, bf16))


def _keep_probe(key: dict, probe: CpuPrecisionProbe) -> None:
    from fetaliqa_core import paths
    from fetaliqa_core.files import atomic_write

    try:
        atomic_write(paths.cache_dir() / PROBE_FILE, json.dumps(
            {"key": key, "fp32_gflops": probe.fp32_gflops, "bf16_gflops": probe.bf16_gflops}))
    except (OSError, FetalIQAError):
        pass  # an unwritable cache: measured again next time


@lru_cache(maxsize=1)
def cpu_precision_probe() -> CpuPrecisionProbe:
    """Whether bf16 pays on this CPU: its flags, then (only where it has bf16 instructions, or
    where flags cannot be read) one short measured product in each dtype, measured once per
    machine (kept in the cache folder) and cached per process."""
    flags, known = cpu_bf16_flags()
    if known and not flags:
        return CpuPrecisionProbe(flags, known, None, None, use_bf16=False)
    key = _machine_key(flags)
    kept = _kept_probe(key, flags, known)
    if kept is not None:
        return kept
    try:
        fp32, bf16 = measure_cpu_matmul()
    except RuntimeError:  # a build without bf16 CPU kernels
        return CpuPrecisionProbe(flags, known, None, None, use_bf16=False)
    probe = CpuPrecisionProbe(flags, known, fp32, bf16, use_bf16=bf16_pays(flags, fp32, bf16))
    _keep_probe(key, probe)
    return probe


def precision_preference(precision: str | None) -> str:
    """"auto", "bf16" or "fp32": what the user asked for (None: ``FETALIQA_PRECISION``, else auto)."""
    return _precision_preference(precision)


def _precision_preference(precision: str | None) -> str:
    text = (precision if precision is not None else os.environ.get(PRECISION_ENV) or "auto")
    text = str(text).strip().lower()
    if text not in PRECISION_CHOICES:
        raise FetalIQAError(f"precision {text!r} is not known; choose one of {', '.join(PRECISION_CHOICES)}"
                            + (f" (check the {PRECISION_ENV} environment variable)" if precision is None else ""))
    return text


def _choice(device: torch.device, precision: str) -> DeviceChoice:
    batch = BATCH_SIZE[device.type]
    fp32_batch = CPU_FP32_BATCH if device.type == "cpu" else batch
    if precision == "bf16":
        if device.type == "cpu" and cpu_lacks_bf16():
            # honoured (the user asked), but never silently: it costs several times the time
            _warn_slow_bf16()
            return DeviceChoice(device, torch.bfloat16, batch, f"forced; {SLOW_BF16}", warning=SLOW_BF16)
        return DeviceChoice(device, torch.bfloat16, batch, "forced")
    if precision == "fp32":
        return DeviceChoice(device, torch.float32, fp32_batch, "forced")
    if device.type == "cuda":
        return DeviceChoice(device, torch.bfloat16, batch)
    if device.type == "cpu":
        probe = cpu_precision_probe()
        if probe.use_bf16:
            return DeviceChoice(device, torch.bfloat16, batch, probe.reason, record_reason=probe.record_reason)
        return DeviceChoice(device, torch.float32, fp32_batch, probe.reason, record_reason=probe.record_reason)
    return DeviceChoice(device, torch.float32, batch)


def select_device(preference: str | torch.device | DeviceChoice = "auto", precision: str | None = None,
                  words: str = "cli") -> DeviceChoice:
    """``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` or ``"mps"``.

    ``precision``: ``"auto"`` (bf16 on CUDA and on CPUs where it measurably pays, fp32
    elsewhere), ``"bf16"`` or ``"fp32"``; None reads ``FETALIQA_PRECISION`` (default auto).
    Asking for a device this computer lacks raises :class:`FetalIQAError`, saying what to do
    where the device was chosen: ``words`` "cli" (its options) or "window" (the app's Models…
    dialog, where "use --device auto" named nothing the user could find).
    """
    if isinstance(preference, DeviceChoice):
        if precision is None or _precision_preference(precision) in ("auto", preference.precision):
            return preference
        preference = str(preference.device)
    prec = _precision_preference(precision)
    text = str(preference).strip().lower() if preference is not None else "auto"
    if text == "auto":
        if torch.cuda.is_available():
            return _choice(torch.device("cuda", torch.cuda.current_device()), prec)
        if _mps_available():
            return _choice(torch.device("mps"), prec)
        return _choice(torch.device("cpu"), prec)
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in BATCH_SIZE:
        raise FetalIQAError(
            f"device {preference!r} is not known; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    instead = "choose Device auto or cpu in Models…" if words == "window" else "use --device auto or --device cpu"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FetalIQAError(
                f"device {text!r} was asked for but no CUDA GPU is usable here (no NVIDIA GPU, no driver, "
                f"or a CPU-only PyTorch); {instead}")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise FetalIQAError(
                f"device {text!r} does not exist: this computer has {torch.cuda.device_count()} CUDA GPU(s)")
        return _choice(torch.device("cuda", index), prec)
    if device.type == "mps":
        if not _mps_available():
            raise FetalIQAError(f"device 'mps' was asked for but no Apple GPU is usable here; {instead}")
        return _choice(torch.device("mps"), prec)
    return _choice(torch.device("cpu"), prec)
