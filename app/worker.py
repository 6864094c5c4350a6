"""Scoring off the UI thread: a QThread that loads the models and drives ``ScoringEngine``.

The UI thread only receives signals (queued across threads): ``models_ready`` once the models
are loaded, ``batch`` per finished batch (an ``engine.BatchResult``), and ``finished`` or
``failed`` at the end. With a cascade (``ModelChoice.cascade``: a student scores every frame,
the chosen models re-score its candidate runs) the student's batches come as ``batch`` and the
teacher's as ``teacher_batch``. ``focus`` and ``cancel`` are called from the UI thread directly; the
engine makes both thread-safe. :meth:`ScoringController.shutdown` cancels and waits, so closing
the window mid-run never leaves a thread running.
"""

from __future__ import annotations

import sys
import threading
import traceback
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from fetaliqa_core.errors import FetalIQAError

#: One thread at a time imports the model libraries: the window's preload thread and the first
#: model load importing peft at once gave "partially initialized module 'peft.tuners'" (about 1
#: start in 25 failed to load its models).
_IMPORTS = threading.Lock()
#: The thread importing them in the background (``import_model_libraries_in_background``): it
#: writes nothing, so a process that has finished its command need not wait for it.
_IMPORTING: list[threading.Thread] = []


def import_model_libraries() -> None:
    """Import PyTorch, open_clip, peft and the analysis and model modules (no-ops once done);
    never two threads at once."""
    with _IMPORTS:
        # the readers first (~0.15 s): imported by the first sweep opened, on the window's thread,
        # they held it 0.2-0.5 s while PyTorch loaded beside them
        import fetaliqa_core.archive  # noqa: F401
        import open_clip  # noqa: F401  (imports torch)
        import peft  # noqa: F401

        import fetaliqa_core.analysis  # noqa: F401
        import fetaliqa_core.engine  # noqa: F401
        import fetaliqa_core.models.choice  # noqa: F401


def import_model_libraries_in_background() -> None:
    """Start :func:`import_model_libraries` on a daemon thread (once). A process ending while it
    runs must end with :func:`end_process`: an interpreter shutting down under a half-imported
    PyTorch printed dozens of "Exception ignored ... torch/library.py" tracebacks."""

    def load() -> None:
        try:
            import_model_libraries()  # (the first model load waits for these rather than race them)
        except Exception:  # noqa: BLE001 - a broken install is reported when a model loads
            pass

    if any(t.is_alive() for t in _IMPORTING):
        return
    thread = threading.Thread(target=load, name="fetaliqa-preload", daemon=True)
    _IMPORTING[:] = [thread]
    thread.start()


class ScoringWorker(QObject):
    """Lives in a worker thread; :meth:`run` does the work (model loading, then scoring).

    ``models`` is an already loaded ``models.choice.LoadedModels`` or None; then ``choice``
    (``models.choice.ModelChoice``) is loaded first. ``engine_factory(sweep, cls, seg)`` builds the
    engine (tests pass a fake).
    """

    models_ready = Signal(object)  # models.choice.LoadedModels
    started_scoring = Signal(bool, bool)  # has_cls, has_seg
    batch = Signal(object)  # engine.BatchResult
    teacher_batch = Signal(object)  # engine.BatchResult of a cascade's teacher
    finished = Signal(bool, int)  # complete, frames done
    failed = Signal(str)  # user-facing message

    def __init__(self, sweep, choice=None, models=None, engine_factory=None, focus: int | None = None,
                 words: str = "window"):
        super().__init__()
        self.sweep = sweep
        self.choice = choice
        self.words = words  # what loading errors tell the user to do: in the window, or on the command line
        self.models = models
        self._engine_factory = engine_factory
        self._engine = None
        self._lock = threading.Lock()
        self._cancelled = False
        self._focus = focus
        # True until the models are loaded: nothing is written before, so a closing window need
        # not wait for the load (imports and a precision probe that cannot be interrupted)
        self.loading = models is None

    def cancel(self) -> None:
        """Stop after the batch in progress (any thread)."""
        with self._lock:
            self._cancelled = True
            engine = self._engine
        if engine is not None:
            engine.cancel()

    def focus(self, frame: int | None) -> None:
        """Score frames around ``frame`` next (any thread)."""
        with self._lock:
            self._focus = frame
            engine = self._engine
        if engine is not None:
            engine.focus(frame)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _make_engine(self, models):
        if self._engine_factory is not None:
            return self._engine_factory(self.sweep, models.cls, models.seg)
        if getattr(models, "student", None) is not None:
            from fetaliqa_core.cascade import CascadeEngine

            return CascadeEngine(self.sweep, models.student, models.cls, models.seg)
        from fetaliqa_core.engine import ScoringEngine

        return ScoringEngine(self.sweep, cls=models.cls, seg=models.seg)

    def _judge_masks(self, results, item) -> None:
        """The frame choice's verdict on the batch's masks (``results``: the engine's, holding
        them), judged here rather than on the window's thread (``BatchResult.shape_hints``); the
        window judges itself what this leaves out."""
        if results is None or not getattr(results, "has_seg", False) or not hasattr(item, "shape_hints"):
            return
        try:
            from fetaliqa_core.analysis.assessment import shape_hints

            item.shape_hints = shape_hints(self.sweep, results, item.indices)
        except Exception:  # noqa: BLE001 - only a head start: the window judges the masks itself then
            item.shape_hints = None

    @Slot()
    def run(self) -> None:
        try:
            # The views need the analysis module (OpenCV) once results come: import it here,
            # not in the UI thread (a quarter of a second on a slow machine); after the preload
            # thread's imports, if they are still under way.
            import_model_libraries()

            if self.models is None:
                from fetaliqa_core.models.choice import load_models

                self.models = load_models(self.choice, words=self.words)
            self.loading = False
            self.models_ready.emit(self.models)
            engine = self._make_engine(self.models)
            with self._lock:
                self._engine = engine
                if self._focus is not None:
                    engine.focus(self._focus)
                if self._cancelled:
                    engine.cancel()
            from fetaliqa_core.cascade import CascadeEngine

            cascade = isinstance(engine, CascadeEngine)  # student batches, then the teacher's
            self.started_scoring.emit(engine.results.has_cls, engine.results.has_seg)
            for item in engine.iter_batches():
                if cascade and item.stage == "student":
                    self.batch.emit(item.batch)  # (the answer is taken from the teacher's frames only)
                elif cascade:
                    self._judge_masks(engine.teacher_results, item.batch)
                    self.teacher_batch.emit(item.batch)
                else:
                    self._judge_masks(getattr(engine, "results", None), item)
                    self.batch.emit(item)
            complete = engine.complete if cascade else engine.results.complete
            self.finished.emit(bool(complete), int(engine.results.n_done))
        except FetalIQAError as exc:
            self.failed.emit(str(exc))
        except MemoryError:
            self.failed.emit("Out of memory while scoring. Close other programs or choose a smaller model.")
        except Exception as exc:  # a bug must not take the viewer down: report it, keep the app
            traceback.print_exc(file=sys.stderr)
            self.failed.emit(f"Scoring stopped by an unexpected error: {type(exc).__name__}: {exc}")


class ScoringController(QObject):
    """Owns at most one scoring thread and forwards its signals (UI thread side)."""

    models_ready = Signal(object)
    started_scoring = Signal(bool, bool)
    batch = Signal(object)
    teacher_batch = Signal(object)
    finished = Signal(bool, int)
    failed = Signal(str)
    stopped = Signal()  # the thread has ended (after finished/failed)

    def __init__(self, parent: QObject | None = None, engine_factory=None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: ScoringWorker | None = None
        # Runs replaced by a newer one: cancelled, finishing their last batch, kept referenced
        # until their thread's 'finished' is handled (so that opening another case never waits
        # for a batch, and no thread is deleted with that signal still queued).
        self._retired: list[tuple[QThread, ScoringWorker]] = []
        # threads that signalled 'finished' but may not have ended, with their workers
        self._ending: list[tuple[QThread, ScoringWorker | None]] = []
        self.engine_factory = engine_factory

    @property
    def running(self) -> bool:
        """The current run's thread is alive (retired runs do not count)."""
        return self._thread is not None and self._thread.isRunning()

    @property
    def any_running(self) -> bool:
        return self.running or any(t.isRunning() for t, _ in self._retired)

    def start(self, sweep, choice=None, models=None, focus: int | None = None, words: str = "window") -> None:
        """Start scoring ``sweep``; an earlier run is cancelled without waiting for it. ``words``:
        "window" when a loading error is read in the window (it names the Models… dialog), "cli"
        when it goes to the command line's stderr (it names the options)."""
        self.stop()
        thread = QThread()
        thread.setObjectName("fetaliqa-scoring")
        worker = ScoringWorker(sweep, choice=choice, models=models,
                               engine_factory=self.engine_factory, focus=focus, words=words)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Through slots that check which run sent them: a replaced run's results already posted to
        # this thread arrive after its signals are disconnected (batches of another sweep raised
        # IndexError on the new one, and its 'finished' ended the new run in the window).
        worker.models_ready.connect(self._on_models_ready)
        worker.started_scoring.connect(self._on_started_scoring)
        worker.batch.connect(self._on_batch)
        worker.teacher_batch.connect(self._on_teacher_batch)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(thread.quit)
        worker.failed.connect(thread.quit)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        thread.start()

    def _current(self) -> bool:
        """The signal being delivered comes from the current run's worker."""
        sender = self.sender()
        return sender is not None and sender is self._worker

    @Slot(object)
    def _on_models_ready(self, models) -> None:
        if self._current():
            self.models_ready.emit(models)

    @Slot(bool, bool)
    def _on_started_scoring(self, has_cls: bool, has_seg: bool) -> None:
        if self._current():
            self.started_scoring.emit(has_cls, has_seg)

    @Slot(object)
    def _on_batch(self, item) -> None:
        if self._current():
            self.batch.emit(item)

    @Slot(object)
    def _on_teacher_batch(self, item) -> None:
        if self._current():
            self.teacher_batch.emit(item)

    @Slot(bool, int)
    def _on_finished(self, complete: bool, n_done: int) -> None:
        if self._current():
            self.finished.emit(complete, n_done)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if self._current():
            self.failed.emit(message)

    def stop(self) -> None:
        """Cancel the current run without waiting (its thread ends after its batch)."""
        thread, worker = self._thread, self._worker
        self._thread = self._worker = None
        if thread is None:
            return
        self._silence(worker)
        thread.quit()
        # Kept until its own 'finished' is handled, even when it has ended: a thread let go of
        # earlier can be deleted with that signal still queued, and a new run's thread made at its
        # address was then taken for its sender (the new run was forgotten and its results dropped).
        self._retired.append((thread, worker))

    @staticmethod
    def _silence(worker: ScoringWorker | None) -> None:
        """Cancel a run and drop its signals: its last batch must not reach the views."""
        if worker is None:
            return
        worker.cancel()
        for sig in (worker.batch, worker.teacher_batch, worker.models_ready, worker.started_scoring,
                    worker.finished, worker.failed):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass

    def _on_thread_finished(self) -> None:
        thread = self.sender()
        # 'finished' is emitted from the thread in its last steps, before it has ended: the last
        # reference to it, or to its worker (an object living in that thread), must not go here:
        # destroying a running QThread aborts the app, and deleting its worker from this thread
        # while it still runs crashes it. Both are kept until a later call finds it ended.
        worker = self._worker if thread is self._thread else next(
            (w for t, w in self._retired if t is thread), None)
        self._ending = [(t, w) for t, w in self._ending if not t.isFinished()]
        if isinstance(thread, QThread) and not thread.isFinished():
            self._ending.append((thread, worker))
        self._retired = [(t, w) for t, w in self._retired if t is not thread]
        if thread is self._thread:
            self._thread = None
            self._worker = None
            self.stopped.emit()

    def focus(self, frame: int | None) -> None:
        if self._worker is not None:
            self._worker.focus(frame)

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def shutdown(self, timeout_ms: int | None = None, abandon_loading: bool = False) -> bool:
        """Cancel and wait for the thread to end; True when it ended (always with no timeout).

        The engine stops after the batch in progress, so this waits at most one batch. A run
        still loading its models cannot be stopped before the load ends (seconds: imports, the
        precision probe); with ``abandon_loading`` (a closing window) it is not waited for but
        detached (:func:`detach_until_finished`), and :func:`end_process` lets the process end
        without it.
        """
        self.stop()
        ok = True
        if abandon_loading:
            for pairs in (self._retired, self._ending):
                for thread, worker in [(t, w) for t, w in pairs if w is not None and w.loading and t.isRunning()]:
                    detach_until_finished(thread, keep=worker, abandonable=True)
                    pairs.remove((thread, worker))
        # Threads that said 'finished' may still be in their last steps: a QThread destroyed
        # before it has ended aborts the process, so they are waited for too (briefly).
        for thread in [t for t, _w in self._retired] + [t for t, _w in self._ending]:
            thread.quit()  # again: a run stopped before its thread reached its event loop may sit there
            ok = (thread.wait() if timeout_ms is None else thread.wait(int(timeout_ms))) and ok
        self._retired = [(t, w) for t, w in self._retired if t.isRunning()]
        self._ending = [(t, w) for t, w in self._ending if not t.isFinished()]
        return bool(ok)


class SweepLoader(QThread):
    """Reads a sweep file off the UI thread (a compressed case takes seconds to inflate).

    ``loaded(path, sweep)`` or ``failed(path, message)``; errors a user can cause come back
    as their message, anything else as a short description (never a traceback in a dialog).
    """

    loaded = Signal(str, object)
    failed = Signal(str, str)

    def __init__(self, path: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path = str(path)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop reading soon (between chunks of inflating or converting; a read inside an image
        library's own call runs to its end): nothing is signalled then. From any thread."""
        self._stop.set()

    def run(self) -> None:
        from fetaliqa_core.io._common import ReadCancelled, cancellable

        try:
            with cancellable(self._stop.is_set):
                sweep = load_sweep_for_viewer(self.path)
        except ReadCancelled:
            return  # superseded or its window closed: its memory goes now, not at the end of the read
        except FetalIQAError as exc:
            self.failed.emit(self.path, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the user, the app goes on
            self.failed.emit(self.path, f"{self.path}: could not be read as a sweep "
                                        f"({type(exc).__name__}: {exc}).")
        else:
            self.loaded.emit(self.path, sweep)
            _warm_field_of_view(sweep)


class MaskJudge(QThread):
    """Judges every scored mask of ``results`` for ``sweep`` (``assessment.mask_shapes``, kept in
    the results' own cache) off the window's thread: with another pixel spacing each mask's size
    in mm is judged again, 1-2 s for a full case that froze the window. ``finished`` when done."""

    def __init__(self, sweep, results, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.sweep, self.results = sweep, results

    def run(self) -> None:
        from fetaliqa_core.analysis.assessment import mask_shapes

        try:
            mask_shapes(self.sweep, self.results)
        except Exception:  # noqa: BLE001 - judged again, and reported, where the answer needs it
            pass


class ReportRenderer(QThread):
    """Renders a review report off the UI thread: each sweep is read again for its thumbnails
    (0.5-1.2 s a sweep, every sweep of the database when no review is open).

    ``reading(done, name)`` before each sweep is read; the text (CSV or the HTML page) is in
    :attr:`text` once the thread has ended, for a ``.pdf`` also the finished document in
    :attr:`pdf` (laid out here too: 0.3 s and more on the window's thread), or the user-facing
    message in :attr:`error`. Writing the file is left to the caller, so that a report cancelled
    at any moment writes nothing.
    ``frames_of(path)`` returns the sweep at ``path`` (the open one without reading it again).
    """

    reading = Signal(int, str)

    def __init__(self, store, out_path, sweep_ids, frames_of, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("fetaliqa-report")
        self._args = (store, out_path, sweep_ids)
        self._frames_of = frames_of
        self._stop = threading.Event()
        self._done = 0
        self.text: str | None = None
        self.pdf: bytes | None = None
        self.error: str | None = None

    def cancel(self) -> None:
        """Stop before the next sweep is read (or while one inflates). From any thread."""
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def _load(self, path: str):
        from fetaliqa_core.review.report import ReportCancelled

        if self._stop.is_set():
            raise ReportCancelled()
        self.reading.emit(self._done, Path(str(path)).name)
        self._done += 1
        return self._frames_of(path)

    def run(self) -> None:
        from fetaliqa_core.io._common import ReadCancelled, cancellable
        from fetaliqa_core.review.report import ReportCancelled, render_report

        store, out_path, sweep_ids = self._args
        try:
            with cancellable(self._stop.is_set):
                self.text = render_report(store, out_path, sweep_ids, sweep_loader=self._load)
            if Path(str(out_path)).suffix.lower() == ".pdf" and not self._stop.is_set():
                from app.report_pdf import html_to_pdf_bytes

                self.reading.emit(self._done, "")  # every sweep read: the pages are laid out
                self.pdf = html_to_pdf_bytes(self.text)
        except (ReportCancelled, ReadCancelled):
            self._stop.set()
        except FetalIQAError as exc:
            self.error = str(exc)
        except MemoryError:
            self.error = "Out of memory while writing the report: export fewer sweeps (open one and review it)."
        except Exception as exc:  # noqa: BLE001 - reported to the user, the app goes on
            traceback.print_exc(file=sys.stderr)
            self.error = f"The report stopped on an unexpected error: {type(exc).__name__}: {exc}"


_DETACHED: list[QThread] = []
_KEPT: dict[int, QObject] = {}  # the object working in a detached thread, by the thread's id
_ABANDONABLE: set[int] = set()  # detached threads that write nothing, by id
_WAITS_AT_QUIT = False


def detach_until_finished(thread: QThread, keep: QObject | None = None, abandonable: bool = False) -> None:
    """Let a thread that cannot be interrupted (a file being read) end on its own after its
    window closed: unparented and held here (with ``keep``, the object working in it), since a
    QThread destroyed while running aborts the process; whatever it signals must already go
    nowhere. The application waits for it before it quits, or the process before it ends,
    unless it is ``abandonable`` (it writes nothing: models being loaded), which
    :func:`end_process` does not wait for."""
    global _WAITS_AT_QUIT
    thread.setParent(None)
    _DETACHED.append(thread)
    if keep is not None:
        _KEPT[id(thread)] = keep
    if abandonable:
        _ABANDONABLE.add(id(thread))
    # Not removed in its own 'finished' (emitted in its last steps: dropping the last reference
    # there would destroy it running, as ScoringController._on_thread_finished says): the next
    # 'finished' of any of them lets go of those that have ended.
    thread.finished.connect(_forget_ended)
    if not _WAITS_AT_QUIT:
        import atexit

        atexit.register(_wait_detached)  # also when the process ends without the event loop quitting
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(_wait_detached)
        _WAITS_AT_QUIT = True


def _forget_ended() -> None:
    alive = []
    for thread in _DETACHED:
        try:
            if not thread.isFinished():
                alive.append(thread)
                continue
        except RuntimeError:  # its C++ object is already gone (deleteLater)
            pass
        _KEPT.pop(id(thread), None)
        _ABANDONABLE.discard(id(thread))
    _DETACHED[:] = alive


def _wait_detached(abandonable: bool = True) -> None:
    for thread in list(_DETACHED):
        if not abandonable and id(thread) in _ABANDONABLE:
            continue
        try:
            thread.wait()
        except RuntimeError:  # its C++ object is already gone: nothing to wait for
            pass


def abandoned_work_running() -> bool:
    """Whether a detached thread that writes nothing (models being loaded) is still running."""
    for thread in _DETACHED:
        try:
            if id(thread) in _ABANDONABLE and thread.isRunning():
                return True
        except RuntimeError:
            pass
    return False


def importing_model_libraries() -> bool:
    """Whether the model libraries are still being imported in the background."""
    return any(t.is_alive() for t in _IMPORTING)


def end_process(code: int, imports: bool = False) -> None:
    """End the process now with ``code`` when only work that writes nothing is left running
    (models still loading after their window closed: a load cannot be interrupted and would
    keep a closed viewer's process alive for seconds); otherwise return. Threads that write
    (files being read, a last batch being stored) are waited for first. With ``imports`` the
    model libraries still being imported count as such work (for the program itself only: a
    host process, a test runner, goes on and must not be ended)."""

    def left() -> bool:
        return abandoned_work_running() or (imports and importing_model_libraries())

    if not left():
        return
    _wait_detached(abandonable=False)
    if not left():
        return
    from fetaliqa_core.cli import exit_now

    exit_now(code)


def _warm_field_of_view(sweep) -> None:
    """Work out the sweep's field of view here, off the window's thread, while the window shows
    its first frame: the first mask's overlay and the answer need it, and on the window's thread
    it stalled the event loop 0.1-0.4 s (``acouslic.sweep_fov`` keeps it on the sweep). So too
    whether the fan changes between frames (``acouslic.fan_change``, 0.1-0.3 s) and each sweep's brightness, which the answer reads while a sweep has no frame
    (``assessment.top_grey``, kept on the sweep)."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.analysis.assessment import top_grey

    try:
        acouslic.sweep_fov(sweep)
        acouslic.fan_change(sweep)
        for start, stop in sweep.sweep_ranges:
            top_grey(sweep, start, stop)
    except Exception:  # noqa: BLE001 - worked out again, and reported, where it is needed
        pass


def load_sweep_for_viewer(path: str | Path):
    """``io.load_sweep`` (one place, so that the window's sync and async paths agree)."""
    from fetaliqa_core.io import load_sweep

    return load_sweep(path).in_memory()  # read here, off the window's thread: see Sweep.in_memory
