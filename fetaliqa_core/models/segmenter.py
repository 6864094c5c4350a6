"""FetalCLIP_SEG: LoRA-adapted vision tower + a UNETR-style 2-D decoder.

Four block outputs of the tower (blocks 6, 8, 12, 24 of FetalCLIP's 24; proportionally for other
depths), class token dropped, reshaped to ``(B, width, 16, 16)`` and resized bilinearly to 14x14
so that four 2x up-samplings reach 224. The decoder follows MONAI's UNETR, in 2-D: the raw image
is the highest-resolution skip, deep features are brought up with transposed convolutions, and
each decoder stage is a transposed convolution, a skip concatenation and a residual conv unit.

The 16->14 resize is one fixed matrix product: bilinear interpolation (``align_corners=False``)
is linear and separable, so ``kron(M, M)`` with the ``(14, 16)`` 1-D interpolation matrix ``M``
maps the 256 patch tokens to 196 exactly. On a GPU this is a tensor-core matmul, where four
bf16 ``F.interpolate`` calls on NCHW grids took longer than the whole encoder (measured on an H200:
195 ms against the encoder's 48 ms per batch of 128).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.lora import FetalCLIPEncoder, LoraSettings

# the paper's 1 % rule and the mask labels (models/labels.py, importable without torch)
from fetaliqa_core.models.labels import (  # noqa: E402,F401
    LABEL_ABDOMEN,
    LABEL_OPTIMAL,
    LABEL_SUBOPTIMAL,
    MASK_AREA_FRACTION,
    PIXEL_THRESHOLD,
)

# Blocks FetalCLIP_SEG taps, 1-based, out of REFERENCE_DEPTH blocks.
REFERENCE_BLOCKS = (6, 8, 12, 24)
REFERENCE_DEPTH = 24
INIT_FILTERS = 32
HEAD_KINDS = {1: "binary", 3: "3class"}  # n_classes -> head kind; 3class: background/optimal/suboptimal


def segmentation_blocks(depth: int) -> tuple[int, ...]:
    """1-based blocks to tap for a tower of ``depth`` blocks: ``round(depth * k / 24)`` for
    k in (6, 8, 12, 24), kept strictly increasing (24 -> 6, 8, 12, 24; 8 -> 2, 3, 4, 8)."""
    if depth < len(REFERENCE_BLOCKS):
        raise FetalIQAError(f"the segmenter needs a base with at least {len(REFERENCE_BLOCKS)} blocks; got {depth}")
    blocks: list[int] = []
    for k in REFERENCE_BLOCKS:
        b = max(1, round(depth * k / REFERENCE_DEPTH))
        blocks.append(max(b, blocks[-1] + 1) if blocks else b)
    if blocks[-1] > depth:
        raise FetalIQAError(f"cannot choose {len(REFERENCE_BLOCKS)} distinct blocks of {depth}")
    return tuple(blocks)


def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` float64 matrix ``M`` with ``M @ v`` == 1-D linear interpolation of ``v``
    (``F.interpolate(mode="linear", align_corners=False)``, no antialiasing)."""
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(0)  # (1, n_in channels, n_in)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()


def segmentation_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` logits -> probabilities: sigmoid for C=1, softmax over classes for C=3."""
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def foreground_probability(prob: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` probabilities -> ``(B, H, W)`` P(abdomen): the channel itself for C=1,
    1 - P(background) for the 3-class head."""
    return prob[:, 0] if prob.shape[1] == 1 else 1.0 - prob[:, 0]


def mask_area(prob: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` probabilities -> ``(B,)`` int64 count of pixels with P(abdomen) > 0.5."""
    return (foreground_probability(prob) > PIXEL_THRESHOLD).flatten(1).sum(dim=1)



def label_masks(prob: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` probabilities -> ``(B, H, W)`` uint8 labels on the same device.

    Foreground is P(abdomen) > 0.5 (the same pixels :func:`mask_area` counts). Binary head:
    foreground is ``LABEL_ABDOMEN`` (3, no plane grade); 3-class head: ``LABEL_OPTIMAL`` (1) or
    ``LABEL_SUBOPTIMAL`` (2), whichever of the two is more probable at that pixel.
    """
    fg = foreground_probability(prob) > PIXEL_THRESHOLD
    if prob.shape[1] == 1:
        grade = torch.full_like(fg, LABEL_ABDOMEN, dtype=torch.uint8)
    else:
        grade = torch.where(prob[:, 1] >= prob[:, 2], LABEL_OPTIMAL, LABEL_SUBOPTIMAL).to(torch.uint8)
    return torch.where(fg, grade, torch.zeros_like(grade))


def mask_quality_call(prob: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` probabilities -> ``(B,)`` bool: at least MASK_AREA_FRACTION of the pixels
    have P(abdomen) > 0.5."""
    n_pixels = prob.shape[-2] * prob.shape[-1]
    return mask_area(prob).double() >= MASK_AREA_FRACTION * n_pixels


# ----------------------------------------------------------------------------------- decoder parts
class ResConvUnit(nn.Module):
    """Residual unit: conv3x3-IN-LReLU-conv3x3-IN + (1x1 conv-IN when channels change), LReLU.
    ``(B, c_in, H, W)`` -> ``(B, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(c_out, affine=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm2d(c_out, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.skip = None if c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.InstanceNorm2d(c_out, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.skip is None else self.skip(x)
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.act(y + residual)


class SepConvUnit(nn.Module):
    """Depthwise-separable unit with BatchNorm, the reference code's decoder block: depthwise
    ``k x k`` conv, BN, ReLU, pointwise 1x1 conv, BN, ReLU (convolutions with bias, no residual).
    ``(B, c_in, H, W)`` -> ``(B, c_out, H, W)``."""

    def __init__(self, c_in: int, c_out: int, k: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, k, padding=(k - 1) // 2, groups=c_in)
        self.norm1 = nn.BatchNorm2d(c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, 1)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.pointwise(self.act(self.norm1(self.depthwise(x))))))


class SepUp(nn.Module):
    """Depthwise transposed conv 2x (per channel), then either a :class:`SepConvUnit` (``unit``)
    or a bare pointwise 1x1 conv. ``(B, c_in, h, w)`` -> ``(B, c_out, 2h, 2w)``."""

    def __init__(self, c_in: int, c_out: int, unit: bool = True) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in, 2, stride=2, groups=c_in)
        self.mix = SepConvUnit(c_in, c_out) if unit else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.up(x))


class SepUNETRDecoder(nn.Module):
    """The reference code's decoder (arXiv 2507.22802's FetalCLIP_SEG): the UNETR layout with
    every convolution depthwise-separable and BatchNorm, ~1.59 M parameters for ViT-L/14 at 32
    filters.

    Same inputs and output as :class:`UNETRDecoder`: the image ``(B, 3, S, S)`` and four token
    grids ``(B, width, S/16, S/16)`` (shallow to deep) -> ``(B, n_classes, S, S)`` logits.
    Each grid is brought up by ``SepUp`` steps (3, 2, 1 for the three shallow ones, a bare
    upsampler for the deepest); from the deepest up, each level is joined to the next shallower
    one by concatenation, refined by ``SepConvUnit`` blocks and upsampled 2x; the image's own
    full-resolution features join last.
    """

    block = "sepconv_bn"

    def __init__(self, width: int, n_classes: int = 1, init_filters: int = INIT_FILTERS, in_channels: int = 3) -> None:
        super().__init__()
        f = self.init_filters = init_filters
        self.image = nn.Sequential(SepConvUnit(in_channels, f), SepConvUnit(f, f))  # S
        self.lift1 = nn.Sequential(SepUp(width, 8 * f), SepUp(8 * f, 4 * f), SepUp(4 * f, 2 * f))  # S/2
        self.lift2 = nn.Sequential(SepUp(width, 8 * f), SepUp(8 * f, 4 * f))  # S/4
        self.lift3 = SepUp(width, 8 * f)  # S/8
        self.lift4 = SepUp(width, 8 * f, unit=False)  # S/8
        self.join3 = nn.Sequential(SepConvUnit(16 * f, 8 * f), SepConvUnit(8 * f, 8 * f), SepConvUnit(8 * f, 8 * f),
                                   SepUp(8 * f, 4 * f, unit=False))  # -> S/4
        self.join2 = nn.Sequential(SepConvUnit(8 * f, 4 * f), SepConvUnit(4 * f, 4 * f),
                                   SepUp(4 * f, 2 * f, unit=False))  # -> S/2
        self.join1 = nn.Sequential(SepConvUnit(4 * f, 2 * f), SepConvUnit(2 * f, 2 * f),
                                   SepUp(2 * f, f, unit=False))  # -> S
        self.head = nn.Sequential(SepConvUnit(2 * f, f), SepConvUnit(f, f), nn.Conv2d(f, n_classes, 1))

    def forward(self, image: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        g1, g2, g3, g4 = grids
        y = self.join3(torch.cat([self.lift3(g3), self.lift4(g4)], dim=1))
        y = self.join2(torch.cat([self.lift2(g2), y], dim=1))
        y = self.join1(torch.cat([self.lift1(g1), y], dim=1))
        return self.head(torch.cat([self.image(image), y], dim=1))


#: Decoder kinds: "res" (:class:`UNETRDecoder`, MONAI-style residual units with InstanceNorm, the
#: project's) and "sepconv_bn" (:class:`SepUNETRDecoder`, the paper's reference decoder).
DECODER_BLOCKS = ("res", "sepconv_bn")


class ProjectUp(nn.Module):
    """Encoder path for a deep feature map: transposed conv 2x, then ``n_more`` x (transposed conv
    2x + residual unit). ``(B, c_in, h, w)`` -> ``(B, c_out, h*2^(n_more+1), w*2^(n_more+1))``."""

    def __init__(self, c_in: int, c_out: int, n_more: int) -> None:
        super().__init__()
        self.first = nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False)
        self.more = nn.Sequential(*[
            nn.Sequential(nn.ConvTranspose2d(c_out, c_out, 2, stride=2, bias=False), ResConvUnit(c_out, c_out))
            for _ in range(n_more)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.more(self.first(x))


class UpStage(nn.Module):
    """Decoder stage: transposed conv 2x, concatenate the skip, residual unit.
    ``(B, c_in, h, w)``, skip ``(B, c_out, 2h, 2w)`` -> ``(B, c_out, 2h, 2w)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False)
        self.unit = ResConvUnit(2 * c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.unit(torch.cat([self.up(x), skip], dim=1))


class UNETRDecoder(nn.Module):
    """UNETR decoder in 2-D.

    Inputs: the image ``(B, 3, S, S)`` and four token grids ``(B, width, S/16, S/16)`` (shallow to
    deep). Output: ``(B, n_classes, S, S)`` logits.
    """

    block = "res"

    def __init__(self, width: int, n_classes: int = 1, init_filters: int = INIT_FILTERS, in_channels: int = 3) -> None:
        super().__init__()
        f = self.init_filters = init_filters
        self.enc1 = ResConvUnit(in_channels, f)  # full resolution, from the image
        self.enc2 = ProjectUp(width, 2 * f, n_more=2)  # x8
        self.enc3 = ProjectUp(width, 4 * f, n_more=1)  # x4
        self.enc4 = ProjectUp(width, 8 * f, n_more=0)  # x2
        self.dec5 = UpStage(width, 8 * f)
        self.dec4 = UpStage(8 * f, 4 * f)
        self.dec3 = UpStage(4 * f, 2 * f)
        self.dec2 = UpStage(2 * f, f)
        self.out = nn.Conv2d(f, n_classes, 1)

    def forward(self, image: torch.Tensor, grids: list[torch.Tensor]) -> torch.Tensor:
        g1, g2, g3, g4 = grids
        y = self.dec5(g4, self.enc4(g3))
        y = self.dec4(y, self.enc3(g2))
        y = self.dec3(y, self.enc2(g1))
        y = self.dec2(y, self.enc1(image))
        return self.out(y)


def build_decoder(width: int, n_classes: int, init_filters: int = INIT_FILTERS, block: str = "res") -> nn.Module:
    """The decoder of kind ``block`` (:data:`DECODER_BLOCKS`)."""
    if block == "res":
        return UNETRDecoder(width, n_classes, init_filters)
    if block == "sepconv_bn":
        return SepUNETRDecoder(width, n_classes, init_filters)
    raise FetalIQAError(f"decoder block {block!r} is not one of {sorted(DECODER_BLOCKS)}")


class TokenGrid(nn.Module):
    """Patch tokens ``(B, gh*gw, C)`` -> bilinearly resized grid ``(B, C, t, t)`` by one matmul."""

    def __init__(self, grid: tuple[int, int], target: int) -> None:
        super().__init__()
        gh, gw = grid
        self.grid, self.target = (gh, gw), target
        matrix = torch.kron(bilinear_matrix(gh, target), bilinear_matrix(gw, target))  # (t*t, gh*gw)
        self.register_buffer("matrix", matrix.float(), persistent=False)
        self.channels_last = False

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        if n != self.grid[0] * self.grid[1]:
            raise ValueError(f"expected {self.grid[0] * self.grid[1]} patch tokens, got {n}")
        out = torch.matmul(self.matrix.to(tokens.dtype), tokens)  # (B, t*t, C)
        # (B, t, t, C) permuted to NCHW is already channels_last in memory
        out = out.view(b, self.target, self.target, c).permute(0, 3, 1, 2)
        return out if self.channels_last else out.contiguous()


class SegmentationHead(nn.Module):
    """Token grids of the tapped blocks + image -> ``(B, n_classes, S, S)`` logits."""

    def __init__(self, encoder: FetalCLIPEncoder, n_classes: int, init_filters: int = INIT_FILTERS,
                 block: str = "res") -> None:
        super().__init__()
        if n_classes not in HEAD_KINDS:
            raise FetalIQAError(f"segmenter n_classes must be 1 (binary) or 3 (background/optimal/suboptimal); "
                                f"got {n_classes}")
        image_size = encoder.visual.image_size[0]
        if image_size % 16:
            raise FetalIQAError(f"the segmenter needs an image size divisible by 16; the base has {image_size}")
        self.n_classes = n_classes
        self.blocks = segmentation_blocks(encoder.depth)
        self.tokens_to_grid = TokenGrid(encoder.grid, image_size // 16)
        self.decoder = build_decoder(encoder.width, n_classes, init_filters, block)

    def forward(self, image: torch.Tensor, tokens: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder(image, [self.tokens_to_grid(t) for t in tokens])

    def use_channels_last(self, enable: bool = True) -> None:
        """NHWC activations for the decoder's convolutions (faster on NVIDIA tensor cores)."""
        self.tokens_to_grid.channels_last = enable
        self.decoder.to(memory_format=torch.channels_last if enable else torch.contiguous_format)


class FetalCLIPSegmenter(nn.Module):
    """Abdomen segmenter (the paper's FetalCLIP_SEG, arXiv 2507.22802).

    ``(B, 3, 224, 224)`` -> ``(B, n_classes, 224, 224)`` logits; ``n_classes`` 1 (P(abdomen) by
    sigmoid) or 3 (background / optimal / suboptimal by softmax). The encoder's LoRA trains with
    the decoder (the reference ran its encoder under ``no_grad``, freezing its adapters).
    """

    task = "seg"

    def __init__(self, visual: nn.Module, lora: LoraSettings | None = LoraSettings(), n_classes: int = 1,
                 init_filters: int = INIT_FILTERS, decoder_block: str = "res") -> None:
        super().__init__()
        self.encoder = FetalCLIPEncoder(visual, lora)
        self.seg = SegmentationHead(self.encoder, n_classes, init_filters, decoder_block)

    @property
    def n_classes(self) -> int:
        return self.seg.n_classes

    @property
    def head_kind(self) -> str:
        return HEAD_KINDS[self.n_classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 224, 224)`` -> ``(B, n_classes, 224, 224)`` logits."""
        _, tokens = self.encoder.features(x, self.seg.blocks)
        if self.seg.tokens_to_grid.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.seg(x, tokens)

    def head_modules(self) -> dict[str, nn.Module]:
        return {"seg": self.seg}
