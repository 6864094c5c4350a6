"""Evaluate model bundles on a split of an ACOUSLIC-layout dataset, the way the app scores.

Every case of the split goes through :class:`fetaliqa_core.engine.ScoringEngine` with the
bundles loaded by :func:`fetaliqa_core.models.choice.load_models` (merged LoRA, the device's dtype),
so the numbers are those of the product, not of a training-time forward pass. From the engine's
per-frame results:

- **per-frame metrics** on the frames of the selected sweeps (by default those with an AC value,
  as the paper): accuracy, F1, precision, recall, specificity of the classifier (``p >=``
  the bundle's threshold) and of the segmenter used as a classifier (the paper's rule: positive
  when >= 1 % of the 224 x 224 pixels are foreground), Dice of the segmenter's masks, and for a
  3-class segmenter the share of correctly graded planes (optimal vs suboptimal);
- **challenge metrics per case** on the whole case (all sweeps), equal to the organisers'
  evaluator (:func:`fetaliqa_core.analysis.case_metrics`), side by side for four ways of choosing
  the case's frame: the challenge baseline's rule (largest label-1 area, else label-2), the
  product's choice (:func:`fetaliqa_core.analysis.assessment.assess`) fed the classifier alone,
  the segmenter alone, and both. Every row is measured on the segmenter's mask of the frame it
  chose (mapped back onto the frame), so the rows differ only in the choice. Operating points as
  ``fetaliqa score`` uses them: the classifier bundle's own threshold on ``p_cls``; the paper's
  1 % area rule for the segmenter.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fetaliqa_core import __version__, paths
from fetaliqa_core.acouslic import CSV_RELPATH, IMAGES_SUBDIR, MASKS_SUBDIR
from fetaliqa_core.errors import FetalIQAError, UsageError
from fetaliqa_core.files import atomic_output_dir, atomic_write, csv_writer, write_json

SPLITS = ("train", "val", "test", "all")
FRAME_KEYS = ("accuracy", "f1", "precision", "recall", "specificity")
CHALLENGE_KEYS = ("wfss", "nae_ac", "dsc_soft", "score")
#: The challenge table's rows: how each chooses the case's frame (all measured on the segmenter's
#: mask of that frame when a segmenter is loaded).
ROW_LABELS = {
    "baseline": "baseline rule (largest label-1 area, else label-2)",
    "cls": "classifier alone",
    "seg": "segmenter alone",
    "cls+seg": "FetalIQA's choice (both models)",
    "predictions": "the answers given (--predictions)",  # eval --predictions: answers already written
}
#: The engine's mask score p_seg = f / (f + 1 %) is 0.5 exactly at the paper's 1 % area rule.

#: A reference AC this many times shorter than its own annotation's outline was written in cm.
CM_RATIO = (7.0, 14.0)


def _check_reference_units(case, gt: np.ndarray, ranges, spacing_mm, data) -> None:
    """Refuses a circumferences CSV written in cm: each reference AC is measured on its sweep's
    optimal plane, so the annotation's largest optimal outline, fitted in mm, is close to it. A
    value about a tenth of that (every NAE_AC would be ~9 and the score meaningless) is refused
    before any model runs. A sweep annotated with suboptimal frames (label 2) alone is judged by
    its largest suboptimal outline (an AC in cm there passed, NAE_AC 0.885 without a word).
    Nothing is judged without a pixel size or an annotated frame."""
    if spacing_mm is None:
        return
    from fetaliqa_core.analysis.ac import measure_ac

    for s, ref in enumerate(case.ac_mm):
        if ref is None or s >= len(ranges):
            continue
        lo, hi = ranges[s]
        labels = np.asarray(gt[lo:hi])
        for label in (1, 2):  # the optimal outlines, else the suboptimal ones
            area = (labels == label).reshape(hi - lo, -1).sum(axis=1)
            if area.size and area.max() > 0:
                break
        if not area.size or area.max() == 0:
            continue
        m = measure_ac((labels[int(area.argmax())] == label).astype(np.uint8), spacing_mm, fov=None)
        if m is None or not CM_RATIO[0] <= m.ac_mm / ref <= CM_RATIO[1]:
            continue
        raise FetalIQAError(
            f"{Path(data) / 'circumferences'}: case {case.uuid}, sweep {s + 1}: the reference AC is {ref:g} but "
            f"its own annotation's outline measures {m.ac_mm:.0f} mm, ten times more: the CSV looks written in "
            "cm. Write the circumferences in mm (multiply by 10) and evaluate again.")


# The paper's test results (arXiv 2507.22802, mean of 5 runs) - accuracy, F1, precision, recall,
# printed to the digits the paper gives (PAPER_DIGITS; 4 elsewhere).
PAPER_DIGITS = {"FetalCLIP_SEG": 3}
PAPER_TABLE: list[tuple[str, float | None, float, float | None, float | None]] = [
    ("DenseNet", 0.9516, 0.7024, 0.7805, 0.6420),
    ("EfficientNet", 0.9537, 0.7253, 0.7725, 0.6855),
    ("VGG", 0.9510, 0.7084, 0.7580, 0.6671),
    ("Swin", 0.9565, 0.7429, 0.7864, 0.7113),
    ("DeiT", 0.9554, 0.7466, 0.7619, 0.7363),
    ("ViT-400M", 0.9560, 0.7506, 0.7657, 0.7417),
    ("FetalCLIP_CLS", 0.9575, 0.7570, 0.7782, 0.7397),
    ("FetalCLIP_SEG", None, 0.771, None, None),
]


@dataclass
class EvalSettings:
    cls: Path | None
    seg: Path | None
    data: Path
    split: str = "test"
    base: Path | None = None
    device: str = "auto"
    precision: str | None = None  # "auto" | "bf16" | "fp32"; None: $FETALIQA_PRECISION or auto
    split_seed: int | None = None  # None: the seed recorded in the bundle (else the default)
    all_sweeps: bool | None = None  # None: as the bundle was trained
    max_cases: int | None = None
    progress: bool = True
    # these cases (by id, in this order) instead of a split: another pair evaluated on the same cases
    case_ids: tuple[str, ...] | None = None


@dataclass
class _Collected:
    truth_label: list = field(default_factory=list)  # per frame 0/1/2
    in_ac_sweep: list = field(default_factory=list)  # per frame: its sweep has a reference AC
    p_cls: list = field(default_factory=list)
    seg_call: list = field(default_factory=list)
    dice: list = field(default_factory=list)
    grade_ok: list = field(default_factory=list)  # per frame: True/False where gradable, None otherwise
    seg_area: list = field(default_factory=list)  # per frame: predicted foreground pixels at 224
    case_ix: list = field(default_factory=list)  # per frame: index of its case (intervals over cases)
    cases: dict = field(default_factory=dict)  # model name -> list of per-case dicts
    ac_mismatch: dict = field(default_factory=dict)  # uuid -> _reference_ac_mismatch's, where it finds any


def _reference_ac_mismatch(case, labels: np.ndarray, ranges) -> dict[str, list[int]]:
    """Where the CSV and the annotation disagree, by sweep (numbered from 1): ``no_ac``, annotated
    sweeps without a reference AC (a frame chosen there gets NAE_AC 1 however right it is);
    ``not_annotated``, sweeps with a reference AC but no annotated frame (an AC written a column
    off rewards a frame in the wrong sweep)."""
    annotated = [bool(np.asarray(labels[a:b]).any()) for a, b in ranges]
    has_ac = [s < len(case.ac_mm) and case.ac_mm[s] is not None for s in range(len(ranges))]
    return {"no_ac": [s + 1 for s in range(len(ranges)) if annotated[s] and not has_ac[s]],
            "not_annotated": [s + 1 for s in range(len(ranges)) if has_ac[s] and not annotated[s]]}


@dataclass
class _Case:
    """One evaluated case as read: its sweep, annotation, frames' labels (0/1/2), sweeps' frame
    ranges, where its CSV and annotation disagree (:func:`_reference_ac_mismatch`) and the field
    of view its challenge metrics are measured in (:func:`_challenge_fov`; None: the whole frame,
    where none is found)."""
    sweep: Any
    gt: np.ndarray
    labels: np.ndarray
    ranges: list
    mismatch: dict
    fov: Any = "acouslic"


def _challenge_fov(sweep, gt: np.ndarray):
    """The field of view a case's challenge metrics are measured in: the evaluator's
    (:func:`fetaliqa_core.acouslic.evaluator_fov`: its own mask on frames of ACOUSLIC's size, the
    sweep's fan on others), or None, the whole frame, where the sweep's frames show no fan holding
    the annotation (frames exported black, or a fan found that none of the annotation lies in).
    Such a fan erased every mask: the AC could not be measured and every Dice was 0 or undefined,
    a score of 0.25 for a right answer (0.87), blamed on the answer."""
    from fetaliqa_core import acouslic

    fov = acouslic.evaluator_fov(sweep)
    if isinstance(fov, str):
        return fov
    fov = np.asarray(fov, bool)
    if not fov.any():
        return None
    annotated = np.zeros(fov.shape, bool)
    for s in range(0, len(gt), 64):  # (in blocks: a full case is 350 M pixels)
        annotated |= np.asarray(gt[s:s + 64]).any(axis=0)
    if annotated.any() and not (annotated & fov).any():
        return None
    return fov


def _read_case(case, data) -> _Case:
    """A case's sweep and annotation read as `score` reads them (the file's own sweeps), its
    reference ACs checked for units (:func:`_check_reference_units`): what ``eval`` with models and
    ``eval --predictions`` both measure against."""
    from fetaliqa_core import io as fio
    from training.dataset import _sweep_ranges

    # read into memory, as `score` reads a sweep: mapped from their files while the models score
    # them, another program cutting a file short meanwhile killed eval (SIGBUS, no word, no metrics)
    sweep = fio.load_sweep(case.image_path).in_memory()
    gt = fio.load_mask(case.mask_path, like=sweep, in_memory=True)  # FetalIQAError when the shapes differ
    labels = np.asarray(gt).reshape(gt.shape[0], -1).max(axis=1)
    ranges = _sweep_ranges(case, sweep.n_frames)  # the file's own sweeps, as `score` reads them
    _check_reference_units(case, gt, ranges, sweep.spacing_mm, data)
    return _Case(sweep, gt, labels, ranges, _reference_ac_mismatch(case, labels, ranges), _challenge_fov(sweep, gt))


def _case_row(metrics, uuid: str, read: _Case, frame: int, **extra) -> dict:
    """One case's row of the challenge table: its :class:`~fetaliqa_core.analysis.CaseMetrics`,
    with what the notes and the table's lines need (the chosen frame's label, whether the case has
    an optimal frame or any annotation, whether its reference ACs lie on its annotated sweeps)."""
    row = metrics.to_dict()
    row["uuid"] = uuid
    row["chosen_label"] = int(read.labels[frame]) if frame >= 0 else -1
    row["has_optimal"] = bool((read.labels == 1).any())
    row["has_annotation"] = bool(read.labels.any())
    row.update(extra)
    row["reference_ac_matches"] = not any(read.mismatch.values())
    row["field_of_view"] = WHOLE_FRAME if read.fov is None else "acouslic" if isinstance(read.fov, str) else "own fan"
    return row


def _challenge_means(per_case: list[dict]) -> dict:
    """The challenge row of a list of case rows: the mean of each of :data:`CHALLENGE_KEYS`, and
    NAE_AC of the cases whose reference ACs lie on their annotated sweeps alone."""
    from fetaliqa_core import analysis as an

    case_fields = {f.name for f in dataclasses.fields(an.CaseMetrics)}  # the rest of a row is ours
    agg = an.aggregate_case_metrics([an.CaseMetrics(**{k: v for k, v in c.items() if k in case_fields})
                                     for c in per_case])
    means = {k: agg[k] for k in CHALLENGE_KEYS}
    kept = [c["nae_ac"] for c in per_case if c.get("reference_ac_matches", True)]
    means["nae_ac_matching_reference"] = {"mean": float(np.mean(kept)) if kept else float("nan"), "n": len(kept)}
    return means


#: A case row's ``field_of_view`` where the sweep's frames show no fan (:func:`_challenge_fov`).
WHOLE_FRAME = "whole frame"


def field_of_view_note(metrics: dict) -> str | None:
    """One line naming the cases measured on the whole frame because their frames show no field
    of view (:func:`_challenge_fov`); None when there is none."""
    cases = metrics.get("cases_measured_on_whole_frame") or []
    if not cases:
        return None
    shown = ", ".join(cases[:3]) + (" ..." if len(cases) > 3 else "")
    return (f"note: {len(cases)} case(s) show no field of view in their frames (frames black, or no fan holding "
            f"the annotation) and are measured on the whole frame ({shown}): an outline cut by the fan's edge is "
            "fitted as if whole there; check their image files")


def _whole_frame_cases(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(c["uuid"] for c in rows if c.get("field_of_view") == WHOLE_FRAME))


def reference_ac_notes(metrics: dict) -> list[str]:
    """One line per kind of disagreement between the CSV's reference ACs and the annotation
    (:func:`_reference_ac_mismatch`), naming the cases. The challenge table keeps the organisers'
    numbers (such a case's NAE_AC is what their evaluator gives); its NAE_AC without these cases
    is printed below it, and "AC within 3 %" leaves them out."""
    found = metrics.get("reference_ac_mismatch") or {}
    lines = []
    for key, what in (("no_ac", "an annotated sweep without a reference AC (NAE_AC 1 there whatever "
                                "the frame)"),
                      ("not_annotated", "a reference AC on a sweep without annotation (is the CSV a column "
                                        "off?)")):
        cases = [f"{u} sweep {','.join(map(str, m[key]))}" for u, m in found.items() if m.get(key)]
        if cases:
            shown = "; ".join(cases[:3]) + (" ..." if len(cases) > 3 else "")
            lines.append(f"note: {len(cases)} case(s) have {what}: {shown}; check the circumferences CSV")
    return lines


def _manifests(models) -> dict[str, tuple[Path, Any]]:
    """``{"cls" / "seg": (bundle folder, manifest)}`` of the bundles loaded. Two bundles loaded
    as one pair on one base (models/shared.py) are one model whose manifest is the segmenter's:
    each part's own is read (the classifier's training record and cases went unread)."""
    out = {}
    for key in ("cls", "seg"):
        m = getattr(models, key)
        if m is not None:
            parts = getattr(m, "part_manifests", None)
            out[key] = (getattr(m, "path", None), m.manifest) if parts is None else parts[key]
    return out


def _training_record(models) -> tuple[dict, Path | None]:
    """The first bundle's record of how it was trained (the classifier's, else the segmenter's),
    and that bundle's folder."""
    for path, manifest in _manifests(models).values():
        rec = _record_of(manifest)
        if isinstance(rec, dict):
            return rec, path
    return {}, None


def _record_of(manifest) -> Any:
    """What a manifest's metrics record of its training (None without one; not checked further)."""
    return manifest.metrics.get("training") if isinstance(manifest.metrics, dict) else None


def _split_settings(settings: EvalSettings, models) -> tuple[int, bool, str]:
    """(split seed, all sweeps, split method): the options given, else as the bundle's manifest
    records its training, else the defaults. A recorded value of the wrong kind is one line naming
    the option to give instead ('abc' as the seed was a traceback)."""
    from training.dataset import SPLIT_SEED

    record, where = _training_record(models)

    def damaged(key: str, wanted: str, instead: str) -> FetalIQAError:
        shown = repr(record[key])
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return FetalIQAError(f"the manifest of {where} records {key} {shown}, not {wanted}: it was edited or "
                             f"is damaged; {instead}")

    split_seed = settings.split_seed
    if split_seed is None:
        split_seed = record.get("split_seed", SPLIT_SEED)
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise damaged("split_seed", "a whole number of 0 or more", "give --split-seed N, the seed it was trained with")
    all_sweeps = settings.all_sweeps
    if all_sweeps is None:
        all_sweeps = record.get("all_sweeps", False)
        if not isinstance(all_sweeps, bool):
            raise damaged("all_sweeps", "true or false", "give --all-sweeps or --ac-sweeps")
    split_method = record.get("split_method", "grouped")
    if split_method not in ("grouped", "permutation"):
        raise damaged("split_method", "grouped or permutation", "restore the bundle from where it came")
    return split_seed, all_sweeps, split_method


def _trained_cases(models) -> set[str] | None:
    """The cases the loaded bundles were trained on (their manifests' ``train_cases`` digests,
    together); None when one of them does not record them (a bundle from before they were recorded,
    a student distilled before they were recorded): which cases it saw cannot be told from today's dataset, which may have
    gained or lost cases since and so be split otherwise."""
    digests: set[str] = set()
    for _, manifest in _manifests(models).values():
        cases = manifest_train_cases(manifest)
        if cases is None:
            return None
        digests.update(cases)
    return digests


def manifest_train_cases(manifest) -> set[str] | None:
    """The case digests one bundle's manifest records it was trained on, or None when it does not
    record them. A distilled student copies its teachers' outputs on their own training cases,
    so its numbers there are flattered too: its teachers' cases count as its own, and a student
    that does not record them (distilled before they were recorded) cannot be checked."""
    metrics = manifest.metrics if isinstance(manifest.metrics, dict) else {}
    rec = metrics.get("training")
    if rec is None and manifest.is_student:  # a distilled student records them beside its metrics
        rec = metrics
    cases = rec.get("train_cases") if isinstance(rec, dict) else None
    if not isinstance(cases, list) or not all(isinstance(d, str) for d in cases):
        return None
    if rec is metrics and manifest.is_student:
        teachers = metrics.get("teacher_train_cases")
        if not isinstance(teachers, list) or not all(isinstance(d, str) for d in teachers):
            return None
        return set(cases) | set(teachers)
    return set(cases)


def unlisted_cases_note(metrics: dict) -> str | None:
    """One line naming the cases with files in images/ or masks/ but no row in the CSV (left out)."""
    unlisted = metrics.get("cases_not_in_csv") or []
    if not unlisted:
        return None
    shown = ", ".join(unlisted[:3]) + (" ..." if len(unlisted) > 3 else "")
    return (f"note: {len(unlisted)} case(s) have files in {IMAGES_SUBDIR}/ or {MASKS_SUBDIR}/ but no row in "
            f"{CSV_RELPATH} and are left out ({shown}); add their rows to evaluate them")


def training_overlap_note(metrics: dict, whose: str = "these bundles") -> str | None:
    """One line saying which evaluated cases ``whose`` were trained on, or that this cannot be
    checked; None when none of them was."""
    n = len(metrics.get("case_uuids", []))
    trained_on = metrics.get("cases_in_own_training_split")
    if trained_on is None:
        return (f"note: {whose} do not record the cases they were trained on: whether any of these {n} case(s) "
                "were among them cannot be checked")
    if not trained_on:
        return None
    shown = ", ".join(trained_on[:3]) + (" ..." if len(trained_on) > 3 else "")
    return (f"note: {len(trained_on)} of these {n} case(s) are in the training split of {whose} ({shown}): "
            "their numbers on them are flattered")


def _preset(manifest) -> str:
    """The training preset recorded in a bundle's manifest ("fetaliqa" for bundles from before presets)."""
    rec = _record_of(manifest)
    return str(rec.get("preset", "fetaliqa")) if isinstance(rec, dict) else "unknown"


#: Largest run ``metrics.json`` read beside a bundle (the trials' histories make it a few hundred KB).
MAX_RUN_METRICS_BYTES = 32 << 20
#: The per-frame metrics of a run's trials summarised (mean +- std) beside the paper's table.
SUMMARY_KEYS = ("accuracy", "f1", "precision", "recall", "specificity", "dice")


def _trials_record(folder, manifest) -> dict:
    """How the bundle stands among its run's trials: ``{"trials": N (None where the manifest does
    not say), "run_test_summary": {metric: {"mean", "std", "n"}} | None, "run_metrics": path | None}``.

    A run of N trials ships one of them as ``RUN/bundle`` (the one of lowest validation loss), and
    ``RUN/metrics.json`` holds the mean +- std of the N trials' test metrics, which is what the
    paper reports (the mean of 5 runs). That summary is taken only from the ``metrics.json`` beside
    the bundle whose best trial is this bundle (same seed and validation loss); a trial's own
    bundle, a copied bundle or a file that cannot be read gets None."""
    rec = _record_of(manifest)
    n = rec.get("trials") if isinstance(rec, dict) else None
    n = n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None
    out: dict = {"trials": n, "run_test_summary": None, "run_metrics": None}
    if folder is None or not n or n < 2:
        return out
    path = Path(folder).expanduser().resolve().parent / "metrics.json"
    try:
        if not path.is_file() or path.stat().st_size > MAX_RUN_METRICS_BYTES:
            return out
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # (UnicodeDecodeError is a ValueError)
        return out
    if not isinstance(run, dict) or not isinstance(run.get("trials"), list):
        return out
    best = [t for t in run["trials"] if isinstance(t, dict) and t.get("trial") == run.get("best_trial")]
    metrics = manifest.metrics if isinstance(manifest.metrics, dict) else {}
    if (len(best) != 1 or best[0].get("seed") != rec.get("seed")
            or best[0].get("best_val_loss") != metrics.get("best_val_loss")):
        return out  # not this bundle's run
    summary = run.get("test_summary")
    if not isinstance(summary, dict):
        return out
    kept = {}
    for key, stats in summary.items():
        if not isinstance(stats, dict):
            continue
        mean, std, count = stats.get("mean"), stats.get("std"), stats.get("n")
        if (isinstance(mean, (int, float)) and isinstance(std, (int, float)) and isinstance(count, int)
                and math.isfinite(mean) and math.isfinite(std) and str(key)[:40] == key):
            kept[key] = {"mean": float(mean), "std": float(std), "n": count}
    out["run_test_summary"] = kept or None
    out["run_metrics"] = str(path) if kept else None
    return out


def _view(results, has_cls: bool, has_seg: bool):
    """The engine results as if only some of the models had run (for per-model challenge rows)."""
    v = copy.copy(results)
    v.has_cls = has_cls and results.has_cls
    v.has_seg = has_seg and results.has_seg
    return v


def _seg_dice_224(results, frames: np.ndarray, gt_224: np.ndarray) -> np.ndarray:
    from fetaliqa_core.analysis import dice_per_frame

    pred = np.stack([results.mask(int(f)) for f in frames]) > 0
    return dice_per_frame(pred, gt_224 > 0)


def _baseline_frame(results) -> int:
    """The challenge baseline's rule on the segmenter's masks: largest optimal (label 1) area,
    else largest suboptimal (label 2) area; a binary segmenter's abdomen counts as label 2."""
    from fetaliqa_core.analysis.frame_choice import baseline_choice

    area = results.seg_area_px.astype(np.float64)
    area[area < 0] = 0.0
    opt_share = np.nan_to_num(results.p_opt.astype(np.float64), nan=0.0)
    return baseline_choice(area * opt_share, area * (1.0 - opt_share))


def evaluate(settings: EvalSettings, out_dir: Path | None = None, log=print) -> dict:
    """Run the evaluation; returns the metrics (also written to ``out_dir/metrics.json``)."""
    from training.dataset import case_digest, read_cases, split_cases, unlisted_cases

    if settings.cls is None and settings.seg is None:
        demo = paths.resources_dir() / "demo"
        raise UsageError(f"give --cls BUNDLE and/or --seg BUNDLE to evaluate (the demonstration pair: --cls {demo / 'cls'} "
                         f"--seg {demo / 'seg'}), or --predictions FOLDER to evaluate answers already written")
    if settings.split not in SPLITS:
        raise UsageError(f"--split {settings.split!r} is not one of {', '.join(SPLITS)}")
    # A wrong --data is told before the models and what runs them are loaded: importing the
    # latter alone (torch) took 40 s and 650 MB on a busy machine before the folder was looked at.
    cases = read_cases(settings.data)

    from tqdm import tqdm

    from fetaliqa_core import analysis as an
    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.engine import ScoringEngine
    from fetaliqa_core.models.choice import ModelChoice, bundle_part, load_models
    from fetaliqa_core.preprocess import mask_to_frame, preprocess_masks

    choice = ModelChoice(model=None, cls=settings.cls, seg=settings.seg, base=settings.base,
                         device=settings.device, precision=settings.precision)
    models = load_models(choice)
    split_seed, all_sweeps, split_method = _split_settings(settings, models)
    own = split_cases(cases, seed=split_seed, method=split_method)  # today's data: which cases to evaluate
    if settings.case_ids is not None:
        by_id = {c.uuid: c for c in cases}
        chosen = [by_id[u] for u in settings.case_ids if u in by_id]
    else:
        chosen = cases if settings.split == "all" else own[settings.split]
        if settings.max_cases is not None:
            chosen = chosen[: settings.max_cases]
    # cases these bundles were trained on (as their manifests record them, not today's split of
    # the data, which moves when a case is added): an evaluation on them flatters
    trained = _trained_cases(models)
    trained_on = None if trained is None else [c.uuid for c in chosen if case_digest(c.uuid) in trained]
    if not chosen:
        raise FetalIQAError(f"the {settings.split} split of {settings.data} has no case")

    # operating points, as `fetaliqa score` and the app use them: the classifier bundle's threshold
    # on p_cls; the segmenter's is the paper's area rule, which is p_seg >= 0.5 on the mask score
    view_thresholds = {"cls": Thresholds.of_models(SimpleNamespace(cls=models.cls)),
                       "seg": Thresholds.of_models(SimpleNamespace(cls=None)),
                       "cls+seg": Thresholds.of_models(models)}
    threshold = view_thresholds["cls"].cls
    n_classes = models.seg.manifest.n_classes if models.seg is not None else 0
    rows = {"cls": models.cls is not None, "seg": models.seg is not None}
    names = (["baseline"] if rows["seg"] else []) + [k for k, v in rows.items() if v] + (
        ["cls+seg"] if all(rows.values()) else [])
    col = _Collected(cases={n: [] for n in names})

    bar = tqdm(total=len(chosen), unit="case", desc=f"evaluating {settings.split}", file=sys.stderr,
               disable=not settings.progress, dynamic_ncols=True)
    try:
        for ci, case in enumerate(chosen):
            read = _read_case(case, settings.data)
            sweep, gt, labels, ranges = read.sweep, read.gt, read.labels, read.ranges
            engine = ScoringEngine(sweep, cls=models.cls, seg=models.seg, cache=False)
            results = engine.run()

            if any(read.mismatch.values()):
                col.ac_mismatch[case.uuid] = read.mismatch
            sweeps = range(len(ranges)) if all_sweeps else case.sweeps_with_ac()
            frames = np.concatenate([np.arange(*ranges[s]) for s in sweeps]) if sweeps else np.zeros(0, np.int64)
            if frames.size:
                col.truth_label.append(labels[frames])
                col.case_ix.append(np.full(frames.size, ci, np.int64))
                ac_sweeps = set(case.sweeps_with_ac())
                col.in_ac_sweep.append(np.array([s in ac_sweeps for s in sweeps for _ in range(*ranges[s])], bool))
                if results.has_cls:
                    col.p_cls.append(results.p_cls[frames])
                if results.has_seg:
                    col.seg_call.append(results.seg_call[frames])
                    col.seg_area.append(results.seg_area_px[frames])
                    gt_224 = preprocess_masks(np.ascontiguousarray(gt[frames])).numpy()
                    col.dice.append(_seg_dice_224(results, frames, gt_224))
                    if n_classes == 3:
                        pred_opt = results.p_opt[frames]
                        gradable = (labels[frames] > 0) & np.isfinite(pred_opt)
                        ok = np.where(gradable, (pred_opt >= 0.5) == (labels[frames] == 1), False)
                        col.grade_ok.append(np.where(gradable, ok.astype(np.float64), np.nan))

            fov = read.fov  # the challenge's metrics, as its evaluator computes them (_challenge_fov)
            for name in names:
                ac_status = None  # how the product shows the AC at its frame (the rule has no product)
                if name == "baseline":
                    frame = _baseline_frame(results)
                else:
                    view = _view(results, has_cls="cls" in name, has_seg="seg" in name)
                    answer = assess(sweep, view, view_thresholds[name])
                    frame = answer.chosen_frame
                    ac_status = answer.summary.chosen_ac.get("status")
                # every row is measured on the segmenter's mask of its frame (when there is a
                # segmenter), so the rows differ only in the frame they choose
                pred_mask = None
                if frame >= 0 and results.has_seg and results.mask(frame) is not None:
                    pred_mask = (mask_to_frame(results.mask(frame), sweep.height, sweep.width) > 0).astype(np.uint8)
                m = an.case_metrics(gt, frame, pred_mask, case.ac_mm, sweep_ranges=ranges,
                                    spacing_mm=sweep.spacing_mm, fov=fov)
                col.cases[name].append(_case_row(m, case.uuid, read, frame, ac_status=ac_status))
            bar.update(1)
    finally:
        bar.close()

    truth = np.concatenate(col.truth_label) > 0 if col.truth_label else np.zeros(0, bool)
    if not truth.size:  # an empty table and a challenge score of 0 read as a result
        raise FetalIQAError(f"the {settings.split} split of {settings.data} has no frame to evaluate"
                            + ("" if all_sweeps else " in sweeps with an AC value (the paper's protocol)")
                            + f" ({len(chosen)} case(s)): give --split all"
                            + ("" if all_sweeps else " or --all-sweeps") + ", or more cases")
    metrics: dict = {
        "split": settings.split, "split_seed": split_seed, "all_sweeps": all_sweeps,
        "data": str(Path(settings.data).expanduser().resolve()),  # (as typed, it named nothing from elsewhere)
        "n_cases": len(chosen), "n_frames": int(truth.size), "n_positive": int(truth.sum()),
        "threshold": threshold, "challenge_thresholds": {
            k: {"p_cls": t.cls, "p_seg": t.seg} if k == "cls+seg" else {t.score: t.value}
            for k, t in view_thresholds.items() if k in names},
        "challenge_rows": {k: ROW_LABELS[k] for k in names},
        # what ran (after "auto") and which release: bf16 and fp32 give other numbers (on the demo
        # pair, classifier F1 0.4103 against 0.4000), and metrics.json said neither
        "device": models.device, "precision": models.precision, "app_version": __version__,
        "presets": {k: _preset(manifest) for k, (_, manifest) in _manifests(models).items()},
        # each bundle is one trained model (a run's trial of lowest validation loss), the paper's
        # numbers a mean of 5 runs: the run's trials and, where its metrics.json is beside the
        # bundle, their mean +- std on the run's own test split
        "trials": {k: _trials_record(folder, manifest) for k, (folder, manifest) in _manifests(models).items()},
        "bundles": {k: str(Path(getattr(settings, k)).expanduser().resolve()) for k in ("cls", "seg")
                    if getattr(settings, k) is not None},
        # each bundle's own (a pair loaded on one base carries the pair's hash, which is neither's)
        "bundle_sha256": {k: bundle_part(getattr(models, k), role)[1]
                          for k, role in (("cls", "classifier"), ("seg", "segmenter")) if getattr(models, k) is not None},
        "frame": {}, "challenge": {},
    }
    in_ac = np.concatenate(col.in_ac_sweep) if col.in_ac_sweep else np.zeros(0, bool)
    metrics["frame"] = _frame_metrics(col, truth, threshold, np.ones(truth.size, bool))
    if all_sweeps:
        # the paper's protocol as well: only the sweeps that have a reference AC
        metrics["frame_ac_sweeps"] = _frame_metrics(col, truth, threshold, in_ac)
        metrics["frame_ac_sweeps"]["n_frames"] = int(in_ac.sum())
        metrics["frame_ac_sweeps"]["n_positive"] = int((truth & in_ac).sum())
    for name, per_case in col.cases.items():
        metrics["challenge"][name] = _challenge_means(per_case)
    metrics["intervals"] = _intervals(col, truth, threshold, len(chosen))
    metrics["cases"] = col.cases
    metrics["case_uuids"] = [c.uuid for c in chosen]
    metrics["cases_in_own_training_split"] = trained_on
    metrics["reference_ac_mismatch"] = col.ac_mismatch
    metrics["cases_measured_on_whole_frame"] = _whole_frame_cases(next(iter(col.cases.values()), []))
    metrics["cases_not_in_csv"] = unlisted_cases(settings.data, cases)

    if out_dir is not None:
        write_outputs(Path(out_dir), metrics)
    return metrics


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n ((nan, nan) when n is 0)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _case_bootstrap(case_ix: np.ndarray, n_cases: int, parts: dict[str, np.ndarray], stat, reps: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(sums)`` over cases resampled with replacement, where
    ``sums`` are per-case sums of the boolean arrays in ``parts`` (frames weigh by case); NaN
    (undefined) over fewer than two cases."""
    if n_cases < 2:  # resampling one case gives it back: no interval (null in metrics.json, [0, 0] was written)
        return (float("nan"), float("nan"))
    per_case = {k: np.bincount(case_ix, weights=v.astype(np.float64), minlength=n_cases) for k, v in parts.items()}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_cases, size=(reps, n_cases))
    counts = np.stack([np.bincount(d, minlength=n_cases) for d in draws])  # (reps, n_cases)
    sums = {k: counts @ v for k, v in per_case.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.asarray(stat(sums), dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))


def _f1(s: dict) -> np.ndarray:
    return 2 * s["tp"] / (2 * s["tp"] + s["fp"] + s["fn"])


def _intervals(col: _Collected, truth: np.ndarray, threshold: float, n_cases: int) -> dict:
    """The numbers a demo model is judged by, each with a 95 % interval over cases: frame F1 of
    each model (all evaluated frames), the share of frames without abdomen that each model flags
    (distractors), the share of such frames where the segmenter draws any mask, and per model
    view the share of cases whose chosen frame is optimal (cases with an optimal frame) and whose
    AC at the chosen frame is within 3 % of the reference (cases with an annotation)."""
    out: dict = {"n_cases": n_cases}
    if not col.case_ix:
        return out
    cix = np.concatenate(col.case_ix)
    calls = {}
    if col.p_cls:
        calls["cls"] = np.concatenate(col.p_cls) >= threshold
    if col.seg_call:
        calls["seg"] = np.concatenate(col.seg_call)
    for name, pred in calls.items():
        parts = {"tp": pred & truth, "fp": pred & ~truth, "fn": ~pred & truth, "neg": ~truth}
        tp, fp, fn = (int(parts[k].sum()) for k in ("tp", "fp", "fn"))
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
        out[f"{name}_frame_f1"] = {"value": f1, "ci95": _case_bootstrap(cix, n_cases, parts, _f1)}
        neg = int((~truth).sum())
        out[f"{name}_flags_on_empty"] = {
            "value": fp / neg if neg else float("nan"), "frames": neg,
            "ci95": _case_bootstrap(cix, n_cases, parts, lambda s: s["fp"] / s["neg"])}
    if col.seg_area:
        drawn = np.concatenate(col.seg_area) > 0
        parts = {"fp": drawn & ~truth, "neg": ~truth}
        neg = int((~truth).sum())
        out["seg_mask_on_empty"] = {"value": float(parts["fp"].sum()) / neg if neg else float("nan"), "frames": neg,
                                    "ci95": _case_bootstrap(cix, n_cases, parts, lambda s: s["fp"] / s["neg"])}
    for name, per_case in col.cases.items():
        opt = [c for c in per_case if c.get("has_optimal")]
        k = sum(1 for c in opt if c.get("chosen_label") == 1)
        out[f"{name}_chosen_optimal"] = {"k": k, "n": len(opt), "value": k / len(opt) if opt else float("nan"),
                                         "ci95": wilson(k, len(opt))}
        # (not the cases whose reference AC and annotation disagree: their reference is not the AC of the frame)
        ann = [c for c in per_case if c.get("has_annotation") and c.get("reference_ac_matches", True)]
        k = sum(1 for c in ann if c.get("ac_pred_mm") and c.get("ac_gt_mm")
                and abs(c["ac_pred_mm"] - c["ac_gt_mm"]) <= 0.03 * c["ac_gt_mm"])
        out[f"{name}_ac_within_3pct"] = {"k": k, "n": len(ann), "value": k / len(ann) if ann else float("nan"),
                                         "ci95": wilson(k, len(ann))}
        if "seg" in name:  # an AC needs a mask
            # the answer's honesty: cases where the product shows the AC as a number to act on
            # ("ok", not doubtful) on a frame with no abdomen annotated
            k = sum(1 for c in per_case if c.get("ac_status") == "ok" and c.get("chosen_label") == 0)
            n = len(per_case)
            out[f"{name}_trusted_ac_off_abdomen"] = {"k": k, "n": n, "value": k / n if n else float("nan"),
                                                     "ci95": wilson(k, n)}
    return out


#: Each per-frame ratio's denominator: where it is 0 (no frame called positive, for precision) the
#: ratio is undefined, NaN (null in metrics.json, "-" in the table), where 0.0 read as a result.
_RATIO_DENOMINATORS = {"precision": ("tp", "fp"), "recall": ("tp", "fn"), "specificity": ("tn", "fp"),
                       "f1": ("tp", "fp", "fn")}


def _counted(m) -> dict:
    """:data:`FRAME_KEYS` and the counts of a :class:`~fetaliqa_core.analysis.BinaryMetrics`, a ratio
    with nothing to count undefined (NaN), not 0."""
    out = {k: getattr(m, k) for k in FRAME_KEYS} | {"tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn}
    for key, den in _RATIO_DENOMINATORS.items():
        if not sum(out[d] for d in den):
            out[key] = float("nan")
    return out


def _frame_metrics(col: _Collected, truth: np.ndarray, threshold: float, keep: np.ndarray) -> dict:
    """Per-frame metrics of the classifier and the segmenter on the frames ``keep`` (bool mask)."""
    from fetaliqa_core import analysis as an

    out: dict = {}
    t = truth[keep]
    if col.p_cls:
        out["cls"] = _counted(an.binary_metrics(t, np.concatenate(col.p_cls)[keep] >= threshold))
    if col.seg_call:
        m = an.binary_metrics(t, np.concatenate(col.seg_call)[keep])
        dice = np.concatenate(col.dice)[keep]
        seg = _counted(m)
        finite = dice[np.isfinite(dice)]
        seg["dice"] = float(finite.mean()) if finite.size else float("nan")
        pos = dice[t & np.isfinite(dice)]
        seg["dice_positive"] = float(pos.mean()) if pos.size else float("nan")
        if col.seg_area:  # how often the segmenter draws anything on a frame without abdomen
            drawn = (np.concatenate(col.seg_area)[keep] > 0)[~t]
            seg["empty_frames"] = int(drawn.size)
            seg["mask_on_empty_rate"] = float(drawn.mean()) if drawn.size else float("nan")
        if col.grade_ok:
            g = np.concatenate(col.grade_ok)[keep]
            g = g[np.isfinite(g)]
            seg["grade_accuracy"] = float(g.mean()) if g.size else float("nan")
        out["seg"] = seg
    return out


def write_outputs(out: Path, metrics: dict) -> None:
    """``metrics.json`` and ``per_case.csv`` (and the list of them), all written or none: staged in
    a hidden folder and moved into ``out`` together (a full disk left an empty table beside complete
    metrics; a file size limit on metrics.json left a complete table without it; a link at the
    table's path had its target overwritten)."""
    import io

    from fetaliqa_core.export import OUTPUTS_FILE

    buf = io.StringIO()
    w = csv_writer(buf)
    # ac_pred_mm is the challenge evaluator's AC of the predicted mask (what NAE_AC uses);
    # ac_project_mm the product's own (a fragmented mask: 41.3 against the archive table's 74.7, and
    # nothing said which the table gave)
    w.writerow(["model", "uuid", "chosen_frame", "wfss", "nae_ac", "dsc_soft", "score", "ac_pred_mm", "ac_gt_mm",
                "ac_project_mm"])
    for name, per_case in metrics["cases"].items():
        for c in per_case:
            # an undefined value (the evaluator's infinite DSC_soft) is empty, as metrics.json's null: "inf"
            # made a mean over the table infinite
            w.writerow([name, c["uuid"], c["chosen_frame"]] + [
                "" if c.get(k) is None or not math.isfinite(c[k]) else f"{c[k]:.4f}" for k in
                ("wfss", "nae_ac", "dsc_soft", "score", "ac_pred_mm", "ac_gt_mm", "ac_project_mm")])
    try:
        with atomic_output_dir(out) as staged:
            atomic_write(staged / "per_case.csv", buf.getvalue())
            write_json(staged / "metrics.json", metrics)
            # what was written, as `score` records its own: a later evaluation writes over these files
            # only, never a metrics.json or per_case.csv of the user's own (training.cli_eval.check_eval_out)
            write_json(staged / OUTPUTS_FILE, ["metrics.json", "per_case.csv"])
    except OSError as exc:  # (a disk filled during the run): the folder given, not the hidden one staged in
        raise paths.out_not_writable(out, exc) from None


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def _trial_lines(runs: list[dict], labels: dict, width: int) -> list[str]:
    """Beside the paper's table: what a "1 trial" row is, and the mean +- std of the bundle's run's
    trials on that run's own test split where its metrics.json records them."""
    lines = []
    said = False
    for run in runs:
        for key, label in labels.items():
            if key not in run.get("frame", {}):
                continue
            info = run.get("trials", {}).get(key) or {}
            n = info.get("trials")
            name = f"{label} [{run.get('presets', {}).get(key, 'fetaliqa')}]"
            if not said:
                lines.append("1 trial: each bundle's rows above are one trained model, not a mean of runs:")
                said = True
            if n and n > 1:
                lines.append(f"  {name}: one of its run's {n} trials, the one of lowest validation loss")
            else:
                lines.append(f"  {name}: " + ("its run's only trial" if n == 1 else "one trained model"))
            summary = info.get("run_test_summary")
            if summary:
                prefix = "seg_" if key == "seg" and "seg_f1" in summary else ""
                cells = [summary.get(prefix + k if k != "dice" else k) for k in SUMMARY_KEYS]
                counts = {c["n"] for c in cells if c}
                if not counts:
                    continue
                lines.append(f"  its run's {'/'.join(str(c) for c in sorted(counts))} trials on the run's own test "
                             f"split ({info.get('run_metrics')}), not these cases:")
                for what, part in (("mean", "mean"), ("+- std", "std")):
                    text = f"{name} {what}"
                    lines.append(f"  {text:<{width - 2}}"
                                 + "".join(f"{_fmt(c[part] if c else None):>10}" for c in cells[:4])
                                 + f"{_fmt(cells[4][part] if cells[4] else None):>12}"
                                 + f"{_fmt(cells[5][part] if cells[5] else None):>10}")
    return lines


def _tag(run: dict, also: dict | None) -> str:
    """`` [preset]`` after a run's rows when two runs are printed, else nothing."""
    if also is None:
        return ""
    presets = sorted(set(run.get("presets", {}).values())) or ["fetaliqa"]
    return f" [{'/'.join(presets)}]"


def _interval_lines(run: dict, tag: str) -> list[str]:
    """A run's 95 % intervals over cases (frame F1, distractor flags, case frame, AC)."""
    iv = run.get("intervals", {})
    if len(iv) <= 1:
        return []
    if int(iv.get("n_cases", 0)) < 2:  # resampling one case gives it back: no interval to speak of
        return ["", f"no 95 % intervals{tag}: they are resampled over cases, and there is only "
                    f"{iv.get('n_cases', 0)}"]
    lines = ["", f"with 95 % intervals over the {iv['n_cases']} cases{tag}:"]
    names = {"cls": "classifier", "seg": "segmenter", "cls+seg": "both"}
    for key, text in (("frame_f1", "frame F1"), ("flags_on_empty", "flags frames without abdomen")):
        for m in ("cls", "seg"):
            if f"{m}_{key}" in iv:
                r = iv[f"{m}_{key}"]
                lines.append(f"  {names[m]:<11}{text:<42}{_fmt(r['value'])} "
                             f"[{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]")
    if "seg_mask_on_empty" in iv:
        r = iv["seg_mask_on_empty"]
        lines.append(f"  {'segmenter':<11}{'draws a mask on a frame without abdomen':<42}{_fmt(r['value'])} "
                     f"[{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]")
    for m in ("cls", "seg", "cls+seg"):
        for key, text in (("chosen_optimal", "case frame optimal"), ("ac_within_3pct", "AC within 3 %"),
                          ("trusted_ac_off_abdomen", "AC shown as a number, frame off abdomen")):
            r = iv.get(f"{m}_{key}")
            if r is not None and r["n"] and not (m == "cls" and key == "ac_within_3pct"):  # no mask: no AC
                lines.append(f"  {names[m]:<11}{text:<42}{_fmt(r['value'])} [{_fmt(r['ci95'][0])}, "
                             f"{_fmt(r['ci95'][1])}] ({r['k']} of {r['n']} cases)")
    return lines


def format_report(metrics: dict, compare_paper: bool = False, also: dict | None = None) -> str:
    """The printed tables: per-frame metrics (optionally beside the paper's) and challenge metrics.
    ``also``: the metrics of other bundles on the same cases (e.g. trained with ``--preset paper``),
    printed beside the first's (per-frame rows, intervals, frame-choice rows) labelled with their preset."""
    # where and how it ran: the same bundles give other numbers in bf16 and in fp32
    ran = [f"{metrics.get('device') or '?'} {metrics['precision']}"] if metrics.get("precision") else []
    ran += [f"FetalIQA {metrics['app_version']}"] if metrics.get("app_version") else []
    if "predictions" in metrics:  # answers already written (eval --predictions): no model, no per-frame rows
        return "\n".join([f"{metrics['split']} split: {metrics['n_cases']} cases, answers read from "
                          f"{metrics['predictions']}" + (f" ({', '.join(ran)})" if ran else ""), ""]
                         + _challenge_lines([metrics], None, "every case is measured on the mask its answer gives"))
    lines = [f"{metrics['split']} split: {metrics['n_cases']} cases, {metrics['n_frames']} frames "
             f"({metrics['n_positive']} positive), sweeps: {'all' if metrics['all_sweeps'] else 'with an AC value'}"
             + (f" ({', '.join(ran)})" if ran else ""),
             ""]
    labels = {"cls": "classifier", "seg": "segmenter (1% area)"}
    runs = [metrics] + ([also] if also else [])

    def row_label(run: dict, key: str) -> str:
        label = f"{labels[key]} [{run.get('presets', {}).get(key, 'fetaliqa')}]"
        # beside the paper's means of 5 runs, a bundle's row is one trained model: said on the row
        return label + (" 1 trial" if compare_paper else "")

    width = max([32] + [len(row_label(run, key)) + 2 for run in runs for key in labels])
    header = (f"{'per-frame':<{width}}{'accuracy':>10}{'F1':>10}{'precision':>10}{'recall':>10}"
              f"{'specificity':>12}{'Dice':>10}")
    lines.append(header)
    lines.append("-" * len(header))
    groups = [("", "frame")]
    if "frame_ac_sweeps" in metrics:
        sub = metrics["frame_ac_sweeps"]
        groups.append((f"only sweeps with an AC value ({sub['n_frames']} frames, {sub['n_positive']} positive):",
                       "frame_ac_sweeps"))
    for title, part in groups:
        if title:
            lines.append(title)
        for run in runs:
            group = run.get(part, {})
            for key in ("cls", "seg"):
                if key not in group:
                    continue
                row = group[key]
                lines.append(f"{row_label(run, key):<{width}}" + "".join(f"{_fmt(row.get(k)):>10}" for k in
                                                       ("accuracy", "f1", "precision", "recall"))
                             + f"{_fmt(row.get('specificity')):>12}" + f"{_fmt(row.get('dice')):>10}")
    if compare_paper:
        lines.append("")
        lines.append("paper (He, Wang, Yaqub 2025; ACOUSLIC-AI test split, mean of 5 runs):")
        for name, acc, f1, prec, rec in PAPER_TABLE:
            digits = PAPER_DIGITS.get(name, 4)
            lines.append(f"  {name:<{width - 2}}" + "".join(f"{_fmt(v, digits):>10}" for v in (acc, f1, prec, rec)))
        lines.extend(_trial_lines(runs, labels, width))
    for run in runs:
        seg = run["frame"].get("seg", {})
        if "grade_accuracy" in seg:
            lines.append(f"3-class segmenter{_tag(run, also)}: optimal/suboptimal graded correctly on "
                         f"{_fmt(seg['grade_accuracy'])} of the positive frames it found")
    for run in runs:
        lines.extend(_interval_lines(run, _tag(run, also)))
    return "\n".join(lines + [""] + _challenge_lines(
        runs, also, "every row is measured on the segmenter's mask of the frame it chooses"))


def _challenge_lines(runs: list[dict], also: dict | None, measured_on: str) -> list[str]:
    """The challenge table of ``runs`` (mean per row) and the lines that explain it."""
    metrics = runs[0]
    lines = []
    width = 52 + (max(len(_tag(run, also)) for run in runs))
    header = (f"{'frame choice (challenge metrics, mean)':<{width}}{'score':>8}{'WFSS':>8}{'NAE_AC':>8}"
              f"{'DSC_soft':>10}{'cases':>7}")
    lines.append(header)
    lines.append("-" * len(header))
    undefined = 0
    for run in runs:
        for name, row in run["challenge"].items():
            label = ROW_LABELS.get(name, name) + _tag(run, also)  # the baseline reads the segmenter's labels
            cells = "".join(f"{_fmt(row[k]['mean'], 3):>8}" for k in ("score", "wfss", "nae_ac"))
            u = int(row["score"].get("undefined", 0))
            undefined += u
            mark = "*" if u else ""
            lines.append(f"{label:<{width}}{cells}{_fmt(row['dsc_soft']['mean'], 3) + mark:>10}{row['score']['n']:>7}")
    lines.append("score = 0.5 (1 - NAE_AC) + 0.25 WFSS + 0.25 DSC_soft, as the organisers' evaluator computes "
                 f"them; {measured_on}")
    rows = next(iter(metrics["cases"].values()), [])
    bare = sum(1 for c in rows if not c.get("has_annotation", True))
    if bare:
        lines.append(f"WFSS of the {bare} case(s) without annotation is 0 whatever is chosen, -1 (no frame) "
                     "included, as in the organisers' evaluator")
    for run in runs:
        left = len(run.get("reference_ac_mismatch") or {})
        if left:
            cells = ", ".join(f"{ROW_LABELS.get(name, name)} {_fmt(row['nae_ac_matching_reference']['mean'], 3)}"
                              for name, row in run["challenge"].items() if "nae_ac_matching_reference" in row)
            lines.append(f"NAE_AC without the {left} case(s) whose reference AC and annotation disagree (see the "
                         f"notes){_tag(run, also)}: {cells}")
    if undefined:
        lines.append("* the evaluator's DSC_soft is undefined (infinite) on some cases (a frame without a mask "
                     "and without annotation, or -1); counted as 0 here, empty in per_case.csv, see metrics.json 'undefined'")
    return lines
