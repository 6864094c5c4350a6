"""Distilled students: a small timm backbone with both heads, trained on a FetalCLIP teacher's outputs.

A student is one network that does what the classifier and the segmenter do together, in one
pass: ``(B, 3, 224, 224)`` (the same preprocessing as FetalCLIP) -> ``((B, 1) classifier logits,
(B, n_classes, 224, 224) mask logits)``, like :class:`~fetaliqa_core.models.joint.FetalCLIPJoint`.

- backbone: a timm model built by name with ``features_only=True`` (four feature maps at
  strides 4, 8, 16, 32), randomly initialised: no pretrained weights are fetched;
- classifier: one linear unit on the globally averaged deepest map;
- segmenter: a light feature-pyramid decoder (1x1 lateral convolutions to ``decoder_width``
  channels, top-down bilinear up-sampling and addition, two 3x3 convolutions at stride 4, a 1x1
  convolution to the classes, bilinear up-sampling x4).

Students are trained by ``fetaliqa distill`` (``training/distill.py``) and saved as ordinary
bundles (manifest ``kind: "student"``) that ``score`` and the app load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fetaliqa_core.errors import FetalIQAError

# Backbones a student bundle may name (measured on a 2-core CPU: docs/BENCHMARKS.md). Bundles are
# untrusted input: only these names are ever built. Name -> timm feature indices at strides 4, 8,
# 16, 32; kept with the command-line options, which must not import torch.
from fetaliqa_core.models.options import DEFAULT_BACKBONE, STUDENT_BACKBONES
from fetaliqa_core.models.segmenter import HEAD_KINDS

DECODER_WIDTH = 32
MAX_DECODER_WIDTH = 256


def check_backbone(name: object) -> str:
    if not isinstance(name, str) or name not in STUDENT_BACKBONES:
        raise FetalIQAError(f"student backbone {name!r} is not supported; choose one of {', '.join(STUDENT_BACKBONES)}")
    return name


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class StudentModel(nn.Module):
    """timm backbone + linear classifier unit + light FPN segmentation decoder (see module doc)."""

    task = "joint"

    def __init__(self, backbone: str = DEFAULT_BACKBONE, n_classes: int = 3,
                 decoder_width: int = DECODER_WIDTH) -> None:
        super().__init__()
        import timm

        self.backbone_name = check_backbone(backbone)
        if n_classes not in HEAD_KINDS:
            raise FetalIQAError(f"student n_classes must be 1 or 3; got {n_classes}")
        if not isinstance(decoder_width, int) or not 0 < decoder_width <= MAX_DECODER_WIDTH:
            raise FetalIQAError(f"student decoder width must be an integer in 1..{MAX_DECODER_WIDTH}")
        self.backbone = timm.create_model(backbone, pretrained=False, features_only=True,
                                          out_indices=STUDENT_BACKBONES[backbone])
        channels = list(self.backbone.feature_info.channels())
        self._n_classes = n_classes
        self.decoder_width = decoder_width
        self.head = nn.Linear(channels[-1], 1)
        self.lateral = nn.ModuleList(nn.Conv2d(c, decoder_width, 1) for c in channels)
        self.fuse = nn.Sequential(_conv_bn_relu(decoder_width, decoder_width),
                                  _conv_bn_relu(decoder_width, decoder_width))
        self.out = nn.Conv2d(decoder_width, n_classes, 1)

    @property
    def n_classes(self) -> int:
        return self._n_classes

    @property
    def head_kind(self) -> str:
        return HEAD_KINDS[self._n_classes]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        cls = self.head(feats[-1].float().mean(dim=(2, 3)).to(feats[-1].dtype))
        y = self.lateral[-1](feats[-1])
        for lateral, f in zip(reversed(self.lateral[:-1]), reversed(feats[:-1])):
            y = F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False) + lateral(f)
        y = self.out(self.fuse(y))
        return cls, F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def head_modules(self) -> dict[str, nn.Module]:
        """Everything is trained: the whole network is saved into the bundle's head file."""
        return {"student": self}

    def spec(self) -> dict:
        """What a bundle manifest records to rebuild this network."""
        return {"backbone": self.backbone_name, "decoder_width": self.decoder_width}


def check_spec(spec: object) -> dict:
    """Validate a manifest's ``student`` object (raises FetalIQAError)."""
    if not isinstance(spec, dict):
        raise FetalIQAError("student must be an object with 'backbone' and 'decoder_width'")
    unknown = set(spec) - {"backbone", "decoder_width", "teacher"}
    if unknown:
        raise FetalIQAError(f"student has unknown fields {sorted(unknown)}")
    check_backbone(spec.get("backbone"))
    width = spec.get("decoder_width")
    if not isinstance(width, int) or isinstance(width, bool) or not 0 < width <= MAX_DECODER_WIDTH:
        raise FetalIQAError(f"student decoder_width {width!r} is not an integer in 1..{MAX_DECODER_WIDTH}")
    if "teacher" in spec and not isinstance(spec["teacher"], dict):
        raise FetalIQAError("student teacher must be an object")
    return spec
