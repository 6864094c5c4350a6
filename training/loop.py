"""One trial: the epochs, validation, the test split and the trial's bundle."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.tasks import TASKS
from training.checkpoints import (CHECKPOINT_DIR, epoch_checkpoint, latest_checkpoint, load_checkpoint,
                                  prune_checkpoints, save_checkpoint)
from training.config import TrainConfig
from training.data import EpochSampler, Splits, chunking, make_loader
from training.distributed import DistInfo, barrier, default_workers
from training.losses import compute_loss
from training.metrics import best_f1_threshold, frame_metrics, predict_index
from training.modelling import (autocast_context, build_model, export_base_weights, load_trainable_state,
                                model_outputs, to_model_input, uses_bf16)
from fetaliqa_core.files import json_safe
from training.reporting import Reporter, write_json


def run_trial(cfg: TrainConfig, trial: int, splits: Splits, info: DistInfo, device, reporter: Reporter) -> dict:
    """One training run (seed ``cfg.seed + trial - 1``); returns its result record."""
    import torch

    from training.dataset import FrameDataset, subsample_index

    trial_dir = cfg.run_dir / f"trial_{trial}"
    tag = f"{trial}/{cfg.trials}"
    finished = _finished_result(cfg, trial_dir)
    if finished is not None:
        reporter.message(f"trial {tag}: already finished, kept")
        return finished
    seed = cfg.seed + trial - 1
    with_masks = TASKS[cfg.task].has_seg
    model, base_info = build_model(cfg, device, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = int(sum(p.numel() for p in params))
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, best, start_epoch = _resume(cfg, trial_dir, model, optimizer, reporter, tag)
    ddp_model = _wrap_ddp(cfg, model, info, device)

    workers = cfg.workers if cfg.workers is not None else default_workers()
    train_ds, sampler, loader = _training_data(cfg, splits, info, device, seed, workers, with_masks)
    val_index = subsample_index(splits.val, cfg.val_frames, cfg.split_seed)
    val_ds = FrameDataset(val_index, with_masks, None, seed=seed, cache_cases=cfg.cache_cases,
                          pre_resize=cfg.pre_resize)
    val_truth = val_index.label > 0

    step_losses: list[float] = [x for h in history for x in h.get("step_losses", [])]
    steps_per_epoch = 0
    train_time = 0.0
    train_frames = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(start_epoch, cfg.epochs + 1):
        torch.manual_seed(seed * 100003 + epoch)  # dropout etc.: same stream whether resumed or not
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        n_steps = len(loader)
        if cfg.max_steps is not None:
            n_steps = min(n_steps, cfg.max_steps)
        steps_per_epoch = n_steps * (cfg.offline_copies + 1)
        epoch_losses, epoch_time, frames_done = [], 0.0, 0
        for copy in range(cfg.offline_copies + 1):  # offline copies: one pass per copy (0: unaugmented)
            train_ds.set_pass(copy)
            losses, seconds, frames = train_epoch(cfg, model, ddp_model, optimizer, loader, n_steps, device, info,
                                                  reporter, tag, epoch)
            epoch_losses += losses
            epoch_time += seconds
            frames_done += frames
        train_time += epoch_time
        train_frames += frames_done

        val = frame_metrics(predict_index(model, val_ds, cfg.task, cfg, device, info, workers), val_truth, cfg.task)
        improved = val["loss"] < best["val_loss"]
        record = {"epoch": epoch, "train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
                  "val": val, "time_s": epoch_time, "steps": len(epoch_losses), "step_losses": epoch_losses}
        history.append(record)
        step_losses.extend(epoch_losses)
        if improved:
            best = {"val_loss": val["loss"], "epoch": epoch}
        main_metric = "f1" if "f1" in val else "dice"
        reporter.line("VALIDATION", trial=tag, epoch=f"{epoch}/{cfg.epochs}", train_loss=record["train_loss"],
                      val_loss=val["loss"], **{main_metric: val.get(main_metric, float("nan"))},
                      best=int(improved))
        if info.is_main:
            _save_epoch(cfg, trial_dir, model, optimizer, epoch, history, best, improved)
            _draw_trial_curves(cfg, trial_dir, history, step_losses, steps_per_epoch, tag)
        barrier(info)

    # best epoch -> test metrics and the bundle
    best_path = trial_dir / CHECKPOINT_DIR / "best.pt"
    if best["epoch"] and best_path.is_file():
        load_trainable_state(model, load_checkpoint(best_path)["model"], str(best_path))
    threshold = _operating_threshold(cfg, model, splits, info, device, seed, workers, reporter, tag)
    test = None
    if cfg.test and len(splits.test):
        test_ds = FrameDataset(splits.test, with_masks, None, seed=seed, cache_cases=cfg.cache_cases,
                               pre_resize=cfg.pre_resize)
        test = frame_metrics(predict_index(model, test_ds, cfg.task, cfg, device, info, workers),
                             splits.test.label > 0, cfg.task, threshold)
        reporter.line("TEST", trial=tag, **{k: v for k, v in test.items() if isinstance(v, float)})

    peak_mb = None
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    result = {
        "trial": trial, "seed": seed, "epochs_done": cfg.epochs, "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"], "trainable_params": n_trainable, "threshold": threshold,
        "history": [{k: v for k, v in h.items() if k != "step_losses"} for h in history],
        "test": test,
        "train_time_s": train_time, "train_frames_per_s": train_frames / train_time if train_time else None,
        "steps_per_s": (steps_per_epoch * max(cfg.epochs - start_epoch + 1, 0)) / train_time if train_time else None,
        "peak_gpu_memory_mb": peak_mb, "device": str(device), "world_size": info.world_size,
        # the number format it ran in ("auto" or no --precision is decided by the device)
        "precision": "bf16" if uses_bf16(device, cfg.precision) else "fp32",
    }
    if info.is_main:
        _write_trial_bundle(cfg, trial_dir, model, base_info, threshold, test, best, seed, splits, result)
    barrier(info)
    result["bundle"] = str(trial_dir / "bundle")
    return result


def train_epoch(cfg: TrainConfig, model, ddp_model, optimizer, loader, n_steps: int, device, info: DistInfo,
                reporter: Reporter, tag: str, epoch: int) -> tuple[list[float], float, int]:
    """``n_steps`` optimiser steps over ``loader``; returns (step losses, seconds, frames over all ranks)."""
    import torch

    model.train()
    bar = reporter.bar(n_steps, f"trial {tag} epoch {epoch}/{cfg.epochs}")
    epoch_losses: list[float] = []
    log_every = max(1, n_steps // 50)
    window_loss, window_n = 0.0, 0
    t0 = time.perf_counter()
    frames_done = 0
    for step, batch in enumerate(loader, start=1):
        if step > n_steps:
            break
        x = to_model_input(batch["frame"], device)
        targets = batch["target"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True) if "mask" in batch else None
        with autocast_context(device, cfg.precision):
            cls_logits, seg_logits = model_outputs(ddp_model, x, cfg.task)
        loss = compute_loss(cfg, cls_logits, seg_logits, targets, masks)
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if info.enabled:  # all ranks stop together
            import torch.distributed as dist

            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite.item()):
            raise FetalIQAError(f"training diverged (loss {float(loss)}) at epoch {epoch}, step {step}; "
                                "lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        epoch_losses.append(value)
        window_loss += value
        window_n += 1
        frames_done += int(targets.shape[0]) * info.world_size
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        if step % log_every == 0 or step == n_steps:
            elapsed = time.perf_counter() - t0
            reporter.line("PROGRESS", trial=tag, epoch=f"{epoch}/{cfg.epochs}", step=f"{step}/{n_steps}",
                          loss=window_loss / max(window_n, 1), frames_per_s=frames_done / max(elapsed, 1e-9))
            window_loss, window_n = 0.0, 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    epoch_time = time.perf_counter() - t0
    reporter.close_bar()
    return epoch_losses, epoch_time, frames_done


def _finished_result(cfg: TrainConfig, trial_dir: Path) -> dict | None:
    """The saved result of a trial that a resumed run already finished, else None."""
    done_file = trial_dir / "metrics.json"
    if cfg.resume and done_file.is_file() and (trial_dir / "bundle" / "manifest.json").is_file():
        result = json.loads(done_file.read_text(encoding="utf-8"))
        if result.get("epochs_done", 0) >= cfg.epochs:
            return result
    return None


def _resume(cfg: TrainConfig, trial_dir: Path, model, optimizer, reporter: Reporter, tag: str):
    """``(history, best, first epoch)``: from the trial's last checkpoint under --resume, else fresh."""
    history: list[dict] = []
    best = {"val_loss": float("inf"), "epoch": 0}
    last = latest_checkpoint(trial_dir) if cfg.resume else None
    if last is None:
        if cfg.resume:  # (it went on without a word, as if resumed)
            reporter.message(f"trial {tag}: nothing to resume (no epoch had finished): starting at epoch 1")
        return history, best, 1
    ckpt = load_checkpoint(last)
    load_trainable_state(model, ckpt["model"], str(last))
    optimizer.load_state_dict(ckpt["optimizer"])
    reporter.message(f"trial {tag}: resumed after epoch {ckpt['epoch']} from {last}")
    return ckpt["history"], ckpt["best"], int(ckpt["epoch"]) + 1


def _wrap_ddp(cfg: TrainConfig, model, info: DistInfo, device):
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    # the segmenter skips the pooled head of the tower: with every weight trainable
    # (--full-finetune) those weights get no gradient
    unused = cfg.full_finetune and not TASKS[cfg.task].has_cls
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)


def _training_data(cfg: TrainConfig, splits: Splits, info: DistInfo, device, seed: int, workers: int,
                   with_masks: bool):
    """``(dataset, sampler, loader)`` of the training split, this process's share."""
    from training.augment import PAPER_AUGMENT, Augmenter, AugmentSettings
    from training.dataset import CaseChunkSampler, FrameDataset

    settings = PAPER_AUGMENT if cfg.augment_recipe == "paper" else AugmentSettings()
    augment = Augmenter(settings) if cfg.augment else None
    train_ds = FrameDataset(splits.train, with_masks, augment, seed=seed, cache_cases=cfg.cache_cases,
                            offline_copies=cfg.offline_copies, pad_first=cfg.augment_recipe == "paper",
                            pre_resize=cfg.pre_resize)
    chunk = chunking(splits.train, with_masks, cfg.cache_cases)
    base_sampler = CaseChunkSampler(splits.train, chunk_cases=chunk, shuffle=True, seed=seed,
                                    num_replicas=info.world_size, rank=info.rank)
    sampler = EpochSampler(base_sampler, cfg.neg_ratio, seed)
    per_rank_batch = max(1, cfg.batch_size // info.world_size)
    return train_ds, sampler, make_loader(train_ds, sampler, cfg, per_rank_batch, workers, device)


def _save_epoch(cfg: TrainConfig, trial_dir: Path, model, optimizer, epoch: int, history: list, best: dict,
                improved: bool) -> None:
    if improved:
        save_checkpoint(trial_dir / CHECKPOINT_DIR / "best.pt", model, optimizer, epoch, [], best)
    save_checkpoint(epoch_checkpoint(trial_dir, epoch), model, optimizer, epoch, history, best)
    prune_checkpoints(trial_dir, cfg.keep_checkpoints)


def _draw_trial_curves(cfg: TrainConfig, trial_dir: Path, history: list, step_losses: list, steps_per_epoch: int,
                       tag: str) -> None:
    from training.plot import draw_curves

    curves = {k: [h["val"].get(k, float("nan")) for h in history] for k in ("f1", "seg_f1", "dice")
              if any(k in h["val"] for h in history)}
    draw_curves(trial_dir / "curves.png", step_losses, max(steps_per_epoch, 1),
                [h["val"]["loss"] for h in history], curves, title=f"{cfg.task} trial {tag}")


def _operating_threshold(cfg: TrainConfig, model, splits: Splits, info: DistInfo, device, seed: int, workers: int,
                         reporter: Reporter, tag: str) -> float:
    """The classifier threshold written into the bundle: --threshold, or with ``auto`` the best F1
    on the validation split (with --val-frames: on that subsample, each negative weighted by how
    thinly negatives were sampled, so the F1 is the whole split's estimate); 0.5 for a segmenter."""
    from training.dataset import FrameDataset, subsample_index

    if not TASKS[cfg.task].has_cls:
        return 0.5
    if cfg.threshold != "auto":
        return float(cfg.threshold)
    with_masks = TASKS[cfg.task].has_seg
    index = subsample_index(splits.val, cfg.val_frames, cfg.split_seed)
    n_neg_all, n_neg = int((splits.val.label == 0).sum()), int((index.label == 0).sum())
    val = FrameDataset(index, with_masks, None, seed=seed, cache_cases=cfg.cache_cases, pre_resize=cfg.pre_resize)
    pred = predict_index(model, val, cfg.task, cfg, device, info, workers)
    threshold = best_f1_threshold(pred.p_cls, index.label > 0, neg_weight=n_neg_all / n_neg if n_neg else 1.0)
    reporter.message(f"trial {tag}: threshold {threshold:.3f} (best F1 on the validation split)")
    return threshold


def _write_trial_bundle(cfg: TrainConfig, trial_dir: Path, model, base_info, threshold: float, test, best: dict,
                        seed: int, splits: Splits, result: dict) -> None:
    """The trial's bundle (and, with --full-finetune, its tower as base weights); then its metrics.json."""
    from fetaliqa_core.models.bundle import manifest_for, save_bundle

    bundle_dir = trial_dir / "bundle"
    base_for_bundle = base_info
    if cfg.full_finetune:
        base_path = trial_dir / "base_weights.pt"
        export_base_weights(model, cfg.config_name, base_path)
        from fetaliqa_core.models.base import file_sha256

        base_for_bundle = replace(base_info, sha256=file_sha256(base_path), weights_path=str(base_path))
        result["base_weights"] = str(base_path)
    metrics = {"test": test, "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
               "training": training_record(cfg, seed, splits, result["precision"])}
    description = cfg.description or _describe(cfg)
    manifest = manifest_for(model, base_for_bundle, threshold=threshold, metrics=json_safe(metrics),
                            description=description)
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    save_bundle(model, bundle_dir, manifest)
    result["bundle"] = str(bundle_dir)
    write_json(trial_dir / "metrics.json", result)


def _describe(cfg: TrainConfig) -> str:
    what = TASKS[cfg.task].label
    how = "full fine-tuning of the vision tower" if cfg.full_finetune else f"LoRA r={cfg.lora_r}"
    base = Path(cfg.base).name if cfg.base else f"random {cfg.config_name} base"
    return f"{what} trained by training.train ({how}) on {Path(cfg.data).name} over {base}"


def training_record(cfg: TrainConfig, seed: int, splits: Splits, precision: str | None = None) -> dict:
    """What went into a bundle (stored in its manifest's metrics). ``precision``: the number
    format training ran in ("bf16" / "fp32"; --precision as asked is ``precision_requested``,
    None for the device's choice). ``data_sha256``: :func:`training.dataset.data_fingerprint` of the
    data trained on; ``extra_labels``: the ``--extra-labels`` file (as given), its SHA-256 and the
    training frames it relabelled, None without one (a bundle trained on reviewers' labels looked
    like one trained on the masks: same keys, same ``data_sha256``); ``trials``: how many trials the run trained, of which this bundle is the best
    by validation loss when more than one. ``train_cases``: the cases of
    its training split (:func:`training.dataset.case_digest` of each id, sorted), so that an
    evaluation can tell which of its cases the bundle saw, whatever the dataset holds by then."""
    from training.dataset import case_digest

    return {"data": cfg.data, "data_sha256": splits.split_record.get("data_sha256"),
            "extra_labels": splits.split_record.get("extra_labels"), "trials": cfg.trials,
            "split_seed": cfg.split_seed, "all_sweeps": cfg.all_sweeps, "seed": seed,
            "epochs": cfg.epochs, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
            "seg_loss": cfg.seg_loss, "seg_prior": cfg.seg_prior,
            # what of the encoder trained: its LoRA adapters (for a segmenter too, under --preset paper
            # as well: the reference code ran its segmenter's encoder without gradients, so there only
            # the decoder learnt), or every weight (--full-finetune)
            "encoder_trained": "all" if cfg.full_finetune else "lora",
            "full_finetune": cfg.full_finetune, "augment": cfg.augment, "neg_ratio": cfg.neg_ratio,
            "max_steps": cfg.max_steps, "val_subsample": cfg.val_frames, "base": cfg.base,
            "train_frames": len(splits.train), "val_frames": len(splits.val), "test_frames": len(splits.test),
            "preset": cfg.preset, "lora_targets": cfg.lora_targets, "split_method": cfg.split_method,
            "offline_copies": cfg.offline_copies, "augment_recipe": cfg.augment_recipe, "pre_resize": cfg.pre_resize,
            "precision": precision, "precision_requested": cfg.precision,
            "threshold_requested": cfg.threshold,  # "auto": the manifest's threshold is the validation split's best F1
            "train_cases": sorted(case_digest(u) for u in splits.split_record.get("train", {}).get("cases", []))}
