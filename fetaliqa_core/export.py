"""The score files of a sweep: ``frames.csv``, ``summary.json`` and the challenge's two files.

``fetaliqa score``, ``fetaliqa gui --save-scores`` and the headless demo all write them here from
one :class:`~fetaliqa_core.analysis.assessment.Assessment`, so the same sweep, models and
threshold give the same files.
"""

from __future__ import annotations

import io as _io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import (atomic_output_dir, atomic_write, csv_writer, reached_through_link,
                                 remove_empty_folders, write_json)
from fetaliqa_core.io import _common as fio_keys

FRAMES_CSV = "frames.csv"
SUMMARY_JSON = "summary.json"
CHALLENGE_FRAME_FILE = "fetal-abdomen-frame-number.json"
CHALLENGE_MASK_FILE = "fetal-abdomen-segmentation.mha"
CASCADE_JSON = "cascade.json"  # written by cascade.write_cascade_scores
#: The challenge's algorithm interfaces: the input sweep, and the two outputs with where the
#: algorithm writes each under its output folder (``/output`` in the challenge's container; the
#: organisers' evaluator reads ``<job>/output/<relative path>`` for each job of predictions.json).
CHALLENGE_INPUT = ("stacked-fetal-ultrasound", "images/stacked-fetal-ultrasound")
#: Per output: (interface, its relative path, the file as a case folder holds it, that file's path
#: under the output folder). An image interface is a folder holding one image.
CHALLENGE_OUTPUTS = (
    ("fetal-abdomen-frame-number", CHALLENGE_FRAME_FILE, CHALLENGE_FRAME_FILE, CHALLENGE_FRAME_FILE),
    ("fetal-abdomen-segmentation", "images/fetal-abdomen-segmentation", CHALLENGE_MASK_FILE,
     f"images/fetal-abdomen-segmentation/{CHALLENGE_MASK_FILE}"),
)
#: Where ``fetaliqa score SWEEP --challenge-output`` puts the mask in the sweep's results folder: as
#: the challenge's algorithm writes it under its output folder, the frame number beside
#: ``images/`` (an archive's case folders hold the two files side by side, and its ``challenge/``
#: folder lays them out so, per case, under ``<case>/output/``).
CHALLENGE_MASK_PATH = CHALLENGE_OUTPUTS[1][3]
#: Files a run writes only with some options (--challenge-output, --cascade): a later run without
#: them removes those an earlier run wrote, or they would contradict its summary (the mask of a
#: run of an earlier version, side by side with the frame number, too).
OPTIONAL_OUTPUTS = (CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE, CHALLENGE_MASK_PATH, CASCADE_JSON)

#: A sweep file's status in a results table: ``summary.csv`` of ``fetaliqa score FOLDER`` and
#: ``cases.csv`` of an archive use these words and no others; what went wrong is in the table's
#: ``error`` column, never in the status.
STATUS_OK = "ok"
STATUS_INCOMPLETE = "incomplete"
STATUS_FAILED = "failed"
STATUS_MISSING = "missing"
STATUS_STALE = "stale"
STATUSES = {
    STATUS_OK: "scored, every frame",
    STATUS_INCOMPLETE: "scored in part (stopped before its last frame)",
    STATUS_FAILED: "not scored: the error column says why",
    STATUS_MISSING: "archive: not scored yet; running the same command again scores it",
    STATUS_STALE: "archive: scored with other models, precision or threshold; running again rescores it",
}


def scored_status(complete: bool) -> str:
    """The status of a sweep that was scored: every frame, or only some."""
    return STATUS_OK if complete else STATUS_INCOMPLETE


FRAMES_COLUMNS = ("frame", "sweep", "p_cls", "p_seg", "seg_area_px", "flagged", "threshold",
                  "model_threshold",
                  # what scored (summary.json's and summary.csv's models): a frames.csv moved away from
                  # its summary said nothing of the models whose scores it holds
                  "models")


def _score(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else ""


#: A cascade's frames.csv has one more column: which model's scores the row holds.
SCORED_BY_COLUMN = "scored_by"


def frames_csv_text(sweep, results, assessment, teacher: np.ndarray | None = None) -> str:
    """``frames.csv``: one row per frame; empty cells where a model did not score the frame.
    ``threshold`` / ``model_threshold`` repeat the operating point the ``flagged`` column used, and
    ``models`` the models that scored (``summary.json``'s ``models``), on every row.
    ``teacher`` (a cascade's): per frame, whether the teacher re-scored it; a last column,
    ``scored_by``, says whose scores each row holds ("teacher" or "student"); a student's row is
    flagged by the same rule applied to the student's scores it shows (the answer is the teacher's
    alone, but a row must not read unflagged beside scores above the threshold)."""
    buf = _io.StringIO()
    w = csv_writer(buf, lineterminator="\n")  # no cell runs as a spreadsheet formula
    w.writerow(FRAMES_COLUMNS + (() if teacher is None else (SCORED_BY_COLUMN,)))
    t = assessment.thresholds
    thr, own = f"{t.value:.4f}", f"{t.model:.4f}"
    models = str(getattr(assessment.summary, "models", "") or "")
    flagged = assessment.flagged
    if teacher is not None:
        from fetaliqa_core.analysis.assessment import flag_frames

        shown = flag_frames(results.p_cls if results.has_cls else None,
                            results.p_seg if results.has_seg else None, t.cls, t.seg).candidates
        flagged = np.where(np.asarray(teacher, dtype=bool), flagged, shown)
    for i in range(sweep.n_frames):
        area = int(results.seg_area_px[i])
        row = [i, sweep.sweep_index(i) + 1, _score(float(results.p_cls[i])),
               _score(float(results.p_seg[i])), "" if area < 0 else area,
               int(bool(flagged[i])), thr, own, models]
        w.writerow(row if teacher is None else [*row, "teacher" if teacher[i] else "student"])
    return buf.getvalue()


def write_frames_csv(path: str | Path, sweep, results, assessment, teacher: np.ndarray | None = None) -> Path:
    return atomic_write(path, frames_csv_text(sweep, results, assessment, teacher))


def write_summary_json(path: str | Path, assessment) -> Path:
    return write_json(path, assessment.summary.to_json())


#: How far (frames, same sweep) ``--challenge-output`` looks for a frame with a mask when the
#: chosen frame has none: the evaluator's DSC_soft window.
CHALLENGE_MASK_SEARCH = 15


def challenge_answer(sweep, results, assessment) -> tuple[int, np.ndarray | None]:
    """The frame and mask written for the challenge: never a frame index with an empty mask.

    The organisers' evaluator cannot score a frame with an empty mask (its Dice is 0 / 0 =
    infinite on an unannotated frame, and NAE_AC is 1 anyway). So: the chosen frame with its
    mask when the mask is non-empty inside the field of view; else the nearest frame of the same
    sweep, at most :data:`CHALLENGE_MASK_SEARCH` away (earlier first on ties), whose mask is;
    else -1 with an empty mask, the challenge's answer for "no abdomen" (the organisers answer
    -1 only then; their evaluator's Dice for -1 is defined only when the case's last frame is
    annotated). Returns ``(frame, mask on the frame's geometry or None)``.
    """
    from fetaliqa_core import acouslic
    from fetaliqa_core.analysis.ac import resolve_fov
    from fetaliqa_core.preprocess import mask_to_frame

    frame = int(assessment.chosen_frame)
    if frame < 0 or not results.has_seg:
        return -1, None
    fov = resolve_fov(acouslic.sweep_fov(sweep), (sweep.height, sweep.width))

    def mask_of(f: int) -> np.ndarray | None:
        m = results.mask(f)
        if m is None or not m.any():
            return None
        full = mask_to_frame(m, sweep.height, sweep.width) > 0
        if fov is not None:
            full &= fov
        return full if full.any() else None

    start, stop = sweep.sweep_ranges[sweep.sweep_index(frame)]
    for d in range(0, CHALLENGE_MASK_SEARCH + 1):
        for f in (frame - d, frame + d) if d else (frame,):
            if start <= f < stop:
                m = mask_of(f)
                if m is not None:
                    return f, m
    return -1, None


def challenge_files(layout: bool = True) -> tuple[str, str]:
    """The paths, in a results folder, of the challenge's frame number and mask: in the challenge's
    output layout (the mask in ``images/fetal-abdomen-segmentation/``), or side by side as an
    archive's case folders hold them (``layout`` False)."""
    return CHALLENGE_FRAME_FILE, (CHALLENGE_MASK_PATH if layout else CHALLENGE_MASK_FILE)


def write_challenge_files(folder: Path, sweep, results, assessment, layout: bool = False) -> int:
    """The challenge's outputs (see :func:`challenge_answer`): the frame number (-1 for none) and
    a mask volume that is empty except on that frame, on the frames' own geometry, where
    :func:`challenge_files` puts them. Returns the frame written."""
    from fetaliqa_core import io as fio

    frame, mask = challenge_answer(sweep, results, assessment)
    frame_file, mask_file = (Path(folder) / name for name in challenge_files(layout))
    atomic_write(frame_file, f"{frame}\n")
    volume = np.zeros((sweep.n_frames, sweep.height, sweep.width), dtype=np.uint8)
    if frame >= 0 and mask is not None:
        volume[frame] = mask
    mask_file.parent.mkdir(parents=True, exist_ok=True)
    fio.write_volume(mask_file, volume, spacing_mm=sweep.spacing_mm, compress=True,
                     metadata=challenge_mask_metadata(assessment, frame))
    return frame


def challenge_mask_metadata(assessment, frame: int) -> dict[str, str]:
    """What the challenge's mask file carries about its frame, so that measuring the mask again
    (``fetaliqa ac``) keeps the answer's doubt: ``doubtful`` and why when the answer doubted the
    AC there for a reason a mask alone cannot show (the frame's grey levels, the classifier, a
    demonstration model, a frame next to the chosen one), else ``ok`` (the mask's own shape and
    size are judged again when it is measured), or ``none`` without a mask; and what made it."""
    from fetaliqa_core.analysis.units import mask_doubt, model_doubt

    summary = assessment.summary
    chosen = int(summary.chosen_frame)
    if frame < 0:
        status, note = "none", ""
    else:
        mask_problem = assessment.mask_problem(chosen)
        reasons = [
            f"this is the mask of frame {frame}, next to the chosen frame {chosen} whose mask is empty"
            if frame != chosen else None,
            mask_doubt(mask_problem) if mask_problem else None,
            assessment.disagreement(chosen),
            model_doubt(summary.demo, summary.spacing_mm, getattr(summary, "student_alone", False)),
        ]
        reasons = [r for r in reasons if r]
        status, note = ("doubtful", "; ".join(reasons)) if reasons else ("ok", "")
    source = f"FetalIQA {summary.app_version}".strip() + f", models: {summary.models or 'unknown'}"
    if summary.demo:
        source += " (demonstration model, not for clinical use)"
    elif getattr(summary, "random_base", False):
        source += " (test model on a randomly initialised base, not for clinical use)"
    meta = {fio_keys.META_AC_STATUS: status, fio_keys.META_AC_NOTE: note[:900], fio_keys.META_SOURCE: source[:600]}
    if summary.spacing_problem:  # the header's ElementSpacing then only repeats the sweep's (1 x 1 when none)
        meta[fio_keys.META_SPACING] = fio_keys.META_SPACING_UNKNOWN + summary.spacing_problem[:600]
    elif summary.spacing_source:  # where the sweep's spacing came from (a DICOM calibration, the user...)
        meta[fio_keys.META_SPACING] = fio_keys.META_SPACING_OF_SWEEP + summary.spacing_source[:200]
    return meta


def challenge_job_files(folder: Path) -> list[tuple[Path, str]]:
    """The challenge files :func:`write_challenge_files` wrote into ``folder``, each with the
    path it has in a job of the challenge's output layout (``output/...``)."""
    return [(Path(folder) / name, f"output/{target}") for _slug, _rel, name, target in CHALLENGE_OUTPUTS]


def challenge_job(pk: str, input_name: str) -> dict:
    """One job's entry in the challenge's ``predictions.json``: its id (the folder holding its
    ``output/``), the input's file name (the evaluator finds the reference by its stem) and
    where each output lies."""
    slug, rel = CHALLENGE_INPUT
    return {"pk": pk,
            "inputs": [{"interface": {"slug": slug, "relative_path": rel}, "image": {"name": input_name}}],
            "outputs": [{"interface": {"slug": s, "relative_path": r}} for s, r, _name, _target in CHALLENGE_OUTPUTS]}


#: What the last :func:`write_scores` into a folder wrote there (hidden): only those of its files
#: are ever removed by a later run; files of the same names put there by anyone else are kept.
OUTPUTS_FILE = ".fetaliqa-outputs.json"


def _small_json(path: Path):
    """A small JSON file's content (4 MB at most), or None when absent or not readable as such."""
    from fetaliqa_core import validate

    if not path.is_file():
        return None
    try:
        return validate.read_json_bounded(path, path.name, "", max_bytes=1 << 22)
    except FetalIQAError:
        return None


def _previous_outputs(out: Path) -> set[str]:
    """The files an earlier :func:`write_scores` wrote into ``out``: its list, or for a folder an
    earlier version wrote (a summary.json of ours, no list) its optional files; else none."""
    listed = _small_json(out / OUTPUTS_FILE)
    if isinstance(listed, list):
        return {str(n) for n in listed}
    summary = _small_json(out / SUMMARY_JSON)
    if isinstance(summary, dict) and "app_version" in summary and "chosen_frame" in summary:
        return set(OPTIONAL_OUTPUTS)
    return set()


def remove_earlier_outputs(out: str | Path) -> list[str]:
    """Remove from ``out`` the result files the last :func:`write_scores` into it wrote (its
    list names them; files of the same names put there by anyone else are kept), and that list.
    For a run that wrote something else there (a demo's screenshot of nothing scored), so that
    the folder does not hold its files beside an earlier run's results. Returns the names removed."""
    out = Path(out)
    listed = _small_json(out / OUTPUTS_FILE)
    if not isinstance(listed, list):
        return []
    removed = []
    # (names in the folder itself, and the challenge's mask in its layout: no other path is ours)
    ours = [str(n) for n in listed if Path(str(n)).name == str(n) or str(n) == CHALLENGE_MASK_PATH]
    for name in ours + [OUTPUTS_FILE]:
        path = out / name
        # (never through a link: a file in the folder it points to is not ours)
        if path.is_file() and not path.is_symlink() and not reached_through_link(out, name):
            path.unlink()
            if name != OUTPUTS_FILE:
                removed.append(name)
            remove_empty_folders(path.parent, out)  # the mask's folders, when it left them empty
    return removed


def other_sweep(summary: dict | None, path: str | Path, content_hash: str | None = None) -> str | None:
    """The sweep an earlier run's ``summary.json`` (:func:`earlier_results`) names where it is not
    the sweep at ``path``: its path, or "another sweep" when it names none; None where it is this
    one (the same file, changed since or not, or, given ``content_hash``, the same recording), or
    there is no summary."""
    if not summary:
        return None
    if content_hash is not None and summary.get("content_hash") in (None, content_hash):
        return None
    earlier = str(summary.get("path") or "")
    try:
        if earlier and Path(earlier).expanduser().resolve() == Path(path).expanduser().resolve():
            return None  # this file, changed since: its own results
    except (OSError, RuntimeError, ValueError):
        pass
    return earlier or "another sweep"


def earlier_results(out: str | Path) -> tuple[dict | None, list[str]]:
    """What ``out`` holds already: the ``summary.json`` of an earlier FetalIQA run (None without
    one), and the names of result files there that FetalIQA did not write (a ``frames.csv`` or
    ``summary.json`` of the user's own, which a run would replace)."""
    out = Path(out)
    ours = bool(_previous_outputs(out))  # a list of what an earlier run wrote, or a summary of ours
    foreign = [] if ours else [n for n in (FRAMES_CSV, SUMMARY_JSON) if (out / n).is_file()]
    summary = None if SUMMARY_JSON in foreign else _small_json(out / SUMMARY_JSON)
    return (summary if isinstance(summary, dict) else None), foreign


def refuse_foreign_table(path: Path, columns: Sequence[str]) -> str | None:
    """Before a folder or an archive is scored: its table (``summary.csv``, ``cases.csv``) is
    written into the output folder, replacing a file of that name; one FetalIQA did not write (a
    table of the user's own, a link, anything else) was replaced without a word, as
    :func:`earlier_results` refuses for one sweep's files. A table of ours has its first columns
    as its first row's first fields (later versions may add columns at its end; a spreadsheet
    that saved it again may have added a byte-order mark or quotes): comparing bytes took a table
    of the user's starting "file,sweep,kindness" for ours, and ours re-saved with a mark for one
    of the user's. An empty file (a failed copy of ours; it holds nothing to lose), or one cut
    short in its first row, was refused as someone else's: it is replaced, and the words returned
    say so ("empty", "cut short"; None for a whole table or none)."""
    import csv

    if not path.is_symlink() and not path.exists():
        return None
    if path.is_dir() and not path.is_symlink():
        raise FetalIQAError(f"{path} is a folder where the results' table goes; nothing was written. Move it away, "
                            "or choose another output folder (--out).")
    try:
        if not path.is_symlink() and path.is_file():
            with open(path, "rb") as fh:
                head = fh.read(64 * 1024).decode("utf-8", errors="replace").removeprefix("\ufeff")
            if not head.strip():
                return "empty"
            first = next(csv.reader(_io.StringIO(head.splitlines()[0] if head else "")), [])
            if [field.strip() for field in first[:3]] == list(columns[:3]):
                return None if _ends_a_line(path) else "cut short"  # (every row of ours ends a line)
            if "\n" not in head and ",".join(columns).startswith(head):
                return "cut short"
    except (OSError, csv.Error):
        pass
    raise FetalIQAError(f"{path.parent} holds {path.name} that FetalIQA did not write; the results would replace "
                        "it. Choose another output folder (--out), or move it away.")


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def refuse_writing_over_input(out: str | Path, source: str | Path, challenge: bool = False,
                              cascade: bool = False, layout: bool = True) -> None:
    """Before a sweep is scored: results written into ``out`` (or an earlier run's answer dropped
    from it) would replace ``source``, the sweep itself (``--challenge-output`` into the sweep's
    folder where the challenge's mask goes, or any sweep named as a result file; ``layout``: the
    challenge's files laid out as :func:`challenge_files` says)."""
    from fetaliqa_core.files import is_protected

    names = [FRAMES_CSV, SUMMARY_JSON, OUTPUTS_FILE]
    names += list(challenge_files(layout)) if challenge else []
    names += [CASCADE_JSON] if cascade else []
    names += [n for n in OPTIONAL_OUTPUTS if n in _previous_outputs(Path(out))]  # (dropped: see write_scores)
    for name in names:
        if is_protected(Path(out) / name, (source,)):
            raise FetalIQAError(f"{source}: the results for it go into {out}, where {name} would replace "
                                "this sweep itself. Choose another output folder (--out).")


def write_scores(out: str | Path, sweep, results, assessment, challenge: bool = False,
                 extra: Callable[[Path], None] | None = None, teacher: np.ndarray | None = None,
                 layout: bool = True) -> list[Path]:
    """Write ``frames.csv`` and ``summary.json`` (and with ``challenge`` the challenge's files, in
    the challenge's output layout, or side by side with ``layout`` False, as an archive's case
    folder holds them: :func:`challenge_files`) into ``out`` at once: a failure leaves ``out`` as
    it was. ``extra(folder)`` may write more files into the folder before it is put in place.
    Returns the files written here."""
    out = Path(out)
    # a folder scored before with --challenge-output or --cascade must not keep that run's answer
    # beside this one's summary; files of those names in any other folder are the user's own
    previous = _previous_outputs(out)
    stale = tuple(n for n in OPTIONAL_OUTPUTS if n in previous)
    inputs = (sweep.path,) if getattr(sweep, "path", None) is not None else ()
    with atomic_output_dir(out, drop=stale, protect=inputs) as tmp:
        write_frames_csv(tmp / FRAMES_CSV, sweep, results, assessment, teacher)
        write_summary_json(tmp / SUMMARY_JSON, assessment)
        names = [FRAMES_CSV, SUMMARY_JSON]
        if challenge:
            write_challenge_files(tmp, sweep, results, assessment, layout=layout)
            names += list(challenge_files(layout))
        if extra is not None:
            before = {q.name for q in tmp.iterdir()}
            extra(tmp)
            # (a cascade's cascade.json was written but not listed among the files written)
            names += sorted(q.name for q in tmp.iterdir() if q.name not in before)
        # (the files, by their paths in the folder: the mask's is in images/...)
        write_json(tmp / OUTPUTS_FILE, sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()))
    return [out / n for n in names]
