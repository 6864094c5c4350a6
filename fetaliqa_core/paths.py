"""Where FetalIQA keeps its files.

User directories come from platformdirs. ``FETALIQA_HOME`` (used by the tests and CI) moves all
of them under one folder so that a run never touches the real user profile.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import platformdirs

APP_NAME = "FetalIQA"
#: The viewer's settings file in :func:`config_dir` (the window writes it; ``fetaliqa review``
#: reads the review database it names).
APP_SETTINGS_FILENAME = "app_settings.json"

_REPO_ROOT = Path(__file__).resolve().parents[1]


def resources_dir() -> Path:
    """The bundled resources (configs, FOV mask, demo models)."""
    return _REPO_ROOT / "resources"


def _home_override() -> Path | None:
    value = os.environ.get("FETALIQA_HOME")
    return Path(value) if value else None


_warned: set[str] = set()
_not_writable: list[str] = []  # the warnings, in words, for a window to show (:func:`not_writable`)


def is_text_path(path: str | Path) -> bool:
    """Whether a path is UTF-8 text: a name read from a non-UTF-8 file system holds undecodable
    bytes as surrogates, which SimpleITK's image writers abort the process on."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_TEXT_PATH = ("the path holds bytes that are not UTF-8 text, which FetalIQA's file writers cannot take: "
                 "choose a folder and name that are plain text")


def os_error_cause(exc: OSError) -> str:
    """What an OSError means for the user, in words: disk full, read-only, permission, ..."""
    causes = {errno.ENOSPC: "the disk is full", errno.EROFS: "the disk is read-only",
              errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.ENOTDIR: "a part of the path is a file, not a folder",
              errno.EEXIST: "a file of that name exists", errno.EISDIR: "it is a folder",
              errno.EDQUOT: "the disk quota is exceeded", errno.ENAMETOOLONG: "the name is too long",
              errno.EFBIG: "the file system refused a file this large (a file size limit, such as ulimit -f, "
                           "or the file system's own)"}
    return causes.get(exc.errno or 0, exc.strerror or type(exc).__name__)


_ADVICE = {errno.ENOSPC: "free disk space or write elsewhere", errno.EDQUOT: "free disk space or write elsewhere",
           errno.EROFS: "write to a folder on a writable disk",
           errno.EACCES: "choose a folder you can write to, or fix its permissions",
           errno.EPERM: "choose a folder you can write to, or fix its permissions",
           errno.ENOTDIR: "a file stands where a folder is needed: choose another output folder",
           errno.EEXIST: "choose another output folder, or move the file away",
           errno.EISDIR: "give a file name, not a folder",
           errno.EFBIG: "raise the limit, or write to another disk"}


def missing_path(path, advice: str) -> str:
    """Why ``path`` cannot be opened although given: no such file or folder, or a link that leads
    nowhere (its target missing, or back to itself: a loop read as 'no such file')."""
    from pathlib import Path

    if Path(path).is_symlink():
        return f"{path}: a link to nothing readable (its target is missing, or the link leads back to itself). {advice}"
    return f"{path}: no such file or folder. {advice}"


def os_error_message(exc: OSError) -> str:
    """One line for a failed file operation: the file, the cause in words, what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    advice = _ADVICE.get(exc.errno or 0, "check the path and try again")
    return f"{where}{os_error_cause(exc)}; {advice}."


def warn_not_writable(folder: Path, exc: OSError, what: str, advice: str = "") -> None:
    """One warning per folder and process: something optional (a cache) could not be written. A
    folder inside one already warned about is not (the results cache in a read-only cache folder
    was a second warning for the one cause). ``folder`` may be one file of it (then the warning
    names that file); ``advice``: a sentence after the warning, saying what to do."""
    key = str(folder)
    if key in _warned or any(str(parent) in _warned for parent in Path(folder).parents):
        return
    _warned.add(key)
    text = f"{what} ({folder}) cannot be written ({os_error_cause(exc)}); continuing without it." + (
        f" {advice}" if advice else "")
    _not_writable.append(text[:1].upper() + text[1:])
    logging.getLogger("fetaliqa").warning("warning: %s", text)


def not_writable() -> list[str]:
    """The warnings :func:`warn_not_writable` gave so far (any thread), oldest first: a window
    shows them too, since a warning on stderr alone is never seen there."""
    return list(_not_writable)


def _optional_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a cache or settings folder is a convenience: never stop the app
        warn_not_writable(path, exc, what)
    return path


def cache_path() -> Path:
    """Where :func:`cache_dir` is, without making it (nor warning that it cannot be)."""
    home = _home_override()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Results cache and the synthesised demo sweep. Safe to delete. May be unwritable: every
    writer there treats a failed write as "not cached"."""
    return _optional_dir(cache_path(), "the cache folder")


#: What the probe of a folder writes: an empty file is made on a full disk (it takes no block), and
#: `score --out` on one scored every frame for minutes before its first write said the disk is full.
PROBE_BYTES = 64 * 1024


def probe_writable(folder: Path) -> None:
    """Raises the OSError of writing a file in ``folder`` (a temporary one of :data:`PROBE_BYTES`,
    removed at once)."""
    import tempfile

    fd, probe = tempfile.mkstemp(prefix=".fetaliqa-probe-", dir=folder)
    try:
        view = memoryview(bytes(PROBE_BYTES))
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
        os.unlink(probe)


def out_not_writable(out: str | Path, exc: OSError, option: str = "--out"):
    """The one line (a FetalIQAError, to raise) for results that cannot be written in the folder
    the user gave: that folder named, never a temporary file inside it, and the cause in words."""
    from fetaliqa_core.errors import FetalIQAError

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = f"Free disk space, or give {option} a folder on another disk."
    else:
        advice = f"Give {option} a folder you can write to."
    return FetalIQAError(f"{out}: cannot write results there ({os_error_cause(exc)}). {advice}")


def check_out_writable(out: str | Path, option: str = "--out") -> None:
    """Raise :func:`out_not_writable`'s line when nothing can be written where ``out`` is to be:
    the folder itself if it exists, else the nearest existing folder above it (it is created
    there later; nothing is created here). For a command to call before its work (a teacher pass
    or an evaluation can take hours, and a read-only --out was found only at the first write)."""
    out = Path(out)
    for folder in (out, *out.parents):
        try:
            if not folder.exists():
                continue
            if not folder.is_dir():
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
            probe_writable(folder)
        except OSError as exc:
            raise out_not_writable(out, exc, option) from None
        return


def required_cache_dir(what: str, otherwise: str = "") -> Path:
    """The cache folder, made and writable, for something that cannot go without it (the demo
    sweep, the demo's outputs); else one line naming the setting that moves it. The demo warned
    "continuing without it" and then failed with "cannot create the folder ... Choose a folder
    you can write to", naming nothing to set. ``otherwise``: another way out, said last."""
    import sys

    from fetaliqa_core.errors import FetalIQAError

    path = cache_path()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_writable(path)
    except OSError as exc:
        how = "set FETALIQA_HOME to a folder you can write to (FetalIQA keeps its cache, settings and data there)"
        if _home_override() is None and sys.platform.startswith("linux"):
            how += ", or XDG_CACHE_HOME for the cache alone"
        raise FetalIQAError(f"{what} needs the cache folder, and {path} cannot be written ({os_error_cause(exc)}): "
                            f"{how}{otherwise}.") from None
    return path


def data_path() -> Path:
    """Where :func:`data_dir` is, without making it (for what only reads there)."""
    home = _home_override()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """User data that must be kept (the review database)."""
    from fetaliqa_core.errors import FetalIQAError

    path = data_path()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetalIQAError(f"{path}: the data folder cannot be created ({os_error_cause(exc)}). Free space or "
                            "fix its permissions, or choose another review database.") from None
    return path


def config_path() -> Path:
    """Where :func:`config_dir` is, without making it (nor warning that it cannot be)."""
    home = _home_override()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """Settings (recent files, window layout, chosen models). May be unwritable (then settings
    are not remembered)."""
    return _optional_dir(config_path(), "the settings folder")
