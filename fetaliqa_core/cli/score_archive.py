"""``fetaliqa score ARCHIVE --archive`` and ``torchrun ... fetaliqa score ARCHIVE``: a folder of
sweeps scored into one result folder per case, resumable, sharded over the processes torchrun
starts, with one combined table. The mechanics live in :mod:`fetaliqa_core.archive`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from fetaliqa_core import archive as ar
from fetaliqa_core.cli._args import positive_seconds, prefetch_count, shown
from fetaliqa_core.errors import FetalIQAError, first_names
from fetaliqa_core.models.options import model_choice_from_args

#: Failures of one kind (the same message but for the file's name) listed on the terminal; the
#: rest are counted in one line at the end (each has its row in the table).
MAX_FAILURE_LINES = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("archives (a folder of sweeps; always on under torchrun)")
    g.add_argument("--archive", action="store_true",
                   help="score the folder as an archive: one result folder per case in OUT/cases/, "
                        "one combined table OUT/cases.csv, and a rerun skips the cases already "
                        "scored with the same models")
    g.add_argument("--prefetch", type=prefetch_count, default=2, metavar="N",
                   help="sweeps read and decoded ahead of the model by a reader thread (default 2; "
                        "0 reads each sweep only when its turn comes)")
    g.add_argument("--shard", type=shard_part, metavar="K/N",
                   help="score part K of N of the archive (the cases whose name hashes to K: a file added "
                        "or removed between the parts' starts moves only its own case), for machines that "
                        "cannot run torchrun together; the table "
                        "has this part's cases; copy every part's cases/ into one --out and run the "
                        "command without --shard there to have the whole table (nothing is scored again)")
    g.add_argument("--rank-timeout", type=positive_seconds, default=None, metavar="S",
                   help="under torchrun: how long rank 0 waits for a process whose heartbeat has "
                        "stopped before writing the table without its cases, and how long processes "
                        "started by hand (RANK, WORLD_SIZE, MASTER_ADDR...) wait for each other to join "
                        f"(default {ar.DEFAULT_RANK_TIMEOUT:.0f})")


#: More parts than machines that could score them: --shard 1/99999999999999999999 was taken, and
#: its part held none of the archive's cases.
MAX_SHARD_PARTS = 100_000


def shard_part(text: str) -> tuple[int, int]:
    """argparse type: ``K/N``, part K (1 to N) of an archive split in N (N at most
    :data:`MAX_SHARD_PARTS`)."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a part K/N of the archive; give K from 1 to N, "
                                         "e.g. --shard 1/2 on one machine and --shard 2/2 on the other")
    if int(m.group(2)) > MAX_SHARD_PARTS:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} splits the archive in more parts than machines could "
                                         f"score; give N from 1 to {MAX_SHARD_PARTS:,}, the number of machines "
                                         "(or runs) sharing the archive")
    return int(m.group(1)), int(m.group(2))


def wanted(args) -> bool:
    return (bool(getattr(args, "archive", False)) or getattr(args, "shard", None) is not None
            or ar.launched_by_torchrun())


def _members(path: Path) -> list[Path]:
    from fetaliqa_core.cli.score import sweep_folder_members

    if not path.exists():
        from fetaliqa_core.paths import missing_path

        raise FetalIQAError(missing_path(path, "Check the path of the archive to score."))
    members = sweep_folder_members(path)
    if members is not None:
        return members
    if path.is_dir() and not any(path.iterdir()):
        raise FetalIQAError(f"{path}: the folder is empty. Give a folder that holds sweep files.")
    if path.is_dir():
        from fetaliqa_core.io import looks_like_dicom_series

        if not looks_like_dicom_series(path):
            # no sweep here, only folders of them (one a patient): not one failed case named after the folder
            subs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise FetalIQAError(f"{path}: holds no sweep files" + (f", only subfolders ({first_names(subs)})" if subs else "")
                                + ". Give the folder that holds the sweep files as the archive (one run each), "
                                "or move the sweeps into one folder.")
    return [path]  # one sweep file, or one DICOM series folder


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.expanduser().resolve() == b.expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _record_writer(item: ar.Item, base: dict):
    """The ``extra`` hook of ``score_one``: writes case.json into the case's folder before it
    is put in place, so a folder with a record is always complete."""
    def write(tmp: Path, sweep, results, assessment) -> None:
        from fetaliqa_core import analysis as an
        from fetaliqa_core.export import scored_status

        chosen = int(assessment.chosen_frame)
        # what may be shown: no mm / GA without a known, plausible pixel spacing (summary.json's)
        reading = assessment.summary.chosen_ac or {}
        m = assessment.chosen_ac() if reading.get("ac_mm") is not None else None
        ga = an.hadlock_ga(m.ac_mm) if m is not None and reading.get("ga_weeks") is not None else None
        record = dict(base, status=scored_status(results.complete), error=None, key=item.key, file_hash=item.fhash,
                      content_hash=assessment.summary.content_hash, chosen_frame=chosen,
                      chosen_sweep=(sweep.sweep_index(chosen) + 1) if chosen >= 0 else None,
                      ac_mm=round(float(m.ac_mm), 1) if m is not None else None,
                      # "ok": a number to act on; "doubtful": implausible value or mask (summary.json)
                      # "no units": an AC measured but not shown without a known, plausible spacing
                      ac_status=reading.get("status") or None,  # "none" when no AC, as summary.json says
                      ga_weeks=round(float(ga.weeks), 2) if ga is not None else None,  # as summary.json
                      # whether the AC shown lies outside Hadlock's range (then no GA): empty without an AC
                      ga_out_of_range=bool(an.hadlock_ga(m.ac_mm).out_of_range) if m is not None else None,
                      # whether the AC shown was measured on an outline the field of view cut, its ellipse
                      # extrapolated past the cut (summary.json's words in its chosen_ac note): empty without an AC
                      ac_extrapolated=bool(m.truncated) if m is not None else None,
                      n_frames=int(sweep.n_frames), frames_scored=int(results.n_done),
                      seconds=round(time.perf_counter() - base["_t0"], 3), finished_utc=ar.utc_now())
        record.pop("_t0")
        record["files"] = ar.folder_files(tmp)  # the folder is judged as one set (ar.folder_problem)
        (tmp / ar.RECORD_FILE).write_text(ar.record_json(record), encoding="utf-8")
    return write


def _output_side(exc: BaseException) -> str:
    """Why writing results failed, when it is the output's disk (full, over quota, read-only);
    "" for a failure of the case itself."""
    import errno

    from fetaliqa_core.paths import os_error_cause

    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        # an OSError, or a FetalIQAError that names the system's words for it (a writer's message)
        if (isinstance(exc, OSError) and exc.errno == code) or os.strerror(code) in str(exc):
            return os_error_cause(OSError(code, os.strerror(code)))
    return ""


def _disk_stops(out: Path, disk: str) -> FetalIQAError:
    """The run stops: its output's disk (``disk``: :func:`_output_side`'s words) takes no more."""
    return FetalIQAError(f"{out}: the results cannot be written ({disk}): free space or choose another --out, then "
                         "run the same command again; the cases scored so far are kept.")


def run(args) -> int:
    from fetaliqa_core import io as fio
    from fetaliqa_core.cli import score as score_cmd

    ranks = ar.ranks_from_env()
    started = time.perf_counter()
    if getattr(args, "rank_timeout", None) is None:
        args.rank_timeout = ar.DEFAULT_RANK_TIMEOUT
    elif not ranks.distributed:  # (it was accepted without a word, as if it bounded something here)
        print("fetaliqa: note: --rank-timeout applies to runs of several processes (torchrun, or RANK and "
              "WORLD_SIZE set by hand); this run is one process, so it has no effect.", file=sys.stderr, flush=True)
    ar.init_process_group(ranks, args.device, args.rank_timeout)
    try:
        return _run(args, ranks, started, fio, score_cmd)
    finally:
        ar.unlock_outs()
        ar.close_process_group(ranks)


def _run(args, ranks: ar.Ranks, started: float, fio, score_cmd) -> int:
    from fetaliqa_core import export
    from fetaliqa_core.analysis.assessment import Thresholds
    from fetaliqa_core.models.choice import load_models
    from fetaliqa_core.models.device import precision_preference

    path: Path = args.sweep
    out: Path = args.out or Path("fetaliqa-scores") / score_cmd._stem(path)
    part = getattr(args, "shard", None)
    if part is not None and ranks.distributed:
        raise FetalIQAError("--shard is for runs without torchrun (torchrun shares the archive between its "
                            "processes itself): leave out --shard.")
    if not path.exists():  # (before resolving it: a link that loops raised there)
        from fetaliqa_core.paths import missing_path

        raise FetalIQAError(missing_path(path, "Check the path of the archive to score."))
    from fetaliqa_core.files import refuse_link_to_nothing

    refuse_link_to_nothing(out)  # (before resolving it: a link that loops raised there)
    archive_root = str(Path(path).expanduser().resolve())  # recorded with each case: which archive it is of
    plan = None
    if ranks.is_main:
        try:
            from fetaliqa_core.files import claim_output_folder, output_folder_holder

            # one run at a time in OUT: a second one replaced the first's cases and table without
            # a word, both scoring every case. This machine's runs (of any command) claim the
            # folder in the cache folder, before anything is written (the main rank's: the other
            # ranks write into its folder)...
            if claim_output_folder(out) is False:
                raise ar.out_busy(out, ar.hostname(), output_folder_holder(out))
            members = _members(path)  # (first: an archive that is no archive leaves no OUT behind)
            # ... and a lock in OUT itself refuses runs of other machines sharing the disk, and
            # runs with another cache folder (rank 0's: the other ranks are this run, joined by
            # torchrun's rendezvous)
            warning = ar.lock_out(out)
            if warning:
                print(f"fetaliqa: warning: {shown(warning)}", file=sys.stderr, flush=True)
            damage = export.refuse_foreign_table(out / ar.TABLE_FILE, ar.TABLE_COLUMNS)
            if damage:  # (only an index of the case folders: rebuilt from them at the end)
                print(f"fetaliqa: note: {shown(str(out / ar.TABLE_FILE))} is {damage} (a failed copy?); it is "
                      "rebuilt from the case folders.", file=sys.stderr, flush=True)
            # (only for a folder of sweeps: a DICOM series folder is one member, its files its frames)
            # (an --out that is the archive itself: its own table and challenge folder are no files left out)
            ours = tuple(path / n for n in (ar.TABLE_FILE, ar.CHALLENGE_DIR, ar.CASES_DIR)) \
                if _same_folder(out, path) else ()
            note = score_cmd.left_out_note(path, members, ours) if members != [path] else ""
            if note:
                print(f"fetaliqa: {shown(note)}", file=sys.stderr, flush=True)
            # (a case named like the challenge tree's predictions.json would take its place there)
            names = ar.case_names(members, score_cmd._stem, reserved=(ar.PREDICTIONS_FILE,))
            plan = {"members": [str(m) for m in members], "names": names, "run_id": ar.new_run_id(),
                    "out": str(out.expanduser().resolve()), "host": ar.hostname(), "pid": os.getpid()}
            if ranks.distributed:  # (each rank looks for it under its own --out: the same folder?)
                # each rank reads the cases through its own archive argument (another machine may
                # mount it elsewhere), after checking that it holds the same files
                plan["relative"] = ["" if m == path else m.relative_to(path).as_posix() for m in members]
                plan["stats"] = [ar.file_stat(m) for m in members]
                ar.prepare_out(out)  # (an --out that cannot be written says so here, to every rank)
                try:
                    ar.plan_file(out, plan["run_id"]).parent.mkdir(parents=True, exist_ok=True)
                    ar.plan_file(out, plan["run_id"]).write_text(json.dumps(plan), encoding="utf-8")
                except OSError as exc:
                    raise FetalIQAError(f"{out}: cannot write results there ({exc.strerror or type(exc).__name__}). "
                                        "Give --out a folder you can write to.") from None
        except FetalIQAError as exc:
            if not ranks.distributed:
                raise
            plan = {"error": str(exc)}  # the other ranks stop with the same line, not a lost connection
    plan = ar.broadcast_from_main(ranks, plan)
    if "error" in plan:
        raise FetalIQAError(plan["error"] if ranks.is_main else f"rank {ranks.rank}: stopped with rank 0: {plan['error']}")
    elsewhere = None
    if ranks.distributed and not ranks.is_main and not ar.plan_file(out, plan["run_id"]).is_file():
        elsewhere = (f"rank {ranks.rank} on {ar.hostname()} would write to {out.expanduser().resolve()}, not to rank 0's "
                     f"output folder ({plan['out']} on {plan['host']}): give --out as a path every "
                     "machine sees at the same place, e.g. an absolute path on shared storage")
    if ranks.distributed and not ranks.is_main and not elsewhere:
        elsewhere = ar.archive_problem(ranks, path, plan["relative"], plan["stats"])
    elsewhere = ar.first_problem(ranks, shown(elsewhere) if elsewhere else None)
    if elsewhere:
        if ranks.is_main:
            ar.remove_state(out, plan["run_id"])
        raise FetalIQAError(elsewhere)
    ar.prepare_out(out)
    if ranks.is_main or not ranks.distributed:
        members = [Path(m) for m in plan["members"]]
    else:  # rank 0's cases, in this machine's archive
        members = [path / rel if rel else path for rel in plan["relative"]]
    names, files = plan["names"], [m.name for m in members]
    tag = f"[rank {ranks.rank}/{ranks.world}] " if ranks.distributed else ""
    own_part = ar.shard_by_name(names, *part) if part else None  # (this part's cases, with --shard)
    held = None if own_part is None else len(own_part)
    if part is not None and part[1] > len(names):  # (said before the models load: nothing may be scored)
        print(f"fetaliqa: note: --shard {part[0]}/{part[1]} splits the archive's {len(names)} case(s) in more "
              f"parts than cases: some parts hold none" + ("; this one holds none, so it scores nothing"
                                                           if not held else f"; this one holds {held}"),
              file=sys.stderr, flush=True)
    elif part is not None and not held:  # (parts are about 1/N each, not exactly: a small archive's may be empty)
        print(f"fetaliqa: note: --shard {part[0]}/{part[1]} holds none of the archive's {len(names)} case(s) (cases go "
              "to parts by their names, about 1/N each), so this run scores nothing; the other parts hold them all",
              file=sys.stderr, flush=True)
    models = load_models(model_choice_from_args(args))
    from fetaliqa_core.models.choice import provenance

    notice = provenance(models).get("notice") or ""  # the demonstration models' notice, as summary.json has it
    threshold = Thresholds.of_models(models, args.threshold).value
    hashes = ar.model_hashes(models)
    columns = ar.bundle_columns(models, hashes)  # each bundle's own hash in the table
    # everything else the results depend on: a spacing given on the command line (the AC, its
    # doubt) and a cascade's student (which frames the models score)
    student = getattr(models, "student", None)
    student_hash = getattr(student, "bundle_hash", None) if student is not None else None
    asked = precision_preference(models.choice.precision)
    accepted = ar.run_settings_keys(hashes, threshold, spacing=getattr(args, "spacing", None),
                                    student_hash=student_hash, precision_asked=asked != "auto")
    settings = accepted[0]  # what this run writes; records of the others are this run's too
    if ranks.distributed:  # every rank scores with rank 0's settings, or none starts
        from fetaliqa_core.models.device import PRECISION_ENV

        mine = ar.rank_settings(ranks, models.choice.describe(), hashes, threshold, getattr(args, "spacing", None),
                                student_hash, asked,
                                "--precision" if models.choice.precision is not None else PRECISION_ENV)
        problem = ar.settings_problem(ar.gather(ranks, mine))
        if problem:
            if ranks.is_main:
                ar.remove_state(out, plan["run_id"])
            raise FetalIQAError(shown(problem))
    needed = [export.CHALLENGE_FRAME_FILE, export.CHALLENGE_MASK_FILE] if args.challenge_output else []
    heartbeat = ar.Heartbeat(out, plan["run_id"], ranks.rank).start() if ranks.distributed else None
    mine = own_part if part else ar.shard(len(members), ranks)
    # the table's cases: the whole archive's, or with --shard this part's (the merge completes it)
    listed = mine if part else range(len(members))
    table_args = ([names[i] for i in listed], [files[i] for i in listed], accepted, [members[i] for i in listed])
    ar.clean_leftovers(out, [names[i] for i in mine])
    case_args = argparse.Namespace(**vars(args))
    case_args.quiet = args.quiet or ranks.distributed  # one progress bar per terminal at most
    # a case folder holds the challenge's files side by side; OUT/challenge lays them out (ar.write_challenge_tree)
    case_args.challenge_layout = False

    def prepare(item: ar.Item) -> None:
        try:
            # a sweep file or a DICOM series folder (never a pipe or device: opening it may block)
            readable = item.member.is_file() or item.member.is_dir()
            item.fstat = ar.file_stat(item.member) if readable else None
            item.fhash = ar.file_hash(item.member) if readable else None
            if item.fhash is not None:
                item.key = ar.case_key(item.fhash, settings)
                folder = ar.case_dir(out, item.name)
                record = ar.read_record(folder)
                if ar.is_finished(record, ar.accepted_case_keys(record, item.fhash, accepted), needed, folder):
                    item.finished = True
                    ar.refresh_file_stat(folder, record, item.fstat)  # the same bytes, touched since
                    return
                item.why = ar.rescore_reason(record, item.fhash, columns, threshold, accepted, needed, folder)
                if _died_on_before(item):
                    return
                ar.mark_attempt(out, item.name, item.fhash, ar.STAGE_READING, item.deaths)
            try:
                item.sweep = fio.load_sweep(item.member).in_memory()
                _ = item.sweep.content_hash  # hashed here, off the model's thread
            finally:
                if item.fhash is not None:
                    ar.clear_attempt(out, item.name)  # read (or refused in words): no crash here
        except Exception as exc:  # noqa: BLE001 - one bad case must not end the run
            item.error = ar.case_error(exc, item.member)

    def _died_on_before(item: ar.Item) -> bool:
        """Whether an earlier process died with this case in hand (its marker is left): a file
        whose reading crashes a child process too, or one runs died on while scoring it
        :data:`~fetaliqa_core.archive.MAX_SCORING_DEATHS` times,
        is failed with what happened (True); otherwise it is scored as usual."""
        marker = ar.read_attempt(out, item.name)
        if not ar.died_on(marker, item.fhash, ar.attempt_file(out, item.name)):
            return False
        scoring = marker.get("stage") == ar.STAGE_SCORING
        deaths = marker.get("scoring_deaths")
        item.deaths = (deaths if isinstance(deaths, int) and deaths >= 0 else 0) + int(scoring)
        retry = (f"; the rest of the archive is scored (delete {ar.attempt_file(out, item.name)} to "
                 "try this file again).")
        if not scoring:
            crash = ar.read_in_child(item.member)
            if crash is not None:
                item.error = (f"{item.member.name}: {crash}, as it did in an earlier run: the image library "
                              "crashes on this file. Export the sweep again or convert it with another "
                              "tool" + retry)
                return True
        if item.deaths >= ar.MAX_SCORING_DEATHS:
            item.error = (f"{item.member.name}: the run stopped {item.deaths} times while scoring it, without "
                          "an error of its own (a crash, the system ending the process for memory, or kill -9)"
                          + retry)
            return True
        return False

    counts = {"scored": 0, "skipped": 0, "failed": 0}
    failed_alike: dict[str, int] = {}  # failures by their message without the file's name
    items = [ar.Item(i, names[i], members[i]) for i in mine]
    t_scoring = time.perf_counter()
    try:
        for k, item in enumerate(ar.read_ahead(items, prepare, args.prefetch), 1):
            position = f"{tag}[{k}/{len(items)}] "
            if item.finished:
                counts["skipped"] += 1
                print(f"{position}{shown(item.name)}: already scored with these models, skipped", flush=True)
                continue
            base = {"format": ar.RECORD_FORMAT, "version": ar.RECORD_VERSION, "case": item.name,
                    "archive": archive_root,
                    "file": item.member.name, "models": models.choice.describe(),
                    "notice": notice or None,  # a demonstration or test model's, on each of its rows
                    **columns,
                    "threshold": float(threshold), "settings_key": settings, "file_stat": item.fstat, "rank": ranks.rank,
                    "host": ar.hostname(), "device": models.device, "_t0": time.perf_counter()}
            foreign = ar.foreign_folder(ar.case_dir(out, item.name))
            if foreign:
                item.error = (f"{ar.case_dir(out, item.name)}: exists and was not written by FetalIQA; "
                              "it is left as it is. Move it away or choose another --out.")
            read_failed = item.error is not None  # before scoring: reading or hashing the file
            if item.error is None and not foreign:
                earlier = ar.read_record(ar.case_dir(out, item.name))
                other_archive = (earlier is not None and earlier.get("archive") not in (None, archive_root)
                                 and earlier.get("file_hash") != item.fhash)  # (the same bytes: moved or copied)
                if earlier is not None and (earlier.get("file") not in (None, item.member.name) or other_archive):
                    # another archive scored into this --out, or a renamed file: say what is replaced
                    # (a file of the same name in another archive was replaced without a word)
                    source = f" of archive {earlier.get('archive')}" if other_archive else ""
                    print(f"{position}{shown(item.name)}: replaces the results of {earlier.get('file')!r}"
                          f"{shown(source)} in {ar.case_dir(out, item.name)}"
                          + (" (another archive scored into this --out; give each its own --out)"
                             if other_archive else ""), file=sys.stderr, flush=True)
            if item.error is None:
                staged = ar.staging_dir(out, item.name)
                try:
                    # (made first: the results' writer then stages inside it, under its tag, not beside
                    # it under a name cut to 40 characters, which a killed run left for good)
                    staged.mkdir()
                    ar.mark_attempt(out, item.name, item.fhash, ar.STAGE_SCORING, item.deaths)
                    try:
                        score_cmd.score_one(item.member, staged, models, case_args, position=position,
                                            sweep=item.sweep, extra=_record_writer(item, base))
                        ar.replace_case_dir(staged, ar.case_dir(out, item.name))
                    finally:
                        ar.clear_attempt(out, item.name)  # done, or an error of ours, or Ctrl-C: no crash
                except Exception as exc:  # noqa: BLE001 - recorded in the case's row
                    import shutil

                    shutil.rmtree(staged, ignore_errors=True)
                    disk = _output_side(exc)
                    if disk:
                        # a full or read-only disk is no failure of this sweep: every case after it
                        # would fail the same way, each recorded against its own file
                        raise _disk_stops(out, disk) from None
                    item.error = ar.case_error(exc, item.member)
            item.sweep = None
            if item.error is None:
                counts["scored"] += 1
                rec = ar.read_record(ar.case_dir(out, item.name)) or {}
                frame = rec.get("chosen_frame", -1)
                ac = f", AC {rec['ac_mm']:.1f} mm" if rec.get("ac_mm") is not None else ""
                if ac and rec.get("ac_status") != "ok":
                    ac += f" ({rec.get('ac_status') or 'doubtful'})"  # not a number to act on (summary.json says why)
                elif rec.get("ac_status") == "no units":
                    ac = ", AC not shown (pixel spacing unknown or implausible; --spacing MM or WxH)"
                why = f"; rescored: {item.why}" if item.why else ""
                print(f"{position}{shown(item.name)}: chosen frame {frame if frame >= 0 else 'none (-1)'}{ac} "
                      f"({rec.get('seconds', 0):.1f} s{why})", flush=True)
            else:
                base.pop("_t0")
                failure = dict(base, status=export.STATUS_FAILED, error=item.error, key=item.key, file_hash=item.fhash,
                               finished_utc=ar.utc_now())
                folder = ar.case_dir(out, item.name)
                previous = ar.read_record(folder) if not foreign else None
                if (read_failed and previous is not None and item.fstat is not None
                        # (bytes that hash otherwise have changed, whatever their size and time say)
                        and (item.fhash is None or item.fhash == previous.get("file_hash"))
                        and ar.settings_accepted(previous, accepted) and previous.get("file_stat") == item.fstat
                        and ar.is_finished(previous, previous.get("key"), needed, folder)):
                    # a passing read error (permissions, a network file system) must not destroy results
                    # of these settings on the same, unchanged file
                    print(f"{position}{shown(item.name)}: could not be read now ({shown(item.error)}); its results of "
                          f"{previous.get('finished_utc', 'an earlier run')} are kept: the file has not changed "
                          "since", file=sys.stderr, flush=True)
                    counts["skipped"] += 1  # (not failed: the table calls it ok)
                    continue
                counts["failed"] += 1
                try:
                    if not foreign:
                        ar.write_failure(out, item.name, failure)
                except OSError as exc:
                    disk = _output_side(exc)
                    if disk:  # as for a case scored (it said "choose a folder you can write to")
                        raise _disk_stops(out, disk) from None
                    raise FetalIQAError(f"{out}: cannot write results ({exc.strerror}). Choose a folder "
                                        "you can write to.") from None
                # (100,000 empty files printed 100,000 lines: the table has each; the terminal the first)
                kind = item.error.replace(str(item.member), "").replace(item.member.name, "").strip(" :")
                failed_alike[kind] = failed_alike.get(kind, 0) + 1
                if failed_alike[kind] <= MAX_FAILURE_LINES:
                    print(f"{position}{shown(item.name)}: failed: {shown(item.error)}", file=sys.stderr, flush=True)
        for kind, n in failed_alike.items():
            if n > MAX_FAILURE_LINES:
                print(f"{tag}fetaliqa: {n - MAX_FAILURE_LINES} more case(s) failed the same way "
                      f"({shown(kind[:120])}); each has its row in {out / ar.TABLE_FILE}", file=sys.stderr)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the finished cases are kept; the table says so now, not at the next run
        # (under torchrun too: the table is built from the case folders alone, and the previous
        # run's rows must not stand for cases rescored since)
        if ranks.is_main:
            try:
                rows = ar.table_rows(out, *table_args)
                ar.write_table(out, rows)
                if (out / ar.CHALLENGE_DIR).is_dir():  # no answer there that the table does not call ok
                    ar.write_challenge_tree(out, rows)
                print(f"table (up to the interruption): {out / ar.TABLE_FILE}", file=sys.stderr)
            except OSError:
                pass
        raise
    elapsed = max(time.perf_counter() - t_scoring, 1e-9)
    if ranks.distributed:
        print(f"{tag}scored {counts['scored']}, skipped {counts['skipped']}, failed {counts['failed']} "
              f"in {elapsed:.1f} s ({counts['scored'] / elapsed:.2f} cases/s)")
        heartbeat.finish(counts)
    if not ranks.is_main:
        return 0  # rank 0 reports for the run; a non-zero exit here would make torchrun stop it
    dead: list[int] = []
    if ranks.distributed:
        others, dead = ar.wait_for_ranks(out, plan["run_id"], range(1, ranks.world), args.rank_timeout)
        for c in others.values():
            for name in counts:
                counts[name] += int(c.get(name, 0))
        ar.remove_state(out, plan["run_id"])
    else:
        ar.remove_state(out)  # what killed launches of several processes left (a rerun here finished their work)
    rows = ar.table_rows(out, *table_args)
    table = ar.write_table(out, rows)
    status = ar.count_statuses(rows)
    scoring = max(time.perf_counter() - t_scoring, 1e-9)
    ok = status[export.STATUS_OK]
    problems = [f"{n} {s}" for s, n in status.items() if n and s != export.STATUS_OK]
    print(f"archive {out}" + (f" (part {part[0]}/{part[1]} of {len(members)} cases)" if part else "")
          + f": {len(rows)} cases, {ok} {export.STATUS_OK}" + (", " + ", ".join(problems) if problems else "")
          + f"; scored {counts['scored']} now, {counts['skipped']} already scored, {counts['failed']} failed")
    # the rate of the cases scored: 25 empty files failing at once gave "174 cases/s" for one case
    # scored; the failures are said apart, as they took their share of the time (1 case in 313 s
    # was said of 100,000 empty files without a word)
    print(f"throughput: {counts['scored'] / scoring:.3f} cases/s ({counts['scored']} cases scored"
          + (f", and {counts['failed']} failed," if counts["failed"] else "") + f" in {scoring:.1f} s "
          f"with {ranks.world} process(es), read-ahead {args.prefetch}; start-up "
          f"{t_scoring - started:.1f} s)")
    if dead:
        print(f"fetaliqa: rank(s) {', '.join(map(str, dead))} stopped without finishing; their "
              "remaining cases are 'missing' in the table. Run the same command again to score them.",
              file=sys.stderr)
    print(f"table: {table}")
    formats = Counter(str(r.get("precision")) for r in rows if r.get("status") == export.STATUS_OK and r.get("precision"))
    if len(formats) > 1:  # (documented for `auto` on mixed machines; the column alone said it)
        mixed = ", ".join(f"{n} in {f}" for f, n in sorted(formats.items()))
        print(f"note: the table mixes cases scored in different number formats ({mixed}; its precision column "
              "says which): their scores may differ in the last digits. Score again with --precision fp32 (or "
              "bf16) to have them all one way.")
    orphans = ar.orphan_cases(out, names)
    if orphans:
        print(f"fetaliqa: {len(orphans)} case folder(s) in {out / ar.CASES_DIR} are of files no longer in the "
              f"archive (or named otherwise now): {shown(first_names(orphans))}; they are not in the table (delete them "
              "if they are not wanted)", file=sys.stderr)
    if notice:
        print(notice)
    # rebuilt whenever it exists, as the README says: a case rescored without its challenge files
    # must not keep an answer from before
    if args.challenge_output or (out / ar.CHALLENGE_DIR).is_dir():
        try:
            tree, n, left_out = ar.write_challenge_tree(out, rows)
        except OSError as exc:
            raise FetalIQAError(f"{out}: cannot write the challenge output ({exc.strerror}). Choose a "
                                "folder you can write to.") from None
        print(f"challenge output: {n} case(s) in {tree}" + (
            f"; {len(left_out)} without an answer (not 'ok' in the table, or scored without --challenge-output)"
            if left_out else ""))
    if part and ranks.is_main:
        # parts run one after another into one --out: each table and challenge/ hold that part's cases
        # only, and a researcher who handed in challenge/ got -1 for the other half without a hint
        in_part = set(mine)
        others = [n for k, n in enumerate(names) if k not in in_part and ar.read_record(ar.case_dir(out, n)) is not None]
        if others:
            print(f"note: {len(others)} other case(s) of the archive scored in {out / ar.CASES_DIR} (other parts) are "
                  f"not in this part's table" + (" or challenge output" if (out / ar.CHALLENGE_DIR).is_dir() else "")
                  + ": run the same command without --shard there to have them all (nothing is scored again)")
    if ranks.distributed and not dead and ok < len(rows):
        # torchrun takes a non-zero exit for a crash and, with --max-restarts, would start every
        # rank again to retry the same bad files: the run itself finished, the table has the rest
        print(f"fetaliqa: {len(rows) - ok} case(s) not ok: see {table} (exit status 0 under torchrun: "
              "the run itself finished)", file=sys.stderr)
        return 0
    return 0 if ok == len(rows) and not dead else 1
