"""The machine under test: its description, resident and GPU memory per phase, the timed matrix product
and the models' FLOPs per frame (the hardware ceiling)."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


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
    """The process's peak resident memory so far (None where there is none: Windows).

    On Linux this is ``VmHWM`` of ``/proc/self/status``, the peak of this program's own memory.
    ``getrusage``'s ``ru_maxrss`` is kept across ``exec``, so in a child started by a large
    process it reports the parent's size at the fork: it is the fallback elsewhere only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# The bf16 comparison on a CPU without bf16 matrix instructions: one small product each way (bf16
# 512^3 took 0.3 s on an AVX2-only CPU, where one 2048^3 bf16 product took 98 s, 8 of them 13 min).
SMALL_BF16_SIDE = 512


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
        sync(device)
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
    return {"n": n, "dtype": dtype_name(dtype), "reps": reps, "median_flops": flops / statistics.median(times),
            "best_flops": flops / min(times), "times_s": times}


def merge_matmul(*runs: dict) -> dict:
    """Several :func:`measure_matmul` results of one size and dtype as one."""
    times = [t for r in runs for t in r["times_s"]]
    flops = 2.0 * runs[0]["n"] ** 3
    return {"n": runs[0]["n"], "dtype": runs[0]["dtype"], "reps": len(times),
            "median_flops": flops / statistics.median(times), "best_flops": flops / min(times), "times_s": times}


def dtype_name(dtype: torch.dtype) -> str:
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
