"""Small stand-ins for the app's tests (imported as ``fakes``: pytest puts tests/ on the path):
a tiny synthetic sweep and model objects that the real ``ScoringEngine`` accepts (same
attributes as ``models.bundle.LoadedModel``), fast on a CPU.

The fake models read the frame itself: the "abdomen" is the bright ellipse of
:func:`tiny_sweep`, so the segmenter's mask and both scores follow its size along each sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetaliqa_core.io import Sweep


def tiny_frames(n_sweeps: int = 3, per_sweep: int = 20, height: int = 96, width: int = 128,
                seed: int = 0) -> np.ndarray:
    """(N, H, W) uint8: speckle in a fan with a bright ellipse that grows and shrinks in each
    sweep (largest in the middle), absent at the sweep ends."""
    rng = np.random.default_rng(seed)
    n = n_sweeps * per_sweep
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    apex_x, apex_y = width / 2, -height * 0.15
    ang = np.degrees(np.arctan2(xx - apex_x, yy - apex_y))
    rad = np.hypot(xx - apex_x, yy - apex_y)
    fan = (np.abs(ang) < 38) & (rad < height * 1.1)
    frames = np.zeros((n, height, width), np.uint8)
    for i in range(n):
        t = (i % per_sweep) / max(per_sweep - 1, 1)
        size = max(0.0, 1.0 - abs(t - 0.5) * 2.6)  # 0 at the ends, 1 in the middle
        img = rng.gamma(2.0, 22.0, (height, width)).astype(np.float32)
        if size > 0:
            cy, cx = height * 0.55, width * 0.5
            ry, rx = height * 0.28 * size + 1, width * 0.22 * size + 1
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            img[inside] = 205 + rng.normal(0, 8, inside.sum())
        img[~fan] = 0
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def tiny_sweep(n_sweeps: int = 3, per_sweep: int = 20, height: int = 96, width: int = 128,
               seed: int = 0) -> Sweep:
    frames = tiny_frames(n_sweeps, per_sweep, height, width, seed)
    frames.flags.writeable = False
    ranges = [(k * per_sweep, (k + 1) * per_sweep) for k in range(n_sweeps)]
    kinds = (["transverse", "sagittal"] * n_sweeps)[:n_sweeps]
    kinds = sorted(kinds, key=lambda k: k != "transverse")
    return Sweep(frames=frames, spacing_mm=(0.28, 0.28), sweep_ranges=ranges, sweep_kinds=kinds)


@dataclass
class _Prediction:
    p_cls: object | None
    seg_prob: object | None


@dataclass
class _LabelPrediction:
    p_cls: object | None = None
    labels: object | None = None
    n_classes: int = 0


@dataclass
class _Manifest:
    task: str
    n_classes: int


class FakeModel:
    """Quacks like ``LoadedModel`` for ``ScoringEngine``: ``predict((B,3,224,224))``.

    task "cls": p = share of bright pixels, scaled; "seg": 3-class probabilities, bright
    pixels are abdomen, graded optimal when the bright area is large. ``delay`` seconds per
    batch simulate a slow device.
    """

    def __init__(self, task: str, delay: float = 0.0, batch_size: int = 8) -> None:
        import torch

        self.task = task
        self.manifest = _Manifest(task, 3 if task in ("seg", "joint") else 0)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.batch_size = batch_size
        self.bundle_hash = f"fake-{task}"
        self.delay = delay
        self.calls = 0

    def predict(self, x):
        import torch

        from fetaliqa_core.preprocess import OPENAI_MEAN, OPENAI_STD

        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        grey = x[:, 0] * OPENAI_STD[0] + OPENAI_MEAN[0]  # (B, S, S) in [0, 1]
        bright = (grey > 0.7).float()
        frac = bright.mean(dim=(1, 2))
        p_cls = seg = None
        if self.task in ("cls", "joint"):
            p_cls = torch.clamp(frac * 9.0, 0, 1)
        if self.task in ("seg", "joint"):
            opt = (frac > 0.05).float()[:, None, None]
            fg = bright
            seg = torch.stack([1 - fg, fg * opt, fg * (1 - opt)], dim=1)
        return _Prediction(p_cls, seg)

    def predict_labels(self, x):
        """``predict`` with the segmentation as (B, S, S) uint8 labels (0 / 1 optimal / 2)."""
        import torch

        pred = self.predict(x)
        labels = None
        if pred.seg_prob is not None:
            prob = pred.seg_prob
            fg = prob[:, 1] + prob[:, 2] > 0.5
            grade = torch.where(prob[:, 1] >= prob[:, 2], 1, 2).to(torch.uint8)
            labels = torch.where(fg, grade, torch.zeros_like(grade))
        return _LabelPrediction(pred.p_cls, labels, 3 if labels is not None else 0)


@dataclass
class FakeLoadedModels:
    """Quacks like ``models.choice.LoadedModels``."""

    cls: object | None
    seg: object | None
    choice: object = None
    device: str = "cpu"

    def describe(self) -> str:
        return "test models on cpu"

    def short(self) -> str:
        return "test · CPU"

    def record(self) -> str:
        return self.describe()


def fake_models(delay: float = 0.0, batch_size: int = 8, choice=None) -> FakeLoadedModels:
    return FakeLoadedModels(FakeModel("cls", delay, batch_size), FakeModel("seg", 0.0, batch_size),
                            choice=choice)


US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage


def us_dicom(path: Path, arr: np.ndarray, bits: int = 8, signed: bool = False, sop: str = US_MULTIFRAME,
           series: str | None = None, instance: int | None = None, preamble: bool = True, **attrs) -> Path:
    """A multi-frame (or, for a 2-D ``arr``, single-frame) ultrasound DICOM file, MONOCHROME2,
    uncompressed; ``attrs`` are set on the dataset as they are (regions, spacing, windows, ...)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, "US"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series or generate_uid()
    if instance is not None:
        ds.InstanceNumber = instance
    ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, int(signed)
    for key, value in attrs.items():
        setattr(ds, key, value)
    dtype = {8: np.uint8, 16: np.int16 if signed else np.uint16}[bits]
    ds.PixelData = np.ascontiguousarray(arr.astype(dtype)).tobytes()
    if preamble:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # no preamble, no "DICM": common in exports, and the image reader reads it
        ds.preamble = None
        pydicom.dcmwrite(str(path), ds, enforce_file_format=False)
    return path
