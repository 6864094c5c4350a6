"""The three kinds of model, in one table: what each has (a classifier head, a segmentation head),
how it is built and how its output splits into the two kinds of logits.

Callers ask the table (``TASKS[name].has_seg``, ``.build(...)``, ``.split(out)``) instead of
switching on the names "cls", "seg" and "joint".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from fetaliqa_core.errors import FetalIQAError


@dataclass(frozen=True)
class Task:
    name: str  # as written in bundles and given to --task
    label: str  # for people: "classifier", "segmenter", "classifier + segmenter"
    has_cls: bool  # outputs (B, 1) logits of "good for AC measurement"
    has_seg: bool  # outputs (B, C, 224, 224) mask logits
    model_class: str  # "module:Class" under fetaliqa_core.models (imported on use: this table needs no torch)

    def build(self, visual, lora, n_classes: int = 1, init_filters: int | None = None, decoder_block: str = "res"):
        """A new model of this kind on the vision tower ``visual`` (a classifier has no
        segmentation settings; ``init_filters`` None: the decoder's default width;
        ``decoder_block``: the decoder's units, see ``segmenter.DECODER_BLOCKS``)."""
        module, name = self.model_class.split(":")
        cls = getattr(importlib.import_module(f"fetaliqa_core.models.{module}"), name)
        if not self.has_seg:
            return cls(visual, lora)
        if init_filters is None:
            return cls(visual, lora, n_classes, decoder_block=decoder_block)
        return cls(visual, lora, n_classes, init_filters, decoder_block=decoder_block)

    def split(self, out):
        """The model's output as ``(cls_logits (B, 1) | None, seg_logits (B, C, S, S) | None)``."""
        if self.has_cls and self.has_seg:
            return out[0], out[1]
        return (out, None) if self.has_cls else (None, out)


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("cls", "classifier", has_cls=True, has_seg=False, model_class="classifier:FetalCLIPClassifier"),
    Task("seg", "segmenter", has_cls=False, has_seg=True, model_class="segmenter:FetalCLIPSegmenter"),
    Task("joint", "classifier + segmenter", has_cls=True, has_seg=True, model_class="joint:FetalCLIPJoint"),
)}


def task(name: str) -> Task:
    """The task called ``name`` (FetalIQAError naming the known ones otherwise)."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise FetalIQAError(f"task {name!r} is not one of {', '.join(TASKS)}") from None
