"""Review reports (HTML, CSV; PDF through a writer the caller passes) and reviewer-label export.

The HTML is self-contained (pictures embedded as base64 PNG) and uses only what both a browser
and Qt's rich-text engine (``QTextDocument``, used for the PDF) understand: tables with
attributes, simple inline styles, ``page-break-before``. Its content is laid out for a 640 px
(A4 minus margins at 96 dpi) column.

Per sweep the report shows: the quality curve (p_cls and p_seg per frame, threshold, sub-sweep
boundaries, flagged frames, frames with verdicts), thumbnails of flagged frames with the stored
segmentation overlay (when the sweep file can be loaded), the agreement between each reviewer
and the model (accuracy, Cohen's kappa on "usable for AC" = optimal or suboptimal versus the
model's flag), AC and GA at the chosen frame, and the verdicts.

Labels CSV (``write_labels_csv``), one row per latest verdict of each reviewer on each frame::

    uuid_or_hash,path,frame,label,reviewer,time,content_hash
    0199616b-b9d7-4c6d-9a4e-9a2c1d0c7d11,/data/images/0199616b-...mha,312,1,alice,2025-01-31T14:05:09.123+00:00,5f2c...

``uuid_or_hash``: the file name without extension (the case id of an ACOUSLIC-layout dataset,
UUID or not), or the sweep's content hash when the path is unknown. A name says nothing of the
pixels: ``content_hash`` does, and ``fetaliqa train --extra-labels`` uses a row only when it is
the hash of the dataset's file of that name (a file replaced, restored, or the same name in two
folders, never lends one sweep's verdicts to another's frames).
``content_hash``: the content hash of the pixels the verdicts were given on (as the viewer and
``review list`` show it). ``frame``: zero-based index into the stacked file (all sub-sweeps).
``label``: ACOUSLIC mask convention, 1 optimal plane, 2 suboptimal plane, 0 not usable. Several
reviewers may label the same frame (one row each); a reviewer's earlier verdicts on a frame are
superseded by their latest, and a verdict withdrawn in the viewer gives no row. ``time``: UTC ISO
8601 of the verdict. Rows are sorted by sweep, frame, reviewer.
"""

from __future__ import annotations

import functools
import html
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fetaliqa_core import __version__
from fetaliqa_core.analysis.ac import ellipse_polygon, extrapolated_note, format_ga
from fetaliqa_core.analysis.units import models_disagree
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_write, csv_writer
from fetaliqa_core.io._common import spacing_text
from fetaliqa_core.review.figures import (
    CURVE_SIZE,
    THUMB_WIDTH,
    draw_quality_curve,
    mask_on_frame,
    overlay_thumbnail,
    png_data_uri,
)
from fetaliqa_core.review.records import clean_name
from fetaliqa_core.review.store import (
    ACOUSLIC_CODE,
    LABEL_TITLES,
    ModelRun,
    ReviewStore,
    SweepRecord,
    Verdict,
)

class ReportCancelled(Exception):
    """Raised by a sweep loader to stop the report (the user cancelled): nothing is written."""


#: sweep_loader(path) -> the file's ``fetaliqa_core.io.Sweep`` (its frames are shown only when its
#: content hash is the one reviewed), or frames (N, H, W) uint8 the caller vouches for, or
#: (frames, masks (N, H, W) uint8 | None).
SweepLoader = Callable[[str], Any]
#: pdf_writer(html, out_path): the "pdf" report writer registered by the viewer (keeps this module Qt-free).
PdfWriter = Callable[[str, Path], None]

REPORT_EXTENSIONS = (".html", ".pdf", ".csv")
#: The report's title, also the PDF's document title (which tells an earlier report from another PDF).
REPORT_TITLE = "FetalIQA review report"
#: Width of the report's pictures in CSS px: the PDF's text column (A4 portrait minus Qt's
#: margins) is about 627 px at 96 dpi. (Qt ignores ``margin: auto``, so the page is not centred
#: in a browser; ``max-width`` keeps it readable there.)
COLUMN_PX = 620
#: At most this many thumbnails per sweep: the chosen frame, then the highest-scoring flagged.
MAX_THUMBNAILS = 12
#: The model's input side, where stored masks may lie (preprocess.MODEL_INPUT_SIZE; that module needs torch).
MODEL_INPUT_SIDE = 224
THUMBS_PER_ROW = 4


# ----------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa of two raters' labels on the same items (any hashable categories).

    kappa = (p_o - p_e) / (1 - p_e), p_o the observed agreement, p_e the agreement expected
    from each rater's label frequencies. NaN when undefined (no items, or p_e = 1: both raters
    used one and the same label throughout).
    """
    if len(a) != len(b):
        raise ValueError(f"the raters labelled {len(a)} and {len(b)} items")
    n = len(a)
    if n == 0:
        return math.nan
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    p_e = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in set(a) | set(b))
    if p_e >= 1.0:
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


@dataclass(frozen=True)
class Agreement:
    """One reviewer against the model on the frames they judged (binary: usable for AC)."""

    reviewer: str
    n: int
    accuracy: float
    kappa: float
    both_usable: int
    reviewer_only: int  # reviewer usable, model did not flag
    model_only: int  # model flagged, reviewer not usable
    neither: int


def _agrees(v: Verdict, run: ModelRun | None) -> bool | None:
    """Whether a verdict agrees with the model run the report shows beside it (the one the
    agreement table counts); the agreement stored with the verdict was made against the run of
    that moment, which may have been partial or at another threshold."""
    if run is None or not 0 <= v.frame < len(run.flagged):
        return v.agrees_with_model
    if not run.scored[v.frame]:  # a run stopped part-way: no call of the model's on this frame
        return None
    return v.positive == bool(run.flagged[v.frame])


def agreement(verdicts: Sequence[Verdict], run: ModelRun) -> list[Agreement]:
    """Per reviewer, sorted by name: compare the latest verdicts with ``run.flagged``, on the
    frames the run scored (a run stopped part-way made no call on the others)."""
    by_reviewer: dict[str, list[Verdict]] = {}
    scored = run.scored
    for v in verdicts:
        if 0 <= v.frame < len(scored) and scored[v.frame]:
            by_reviewer.setdefault(v.reviewer, []).append(v)
    out = []
    for name in sorted(by_reviewer):
        human = [v.positive for v in by_reviewer[name]]
        model = [bool(run.flagged[v.frame]) for v in by_reviewer[name]]
        pairs = list(zip(human, model, strict=True))
        n = len(pairs)
        out.append(Agreement(
            reviewer=name, n=n, accuracy=sum(h == m for h, m in pairs) / n if n else math.nan,
            kappa=cohen_kappa(human, model), both_usable=pairs.count((True, True)),
            reviewer_only=pairs.count((True, False)), model_only=pairs.count((False, True)),
            neither=pairs.count((False, False))))
    return out


# ----------------------------------------------------------------------------- helpers


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _scores(run, f: int) -> str:
    """``p_cls 0.672 · p_seg 0.92``: each with the digits that tell it from its threshold (a
    score of 0.6723 beside 0.67 is not "0.67"), as ``score`` prints them."""
    from fetaliqa_core.analysis.units import beside_threshold

    def one(name: str, value: float, cut: float) -> str:
        return f"{name} {beside_threshold(value, cut) if math.isfinite(value) else '–'}"

    return " · ".join([one("p_cls", float(run.p_cls[f]), float(run.thresholds.cls)),
                       one("p_seg", float(run.p_seg[f]), float(run.seg_threshold))])


def _ga_text(weeks: float | None) -> str:
    """Gestational age as ``24w 3d`` (the one format); an en dash when unknown."""
    return format_ga(weeks)


def ga_weeks_of(run: ModelRun) -> float | None:
    """The run's GA as every other output gives it: Hadlock's from its AC as shown (0.1 mm), from
    which the window, ``score`` and ``ac`` derive it (the weeks stored with the run, to two
    decimals, put the report's text a day off theirs for 1.7 % of ACs: "17w 0d" for 16w 6d); the
    stored weeks where no AC was stored, Hadlock's where only the AC was."""
    if run.ac_mm is None:
        return run.ga_weeks
    from fetaliqa_core.analysis import hadlock_ga

    ga = hadlock_ga(round(float(run.ac_mm), 1))
    return ga.weeks if math.isfinite(ga.weeks) and not ga.out_of_range else None


def _fmt_time(iso: str, utc_suffix: bool = True) -> str:
    try:
        t = datetime.fromisoformat(iso).astimezone(timezone.utc)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M") + (" UTC" if utc_suffix else "")


def _where(sweep: SweepRecord, frame: int) -> str:
    """``312 (S3:32)``: stacked index, sub-sweep and index within it."""
    i = sweep.sweep_index(frame)
    if len(sweep.sweep_ranges) <= 1:
        return str(frame)
    return f"{frame} (S{i + 1}:{frame - sweep.sweep_ranges[i][0]})"


def _threshold_text(run: ModelRun) -> str:
    """``threshold 0.62 (model: 0.70) on p_cls, 0.50 on p_seg``: the operating point of the run,
    with the models' own when the user changed it."""
    t = run.thresholds
    text = f"{t.describe()} on {t.score}"
    if t.score == "p_cls" and np.isfinite(run.p_seg).any():
        text += f", {run.seg_threshold:.2f} on p_seg"
    return text


def _run_frame_mask(store: ReviewStore, run: ModelRun, frame: int, h: int, w: int, loader_masks):
    """The model run's mask of ``frame`` on an ``h`` x ``w`` frame, else the loader's (a mask file
    given beside the sweep), else None: what the report pictures and measures."""
    mask = store.run_mask(run.id, frame, sizes=functools.partial(_mask_fits, h, w))
    mask = mask_on_frame(mask, h, w) if mask is not None else None
    if mask is None and loader_masks is not None:
        mask = loader_masks[frame]
    return mask


def _thumbnail_ac(mask, frames, sweep, view, frame: int):
    """The AC ellipse on a thumbnail's mask, measured as the viewer does (inside the frame's field
    of view: the sweep's, or where its fan changes between frames, the fan of the frames like it);
    (measurement or None, that field of view). ``view``: the frames as one object, on which the
    field of view and any change of fan are worked out once."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.analysis.ac import measure_ac

    fov = acouslic.frame_fov(view, frame)
    if mask is None or not np.asarray(mask).any():
        return None, fov
    spacing = sweep.spacing_mm or (1.0, 1.0)  # the ellipse's shape does not depend on it
    return measure_ac(np.asarray(mask) > 0, spacing, fov=fov), fov


def _lengths_shown(sweep) -> bool:
    """Whether the database holds a pixel size lengths may be shown with (a database written
    before only usable sizes were kept may hold a writer's 1 x 1 placeholder)."""
    from fetaliqa_core.io.spacing import is_plausible

    return bool(sweep.spacing_mm) and None not in tuple(sweep.spacing_mm) and is_plausible(tuple(sweep.spacing_mm))


def _outline_spacing(calibrations: tuple, sweep, mask) -> tuple[tuple[float, float] | None, str | None]:
    """(pixel size, problem) for a thumbnail's outline on a sweep whose image regions state
    different pixel sizes (:func:`fetaliqa_core.io.spacing.outline_spacing`); (None, None) where
    the database's one size holds."""
    from fetaliqa_core.io.spacing import outline_spacing

    if not calibrations or mask is None or not _lengths_shown(sweep):
        return None, None
    used = (float(sweep.spacing_mm[0]), float(sweep.spacing_mm[1]))
    spacing, problem, _note = outline_spacing(calibrations, used, np.asarray(mask) > 0)
    return (None, problem) if problem else (None if spacing == used else spacing, None)


def _thumbnail_ac_text(mask, ac, sweep, fov, frame=None, disagreement: str | None = None,
                       demo: bool = False, spacing_mm: tuple[float, float] | None = None,
                       student_alone: bool = False) -> str:
    """A thumbnail's AC read by the viewer's rules: a plain number only when the frame choice's
    verdict on its mask (here at the frame's own size, with the frame's grey levels ``frame`` for
    the outline) is a plausible abdomen, neither model contradicts it (``disagreement``:
    :func:`~fetaliqa_core.analysis.units.models_disagree`), the run is not the demonstration
    model's nor a distilled student's scoring alone (``student_alone``) and the value is in the
    plausible range, else marked doubtful (no GA either way)."""
    from fetaliqa_core.analysis import frame_choice
    from fetaliqa_core.analysis.ac import measure_ac, resolve_fov
    from fetaliqa_core.analysis.units import model_doubt, read_ac

    region = np.asarray(mask) > 0
    px_mm = (float(sweep.spacing_mm[0]), float(sweep.spacing_mm[1]))
    if spacing_mm is not None and tuple(spacing_mm) != px_mm:
        # (the outline's own region's size: ``ac`` was measured at the database's)
        px_mm = (float(spacing_mm[0]), float(spacing_mm[1]))
        ac = measure_ac(region, px_mm, fov=fov)
        if ac is None:
            return "AC not measured on this outline"
    grey = None if frame is None or np.asarray(frame).shape != region.shape else np.asarray(frame)
    shape = frame_choice.mask_shape(region, resolve_fov(fov, region.shape), px_mm, grey=grey)
    r = read_ac(ac.ac_mm, None, shape.problem, disagreement, model_doubt(demo, px_mm, student_alone))
    # an outline the field of view cut, its ellipse extrapolated past it: said in `fetaliqa ac`'s and the
    # window's words (the report gave the number plain, the store keeping no word of it). Said, not
    # doubted: whether the cut makes the AC doubtful is the frame choice's verdict above
    cut = extrapolated_note(ac, fov)
    if r.trusted:
        return f"AC {r.ac_mm:.1f} mm" + (f" ({cut})" if cut else "")
    # the reason too (the summary points here for it): 'doubtful' alone said nothing of why
    return f"AC {r.ac_mm:.1f} mm (doubtful: {'; '.join(t for t in (r.note, cut) if t)})"


def _thumbnail_doubt(run, f: int) -> str | None:
    """Why one model contradicts an AC on frame ``f`` of ``run``, by the viewer's rule: with both
    models, the classifier scores it below its threshold or the segmenter's own call is no."""
    t = run.thresholds
    if t.score != "p_cls":
        return None
    p_seg = float(run.p_seg[f])
    return models_disagree(float(run.p_cls[f]), t.cls, None if not np.isfinite(p_seg) else p_seg >= run.seg_threshold,
                           run.seg_threshold)


#: Printed beside the numbers of a run made with the bundled demonstration model.
DEMO_REPORT_NOTICE = ("Numbers from the demonstration model, trained on synthetic data only: "
                      "not for clinical use.")


RANDOM_BASE_REPORT_NOTICE = ("Numbers from a test model trained on a randomly initialised base (not FetalCLIP, "
                             "not pretrained): not for clinical use; they are not measurements of a patient.")


def run_notice(run: ModelRun) -> str:
    """The notice a run's numbers carry: the demonstration model's, a test model's (on a
    randomly initialised base), or none for the user's own models."""
    if is_demo_run(run):
        return DEMO_REPORT_NOTICE
    bundles = run.bundles if isinstance(run.bundles, dict) else {}
    if any(isinstance(v, dict) and v.get("random_base") for v in bundles.values()):
        return RANDOM_BASE_REPORT_NOTICE
    return ""


def is_demo_run(run: ModelRun) -> bool:
    """The run's models include the bundled demonstration model."""
    bundles = run.bundles if isinstance(run.bundles, dict) else {}
    return any(isinstance(v, dict) and v.get("demo") for v in bundles.values()) or (
        "demo model" in str(bundles.get("description", "")))


def is_student_alone_run(run: ModelRun) -> bool:
    """The run was a distilled student scoring without its teacher (its ACs are a first look)."""
    bundles = run.bundles if isinstance(run.bundles, dict) else {}
    return bundles.get("student_alone") is True


def _bundle_text(bundles: dict[str, Any]) -> str:
    parts = []
    for role, info in sorted(bundles.items()):
        if role == "student_alone":  # (said by the ACs' doubt, not a bundle)
            continue
        if isinstance(info, dict):
            name = info.get("name") or ""
            digest = str(info.get("hash") or "")[:12]
            parts.append(f"{role}: " + (" ".join(t for t in (name, digest) if t) or "–"))
        else:
            parts.append(f"{role}: {info}")  # whole: the PDF wraps it, never cuts a word
    return "; ".join(parts) or "–"


def _load_frames(loader: SweepLoader | None, sweep: SweepRecord
                 ) -> tuple[np.ndarray | None, np.ndarray | None, str | None, tuple]:
    """(frames, masks, why-not, region calibrations) from the loader; never raises, except
    :class:`ReportCancelled`. The last: the loaded sweep's image regions with pixel sizes of their
    own (``Sweep.region_calibrations``; the database keeps one size a sweep), else empty."""
    if loader is None:
        return None, None, None, ()
    if not sweep.path:
        return None, None, "the sweep's file path is unknown", ()
    try:
        loaded = loader(sweep.path)
    except ReportCancelled:
        raise
    except FetalIQAError as exc:
        return None, None, str(exc), ()
    except Exception as exc:  # a report must not fail because one file cannot be read
        return None, None, f"{type(exc).__name__}: {exc}", ()
    if loaded is None:
        return None, None, f"{sweep.path} is not available", ()
    masks = None
    if isinstance(loaded, tuple):
        loaded, masks = loaded[0], (loaded[1] if len(loaded) > 1 else None)
    calibrations = tuple(getattr(loaded, "region_calibrations", ()) or ())
    frames, masks, why_not = _frames_of(loaded, masks, sweep)
    return frames, masks, why_not, (calibrations if frames is not None else ())


def _frames_of(loaded: Any, masks: Any, sweep: SweepRecord
               ) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    if hasattr(loaded, "content_hash"):
        # A file replaced by another sweep of the same size under its name has the same shape:
        # only the hash tells that its frames are not the ones the verdicts and masks were given on.
        try:
            same = loaded.content_hash == sweep.content_hash
        except Exception as exc:  # a file rewritten while it is read: a line, not a failed report
            return None, None, f"{type(exc).__name__}: {exc}"
        if not same:
            return None, None, (f"{sweep.path} changed since it was reviewed: its pixels are not the "
                                "ones the verdicts were given on")
        loaded = loaded.frames
    frames = np.asarray(loaded)
    if frames.ndim != 3 or frames.shape[0] != sweep.n_frames:
        return None, None, (f"{sweep.path} has shape {frames.shape}, not the "
                            f"{sweep.n_frames} frames that were reviewed (was it changed?)")
    if masks is not None and np.shape(masks) != frames.shape:
        masks = None
    return frames, masks, None


def _mask_fits(height: int, width: int, mask_h: int, mask_w: int) -> bool:
    """Whether a stored mask can lie on frames of height x width: one of the frame's size, or a
    square model input no larger than the frame or the model's 224 (any other is not decoded)."""
    return (mask_h, mask_w) == (height, width) or (
        mask_h == mask_w <= max(height, width, MODEL_INPUT_SIDE))


def _thumbnail_frames(run: ModelRun) -> list[int]:
    flagged = np.flatnonzero(run.flagged).tolist()
    score = np.fmax(np.nan_to_num(run.p_cls, nan=-1), np.nan_to_num(run.p_seg, nan=-1))
    ranked = sorted(flagged, key=lambda f: -float(score[f]))
    picked = []
    if run.chosen_frame is not None:
        picked.append(int(run.chosen_frame))
    for f in ranked:
        if len(picked) >= MAX_THUMBNAILS:
            break
        if f not in picked:
            picked.append(f)
    return sorted(picked)


def _write_atomic(out_path: Path, data: bytes) -> None:
    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out_path, data)
    except OSError as exc:  # named by its cause: disk full, read-only, permission, a file in the way
        from fetaliqa_core.paths import os_error_message

        exc.filename = str(out_path)
        raise FetalIQAError(f"Cannot write {os_error_message(exc)}") from None


#: How far into an existing output file its kind is looked for.
_OUTPUT_HEAD_BYTES = 4096


def _looks_like_ours(head: bytes, ext: str, columns: Sequence[Sequence[str]]) -> bool:
    """Whether the first bytes of an existing file are those of an earlier file of the kind
    about to replace it: a CSV whose header row is exactly one of ``columns`` (the kind's
    columns, and those of its earlier versions: one that starts with them and goes on is an
    export someone added a column to, their work), a review report (HTML naming FetalIQA), a
    PDF."""
    if ext == ".csv":
        import csv

        first = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").splitlines()[:1]
        try:
            header = next(csv.reader(first), None)
        except csv.Error:
            return False
        return header is not None and any(header == list(c) for c in columns)
    if ext == ".html":  # (the report's own line under its title, not any page that names FetalIQA)
        return b"<html" in head.lower() and b'<p class="meta">Generated ' in head and b" by FetalIQA " in head
    if ext == ".pdf":  # (the report's title in the document's information, as the viewer writes it)
        return head.startswith(b"%PDF-") and any(t in head for t in (
            REPORT_TITLE.encode("latin-1"), REPORT_TITLE.encode("utf-16-be")))
    return False


#: The CSV exports, by kind: how the refusal names them (an existing file is replaced only when
#: its header row is its kind's).
_CSV_KINDS = {"report": "report CSV", "labels": "labels CSV", "history": "verdict history CSV"}


def _not_a_file(path: Path) -> str | None:
    """What ``path`` is when it is there but no regular file of its own: a link (replaced by
    the write with a file of its own, while what it points to kept its old content), a named
    pipe (the write took its place and the pipe was gone), a folder, a device, a socket; None
    for a regular file or nothing."""
    import stat

    try:
        mode = path.lstat().st_mode
    except OSError:
        return None  # nothing there (or a folder above it that cannot be read: the write says so)
    if stat.S_ISLNK(mode):
        try:
            return f"a link (to {os.readlink(path)})"
        except OSError:
            return "a link"
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device")


def check_output(out_path: str | Path, store: ReviewStore, kind: str = "report",
                 option: str | None = "--out") -> None:
    """Refuse an output that would destroy data, before anything is read or written: the review
    database itself (or its -wal/-shm/-journal companions), anything there that is not a
    regular file (a link, a named pipe, a folder, a device), or an existing file that is not an
    earlier export of the same ``kind`` ("report", "labels", "history": a spreadsheet of
    someone's, a file typed by mistake); one line saying what to do. ``option``: how the line
    names the output (the command line's "--out"; None: "The file", as a window says it)."""
    out = Path(out_path).expanduser()
    named = f"{option} {out}" if option else f"The file {out}"
    db = Path(store.path).expanduser()
    companions = [db] + [db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal")]
    try:
        target = out.resolve()
        same = any(target == c.resolve() or (out.exists() and c.exists() and os.path.samefile(out, c))
                   for c in companions)
    except OSError:
        same = False
    if same:
        raise FetalIQAError(f"{named} is the review database (or one of its files) being read; name "
                            "another output file.")
    what = _not_a_file(out)
    if what is not None:
        raise FetalIQAError(f"{named} is {what}, not a file; nothing was written. Give the path of a file.")
    if not out.is_file():
        return  # a new file (a missing parent: the write names the problem)
    try:
        with open(out, "rb") as fh:
            head = fh.read(_OUTPUT_HEAD_BYTES)
    except OSError as exc:
        raise FetalIQAError(f"{named} exists and cannot be read ({exc.strerror or exc}); name another "
                            "output file.") from None
    # (a history written before verdicts could be withdrawn ends at "current", a report before it
    # said whether an ellipse was extrapolated at "ac_status": they are replaced too)
    columns = {"labels": [LABELS_CSV_COLUMNS],
               "history": [HISTORY_CSV_COLUMNS, HISTORY_CSV_COLUMNS[:-1]]}.get(
        kind, [REPORT_CSV_COLUMNS, REPORT_CSV_COLUMNS[:-1]])
    if not _looks_like_ours(head, out.suffix.lower(), columns):
        name = _CSV_KINDS[kind] if kind != "report" else {
            ".csv": "report CSV", ".html": "FetalIQA report", ".pdf": "PDF"}.get(out.suffix.lower(), "report")
        raise FetalIQAError(f"{named} exists and is not an earlier {name}; it is left as it is. Name "
                            "another output file, or remove that one first.")


def _select_sweeps(store: ReviewStore, sweep_ids: Sequence[int] | None) -> list[SweepRecord]:
    if sweep_ids is None:
        return store.sweeps()
    return [store.sweep(i) for i in sweep_ids]


# ----------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 10pt; color: #222;
       max-width: 660px; }
h1 { font-size: 17pt; margin-bottom: 2px; }
h2 { font-size: 13pt; margin-top: 18px; margin-bottom: 2px; color: #1a3d6d; }
h3 { font-size: 11pt; margin-top: 12px; margin-bottom: 4px; }
table.grid { border-collapse: collapse; }
table.grid th { background-color: #e8edf3; text-align: left; }
table.grid td, table.grid th { border: 1px solid #b8c0cc; font-size: 8pt; }
.meta { color: #555; font-size: 9pt; }
.warn { color: #a40000; }
.small { font-size: 8pt; color: #555; }
"""

_LABEL_HEX = {"optimal": "#2a9d3c", "suboptimal": "#e69500", "not_usable": "#d23232"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]],
          widths_pct: Sequence[int] | None = None) -> str:
    """A bordered full-width table; cells are HTML already; column widths in percent.

    The header row is a ``<thead>``, which Qt repeats at the top of every PDF page."""
    head = "".join(
        (f'<th width="{w}%">{h}</th>' if w else f"<th>{h}</th>")
        for h, w in zip(headers, widths_pct or [0] * len(headers), strict=True))
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<table class="grid" border="1" cellspacing="0" cellpadding="3" '
            f'width="100%"><thead><tr>{head}</tr></thead>{body}</table>')


def _label_html(label: str) -> str:
    return f'<span style="color:{_LABEL_HEX[label]}"><b>{_e(LABEL_TITLES[label])}</b></span>'


#: Characters of a verdict's note a PDF report shows (a 100,000-character note made 77 pages);
#: the HTML and the CSV hold it whole.
PDF_NOTE_CHARS = 1000


def _note_text(note: str, limit: int | None) -> str:
    if limit is None or len(note) <= limit:
        return note
    return f"{note[:limit]}…({len(note) - limit} more characters in the HTML/CSV report)"


def _sweep_section(store: ReviewStore, sweep: SweepRecord, number: int,
                   loader: SweepLoader | None, note_limit: int | None = None,
                   cuts: dict[int, str] | None = None) -> str:
    """The sweep's part of the HTML report. ``cuts``: given, it receives ``sweep.id ->``
    :func:`~fetaliqa_core.analysis.ac.extrapolated_note` of the chosen frame's outline (empty for
    a whole one) where that outline was measured here, for the overview table to say it too."""
    run = store.latest_run(sweep.id)
    verdicts = store.verdicts(sweep.id)
    latest_by_frame: dict[int, Verdict] = {}
    for v in sorted(verdicts, key=lambda v: v.time):
        latest_by_frame[v.frame] = v
    parts: list[str] = []
    brk = ' style="page-break-before: always"' if number > 1 else ""
    parts.append(f"<h2{brk}>{number}. {_e(clean_name(sweep.name))}</h2>")
    spacing = (f"{spacing_text(sweep.spacing_mm, '.3g')} per pixel"
               if _lengths_shown(sweep) else "pixel spacing unknown or implausible: no lengths")
    parts.append(
        f'<p class="meta">{_e(clean_name(sweep.path) or "path unknown")}<br>'
        f"{sweep.n_frames} frames in {len(sweep.sweep_ranges)} sub-sweep(s), {spacing}; "
        f"content hash {_e(sweep.content_hash[:16])}</p>")
    if run is None:
        parts.append("<p><i>No model results are stored for this sweep.</i></p>")
    else:
        parts.append(
            f'<p class="meta">Models: {_e(_bundle_text(run.bundles))}<br>'
            f"Run of {_e(_fmt_time(run.created))}; {_e(_threshold_text(run))}</p>")
        notice = run_notice(run)
        if notice:
            parts.append(f'<p class="warn"><b>{_e(notice)}</b></p>')
        n_scored = int(run.scored.sum())
        if n_scored < sweep.n_frames:
            parts.append(f'<p class="warn">The run was stopped part-way: {n_scored} of {sweep.n_frames} '
                         "frames scored. The others are marked not scored, and verdicts on them are "
                         "left out of the agreement with the model.</p>")
        chosen = "–" if run.chosen_frame is None else _e(_where(sweep, run.chosen_frame))
        # Only a number to act on is stored with a run; a doubtful reading is on the chosen frame's tile.
        answer = ("–" if run.chosen_frame is None else "– (none to act on: doubtful or not measurable; the chosen "
                   "frame's picture, when the sweep is shown, gives its reading and why)") if run.ac_mm is None else (
            f"{run.ac_mm:.1f} mm")

        def answer_grid(cut: str = "") -> str:
            # ``cut``: the chosen frame's outline cut by the field of view, as its picture measures it
            # below (the store keeps no word of it): said beside the number to act on, as the window says it
            # (``answer``, not ``ac``: the pictures' loop below names its measurements so)
            said = f"<b>{answer}</b>" + (f" ({_e(cut)})" if cut and run.ac_mm is not None else "")
            return _grid(["Chosen frame", "AC at chosen frame", "GA (Hadlock)", "Flagged frames"],
                         [[f"<b>{chosen}</b>", said, f"<b>{_e(_ga_text(ga_weeks_of(run)))}</b>",
                           f"{int(run.flagged.sum())} of {sweep.n_frames}"]], [25, 25, 25, 25])

        answer_at = len(parts)  # (filled in again once the chosen frame's outline is measured, below)
        parts.append(answer_grid())
        curve = draw_quality_curve(
            sweep.n_frames, run.p_cls, run.p_seg, run.threshold, sweep.sweep_ranges,
            run.flagged, {f: v.label for f, v in latest_by_frame.items()}, run.chosen_frame,
            sweep.sweep_kinds)
        parts.append("<h3>Quality curve</h3>")
        parts.append(f'<p><img src="{png_data_uri(curve)}" width="{COLUMN_PX}" '
                     f'height="{COLUMN_PX * CURVE_SIZE[1] // CURVE_SIZE[0]}" '
                     f'alt="quality curve"></p>')

    # Agreement.
    parts.append("<h3>Reviewer and model</h3>")
    if not verdicts:
        parts.append("<p><i>No verdicts yet.</i></p>")
    elif run is None:
        parts.append("<p><i>No model results to compare with.</i></p>")
    elif not any(run.scored[v.frame] for v in verdicts):
        parts.append("<p><i>No verdict is on a frame the model scored.</i></p>")
    else:
        rows = []
        for a in agreement(verdicts, run):
            kappa = "n/a" if math.isnan(a.kappa) else f"{a.kappa:.2f}"
            rows.append([_e(clean_name(a.reviewer)), str(a.n), f"{a.accuracy * 100:.0f} %", kappa,
                         str(a.both_usable), str(a.reviewer_only), str(a.model_only),
                         str(a.neither)])
        parts.append(_grid(["Reviewer", "Frames", "Agreement", "Cohen's κ", "Both usable",
                            "Reviewer only", "Model only", "Neither"], rows,
                           [18, 9, 13, 11, 12, 13, 12, 12]))
        parts.append('<p class="small">Usable = labelled optimal or suboptimal by the '
                     "reviewer, flagged by the model. κ is n/a when one side gave a single "
                     "answer throughout.</p>")

    # Thumbnails.
    if run is not None and (run.flagged.any() or run.chosen_frame is not None):
        thumbs = _thumbnail_frames(run)
        frames, loader_masks, why_not, calibrations = _load_frames(loader, sweep)
        n_flagged = int(run.flagged.sum())
        parts.append("<h3>Flagged frames</h3>")
        if frames is None:
            reason = f" ({_e(clean_name(why_not))})" if why_not else ""
            parts.append(f"<p><i>Frames not shown: the sweep file was not loaded or is not the one "
                         f"reviewed{reason}.</i></p>")
        else:
            n_shown = sum(1 for f in thumbs if run.flagged[f])
            shown = (f"{n_shown} of {n_flagged} flagged frames (highest scores)"
                     if n_shown < n_flagged else f"{n_flagged} flagged frame(s)")
            if run.chosen_frame is not None and not run.flagged[run.chosen_frame]:
                shown += " and the chosen frame"
            parts.append(f'<p class="small">{shown}; overlay: green optimal, amber '
                         "suboptimal plane as segmented by the model.</p>")
            cells = []
            h, w = frames.shape[1:]
            # (a sweep whose depth was shortened mid-sweep: the union of its fans measured an outline
            # the short fan cut as whole, a plain AC 3.8 % short, where the window and score measure it cut)
            view = SimpleNamespace(height=h, width=w, n_frames=frames.shape[0], frames=frames)
            for f in thumbs:
                mask = _run_frame_mask(store, run, f, h, w, loader_masks)
                ac, fov = _thumbnail_ac(mask, frames, sweep, view, f)
                if f == run.chosen_frame and ac is not None and _lengths_shown(sweep):
                    parts[answer_at] = answer_grid(extrapolated_note(ac, fov))
                    if cuts is not None:
                        cuts[sweep.id] = extrapolated_note(ac, fov)
                # an outline in an image region of another pixel size than the one the database
                # keeps (a picture-in-picture): measured at that region's, or given no mm
                outline_mm, outline_problem = _outline_spacing(calibrations, sweep, mask)
                thumb = overlay_thumbnail(frames[f], mask,
                                          ellipse=None if ac is None else ellipse_polygon(ac))
                disp_w = THUMB_WIDTH // 2
                disp_h = int(round(thumb.shape[0] / 2))
                caption = f"<b>{_e(_where(sweep, f))}</b>"
                if f == run.chosen_frame:
                    caption += ' <span style="color:#aa28aa">chosen</span>'
                caption += f"<br>{_scores(run, f)}"
                if ac is not None and _lengths_shown(sweep) and outline_problem:
                    caption += f"<br>{_e('AC not shown: ' + outline_problem)}"
                elif ac is not None and _lengths_shown(sweep):
                    doubt = _thumbnail_doubt(run, f)
                    caption += "<br>" + _e(_thumbnail_ac_text(mask, ac, sweep, fov, frames[f], doubt, is_demo_run(run),
                                                              outline_mm, is_student_alone_run(run)))
                if f in latest_by_frame:
                    caption += "<br>" + _label_html(latest_by_frame[f].label)
                cells.append(f'<td width="{disp_w + 6}" valign="top" align="center">'
                             f'<img src="{png_data_uri(thumb)}" width="{disp_w}" '
                             f'height="{disp_h}"><br><span class="small">{caption}</span></td>')
            rows_html = []
            for i in range(0, len(cells), THUMBS_PER_ROW):
                row = cells[i:i + THUMBS_PER_ROW]
                row += ["<td></td>"] * (THUMBS_PER_ROW - len(row))
                rows_html.append("<tr>" + "".join(row) + "</tr>")
            parts.append('<table border="0" cellspacing="2" cellpadding="2">'
                         + "".join(rows_html) + "</table>")

    # Verdicts.
    if verdicts:
        parts.append("<h3>Verdicts</h3>")
        rows = []
        for v in verdicts:
            model = "–"
            if run is not None and not run.scored[v.frame]:
                model = "not scored"
            elif run is not None:
                model = ("flagged" if run.flagged[v.frame] else "not flagged") + (
                    f" ({_scores(run, v.frame)})")
            agrees = {True: "yes", False: "<b>no</b>", None: "–"}[_agrees(v, run)]
            rows.append([_e(_where(sweep, v.frame)), _e(clean_name(v.reviewer)), _label_html(v.label),
                         model, agrees, _e(_note_text(v.note, note_limit)),
                         _e(clean_name(_fmt_time(v.time, utc_suffix=False)))])
        parts.append(_grid(["Frame", "Reviewer", "Verdict", "Model (cls / seg)", "Agrees",
                            "Note", "Time (UTC)"], rows, [13, 11, 12, 20, 8, 19, 17]))
    return "\n".join(parts)


def render_report_html(store: ReviewStore, sweep_ids: Sequence[int] | None = None,
                       sweep_loader: SweepLoader | None = None,
                       title: str = REPORT_TITLE, note_limit: int | None = None) -> str:
    """The report as one self-contained HTML page (see the module docstring); ``note_limit``:
    at most that many characters of each note (the page a PDF is laid out from)."""
    sweeps = _select_sweeps(store, sweep_ids)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {now} by FetalIQA {__version__} from '
        f"{_e(store.path)}</p>",
    ]
    if not sweeps:
        parts.append("<p><i>The review database holds no sweeps yet.</i></p>")
    else:
        # the sections first: measuring each chosen frame's outline (on its sweep's frames) tells
        # whether its ellipse was extrapolated, which the overview says beside the AC as the
        # section does (the overview gave the number plain where its picture said it)
        cuts: dict[int, str] = {}
        sections = [_sweep_section(store, s, i, sweep_loader, note_limit, cuts) for i, s in enumerate(sweeps, 1)]
        rows = []
        for i, s in enumerate(sweeps, 1):
            run = store.latest_run(s.id)
            vs = store.verdicts(s.id)
            ac = "–" if run is None or run.ac_mm is None else f"{run.ac_mm:.1f}" + (
                f" ({CUT_WORDS})" if cuts.get(s.id) else "")
            rows.append([str(i), _e(clean_name(s.name)), str(s.n_frames),
                         "–" if run is None else str(int(run.flagged.sum())),
                         str(len(vs)), _e(", ".join(sorted({clean_name(v.reviewer) for v in vs})) or "–"),
                         _e(ac), "–" if run is None else _e(_ga_text(ga_weeks_of(run)).split(" (")[0])])
        parts.append(_grid(["#", "Sweep", "Frames", "Flagged", "Verdicts", "Reviewers",
                            "AC (mm)", "GA"], rows, [4, 33, 9, 9, 9, 15, 10, 11]))
        parts.extend(sections)
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- CSV


REPORT_CSV_COLUMNS = [
    "content_hash", "path", "frame", "sub_sweep", "frame_in_sub_sweep", "p_cls", "p_seg",
    "seg_area_px", "flagged", "chosen", "ac_mm", "ga_weeks", "reviewer", "label", "label_code",
    "agrees_with_model", "note", "time", "threshold", "model_threshold", "notice", "ac_status",
    "ac_extrapolated"]
#: flagged and agrees_with_model are empty on a frame the run never scored (stopped part-way).
#: ac_status on the chosen frame's rows: "ok" (ac_mm is a number to act on) or "not to act on"
#: (doubtful, not measurable, or the pixel size unknown: the HTML report's picture of the frame
#: says which); empty on the other rows. ac_extrapolated beside an ac_mm to act on: 1 where the
#: field of view cut the chosen frame's outline, its ellipse extrapolated past the cut (the HTML
#: report's "ellipse extrapolated"), 0 for a whole outline; empty without such an AC, or where the
#: sweep's frames could not be read to tell (the database keeps no word of it).
AC_NOT_TO_ACT_ON = "not to act on"
#: Said beside an AC whose ellipse was extrapolated past the field of view, where there is no room
#: for the whole of :func:`~fetaliqa_core.analysis.ac.extrapolated_note` (the window's words).
CUT_WORDS = "ellipse extrapolated"


def _chosen_cut(store: ReviewStore, sweep: SweepRecord, run: ModelRun, loader: SweepLoader | None) -> str | None:
    """:func:`~fetaliqa_core.analysis.ac.extrapolated_note` of the chosen frame's outline, measured
    as the HTML report's picture of it is (in the frame's field of view, on the sweep's frames):
    empty for a whole outline; None where the run has no AC to act on or the frames cannot be read."""
    f = run.chosen_frame
    if f is None or f < 0 or run.ac_mm is None or not _lengths_shown(sweep) or loader is None:
        return None
    frames, loader_masks, _why, _regions = _load_frames(loader, sweep)
    if frames is None:
        return None
    h, w = frames.shape[1:]
    mask = _run_frame_mask(store, run, f, h, w, loader_masks)
    view = SimpleNamespace(height=h, width=w, n_frames=frames.shape[0], frames=frames)
    ac, fov = _thumbnail_ac(mask, frames, sweep, view, f)
    return None if ac is None else extrapolated_note(ac, fov)


def report_csv_text(store: ReviewStore, sweep_ids: Sequence[int] | None = None,
                    sweep_loader: SweepLoader | None = None) -> str:
    """Report rows: every flagged, chosen or reviewed frame; one row per reviewer's latest
    verdict (a row with an empty reviewer for frames nobody reviewed). AC/GA on chosen rows. A
    sweep with no such frame has one row with an empty frame (the HTML report lists it too).
    ``sweep_loader`` (as for the HTML report): reads the sweeps whose chosen frame has an AC to act
    on, to say whether its ellipse was extrapolated (``ac_extrapolated``); without it, left empty."""
    buf = io.StringIO()
    writer = csv_writer(buf, lineterminator="\n")  # no cell runs as a spreadsheet formula
    writer.writerow(REPORT_CSV_COLUMNS)
    for sweep in _select_sweeps(store, sweep_ids):
        run = store.latest_run(sweep.id)
        cut = None if run is None else _chosen_cut(store, sweep, run, sweep_loader)
        by_frame: dict[int, list[Verdict]] = {}
        for v in store.verdicts(sweep.id):
            by_frame.setdefault(v.frame, []).append(v)
        frames = set(by_frame)
        if run is not None:
            frames |= set(np.flatnonzero(run.flagged).tolist())
            if run.chosen_frame is not None and run.chosen_frame >= 0:
                frames.add(int(run.chosen_frame))
        if not frames:  # a sweep in the review with nothing flagged, chosen or judged: one row, no frame
            t = None if run is None else run.thresholds
            thr = ["", "", ""] if t is None else [f"{t.value:.4f}", f"{t.model:.4f}",
                                                  run_notice(run)]
            writer.writerow([sweep.content_hash, clean_name(sweep.path)] + [""] * 16 + thr + ["", ""])
        for f in sorted(frames):
            i = sweep.sweep_index(f)
            base = [sweep.content_hash, clean_name(sweep.path), f, i + 1,
                    f - sweep.sweep_ranges[i][0] if sweep.sweep_ranges else f]
            status = extrapolated = ""
            if run is None:
                base += ["", "", "", "", "", "", ""]
                thr = ["", "", ""]
            else:
                t = run.thresholds
                # The demonstration model's numbers say so on every row that carries them.
                thr = [f"{t.value:.4f}", f"{t.model:.4f}", run_notice(run)]
                chosen = run.chosen_frame == f
                base += [_csv_num(run.p_cls[f]), _csv_num(run.p_seg[f]),
                         int(run.seg_area_px[f]),
                         int(bool(run.flagged[f])) if run.scored[f] else "",  # not scored: no call
                         int(chosen),
                         _csv_num(run.ac_mm) if chosen else "",
                         _csv_num(_weeks_2(ga_weeks_of(run))) if chosen else ""]
                if chosen:  # an empty ac_mm alone did not tell a doubtful AC from none
                    status = "ok" if _csv_num(run.ac_mm) else AC_NOT_TO_ACT_ON
                    extrapolated = "" if cut is None or status != "ok" else str(int(bool(cut)))
            for v in by_frame.get(f) or [None]:
                if v is None:
                    writer.writerow(base + ["", "", "", "", "", ""] + thr + [status, extrapolated])
                else:
                    agrees = _agrees(v, run)
                    agrees = "" if agrees is None else int(agrees)
                    writer.writerow(base + [clean_name(v.reviewer), v.label, v.code, agrees, v.note,
                                            clean_name(v.time)] + thr + [status, extrapolated])
    return buf.getvalue()


def _weeks_2(weeks: float | None) -> float | None:
    """Weeks of gestation to two decimals, as every other output writes them."""
    return None if weeks is None else round(float(weeks), 2)


def _csv_num(x: Any) -> str:
    if x is None:
        return ""
    x = float(x)
    return "" if not math.isfinite(x) else f"{x:.6g}"


def case_id(sweep: SweepRecord) -> str:
    """The file name without extension (an ACOUSLIC-layout dataset's case id: a UUID, or any
    name such as ``case001``), else the content hash."""
    if sweep.path:
        name = clean_name(Path(sweep.path).name)
        stem = name[:-len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem
        if stem:
            return stem
    return sweep.content_hash


LABELS_CSV_COLUMNS = ["uuid_or_hash", "path", "frame", "label", "reviewer", "time", "content_hash"]


def labels_csv_text(store: ReviewStore, sweep_ids: Sequence[int] | None = None) -> str:
    """Reviewer labels for training (format in the module docstring)."""
    buf = io.StringIO()
    writer = csv_writer(buf, lineterminator="\n")  # no cell runs as a spreadsheet formula
    writer.writerow(LABELS_CSV_COLUMNS)
    # Which sweep's pixels a file of that name holds is known only where the file is read: the
    # content_hash column tells, and training compares it with the dataset's file (the newest
    # sweep under a name was taken for the file's content, wrong once the file was restored).
    for sweep in _select_sweeps(store, sweep_ids):
        ident = case_id(sweep)
        for v in store.verdicts(sweep.id):
            writer.writerow([ident, clean_name(sweep.path), v.frame, ACOUSLIC_CODE[v.label],
                             clean_name(v.reviewer), clean_name(v.time), sweep.content_hash])
    return buf.getvalue()


def write_labels_csv(store: ReviewStore, out_path: str | Path,
                     sweep_ids: Sequence[int] | None = None, option: str | None = "--out") -> int:
    """Write the labels CSV; return the number of label rows. An output that is the database,
    or an existing file that is no labels CSV, is refused (:func:`check_output`; ``option``:
    how its line names the output)."""
    check_output(out_path, store, kind="labels", option=option)
    text = labels_csv_text(store, sweep_ids)
    _write_atomic(Path(out_path), text.encode("utf-8"))
    return text.count("\n") - 1


HISTORY_CSV_COLUMNS = ["content_hash", "path", "frame", "reviewer", "label", "label_code", "note", "time",
                       "current", "withdrawn"]


def history_csv_text(store: ReviewStore, sweep_ids: Sequence[int] | None = None) -> str:
    """Every verdict ever entered, and every withdrawal, oldest first per sweep, frame and
    reviewer; ``current`` is 1 on the verdict that stands (the reviewer's latest on that frame),
    0 on those replaced or withdrawn since; ``withdrawn`` is 1 on a withdrawal's row (its label:
    the one withdrawn; a frame whose latest row it is has no current row). The report and the
    labels give the standing verdicts only; this is how a trainer sees who changed their mind,
    or took a verdict back, and when."""
    buf = io.StringIO()
    writer = csv_writer(buf, lineterminator="\n")  # no cell runs as a spreadsheet formula
    writer.writerow(HISTORY_CSV_COLUMNS)
    for sweep in _select_sweeps(store, sweep_ids):
        # ``current`` comes from the rows themselves (ordered by frame, reviewer, then id: the last
        # row of each frame and reviewer is the latest), not from a second query: a verdict saved
        # between the two (the window open on the database) was marked replaced while the one it
        # replaced was marked standing, and a withdrawal saved between them left a withdrawn verdict
        # marked standing.
        rows = store.verdicts(sweep.id, history=True)
        for k, v in enumerate(rows):
            later = rows[k + 1] if k + 1 < len(rows) else None
            latest = later is None or (later.frame, later.reviewer) != (v.frame, v.reviewer)
            writer.writerow([sweep.content_hash, clean_name(sweep.path), v.frame, clean_name(v.reviewer), v.label,
                             v.code, v.note, clean_name(v.time), int(latest and not v.withdrawn), int(v.withdrawn)])
    return buf.getvalue()


def write_history_csv(store: ReviewStore, out_path: str | Path,
                      sweep_ids: Sequence[int] | None = None, option: str | None = "--out") -> int:
    """Write the verdict history CSV; return the number of rows (withdrawals included). Outputs
    are checked as for the labels (:func:`check_output`)."""
    check_output(out_path, store, kind="history", option=option)
    text = history_csv_text(store, sweep_ids)
    _write_atomic(Path(out_path), text.encode("utf-8"))
    return text.count("\n") - 1


# ----------------------------------------------------------------------------- entry point


_NO_PDF_WRITER = ("PDF reports need the app's PDF writer (PySide6); write .html or .csv instead, "
                  "or install FetalIQA with its app.")


def render_report(store: ReviewStore, out_path: str | Path, sweep_ids: Sequence[int] | None = None,
                  sweep_loader: SweepLoader | None = None) -> str:
    """The report's text for ``out_path``'s format: CSV, or the HTML page (.html and .pdf).

    The slow part of a report (each sweep read again for its thumbnails); writes nothing, so a
    viewer can run it off its window's thread and drop it when the user cancels.
    """
    ext = Path(out_path).suffix.lower()
    if ext not in REPORT_EXTENSIONS:
        raise FetalIQAError(f"Cannot tell the report format from {Path(out_path).name!r}: name the "
                            "output file .html, .pdf or .csv.")
    if ext == ".csv":
        return report_csv_text(store, sweep_ids, sweep_loader)
    return render_report_html(store, sweep_ids, sweep_loader,
                              note_limit=PDF_NOTE_CHARS if ext == ".pdf" else None)


def save_report(text: str, out_path: str | Path, pdf_writer: PdfWriter | None = None) -> Path:
    """Write what :func:`render_report` made for ``out_path`` (atomically; a PDF through
    ``pdf_writer(html, out_path)``, which the viewer registers: ``fetaliqa.report_writers``)."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".pdf":
        _write_atomic(out_path, text.encode("utf-8"))
    elif pdf_writer is None:
        raise FetalIQAError(_NO_PDF_WRITER)
    else:
        pdf_writer(text, out_path)
    return out_path


def build_report(store: ReviewStore, out_path: str | Path, sweep_ids: Sequence[int] | None = None,
                 sweep_loader: SweepLoader | None = None,
                 pdf_writer: PdfWriter | None = None) -> Path:
    """Write the report; the format follows the extension (.html, .csv, .pdf).

    sweep_loader(path) -> frames (N, H, W) uint8 (or (frames, masks)) enables thumbnails;
    without it, or when a file cannot be read, the report says so and goes on.
    pdf_writer(html, out_path) renders the PDF (the viewer registers one: ``fetaliqa.report_writers``).
    An output that is the database, or an existing file that is no earlier report of that kind,
    is refused (:func:`check_output`).
    """
    if Path(out_path).suffix.lower() == ".pdf" and pdf_writer is None:  # said before any sweep is read
        raise FetalIQAError(_NO_PDF_WRITER)
    check_output(out_path, store)
    return save_report(render_report(store, out_path, sweep_ids, sweep_loader), out_path, pdf_writer)
