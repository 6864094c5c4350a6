"""``fetaliqa eval``: per-frame and challenge metrics of model bundles on a dataset split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fetaliqa_core.cli._args import non_negative_int, positive_int
from fetaliqa_core.models.options import add_model_options, model_choice_from_args
from fetaliqa_core.paths import check_out_writable

HELP = ("Evaluate model bundles on a split of an ACOUSLIC-layout dataset (per-frame and challenge metrics), or "
        "answers already written (--predictions: challenge metrics)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="dataset folder in the ACOUSLIC-AI layout")
    p.add_argument("--predictions", type=Path, metavar="FOLDER", default=None,
                   help="no model: the challenge metrics of the answers in FOLDER, in the challenge's output layout "
                        "(<case>/output/fetal-abdomen-frame-number.json and output/images/fetal-abdomen-segmentation/"
                        "fetal-abdomen-segmentation.mha, <case> the case's id or as predictions.json names it: the "
                        "challenge/ folder `score --archive ... --challenge-output` writes; <case> may itself hold them "
                        "in that layout, as a results folder of `score --challenge-output` does, or the two files "
                        "side by side, as an archive's case folder does); a case without an answer is scored as -1 "
                        "with no mask, with a note")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test",
                   help="which cases: a split of the training split (default test) or all (a held-out dataset)")
    p.add_argument("--split-seed", type=non_negative_int, default=None,
                   help="case split seed (default: the bundle's; with --predictions the one `train` uses by default: "
                        "42, or with --split-method permutation --preset paper's 9872398152123123767126, the paper's "
                        "reference code's)")
    p.add_argument("--split-method", choices=("grouped", "permutation"), default=None,
                   help="with --predictions: how the cases were split, as `train --split-method` (default grouped; "
                        "`--preset paper` trains on a permutation); with bundles, the one they record")
    p.add_argument("--all-sweeps", dest="all_sweeps", action="store_true", default=None,
                   help="per-frame metrics on every sweep (default: as trained; the paper: sweeps with an AC)")
    p.add_argument("--ac-sweeps", dest="all_sweeps", action="store_false",
                   help="per-frame metrics only on sweeps with an AC value")
    p.add_argument("--max-cases", type=positive_int, default=None, help="evaluate at most this many cases")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for metrics.json and per_case.csv (default: ./fetaliqa-eval-<split>)")
    p.add_argument("--compare-paper", action="store_true", help="print the paper's table beside the results")
    p.add_argument("--paper-cls", type=Path, metavar="BUNDLE", default=None,
                   help="also evaluate this classifier (e.g. trained with --preset paper) on the same cases and "
                        "print it beside the others")
    p.add_argument("--paper-seg", type=Path, metavar="BUNDLE", default=None,
                   help="also evaluate this segmenter (e.g. trained with --preset paper) likewise")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p, demo=False)


#: What an evaluation writes into its --out folder; a folder holding anything else is not one.
EVAL_OUTPUTS = ("metrics.json", "per_case.csv", "paper")


def _written_by_eval(out: Path) -> bool:
    """Whether ``out``'s metrics.json and per_case.csv are an earlier evaluation's: its record of
    what it wrote lists them, or (written before that record existed) its metrics.json is one."""
    from fetaliqa_core.export import OUTPUTS_FILE, _small_json

    listed = _small_json(out / OUTPUTS_FILE)
    if isinstance(listed, list):
        return {str(n) for n in listed} >= {n for n in EVAL_OUTPUTS[:2] if (out / n).exists()}
    metrics = _small_json(out / "metrics.json")
    return isinstance(metrics, dict) and {"challenge", "case_uuids", "split"} <= metrics.keys()


def check_eval_out(out: Path) -> None:
    """Refuse an --out folder that holds anything an evaluation does not write (a training run, a
    dataset), or a metrics.json / per_case.csv an evaluation did not write (the user's own): it
    would be replaced without a word. An earlier evaluation's folder is written over, as asked."""
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.export import OUTPUTS_FILE

    if out.exists() and not out.is_dir():
        raise FetalIQAError(f"--out {out} is an existing file; give a folder for the evaluation")
    if not out.is_dir():
        return
    other = sorted(p.name for p in out.iterdir() if p.name not in EVAL_OUTPUTS + (OUTPUTS_FILE,))
    if other:
        shown = ", ".join(other[:4]) + (" ..." if len(other) > 4 else "")
        raise FetalIQAError(f"--out {out} holds files an evaluation does not write ({shown}); choose an empty "
                            "(or new) folder, or an earlier evaluation's")
    if any((out / n).exists() for n in EVAL_OUTPUTS[:2]) and not _written_by_eval(out):
        shown = ", ".join(n for n in EVAL_OUTPUTS[:2] if (out / n).exists())
        raise FetalIQAError(f"--out {out} holds a {shown} that no evaluation wrote (files of that name are "
                            "replaced by one); choose an empty (or new) folder, or an earlier evaluation's")
    if (out / "paper").exists():
        check_eval_out(out / "paper")


#: Options that run models, which --predictions does not: given together, one of them is not meant.
MODEL_OPTIONS = ("cls", "seg", "base", "paper_cls", "paper_seg")


def dataset_notes(data: Path, split: str) -> list[str | None]:
    """What train and distill say of the dataset and eval said not: the macOS metadata files left
    out, and (for a split, which groups cases by subject) the cases without a subject_id."""
    from training.dataset import mac_metadata_line, no_subject_line, read_cases

    notes = [mac_metadata_line(data)]
    if split != "all":
        notes.append(no_subject_line(read_cases(data)))
    return notes


def run_predictions(args: argparse.Namespace) -> int:
    """``eval --predictions FOLDER``: the challenge metrics of answers already written, no model."""
    from fetaliqa_core.errors import UsageError
    from training.evaluate import field_of_view_note, format_report, reference_ac_notes, unlisted_cases_note
    from training.evaluate_predictions import PredictionSettings, answer_notes, evaluate_predictions

    given = [f"--{k.replace('_', '-')}" for k in MODEL_OPTIONS if getattr(args, k, None) is not None]
    given += ["--compare-paper"] if args.compare_paper else []
    given += ["--device"] if getattr(args, "device", None) not in (None, "auto") else []
    given += ["--precision"] if getattr(args, "precision", None) not in (None, "auto") else []  # (auto: the default)
    if given:
        raise UsageError(f"--predictions evaluates answers already written, without models: leave out "
                         f"{', '.join(given)}, or give the models without --predictions to evaluate their answers")
    if args.all_sweeps is not None:
        # the frame metrics are the models' flags; answers already written carry one frame per case
        raise UsageError("--predictions measures each case's answer (its frame and mask), not frame flags: "
                         f"leave out {'--all-sweeps' if args.all_sweeps else '--ac-sweeps'}, which choose the "
                         "sweeps of the per-frame metrics of models")
    out = args.out or Path(f"fetaliqa-eval-{args.split}")
    check_eval_out(out)
    check_out_writable(out)  # before any case is evaluated (found after every one, naming a temporary folder)
    settings = PredictionSettings(data=args.data, predictions=args.predictions, split=args.split,
                                  split_seed=args.split_seed, split_method=args.split_method or "grouped",
                                  max_cases=args.max_cases, progress=not args.quiet)
    metrics = evaluate_predictions(settings, out_dir=out)
    for note in ([unlisted_cases_note(metrics)] + answer_notes(metrics) + reference_ac_notes(metrics)
                 + [field_of_view_note(metrics)]):
        if note:
            print(f"fetaliqa: {note}", file=sys.stderr)
    print(format_report(metrics))
    print(f"metrics written to {out / 'metrics.json'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.predictions is not None:
        return run_predictions(args)
    from training.evaluate import (EvalSettings, evaluate, field_of_view_note, format_report, reference_ac_notes,
                                   training_overlap_note, unlisted_cases_note)

    choice = model_choice_from_args(args)
    settings = EvalSettings(cls=choice.cls, seg=choice.seg, data=args.data, split=args.split, base=choice.base,
                            device=choice.device, precision=choice.precision, split_seed=args.split_seed, all_sweeps=args.all_sweeps,
                            max_cases=args.max_cases, progress=not args.quiet)
    out = args.out or Path(f"fetaliqa-eval-{args.split}")
    check_eval_out(out)
    check_out_writable(out)  # before any case is evaluated (found after every one, naming a temporary folder)
    metrics = evaluate(settings, out_dir=out)
    notes = [unlisted_cases_note(metrics), training_overlap_note(metrics)] + reference_ac_notes(metrics)
    notes.append(field_of_view_note(metrics))
    notes += dataset_notes(args.data, args.split)
    also = None
    if args.paper_cls is not None or args.paper_seg is not None:
        # on the very cases of the first pair (its split), not the other bundles' own split
        other = EvalSettings(cls=args.paper_cls, seg=args.paper_seg, data=args.data, split=args.split,
                             base=choice.base, device=choice.device, precision=choice.precision,
                             split_seed=args.split_seed, all_sweeps=metrics["all_sweeps"],
                             progress=not args.quiet, case_ids=tuple(metrics["case_uuids"]))
        also = evaluate(other, out_dir=out / "paper")
        notes.append(training_overlap_note(also, "the other bundles"))
    for note in notes:
        if note:
            print(f"fetaliqa: {note}", file=sys.stderr)
    print(format_report(metrics, compare_paper=args.compare_paper, also=also))
    print(f"metrics written to {out / 'metrics.json'}"
          + (f" (the other bundles': {out / 'paper' / 'metrics.json'})" if also is not None else ""))
    return 0
