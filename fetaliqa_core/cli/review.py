"""``fetaliqa review``: export the trainers' review database.

``fetaliqa review export --db DB --out report.html|report.pdf|report.csv``
    The review report (format from the extension; PDF via Qt, no browser needed). Thumbnails
    of flagged frames need the sweep files at the paths the database recorded (``--no-frames``
    skips them).
``fetaliqa review labels --db DB --out labels.csv``
    Reviewer labels as extra training labels: columns ``uuid_or_hash, path, frame, label,
    reviewer, time, content_hash`` with label 1 optimal, 2 suboptimal, 0 not usable (ACOUSLIC convention);
    see :mod:`fetaliqa_core.review.report` for the details.
``fetaliqa review history --db DB --out history.csv``
    Every verdict ever entered, the replaced ones too, and every withdrawal: columns
    ``content_hash, path, frame, reviewer, label, label_code, note, time, current, withdrawn``
    (current: 1 on the verdict that stands; withdrawn: 1 on a withdrawal, with the label withdrawn).
``fetaliqa review list --db DB``
    The sweeps in the database with their review counts.

``--out`` replaces an existing file only when it is an earlier export of the same kind (its
header row that export's columns, none added), and is never the database itself, a link, a
named pipe or a folder. ``--sweep`` (repeatable) takes a content hash or its first characters;
a sweep named twice is exported once.

``--db`` defaults to the database the window uses: the one ``fetaliqa gui --db`` last named
(the window remembers it), else reviews.sqlite3 in the user data folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fetaliqa_core import plugins
from fetaliqa_core.cli._args import shown
from fetaliqa_core.errors import FetalIQAError, UsageError

HELP = "Export trainers' verdicts: a report (.html/.pdf/.csv) or labels for training."


def _db_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=None, metavar="DB",
                   help="review database (default: the one the window uses: the last `fetaliqa gui "
                        "--db`, else reviews.sqlite3 in the user data folder)")


def _sweep_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", action="append", default=None, metavar="HASH",
                   help="only this sweep (content hash or a unique prefix, as `review list` "
                        "shows); repeat for several")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="review_command", metavar="ACTION")
    p = sub.add_parser("export", help="write the review report (.html, .pdf or .csv)",
                       description="Write the review report; the format follows the extension "
                                   "of --out (.html, .pdf, .csv).")
    _db_argument(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="report.html, report.pdf or report.csv")
    _sweep_argument(p)
    p.add_argument("--no-frames", action="store_true",
                   help="do not load the sweep files: faster, but no thumbnails, and no word on whether an "
                        "AC's outline was cut by the field of view (the CSV's ac_extrapolated left empty)")
    p = sub.add_parser("labels", help="write reviewer labels as a CSV for training",
                       description="Write reviewer labels (uuid_or_hash, path, frame, label "
                                   "1 optimal / 2 suboptimal / 0 not usable, reviewer, time, content_hash).")
    _db_argument(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="labels.csv")
    _sweep_argument(p)
    p = sub.add_parser("history", help="write every verdict ever entered (replaced and withdrawn ones too) as a CSV",
                       description="Write every verdict ever entered, and every withdrawal, by sweep, frame and reviewer, "
                                   "each one's oldest first "
                                   "(content_hash, path, frame, reviewer, label, label_code, note, time, current: "
                                   "1 on the verdict that stands, 0 on those a later one replaced or withdrew; "
                                   "withdrawn: 1 on a withdrawal, its label the one withdrawn).")
    _db_argument(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="history.csv")
    _sweep_argument(p)
    p = sub.add_parser("list", help="list the sweeps in the review database",
                       description="List the sweeps in the review database.")
    _db_argument(p)


def _db_path(args) -> Path | None:
    """--db, else the database the window remembers (said on stderr: it is not the default),
    else None for the default."""
    if args.db is not None:
        return args.db
    from fetaliqa_core.review.store import remembered_db_path

    db = remembered_db_path()
    if db is not None:
        if not db.exists():
            raise FetalIQAError(f"The review database the window was last given, {shown(str(db))} (by `fetaliqa gui "
                                "--db`), no longer exists: name the database to read with --db (or open the window "
                                "with --db on the one it should use).")
        print(f"reading the review database the window uses, {shown(str(db))} (set by `fetaliqa gui --db`; "
              "--db names another)", file=sys.stderr)
    return db


def _open(args):
    from fetaliqa_core.review.store import ReviewStore

    return ReviewStore(_db_path(args), create=False, read_only=True)  # these commands only read it


def _sweep_ids(store, hashes: list[str] | None) -> list[int] | None:
    if not hashes:
        return None
    ids = []
    for h in hashes:
        if not h.strip():
            raise FetalIQAError("--sweep is empty: give a sweep's content hash or its first characters "
                                "(see `fetaliqa review list`).")
        record = store.find_sweep(h.strip().lower())
        if record is None:
            raise FetalIQAError(f"The review database {store.path} has no sweep whose hash "
                                f"starts with {h!r} (or the prefix is ambiguous): see "
                                "`fetaliqa review list`.")
        if record.id not in ids:  # (one sweep named twice, by two prefixes: its rows once)
            ids.append(record.id)
    return ids


def load_frames_for_report(path: str):
    """Sweep loader for reports: the sweep in the file at ``path``, its frames in memory (the
    report shows them only when its content hash is the one reviewed)."""
    if not Path(path).exists():
        raise FetalIQAError(f"{path} no longer exists (moved or on a disconnected drive)")
    from fetaliqa_core.io import load_sweep

    return load_sweep(path).in_memory()  # (a file rewritten meanwhile: a line, not SIGBUS)


def _export(args) -> int:
    from fetaliqa_core.review.report import REPORT_EXTENSIONS, build_report

    out = Path(args.out)
    if out.suffix.lower() not in REPORT_EXTENSIONS:
        raise UsageError(f"Cannot tell the report format from --out {out}: use a file name "
                            "ending in .html, .pdf or .csv.")
    pdf_writer = None
    if out.suffix.lower() == ".pdf":
        try:
            pdf_writer = plugins.load(plugins.REPORT_WRITERS, "pdf")
        except ImportError as exc:
            raise FetalIQAError(f"PDF export needs PySide6 ({exc}); export .html instead or "
                                "reinstall FetalIQA.") from exc
        if pdf_writer is None:
            raise FetalIQAError("PDF export comes with the viewer, which is not installed here; export .html "
                                "instead or reinstall FetalIQA.")
    with _open(args) as store:
        ids = _sweep_ids(store, args.sweep)
        loader = None if args.no_frames else load_frames_for_report
        path = build_report(store, out, ids, sweep_loader=loader, pdf_writer=pdf_writer)
    print(f"wrote {path}")
    return 0


def _labels(args) -> int:
    from fetaliqa_core.review.report import write_labels_csv

    return _write_csv(args, write_labels_csv, "label(s)")


def _history(args) -> int:
    from fetaliqa_core.review.report import write_history_csv

    return _write_csv(args, write_history_csv, "verdict row(s), replaced verdicts and withdrawals included,")


def _write_csv(args, write, what: str) -> int:
    """One of the CSV exports (``write(store, out, sweep_ids)`` -> rows) to --out, said on a line."""
    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise FetalIQAError(f"--out {out} must be a .csv file.")
    with _open(args) as store:
        n = write(store, out, _sweep_ids(store, args.sweep))
    print(f"wrote {n} {what} to {out}")
    return 0


def _list(args) -> int:
    with _open(args) as store:
        sweeps = store.sweeps()
        if not sweeps:
            print(f"{shown(store.path)}: no sweeps yet")
        for s in sweeps:
            verdicts = store.verdicts(s.id)
            reviewers = ", ".join(sorted({v.reviewer for v in verdicts})) or "-"
            print(f"{s.content_hash[:16]}  {s.n_frames:5d} frames  {len(verdicts):4d} verdicts"
                  f"  {shown(reviewers)}  {shown(s.path or '')}")
    return 0


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "review_command", None)
    if action == "export":
        return _export(args)
    if action == "labels":
        return _labels(args)
    if action == "history":
        return _history(args)
    if action == "list":
        return _list(args)
    # (the usage line alone said neither that an action is needed nor what each does)
    print("fetaliqa review: say what to do: export (the review report), labels (for train --extra-labels), "
          "history (every verdict entered) or list (the sweeps reviewed); fetaliqa review ACTION --help",
          file=sys.stderr)
    return 2
