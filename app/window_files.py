"""Opening sweeps in the main window: the file dialog, recent files, drag and drop, and reading
a file off the UI thread (:class:`app.worker.SweepLoader`)."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog

from fetaliqa_core.errors import FetalIQAError, first_names

#: Every kind the reader reads by name; a DICOM file without an extension (IM0001, as scanners name
#: them) shows under "All files", and a DICOM series folder opens with File > Open folder.
SWEEP_FILTER = ("Sweeps and pictures (*.mha *.mhd *.nrrd *.nhdr *.nii *.nii.gz *.dcm *.tif *.tiff *.png *.jpg *.jpeg *.gif)"
                ";;All files, DICOM without an extension (*)")


#: At most this many files of a DICOM series folder are looked at (a look runs on each activation).
FILES_LOOKED_AT = 5000


def file_state(path: str | Path) -> tuple | None:
    """What tells a sweep's files rewritten since: (name, size, modification time, change time,
    inode) of each file it is read from (a header's detached data file, e.g. a .mhd's .raw, and
    every file of a DICOM series folder too: re-exporting the data under an unchanged header went
    unnoticed), or None when it is not there (or cannot be looked at). The change time (set by the
    system on every write, and by restoring the modification time) tells a file rewritten in place
    with its size kept and its modification time put back, which went unnoticed (a copy tool that
    keeps times does that). It also moves when nothing of the content changed (a chmod, a hard
    link made, an extended attribute set, times put back after a backup read the file): see
    :func:`only_change_time_moved`."""
    from fetaliqa_core.archive import member_files, member_names

    try:
        where = Path(path)
        if where.is_dir():
            # the files a series folder's reader reads, by name, stat'ed up to the cap
            names = member_names(where)
            files = [(name, os.path.join(where, name)) for name in names[:FILES_LOOKED_AT]]
            count = len(names)
        else:
            listed = member_files(where) if where.exists() else []
            if not listed:
                return None
            files, count = [(f.name, f) for f in listed], len(listed)
        state = []
        for name, f in files:
            st = os.stat(f)
            state.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    except (OSError, ValueError):
        return None
    return tuple(state) + (count,)


def only_change_time_moved(before: tuple | None, now: tuple | None) -> bool:
    """Whether two :func:`file_state` differ in the files' change times alone: the same files,
    sizes, modification times and inodes. The content may then be the same (the change time also
    moves on a chmod, a hard link, an extended attribute set) or rewritten in place with its size
    and modification time kept: only reading it again tells."""
    if before is None or now is None or len(before) != len(now) or before[-1] != now[-1]:
        return False
    return all(b[:3] + b[4:] == n[:3] + n[4:] for b, n in zip(before[:-1], now[:-1]))


def same_pixels_as_read(path: str | Path, sweep) -> bool:
    """Whether ``path`` read again holds the sweep ``sweep`` was read as (its content hash: the
    pixels, their shape and the file's spacing). False when it cannot be read now. Seconds for a
    large sweep: the window asks it off its thread (:class:`_FileComparer`)."""
    from fetaliqa_core.io import load_sweep

    try:
        return _content_hash(load_sweep(path)) == _content_hash(sweep)
    except (FetalIQAError, OSError, ValueError, MemoryError):
        return False


def _content_hash(sweep) -> str:
    """``sweep.content_hash``, worked out without taking the lock Python 3.11 holds over the
    property for every sweep while one is hashed (about 1 s for a full case): from a thread of
    its own, this hash would keep the window's thread waiting on any other sweep's."""
    known = getattr(sweep, "__dict__", {}).get("content_hash")
    if known is not None:
        return known
    work_out = getattr(getattr(type(sweep), "content_hash", None), "func", None)
    return work_out(sweep) if work_out is not None else sweep.content_hash


class _FileComparer(QObject):
    """Reads the sweep's file again and compares its pixels with those shown
    (:func:`same_pixels_as_read`) on a thread of its own, then says ``compared(self, same)`` on
    the window's thread: the window's thread stayed free meanwhile (the read took seconds for a
    large sweep, under a wait cursor, on each activation after a chmod or a backup's hard link).
    ``path``, ``state`` (its :func:`file_state` looked at just before), ``read`` and ``told`` (the
    window's ``_file_read`` and ``_file_told`` then) tell what the answer is about; ``thread`` is
    the thread reading it."""

    compared = Signal(object, bool)

    def __init__(self, path: str, state: tuple | None, read: tuple, told: tuple | None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.path, self.state, self.read, self.told = path, state, read, told
        self.thread = None

    def start(self, sweep) -> None:
        """Compare ``sweep`` (the one shown: kept in memory until the comparison ends) with the file."""
        import threading

        def work() -> None:
            try:
                same = same_pixels_as_read(self.path, sweep)
            except Exception:  # noqa: BLE001 - not known to be the same: said as changed (the safe side)
                same = False
            try:
                self.compared.emit(self, same)
            except RuntimeError:  # the window closed meanwhile
                pass

        self.thread = threading.Thread(target=work, name="fetaliqa-file-check", daemon=True)
        self.thread.start()


class _DemoMaker(QObject):
    """Makes the demo sweep (synthetic, into the cache: half a minute the first time) on a thread of
    its own, then says ``made(path, error)`` on the window's thread."""

    made = Signal(str, str)

    def start(self) -> None:
        import threading

        def work() -> None:
            from fetaliqa_core import synth
            from fetaliqa_core.paths import os_error_message

            try:
                path, error = str(synth.demo_sweep_path()), ""
            except FetalIQAError as exc:
                path, error = "", str(exc)
            except OSError as exc:
                path, error = "", os_error_message(exc)
            try:
                self.made.emit(path, error)
            except RuntimeError:  # the window closed meanwhile
                pass

        threading.Thread(target=work, name="fetaliqa-demo-sweep", daemon=True).start()


class SweepFilesMixin:
    """Mixed into :class:`app.main_window.MainWindow` (uses its settings, notify, alert and
    set_sweep)."""

    #: (path, file_state) of the sweep shown, as it was when it was read; what was last said of it
    _file_read: tuple | None = None
    _file_told: tuple | None = None
    #: the sweep read from it (weakly: one replaced since is not kept in memory for this)
    _file_sweep = None

    #: the comparison of the file read again with the sweep shown, while one runs (one at a time)
    _file_check: _FileComparer | None = None

    def check_file_on_disk(self) -> bool:
        """Say (once per change) when the file of the sweep shown was rewritten, moved or removed
        since it was read: the window goes on with the frames read then (Score again answers
        theirs, from the cache), and nothing said so; a trainer who re-exported the file under the
        same name reviewed the old one. True when it was said. One look at the file's size and
        times, on activating the window and on Score again / Resume; said in a box (on stderr when
        headless).

        When only the change time moved (a chmod, a hard link made by a backup, an extended
        attribute, times put back after a read; or a rewrite in place with size and modification
        time kept) the file is read again, once, and its pixels compared with those shown: the
        same, and nothing is said (each of those said "changed on disk ... open it again"). That
        read runs off the window's thread (seconds for a large sweep froze the window): this
        returns False at once, and the answer comes a moment later (:meth:`_file_compared`),
        said then as here when the pixels differ or the file cannot be read. One comparison runs
        at a time (an activation meanwhile starts none); an answer about a sweep no longer shown
        (another opened, the window closed) is dropped. :meth:`file_check_pending` tells whether
        one is on its way."""
        if self._file_read is None or self.model.sweep is None:
            return False
        path, before = self._file_read
        now = file_state(path)
        if now == before or (path, now) == self._file_told:
            return False
        if only_change_time_moved(before, now):
            shown = self._file_sweep() if self._file_sweep is not None else None
            if shown is not None:
                if self._file_check is None:
                    self._file_check = _FileComparer(path, now, self._file_read, self._file_told, self)
                    self._file_check.compared.connect(self._file_compared)
                    self._file_check.start(shown)
                return False  # (the answer comes with _file_compared)
        return self._say_file_changed(path, now)

    def file_check_pending(self) -> bool:
        """Whether the sweep's file is being read again for :meth:`check_file_on_disk` (its answer
        not yet acted on)."""
        return self._file_check is not None

    def _file_compared(self, check: _FileComparer, same: bool) -> None:
        """The answer of a comparison :meth:`check_file_on_disk` started, on the window's thread."""
        if check is not self._file_check:
            return  # (the window closed since: nothing is said of a sweep no longer shown)
        self._file_check = None
        check.deleteLater()
        if self._file_read is not check.read or self.model.sweep is None:
            return  # another sweep shown since: not said of a file no longer shown
        if self._file_told is not check.told:
            return  # (a change said meanwhile: the file was removed, or rewritten again)
        if same:
            self._file_read = (check.path, check.state)  # (the next look is one stat again)
            return
        self._say_file_changed(check.path, check.state)

    def _say_file_changed(self, path: str, now: tuple | None) -> bool:
        self._file_told = (path, now)
        name = Path(path).name
        what = "is no longer there" if now is None else "changed on disk"
        if now is None:
            again = ""
        elif self.interactive:
            again = " Open it again (File > Open recent) to read it as it is now."
        else:  # (a headless run: there is no window to open it in)
            again = " The scores written are of the sweep as it was read; run the command again to read it as it is now."
        # a box (the status bar's line was replaced by "All 80 frames scored." a moment later)
        self.alert("Sweep file changed", f"{name} {what} since it was opened: the window shows the sweep as it "
                   f"was read then (its frames, scores and verdicts).{again}")
        return True

    def _dialog_start(self) -> str:
        return str(Path(self.settings.recent_files[0]).parent) if self.settings.recent_files else str(Path.home())

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open sweep", self._dialog_start(), SWEEP_FILTER)
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        """File > Open folder: a DICOM series folder is one sweep (the file dialog only went into
        a folder chosen, and a series could be opened only by dropping it on the window)."""
        path = QFileDialog.getExistingDirectory(self, "Open a DICOM series folder", self._dialog_start())
        if path:
            self.open_path(path)

    _demo_maker: _DemoMaker | None = None

    def open_demo_sweep(self) -> None:
        """File > Open demo sweep: the synthetic sweep ``fetaliqa demo`` opens, made into the cache
        the first time (a new user's empty window had nothing to open)."""
        from fetaliqa_core import paths, synth

        if self._demo_maker is not None:
            self.notify("The demo sweep is being made; it opens when it is ready.")
            return
        if synth.demo_case_exists():
            self.open_path(synth.demo_sweep_path())
            return
        try:
            paths.required_cache_dir("The demo sweep")
        except FetalIQAError as exc:
            self.alert("Demo sweep", str(exc))
            return
        self._demo_maker = _DemoMaker(self)
        self._demo_maker.made.connect(self._demo_sweep_made)
        self.notify("Making the demo sweep (synthetic, once: it is kept in the cache)…", 120000)
        self._demo_maker.start()

    def _demo_sweep_made(self, path: str, error: str) -> None:
        self._demo_maker = None
        if error:
            self.alert("Demo sweep", f"The demo sweep could not be made: {error}")
            return
        self.open_path(path)

    def open_path(self, path: str | Path, score: bool = True, block: bool = False) -> bool:
        """Open a sweep file: read off the UI thread (the current case stays usable meanwhile),
        then show its first frame and score it. A file that cannot be read gives a message box.

        ``block=True`` reads it here and returns whether it opened (for scripts and tests).
        """
        from app.worker import SweepLoader, load_sweep_for_viewer

        path = str(path)
        if not self._keep_unsaved_verdict("opening another sweep"):
            return False  # (the trainer chose to stay with the verdict they have not saved)
        self._dropped_rest = []  # (a file opened otherwise ends a drop's turn)
        before = file_state(path)  # (looked at before reading: a rewrite during the read counts as a change)
        if block:
            try:
                sweep = load_sweep_for_viewer(path)
            except FetalIQAError as exc:
                self._forget_if_gone(path)
                self.alert("Cannot open sweep", str(exc))
                return False
            except (OSError, ValueError, MemoryError) as exc:
                self._forget_if_gone(path)
                self.alert("Cannot open sweep",
                           f"{path}: could not be read as a sweep ({type(exc).__name__}: {exc}).")
                return False
            self._opened(path, sweep, score, before)
            return True
        loader = SweepLoader(path, self)
        previous, self._loader = self._loader, loader  # the latest request wins; older results are dropped
        if previous is not None and previous.isRunning():
            from app.worker import detach_until_finished

            previous.stop()  # the latest request wins: the earlier read stops between chunks
            detach_until_finished(previous)  # not a child of the window: closing it must not destroy a running read
        loader.loaded.connect(lambda p, sw, ld=loader: self._opened(p, sw, score, before) if ld is self._loader else None)
        loader.failed.connect(lambda p, msg, ld=loader: self._open_failed(msg, p) if ld is self._loader else None)
        loader.finished.connect(loader.deleteLater)
        self.notify(f"Opening {Path(path).name}…", 60000)
        loader.start()
        return True

    def _opened(self, path: str, sweep, score: bool, before: tuple | None = None) -> None:
        self._loader = None
        rest, self._dropped_rest = self._dropped_rest, []
        self.add_recent(path)
        n = sweep.n_frames
        # the files dropped with it are named again here: the line that named them while it opened
        # was replaced by this one within 0.1 s, and nothing on screen said they were left out
        left = (f" Not opened (one sweep is shown at a time): {first_names([Path(p).name for p in rest], 3)}."
                if rest else "")
        self.notify(f"Opened {Path(path).name}: {n} frame{'' if n == 1 else 's'}.{left}", 30000 if rest else 5000)
        self.set_sweep(sweep, score=score)
        self.remember_file(path, before, sweep)
        self.sweep_opened.emit(path)

    def remember_file(self, path: str | Path, before: tuple | None = None, sweep=None) -> None:
        """The sweep shown (``sweep``, default the model's) was read from ``path`` (``before``: its
        :func:`file_state` looked at before it was read), for :meth:`check_file_on_disk` (a sweep
        given on the command line was never looked at again)."""
        import weakref

        path = str(path)
        self._file_read, self._file_told = (path, before if before is not None else file_state(path)), None
        sweep = self.model.sweep if sweep is None else sweep
        self._file_sweep = weakref.ref(sweep) if sweep is not None else None

    def _open_failed(self, message: str, path: str | None = None) -> None:
        self._loader = None
        if path is not None:
            self._forget_if_gone(path)
        self.status_message.clear()
        rest, self._dropped_rest = self._dropped_rest, []
        if rest:  # of several files dropped, the next is tried (a damaged first stopped the drop)
            self.alert("Cannot open sweep", f"{message}\n\nOpening the next file dropped, {Path(rest[0]).name}, "
                       "instead.")
            self.sweep_open_failed.emit(message)
            self._open_dropped(rest)
            return
        self.alert("Cannot open sweep", message)
        self.sweep_open_failed.emit(message)

    def add_recent(self, path: str | Path) -> None:
        self.settings.add_recent(path)
        self.settings.save()
        self._rebuild_recent()

    def _forget_if_gone(self, path: str | Path) -> None:
        """A recent file that no longer exists leaves File > Recent: each click on it failed the
        same way. (One that exists but cannot be read stays: it may be fixed or copied again.)"""
        p = Path(path).expanduser()
        try:
            if p.exists():
                return
            key = str(p.resolve())
        except (OSError, RuntimeError, ValueError):
            return
        if key in self.settings.recent_files:
            self.settings.recent_files.remove(key)
            self.settings.save()
            self._rebuild_recent()

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.settings.recent_files:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, path=p: self.open_path(path))
        self.recent_menu.setEnabled(bool(self.settings.recent_files))

    def dragEnterEvent(self, ev):  # noqa: N802
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()

    #: the files dropped after the one being opened: tried in turn while one cannot be read
    _dropped_rest: list = []

    def dropEvent(self, ev):  # noqa: N802
        """Open the first local file dropped; the others are named as not opened (the window
        shows one sweep at a time; they were ignored without a word), and the next is tried when
        one cannot be read (a damaged first file stopped the drop)."""
        local = [url.toLocalFile() for url in ev.mimeData().urls() if url.isLocalFile()]
        if not local:
            return
        ev.acceptProposedAction()
        self._open_dropped(local)

    def _open_dropped(self, files: list[str]) -> None:
        self._dropped_rest = []
        if self.open_path(files[0]) and len(files) > 1:
            self._dropped_rest = list(files[1:])
            others = first_names([Path(p).name for p in files[1:]], 3)
            self.notify(f"Opening {Path(files[0]).name}… {len(files)} files dropped: one sweep is shown at a time, "
                        f"so only the first that opens is shown (not opened: {others}).", 60000)

