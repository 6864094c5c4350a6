"""Writing files so that a reader never sees half of one, and JSON without NaN.

:func:`atomic_path` is the one place that does "write to a temporary file in the same folder,
flush it to disk, then rename it over the target" (``os.replace`` is atomic within one file
system, on POSIX and on Windows). :func:`atomic_write` and :func:`write_json` are built on it,
and :func:`atomic_output_dir` does the same for a folder of results.

JSON has no NaN or infinity: :func:`json_safe` turns them into ``null`` ("not available"), and
numpy scalars and arrays into plain Python numbers and lists.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fetaliqa_core.errors import FetalIQAError

__all__ = ["atomic_output_dir", "atomic_path", "atomic_torch_save", "atomic_write", "csv_writer", "json_safe",
           "json_text", "plain_text", "safetensors_save_file", "spreadsheet_safe", "swap_in_dir", "write_json"]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Context manager yielding a temporary path next to ``path``; write the file there.

    When the block ends without an exception the file is flushed to disk and renamed over
    ``path``; otherwise it is removed and ``path`` is left as it was. ``suffix`` (default: the
    target's own, e.g. ``.npy``) keeps writers that choose the format by suffix working.
    """
    path = Path(path)
    if suffix is None:
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except OSError as exc:
        _name_the_target(exc, path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def refuse_link_to_nothing(out: Path) -> None:
    """Refuses a results folder that is, or lies inside, a link to nothing (its target missing, or
    a loop back to itself): resolving such a path raised "Symlink loop" in a traceback, and making
    a folder under it said "a file of that name exists"."""
    out = Path(out).expanduser()
    for link in (out, *out.parents):
        if link.is_symlink() and not link.exists():
            raise FetalIQAError(f"{link} is a link to nothing ({os.readlink(link)}): choose a folder for the "
                                "results, or remove the link.")


def atomic_write(path: str | Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text is encoded with ``encoding``) to ``path`` atomically."""
    path = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
    return path


def _os_error_within(exc: BaseException) -> OSError | None:
    """The OSError a library's own error was raised in handling of (or from), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, a failed write raised as its OSError.

    Given a path, torch.save writes through its own C++ stream and a full disk (or a file size
    limit) came out as two RuntimeErrors ("basic_ios::clear: iostream error", "unexpected pos"):
    a 50-line traceback where every other write says "the disk is full" in one line. Written
    through a Python file the OSError is raised, or kept as the RuntimeError's context."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                torch.save(obj, fh)
        except RuntimeError as exc:
            cause = _os_error_within(exc)
            if cause is None:
                raise
            raise cause from None
    return path


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def safetensors_save_file(tensors: Mapping[str, Any], path: str | Path,
                          metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file``, a failed write raised as an OSError (write into
    :func:`atomic_path`'s temporary file so that a failure leaves nothing behind).

    safetensors reports a full disk as its own SafetensorError ("I/O error: File too large (os
    error 27)"), which no one-line handler knows: the error number in its text is raised as the
    OSError it was. The file gets a plain file's permissions (safetensors writes 0600)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), str(path), metadata=metadata)
    except SafetensorError as exc:
        found = _RUST_OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from None
    normal_file_permissions(Path(path))


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN / infinity replaced by None, numpy scalars and arrays by Python values,
    tuples by lists and paths by strings (what ``json.dumps`` can write as standard JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, (str, int, float, bool)) else k: json_safe(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None:
        if isinstance(obj, np.generic):
            return json_safe(obj.item())
        if isinstance(obj, np.ndarray):
            return json_safe(obj.tolist())
    return obj


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Standard JSON (no NaN) for ``obj`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as standard JSON (NaN and infinity as null) to ``path`` atomically."""
    return atomic_write(path, json_text(obj, indent=indent, sort_keys=sort_keys) + "\n")


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, drop: tuple[str, ...] = (),
                      protect: tuple[str | Path, ...] = ()) -> Iterator[Path]:
    """Context manager: files are written into a temporary sibling folder that replaces ``out``
    only when everything succeeded, so a failed run leaves nothing half-written.

    When ``out`` already exists only the files written this time replace their namesakes in it;
    other files there are kept (a folder with other content is never deleted), except those
    named in ``drop`` that were not written this time: files of an earlier run of the same
    writer that would now contradict the new ones (e.g. a challenge answer beside a new summary;
    the caller passes them only for a folder it knows it wrote; a name may be a path under
    ``out``, and the folders it leaves empty go with it). Files written in a subfolder (the
    challenge's ``images/...``) go into that subfolder of ``out``, beside what else it holds. A
    folder where a file is to go, or a file or link where a folder is to go, is refused, before
    anything is replaced: it is never deleted. So is a file in ``protect`` (the input being read)
    where a result file goes: it is neither replaced nor dropped.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FetalIQAError(f"{out} is an existing file, not a folder: choose a folder for the results "
                            "(it is created if needed).")
    refuse_link_to_nothing(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # An existing folder gets its temporary one inside it: the files then move within one file
    # system, and only the folder itself need be writable (a mount point, a link to another disk,
    # a folder in one the user cannot write: each failed after every frame was scored). A new one
    # is made beside it and renamed into place.
    # (a short prefix: a folder named near the 255-byte limit must still have its temporary sibling)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:40]}.", dir=out if out.is_dir() else out.parent))
    _normal_permissions(tmp)  # mkdtemp makes 0700: colleagues on a shared folder must read results
    try:
        yield tmp
        if tmp.parent == out:
            written = {p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir()}
            folders = sorted({q.as_posix() for n in written for q in Path(n).parents if q != Path(".")})
            in_the_way = sorted(n for n in written if (out / n).is_dir() and not (out / n).is_symlink())
            if in_the_way:
                raise FetalIQAError(f"{out / in_the_way[0]} is a folder where a result file goes; nothing was "
                                    "written. Move it away, or choose another output folder.")
            blocked = [n for n in folders if (out / n).is_symlink() or ((out / n).exists() and not (out / n).is_dir())]
            if blocked:
                raise FetalIQAError(f"{out / blocked[0]} is a file or a link where a folder of results goes; nothing "
                                    "was written. Move it away, or choose another output folder.")
            inputs = sorted(n for n in written | set(drop) if is_protected(out / n, protect))
            if inputs:
                raise FetalIQAError(f"{out / inputs[0]} is the file being read: the results would replace it; "
                                    "nothing was written. Choose another output folder.")
            for name in folders:
                (out / name).mkdir(exist_ok=True)
            for name in sorted(written):
                target = out / name
                if target.is_symlink() and target.is_dir():
                    target.unlink()  # the link itself, never what it points to
                os.replace(tmp / name, target)
            for name in drop:
                old = out / name
                if (name not in written and old.is_file() and not old.is_symlink()
                        and not reached_through_link(out, name)):
                    old.unlink()
                    remove_empty_folders(old.parent, out)
            for name in folders:  # (the challenge's mask lies in a folder of its own: its entry too)
                _fsync_dir(out / name)
            _fsync_dir(out)
        else:
            for folder in (p for p in tmp.rglob("*") if p.is_dir() and not p.is_symlink()):
                _fsync_dir(folder)
            os.replace(tmp, out)
            _fsync_dir(out.parent)
    except OSError as exc:
        _name_the_target(exc, out, tmp)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became ``out``


def reached_through_link(out: Path, name: str) -> bool:
    """Whether the path ``name`` under ``out`` passes through a link on its way (a folder of it
    that is a link): a file there lies in the folder the link points to, and is not ours."""
    return any((out / q).is_symlink() for q in Path(name).parents if q != Path("."))


def remove_empty_folders(folder: Path, top: Path) -> None:
    """``folder`` and the folders above it up to ``top`` (kept), each while it is empty: what a
    dropped result file in a subfolder leaves (a folder holding anything else stays)."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()  # (only an empty folder)
        except OSError:
            return
        folder = folder.parent


def _name_the_target(exc: OSError, target: Path, staged: Path | None = None) -> None:
    """A failed write of an open file (a full disk) names no file: "the disk is full; free disk
    space or write elsewhere" did not say where. The file or folder being written is named; a
    file in the hidden temporary folder ``staged`` by its place in ``target`` (the user was shown
    a ``.out._cc_qvjp/summary.json`` they never named, and which is gone)."""
    if exc.filename is None:
        exc.filename = str(target)
    elif staged is not None:
        try:
            exc.filename = str(target / Path(exc.filename).relative_to(staged))
        except (TypeError, ValueError):
            pass


def swap_in_dir(staged: Path, target: Path) -> None:
    """Put the complete folder ``staged`` in place of ``target``: an old ``target`` is renamed away
    (``.<name>.old-<hex>``) first, removed after, so that ``target`` is at every instant absent or
    complete; when ``staged`` cannot be put in place the old one goes back.
    Another process (a second machine on the same folder) may put its own ``target`` in place
    between the two renames: then it is moved away in turn (both are complete; the last wins)."""
    olds: list[Path] = []
    placed = False
    try:
        for attempt in range(5):
            if target.exists():
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                try:
                    os.replace(target, old)
                    olds.append(old)
                except FileNotFoundError:  # the other process moved it first
                    pass
            try:
                os.replace(staged, target)
                placed = True
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 4:
                    raise
    finally:
        if not placed and olds and not target.exists():
            try:  # ours could not be put in place: the result that was there goes back
                os.replace(olds.pop(), target)
            except OSError:
                pass
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)


def is_protected(target: Path, protect: tuple[str | Path, ...]) -> bool:
    """Whether writing a file at ``target`` would replace one of ``protect`` (the same file under
    that name; a link there is replaced itself, never what it points to)."""
    try:
        if target.is_symlink() or not target.is_file():
            return False
        return any(Path(p).is_file() and os.path.samefile(target, p) for p in protect)
    except OSError:
        return False


#: Unicode's direction marks, embeddings, overrides and isolates: invisible, they turn the text
#: around them (a reviewer's name strips them; a cell may hide a formula behind them).
BIDI_CONTROLS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
#: Characters a spreadsheet may skip before it reads a formula: spaces, zero-width and direction
#: marks, the byte-order mark.
_INVISIBLE_LEAD = " \u00a0\u200b\u200c\u200d\ufeff" + BIDI_CONTROLS
#: Formula starts (OWASP's list for CSV injection), with their full-width forms.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def plain_text(value: Any) -> str:
    """``value`` as text that can be written as UTF-8: a file name that is not UTF-8 (made by
    another system's encoding) holds its undecodable bytes as surrogates, which no UTF-8 file can
    take; each such byte is written as its escape (``bad\\xff.mha``), as a terminal shows it."""
    return _SURROGATE.sub(_escaped_surrogate, str(value))


#: Lone surrogates: an undecodable byte of a file name (U+DC80-U+DCFF) or a broken character.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped_surrogate(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def spreadsheet_safe(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text, never runs: one that starts with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return (OWASP's list for CSV injection), or their full-width
    forms, also behind spaces or invisible marks, gets a leading apostrophe, unless it is a plain
    number such as ``-1`` or ``-0.25``. A name that is not UTF-8 is escaped (:func:`plain_text`)."""
    text = plain_text(value)
    if text.lstrip(_INVISIBLE_LEAD)[:1] in _FORMULA_START:
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames) to disk; a no-op where folders cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _chmod_less_umask(path: Path, mode: int) -> None:
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, mode & ~umask)


def _normal_permissions(folder: Path) -> None:
    """The permissions a plain ``mkdir`` would give (0777 less the umask)."""
    _chmod_less_umask(folder, 0o777)


def normal_file_permissions(path: Path) -> None:
    """The permissions a plain ``open(..., "w")`` would give a new file (0666 less the umask), for
    files a library writes private (safetensors writes 0600: a bundle others could not load)."""
    _chmod_less_umask(path, 0o666)


def _one_line_break(text: str) -> str:
    """Carriage returns inside a cell become line feeds: ``csv`` quotes a cell only for the
    characters of its own line ending, so a lone ``\r`` with ``lineterminator="\n"`` would be
    written bare and split the row in a spreadsheet."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


class _SafeWriter:
    """``csv.writer`` whose text cells go through :func:`spreadsheet_safe` (numbers as they are)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Any) -> Any:
        return self._writer.writerow([v if isinstance(v, (int, float)) or v is None else _one_line_break(
            spreadsheet_safe(v)) for v in row])

    def writerows(self, rows: Any) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(fh: Any, **kwargs: Any) -> _SafeWriter:
    """The one CSV writer: like ``csv.writer(fh, **kwargs)``, but no cell can be read as a
    formula by a spreadsheet (OWASP's rule, see :func:`spreadsheet_safe`)."""
    import csv

    return _SafeWriter(csv.writer(fh, **kwargs))


#: Folders this process is writing results into, each with the lock that tells other runs so
#: (held until the process ends).
_CLAIMED: dict[str, object] = {}


def _claim_file(folder: str | Path) -> tuple[str, Path]:
    """``(the folder's full path, the cache path of its lock without suffix)``."""
    import hashlib

    from fetaliqa_core import paths

    key = str(Path(folder).expanduser().resolve())
    return key, paths.cache_dir() / "locks" / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def claim_output_folder(folder: str | Path) -> bool | None:
    """Claim ``folder`` for this process's results, for as long as it runs: True when claimed (or
    claimed before), False when another FetalIQA run holds it now (two runs of the same default
    folder each chose it as free, and one's results replaced the other's, both saying done), None
    when no lock can be taken (an unwritable cache folder): the run goes on unclaimed. The lock is
    a file in the cache folder named after the folder's full path, never one beside the results;
    the holder's process id is written beside it (:func:`output_folder_holder`)."""
    from filelock import FileLock, Timeout

    try:
        key, name = _claim_file(folder)
    except (OSError, RuntimeError, ValueError):
        return None
    if key in _CLAIMED:
        return True
    try:
        name.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(name) + ".lock")
        lock.acquire(timeout=0)
    except Timeout:
        return False
    except OSError:
        return None
    _CLAIMED[key] = lock
    try:  # (not in the lock file itself: opening it to lock may empty it)
        Path(str(name) + ".pid").write_text(str(os.getpid()))
    except OSError:
        pass
    return True


def output_folder_holder(folder: str | Path) -> int | None:
    """The process id of the run that last claimed ``folder`` (:func:`claim_output_folder`), None
    when unknown: for the message that refuses the folder to another run."""
    try:
        text = Path(str(_claim_file(folder)[1]) + ".pid").read_text()[:20].strip()
    except (OSError, RuntimeError, ValueError):
        return None
    return int(text) if text.isdigit() else None
