"""How far two runs of the same models agree: bf16 against fp32, a student against its teacher.

Used by ``fetaliqa bench`` and the tests. Inputs are what the engine keeps per frame: the
classifier's probability and the segmenter's label masks at model resolution.
"""

from __future__ import annotations

import numpy as np

from fetaliqa_core.models.segmenter import MASK_AREA_FRACTION


def _seg_score(labels: np.ndarray) -> np.ndarray:
    f = (labels > 0).reshape(len(labels), -1).mean(axis=1)
    return f / (f + MASK_AREA_FRACTION)


def output_agreement(ref_p_cls, ref_labels, p_cls, labels, threshold: float = 0.5) -> dict:
    """Agreement of per-frame outputs ``(p_cls (N,) or None, labels (N, S, S) uint8 or None)``
    with a reference run.

    Returns max and mean |dp| of the classifier probability and of the mask score (the engine's
    ``p_seg``), the share of frames whose flags agree (classifier at ``threshold``, segmenter at
    the paper's 1 % area rule), and the share of mask pixels with the same label.
    """
    out: dict = {}
    if ref_p_cls is not None and p_cls is not None:
        a, b = np.asarray(ref_p_cls, np.float64), np.asarray(p_cls, np.float64)
        d = np.abs(a - b)
        out.update(cls_max_abs_dp=float(d.max()), cls_mean_abs_dp=float(d.mean()),
                   cls_flag_agreement=float(((a >= threshold) == (b >= threshold)).mean()))
    if ref_labels is not None and labels is not None:
        ra, rb = np.asarray(ref_labels), np.asarray(labels)
        sa, sb = _seg_score(ra), _seg_score(rb)
        d = np.abs(sa - sb)
        out.update(seg_max_abs_dp=float(d.max()), seg_mean_abs_dp=float(d.mean()),
                   seg_flag_agreement=float(((sa >= 0.5) == (sb >= 0.5)).mean()),
                   mask_pixel_agreement=float((ra == rb).mean()))
    flags = [out[k] for k in ("cls_flag_agreement", "seg_flag_agreement") if k in out]
    if flags:
        out["flag_agreement"] = float(min(flags))
    out["frames"] = int(len(ref_p_cls) if ref_p_cls is not None else len(ref_labels))
    return out


def predict_all(cls_model, seg_model, x, batch: int = 8) -> tuple:
    """``(p_cls, labels)`` numpy arrays of loaded models over the input batch ``x``. One model
    given as both (a joint bundle, or two bundles sharing one base) runs once per batch."""
    p_cls, labels = [], []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        if cls_model is not None and cls_model is seg_model:
            out = cls_model.predict_labels(part)
            p_cls.append(out.p_cls.float().numpy())
            labels.append(out.labels.numpy())
            continue
        if cls_model is not None:
            p_cls.append(cls_model.predict_labels(part).p_cls.float().numpy())
        if seg_model is not None:
            labels.append(seg_model.predict_labels(part).labels.numpy())
    return (np.concatenate(p_cls) if p_cls else None, np.concatenate(labels) if labels else None)
