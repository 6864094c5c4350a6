"""FetalCLIP-based quality models: base loading, LoRA, classifier, segmenter, bundles, device.

Import from the submodules (``fetaliqa_core.models.bundle`` etc.); the names most callers need
are re-exported here lazily so that ``import fetaliqa_core.models`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_base_config": "base", "build_vision_tower": "base", "random_base": "base", "BaseInfo": "base",
    "save_base_weights": "base", "random_clip_state_dict": "base",
    "LoraSettings": "lora", "FetalCLIPEncoder": "lora",
    "FetalCLIPClassifier": "classifier",
    "FetalCLIPSegmenter": "segmenter", "MASK_AREA_FRACTION": "segmenter", "mask_quality_call": "segmenter",
    "FetalCLIPJoint": "joint",
    "BundleManifest": "bundle", "LoadedModel": "bundle", "Prediction": "bundle", "save_bundle": "bundle",
    "load_bundle": "bundle", "manifest_for": "bundle", "demo_models": "bundle",
    "DeviceChoice": "device", "select_device": "device",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
