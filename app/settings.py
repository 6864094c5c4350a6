"""The app's remembered settings: a small JSON file in ``paths.config_dir()``.

Recent files, window geometry and dock layout, the chosen models, cascade, device and precision, the reviewer's
name, overlay opacity and cine speed. A missing or damaged file gives the defaults (the app
must open whatever is on disk); a damaged one is first set aside beside it, never overwritten, and
the window says so (:attr:`AppSettings.problem`). Writes are atomic, and write only what this
window changed over what is on disk then: two windows open at once (or a `gui --db` run while one
is open) each keep the other's settings.
"""

from __future__ import annotations

import copy
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from fetaliqa_core import paths
from fetaliqa_core.files import write_json

SETTINGS_FILENAME = paths.APP_SETTINGS_FILENAME
MAX_RECENT = 10


MAX_SETTINGS_BYTES = 1 << 20
_RANGES = {"opacity": (0.0, 1.0), "fps": (1.0, 120.0)}
_CHOICES = {"model": ("demo", "custom"), "device": ("auto", "cpu", "cuda", "mps"), "precision": ("auto", "bf16", "fp32")}


def _plain_text(value: object, limit: int = 4096) -> bool:
    return isinstance(value, str) and len(value) <= limit and "\0" not in value


def _plausible(name: str, value: object) -> bool:
    """Whether a settings value may be used (its type already matches the default's)."""
    import math

    if name in _RANGES:
        lo, hi = _RANGES[name]
        return math.isfinite(value) and lo <= value <= hi  # type: ignore[arg-type]
    if name == "device":  # as the command line takes it (cuda:1 among them), so what it saved reads back
        import argparse

        from fetaliqa_core.models.options import device_name

        try:
            return isinstance(value, str) and device_name(value) == value
        except argparse.ArgumentTypeError:
            return False
    if name == "cascade":
        return isinstance(value, bool)
    if name in _CHOICES:
        return value in _CHOICES[name]
    if name in ("geometry", "window_state"):
        return _plain_text(value, 1 << 16)
    if isinstance(value, str):
        return _plain_text(value)
    return True


def _defaults() -> dict:
    """Every setting's default, by name."""
    return {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(AppSettings)}


_SAVED_AFTER_ASIDE = "the settings file was damaged since this window read it:"


@dataclass
class AppSettings:
    recent_files: list[str] = field(default_factory=list)
    geometry: str = ""  # base64 of QMainWindow.saveGeometry()
    window_state: str = ""  # base64 of QMainWindow.saveState() (docks, toolbars)
    model: str = "demo"  # "demo" or "custom"
    cls_bundle: str = ""
    seg_bundle: str = ""
    base_weights: str = ""
    device: str = "auto"
    precision: str = "auto"  # "auto" (the device's choice), or one forced in Models...
    cascade: bool = False  # a student scores every frame first, the models above re-score its candidates
    student_bundle: str = ""  # the cascade's student (empty: the demo student)
    reviewer: str = ""
    opacity: float = 0.45
    fps: float = 15.0
    review_db: str = ""  # empty: the default database in the user data folder
    thresholds: dict = field(default_factory=dict)  # model key -> threshold the user set for it

    #: What was wrong with the file on disk, in one line for the window ("" when nothing was).
    #: (Class attributes, not fields: they are not written to the file.)
    problem = ""
    aside = None  # where a damaged file was set aside (a Path)
    _keep_file = False  # a damaged file that could not be set aside: not overwritten either

    def __post_init__(self) -> None:
        self._mark_saved(_defaults())  # made, not loaded: what differs from the defaults is its own
        self._opened: list[str] = []  # recent files this window opened since its last save, newest first
        self._told: set[str] = set()  # reasons already given to :attr:`report`
        self._extra: dict = {}  # keys of the file this version does not know (a newer one's): written back

    def _mark_saved(self, values: dict | None = None) -> None:
        """What the file holds as far as this object knows (as loaded, or as last saved): a save
        writes only the values that differ from it."""
        self._saved = copy.deepcopy(values if values is not None else asdict(self))

    @staticmethod
    def path() -> Path:
        return paths.config_dir() / SETTINGS_FILENAME

    @classmethod
    def _set_aside(cls, path: Path, why: str, s: "AppSettings | None" = None) -> "AppSettings":
        """The settings to start with when the file is damaged, the file renamed beside itself
        first: saving on close would otherwise replace it, and with it the user's model choice,
        without a word."""
        s = s if s is not None else cls()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # (a link is the user's, to a settings file kept elsewhere: never renamed, nor saved over)
        aside = None if path.is_symlink() else cls._rename_aside(path, stamp)
        s._mark_saved(_defaults())  # what could be used is written again when the settings are saved
        if aside is not None:
            s.aside = aside
            s.problem = f"{why} {s._starting_with()}; the file was set aside as {aside}."
            return s
        s._keep_file = True
        s.problem = (f"{why} {s._starting_with()}; the file could not be set aside, so it is left as it "
                     f"is and nothing is saved to it: {path}.")
        return s

    @staticmethod
    def _rename_aside(path: Path, stamp: str) -> Path | None:
        """``path`` renamed to a free ``NAME.damaged-STAMP[-N]`` beside it; None when it cannot be."""
        for n in range(1, 100):
            aside = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n > 1 else ""))
            if aside.exists() or aside.is_symlink():
                continue
            try:
                path.rename(aside)
            except OSError:
                return None
            return aside
        return None

    def _starting_with(self) -> str:
        return ("The window starts with the default settings (models, recent files, layout)"
                if self == type(self)() else "Those start from their defaults")

    @classmethod
    def load(cls) -> "AppSettings":
        """The settings on disk; any value that is missing, of the wrong type or out of range
        (NaN, an unknown device, a path with a NUL, nesting too deep) falls back to its
        default, so start-up survives any file."""
        from fetaliqa_core import validate
        from fetaliqa_core.errors import FetalIQAError

        try:
            path = cls.path()
            if not path.is_file():
                if path.exists() and not path.is_dir():  # a pipe, device or socket: ignored, then replaced
                    return cls._set_aside(path, "The settings file is no regular file (a pipe, device or socket).")
                s = cls()
                if path.is_dir():  # said at start, as a damaged file is (nothing could be saved, no word until then)
                    s.problem = (f"A folder stands where the settings file goes, {path}: {s._starting_with().lower()}"
                                 ", and the settings chosen cannot be saved. Move the folder aside.")
                return s
        except OSError:
            return cls()
        try:
            data = validate.read_json_bounded(path, "the settings file", "", max_bytes=MAX_SETTINGS_BYTES)
        except FetalIQAError as exc:  # (the reason first: a status bar cuts a long line's end)
            why = str(exc).strip().removeprefix(f"{path}: ")
            return cls._set_aside(path, why[:1].upper() + why[1:])
        if not isinstance(data, dict):
            return cls._set_aside(path, "The settings file holds no settings (no JSON object).")
        s = cls()
        unused = []
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                default = getattr(s, f.name)
                used = False
                if isinstance(default, bool) or type(value) is type(default) or (
                        isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)):
                    try:  # an integer of 400 digits is valid JSON, and no float
                        if _plausible(f.name, value):
                            setattr(s, f.name, float(value) if isinstance(default, float) else value)
                            used = True
                    except (OverflowError, ValueError, TypeError):
                        pass
                if not used:
                    unused.append(f.name)
        recent = [str(p) for p in s.recent_files if _plain_text(p)]
        thresholds = {k: float(v) for k, v in s.thresholds.items() if isinstance(k, str)
                      and isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0}
        unused += [name for name, kept, was in (("recent_files", recent, s.recent_files),
                                                 ("thresholds", thresholds, s.thresholds)) if len(kept) < len(was)]
        s.recent_files, s.thresholds = recent[:MAX_RECENT], thresholds
        names = {f.name for f in fields(cls)}
        s._extra = {k: v for k, v in data.items() if k not in names}
        if unused:
            return cls._set_aside(path, f"Some settings could not be used ({', '.join(unused)}).", s)
        s._mark_saved()
        return s

    def save(self) -> str:
        """Write the settings this object changed over the file as it is now. Written whole, the
        settings loaded at start dropped what another window saved meanwhile: its `gui --db`
        database (its verdicts then went to the default one), thresholds and recent files.
        Returns why they could not be saved, in one line ("" when saved or nothing is to be)."""
        if self._keep_file:
            return ""
        why = self._save()
        failed = self.save_failed(why)
        if self.failing and not failed:
            self._told.clear()  # (failing again later is said again)
            if callable(self.saved_again):
                self.saved_again()
        self.failing = failed
        return why

    @staticmethod
    def save_failed(why: str) -> bool:
        """Whether ``why``, what :meth:`save` returned, means the settings are not on disk (not
        only that a file damaged since was set aside before they were saved)."""
        return bool(why) and not why.startswith(_SAVED_AFTER_ASIDE)

    def _save(self) -> str:
        try:
            now = asdict(self)
            disk = type(self).load()  # a file damaged since is set aside, as at start
            if disk._keep_file:
                return self._said(f"the settings file {self.path()} was damaged since this window read it and "
                                  "cannot be set aside: nothing was saved to it")
            # a file damaged since: set aside, and this window's settings written whole (merged onto
            # the defaults it starts from, what the window had loaded was lost with it)
            written = now if disk.aside is not None else self._merged_over(asdict(disk), now)
            # what a newer version keeps there (its own keys) is written back as it was: it was dropped
            written.update({k: v for k, v in disk._extra.items() if k not in written})
            target = self._target()
            if target == self.path():  # the folder's own error (a read-only disk), not "No such file"
                target.parent.mkdir(parents=True, exist_ok=True)
            write_json(target, written)
            self._mark_saved(now)
            self._opened = []
        except OSError as exc:  # settings are a convenience: never fail the app, but say so
            from fetaliqa_core.paths import os_error_cause

            return self._said(f"the settings could not be saved to {self.path()} ({os_error_cause(exc)}): the "
                              "models, recent files and layout chosen are not kept for next time")
        if disk.aside is not None:  # damaged since this window read it: set aside, this window's settings saved
            return self._said(f"{_SAVED_AFTER_ASIDE} it was set aside as "
                              f"{disk.aside}, and this window's settings were saved (what another window had "
                              "saved in it is in that file)")
        return ""

    @classmethod
    def _target(cls) -> Path:
        """Where a save writes: the settings file, or the file it links to (a link is the user's,
        to a settings file kept elsewhere: an atomic write replaced the link by a plain file, and
        later changes no longer reached the file kept elsewhere)."""
        path = cls.path()
        if not path.is_symlink():
            return path
        try:
            return path.resolve(strict=False)
        except RuntimeError as exc:  # a loop of links
            raise OSError(f"the link {path} leads nowhere (a loop of links)") from exc

    def _merged_over(self, merged: dict, now: dict) -> dict:
        """The settings on disk (``merged``, changed in place) with what this object changed since
        it loaded or last saved them (``now``: its values)."""
        for name, value in now.items():
            was = self._saved.get(name)
            if value == was:
                continue
            if isinstance(value, dict) and isinstance(was, dict):  # per key: this window's keys
                keep = {k: v for k, v in merged[name].items() if k in value or k not in was}
                merged[name] = {**keep, **{k: v for k, v in value.items() if was.get(k) != v}}
            elif name == "recent_files" and isinstance(was, list):
                # what this window opened since, then the file's list as it is now (what another
                # window opened meanwhile leads it), then the rest of this window's; what this window
                # took off stays off (another's newest were pushed off the end by this one's old)
                dropped = set(was) - set(value)
                opened = [p for p in value if p not in was or p in self._opened]
                ahead = opened + [p for p in merged[name] if p not in opened and p not in dropped]
                merged[name] = (ahead + [p for p in value if p not in ahead])[:MAX_RECENT]
            else:
                merged[name] = value
        return merged

    #: Called with why the settings could not be saved (or what was set aside), once per reason: the
    #: window shows it (a save on a timer, or on a menu's change, said nothing). None: not called.
    report = None
    #: Called when a save succeeds after one failed (the window's lasting warning goes). None: not called.
    saved_again = None
    #: Whether the last save failed (the settings chosen since are not on disk).
    failing = False

    def _said(self, why: str) -> str:
        if why and why not in self._told and callable(self.report):
            self._told.add(why)
            self.report(why)
        return why

    def add_recent(self, path: str | Path) -> None:
        p = str(Path(path).expanduser().resolve())
        self.recent_files = [p] + [r for r in self.recent_files if r != p]
        # (opened again here: it leads the list a save merges, as a file new to the list does)
        self._opened.insert(0, p)
        del self.recent_files[MAX_RECENT:]
