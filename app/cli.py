"""``fetaliqa gui``: open the viewer (optionally on a sweep), or render it headless to a PNG."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fetaliqa_core.cli._args import positive_seconds, spacing_mm
from fetaliqa_core.models.options import add_model_options, model_choice_from_args

HELP = "Open the viewer: scrub a sweep, watch its quality curve fill in, review flagged frames."


def add_arguments(parser) -> None:
    parser.add_argument("sweep", nargs="?",
                        help="sweep file (.mha/.mhd/.nrrd/.nhdr/.nii[.gz]/DICOM; a multi-page TIFF or a "
                        "picture is read too, its pixel size only from an ImageJ scale) to open")
    add_model_options(parser, remembered=True, cascade=True)
    parser.add_argument("--spacing", type=spacing_mm, default=None, metavar="MM|WxH",
                        help="pixel spacing in mm per pixel for a sweep whose file records none (or a wrong one): "
                             "one number for square pixels, or width x height (0.3x0.4)")
    parser.add_argument("--db", metavar="FILE", type=Path, default=None,
                        help="review database (default: the one in the user data folder; a new one is made, "
                             "empty); remembered for later windows and for `fetaliqa review`")
    parser.add_argument("--screenshot", metavar="PNG", type=Path,
                        help="save a picture of the window when scoring has ended (or at --max-seconds)")
    parser.add_argument("--exit-when-scored", action="store_true",
                        help="quit when scoring has ended (after the screenshot)")
    parser.add_argument("--save-scores", metavar="DIR", type=Path, default=None,
                        help="when scoring has ended, write the frames.csv and summary.json the "
                             "window holds into DIR (as `fetaliqa score` writes them)")
    parser.add_argument("--max-seconds", type=positive_seconds, default=None, metavar="N",
                        help="stop scoring after N seconds, take the screenshot and quit")


def display_available() -> bool:
    """False when there is no screen here (no X/Wayland on Linux, or offscreen asked)."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal")):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def display_problem(headless: bool | None = None) -> str | None:
    """Why Qt would fail to start here (None when it can): on the display there is or, for a
    ``headless`` run (default: when there is no display), only on a platform QT_QPA_PLATFORM
    forces; Qt tries that one even for a run it would otherwise render offscreen
    (QT_QPA_PLATFORM=xcb with no DISPLAY, or a misspelt name, aborted the process)."""
    from app.qt_platform import display_problem as problem

    if headless is None:
        headless = not display_available()
    if headless and not os.environ.get("QT_QPA_PLATFORM"):
        return None  # offscreen is set when the QApplication is made
    return problem()


def render_offscreen_instead() -> None:
    """Have Qt render offscreen, also in place of a QT_QPA_PLATFORM that cannot start here
    (:func:`ensure_application` keeps one that is set)."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"


NO_DISPLAY_HELP = ("there is no display here to open the viewer on: give a sweep and a picture to render "
                   "it offscreen (`fetaliqa gui SWEEP --screenshot shot.png`), score one with `fetaliqa score "
                   "SWEEP`, or try `fetaliqa demo`.")


@dataclass
class GuiOutcome:
    """What a headless run produced."""

    code: int
    complete: bool
    message: str
    screenshot: Path | None
    window: object | None = None  # the MainWindow (still alive until the caller drops it)
    scores: list[Path] | None = None  # files written for save_scores
    told: bool = False  # the message was already printed on stderr by the window


def save_scores(window, out_dir: Path) -> list[Path]:
    """Write ``frames.csv`` and ``summary.json`` of what ``window`` holds (its assessment at the
    threshold shown) into ``out_dir``; [] before the first result."""
    from fetaliqa_core import export

    m = window.model
    a = m.assessment
    if a is None:
        return []
    student = getattr(getattr(window, "models", None), "student", None)
    if m.confirmed is not None and student is not None:
        from fetaliqa_core.cascade import write_cascade_scores

        return write_cascade_scores(out_dir, m.sweep, m.results, m.confirmed, a, student.path,
                                    complete=m.scored_all, teacher_planned=m.teacher_total or None)
    return export.write_scores(out_dir, m.sweep, m.results, a)


def ensure_application(headless: bool):
    """The QApplication (created once), themed; offscreen when ``headless``."""
    if headless and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    from app import theme

    app = QApplication.instance()
    if app is None:
        if headless:
            _quiet_offscreen_warnings()
        from app.qt_platform import use_utf8_locale

        use_utf8_locale()  # (under LC_ALL=C Qt warned in four lines on every run)
        app = QApplication(sys.argv[:1] or ["fetaliqa"])
        app.setApplicationName("FetalIQA")
        app.setOrganizationName("FetalIQA")
        theme.apply_dark_theme(app)
    return app


_NOISE = ("propagateSizeHints",)  # the offscreen platform's note on every window


def _quiet_offscreen_warnings() -> None:
    from PySide6.QtCore import qInstallMessageHandler

    def handler(_mode, _context, message: str) -> None:
        if not any(n in message for n in _NOISE):
            print(message, file=sys.stderr)

    qInstallMessageHandler(handler)


def preload_model_libraries() -> None:
    """Import PyTorch and the model libraries on a background thread as the window opens.

    Loading PyTorch's native libraries holds the interpreter lock for a few hundred ms however
    it is done; done while the window first appears, it no longer freezes the window when the
    first model loads (a measured 0.3-0.8 s stall on these 2-core machines)."""
    if "torch" in sys.modules:
        return

    from app.worker import import_model_libraries_in_background

    import_model_libraries_in_background()


def run_window(sweep_path: str | Path | None, choice=None, screenshot: Path | None = None,
               exit_when_scored: bool = False, max_seconds: float | None = None,
               headless: bool | None = None, keep_window: bool = False,
               review_db: Path | None = None, scores_dir: Path | None = None,
               progress_every: float | None = None, spacing_mm: float | tuple[float, float] | None = None) -> GuiOutcome:
    """Open the main window (optionally on a sweep) and run the event loop.

    With ``exit_when_scored`` or ``max_seconds`` the loop ends by itself: after scoring ends
    (or the time is up, which cancels scoring) the screenshot is saved, the scores are written
    into ``scores_dir`` when given, and the window closes. ``progress_every``: print the
    progress bar's text (frames scored, rate, time left) on stdout at most every N seconds.
    """
    from PySide6.QtCore import QEventLoop, QTimer

    from app.main_window import MainWindow
    from fetaliqa_core.errors import FetalIQAError

    if headless is None:
        headless = not display_available()
    if headless and not (exit_when_scored or max_seconds):
        exit_when_scored = True  # nothing would ever close an invisible window
    from app.window_files import file_state
    from app.worker import load_sweep_for_viewer

    ensure_application(headless)
    # Read the file first: an unreadable one is a one-line error, not a window.
    before = file_state(sweep_path) if sweep_path is not None else None  # (a rewrite while read counts)
    sweep = load_sweep_for_viewer(sweep_path) if sweep_path is not None else None
    if sweep is not None and spacing_mm is not None:
        sweep = sweep.with_spacing(spacing_mm, "given with --spacing")  # FetalIQAError (one line) when implausible
    from app.settings import AppSettings

    settings = AppSettings.load()
    gone = None
    if review_db is not None:
        db = checked_review_db(review_db)
        if not db.exists():
            # made now, empty, as it is remembered: one left unwritten (nothing reviewed) was said
            # to "no longer exist" by every `fetaliqa review` and the next window, as if verdicts were lost
            from fetaliqa_core.review import ReviewStore

            ReviewStore(db).close()
        settings.review_db = str(db)
    elif settings.review_db and not Path(settings.review_db).expanduser().exists():
        # the database `gui --db` left remembered was moved or removed: a new empty one made in its
        # place, without a word, split the verdicts between two files
        gone, settings.review_db = settings.review_db, ""
    win = MainWindow(settings=settings, choice=choice)
    win.interactive = not headless
    if gone is not None:
        from fetaliqa_core.review.store import default_db_path

        win.alert("Review database", f"The review database the window was last given, {gone}, no longer exists: "
                                     f"verdicts go to the default database, {default_db_path()}, from now on (open "
                                     "the window with --db to use another).")
    preload_model_libraries()
    if headless:
        win.resize(1600, 1000)
    win.show()
    state = {"complete": False, "message": "", "shot": None, "ended": False, "scores": None}

    def finish(complete: bool, message: str) -> None:
        if state["ended"]:
            return
        state["ended"] = True
        state["complete"], state["message"] = complete, message
        # The picture shows what the run found: the case's chosen frame with its overlay and AC.
        chosen = win.model.flags.chosen
        if chosen is not None and chosen >= 0:
            win.model.set_frame(chosen)
        # Let the last results reach the views before the picture is taken.
        QTimer.singleShot(150, take_and_maybe_quit)

    def take_and_maybe_quit() -> None:
        if screenshot is not None:
            try:
                state["shot"] = win.save_screenshot(screenshot)
            except FetalIQAError as exc:
                state["message"] = str(exc)
        if scores_dir is not None:
            try:
                state["scores"] = save_scores(win, Path(scores_dir))
            except FetalIQAError as exc:
                state["message"] = f"scores not written to {scores_dir}: {exc}"
            except OSError as exc:  # in score's words ("the disk is full; free disk space or write elsewhere")
                from fetaliqa_core.paths import os_error_message

                state["message"] = f"scores not written to {scores_dir}: {os_error_message(exc).rstrip('.')}"
        if exit_when_scored or max_seconds:
            win.close()

    def time_up() -> None:
        if not state["ended"]:
            win.cancel_scoring()
            QTimer.singleShot(0, lambda: finish(False, f"stopped after {max_seconds:g} s"))

    win.scoring_ended.connect(finish)
    if sweep is not None:
        win.add_recent(sweep_path)
        win.set_sweep(sweep)
        win.remember_file(sweep_path, before, sweep)
    elif exit_when_scored or screenshot is not None:
        QTimer.singleShot(300, lambda: finish(False, "no sweep given"))
    if max_seconds:
        QTimer.singleShot(int(max_seconds * 1000), time_up)
    reporter = QTimer()
    if progress_every:
        # On a terminal one line is rewritten in place each second; into a file or a pipe a
        # new line comes every ``progress_every`` seconds.
        tty = sys.stdout.isatty()
        last = {"text": "", "width": 0}

        def report(final: bool = False) -> None:
            text = win.progress.format()
            if text and text != last["text"]:
                last["text"] = text
                if tty:
                    print("\r  " + text.ljust(last["width"]), end="", flush=True)
                    last["width"] = len(text)
                else:
                    print(f"  {text}", flush=True)
            if final and tty and last["width"]:
                print(flush=True)  # end the rewritten line
                last["width"] = 0

        reporter.timeout.connect(report)
        reporter.start(1000 if tty else int(progress_every * 1000))
        win.scoring_ended.connect(lambda *_: report(final=True))
    # Ctrl+C in the terminal closes the window cleanly (Python sees signals only between
    # Qt events, hence the idle timer).
    import signal

    def interrupt(*_) -> None:
        state["interrupted"] = True
        win.close()

    # SIGTERM as Ctrl+C (the command line's rule): raised inside a Qt slot it would only print.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(250)
    # A local loop that ends when this window closes (not the application's: quitting that
    # would also end a host program's loop, e.g. a test runner's).
    loop = QEventLoop()
    win.closed.connect(loop.quit)
    try:
        if win.isVisible():
            loop.exec()
    finally:
        wake.stop()
        reporter.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if state.get("interrupted"):
        # As everywhere in the command line: "interrupted", status 130, and nothing more written
        # (run_guarded); the window is closed and its scoring stopped.
        raise KeyboardInterrupt
    code = 0 if state["complete"] or not (exit_when_scored or max_seconds) else 1
    return GuiOutcome(code=code, complete=state["complete"], message=state["message"],
                      screenshot=state["shot"], window=win if keep_window else None,
                      scores=state["scores"], told=state["message"] in win.told_on_stderr)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def checked_screenshot(path: Path, sweep: Path | None = None, what: str = "--screenshot") -> Path:
    """The file ``--screenshot`` names: a .png that is new or already a PNG (a screenshot taken
    before); any other existing file, the sweep itself included, is refused and left as it is."""
    from fetaliqa_core.errors import FetalIQAError, UsageError

    shot = Path(path).expanduser()
    if shot.suffix.lower() != ".png":
        raise UsageError(f"{what} {path}: a screenshot is a PNG image; give a file name ending in .png.")
    if not shot.exists():
        return shot
    if sweep is not None and Path(sweep).expanduser().exists() and shot.samefile(Path(sweep).expanduser()):
        raise FetalIQAError(f"{what} {path} is the sweep being opened; choose another file name.")
    if not shot.is_file():
        raise FetalIQAError(f"{what} {path} exists and is not a file; choose another file name.")
    try:
        with open(shot, "rb") as fh:
            is_png = fh.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError as exc:
        raise FetalIQAError(f"{what} {path} cannot be read ({exc.strerror or exc}); choose another "
                            "file name.") from None
    if not is_png:
        raise FetalIQAError(f"{what} {path} exists and is not a PNG image; it is left as it is. Choose "
                            "another file name.")
    return shot


def checked_review_db(path: Path) -> Path:
    """A review database the user names: a new file is created when needed, but an existing one
    must already be a review database (an empty or foreign file is never filled or taken over)."""
    db = Path(path).expanduser().resolve()
    if db.exists():
        from fetaliqa_core.review import ReviewStore

        ReviewStore(db, create=False).close()
    return db


def run(args) -> int:
    from fetaliqa_core.errors import FetalIQAError, UsageError

    choice = model_choice_from_args(args, remembered=True)  # None: the remembered choice
    if args.sweep is not None and not Path(args.sweep).expanduser().exists():
        from fetaliqa_core.paths import missing_path

        raise FetalIQAError(missing_path(args.sweep, "Check the path of the sweep to open."))
    if args.db is not None:
        checked_review_db(args.db)
    if args.screenshot is not None:
        args.screenshot = checked_screenshot(args.screenshot, args.sweep)
    unattended = bool(args.screenshot or args.exit_when_scored or args.max_seconds or args.save_scores)
    headless = not display_available()
    problem = display_problem(headless)
    if problem is not None:
        if not unattended:
            raise FetalIQAError(problem)
        # A picture or a timed run does not need the screen: render offscreen instead.
        print(f"fetaliqa: {problem} Rendering offscreen instead.", file=sys.stderr)
        headless = True
        render_offscreen_instead()
    if headless and args.sweep is None:
        raise UsageError(NO_DISPLAY_HELP)
    if headless and not unattended:
        # a window nobody can see, scored for nothing: it ran 20 s, wrote nothing and said nothing
        raise UsageError("there is no display here to open the viewer on: add --screenshot shot.png and/or "
                         "--save-scores DIR to render the sweep offscreen and keep what it shows, or score it "
                         "with `fetaliqa score SWEEP`.")
    if args.save_scores is not None and args.sweep is None:
        raise UsageError("--save-scores needs a sweep to score: fetaliqa gui SWEEP --save-scores DIR")
    if args.save_scores is not None:
        from fetaliqa_core.cli.score import check_out_folder

        args.save_scores = Path(args.save_scores).expanduser()
        check_out_folder(args.save_scores, "--save-scores")
    try:
        outcome = run_window(args.sweep, choice, args.screenshot, args.exit_when_scored, args.max_seconds,
                             headless=headless, review_db=args.db, scores_dir=args.save_scores,
                             spacing_mm=getattr(args, "spacing", None),
                             keep_window=args.save_scores is not None or (args.screenshot is not None
                                                                         and bool(args.exit_when_scored)))
    except KeyboardInterrupt:
        end_without_loading_models(130, "fetaliqa: interrupted")
        raise
    code = _report_outcome(args, outcome)
    end_without_loading_models(code)
    return code


def end_without_loading_models(code: int, line: str = "") -> None:
    """Closed while its models were still loading (which cannot be interrupted), the viewer's
    process ended seconds after its window: it ends now (saying ``line`` first), since the load
    writes nothing. So too, in the program itself, while the model libraries are still being
    imported (a run stopped within its first seconds): an interpreter shutting down under a
    half-imported PyTorch printed dozens of tracebacks after the run's last line. Returns when
    nothing of the kind is running."""
    from app.worker import abandoned_work_running, end_process, importing_model_libraries
    from fetaliqa_core.cli import running_as_program

    imports = running_as_program()
    if abandoned_work_running() or (imports and importing_model_libraries()):
        if line:
            print(line, file=sys.stderr)
        end_process(code, imports)


def _report_outcome(args, outcome) -> int:
    try:
        return _report(args, outcome)
    finally:
        outcome.window = None  # (kept for the answer line only)


def _report(args, outcome) -> int:
    if outcome.screenshot is not None:
        print(f"screenshot: {outcome.screenshot}")
    elif args.screenshot is not None:
        print(f"fetaliqa: no screenshot written ({outcome.message})", file=sys.stderr)
        return 1
    # the answer and its notice in words, as `score` and `demo` print them: with the scores saved,
    # or beside a picture of a finished scoring
    if outcome.window is not None and (
            bool(outcome.scores) if args.save_scores is not None else
            (outcome.screenshot is not None and outcome.code == 0
             and getattr(outcome.window.model, "results", None) is not None)):
        from app.cli_demo import answer_line

        print(f"answer: {answer_line(outcome.window)}")
    if args.save_scores is not None:
        if outcome.scores:
            print(f"scores: {args.save_scores}")
        else:
            print(f"fetaliqa: no scores written ({outcome.message or 'nothing was scored'})", file=sys.stderr)
            return 1
    if outcome.code and outcome.message and not outcome.told:
        print(f"fetaliqa: scoring did not complete: {outcome.message}", file=sys.stderr)
    return outcome.code
