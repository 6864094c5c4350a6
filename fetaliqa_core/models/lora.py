"""LoRA on FetalCLIP's vision tower, and the encoder wrapper every model head shares.

Where the adapters go (every one of them acts on the output; ``tests/test_models.py`` checks each):

- ``attn``: the whole ``nn.MultiheadAttention`` of each block, through peft's MultiheadAttention
  layer (peft >= 0.15). It adapts the fused q/k/v input projection *and* the output projection by
  merging the low-rank update into the weights around each call. The reference code targeted
  ``attn.out_proj`` as if it were a Linear; ``nn.MultiheadAttention`` reads ``out_proj.weight``
  directly and never calls that Linear, so such an adapter is inert (peft issue #761).
  peft applies no LoRA dropout on this path (the update is merged, not added to activations).
- ``mlp.c_fc`` and ``mlp.c_proj``: the two Linears of each block's MLP.

With r=8, a 1024-wide block carries r x (in + out) LoRA parameters per adapted projection: 32,768
(q/k/v input projection, 1024 -> 3072) + 16,384 (output projection) for ``attn``, 40,960 each for
``mlp.c_fc`` (1024 -> 4096) and ``mlp.c_proj`` (4096 -> 1024), 131,072 in all: 3.15 M for
FetalCLIP's 24 blocks. The reference's MLP-only adapters (the ones that actually trained) are
81,920 per block: 1.97 M (``tests/test_models.py`` counts both on the tiny config).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fetaliqa_core.errors import FetalIQAError

ADAPTER_NAME = "default"
# module names (relative to one transformer block) that may carry LoRA
ALLOWED_TARGETS = ("attn", "mlp.c_fc", "mlp.c_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (the paper, arXiv 2507.22802: r=8, alpha=16, dropout 0.1, bias none)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    bias: str = "none"
    targets: tuple[str, ...] = ALLOWED_TARGETS

    def __post_init__(self) -> None:
        from fetaliqa_core import validate

        problem = validate.lora_problem({"r": self.r, "alpha": self.alpha, "dropout": self.dropout})
        if problem:
            raise FetalIQAError(f"{problem}; give LoRA settings in range (the paper uses r=8, alpha=16)")
        if self.bias != "none":
            raise FetalIQAError(f"LoRA bias must be 'none' (bias training is not supported); got "
                                f"{validate.shown_value(self.bias)}")
        targets = tuple(self.targets)
        bad = [t for t in targets if t not in ALLOWED_TARGETS]
        if not targets or bad:
            raise FetalIQAError(f"LoRA targets must be a non-empty subset of {list(ALLOWED_TARGETS)}; got "
                                f"{validate.shown_value(list(targets))}")
        object.__setattr__(self, "targets", targets)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "LoraSettings":
        if not isinstance(data, dict):
            raise FetalIQAError(f"LoRA settings must be an object; got {type(data).__name__}")
        unknown = set(data) - {"r", "alpha", "dropout", "bias", "targets"}
        if unknown:
            raise FetalIQAError(f"LoRA settings have unknown fields {sorted(unknown)}")
        kwargs = dict(data)
        if "targets" in kwargs:
            if not isinstance(kwargs["targets"], (list, tuple)):
                raise FetalIQAError("LoRA settings: 'targets' must be a list of module names")
            kwargs["targets"] = tuple(kwargs["targets"])
        return cls(**kwargs)

    def peft_config(self):
        from peft import LoraConfig

        pattern = r".*transformer\.resblocks\.\d+\.(" + "|".join(re.escape(t) for t in self.targets) + ")"
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=float(self.dropout), bias=self.bias,
                          target_modules=pattern)


def _file_key(name: str) -> str:
    """peft parameter name -> bundle key (the adapter name dropped)."""
    return name.replace(f".{ADAPTER_NAME}.", ".")


class FetalCLIPEncoder(nn.Module):
    """FetalCLIP's frozen vision tower with optional LoRA adapters.

    ``forward``: ``(B, 3, 224, 224)`` -> pooled, projected embedding ``(B, embed_dim)``.
    ``features``: the same pass, also returning the patch tokens of chosen blocks.
    """

    def __init__(self, visual: nn.Module, lora: LoraSettings | None = None) -> None:
        super().__init__()
        visual.requires_grad_(False)
        self.lora = lora
        self.merged = False
        if lora is not None:
            from peft.tuners.lora import LoraModel

            # injects the adapters into ``visual`` in place; only they require grad
            self.body: nn.Module = LoraModel(visual, lora.peft_config(), ADAPTER_NAME)
        else:
            self.body = visual

    @property
    def visual(self) -> nn.Module:
        """The open_clip VisionTransformer (with LoRA layers inside while unmerged)."""
        return self.body.model if self.has_adapters else self.body

    @property
    def has_adapters(self) -> bool:
        return self.lora is not None and not self.merged

    @property
    def width(self) -> int:
        return int(self.visual.transformer.width)

    @property
    def depth(self) -> int:
        return len(self.visual.transformer.resblocks)

    @property
    def embed_dim(self) -> int:
        return int(self.visual.output_dim)

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.visual.grid_size)

    def _check_training_precision(self) -> None:
        # peft's attention LoRA adds its update to the frozen weights before each call and
        # subtracts it after. In fp32 the rounding residue is ~1e-8 of the weights after 50 steps;
        # in bf16 it was ~1e-3 after 50 steps and grows with every step, corrupting the base.
        # Train with fp32 weights under bf16 autocast (as the paper did).
        if self.training and self.has_adapters and torch.is_grad_enabled() \
                and self.visual.conv1.weight.dtype != torch.float32:
            raise FetalIQAError("training LoRA needs the base weights in float32 (use bf16 autocast for speed); "
                                f"they are {self.visual.conv1.weight.dtype}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, embed_dim)``."""
        self._check_training_precision()
        return self.visual(x)

    def features(self, x: torch.Tensor, blocks: tuple[int, ...], pooled: bool = False
                 ) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """One encoder pass.

        Args:
            x: ``(B, 3, H, W)``.
            blocks: 1-based block numbers whose outputs to return.
            pooled: also return the pooled embedding (otherwise blocks after the last one asked
                for are skipped).

        Returns:
            ``(pooled (B, embed_dim) or None, [patch tokens (B, grid_h*grid_w, width)] per block)``,
            class token dropped.
        """
        self._check_training_precision()
        out = self.visual.forward_intermediates(
            x, indices=[b - 1 for b in blocks], output_fmt="NLC", intermediates_only=not pooled,
            stop_early=not pooled)
        return out.get("image_features"), list(out["image_intermediates"])

    # ------------------------------------------------------------------- adapters
    def adapted_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of every module holding its own LoRA pair (an attention module and its
        ``out_proj`` count separately)."""
        if not self.has_adapters:
            return []
        return [(n, m) for n, m in self.visual.named_modules()
                if isinstance(getattr(m, "lora_B", None), nn.ModuleDict) and ADAPTER_NAME in m.lora_B]

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA tensors keyed by their place in the vision tower (e.g.
        ``transformer.resblocks.0.mlp.c_fc.lora_A.weight``)."""
        if not self.has_adapters:
            return {}
        return {_file_key(n): p.detach() for n, p in self.visual.named_parameters() if "lora_" in n}

    def load_lora_state_dict(self, state: dict[str, torch.Tensor], source: str = "adapter weights") -> None:
        """Copy LoRA tensors in; keys and shapes must match exactly."""
        if not self.has_adapters:
            raise FetalIQAError(f"{source}: this model has no LoRA adapters to load into")
        from fetaliqa_core.models.bundle import check_tensors

        params = self.adapter_params()
        check_tensors(state, params, source)
        for key, param in params.items():
            with torch.no_grad():
                param.copy_(state[key])

    def adapter_params(self) -> dict[str, torch.Tensor]:
        """The LoRA parameters by their key in a bundle's adapter file."""
        return {_file_key(n): p for n, p in self.visual.named_parameters() if "lora_" in n}

    def merge_lora(self) -> None:
        """Fold the adapters into the base weights (peft ``merge_and_unload``) for inference:
        afterwards the tower is a plain VisionTransformer again, as fast as the base."""
        if self.has_adapters:
            self.body = self.body.merge_and_unload()
            self.merged = True
        self.visual.requires_grad_(False)
