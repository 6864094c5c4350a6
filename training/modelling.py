"""The trained model: building it for a task, its trainable state, its outputs, its exported tower."""

from __future__ import annotations

from pathlib import Path

from fetaliqa_core.errors import FetalIQAError
from training.config import TrainConfig


def build_model(cfg: TrainConfig, device, seed: int):
    """The model of ``cfg.task`` on its base, trainable parts initialised from ``seed``.

    Returns ``(model, BaseInfo)``; the model is on ``device`` in fp32 (autocast does bf16 on CUDA).
    """
    import torch

    from fetaliqa_core.models.base import build_vision_tower
    from fetaliqa_core.models.lora import LoraSettings
    from fetaliqa_core.models.tasks import TASKS

    visual, base_info = build_vision_tower(cfg.config_name, cfg.base, device="cpu", dtype=torch.float32, seed=0)
    targets = {} if not cfg.lora_targets else {"targets": tuple(cfg.lora_targets)}
    lora = None if cfg.full_finetune else LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                                       **targets)
    torch.manual_seed(seed)
    model = TASKS[cfg.task].build(visual, lora, n_classes=cfg.seg_classes, init_filters=cfg.init_filters,
                                  decoder_block=cfg.decoder_block)
    if cfg.full_finetune:
        model.encoder.visual.requires_grad_(True)
    if cfg.seg_prior is not None and getattr(model, "seg", None) is not None:
        init_segmentation_prior(model.seg.decoder.out, cfg.seg_prior)
    return model.to(device), base_info


def init_segmentation_prior(out_conv, prior: float) -> None:
    """Set the bias of the decoder's last 1x1 convolution so that every pixel starts at
    P(abdomen) = ``prior`` (the rest background; for 3 classes split evenly between optimal and
    suboptimal). Weights are scaled down so the bias dominates at the start."""
    import math

    import torch

    with torch.no_grad():
        out_conv.weight.mul_(0.1)
        if out_conv.out_channels == 1:
            out_conv.bias.fill_(math.log(prior / (1.0 - prior)))
        else:
            fg = prior / (out_conv.out_channels - 1)
            out_conv.bias.copy_(torch.tensor([math.log(1.0 - prior)] + [math.log(fg)] * (out_conv.out_channels - 1)))


def frozen_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model) -> dict:
    """What a checkpoint stores: trainable parameters and buffers (the frozen base is not saved)."""
    frozen = frozen_names(model)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model, state: dict, source: str) -> None:
    import torch

    expected = set(trainable_state(model))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise FetalIQAError(f"{source} does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected "
                            "tensors): the run's settings changed; start a new --out")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)


def model_outputs(model, x, task: str):
    """``(cls_logits (B,) | None, seg_logits (B, C, 224, 224) | None)``."""
    from fetaliqa_core.models.tasks import TASKS

    cls_logits, seg_logits = TASKS[task].split(model(x))
    return (None if cls_logits is None else cls_logits[:, 0]), seg_logits


def to_model_input(frames, device):
    """Loader frames (uint8 ``(B, H, W)`` tensor, or a list of ``(H, W)`` of mixed sizes) -> ``(B, 3, 224, 224)``."""
    import torch

    from fetaliqa_core.preprocess import preprocess_frames

    if isinstance(frames, list):
        return torch.cat([preprocess_frames(f, device=device) for f in frames])
    return preprocess_frames(frames, device=device)


def uses_bf16(device, precision: str | None = "auto") -> bool:
    """Whether training and validation run under bf16 autocast on ``device``: ``"bf16"`` /
    ``"fp32"`` force it; ``"auto"`` (or None: ``FETALIQA_PRECISION``) is bf16 on CUDA and on CPUs
    with bf16 matrix instructions where a short measured product pays (the product's own rule,
    :func:`fetaliqa_core.models.device.select_device`), fp32 elsewhere."""
    import torch

    from fetaliqa_core.models.device import select_device

    if device.type not in ("cuda", "cpu"):
        return False
    return select_device(str(device), precision).dtype == torch.bfloat16


def autocast_context(device, precision: str | None = "auto"):
    import contextlib

    import torch

    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def export_base_weights(model, config_name: str, path: Path) -> Path:
    """The model's (fully fine-tuned) vision tower as a full CLIP state dict in FetalCLIP's format:
    ``visual.*`` from the model, the text tower and ``logit_scale`` from a seeded random CLIP of the
    same config (the product never runs the text tower)."""
    from fetaliqa_core.models.base import random_clip_state_dict, save_base_weights

    state = random_clip_state_dict(config_name, seed=0)
    visual = model.encoder.visual.state_dict()
    for k, v in visual.items():
        key = f"visual.{k}"
        if key not in state:
            raise FetalIQAError(f"internal: vision tower key {k} has no place in the CLIP state dict")
        state[key] = v.detach().float().cpu()
    return save_base_weights(state, path)
