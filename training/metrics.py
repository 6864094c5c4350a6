"""Predictions of a model over a split and the per-frame metrics computed from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fetaliqa_core.models.tasks import TASKS
from training.config import TrainConfig
from training.distributed import DistInfo, gather_objects
from training.losses import dice_from_sums, validation_terms
from training.modelling import autocast_context, model_outputs, to_model_input


@dataclass
class FramePredictions:
    """Per-frame outputs on a split (arrays ``(M,)`` in index order)."""

    index: np.ndarray  # int64 item index
    p_cls: np.ndarray  # float32, NaN without a classifier
    seg_area: np.ndarray  # int64 foreground pixels at 224 (-1 without a segmenter)
    seg_call: np.ndarray  # bool, the paper's 1 % area rule
    dice: np.ndarray  # float64, foreground Dice at 224 (NaN where prediction and truth are empty)
    loss_sum: float  # per-frame loss terms (BCE, cross-entropy) summed over the frames
    n: int
    # the segmenter's Dice loss, one Dice over every frame of the split (0.0 without a segmenter)
    set_dice_loss: float = 0.0

    @property
    def loss(self) -> float:
        """The split's loss: the mean per-frame terms plus the Dice over the whole split (see
        :func:`training.losses.validation_terms`): it does not depend on --batch-size."""
        return self.loss_sum / max(self.n, 1) + self.set_dice_loss


def predict_index(model, dataset, task: str, cfg: TrainConfig, device, info: DistInfo, workers: int) -> FramePredictions:
    """Run the model over ``dataset`` (this process's share under DDP), gathered on every rank."""
    import torch
    from torch.utils.data import DataLoader

    from fetaliqa_core.analysis import dice_per_frame
    from fetaliqa_core.models.segmenter import mask_area, mask_quality_call, segmentation_probabilities
    from training.dataset import CaseChunkSampler, collate

    sampler = CaseChunkSampler(dataset.index, shuffle=False, num_replicas=info.world_size, rank=info.rank, pad=False)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda")
    parts: dict[str, list] = {"index": [], "p_cls": [], "seg_area": [], "seg_call": [], "dice": []}
    loss_sum, n = 0.0, 0
    dice_parts = None  # per-class (intersection, prediction + truth, truth) summed over the batches
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            x = to_model_input(batch["frame"], device)
            targets = batch["target"].to(device)
            masks = batch["mask"].to(device) if "mask" in batch else None
            with autocast_context(device, cfg.precision):
                cls_logits, seg_logits = model_outputs(model, x, task)
            b = int(targets.shape[0])
            terms, sums = validation_terms(cfg, cls_logits, seg_logits, targets, masks)
            loss_sum += terms * b
            if sums is not None:
                dice_parts = sums if dice_parts is None else tuple(a + c for a, c in zip(dice_parts, sums))
            n += b
            parts["index"].append(batch["index"].numpy())
            if cls_logits is not None:
                parts["p_cls"].append(torch.sigmoid(cls_logits.float()).cpu().numpy())
            else:
                parts["p_cls"].append(np.full(b, np.nan, np.float32))
            if seg_logits is not None:
                prob = segmentation_probabilities(seg_logits)
                parts["seg_area"].append(mask_area(prob).cpu().numpy())
                parts["seg_call"].append(mask_quality_call(prob).cpu().numpy())
                if prob.shape[1] == 1:
                    fg = (prob[:, 0] > 0.5).cpu().numpy()
                else:
                    fg = (1.0 - prob[:, 0] > 0.5).cpu().numpy()
                parts["dice"].append(dice_per_frame(fg, (masks > 0).cpu().numpy()))
            else:
                parts["seg_area"].append(np.full(b, -1, np.int64))
                parts["seg_call"].append(np.zeros(b, bool))
                parts["dice"].append(np.full(b, np.nan))
    model.train(was_training)
    local = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
    local["loss_sum"], local["n"], local["dice_parts"] = loss_sum, n, dice_parts
    gathered = gather_objects(info, local)
    merged = {k: np.concatenate([g[k] for g in gathered]) for k in parts}
    order = np.argsort(merged["index"], kind="stable")
    parts_all = [g["dice_parts"] for g in gathered if g["dice_parts"] is not None]
    set_dice = (dice_from_sums(*(sum(p[k] for p in parts_all) for k in range(3))) if parts_all else 0.0)
    return FramePredictions(
        index=merged["index"][order].astype(np.int64), p_cls=merged["p_cls"][order].astype(np.float32),
        seg_area=merged["seg_area"][order].astype(np.int64), seg_call=merged["seg_call"][order].astype(bool),
        dice=merged["dice"][order].astype(np.float64),
        loss_sum=float(sum(g["loss_sum"] for g in gathered)), n=int(sum(g["n"] for g in gathered)),
        set_dice_loss=set_dice)


def frame_metrics(pred: FramePredictions, truth: np.ndarray, task: str, threshold: float = 0.5) -> dict:
    """Per-frame metrics: the classifier's (threshold on p) and/or the segmenter's (area rule, Dice).

    truth: ``(M,)`` bool, frame positive. Keys: ``loss``, ``accuracy f1 precision recall
    specificity`` (classifier; for ``seg`` the segmenter-as-classifier), ``seg_*`` (for ``joint``)
    and ``dice`` (mean over frames with an abdomen in the truth or the prediction).
    """
    from fetaliqa_core.analysis import binary_metrics

    out: dict = {"loss": pred.loss, "n_frames": int(pred.n), "n_positive": int(truth.sum())}
    keys = ("accuracy", "f1", "precision", "recall", "specificity")
    kind = TASKS[task]
    if kind.has_cls:
        m = binary_metrics(truth, pred.p_cls >= threshold)
        out.update({k: getattr(m, k) for k in keys})
    if kind.has_seg:
        m = binary_metrics(truth, pred.seg_call)
        prefix = "seg_" if kind.has_cls else ""
        out.update({prefix + k: getattr(m, k) for k in keys})
        finite = pred.dice[np.isfinite(pred.dice)]
        out["dice"] = float(finite.mean()) if finite.size else float("nan")
        pos = pred.dice[truth & np.isfinite(pred.dice)]
        out["dice_positive"] = float(pos.mean()) if pos.size else float("nan")
    return out


def best_f1_threshold(p: np.ndarray, truth: np.ndarray, neg_weight: float = 1.0) -> float:
    """The threshold in [0.05, 0.95] (steps of 0.01) with the highest F1 of ``p >= t`` against
    ``truth``; ties go to the threshold closest to 0.5. ``neg_weight``: each negative frame
    counts this many times (frames of a subsample whose negatives were thinned out)."""
    truth = np.asarray(truth, bool)
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    scores = []
    for t in grid:
        call = p >= t
        tp = float((call & truth).sum())
        fp = float((call & ~truth).sum()) * neg_weight
        fn = float((~call & truth).sum())
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    scores = np.array(scores)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])
