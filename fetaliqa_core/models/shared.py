"""A classifier and a segmenter on the same base: one copy of the base, one encoder pass per batch.

Two bundles trained on the same FetalCLIP base each carry their own LoRA adapters. Merged, they
would need two copies of the 304 M-parameter tower (peak RSS ~5 GB in fp32). Here the base is
loaded once and both adapters stay unmerged as low-rank side paths: the batch is run through the
tower once as ``[x for the classifier; x for the segmenter]`` (2B rows); every adapted layer
computes its frozen base product for all rows at once and adds each head's low-rank update to
its own rows only. The outputs equal those of the two merged models up to rounding
(``tests/test_shared.py``); the base's weights are read once per layer per batch.

What this does not do: save the base's arithmetic. Once the first adapted layer has added
different updates, the two heads' activations differ, so the base's products run on 2B rows:
the same multiply-adds as two passes. Only a joint bundle (one adapter set for both heads) or a
distilled student runs both heads for the price of one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.lora import FetalCLIPEncoder
from fetaliqa_core.models.segmenter import SegmentationHead

GROUPS = ("cls", "seg")


def _pair(state: dict[str, torch.Tensor] | None, key: str, scaling: float):
    """(A (r, in), B (out, r), scaling) stored under ``key`` in a bundle's adapter tensors."""
    if state is None or f"{key}.lora_A.weight" not in state:
        return None
    return state[f"{key}.lora_A.weight"], state[f"{key}.lora_B.weight"], scaling


def _grouped_update(x: torch.Tensor, pairs: list, groups: int) -> torch.Tensor:
    """Per group ``g`` of the leading dim: ``s_g * (x_g A_g^T) B_g^T`` (zeros where a group has no pair)."""
    outs = []
    for g, chunk in enumerate(x.chunk(groups, dim=0)):
        pair = pairs[g]
        if pair is None:
            outs.append(None)
            continue
        a, b, s = pair
        outs.append(F.linear(F.linear(chunk, a.to(chunk.dtype)), b.to(chunk.dtype)) * s)
    ref = next(o for o in outs if o is not None)
    return torch.cat([o if o is not None else torch.zeros_like(ref) for o in outs], dim=0)


class GroupedLoraLinear(nn.Module):
    """A frozen Linear plus one LoRA update per batch group."""

    def __init__(self, base: nn.Linear, pairs: list) -> None:
        super().__init__()
        self.base = base
        self.pairs = pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if any(p is not None for p in self.pairs):
            out = out + _grouped_update(x, self.pairs, len(self.pairs))
        return out


class GroupedLoraAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch first, self-attention) with per-group LoRA on its fused
    input projection and on its output projection (what peft's attention LoRA adapts)."""

    def __init__(self, mha: nn.MultiheadAttention, in_pairs: list, out_pairs: list) -> None:
        super().__init__()
        self.mha = mha
        self.in_pairs = in_pairs
        self.out_pairs = out_pairs
        self.batch_first = mha.batch_first

    def forward(self, q, k=None, v=None, need_weights=False, attn_mask=None, **_):
        m = self.mha
        x = q if self.batch_first else q.transpose(0, 1)
        b, n, d = x.shape
        qkv = F.linear(x, m.in_proj_weight, m.in_proj_bias)
        if any(p is not None for p in self.in_pairs):
            qkv = qkv + _grouped_update(x, self.in_pairs, len(self.in_pairs))
        h = m.num_heads
        qkv = qkv.view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        o = o.transpose(1, 2).reshape(b, n, d)
        out = F.linear(o, m.out_proj.weight, m.out_proj.bias)
        if any(p is not None for p in self.out_pairs):
            out = out + _grouped_update(o, self.out_pairs, len(self.out_pairs))
        return (out if self.batch_first else out.transpose(0, 1)), None


def shared_tower(visual: nn.Module, adapters: list[tuple[dict | None, float]]) -> nn.Module:
    """``visual`` (a plain, frozen open_clip tower) with each bundle's adapter tensors (keys as
    in ``adapter.safetensors``, with its LoRA scaling; None: no adapters) attached as per-group
    side paths, in place."""
    for i, block in enumerate(visual.transformer.resblocks):
        prefix = f"transformer.resblocks.{i}"

        def pairs(path: str) -> list:
            return [_pair(state, f"{prefix}.{path}", scale) for state, scale in adapters]

        attn_in = pairs("attn")
        # peft's attention LoRA (peft 0.15-0.21) adds the output projection's update twice when it
        # merges (once itself, once through the projection's own merge), in training and at
        # export alike: the trained model is that, so the side path is scaled to match
        attn_out = [None if p is None else (p[0], p[1], 2.0 * p[2])
                    for p in pairs("attn.base_layer.out_proj")]
        if any(p is not None for p in attn_in + attn_out):
            block.attn = GroupedLoraAttention(block.attn, attn_in, attn_out)
        for name in ("c_fc", "c_proj"):
            p = pairs(f"mlp.{name}")
            if any(x is not None for x in p):
                setattr(block.mlp, name, GroupedLoraLinear(getattr(block.mlp, name), p))
    return visual


class SharedPair(nn.Module):
    """One tower, two heads: ``x (B, 3, S, S)`` -> ``(p_cls logits (B, 1), seg logits (B, C, S, S))``
    with one pass of ``2B`` rows through the tower (classifier rows first)."""

    task = "joint"

    def __init__(self, visual: nn.Module, adapters: list[tuple[dict | None, float]], n_classes: int,
                 init_filters: int, decoder_block: str = "res") -> None:
        super().__init__()
        self.encoder = FetalCLIPEncoder(shared_tower(visual, adapters), None)
        self.head = nn.Linear(self.encoder.embed_dim, 1)
        self.seg = SegmentationHead(self.encoder, n_classes, init_filters, block=decoder_block)
        self.encoder_passes = 0  # counted for tests and the benchmark

    @property
    def n_classes(self) -> int:
        return self.seg.n_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.encoder_passes += 1
        b = x.shape[0]
        pooled, tokens = self.encoder.features(torch.cat([x, x], dim=0), self.seg.blocks, pooled=True)
        cls = self.head(pooled[:b])
        return cls, self.seg(x, [t[b:] for t in tokens])


def can_share(cls_manifest, seg_manifest) -> bool:
    """Whether a classifier and a segmenter bundle can share one base (same FetalCLIP-family base)."""
    return (cls_manifest.task == "cls" and seg_manifest.task == "seg" and not cls_manifest.is_student
            and not seg_manifest.is_student and cls_manifest.base_sha256 == seg_manifest.base_sha256
            and cls_manifest.base_architecture == seg_manifest.base_architecture)


def _expected_adapters(config: dict, manifest) -> dict[str, torch.Tensor]:
    """The adapter tensors a bundle must hold for its base config and LoRA settings, as the
    single-bundle loader demands them: the adapted tower built on the meta device (no memory,
    no arithmetic), its LoRA parameters by key. (Built through the random base, the tower was
    initialised on the CPU first: 13 s and 1.4 GB more for a ViT-L/14, once per bundle.)"""
    from fetaliqa_core.models.base import _new_visual, load_base_config

    with torch.device("meta"):
        visual = _new_visual(load_base_config(config))
        return FetalCLIPEncoder(visual, manifest.lora_settings).adapter_params()


def load_shared(cls_dir, seg_dir, base_weights=None, device="auto"):
    """A classifier and a segmenter bundle on the same base as one ``LoadedModel`` (task
    ``joint``): the base loaded once, both adapters unmerged, one encoder pass per batch."""
    import dataclasses
    import hashlib
    from pathlib import Path

    from fetaliqa_core.models import bundle as b
    from fetaliqa_core.models.device import select_device

    choice = select_device(device)
    cls_dir, seg_dir = Path(cls_dir).expanduser(), Path(seg_dir).expanduser()
    cm, config, where_c = b.checked_bundle(cls_dir)
    sm, _, where_s = b.checked_bundle(seg_dir)
    if not can_share(cm, sm):
        raise FetalIQAError(f"{where_c} and {where_s} are not a classifier and a segmenter on the same base")
    visual, base = b.base_for(cm, config, base_weights, choice, where_c)

    def adapters(bundle: Path, manifest) -> tuple[dict | None, float]:
        if manifest.lora is None:
            return None, 0.0
        state = b._read_tensors(bundle / b.ADAPTER_FILE)
        b.check_tensors(state, _expected_adapters(config, manifest), str(bundle / b.ADAPTER_FILE))
        return state, manifest.lora_settings.scaling

    model = SharedPair(visual, [adapters(cls_dir, cm), adapters(seg_dir, sm)], sm.n_classes, sm.init_filters,
                       decoder_block=getattr(sm, "decoder_block", "res"))
    head_c, head_s = b._read_tensors(cls_dir / b.HEAD_FILE), b._read_tensors(seg_dir / b.HEAD_FILE)
    b.check_tensors(head_c, {f"head.{k}": v for k, v in model.head.state_dict().items()}, str(cls_dir / b.HEAD_FILE))
    b.check_tensors(head_s, {f"seg.{k}": v for k, v in model.seg.state_dict().items()}, str(seg_dir / b.HEAD_FILE))
    model.head.load_state_dict({k[5:]: v for k, v in head_c.items()}, strict=True)
    model.seg.load_state_dict({k[4:]: v for k, v in head_s.items()}, strict=True)
    model.requires_grad_(False)
    model.eval()
    model.to(device=choice.device, dtype=choice.dtype)
    for module in model.modules():  # adapter tensors live in plain lists: cast them too
        for attr in ("pairs", "in_pairs", "out_pairs"):
            pairs = getattr(module, attr, None)
            if pairs is not None:
                setattr(module, attr, [None if p is None else (p[0].to(choice.device, choice.dtype),
                                                              p[1].to(choice.device, choice.dtype), p[2])
                                       for p in pairs])
    manifest = dataclasses.replace(sm, task="joint", threshold=cm.threshold,
                                   description=f"{cm.description} + {sm.description}")
    digest = hashlib.sha256((b.bundle_hash(cls_dir) + b.bundle_hash(seg_dir)).encode()).hexdigest()
    loaded = b.LoadedModel(model=model, manifest=manifest, bundle_hash=digest, device=choice.device,
                           dtype=choice.dtype, base=base, path=seg_dir, batch_size=choice.batch_size)
    loaded.parts = [("classifier", cls_dir, b.bundle_hash(cls_dir)), ("segmenter", seg_dir, b.bundle_hash(seg_dir))]
    loaded.part_manifests = {"cls": (cls_dir, cm), "seg": (seg_dir, sm)}  # the pair's manifest is the segmenter's
    return loaded
