"""One encoder pass feeding both heads: the classifier's linear unit and the UNETR decoder.

The encoder dominates the cost of each head on every device (ViT-L/14: ~162 GFLOP per frame; the
classifier's head is one linear unit, the decoder a fraction of the encoder), so a model trained
jointly (one set of LoRA adapters shared by both heads) scores a frame for both at the price of
one pass.
"""

from __future__ import annotations

import torch
from torch import nn

from fetaliqa_core.models.lora import LoraSettings
from fetaliqa_core.models.segmenter import INIT_FILTERS, FetalCLIPSegmenter


class FetalCLIPJoint(FetalCLIPSegmenter):
    """The segmenter plus the classifier's linear unit on the same encoder pass.

    ``(B, 3, 224, 224)`` -> ``((B, 1) classifier logits, (B, n_classes, 224, 224) mask logits)``.
    """

    task = "joint"

    def __init__(self, visual: nn.Module, lora: LoraSettings | None = LoraSettings(), n_classes: int = 1,
                 init_filters: int = INIT_FILTERS, decoder_block: str = "res") -> None:
        super().__init__(visual, lora, n_classes, init_filters, decoder_block)
        self.head = nn.Linear(self.encoder.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.encoder.features(x, self.seg.blocks, pooled=True)
        if self.seg.tokens_to_grid.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(pooled), self.seg(x, tokens)

    def head_modules(self) -> dict[str, nn.Module]:
        return {"head": self.head, "seg": self.seg}
