"""FetalCLIP_CLS: the LoRA-adapted vision tower and one linear unit on its pooled embedding."""

from __future__ import annotations

import torch
from torch import nn

from fetaliqa_core.models.lora import FetalCLIPEncoder, LoraSettings


class FetalCLIPClassifier(nn.Module):
    """Frame quality classifier (the paper's FetalCLIP_CLS, arXiv 2507.22802).

    ``(B, 3, 224, 224)`` normalised frames -> ``(B, 1)`` logits of "good for AC measurement"
    (sigmoid gives the probability). The head is ``Linear(embed_dim, 1)`` (768 for FetalCLIP) on
    the pooled, projected embedding the CLIP image tower outputs.
    """

    task = "cls"
    head_kind = "binary"

    def __init__(self, visual: nn.Module, lora: LoraSettings | None = LoraSettings()) -> None:
        super().__init__()
        self.encoder = FetalCLIPEncoder(visual, lora)
        self.head = nn.Linear(self.encoder.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` -> ``(B, 1)`` logits."""
        return self.head(self.encoder(x))

    def head_modules(self) -> dict[str, nn.Module]:
        """The trained modules besides LoRA (saved into bundles)."""
        return {"head": self.head}
