"""``fetaliqa eval --predictions FOLDER``: the challenge's metrics of answers already written.

A researcher checks a submission before uploading it, or compares another algorithm's answers,
without running any model: each case of the split is read from FOLDER in the challenge's output
layout (what ``fetaliqa score --archive ... --challenge-output`` writes into ``OUT/challenge``:
``<case>/output/fetal-abdomen-frame-number.json`` and
``<case>/output/images/fetal-abdomen-segmentation/fetal-abdomen-segmentation.mha``, with
``predictions.json`` naming each job's input image) and measured with
:func:`fetaliqa_core.analysis.case_metrics`, the evaluator's rules that ``eval`` applies to the
models' answers. The table and the files written are ``eval``'s challenge rows, one row.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetaliqa_core import __version__
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE, CHALLENGE_OUTPUTS
from training.evaluate import ROW_LABELS, SPLITS, _case_row, _challenge_means, _read_case, _whole_frame_cases

ROW = "predictions"
#: Where the challenge's evaluator reads a job's mask: a folder holding one image, under output/.
MASK_DIR = next(rel for slug, rel, *_ in CHALLENGE_OUTPUTS if slug == "fetal-abdomen-segmentation")
#: The challenge's jobs file beside the case folders (:func:`fetaliqa_core.export.challenge_job`).
PREDICTIONS_FILE = "predictions.json"
#: The image suffixes the evaluator reads a mask from (it globs these in the mask's folder).
MASK_SUFFIXES = (".mha", ".tiff", ".tif")


@dataclass
class PredictionSettings:
    data: Path
    predictions: Path
    split: str = "test"
    split_seed: int | None = None  # None: train's default seed for the split method (no bundle records another)
    split_method: str = "grouped"  # as `train --split-method` (a `--preset paper` model: "permutation")
    max_cases: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class Answer:
    frame_file: Path
    mask_file: Path | None


def _job_folders(root: Path) -> dict[str, Path]:
    """``{input image stem: the job's output folder}`` from ``predictions.json``, as the
    evaluator pairs a job with its reference (by the stem of the input image's name); empty
    without that file. A jobs file that is not the challenge's list of jobs is one line."""
    from fetaliqa_core import validate

    path = root / PREDICTIONS_FILE
    if not path.is_file():
        return {}
    todo = ("It must be the challenge's list of jobs (as `score --archive ... --challenge-output` writes it); "
            "remove it to find the cases by their folders' names")
    jobs = validate.read_json_bounded(path, "the challenge's jobs file", todo, max_bytes=64 << 20)
    out: dict[str, Path] = {}
    try:
        for job in jobs:
            pk = str(job["pk"])
            names = [v["image"]["name"] for v in job["inputs"] if v["interface"]["slug"] == "stacked-fetal-ultrasound"]
            if names and pk and "/" not in pk and "\\" not in pk and pk not in (".", ".."):
                out[_image_stem(str(names[0]))] = root / pk / "output"
    except (TypeError, KeyError, AttributeError):
        raise FetalIQAError(f"{path}: not the challenge's list of jobs (each with a pk and its stacked-fetal-"
                            f"ultrasound input). {todo}") from None
    return out


def _image_stem(name: str) -> str:
    """A case's image file name without its suffix, as the evaluator takes it (``Path.stem``)."""
    return Path(name).stem


def _answer_in(folder: Path) -> Answer | None:
    """The answer files in one folder: the challenge's layout under ``output/`` (the frame number,
    and the mask in ``images/fetal-abdomen-segmentation/``), as a results folder of ``fetaliqa score
    --challenge-output`` holds them, or the two files side by side, as an archive's case folder (and
    ``score`` before it wrote the layout) holds them. None without a frame number."""
    frame = folder / CHALLENGE_FRAME_FILE
    if not frame.is_file():
        return None
    masks = [folder / CHALLENGE_MASK_FILE] if (folder / CHALLENGE_MASK_FILE).is_file() else []
    image_dir = folder / MASK_DIR
    if image_dir.is_dir():
        masks += sorted(p for p in image_dir.iterdir() if p.name.lower().endswith(MASK_SUFFIXES) and p.is_file())
    if len(masks) > 1:
        shown = ", ".join(p.relative_to(folder).as_posix() for p in masks[:3])
        old = (f" ({CHALLENGE_MASK_FILE} beside it is the layout of results written before "
               f"{MASK_DIR}/ held the mask)" if masks[0] == folder / CHALLENGE_MASK_FILE else "")
        raise FetalIQAError(f"{folder}: holds {len(masks)} masks for one answer ({shown}){old}; keep the one that "
                            f"goes with {CHALLENGE_FRAME_FILE}")
    _check_archive_answer(folder, bool(masks))
    return Answer(frame, masks[0] if masks else None)


def _check_archive_answer(folder: Path, with_mask: bool) -> None:
    """An archive's case folder (its case.json lists the files written with it) whose answer
    files are not among them holds another run's answer: two runs' folders merged by ``cp -r``
    kept one run's record and results beside the other's answer files, and the answer scored was
    the other run's, without a word. Refused; folders without such a record are read as they are."""
    from fetaliqa_core import archive

    if not (folder / archive.RECORD_FILE).is_file():
        return
    record = archive.read_record(folder)
    if record is None or not isinstance(record.get("files"), dict):
        return  # (not an archive's record, or one of a version that listed no files)
    needed = (CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE) if with_mask else (CHALLENGE_FRAME_FILE,)
    problem = archive.folder_problem(folder, record, needed)
    if problem:
        raise FetalIQAError(f"{folder}: {problem}, so its answer is not that of its case.json's run; run the same "
                            "`fetaliqa score ... --archive --challenge-output` again there to score the case anew, "
                            "or give --predictions the archive's challenge/ folder")


def find_answer(root: Path, uuid: str, image: Path, jobs: dict[str, Path]) -> Answer | None:
    """A case's answer in ``root``: the folder ``predictions.json`` gives its image, else a folder
    named by the case (its id, the image's stem, or the image's whole name where an archive run
    named it so), its files under ``output/`` or directly in it."""
    folders = [jobs[_image_stem(image.name)]] if _image_stem(image.name) in jobs else []
    for name in dict.fromkeys((uuid, _image_stem(image.name), image.name)):
        folders += [root / name / "output", root / name]
    for folder in folders:
        answer = _answer_in(folder)
        if answer is not None:
            return answer
    return None


def _scored_case(root: Path) -> str:
    """The case id a `score` results folder answers (the stem of the sweep its summary.json names),
    else ``<case id>``."""
    import json

    try:
        if (root / "summary.json").stat().st_size <= 16 << 20:
            name = json.loads((root / "summary.json").read_text(encoding="utf-8")).get("path")
            stem = _image_stem(Path(str(name)).name) if isinstance(name, str) and name else ""
            if stem and stem not in (".", ".."):
                return stem
    except (OSError, ValueError, AttributeError):
        pass
    return "<case id>"


def _answered_names(root: Path, jobs: dict[str, Path], used: set[Path] = frozenset()) -> set[str]:
    """The names (image stems or folder names) of every answer ``root`` holds, less the folders
    ``used`` for the cases evaluated (a job folder named by its pk, as the challenge names them,
    was listed as an answer "left out" although its case was evaluated from it)."""
    names = {stem for stem, folder in jobs.items() if (folder / CHALLENGE_FRAME_FILE).is_file()}
    try:
        for child in root.iterdir():
            held = [f for f in (child, child / "output") if (f / CHALLENGE_FRAME_FILE).is_file()]
            if child.is_dir() and held and not any(f in used for f in held):
                names.add(child.name)
    except OSError:
        pass
    return names


def read_frame_number(path: Path, n_frames: int) -> int:
    """The answer's frame: a whole number from 0 to ``n_frames - 1``, or -1 (no frame)."""
    from fetaliqa_core import validate

    todo = "Write the chosen frame's index (from 0), or -1 for none, as a bare JSON number"
    value = validate.read_json_bounded(path, "the answer's frame number", todo, max_bytes=1 << 16)
    if not validate.is_int(value):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        whole = _whole_number_in(value)
        if whole is not None and isinstance(value, str):  # "152": the evaluator indexes with it and fails
            raise FetalIQAError(f"{path}: the frame number is a string, {shown}; write {whole}, without quotes. "
                                f"{todo}")
        if whole is not None:  # 152.0: the evaluator's index must be an integer
            raise FetalIQAError(f"{path}: the frame number is a decimal, {shown}; write {whole}. {todo}")
        raise FetalIQAError(f"{path}: the frame number is {shown}, not a whole number. {todo}")
    if not -1 <= value < n_frames:
        raise FetalIQAError(f"{path}: frame {value} is outside the case's frames (0 to {n_frames - 1}, or -1 for "
                            f"none). {todo}")
    return int(value)


def _whole_number_in(value) -> int | None:
    """The whole number a frame number written as a string (``"152"``) or a decimal (``152.0``)
    means, for the message that refuses it; None for anything else."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,15}\s*", value):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return int(value)
    return None


def drawn_frames(volume) -> np.ndarray:
    """The frames of an answer's mask volume where anything is drawn (indices, ascending)."""
    found = []
    for s in range(0, volume.shape[0], 32):
        chunk = np.asarray(volume[s:s + 32])
        found.append(np.flatnonzero(chunk.reshape(len(chunk), -1).any(axis=1)) + s)
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def read_answer_mask(path: Path, shape: tuple[int, int, int], uuid: str) -> np.ndarray:
    """The answer's mask volume, ``(N, H, W)`` of the case's frames and 0/1 alone, read as the
    evaluator reads it (the file's array as stored; it asserts 0/1 and takes ``mask[frame]``)."""
    from fetaliqa_core.io._common import fmt_shape
    from fetaliqa_core.io.frames import as_frame_stack
    from fetaliqa_core.io.readers import read_raw

    raw = read_raw(path, purpose="mask")
    if raw.components != 1:
        raise FetalIQAError(f"{path}: the mask has {raw.components} values per pixel; write one value (0 or 1) "
                            "per pixel, a single-channel volume")
    arr = as_frame_stack(raw.array, 1, path)
    if tuple(arr.shape) != tuple(shape):
        raise FetalIQAError(f"{path}: the mask is {fmt_shape(arr.shape)} (frames x height x width) but case {uuid}'s "
                            f"frames are {fmt_shape(shape)}; write a volume of the case's size, 0 everywhere but "
                            "the chosen frame's abdomen (1)")
    bad: set = set()
    for s in range(0, arr.shape[0], 32):
        chunk = np.asarray(arr[s:s + 32])
        off = chunk[(chunk != 0) & (chunk != 1)]
        if off.size:
            bad.update(np.unique(off[:100000]).tolist())
            if len(bad) >= 3:
                break
    if bad:
        shown = ", ".join(f"{v:g}" for v in sorted(bad)[:3])
        raise FetalIQAError(f"{path}: the mask holds {shown} beside 0 and 1; the challenge's mask is 0/1 (1 the "
                            "abdomen), write it so")
    return arr


def evaluate_predictions(settings: PredictionSettings, out_dir: Path | None = None) -> dict:
    """The challenge's metrics of the answers in ``settings.predictions`` on the cases of the
    split; a case without an answer there counts as -1 with no mask (the evaluator itself fails on
    it), named in ``cases_without_answer``. Returns the metrics (also written to ``out_dir``)."""
    from tqdm import tqdm

    from fetaliqa_core import analysis as an
    from training.dataset import REFERENCE_SPLIT_SEED, SPLIT_SEED, read_cases, split_cases, unlisted_cases
    from training.evaluate import write_outputs

    root = Path(settings.predictions)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "no such folder"
        raise FetalIQAError(f"--predictions {root}: {what}; give the folder of answers (the challenge/ folder "
                            "`score --archive ... --challenge-output` writes)")
    if settings.split not in SPLITS:
        raise FetalIQAError(f"--split {settings.split!r} is not one of {', '.join(SPLITS)}")
    cases = read_cases(settings.data)
    if settings.split_method not in ("grouped", "permutation"):
        raise FetalIQAError(f"--split-method {settings.split_method!r} is not grouped or permutation")
    split_seed = settings.split_seed
    if split_seed is None:  # train's default for that split: a permutation is --preset paper's, its seed the reference's
        split_seed = REFERENCE_SPLIT_SEED if settings.split_method == "permutation" else SPLIT_SEED
    chosen = cases if settings.split == "all" else split_cases(cases, seed=split_seed,
                                                               method=settings.split_method)[settings.split]
    if settings.max_cases is not None:
        chosen = chosen[: settings.max_cases]
    if not chosen:
        raise FetalIQAError(f"the {settings.split} split of {settings.data} has no case")
    jobs = _job_folders(root)
    answers = {c.uuid: find_answer(root, c.uuid, c.image_path, jobs) for c in chosen}
    if not any(answers.values()):
        if (root / "challenge").is_dir():
            todo = f"give {root / 'challenge'}, the answers folder there"
        elif (root / CHALLENGE_FRAME_FILE).is_file():
            # the results folder of `score SWEEP --challenge-output`: one answer, its case not named
            mask = MASK_DIR + "/" if (root / MASK_DIR).is_dir() else CHALLENGE_MASK_FILE
            todo = (f"it holds one answer's files at its top, as `score --challenge-output` writes them for one "
                    f"sweep: put {CHALLENGE_FRAME_FILE} and {mask} in a folder named after the "
                    f"case's id (as {root / _scored_case(root)}/), and give the folder that holds it")
        else:
            todo = ("give the challenge/ folder `score --archive ... --challenge-output` wrote"
                    + ("" if settings.split == "all" else ", or --split all"))
        raise FetalIQAError(
            f"--predictions {root} holds no answer for any of the {len(chosen)} case(s) of the {settings.split} "
            f"split (looked for <case>/output/{CHALLENGE_FRAME_FILE}, <case> the case's id, or the folder "
            f"{PREDICTIONS_FILE} gives its image); {todo}")

    rows, missing, mismatch, elsewhere = [], [], {}, {}
    bar = tqdm(total=len(chosen), unit="case", desc=f"evaluating {settings.split}", file=sys.stderr,
               disable=not settings.progress, dynamic_ncols=True)
    try:
        for case in chosen:
            read = _read_case(case, settings.data)
            sweep = read.sweep
            if any(read.mismatch.values()):
                mismatch[case.uuid] = read.mismatch
            answer = answers[case.uuid]
            frame, pred = -1, None
            if answer is None:
                missing.append(case.uuid)
            else:
                frame = read_frame_number(answer.frame_file, sweep.n_frames)
                if answer.mask_file is None:
                    raise FetalIQAError(
                        f"{answer.frame_file.parent}: the frame number is there but no mask ({CHALLENGE_MASK_FILE} "
                        f"beside it, or in {MASK_DIR}/); write the mask volume (all 0 for -1), the evaluator "
                        "reads both")
                volume = read_answer_mask(answer.mask_file, tuple(sweep.frames.shape), case.uuid)
                if frame >= 0:
                    pred = np.ascontiguousarray(volume[frame], dtype=np.uint8)
                if pred is None or not pred.any():
                    # nothing drawn at the frame named (or -1) but a mask on other frames: scored as
                    # written, by the evaluator's rules, but said (a frame numbered from 1 scored 0 unseen)
                    drawn = drawn_frames(volume)
                    if drawn.size:
                        elsewhere[case.uuid] = {"frame": frame, "drawn_on": [int(f) for f in drawn[:5]],
                                                "n_drawn": int(drawn.size)}
            m = an.case_metrics(read.gt, frame, pred, case.ac_mm, sweep_ranges=read.ranges,
                                spacing_mm=sweep.spacing_mm, fov=read.fov)
            rows.append(_case_row(m, case.uuid, read, frame, answered=answer is not None,
                                  answer=None if answer is None else str(answer.frame_file.parent)))
            bar.update(1)
    finally:
        bar.close()

    challenge = _challenge_means(rows)
    evaluated = {c.uuid for c in chosen}
    used = {a.frame_file.parent for a in answers.values() if a is not None}
    stems = {_image_stem(c.image_path.name) for c in chosen}
    others = sorted(n for n in _answered_names(root, jobs, used)
                    if n not in evaluated and _image_stem(n) not in evaluated and _image_stem(n) not in stems)
    listed = {c.uuid for c in cases} | {_image_stem(c.image_path.name) for c in cases}
    unlisted = [n for n in others if n not in listed and _image_stem(n) not in listed]
    metrics = {
        "split": settings.split, "split_seed": split_seed, "split_method": settings.split_method,
        "data": str(Path(settings.data).expanduser().resolve()),
        "predictions": str(root.expanduser().resolve()),
        "n_cases": len(chosen), "max_cases": settings.max_cases, "app_version": __version__,
        "challenge_rows": {ROW: ROW_LABELS[ROW]},
        "challenge": {ROW: challenge},
        "cases": {ROW: rows},
        "case_uuids": [c.uuid for c in chosen],
        "cases_without_answer": missing,
        "masks_drawn_elsewhere": elsewhere,
        "answers_not_evaluated": others,
        "answers_not_in_csv": unlisted,  # (those of answers_not_evaluated that are no case of --data's CSV)
        "reference_ac_mismatch": mismatch,
        "cases_measured_on_whole_frame": _whole_frame_cases(rows),
        "cases_not_in_csv": unlisted_cases(settings.data, cases),
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), metrics)
    return metrics


def answer_notes(metrics: dict) -> list[str]:
    """One line for the cases without an answer (scored -1 with no mask) and one for the answers
    of cases not evaluated; none when there are none."""
    lines = []
    missing = metrics.get("cases_without_answer") or []
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        lines.append(f"note: {len(missing)} of the {metrics['n_cases']} case(s) have no answer in "
                     f"{metrics['predictions']} ({shown}): each is scored as -1 with no mask (the challenge's "
                     "evaluator stops on a case without its answer)")
    unlisted = metrics.get("answers_not_in_csv")
    others = metrics.get("answers_not_evaluated") or []
    if unlisted is None:  # (metrics of an earlier release: the two kinds not told apart)
        unlisted = others if metrics.get("split") == "all" and not metrics.get("max_cases") else []
    listed = [n for n in others if n not in set(unlisted)]
    # answers of cases in the CSV but not in this split, and answers of no case of the CSV, apart:
    # "cases not evaluated here (--split all evaluates every case)" counted both, and --split all did not
    if metrics.get("split") == "all":
        where = "beyond --max-cases"
    else:
        where = (f"not in the {metrics.get('split')} split" + (" or beyond --max-cases" if metrics.get("max_cases")
                                                               else "") + "; --split all evaluates every case")
    for names, why in ((listed, f"cases of --data not evaluated here ({where})"),
                       (unlisted, "cases without a row in --data's CSV")):
        if names:
            shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            lines.append(f"note: {len(names)} answer(s) in {metrics['predictions']} are for {why}, left out ({shown})")
    elsewhere = metrics.get("masks_drawn_elsewhere") or {}
    if elsewhere:
        said = []
        for uuid, e in list(elsewhere.items())[:3]:
            on = ", ".join(map(str, e["drawn_on"][:3])) + (" ..." if e["n_drawn"] > 3 else "")
            named = "-1 (no frame)" if e["frame"] < 0 else f"frame {e['frame']}"
            off = (" (one frame off: frames are numbered from 0)" if e["frame"] >= 0 and e["n_drawn"] == 1
                   and abs(e["drawn_on"][0] - e["frame"]) == 1 else "")
            said.append(f"{uuid} names {named}, its mask is drawn on frame{'s' if e['n_drawn'] > 1 else ''} {on}{off}")
        lines.append(f"note: {len(elsewhere)} answer(s) have no mask at the frame their "
                     f"{CHALLENGE_FRAME_FILE} names but one drawn on other frames, scored as the evaluator reads "
                     f"them (the mask at the frame named): {'; '.join(said)}" + (" ..." if len(elsewhere) > 3 else ""))
    return lines
