"""The one place that decides where models run, in which dtype, and how many frames per batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fetaliqa_core.errors import FetalIQAError

# Frames per forward pass. CUDA: batch 128 reached the throughput plateau of a ViT-L/14 in bf16
# on an H200 (FACTS.md §3). CPU: larger batches give no speed-up (the tower is compute-bound at
# batch 1) and only delay the first results.
BATCH_SIZE = {"cuda": 128, "mps": 16, "cpu": 8}
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceChoice:
    """Where and how the models run."""

    device: torch.device
    dtype: torch.dtype  # weights and activations: bf16 on CUDA, fp32 elsewhere
    batch_size: int

    @property
    def description(self) -> str:
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
            return f"{name} (CUDA, {_dtype_name(self.dtype)})"
        if self.device.type == "mps":
            return f"Apple GPU (MPS, {_dtype_name(self.dtype)})"
        return f"CPU ({torch.get_num_threads()} threads, {_dtype_name(self.dtype)})"


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(dtype, str(dtype))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _choice(device: torch.device) -> DeviceChoice:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return DeviceChoice(device=device, dtype=dtype, batch_size=BATCH_SIZE[device.type])


def select_device(preference: str | torch.device | DeviceChoice = "auto") -> DeviceChoice:
    """``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` or ``"mps"``.

    Asking for a device this computer lacks raises :class:`FetalIQAError`.
    """
    if isinstance(preference, DeviceChoice):
        return preference
    text = str(preference).strip().lower() if preference is not None else "auto"
    if text == "auto":
        if torch.cuda.is_available():
            return _choice(torch.device("cuda", torch.cuda.current_device()))
        if _mps_available():
            return _choice(torch.device("mps"))
        return _choice(torch.device("cpu"))
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in BATCH_SIZE:
        raise FetalIQAError(
            f"device {preference!r} is not known; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FetalIQAError(
                "device 'cuda' was asked for but no CUDA GPU is usable here (no NVIDIA GPU, no driver, "
                "or a CPU-only PyTorch); use --device auto or --device cpu")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise FetalIQAError(
                f"device {text!r} does not exist: this computer has {torch.cuda.device_count()} CUDA GPU(s)")
        return _choice(torch.device("cuda", index))
    if device.type == "mps":
        if not _mps_available():
            raise FetalIQAError("device 'mps' was asked for but no Apple GPU is usable here; use --device auto or cpu")
        return _choice(torch.device("mps"))
    return _choice(torch.device("cpu"))
