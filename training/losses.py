"""Training losses: BCE for the classifier; for the segmenter soft Dice per frame or over the batch,
optionally plus cross-entropy (see :func:`seg_loss`). The validation loss, which picks the best
epoch, takes the segmenter's Dice over the whole validation split (:func:`validation_terms`)."""

from __future__ import annotations

from training.config import TrainConfig


def dice_loss(seg_logits, masks, n_classes: int, eps: float = 1e-5, over_batch: bool = False):
    """Soft Dice loss (1 - Dice), averaged over classes.

    seg_logits ``(B, C, S, S)``; masks ``(B, S, S)`` uint8 labels 0/1/2. C=1: sigmoid vs
    abdomen (label > 0); C=3: softmax vs one-hot labels, background included.

    ``over_batch=False``: Dice per frame and class, averaged (MONAI's ``DiceLoss`` defaults). On a
    frame without abdomen both sums of a foreground class are near 0, so a false-positive blob
    there gets almost no gradient (~1e-15 with C=1) and the frame adds a constant loss.
    ``over_batch=True``: one Dice per class over every pixel of the batch (the reference code's
    segmentation_models_pytorch ``DiceLoss``): a false positive on an empty frame enlarges the
    class's denominator, so it is pushed down whenever the batch holds an abdomen; a class absent
    from the whole batch adds nothing (as in that library).
    """
    prob, target = _prob_target(seg_logits, masks, n_classes)
    dims = (0, 2, 3) if over_batch else (2, 3)
    inter = (prob * target).sum(dim=dims)
    denom = prob.sum(dim=dims) + target.sum(dim=dims)
    loss = 1.0 - (2.0 * inter + eps) / (denom + eps)
    if over_batch:
        present = target.sum(dim=dims) > 0
        return (loss * present).sum() / present.sum().clamp(min=1)
    return loss.mean()


def _prob_target(seg_logits, masks, n_classes: int):
    """``(probabilities, one-hot truth)``, both ``(B, C, S, S)`` float32 (see :func:`dice_loss`)."""
    import torch
    import torch.nn.functional as F

    logits = seg_logits.float()
    if n_classes == 1:
        return torch.sigmoid(logits), (masks > 0).float().unsqueeze(1)
    target = F.one_hot(masks.long().clamp(0, n_classes - 1), n_classes).permute(0, 3, 1, 2).float()
    return torch.softmax(logits, dim=1), target


def dice_sums(seg_logits, masks, n_classes: int):
    """One batch's share of a Dice over many batches: per class, the soft intersection, the sum of
    prediction and truth, and the truth's sum (float64 NumPy arrays ``(C,)``; add them up over the
    batches, then :func:`dice_from_sums`)."""
    prob, target = _prob_target(seg_logits, masks, n_classes)
    # per frame on the device, then over the frames in float64: the same sums however the frames
    # are batched (MPS has no float64)
    dims = (2, 3)
    per_frame = ((prob * target).sum(dim=dims), prob.sum(dim=dims) + target.sum(dim=dims), target.sum(dim=dims))
    return tuple(t.cpu().double().sum(dim=0).numpy() for t in per_frame)


def dice_from_sums(inter, denom, truth, eps: float = 1e-5) -> float:
    """1 - Dice from summed :func:`dice_sums`, averaged over the classes present in the truth (a
    class absent from every frame adds nothing, as in :func:`dice_loss` over the batch)."""
    import numpy as np

    loss = 1.0 - (2.0 * np.asarray(inter) + eps) / (np.asarray(denom) + eps)
    present = np.asarray(truth) > 0
    return float((loss * present).sum() / max(int(present.sum()), 1))


def seg_ce_loss(seg_logits, masks, n_classes: int):
    import torch.nn.functional as F

    logits = seg_logits.float()
    if n_classes == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], (masks > 0).float())
    return F.cross_entropy(logits, masks.long().clamp(0, n_classes - 1))


def seg_loss(kind: str, seg_logits, masks, n_classes: int):
    """The segmentation loss named ``kind`` (see :data:`training.config.SEG_LOSSES`)."""
    if kind in ("dice", "dice_ce"):
        loss = dice_loss(seg_logits, masks, n_classes)
    elif kind in ("batch_dice", "batch_dice_ce"):
        loss = dice_loss(seg_logits, masks, n_classes, over_batch=True)
    else:
        raise ValueError(f"unknown segmentation loss {kind!r}")
    if kind.endswith("_ce"):
        loss = loss + seg_ce_loss(seg_logits, masks, n_classes)
    return loss


def validation_terms(cfg: TrainConfig, cls_logits, seg_logits, targets, masks):
    """One validation batch's part of the validation loss: ``(mean per-frame terms, Dice sums)``.

    The per-frame terms (BCE; the segmenter's cross-entropy with a ``*_ce`` loss) are means over
    the batch, which weighted by its size add up to means over the split. The Dice term is not:
    averaged per batch, a batch of frames without abdomen adds 0 however much mask the model
    paints on them, and the value changes with --batch-size. So the segmenter's Dice is one Dice
    over the whole split, whatever ``--seg-loss`` trains with (the reference code's validation
    loss: its Dice computed once over every validation frame): the batch's :func:`dice_sums`
    (None without a segmenter) are added up and turned into one Dice by :func:`dice_from_sums`.
    """
    import torch.nn.functional as F

    loss = 0.0
    if cls_logits is not None:
        loss = loss + float(F.binary_cross_entropy_with_logits(cls_logits.float(), targets))
    sums = None
    if seg_logits is not None:
        if cfg.seg_loss.endswith("_ce"):
            loss = loss + float(seg_ce_loss(seg_logits, masks, cfg.seg_classes))
        sums = dice_sums(seg_logits, masks, cfg.seg_classes)
    return float(loss), sums


def compute_loss(cfg: TrainConfig, cls_logits, seg_logits, targets, masks):
    """Loss of one batch: BCE-with-logits (classifier), the configured segmentation loss; the sum
    for ``joint``."""
    import torch.nn.functional as F

    loss = 0.0
    if cls_logits is not None:
        loss = loss + F.binary_cross_entropy_with_logits(cls_logits.float(), targets)
    if seg_logits is not None:
        loss = loss + seg_loss(cfg.seg_loss, seg_logits, masks, cfg.seg_classes)
    return loss
