"""Opening sweeps in the main window: the file dialog, recent files, drag and drop, and reading
a file off the UI thread (:class:`app.worker.SweepLoader`)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from fetaliqa_core.errors import FetalIQAError, first_names

#: Every kind the reader reads by name; a DICOM file without an extension (IM0001, as scanners name
#: them) shows under "All files", and a DICOM series folder opens with File > Open folder.
SWEEP_FILTER = ("Sweeps and pictures (*.mha *.mhd *.nrrd *.nhdr *.nii *.nii.gz *.dcm *.tif *.tiff *.png *.jpg *.jpeg)"
                ";;All files, DICOM without an extension (*)")


class SweepFilesMixin:
    """Mixed into :class:`app.main_window.MainWindow` (uses its settings, notify, alert and
    set_sweep)."""

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

    def open_path(self, path: str | Path, score: bool = True, block: bool = False) -> bool:
        """Open a sweep file: read off the UI thread (the current case stays usable meanwhile),
        then show its first frame and score it. A file that cannot be read gives a message box.

        ``block=True`` reads it here and returns whether it opened (for scripts and tests).
        """
        from app.worker import SweepLoader, load_sweep_for_viewer

        path = str(path)
        if not self._keep_unsaved_verdict("opening another sweep"):
            return False  # (the trainer chose to stay with the verdict they have not saved)
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
            self._opened(path, sweep, score)
            return True
        loader = SweepLoader(path, self)
        previous, self._loader = self._loader, loader  # the latest request wins; older results are dropped
        if previous is not None and previous.isRunning():
            from app.worker import detach_until_finished

            previous.stop()  # the latest request wins: the earlier read stops between chunks
            detach_until_finished(previous)  # not a child of the window: closing it must not destroy a running read
        loader.loaded.connect(lambda p, sw, ld=loader: self._opened(p, sw, score) if ld is self._loader else None)
        loader.failed.connect(lambda p, msg, ld=loader: self._open_failed(msg, p) if ld is self._loader else None)
        loader.finished.connect(loader.deleteLater)
        self.notify(f"Opening {Path(path).name}…", 60000)
        loader.start()
        return True

    def _opened(self, path: str, sweep, score: bool) -> None:
        self._loader = None
        self.add_recent(path)
        self.notify(f"Opened {Path(path).name}: {sweep.n_frames} frames.", 5000)
        self.set_sweep(sweep, score=score)
        self.sweep_opened.emit(path)

    def _open_failed(self, message: str, path: str | None = None) -> None:
        self._loader = None
        if path is not None:
            self._forget_if_gone(path)
        self.status_message.clear()
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

    def dropEvent(self, ev):  # noqa: N802
        """Open the first local file dropped; the others are named as not opened (the window
        shows one sweep at a time; they were ignored without a word)."""
        local = [url.toLocalFile() for url in ev.mimeData().urls() if url.isLocalFile()]
        if not local:
            return
        ev.acceptProposedAction()
        if self.open_path(local[0]) and len(local) > 1:
            others = first_names([Path(p).name for p in local[1:]], 3)
            self.notify(f"Opening {Path(local[0]).name}… {len(local)} files dropped: one sweep is shown at a time, "
                        f"so only the first is opened (not opened: {others}).", 60000)

