"""On-the-fly augmentation of training frames (and their masks), the paper's set.

The paper augments offline: two extra copies of every training frame with colour jitter, CLAHE
and an affine transform (translate up to 20 % of the frame, rotate up to 20 degrees), so a
third of what it trains on is unaugmented. Here each draw is augmented with probability
``p = 2/3`` instead, which gives the same mix without writing frames to disk.

Works on the raw ``(H, W)`` uint8 frame before preprocessing. Geometric steps move the mask with
the frame (nearest neighbour, so labels stay labels); intensity steps touch the frame only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """What is drawn per augmented frame (uniform in the given ranges)."""

    p: float = 2.0 / 3.0  # probability a frame is augmented at all
    brightness: float = 0.2  # intensity scaled by 1 +- brightness
    contrast: float = 0.2  # deviation from the mean scaled by 1 +- contrast
    clahe_p: float = 0.5  # probability of CLAHE on an augmented frame
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    translate: float = 0.2  # fraction of width / height, each way
    rotate_deg: float = 20.0  # degrees, each way
    affine_p: float = 1.0  # probability of the affine step on an augmented frame
    jitter_p: float = 1.0  # probability of the colour jitter on an augmented frame
    clahe_clip_max: float | None = None  # CLAHE clip drawn from [clahe_clip, clahe_clip_max] (None: fixed)

    def to_dict(self) -> dict:
        return asdict(self)


NO_AUGMENT = AugmentSettings(p=0.0)
#: The reference code's offline copies (every copy augmented): colour jitter with probability 0.5,
#: CLAHE with probability 0.5 and a clip limit drawn from 1-4 (albumentations' CLAHE defaults, as
#: the reference calls it), the affine transform (always; applied to the padded square at full size).
PAPER_AUGMENT = AugmentSettings(p=1.0, jitter_p=0.5, clahe_p=0.5, clahe_clip=1.0, clahe_clip_max=4.0, affine_p=1.0)


def colour_jitter(frame: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float) -> np.ndarray:
    """Brightness and contrast jitter of a grey ``(H, W)`` uint8 frame (saturation and hue do
    nothing to a grey image copied to three channels)."""
    b = 1.0 + rng.uniform(-brightness, brightness)
    c = 1.0 + rng.uniform(-contrast, contrast)
    x = frame.astype(np.float32) * b
    mean = float(x.mean())
    x = (x - mean) * c + mean
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def clahe(frame: np.ndarray, clip: float = 2.0, grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) of a ``(H, W)`` uint8 frame."""
    op = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(grid), int(grid)))
    return op.apply(np.ascontiguousarray(frame))


def affine_matrix(height: int, width: int, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    """2x3 matrix: rotate by ``angle_deg`` about the frame centre, then shift by ``(tx, ty)``
    pixels (x = column, y = row)."""
    m = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), float(angle_deg), 1.0)
    m[0, 2] += tx
    m[1, 2] += ty
    return m


def apply_affine(frame: np.ndarray, mask: np.ndarray | None, m: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Warp the frame (bilinear) and the mask (nearest) with the same matrix; outside is 0."""
    h, w = frame.shape
    out = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out_mask = None
    if mask is not None:
        out_mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
    return out, out_mask


class Augmenter:
    """Callable ``(frame (H,W) uint8, mask (H,W) uint8 | None, rng) -> (frame, mask)``."""

    def __init__(self, settings: AugmentSettings = AugmentSettings()) -> None:
        self.settings = settings

    def __call__(self, frame: np.ndarray, mask: np.ndarray | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        s = self.settings
        if frame.ndim != 2 or frame.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 frame, got {frame.shape} {frame.dtype}")
        if rng.random() >= s.p:
            return frame, mask
        if s.jitter_p >= 1.0 or rng.random() < s.jitter_p:
            frame = colour_jitter(frame, rng, s.brightness, s.contrast)
        if rng.random() < s.clahe_p:
            clip = s.clahe_clip if s.clahe_clip_max is None else rng.uniform(s.clahe_clip, s.clahe_clip_max)
            frame = clahe(frame, clip, s.clahe_grid)
        if rng.random() < s.affine_p:
            h, w = frame.shape
            angle = rng.uniform(-s.rotate_deg, s.rotate_deg)
            tx = rng.uniform(-s.translate, s.translate) * w
            ty = rng.uniform(-s.translate, s.translate) * h
            frame, mask = apply_affine(frame, mask, affine_matrix(h, w, angle, tx, ty))
        return frame, mask
