"""``fetaliqa distill``: a small student learns a FetalCLIP classifier + segmenter pair.

The teacher (the ``--cls`` and ``--seg`` bundles, or one joint bundle given as both) scores the
frames of an ACOUSLIC-layout dataset once; the student (:class:`~fetaliqa_core.models.student.
StudentModel`, a timm backbone named by ``--student``) is trained on

- the teacher's classifier probability (binary cross-entropy against the soft target),
- the teacher's segmentation probabilities (soft cross-entropy at 56 x 56) and its label mask
  (cross-entropy at 224 x 224, foreground weighted),
- the dataset's own labels where present (frame label and mask, at a smaller weight),

and is saved as an ordinary bundle (``RUN/bundle``, manifest ``kind: "student"``) with the
teacher classifier's threshold. Cases are split as for training (grouped by subject): the
student trains on the train split and is compared with its teacher on the others
(``RUN/metrics.json``). Progress lines (``PROGRESS epoch=e/E step=s/S loss=x``) and the final
``BUNDLE path`` line are the ones ``training.train`` prints, so the app's Train dialog runs both.

    python -m training.distill --cls CLS --seg SEG [--base WEIGHTS] --data DIR --out RUN
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetaliqa_core.cli._args import non_negative_int, thread_count
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import write_json
from fetaliqa_core.paths import cache_dir, check_out_writable, out_not_writable

HELP = "Distil a small student (classifier and segmenter in one fast network) from model bundles."
SOFT_SIZE = 56  # the teacher's soft masks are kept (and matched) at this side
FG_WEIGHT = 2.0  # cross-entropy weight of abdomen pixels against background
LABEL_WEIGHT = 0.25  # weight of the dataset's own labels against the teacher's outputs


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fetaliqa_core.models.options import DEFAULT_BACKBONE, STUDENT_BACKBONES

    p.add_argument("--cls", type=Path, required=True, metavar="BUNDLE", help="teacher classifier (or joint) bundle")
    p.add_argument("--seg", type=Path, required=True, metavar="BUNDLE", help="teacher segmenter (or joint) bundle")
    p.add_argument("--base", type=Path, default=None, metavar="WEIGHTS",
                   help="FetalCLIP weights the teacher bundles were trained on")
    p.add_argument("--student", default=DEFAULT_BACKBONE, choices=list(STUDENT_BACKBONES),
                   help=f"student backbone (timm name; default {DEFAULT_BACKBONE})")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder (ACOUSLIC-AI layout)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder (bundle in RUN/bundle)")
    p.add_argument("--epochs", type=int, default=6, help="passes over the kept frames (default 6)")
    p.add_argument("--batch-size", type=int, default=16, help="frames per training step (default 16)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate of the one-cycle schedule (default 0.002)")
    p.add_argument("--frames-per-case", type=int, default=96,
                   help="frames kept per case: the positive (and, mined, the teacher's flagged) frames first, the rest "
                        "spread evenly")
    p.add_argument("--mine", action=argparse.BooleanOptionalAction, default=True,
                   help="the teacher scores every frame and the frames it flags (with their neighbours) are "
                        "kept first, so the student learns where the teacher's candidates are (default on; "
                        "--no-mine scores only the kept frames: faster, a weaker cascade)")
    p.add_argument("--decoder-width", type=int, default=32,
                   help="channels of the student's light decoder (default 32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (teacher and student)")
    p.add_argument("--precision", default=None, choices=["auto", "bf16", "fp32"],
                   help="the teacher's number format (default auto; the student trains in fp32)")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads (default: PyTorch's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the frame choice, order and initialisation (default 0)")
    p.add_argument("--description", default="", help="text written into the bundle's manifest")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN's last finished epoch (RUN/checkpoint.safetensors); the "
                        "teacher's outputs are computed again")


@dataclass
class FrameStore:
    """The frames the student learns from and what the teacher (and the dataset) says about them."""

    grey: np.ndarray  # (M, 224, 224) uint8, preprocessed before normalisation
    t_cls: np.ndarray  # (M,) float32 teacher P(good)
    t_soft: np.ndarray  # (M, C, 56, 56) float16 teacher segmentation probabilities
    t_labels: np.ndarray  # (M, 224, 224) uint8 teacher labels (0, 1, 2; 3 binary foreground -> 1)
    gt_labels: np.ndarray  # (M, 224, 224) uint8 dataset labels
    case: np.ndarray  # (M,) int case number


def _pick_frames(labels: np.ndarray, budget: int, rng: np.random.Generator,
                 teacher_hot: np.ndarray | None = None) -> np.ndarray:
    """``budget`` frames of one case: first the frames that matter (the dataset's positive frames
    and, when the teacher scored them all, the frames it flags with their neighbours: a student
    that misses them sends the cascade's teacher to the wrong runs), up to half the budget (two
    thirds when mined), then the rest spread evenly over the case."""
    hot = labels > 0 if teacher_hot is None else (labels > 0) | teacher_hot
    cap = budget // 2 if teacher_hot is None else budget * 2 // 3
    pos = np.flatnonzero(hot)
    if len(pos) > cap:
        pos = np.sort(rng.choice(pos, cap, replace=False))
    rest = np.setdiff1d(np.arange(len(labels)), pos)
    n = min(len(rest), budget - len(pos))
    spread = rest[np.linspace(0, len(rest) - 1, n).round().astype(int)] if n > 0 else rest[:0]
    return np.union1d(pos, spread)


MINE_NEIGHBOURS = 2  # frames kept on each side of a frame the teacher flags (run edges are the hard part)


def _teacher_hot(flagged: np.ndarray, sweep_ranges) -> np.ndarray:
    """The frames the teacher flags, widened by :data:`MINE_NEIGHBOURS` inside each sweep."""
    flagged = np.asarray(flagged, dtype=bool)
    hot = flagged.copy()
    for start, stop in sweep_ranges:
        f = flagged[start:stop]
        for k in range(1, min(MINE_NEIGHBOURS, len(f) - 1) + 1):
            hot[start:stop - k] |= f[k:]
            hot[start + k:stop] |= f[:-k]
    return hot


def teacher_store(cases, cls_lm, seg_lm, budget: int, seed: int, log, mine: bool = False,
                  which: str = "") -> FrameStore:
    """Run the teacher over ``budget`` frames of each case (uint8 inputs kept, not floats).
    ``mine``: the teacher scores every frame and the frames it flags are kept first (see
    :func:`_pick_frames`); else only the kept frames are scored."""
    import torch
    import torch.nn.functional as F

    from fetaliqa_core.io import load_mask, load_sweep
    from fetaliqa_core.models.segmenter import LABEL_ABDOMEN, label_masks, mask_quality_call
    from fetaliqa_core.preprocess import normalise_grey, preprocess_masks, resize_frames_uint8
    from training.dataset import frame_labels

    rng = np.random.default_rng(seed)
    keys = ("grey", "t_cls", "t_soft", "t_labels", "flag")
    parts: dict[str, list] = {k: [] for k in ("grey", "t_cls", "t_soft", "t_labels", "gt_labels", "case")}
    for ci, case in enumerate(cases):
        # in memory while the teacher scores it (as `score` reads a sweep): mapped from its file,
        # another program cutting the file short meanwhile killed the run with SIGBUS, without a word
        sweep = load_sweep(case.image_path).in_memory()
        labels = frame_labels(case)
        todo = np.arange(sweep.n_frames) if mine else _pick_frames(labels, budget, rng)
        got: dict[str, list] = {k: [] for k in keys}
        for s in range(0, len(todo), 16):
            sel = todo[s:s + 16]
            grey = resize_frames_uint8(np.ascontiguousarray(sweep.frames[sel]))
            x = normalise_grey(grey)
            pred = seg_lm.predict(x)
            p_cls = (pred.p_cls if cls_lm is seg_lm else cls_lm.predict(x).p_cls).float().numpy()
            prob = pred.seg_prob
            lab = label_masks(prob)
            lab = torch.where(lab == LABEL_ABDOMEN, torch.ones_like(lab), lab)
            got["grey"].append(grey)
            got["t_cls"].append(p_cls)
            got["t_soft"].append(F.adaptive_avg_pool2d(prob.float(), SOFT_SIZE).half().numpy())
            got["t_labels"].append(lab.numpy())
            got["flag"].append((p_cls >= cls_lm.threshold) | mask_quality_call(prob).numpy())
        got = {k: np.concatenate(v) for k, v in got.items()}
        if mine:
            idx = _pick_frames(labels, budget, rng, _teacher_hot(got["flag"], sweep.sweep_ranges))
            got = {k: v[idx] for k, v in got.items()}
        else:
            idx = todo
        for k in keys[:-1]:
            parts[k].append(got[k])
        mask = load_mask(case.mask_path, like=sweep, in_memory=True)
        parts["gt_labels"].append(preprocess_masks(np.ascontiguousarray(mask[idx])).numpy())
        parts["case"].append(np.full(len(idx), ci))
        log(f"teacher: {which + ' ' if which else ''}case {ci + 1}/{len(cases)} ({len(idx)} frames kept, "
            f"{int(got['flag'].sum())} flagged)")
    return FrameStore(**{k: np.concatenate(v) for k, v in parts.items()})


def distill_loss(cls_logit, seg_logit, t_cls, t_soft, t_labels, gt_cls, gt_labels):
    """Teacher terms (soft classifier target, soft masks at 56, hard masks at 224) plus the
    dataset's labels at :data:`LABEL_WEIGHT`."""
    import torch
    import torch.nn.functional as F

    cls_logit = cls_logit[:, 0].float()
    seg_logit = seg_logit.float()
    loss = F.binary_cross_entropy_with_logits(cls_logit, t_cls)
    loss = loss + LABEL_WEIGHT * F.binary_cross_entropy_with_logits(cls_logit, gt_cls)
    small = F.adaptive_avg_pool2d(seg_logit, SOFT_SIZE)
    if seg_logit.shape[1] == 1:
        loss = loss + F.binary_cross_entropy_with_logits(small, t_soft)
        fg_w = 1.0 + (FG_WEIGHT - 1.0) * (t_labels > 0).float()
        loss = loss + F.binary_cross_entropy_with_logits(seg_logit[:, 0], (t_labels > 0).float(), weight=fg_w)
        loss = loss + LABEL_WEIGHT * F.binary_cross_entropy_with_logits(seg_logit[:, 0], (gt_labels > 0).float())
        return loss
    loss = loss - (t_soft * F.log_softmax(small, dim=1)).sum(dim=1).mean()
    weight = torch.tensor([1.0, FG_WEIGHT, FG_WEIGHT])
    loss = loss + F.cross_entropy(seg_logit, t_labels.long(), weight=weight)
    loss = loss + LABEL_WEIGHT * F.cross_entropy(seg_logit, gt_labels.long().clamp(max=2), weight=weight)
    return loss


def _predict_store(model, store: FrameStore, rows: np.ndarray, batch: int = 32):
    import torch

    from fetaliqa_core.models.segmenter import label_masks, segmentation_probabilities
    from fetaliqa_core.preprocess import normalise_grey

    p, labels = [], []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(rows), batch):
            x = normalise_grey(store.grey[rows[s:s + batch]])
            c, m = model(x)
            p.append(torch.sigmoid(c.float())[:, 0].numpy())
            labels.append(label_masks(segmentation_probabilities(m)).numpy())
    return np.concatenate(p), np.concatenate(labels)



CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_INFO = "checkpoint.json"


_OPT_PREFIX = "optimizer."  # the optimiser's state in the checkpoint: optimizer.<param index>.<name>


def save_checkpoint(out: Path, student, epoch: int, args, opt=None, seconds: float = 0.0) -> None:
    """The student's weights and the optimiser's moments after a finished epoch (tensors only),
    then what they are: a resumed run goes on as the uninterrupted one would (the optimiser
    restarted from zero before, and the resumed run diverged)."""
    from safetensors.torch import save

    from fetaliqa_core.files import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    if opt is not None:
        for index, state in opt.state_dict()["state"].items():
            for name, value in state.items():
                tensors[f"{_OPT_PREFIX}{index}.{name}"] = torch_tensor(value)
    atomic_write(out / CHECKPOINT, save(tensors))
    write_json(out / CHECKPOINT_INFO, {"epoch": int(epoch), "epochs": int(args.epochs), "student": args.student,
                                       "decoder_width": int(args.decoder_width), "settings": _resume_settings(args),
                                       "train_seconds": round(float(seconds), 1)})


def torch_tensor(value):
    """An optimiser state value as a contiguous CPU tensor (a step count may be a number)."""
    import torch

    return (value if isinstance(value, torch.Tensor) else torch.tensor(float(value))).detach().cpu().contiguous()


def _resume_settings(args) -> dict:
    """What a resumed run must share with the run it continues: the teachers, the data, and what
    orders and weighs its steps (another teacher or dataset went on without a word, and the
    manifest named only the second)."""
    def where(value):
        return None if value is None else str(Path(value).expanduser().resolve())

    return {"cls": where(args.cls), "seg": where(args.seg), "base": where(getattr(args, "base", None)),
            "data": where(args.data), "lr": float(args.lr), "batch_size": int(args.batch_size),
            "frames_per_case": int(args.frames_per_case), "seed": int(args.seed),
            "mine": bool(getattr(args, "mine", True))}


def checkpoint_epoch(out: Path, args) -> int:
    """The epochs RUN's checkpoint had finished, checked against ``args`` from its description
    alone (FetalIQAError in one line for a missing, damaged or mismatched checkpoint)."""
    return int(_checkpoint_info(out, args)["epoch"])


def _checkpoint_info(out: Path, args) -> dict:
    """RUN's checkpoint description, checked as :func:`checkpoint_epoch` says."""
    info_path = out / CHECKPOINT_INFO
    if not (info_path.is_file() and (out / CHECKPOINT).is_file()):
        raise FetalIQAError(f"{out}: no checkpoint to resume from; run without --resume")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        epoch = int(info["epoch"])
        same = info["student"] == args.student and int(info["decoder_width"]) == args.decoder_width
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise FetalIQAError(f"{info_path}: damaged checkpoint description ({exc}); start a new --out folder") from None
    if not same:
        raise FetalIQAError(f"{out}: the checkpoint is of another student ({info['student']}, decoder width "
                            f"{info['decoder_width']}); resume with those settings or start a new --out folder")
    if not 1 <= epoch <= args.epochs:
        raise FetalIQAError(f"{info_path}: checkpoint after epoch {epoch}, but --epochs is {args.epochs}")
    kept, now = info.get("settings"), _resume_settings(args)
    if not isinstance(kept, dict):
        raise FetalIQAError(f"{info_path}: the checkpoint does not say what it was trained with, so --resume cannot "
                            "check it continues the same run; start a new --out folder")
    changed = sorted(k for k in now if kept.get(k) != now[k])
    if changed:
        raise FetalIQAError(f"{out}: the run started with other {', '.join(changed)} ("
                            + "; ".join(f"{k}: {kept.get(k)}" for k in changed[:2])
                            + "): resume with the same settings, or start a new --out folder")
    return info


def load_checkpoint(out: Path, student, args, opt=None) -> tuple[int, float]:
    """Load RUN's checkpoint into ``student`` (and the optimiser's moments into ``opt`` when it
    holds them); returns the epochs it had finished and the training seconds they took."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = _checkpoint_info(out, args)
    weights = out / CHECKPOINT
    try:
        tensors = load_file(str(weights))
        student.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(_OPT_PREFIX)}, strict=True)
        moments = {k[len(_OPT_PREFIX):]: v for k, v in tensors.items() if k.startswith(_OPT_PREFIX)}
        if opt is not None and moments:
            state = opt.state_dict()
            restored: dict = {}
            for key, value in moments.items():
                index, _, name = key.partition(".")
                restored.setdefault(int(index), {})[name] = value
            state["state"] = restored
            opt.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError, ValueError, KeyError) as exc:
        raise FetalIQAError(f"{weights}: cannot be loaded into this student ({str(exc).splitlines()[0]}); "
                            "start a new --out folder") from None
    try:
        seconds = float(info.get("train_seconds", 0.0))
    except (ValueError, TypeError):
        seconds = 0.0
    return int(info["epoch"]), seconds


def distill(args, log=print) -> Path:
    import torch

    from fetaliqa_core.models import choice as choice_mod
    from fetaliqa_core.models.agreement import output_agreement
    from fetaliqa_core.models.bundle import save_bundle, student_manifest
    from fetaliqa_core.models.segmenter import LABEL_ABDOMEN
    from fetaliqa_core.models.student import StudentModel
    from fetaliqa_core.preprocess import normalise_grey
    from training.dataset import case_digest, data_notes, read_cases, split_cases

    if (args.epochs < 1 or args.batch_size < 1 or args.frames_per_case < 2 or not args.lr > 0
            or args.decoder_width < 1 or (args.threads is not None and args.threads < 1)):
        raise FetalIQAError("--epochs, --batch-size, --decoder-width and --threads must be >= 1, "
                            "--frames-per-case >= 2 and --lr > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    if (out / "bundle" / "manifest.json").exists():
        raise FetalIQAError(f"{out} already holds a bundle; choose a new --out folder")
    if (out / CHECKPOINT).exists() and not getattr(args, "resume", False):
        raise FetalIQAError(f"{out} holds an unfinished run: add --resume to continue it, or choose a new --out folder")
    if out.exists() and not out.is_dir():
        raise FetalIQAError(f"--out {out} is a file; choose a new folder")
    if out.is_dir() and any(out.iterdir()) and not (out / CHECKPOINT).exists():
        # its files (an earlier evaluation's metrics.json, a dataset) would be overwritten or mixed in
        raise FetalIQAError(f"--out {out} is not empty and holds no distillation run; choose a new folder")
    # a folder nothing can be written in is said now: it was found at the first checkpoint, after
    # the teacher pass (hours on a full dataset) and a first epoch
    check_out_writable(out)
    if getattr(args, "resume", False):
        checkpoint_epoch(out, args)  # a checkpoint that cannot resume is told before the teacher runs
    models = choice_mod.load_models(choice_mod.ModelChoice(model=None, cls=args.cls, seg=args.seg, base=args.base,
                                                       device=args.device, precision=args.precision))
    cls_lm, seg_lm = models.cls, models.seg
    if cls_lm.task not in ("cls", "joint") or seg_lm.task not in ("seg", "joint"):
        raise FetalIQAError("--cls must be a classifier (or joint) bundle and --seg a segmenter (or joint) bundle")
    cases = read_cases(args.data)
    for note in data_notes(args.data, cases, "distill on them", cache_dir() / "training_index"):
        log(note)
    split = split_cases(cases)
    train_cases = split["train"]
    held = split["val"] + split["test"]
    if not train_cases or not held:
        raise FetalIQAError(f"{args.data}: too few cases ({len(cases)}) to train and compare; give at least 3 subjects")
    t0 = time.perf_counter()
    log(f"teacher: {models.describe()}; {len(train_cases)} training and {len(held)} held-out cases")
    mine = getattr(args, "mine", True)
    train = teacher_store(train_cases, cls_lm, seg_lm, args.frames_per_case, args.seed, log, mine=mine,
                          which="training")
    test = teacher_store(held, cls_lm, seg_lm, args.frames_per_case, args.seed + 1, log, which="held-out")
    teacher_s = time.perf_counter() - t0
    n_classes = seg_lm.manifest.n_classes
    student = StudentModel(args.student, n_classes, args.decoder_width)
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=1e-4)
    n = len(train.grey)
    steps = max(1, n // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps * args.epochs, pct_start=0.15)
    gt_cls_all = (train.gt_labels.reshape(n, -1).max(axis=1) > 0).astype(np.float32)
    done, earlier_s = 0, 0.0
    if getattr(args, "resume", False):
        import warnings

        done, earlier_s = load_checkpoint(out, student, args, opt)
        with warnings.catch_warnings():  # the schedule moves on to where the run stopped
            warnings.simplefilter("ignore")
            for _ in range(steps * done):
                sched.step()
        log(f"resuming after epoch {done}/{args.epochs}")
    t1 = time.perf_counter()
    for epoch in range(done + 1, args.epochs + 1):
        student.train()
        rng = np.random.default_rng([args.seed, epoch])  # each epoch's order and flips, resumed or not
        order = rng.permutation(n)
        total = 0.0
        for step in range(1, steps + 1):
            rows = np.sort(order[(step - 1) * args.batch_size: step * args.batch_size])
            grey = torch.from_numpy(train.grey[rows])
            t_soft = torch.from_numpy(train.t_soft[rows]).float()
            t_lab = torch.from_numpy(train.t_labels[rows])
            gt_lab = torch.from_numpy(train.gt_labels[rows])
            if rng.random() < 0.5:  # left-right mirror: the sweep direction is arbitrary
                grey, t_soft, t_lab, gt_lab = (t.flip(-1) for t in (grey, t_soft, t_lab, gt_lab))
            cls_logit, seg_logit = student(normalise_grey(grey))
            loss = distill_loss(cls_logit, seg_logit, torch.from_numpy(train.t_cls[rows]), t_soft, t_lab,
                                torch.from_numpy(gt_cls_all[rows]), gt_lab)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            if not args.quiet and (step % 10 == 0 or step == steps):
                print(f"PROGRESS epoch={epoch}/{args.epochs} step={step}/{steps} loss={total / step:.4f}", flush=True)
        try:
            save_checkpoint(out, student, epoch, args, opt, earlier_s + time.perf_counter() - t1)
        except OSError as exc:  # (a disk filled during the run): the --out folder named, not a temporary file
            raise out_not_writable(out, exc) from None
        log(f"epoch {epoch}/{args.epochs}: loss {total / steps:.4f} ({time.perf_counter() - t1:.0f} s)")
    student.eval()
    rows = np.arange(len(test.grey))
    p, labels = _predict_store(student, test, rows)
    t_labels = np.where(test.t_labels > 0, test.t_labels, 0)
    s_labels = np.where(labels == LABEL_ABDOMEN, 1, labels)
    agree = output_agreement(test.t_cls, t_labels, p, s_labels, threshold=cls_lm.threshold)
    metrics = {"held_out_vs_teacher": agree, "held_out_cases": len(held), "train_frames": int(n),
               "teacher_seconds": round(teacher_s, 1),
               "train_seconds": round(earlier_s + time.perf_counter() - t1, 1),  # a resumed run's too
               "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
               "data": str(Path(args.data).expanduser().resolve()),  # as train and eval record it
               "frames_per_case": args.frames_per_case, "mined": bool(mine), "seed": args.seed,
               # the teachers' number format decides what the student copied (bf16 and fp32
               # teachers gave students differing in 183 of 210 tensors)
               "teacher_precision": models.precision, "precision_requested": args.precision,
               # as train records them, so that eval notes the cases the student learnt from
               "train_cases": sorted(case_digest(c.uuid) for c in train_cases)}
    from fetaliqa_core.models.bundle import read_manifest
    from fetaliqa_core.models.choice import bundle_part

    # Each teacher's own bundle: a classifier and segmenter sharing one base load as one model
    # whose hash covers both and whose description joins both.
    from training.evaluate import manifest_train_cases

    teacher = {}
    # the teachers' own training cases: the student copies their outputs there, so eval notes
    # them as it does the student's (None when a teacher does not record them)
    taught: set[str] | None = set()
    for key, lm, role in (("cls", cls_lm, "classifier"), ("seg", seg_lm, "segmenter")):
        folder, digest = bundle_part(lm, role)
        try:
            own = read_manifest(folder) if folder is not None else lm.manifest
        except FetalIQAError:
            own = lm.manifest
        cases = manifest_train_cases(own)
        taught = None if taught is None or cases is None else taught | cases
        teacher[f"{key}_bundle_sha256"] = digest
        teacher[key] = own.description[:200]
    metrics["teacher_train_cases"] = None if taught is None else sorted(taught)
    description = args.description or (
        f"student ({args.student} + light decoder) distilled by fetaliqa distill from {Path(args.cls).name} and "
        f"{Path(args.seg).name}")
    manifest = student_manifest(student, cls_lm.manifest, threshold=cls_lm.threshold, metrics=metrics,
                                description=description, teacher_info=teacher)
    try:
        bundle = save_bundle(student, out / "bundle", manifest)
        write_json(out / "metrics.json", metrics)
    except OSError as exc:
        raise out_not_writable(out, exc) from None
    log(f"held-out frames vs teacher: flags {agree.get('flag_agreement', math.nan):.3f} equal, "
        f"classifier max |dp| {agree.get('cls_max_abs_dp', math.nan):.3f}, mask pixels "
        f"{agree.get('mask_pixel_agreement', math.nan):.3f} equal")
    return bundle


def run(args: argparse.Namespace) -> int:
    try:
        bundle = distill(args, log=(lambda s: None) if args.quiet else (lambda s: print(s, flush=True)))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (also under `fetaliqa distill`): say what is kept
        if (Path(args.out) / CHECKPOINT).is_file():
            print(f"fetaliqa: interrupted (the last finished epoch's checkpoint is kept in {args.out}; --resume "
                  "continues)", file=sys.stderr)
        else:
            print("fetaliqa: interrupted before a first epoch finished: nothing was kept; run the same command "
                  "again (without --resume)", file=sys.stderr)
        return 130
    print(f"BUNDLE {bundle.resolve()}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.distill", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from fetaliqa_core.cli import run_guarded

    return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
