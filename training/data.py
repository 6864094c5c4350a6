"""The data of a run: the case split, the per-epoch sampler and the loaders
(reading frames and masks is :mod:`training.dataset`'s)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fetaliqa_core.errors import FetalIQAError
from training.config import TrainConfig
from training.dataset import SPLIT_FRACTIONS
from training.reporting import Reporter


@dataclass
class Splits:
    train: object
    val: object
    test: object
    split_record: dict = field(default_factory=dict)


def extra_labels_message(labels_path, train_index, cases) -> str:
    """Apply the reviewers' labels to the training frames; the one line that says what came of
    them (see :func:`apply_labels_file`)."""
    return apply_labels_file(labels_path, train_index, cases)[0]


def apply_labels_file(labels_path, train_index, cases) -> tuple[str, dict]:
    """Apply the reviewers' labels to the training frames. Returns the one line that says what
    came of them: frames relabelled, and the labels not used and why (a count of 0 with no reason
    looked like labels that agreed with the masks); and the record of the file that the run's
    split and the bundle's manifest keep (``file``, ``sha256``, ``frames_relabelled``): a bundle
    whose targets were replaced by reviewers' labels could not be told from one trained on the
    masks, and a resumed run could not tell that the file had changed."""
    from training.dataset import apply_extra_labels, read_extra_labels

    labels = read_extra_labels(labels_path)
    done = apply_extra_labels(train_index, labels)
    record = {"file": str(labels_path), "sha256": labels.sha256, "frames_relabelled": done.changed}
    text = f"extra labels: {done.changed} training frame(s) relabelled from {labels_path}"
    if done.other_pixels:
        text += (f"; {done.other_pixels} label(s) not used: given on other pixels than the file of that name in "
                 "--data holds (replaced, or another folder's file)")
    if done.conflicting:
        text += f"; {done.conflicting} frame(s) not relabelled: their reviewers disagree"
    unknown = labels.cases() - {c.uuid for c in cases}
    elsewhere = labels.cases() - unknown - {c.uuid for c in train_index.cases}
    if elsewhere:  # (a validation or test case keeps its masks' targets: it judges the model)
        n = sum(len(rows) for (case, _), rows in labels.rows.items() if case in elsewhere)
        text += f"; {n} label(s) on validation or test cases, which keep their masks' labels"
    if unknown:
        # A sweep is one in the review database whatever file it was opened from (its pixels' hash),
        # and its labels are exported under the name of the file it was last opened from: a copy
        # opened once after the dataset's file renamed all its verdicts, and "export them from sweeps
        # at the dataset's own files" told the trainers to do what they had done. The dataset's cases
        # are not searched by hash: every case would be read whole (about a second each, and the
        # cases of a dataset are alike in size and shape), for labels that may name other data.
        n = sum(len(rows) for (case, _), rows in labels.rows.items() if case in unknown)
        names = sorted(unknown)
        text += (f"; {n} label(s) name no case in --data ({', '.join(u[:24] for u in names[:3])}"
                 f"{', …' if len(names) > 3 else ''}): labels are exported under the name of the file their sweep "
                 "was last opened from, wherever they were given; if they are this dataset's, start a review "
                 "of each such sweep once in the viewer from its file in --data, then export the labels again")
    return text, record


def _empty_validation_message(cfg: TrainConfig, cases, val_cases) -> str:
    """Why the validation split holds no frame, and what to do. It said "the 70/10/20 split needs
    at least 3 subjects with frames" where 3 had them: each split takes a subject whatever its
    frames, and the validation split can get only cases without a sweep with an AC."""
    from fetaliqa_core.errors import first_names

    n_subjects = len({c.subject_id for c in cases})
    if not val_cases and cfg.split_method == "permutation":
        return (f"--data {cfg.data}: the validation split is empty: the permutation split cuts its {len(cases)} "
                "cases as the paper's reference code does (int(0.7 n) training cases, validation up to "
                "int(0.8 n)), which leaves none for validation. Add cases (7 or more always leave it one), "
                "or give --split-method grouped")
    if not val_cases:
        return (f"--data {cfg.data}: the validation split is empty: the {len(cases)} cases are of {n_subjects} "
                "subject(s), and the 70/10/20 split keeps each subject's cases in one split, so it needs at least "
                "3 subjects. Add cases of other subjects")
    which = "it has" if len(val_cases) == 1 else "they have"
    names = first_names([c.uuid for c in val_cases], 3)
    if cfg.all_sweeps:
        return (f"--data {cfg.data}: the validation split got only case(s) {names}, and {which} no frame to "
                "validate on. Give another --split-seed, or add cases")
    return (f"--data {cfg.data}: the validation split got only case(s) {names}, and {which} no sweep with an AC "
            "value (only those are used without --all-sweeps): there is no frame to validate on. Give another "
            "--split-seed, or --all-sweeps to use every sweep")


def prepare_splits(cfg: TrainConfig, reporter: Reporter) -> Splits:
    from fetaliqa_core import paths
    from training.dataset import build_index, read_cases, split_cases

    cases = read_cases(cfg.data)
    split = split_cases(cases, seed=cfg.split_seed, method=cfg.split_method)
    cache = paths.cache_dir() / "training_index"
    idx = {name: build_index(split[name], all_sweeps=cfg.all_sweeps, cache_dir=cache) for name in split}
    if not len(idx["train"]):
        raise FetalIQAError(f"--data {cfg.data}: the training split has no frame (no sweep with an AC value); "
                            "add cases or pass --all-sweeps")
    if not idx["train"].n_positive:
        # a threshold "with the best F1" and a model of no abdomen would come out of it without a word
        raise FetalIQAError(f"--data {cfg.data}: the training split has no frame with an abdomen (no mask "
                            f"labels one in its {len(idx['train'])} frames): there is nothing to learn. Check the "
                            "masks, or add cases with annotated frames")
    if not len(idx["val"]):
        raise FetalIQAError(_empty_validation_message(cfg, cases, split["val"]))
    labels_record = None
    if cfg.extra_labels:
        text, labels_record = apply_labels_file(cfg.extra_labels, idx["train"], cases)
        reporter.message(text)
    from training.dataset import data_fingerprint

    # (data_sha256 and extra_labels are also what --resume compares: training.trials.check_same_split)
    record = {"seed": cfg.split_seed, "fractions": list(SPLIT_FRACTIONS), "all_sweeps": cfg.all_sweeps,
              "data_sha256": data_fingerprint(cfg.data, cases), "extra_labels": labels_record}
    for name in split:
        record[name] = {"cases": [c.uuid for c in split[name]],
                        "subjects": sorted({c.subject_id for c in split[name]}),
                        "frames": len(idx[name]), "positive_frames": idx[name].n_positive}
    for name in ("train", "val", "test"):
        reporter.message(f"{name}: {idx[name].summary()}")
    from training.dataset import data_notes

    for note in data_notes(cfg.data, cases, "train on them", cache):
        reporter.message(note)
    shared = set(record["train"]["subjects"]) & (set(record["val"]["subjects"]) | set(record["test"]["subjects"]))
    if shared:  # the paper's permutation split ignores subjects: its metrics are not subject-independent
        reporter.message(f"note: {len(shared)} subject(s) have cases in training and in validation or test "
                         f"(split {cfg.split_method}): their metrics are not of unseen subjects")
    return Splits(idx["train"], idx["val"], idx["test"], record)


def make_loader(dataset, sampler, cfg: TrainConfig, per_rank_batch: int, workers: int, device):
    from torch.utils.data import DataLoader

    from training.dataset import collate

    return DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", drop_last=False,
                      persistent_workers=False, prefetch_factor=4 if workers > 0 else None)


def chunking(index, with_masks: bool, cache_cases: int) -> int | None:
    """Shuffle chunk (cases) for compressed volumes; None (full shuffle) when all are memory-mapped."""
    from training.dataset import is_memory_mapped

    paths_ = [c.image_path for c in index.cases] + ([c.mask_path for c in index.cases] if with_masks else [])
    return None if all(is_memory_mapped(p) for p in paths_) else cache_cases


def balanced_subset(sampler_order: np.ndarray, index, neg_ratio: float | None, seed: int, epoch: int) -> np.ndarray:
    if neg_ratio is None:
        return sampler_order
    pos = index.target[sampler_order] > 0.5
    n_neg = int(round(neg_ratio * max(int(pos.sum()), 1)))
    rng = np.random.default_rng([seed, epoch, 11])
    neg_positions = np.flatnonzero(~pos)
    keep_neg = set(rng.choice(neg_positions, size=min(n_neg, neg_positions.size), replace=False).tolist())
    mask = pos | np.isin(np.arange(sampler_order.size), list(keep_neg))
    return sampler_order[mask]


class EpochSampler:
    """:class:`CaseChunkSampler` with optional per-epoch negative subsampling (``--neg-ratio``)."""

    def __init__(self, base, neg_ratio: float | None, seed: int) -> None:
        self.base = base
        self.neg_ratio = neg_ratio
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def _mine(self) -> np.ndarray:
        b = self.base
        order = balanced_subset(b.order(), b.index, self.neg_ratio, self.seed, b.epoch)
        if b.num_replicas == 1:
            return order
        total = int(math.ceil(len(order) / b.num_replicas)) * b.num_replicas
        if total > len(order) and len(order):
            order = np.concatenate([order, order[: total - len(order)]])
        return order[b.rank::b.num_replicas]

    def __iter__(self):
        return iter(self._mine().tolist())

    def __len__(self) -> int:
        return len(self._mine())
