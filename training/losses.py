"""Training losses: BCE for the classifier, Dice (optionally + cross-entropy) for the segmenter."""

from __future__ import annotations

from training.config import TrainConfig


def dice_loss(seg_logits, masks, n_classes: int, eps: float = 1e-5):
    """Soft Dice loss, per frame and class, averaged (MONAI's ``DiceLoss`` defaults).

    seg_logits ``(B, C, S, S)``; masks ``(B, S, S)`` uint8 labels 0/1/2. C=1: sigmoid vs
    abdomen (label > 0); C=3: softmax vs one-hot labels, background included.
    """
    import torch
    import torch.nn.functional as F

    logits = seg_logits.float()
    if n_classes == 1:
        prob = torch.sigmoid(logits)
        target = (masks > 0).float().unsqueeze(1)
    else:
        prob = torch.softmax(logits, dim=1)
        target = F.one_hot(masks.long().clamp_(0, n_classes - 1), n_classes).permute(0, 3, 1, 2).float()
    inter = (prob * target).sum(dim=(2, 3))
    denom = prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean()


def seg_ce_loss(seg_logits, masks, n_classes: int):
    import torch.nn.functional as F

    logits = seg_logits.float()
    if n_classes == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], (masks > 0).float())
    return F.cross_entropy(logits, masks.long().clamp(0, n_classes - 1))


def compute_loss(cfg: TrainConfig, cls_logits, seg_logits, targets, masks):
    """Loss of one batch: BCE-with-logits (classifier), Dice (segmenter); the sum for ``joint``."""
    import torch.nn.functional as F

    loss = 0.0
    if cls_logits is not None:
        loss = loss + F.binary_cross_entropy_with_logits(cls_logits.float(), targets)
    if seg_logits is not None:
        loss = loss + dice_loss(seg_logits, masks, cfg.seg_classes)
        if cfg.seg_loss == "dice_ce":
            loss = loss + seg_ce_loss(seg_logits, masks, cfg.seg_classes)
    return loss
