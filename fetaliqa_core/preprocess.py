"""Frames -> model input tensors, batched, on the model's device.

The one definition of FetalCLIP's input used by training and inference alike (the paper's reference preprocessing, arXiv 2507.22802):

1. zero-pad each frame to a square, centred (floor of the margin before, the rest after);
2. resize the square to ``size`` x ``size`` with antialiased bicubic interpolation, rounded and
   clamped to 0..255 as an 8-bit image resize would give;
3. grey -> 3 channels, scale to 0..1 and normalise with open_clip's OpenAI mean and std.

Two implementations of these steps, one entry point (:func:`preprocess_frames`): on a GPU the
batch is uploaded as uint8 and resized there (``F.interpolate``, antialiased bicubic); on a CPU
each frame is resized as an 8-bit image with Pillow's antialiased bicubic (the reference's own
resize; Pillow releases the GIL, so frames run in a thread pool) and normalised by a lookup
table. Both agree with the reference (PIL + open_clip's transform) within one grey level on
all but a handful of pixels (``tests/test_preprocess.py``).

Masks take the same padding and a nearest-neighbour resize (pixel-centre rule, as PIL's
``NEAREST``); :func:`mask_to_frame` maps a model-sized mask back onto the original frame.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from fetaliqa_core.errors import FetalIQAError

# Bump whenever the numbers this module produces change: it is part of every model bundle's
# manifest (a bundle made for other preprocessing is refused). Results-cache keys carry a digest of
# the code besides (engine.code_fingerprint), so they do not depend on this being bumped.
PREPROCESS_VERSION = "1"
MODEL_INPUT_SIZE = 224
OPENAI_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def preprocess_spec(size: int = MODEL_INPUT_SIZE) -> dict:
    """What this module does, as written into model bundles (JSON-serialisable)."""
    return {
        "version": PREPROCESS_VERSION,
        "size": size,
        "pad": "centre-zero-square",
        "resize": "bicubic-antialias-uint8-rounded",
        "channels": "grey-to-rgb",
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "mask_resize": "nearest-exact",
    }


@dataclass(frozen=True)
class PadGeometry:
    """Where an ``height`` x ``width`` frame lies inside its zero-padded ``side`` x ``side`` square."""

    height: int
    width: int
    side: int
    top: int
    left: int


def pad_geometry(height: int, width: int) -> PadGeometry:
    """Centred placement of a frame in the smallest enclosing square."""
    if height <= 0 or width <= 0:
        raise FetalIQAError(f"frame size {height}x{width} is empty; a frame needs at least one pixel")
    side = max(height, width)
    return PadGeometry(height, width, side, (side - height) // 2, (side - width) // 2)


def _as_uint8_batch(frames, what: str) -> torch.Tensor:
    """np.ndarray / torch tensor (B,H,W) or (H,W) uint8 -> torch uint8 (B,H,W), no copy when possible."""
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise FetalIQAError(f"{what} must be 8-bit (uint8); got {frames.dtype}")
        if not frames.flags.writeable:
            # read-only memmaps cannot be wrapped by torch; one batch is cheap to copy
            frames = np.array(frames, order="C", copy=True)
        elif not frames.flags.c_contiguous:
            frames = np.ascontiguousarray(frames)
        tensor = torch.from_numpy(frames)
    elif isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise FetalIQAError(f"{what} must be 8-bit (uint8); got {frames.dtype}")
        tensor = frames
    else:
        raise FetalIQAError(f"{what} must be a numpy array or torch tensor; got {type(frames).__name__}")
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 3:
        raise FetalIQAError(f"{what} must have shape (B, H, W) or (H, W); got {tuple(tensor.shape)}")
    return tensor


def _pad_square(batch: torch.Tensor) -> torch.Tensor:
    """(B,H,W) -> (B,S,S), centred zero padding."""
    _, h, w = batch.shape
    g = pad_geometry(h, w)
    if h == w:
        return batch
    return F.pad(batch, (g.left, g.side - w - g.left, g.top, g.side - h - g.top))


def _resize_bicubic(square: torch.Tensor, size: int) -> torch.Tensor:
    """(B,S,S) float32 0..255 -> (B,size,size) float32 0..255, antialiased bicubic, 8-bit rounded."""
    x = square.unsqueeze(1)
    if x.shape[-1] != size:
        try:
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        except (NotImplementedError, RuntimeError):
            # some backends (Apple MPS) lack antialiased bicubic: do that one step on the CPU
            x = F.interpolate(x.cpu(), size=(size, size), mode="bicubic", antialias=True,
                              align_corners=False).to(square.device)
    return x.round_().clamp_(0.0, 255.0)


def preprocess_frames(
    frames,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    size: int = MODEL_INPUT_SIZE,
) -> torch.Tensor:
    """Greyscale uint8 frames -> normalised model input.

    Args:
        frames: uint8 ``(B, H, W)`` or ``(H, W)``, numpy (memmaps fine) or torch.
        device: where the work happens and the result lives (default: where ``frames`` are).
        dtype: dtype of the result (the arithmetic runs in float32 either way).
        size: output side.

    Returns:
        ``(B, 3, size, size)`` tensor on ``device``.
    """
    batch = _as_uint8_batch(frames, "frames")
    device = torch.device(device) if device is not None else batch.device
    if device.type == "cpu" and batch.device.type == "cpu":
        return _preprocess_cpu(batch, size).to(dtype)
    return _preprocess_torch(batch, device, dtype, size)


# ----------------------------------------------------------------------------------- CPU path
_POOL_WORKERS = max(1, min(4, os.cpu_count() or 1))


@lru_cache(maxsize=1)
def _cpu_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_POOL_WORKERS, thread_name_prefix="fetaliqa-resize")


def _resize_one_pil(frame: np.ndarray, size: int) -> np.ndarray:
    """One ``(H, W)`` uint8 frame -> ``(size, size)`` uint8: centred zero pad, antialiased bicubic."""
    from PIL import Image

    g = pad_geometry(*frame.shape)
    square = np.zeros((g.side, g.side), np.uint8)
    square[g.top:g.top + g.height, g.left:g.left + g.width] = frame
    if g.side == size:
        return square
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BICUBIC))


def resize_frames_uint8(frames: np.ndarray, size: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """Steps 1-2 on the CPU: ``(B, H, W)`` uint8 -> ``(B, size, size)`` uint8 grey levels."""
    if len(frames) > 1 and _POOL_WORKERS > 1:
        small = list(_cpu_pool().map(lambda f: _resize_one_pil(f, size), frames))
    else:
        small = [_resize_one_pil(f, size) for f in frames]
    return np.stack(small)


def normalise_grey(grey: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Step 3: ``(B, S, S)`` grey levels (uint8 or float 0..255) -> ``(B, 3, S, S)`` float32."""
    grey = torch.as_tensor(grey).float()
    out = torch.empty((grey.shape[0], 3, *grey.shape[1:]), dtype=torch.float32, device=grey.device)
    for c in range(3):  # the same arithmetic as the torch path: (x - 255 mean) / (255 std)
        torch.sub(grey, OPENAI_MEAN[c] * 255.0, out=out[:, c])
        out[:, c].div_(OPENAI_STD[c] * 255.0)
    return out


def _preprocess_cpu(batch: torch.Tensor, size: int = MODEL_INPUT_SIZE) -> torch.Tensor:
    return normalise_grey(resize_frames_uint8(batch.numpy(), size))


# ----------------------------------------------------------------------------------- torch path
def _preprocess_torch(batch: torch.Tensor, device: torch.device, dtype: torch.dtype, size: int) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)  # upload as uint8: 4x less traffic than floats
    x = _resize_bicubic(_pad_square(batch).float(), size)  # (B,1,size,size)
    mean = torch.tensor(OPENAI_MEAN, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(OPENAI_STD, device=device).view(1, 3, 1, 1) * 255.0
    return ((x - mean) / std).to(dtype)


def preprocess_masks(masks, size: int = MODEL_INPUT_SIZE, device: torch.device | str | None = None) -> torch.Tensor:
    """Label masks ``(B, H, W)`` or ``(H, W)`` uint8 -> ``(B, size, size)`` uint8: same padding as
    :func:`preprocess_frames`, nearest-neighbour resize (labels are never blended)."""
    batch = _as_uint8_batch(masks, "masks")
    if device is not None:
        batch = batch.to(device)
    square = _pad_square(batch).unsqueeze(1)
    if square.shape[-1] != size:
        # nearest on uint8 is supported on CPU/CUDA; go through float for other backends
        square = F.interpolate(square.float(), size=(size, size), mode="nearest-exact").to(torch.uint8)
    return square.squeeze(1)


def _nearest_source_index(n_out: int, n_in: int) -> np.ndarray:
    """Pixel-centre nearest neighbour: which of ``n_in`` source pixels each of ``n_out`` takes."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.clip(idx, 0, n_in - 1)


def mask_to_frame(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of pad + resize for masks: ``(..., s, s)`` -> ``(..., height, width)``.

    Each frame pixel takes the nearest model pixel, so a model mask lies on the original frame's
    pixels (for AC measurement and the overlay).
    """
    mask = np.asarray(mask)
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]:
        raise FetalIQAError(f"mask must be square in its last two axes; got {mask.shape}")
    g = pad_geometry(height, width)
    src = _nearest_source_index(g.side, mask.shape[-1])
    rows = src[g.top:g.top + height]
    cols = src[g.left:g.left + width]
    return mask[..., rows[:, None], cols[None, :]]
