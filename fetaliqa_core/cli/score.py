"""``fetaliqa score``: score a sweep (or a folder of sweeps) and write the results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fetaliqa_core.cli._args import shown, spacing_mm
from fetaliqa_core.errors import FetalIQAError, UsageError, first_names
from fetaliqa_core.files import claim_output_folder
from fetaliqa_core.io._common import SWEEP_FILE_SUFFIXES
from fetaliqa_core.models.options import add_model_options, model_choice_from_args

HELP = "Score every frame of a sweep and write frames.csv and summary.json."

SWEEP_SUFFIXES = (*SWEEP_FILE_SUFFIXES, ".dcm")
#: Pixel data files beside a header (.mhd, .nhdr): part of that sweep, never left out with a word.
DATA_SUFFIXES = (".raw", ".zraw", ".raw.gz", ".dat", ".img")


def _kind(kind: str) -> str:
    """`` (transverse)``, or nothing for a sweep whose kind the file does not say ("unknown" read
    as if the sweep itself were unknown)."""
    return "" if not kind or kind == "unknown" else f" ({kind})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep", type=Path, metavar="SWEEP",
                   help="a sweep file (.mha/.mhd/.nrrd/.nhdr/.nii[.gz]/DICOM; a multi-page TIFF or a picture "
                        "is read too, its pixel size only from an ImageJ scale), a DICOM series folder, or a "
                        "folder of sweep files and DICOM series folders")
    add_model_options(p, threshold=True, cascade=True)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default: ./fetaliqa-scores/<sweep name>, or <sweep name>-2, -3... when "
                        "that holds another sweep's results); a folder holding frames.csv or summary.json "
                        "FetalIQA did not write is refused")
    p.add_argument("--spacing", type=spacing_mm, default=None, metavar="MM|WxH",
                   help="pixel spacing in mm per pixel, for a sweep whose file records none (or a wrong one): one "
                        "number for square pixels, or width x height (0.3x0.4) for pixels that are not square; "
                        "without a known, plausible spacing no length in mm and no GA is given")
    p.add_argument("--challenge-output", action="store_true",
                   help="also write the ACOUSLIC-AI challenge's output files, in the challenge's output layout: "
                        "the results folder holds them as the algorithm's /output folder does "
                        "(fetal-abdomen-frame-number.json and images/fetal-abdomen-segmentation/"
                        "fetal-abdomen-segmentation.mha), one such folder per sweep of a FOLDER; with --archive, "
                        "OUT/challenge/<case>/output/... with predictions.json, and a case scored earlier without "
                        "them is scored again, every frame, to write them. `fetaliqa eval --predictions` reads "
                        "either")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write cached results")
    p.add_argument("--quiet", action="store_true",
                   help="no progress (a bar on a terminal, a line every 10 s into a pipe or a log); a "
                        "folder of sweeps or an archive still prints one line per sweep and its summary")
    p.add_argument("--json", action="store_true",
                   help="print the answer as one line of JSON on stdout (summary.json's record and the "
                        "results folder as \"results\"; everything else goes to stderr); one sweep only")
    from fetaliqa_core.cli import score_archive

    score_archive.add_arguments(p)


def sweep_folder_members(path: Path) -> list[Path] | None:
    """The sweeps of a folder of sweeps: its sweep files and its subfolders that are DICOM
    series (one sweep each), sorted by name; or None if ``path`` is not such a folder (a file,
    or a DICOM series folder, which is one sweep). Everything named like a sweep file counts,
    whatever it is (a pipe, a broken link, a folder): it then fails in its own row, with the
    reason, instead of being left out without a word."""
    from fetaliqa_core.io import looks_like_dicom_series, multiframe_dicom_files

    if not path.is_dir():
        return None
    entries = sorted(path.iterdir())
    series = [p for p in entries if p.is_dir() and not p.name.startswith(".") and looks_like_dicom_series(p)]
    files = [p for p in entries if p.name.lower().endswith(SWEEP_SUFFIXES[:-1]) and p not in series
             and (p.is_file() or not p.name.startswith(".")) and not is_mac_metadata(p)]
    if looks_like_dicom_series(path):
        # DICOM files of several frames each are one sweep a file; single frames make one series
        cines = multiframe_dicom_files(path, at_least=1 if files else 2)
        if not files and not cines:
            return None
        files += cines
    return sorted(files + series) or None


def is_mac_metadata(path: Path) -> bool:
    """Whether ``path`` is a macOS AppleDouble file (``._name.mha``, a few kB of a Mac's metadata
    written beside each file copied from it to another file system): never a sweep, though named
    like one (each was a failed case, and the run exited 1)."""
    return path.name.startswith("._")


def left_out_note(path: Path, members: list[Path], ours: tuple[Path, ...] = ()) -> str:
    """One line naming the files of a folder of sweeps that are not scored (a picture, a video, a
    single DICOM frame beside sweep files...), or "" when there are none: a folder's files are
    never left out without a word. Hidden files and the pixel data files of .mhd/.nhdr headers
    do not count; macOS metadata files (:func:`is_mac_metadata`) are counted, not named.
    ``ours``: what this run writes in the folder (an archive's table and challenge folder when
    its --out is the archive itself), left out without a word."""
    try:
        listed = sorted(path.iterdir())
    except OSError:
        return ""
    entries = [p for p in listed if not p.name.startswith(".")]
    mac = sum(1 for p in listed if is_mac_metadata(p) and p not in members)
    scored = set(members) | set(ours)
    left = [p.name for p in entries if p not in scored and p.is_file()
            and not p.name.lower().endswith(DATA_SUFFIXES)]
    # folders that hold no DICOM series: their sweeps are not looked for (one folder, one level);
    # FetalIQA's own results folders are no sweeps left out
    folders = [p.name for p in entries if p not in scored and p.is_dir() and not _results_of_ours(p)]
    notes = []
    if mac:
        notes.append(f"{mac} macOS metadata file(s) (named ._*, written beside files copied from a Mac) are "
                     "not sweeps and are left out")
    if left:
        notes.append(f"{len(left)} file(s) are not sweeps and are left out: {first_names(left)} (sweeps: "
                     f"{', '.join(SWEEP_SUFFIXES[:-1])}, DICOM cines and series folders)")
    if folders:
        notes.append(f"{len(folders)} subfolder(s) hold no DICOM series and are not looked into: {first_names(folders)} "
                     "(score each as a folder of its own, or move its sweeps up)")
    return f"{path}: " + "; ".join(notes) if notes else ""


def _results_of_ours(folder: Path) -> bool:
    """Whether ``folder`` holds what FetalIQA writes (a results table, or results folders: the
    default ``fetaliqa-scores``, an archive's ``--out``)."""
    from fetaliqa_core import archive as ar
    from fetaliqa_core import export

    try:
        if any((folder / name).is_file() for name in (TABLE_FILE, ar.TABLE_FILE, export.OUTPUTS_FILE)):
            return True
        return any((child / export.OUTPUTS_FILE).is_file() for child in list(folder.iterdir())[:200] if child.is_dir())
    except OSError:
        return False


def _stem(path: Path) -> str:
    """The name of a sweep's output folder: its file name without the sweep suffix; the whole
    name where that leaves nothing or a name that is no folder of its own ('...mha' gave '..',
    and the results went into the parent of --out)."""
    name = path.name
    for suffix in sorted(SWEEP_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            return stem if stem.strip(". ") else name
    return name


def challenge_layout(args) -> bool:
    """Whether the challenge's files go into a sweep's results folder in the challenge's output
    layout (``score SWEEP`` and ``score FOLDER``), or side by side (an archive's case folders, which
    its ``challenge/`` folder is gathered from: ``args.challenge_layout`` False)."""
    return bool(getattr(args, "challenge_layout", True))


def score_one(path: Path, out: Path, models, args, position: str = "", sweep=None, extra=None) -> dict:
    """Score one sweep into ``out`` (written atomically). Returns the summary as JSON.

    ``sweep``: the sweep already loaded from ``path``; ``extra(folder, sweep, results, assessment)``
    writes more files into the output folder before it is put in place."""
    from fetaliqa_core.progress import progress_bar

    from fetaliqa_core import export
    from fetaliqa_core import io as fio
    from fetaliqa_core.analysis.assessment import Thresholds, assess
    from fetaliqa_core.engine import ScoringEngine

    export.refuse_writing_over_input(out, path, challenge=bool(args.challenge_output),
                                     cascade=getattr(models, "student", None) is not None,
                                     layout=challenge_layout(args))
    sweep = fio.load_sweep(path).in_memory() if sweep is None else sweep
    if getattr(args, "spacing", None) is not None:
        sweep = sweep.with_spacing(args.spacing, "given with --spacing")
    thresholds = Thresholds.of_models(models, args.threshold)
    if getattr(models, "student", None) is not None:
        return _score_cascade(sweep, path, out, models, args, thresholds, position, extra)
    engine = ScoringEngine(sweep, cls=models.cls, seg=models.seg, cache=not args.no_cache)
    bar = progress_bar(sweep.n_frames, f"{position}{shown(path.name)}", disable=args.quiet)
    try:
        for batch in engine.iter_batches():
            bar.n = batch.n_done
            if bar.n < bar.total:  # the last state is drawn once, by close (twice in a log file)
                bar.refresh()
    finally:
        bar.close()
    results = engine.results
    from fetaliqa_core.models.choice import provenance

    assessment = assess(sweep, results, thresholds, models.record(), provenance=provenance(models))
    hook = None if extra is None else (lambda folder: extra(folder, sweep, results, assessment))
    export.write_scores(out, sweep, results, assessment, challenge=args.challenge_output, extra=hook,
                        layout=challenge_layout(args))
    return assessment.summary.to_json()


def _say_student_note(models) -> None:
    """Says once, before scoring, that a cascade's student learnt from other models than its
    teacher (summary.json's choice_note says it too)."""
    from fetaliqa_core.models.choice import foreign_student_note

    note = foreign_student_note(getattr(models, "student", None), models.cls, models.seg)
    if note:
        print(f"fetaliqa: note: {shown(note)}", file=sys.stderr, flush=True)


def _score_cascade(sweep, path: Path, out: Path, models, args, thresholds, position: str, extra) -> dict:
    """Student on every frame, then the chosen models on its candidate runs; the assessment is
    made on the latter's results only. ``cascade.json`` lists the frames they confirmed."""
    from fetaliqa_core.progress import progress_bar

    from fetaliqa_core.analysis.assessment import assess
    from fetaliqa_core.cascade import CascadeEngine

    engine = CascadeEngine(sweep, models.student, models.cls, models.seg, cache=not args.no_cache,
                           thresholds=thresholds)
    bar = progress_bar(sweep.n_frames, f"{position}{shown(path.name)} (student)", disable=args.quiet)
    stage = "student"
    try:
        for item in engine.iter_batches():
            if item.stage != stage:  # the teacher's pass: the bar counts its frames
                stage = item.stage
                bar.n = bar.total  # the student's pass finished: drawn once before the bar starts again
                bar.refresh()
                bar.reset(total=len(engine.teacher_plan))  # before the new label, which redraws the bar
                bar.set_description(f"{position}{shown(path.name)} (teacher)")
            elif stage == "teacher" and bar.total != len(engine.teacher_plan):
                bar.total = len(engine.teacher_plan)  # the teacher follows a run past its first frames
            bar.n = item.batch.n_done
            if bar.n < bar.total:
                bar.refresh()
    finally:
        bar.close()
    teacher = engine.teacher_results
    if teacher is None:
        raise FetalIQAError(f"{path}: the cascade was stopped before the teacher ran")
    from fetaliqa_core.cascade import write_cascade_scores
    from fetaliqa_core.models.choice import provenance

    assessment = assess(sweep, teacher, thresholds, models.record(), provenance=provenance(models))
    merged = engine.merged
    hook = None if extra is None else (lambda folder: extra(folder, sweep, merged, assessment))
    write_cascade_scores(out, sweep, merged, engine.confirmed, assessment, models.student.path,
                         challenge=args.challenge_output, extra=hook, complete=engine.complete,
                         layout=challenge_layout(args),
                         teacher_planned=None if engine.teacher_plan is None else len(engine.teacher_plan))
    return assessment.summary.to_json()


def _print_summary(summary: dict, out: Path) -> None:
    from fetaliqa_core.analysis.assessment import SEG_THRESHOLD
    from fetaliqa_core.analysis.units import beside_threshold

    chosen = summary["chosen_frame"]
    print(f"{shown(summary['path'])}: {summary['frames_scored']}/{summary['n_frames']} frames scored; "
          f"chosen frame {chosen if chosen >= 0 else 'none (-1)'} (frames numbered from 0)")
    if summary.get("models"):  # what scored: a student alone, a cascade and the teacher printed alike
        print(f"  models: {shown(summary['models'])}")
    if summary.get("threshold_changed"):
        print(f"  threshold {summary['threshold']:.2f} (model: {summary['model_threshold']:.2f})")
    for note in summary.get("read_notes") or ():
        print(f"  note: {shown(note)}")
    if summary.get("spacing_problem"):
        print(f"  {shown(summary['spacing_problem'])} (--spacing MM, or WxH for pixels that are not square, sets it)")
    elif summary.get("spacing_mm"):
        from fetaliqa_core.io._common import spacing_text
        from fetaliqa_core.io.spacing import source_text

        print(f"  pixel {spacing_text(tuple(summary['spacing_mm']))} "
              f"({shown(source_text(summary.get('spacing_source') or '?'))})")
    if summary.get("precision"):
        why = summary.get("precision_reason")
        print(f"  precision {summary['precision']}{f' ({shown(why)})' if why else ''}")
    if summary.get("encoder_note"):
        print(f"  {shown(summary['encoder_note'])}")
    if summary.get("choice_note"):
        print(f"  {shown(summary['choice_note'])}")
    for s in summary["sweeps"]:
        if s["best_frame"] < 0:
            print(f"  sweep {s['sweep']}{_kind(s['kind'])}: {shown(s.get('ac_note') or 'no frame above threshold')}")
            continue
        reading = ""
        if s["ac_status"] == "ok":
            reading = f", AC {s['ac_mm']:.1f} mm" + (f", GA {s['ga']}" if s["ga"] else "")
            reading += f" ({s['ac_note']})" if s["ac_note"] else ""
        elif s["ac_status"] == "doubtful":
            reading = f", AC {s['ac_mm']:.1f} mm (doubtful: {shown(s['ac_note'])})"
        elif s["ac_status"] == "no units":
            reading = ", AC not shown (pixel spacing)"
        elif s.get("ac_note"):
            reading = f"; {shown(s['ac_note'])}"
        cuts = {"p_cls": summary.get("threshold") or SEG_THRESHOLD, "p_seg": SEG_THRESHOLD}  # (p_seg: the 1 % rule)
        scores = ", ".join(f"{name} {beside_threshold(s[name], cuts[name])}" for name in ("p_cls", "p_seg")
                           if s.get(name) is not None)
        plane = f", {s['plane']} plane (segmenter)" if s.get("plane") else ""
        print(f"  sweep {s['sweep']}{_kind(s['kind'])}: best frame {s['best_frame']} "
              f"({scores or 'score ' + format(s['score'], '.2f')}{plane}){reading}")
    if summary.get("notice"):
        print(f"  {summary['notice']}")
    print(f"  results in {shown(out)}")


def another_run(folder: Path) -> FetalIQAError:
    """Why a results folder is not written into: another run has claimed it (files.claim_output_folder)."""
    return FetalIQAError(f"{folder}: another FetalIQA run is writing its results there now; wait for it to finish, "
                         "or choose another output folder (--out).")


def check_out_folder(out: Path, option: str = "--out") -> None:
    """Refuse an output folder that cannot be one, before anything is loaded (``option``: the
    option that named it, for the message)."""
    from fetaliqa_core.files import refuse_link_to_nothing

    refuse_link_to_nothing(out)  # a link that loops, there or above: "a file of that name exists" misled
    if out.exists() and not out.is_dir():
        raise FetalIQAError(f"{option} {out} is an existing file; give a folder for the results (it is created "
                            "if needed).")
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise FetalIQAError(f"{option} {out}: {parent} is a file, not a folder; choose another output "
                                    "folder.")
            _check_writable(parent, out, option)
            break


def _check_writable(folder: Path, out: Path, option: str) -> None:
    """A folder the results cannot be written in is said before the frames are scored (it was
    found after every frame, with a temporary file's name in the message)."""
    from fetaliqa_core.paths import os_error_cause, probe_writable

    try:
        probe_writable(folder)
    except OSError as exc:
        raise FetalIQAError(f"{option} {out}: nothing can be written in {folder} ({os_error_cause(exc)}); "
                            "choose another output folder.") from None


def _failure_text(exc: BaseException) -> str:
    from fetaliqa_core.paths import os_error_message

    if isinstance(exc, FetalIQAError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error_message(exc)
    return f"unexpected error ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"


def _results_folder(out: Path, path: Path, sweep, given: bool) -> Path:
    """Where one sweep's results go: ``out``, unless it holds results files FetalIQA did not write
    (refused: they would be replaced) or, when the folder is the default one, another sweep's
    results (``score patientA/sweep.mha`` then ``score patientB/sweep.mha`` replaced A's without a
    word): then the next free ``<name>-2``, ``-3``... A folder given with --out that holds another
    sweep's results is replaced, and that is said."""
    from fetaliqa_core import export

    candidate = out
    for k in range(2, 1000):
        summary, foreign = export.earlier_results(candidate)
        if foreign:
            raise FetalIQAError(f"{candidate} holds {' and '.join(foreign)} that FetalIQA did not write; the results "
                                "would replace them. Choose another output folder (--out), or move them away.")
        other = export.other_sweep(summary, path, sweep.content_hash)
        # claimed once chosen (a folder passed over stayed claimed, and refused its own sweep's rerun)
        if (other is None or given) and claim_output_folder(candidate) is False:  # another run writes there now
            if given:
                raise another_run(candidate)
            candidate = out.with_name(f"{out.name}-{k}")
            check_out_folder(candidate)
            continue
        if other is None:
            if candidate != out:
                print(f"fetaliqa: {shown(str(out))} holds (or another run is writing) the results of another "
                      f"sweep; these go into {shown(str(candidate))}", file=sys.stderr, flush=True)
            return candidate
        if given:
            print(f"fetaliqa: {shown(str(candidate))} held the results of {shown(other)}; they are replaced by "
                  f"those of {shown(str(path))}", file=sys.stderr, flush=True)
            return candidate
        candidate = out.with_name(f"{out.name}-{k}")
        check_out_folder(candidate)
    return candidate


def run(args, report=None) -> int:
    """``report(summary, folder)``: how one sweep's answer is told (default: in lines of text)."""
    from fetaliqa_core import io as fio
    from fetaliqa_core.cli import score_archive
    from fetaliqa_core.models import choice as choice_mod

    if getattr(args, "json", False):
        return _run_json(args)
    if score_archive.wanted(args):
        return score_archive.run(args)

    choice = model_choice_from_args(args)  # a wrong command line is told first (exit 2)
    path: Path = args.sweep
    if not path.exists():
        from fetaliqa_core.paths import missing_path

        raise FetalIQAError(missing_path(path, "Check the path of the sweep to score."))
    members = sweep_folder_members(path)
    base_out = args.out or Path("fetaliqa-scores") / _stem(path)
    check_out_folder(base_out)
    if members is None:
        _model_libraries_first()
        sweep = fio.load_sweep(path).in_memory()  # a bad input is reported before seconds of model loading
        base_out = _results_folder(base_out, path, sweep, given=args.out is not None)
        models = choice_mod.load_models(choice)
        _say_student_note(models)
        try:
            summary = score_one(path, base_out, models, args, sweep=sweep)
        except KeyboardInterrupt:
            if args.no_cache:
                kept = "the frames scored so far are not kept (--no-cache)"
            elif getattr(models, "student", None) is not None:
                kept = ("the student's frames scored so far are kept in the results cache (a new run goes on "
                        "from them); the teacher's re-scoring starts again")
            else:
                kept = "the frames scored so far are kept in the results cache: scoring the sweep again goes on from them"
            from fetaliqa_core import export

            earlier = export.earlier_results(base_out)[0]
            held = ("; its files are an earlier run's" + (f" (threshold {earlier['threshold']:.2f})"
                    if isinstance(earlier.get("threshold"), (int, float)) else "")) if earlier else ""
            print(f"fetaliqa: nothing was written to {shown(base_out)}{held}; {kept}", file=sys.stderr)
            raise
        (report or _print_summary)(summary, base_out)
        return 0
    if claim_output_folder(base_out) is False:  # (two runs of one folder: one's sweeps replaced the other's)
        raise another_run(base_out)
    from fetaliqa_core.export import refuse_foreign_table

    refuse_foreign_table(base_out / TABLE_FILE, TABLE_COLUMNS)
    note = left_out_note(path, members)
    if note:
        print(f"fetaliqa: {shown(note)}", file=sys.stderr)
    failures = 0
    rows: list[list] = []
    from fetaliqa_core.archive import case_names

    # one folder per member, also for case.mha beside case.nrrd (one overwrote the other)
    names = case_names(members, _stem, reserved=(TABLE_FILE,), suffix="~sweep")  # the table's own name
    for member, name in zip(members, names):
        # `score FOLDER --out FOLDER`: a DICOM series folder's results would go into the series itself
        if member.is_dir() and (base_out / name).resolve() == member.resolve():
            raise FetalIQAError(f"{base_out}: the results of the DICOM series {member.name} would go into the "
                                "series folder itself. Choose an output folder outside the one scored (--out).")
    box: dict = {"models": None}  # loaded once, when the first readable member needs them
    done = 0
    try:
        for k, (member, name) in enumerate(zip(members, names), 1):
            failures += _score_member(k, member, base_out / name, len(members), box, choice, args, rows)
            done = k
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the sweeps scored so far are kept; the table says so now, as an archive's does
        from fetaliqa_core.export import STATUS_MISSING

        rest = [blank_row(m.name, STATUS_MISSING, "interrupted before it was scored; run the same command again")
                for m in members[done:]]
        try:
            table = write_table(base_out / TABLE_FILE, rows + rest)
            print(f"table (up to the interruption): {shown(table)}", file=sys.stderr)
        except OSError:
            pass
        raise
    table = write_table(base_out / TABLE_FILE, rows)
    print_table(rows)
    print(f"scored {len(members) - failures} of {len(members)} sweeps into {shown(base_out)}"
          + (f"; {failures} failed (see above)" if failures else "") + f"; one row per sweep in {table}")
    return 1 if failures else 0


def _run_json(args) -> int:
    """``score --json``: the one sweep's answer as one line of JSON on stdout, everything the run
    says on the way on stderr (a script reads stdout whole)."""
    import contextlib
    import json

    from fetaliqa_core.cli import score_archive

    if score_archive.wanted(args) or sweep_folder_members(args.sweep) is not None:
        raise UsageError(f"{args.sweep}: --json prints one sweep's answer; a folder's answers are in its table "
                         f"({TABLE_FILE}, or cases.csv with --archive): leave out --json, or give one sweep.")
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        args.json = False
        lines: dict = {}
        rc = run(args, report=lambda summary, out: lines.update(summary=summary, out=out))
    if "summary" in lines:
        record = dict(lines["summary"]) | {"results": str(Path(lines["out"]).resolve())}
        print(json.dumps(record), file=stdout)
    return rc


def _model_libraries_first() -> None:
    """Under a limit on the process's address space (ulimit -v), the model libraries are loaded
    before a sweep is read, not after it with the models: they take about 3 GB of address space,
    which the memory check before reading a sweep cannot otherwise count (it leaves 256 MB of what
    is left of the limit), so a sweep it let in was read for minutes (7.9 GB over 137 s) only for
    the models to fail to load. Loaded first, they are counted in what the check finds left, and
    a limit too small for them is said at once, in one line (run_guarded). Without such a limit
    nothing changes: the check judges the machine's free memory, and a bad sweep is still told
    before the seconds the libraries take to load."""
    from fetaliqa_core.validate import address_space_left, address_space_limit

    if address_space_limit() is None:  # (POSIX only: elsewhere there is no such limit to count)
        return
    if "torch" not in sys.modules:
        from fetaliqa_core.cli import MODEL_LIBRARIES_GB, libraries_memory_line

        left = address_space_left()
        if left is not None and left < MODEL_LIBRARIES_GB << 30:
            # (with too little left, PyTorch's loader may abort the process, "std::bad_alloc", as
            # it maps its libraries, past any handler: said before trying)
            raise FetalIQAError(libraries_memory_line(None).removeprefix("fetaliqa: "))
    _import_model_libraries()


def _import_model_libraries() -> None:
    import torch  # noqa: F401 - loaded for its address space to be counted (see _model_libraries_first)


def _score_member(k: int, member: Path, out: Path, n_members: int, box: dict, choice, args, rows: list) -> int:
    """Score one member of a folder into ``out``, its rows appended to ``rows``; 1 when it failed
    (reported in its row; the others are scored). ``box["models"]``: loaded once, when the first
    readable member needs them."""
    from fetaliqa_core import io as fio
    from fetaliqa_core.models import choice as choice_mod

    if box["models"] is None:
        _model_libraries_first()
    try:
        sweep = fio.load_sweep(member).in_memory()
    except Exception as exc:  # noqa: BLE001 - one bad member is reported in its row
        print(f"fetaliqa: {shown(_failure_text(exc))}", file=sys.stderr)
        rows.append(failed_row(member.name, _failure_text(exc)))
        return 1
    if box["models"] is None:
        box["models"] = choice_mod.load_models(choice)
        _say_student_note(box["models"])
    try:
        summary = score_one(member, out, box["models"], args, position=f"[{k}/{n_members}] ", sweep=sweep)
        _print_summary(summary, out)
        rows += table_rows(member.name, summary)
    except Exception as exc:  # noqa: BLE001 - as above (KeyboardInterrupt still stops the run)
        print(f"fetaliqa: {shown(member.name)}: {shown(_failure_text(exc))}", file=sys.stderr)
        rows.append(failed_row(member.name, _failure_text(exc)))
        return 1
    finally:
        del sweep
    return 0


TABLE_FILE = "summary.csv"
TABLE_COLUMNS = ("file", "sweep", "kind", "frames_scored", "n_frames", "best_frame", "p_cls", "p_seg", "ac_mm",
                 "ac_status", "ga", "ga_weeks", "chosen_frame", "choice_basis", "status", "error", "notice",
                 "models",  # what scored (summary.json's models): a student's answer and a teacher's looked alike
                 # 1: the AC's outline was cut by the field of view, its ellipse extrapolated past the cut
                 # (summary.json's ac_extrapolated; 0 for a whole outline, empty without an AC shown)
                 "ac_extrapolated")


def table_rows(name: str, summary: dict) -> list[list]:
    """The folder table's rows for one scored file: one per sweep (its best frame, AC and GA),
    each carrying the file's chosen frame (-1: none passes) and its status (export.STATUSES)."""
    from fetaliqa_core.export import scored_status

    rows = []
    status = scored_status(summary.get("complete", True))
    for s in summary["sweeps"]:
        best = s["best_frame"]
        # the models' own scores at the best frame (the frame choice's composite ranks frames by
        # another rule where the models disagree, so it read as a confidence it is not)
        probabilities = ["" if s.get(k) is None or best < 0 else f"{s[k]:.4f}" for k in ("p_cls", "p_seg")]
        rows.append([name, s["sweep"], s["kind"], summary["frames_scored"], summary["n_frames"], best,
                     *probabilities,
                     "" if s["ac_mm"] is None else f"{s['ac_mm']:.1f}",
                     s.get("ac_status", ""), s.get("ga", ""),
                     "" if s["ga_weeks"] is None else f"{s['ga_weeks']:.2f}",
                     summary["chosen_frame"], summary.get("choice_basis", ""), status, "",
                     summary.get("notice", ""),  # a demonstration or test model's numbers say so on each row
                     summary.get("models", ""),
                     {True: "1", False: "0"}.get(s.get("ac_extrapolated"), "")])
    return rows


def blank_row(name: str, status: str, error: str) -> list:
    """The folder table's row for a file without an answer: its name, status and why."""
    row = dict.fromkeys(TABLE_COLUMNS, "") | {"file": name, "status": status, "error": error}
    return [row[c] for c in TABLE_COLUMNS]


def failed_row(name: str, error: str) -> list:
    """The folder table's row for a file that could not be scored."""
    from fetaliqa_core.export import STATUS_FAILED

    return blank_row(name, STATUS_FAILED, error)


def _cell(value) -> str:
    from fetaliqa_core.files import spreadsheet_safe

    return spreadsheet_safe(value)  # a spreadsheet must not read a file name or a message as a formula


def write_table(path: Path, rows: list[list]) -> Path:
    import csv
    import io

    from fetaliqa_core.files import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_COLUMNS)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buf.getvalue())


def print_table(rows: list[list]) -> None:
    """The same table on the terminal: file, sweep, best frame, AC, GA, chosen frame (or the
    status of a file that was not scored)."""
    head = ("file", "sweep", "best", "AC mm", "GA", "chosen")
    body = []
    for row in rows:
        r = dict(zip(TABLE_COLUMNS, row))
        scored = r["sweep"] != ""
        ac = str(r["ac_mm"])
        if ac and r["ac_status"] not in ("", "ok"):
            ac += f" ({r['ac_status']})"  # as each sweep's own lines say: not a number to act on
        elif not ac and r["ac_status"] == "no units":
            ac = "(no units)"  # measured, but the pixel size is unknown
        body.append((shown(r["file"]), f"{r['sweep']} {r['kind']}".strip(), str(r["best_frame"]), ac,
                     str(r["ga"]), str(r["chosen_frame"]) if scored else str(r["status"])))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    for line in (head, *body):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
