"""The seed-style path: the reference code's way of doing the work, timed on the same frames and weights."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fetaliqa_core.bench.inputs import have_simpleitk
from fetaliqa_core.bench.machine import sync
from fetaliqa_core.bench.settings import ACOUSLIC_SHAPE, AGREEMENT_PREPROCESS_FRAMES


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


def seg_foreground(prob: torch.Tensor) -> np.ndarray:
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
    sync(device)
    del warm

    t_open = time.perf_counter()
    if have_simpleitk():
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
            sync(device)
            t1 = time.perf_counter()
            with torch.no_grad(), autocast():
                out = net(x)
            if task == "cls":
                p_cls.append(torch.sigmoid(out.float())[:, 0].cpu().numpy())
            else:
                fg.append(seg_foreground(segmentation_probabilities(out.float()).cpu()))
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
