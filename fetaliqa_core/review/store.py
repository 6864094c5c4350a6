"""The review database: sweeps, model runs and trainers' verdicts in one SQLite file.

Durability
    The file is opened in WAL mode with ``synchronous=FULL``. Every public call that writes is
    its own transaction and is committed before the call returns, so a verdict is on disk as
    soon as ``record_verdict`` returns. ``FULL`` (rather than ``NORMAL``) because in WAL mode
    ``NORMAL`` only survives a crash of the program: after a power cut or an OS crash the last
    commits may roll back. Verdicts are entered at human speed (about one per second), so one
    fsync per verdict costs nothing anyone notices, and a trainer's work is never lost.

History
    Verdicts are never updated or deleted: re-entering a verdict for the same (sweep, frame,
    reviewer) adds a row, and the most recent row wins (``verdicts(..., history=True)`` returns
    them all). The audit trail therefore shows when a reviewer changed their mind.
    ``withdraw_verdict`` (a key pressed on the wrong frame) adds a row too, marked withdrawn
    and holding the label it withdraws: when it is the most recent row, the reviewer has no
    verdict on the frame, which counts as not judged in the queues, the progress, the reports,
    the labels for training and the agreement; a later verdict stands again.

Model calls and agreement
    ``flagged`` marks the frames the models propose as good enough to measure the abdominal
    circumference (the positive class of the quality task). A reviewer's label is positive when
    it is ``optimal`` or ``suboptimal`` (ground-truth mask label 1 or 2) and negative when it is
    ``not_usable``; the reviewer agrees with the model when the two calls match.

Queues (``review_queue``), frame indices in ascending order
    ``candidates``     flagged frames plus the chosen frame of the latest model run;
    ``disagreements``  frames where the classifier and the segmenter disagree (p >= threshold
                       on one but not the other), plus frames whose latest verdict by the
                       reviewer disagrees with the model;
    ``unreviewed``     candidates and disagreements that the reviewer has not judged yet;
    ``all``            every frame.
    ``progress`` counts over the same frames (for ``unreviewed``: candidates and disagreements),
    so "12 / 40 reviewed" stays meaningful while the unreviewed queue shrinks.

Threads and processes
    One connection, shared by all threads of the process (``check_same_thread=False``) and
    serialised by a lock: the GUI thread and a worker may both use one ``ReviewStore``. Other
    processes (a ``fetaliqa review export`` while the app is open) wait up to ``busy_timeout``.
    What another connection committed since (a second window on the same file) moves
    ``data_version``: a window reads its verdicts again when it did.

Schema
    ``PRAGMA user_version`` holds the schema version; ``MIGRATIONS`` is the ordered list of
    steps. Opening an older file applies the missing steps in one transaction, after copying the
    file to ``<name>.v<old>.bak`` (SQLite backup API); opened only to read where it may not be
    written, a file of schema ``READABLE_FROM`` or later is read as it is (a v2 file holds no
    withdrawals), an older one is refused. A file from a newer FetalIQA, a file that
    is not an SQLite database, or an SQLite database that belongs to another program is left
    untouched and reported as a ``FetalIQAError``: the file is identified read-only (its header,
    then a read-only connection) before anything that can write to it, the journal mode
    included. An empty (0-byte) file, or an SQLite database without tables, becomes a new
    review database only when the store may create one (``create=True``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fetaliqa_core import paths
from fetaliqa_core.analysis.assessment import SEG_THRESHOLD
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.review.records import (  # noqa: F401  (re-exported: the store's public values)
    ACOUSLIC_CODE,
    AUTO,
    LABEL_FROM_CODE,
    LABEL_TITLES,
    LABELS,
    QUEUE_KINDS,
    DamagedRow,
    ModelRun,
    QueueKind,
    ReviewPosition,
    SweepRecord,
    Verdict,
    check_label,
    check_reviewer,
    clean_note,
    encode_mask,
    f32_blob,
    i32_blob,
    mask_from_blob,
    mask_size,
    run_from_row,
    sweep_from_row,
    utc_now,
    verdict_from_row,
)
from fetaliqa_core.review.schema import (  # noqa: F401
    APPLICATION_ID,
    BUSY_TIMEOUT_MS,
    MIGRATIONS,
    READABLE_FROM,
    SCHEMA_VERSION,
    apply_migrations,
    check_identity,
    read_identity,
    recognise,
    rollback,
    sqlite_uri,
    unreadable_error,
)

DB_FILENAME = "reviews.sqlite3"


def default_db_path(make: bool = True) -> Path:
    """``paths.data_dir() / "reviews.sqlite3"``; with ``make=False`` its folder is not made (a
    listing on a read-only disk was told to "free space" by the folder it did not need)."""
    return (paths.data_dir() if make else paths.data_path()) / DB_FILENAME


def remembered_db_path() -> Path | None:
    """The review database the window uses when it is not the default one: the last that
    ``fetaliqa gui --db`` named (kept in the viewer's settings), or None. Read here so that
    ``fetaliqa review`` without ``--db`` reads the database the trainers write to."""
    from fetaliqa_core import validate

    path = paths.config_path() / paths.APP_SETTINGS_FILENAME  # (where `fetaliqa gui --db` leaves it; only read)
    try:
        if not path.is_file():
            return None
        data = validate.read_json_bounded(path, "the settings file", "", max_bytes=1 << 20)
    except (OSError, FetalIQAError):
        return None  # the window falls back to its defaults on such a file too
    value = data.get("review_db") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        return None
    return Path(value)


def _little_space(path: Path) -> bool:
    """Whether the file system holding ``path`` has (almost) no room left."""
    try:
        return shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        return False


def _file_size_limited() -> bool:
    """Whether this process may write files of a limited size only (``ulimit -f``)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return False
    return soft != resource.RLIM_INFINITY


def _unfinished_write(exc: sqlite3.OperationalError) -> bool:
    """Whether a read-only connection failed because a program stopped in the middle of a write
    and left its rollback journal, which SQLite must put back before the file can be read."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_READONLY_ROLLBACK


def _log_needs_writing(exc: sqlite3.OperationalError) -> bool:
    """Whether a read-only connection failed because SQLite could not make or set up the
    shared-memory index (``-shm``) that reading a write-ahead log needs (the folder may not be
    written): "unable to open database file", or "read-only" where an index it may not write is
    there already."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY)


#: The private folders a read takes a copy of the database into (:meth:`ReviewStore._read_private_copy`):
#: ``fetaliqa-review-<pid>-<8 random characters>`` in the temporary folder, named by the process reading.
_PRIVATE_PREFIX = "fetaliqa-review-"
_PRIVATE_NAME = re.compile(r"fetaliqa-review-([0-9]{1,10})-[a-z0-9_]{8}")


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs now (one of another user's counts as running)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # (permission denied: it runs, as another user)
        return False
    return False


def _remove_abandoned_copies(root: str | Path) -> None:
    """Remove the private copies of review databases left in ``root`` by reads that were killed
    (-9, a power cut) before they could remove them: each held the reviewers' names, their notes
    and the patients' file paths, and stayed in the temporary folder for good. Only folders of
    the exact name the reads give them, owned by this user, and whose process is gone; never
    through a link. POSIX only (elsewhere a process is not asked after this way: on Windows,
    signal 0 is Ctrl+C)."""
    if os.name != "posix":
        return
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        match = _PRIVATE_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or not _process_gone(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


class DatabaseBusy(FetalIQAError):
    """Another program held the review database's write lock for longer than the wait allowed:
    nothing was changed, and the same change can be tried again."""


class DatabaseReplaced(FetalIQAError):
    """The review database's path no longer names the file the store opened (moved, deleted, or
    replaced by another file, e.g. a backup put back): nothing was written, and the store must be
    opened again to write to the file now at the path."""


def _db_errors(method):
    """Run under the store's lock; turn SQLite failures into messages a user can act on."""

    @functools.wraps(method)
    def wrapper(self: ReviewStore, *args, **kwargs):
        with self._lock:
            if self._conn is None:
                raise FetalIQAError(f"The review database {self.path} is closed.")
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                raise self._user_error(exc) from exc
            except DamagedRow as exc:
                raise FetalIQAError(
                    f"The review database {self.path} holds a damaged row ({exc}): it was changed by another "
                    "program or the disk is failing. Nothing was changed: restore it from a backup, or choose "
                    "another file with --db.") from None

    return wrapper


# ----------------------------------------------------------------------------- the store


class ReviewStore:
    """The review database. ``ReviewStore()`` opens (creating if needed) the default file.

    ``create=False`` refuses to create a missing file, and refuses an empty (0-byte) file or an
    SQLite database without tables instead of making it a review database (the export commands
    use it so that a mistyped ``--db`` is reported instead of producing an empty report).
    ``open_wait_ms``: how long opening waits for another program's write (updating an earlier
    version's database writes), then :class:`DatabaseBusy`; default the busy timeout, also
    what the open store waits afterwards.
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True, read_only: bool = False,
                 open_wait_ms: int | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path(make=create and not read_only)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        # the file opened, (device, inode): a write is refused once the path names another (_check_same_file)
        self._opened: tuple[int, int] | None = None
        self._abs_path = os.path.abspath(self.path)  # (SQLite keeps the file it opened, whatever the working folder)
        # how long a statement waits for another writer (waiting_at_most); opening may wait less
        self._wait_ms = BUSY_TIMEOUT_MS if open_wait_ms is None else max(int(open_wait_ms), 0)
        self._withdrawn_col = "withdrawn"  # "0" on a v2 database read as it is (see _migrate)
        self._create = create = create and not read_only
        self._read_only = read_only
        self._only_reads = read_only  # (an earlier version's database is still updated: _migrate)
        # a private folder holding a copy of the file read instead of it (_read_private_copy)
        self._private_folder: Path | None = None
        if self.path.is_dir():
            raise FetalIQAError(f"The review database path {self.path} is a folder: "
                                "give a file name, e.g. reviews.sqlite3.")
        if self.path.exists() and not self.path.is_file():
            raise FetalIQAError(f"The review database path {self.path} is not a regular file (a pipe, device "
                                "or socket): give the path of a database file, e.g. reviews.sqlite3.")
        if not self.path.exists():
            if not create:
                if path is None:  # the default one, never made
                    raise FetalIQAError(f"There is no review database at {self.path} (the default): nothing was "
                                        "reviewed there. Give --db FILE for one chosen in the viewer, or review "
                                        "frames in the viewer first.")
                if self.path.is_symlink():  # a link that loops or leads nowhere "did not exist"
                    raise FetalIQAError("The review database " + paths.missing_path(self.path, "Check the --db path."))
                raise FetalIQAError(f"The review database {self.path} does not exist: check "
                                    "the --db path (the app keeps its database in "
                                    f"{default_db_path(make=False)}).")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FetalIQAError(f"Cannot create the folder for the review database "
                                    f"{self.path}: {paths.os_error_cause(exc)}. Choose another --db.") from None
        # Read-only: a file of another program is never modified, an empty one never filled.
        if recognise(self.path) == 0 and not create:
            raise self._empty_error()
        # create=False: "rw" never creates the file, even if it is removed in the meantime.
        target = self.path if create else sqlite_uri(self.path, "rw")
        try:
            if read_only:
                self._conn = self._connect_read_only()
                self._configure()
                if self._schema_behind() and self._writable():
                    # an earlier version's database that may be written: opened as any command opens
                    # it, updated (with its backup), then read only
                    self.close()
                    self._read_only = False
            if not self._read_only:
                self._conn = sqlite3.connect(target, timeout=self._wait_ms / 1000, uri=not create,
                                             isolation_level=None, check_same_thread=False)
                self._configure()
            self._migrate()
            if read_only and not self._read_only:
                self._conn.execute("PRAGMA query_only = ON")
                self._read_only = True
            self._opened = self._file_identity()
            if self._wait_ms != BUSY_TIMEOUT_MS:  # opened: waits as any store does from now on
                self._wait_ms = BUSY_TIMEOUT_MS
                self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.DatabaseError as exc:
            error = self._user_error(exc)
            self.close()
            raise error from exc
        except BaseException:
            self.close()
            raise

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file the path names now, or None where there is none."""
        try:
            st = os.stat(self._abs_path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_dev, st.st_ino

    def _check_same_file(self) -> None:
        """Refuse to write when the path no longer names the file this store opened. SQLite keeps
        writing to the file it opened: deleted, every verdict saved afterwards was reported saved
        and was gone once the window closed; replaced by a backup put back (copied, then renamed
        over it), the window's writes went on into a write-ahead log beside the restored file,
        which then read as damaged, the restored verdicts lost."""
        try:
            now = self._file_identity()
        except OSError:
            return  # (it cannot be told, e.g. its folder may not be searched: SQLite says what is wrong)
        if now != self._opened:
            raise DatabaseReplaced(
                f"The review database {self.path} was moved, deleted or replaced by another file since it was "
                "opened: nothing was saved. Open it again to go on.")

    @staticmethod
    def _empty_log(conn: sqlite3.Connection) -> None:
        """After a commit, copy the write-ahead log into the database file and empty it, so that
        between writes the file holds everything: a backup put back over it (copied, then
        renamed) was read with the log of the file it replaced (its pages over the backup's), as
        damaged, and the backup's verdicts were lost. The commit is on disk already: a reader
        of another program that keeps the log from being emptied (busy) leaves it for the next
        write."""
        try:
            # never waited for: a reader holding the log (an export running) made every verdict's save
            # wait out the busy timeout (5 s) on the window's thread; the next write empties it instead
            waited = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {waited}")
        except sqlite3.OperationalError:
            pass

    @contextlib.contextmanager
    def _immediate(self, conn: sqlite3.Connection):
        """One immediate transaction on the file this store opened (:meth:`_check_same_file`
        first): committed when the block ends, rolled back when it raises; the write-ahead log
        emptied after the commit (:meth:`_empty_log`)."""
        self._check_same_file()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        self._empty_log(conn)

    def _schema_behind(self) -> bool:
        return self._conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION  # type: ignore[union-attr]

    def _writable(self) -> bool:
        return os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that can only read (``read_only``: the export and list commands), so that a
        database on read-only media or in a folder one may not write still reports; when SQLite
        cannot even keep its shared-memory file beside it, the file is read as unchanging.

        A file with an unfinished write left beside it (a ``-journal`` of a program that stopped
        in the middle of a change) is read as it was before that change: SQLite must put the
        journal back into the file first, which a connection that only reads may not do, and the
        file itself then holds pages of the unfinished change. Read as unchanging, such a file
        showed no verdicts at all, and an export wrote an empty labels file without a word. The
        file and its journal are copied aside and the copy is completed and read
        (:meth:`_read_private_copy`): the user's files stay as they are, and the next window or
        command that writes to the database completes it in place.

        A file whose write-ahead log (``-wal``) holds changes not yet copied into it (a window or
        command killed, or still running), in a folder the user may not write, and without the
        log's shared-memory index (``-shm``), cannot be read in place: SQLite must make that index
        beside it first. Every read command refused it with "Cannot write the review database",
        though it only reads. The file and its log are copied aside and read the same way."""
        import tempfile

        _remove_abandoned_copies(tempfile.gettempdir())
        last: sqlite3.OperationalError | None = None
        wal = self.path.with_name(self.path.name + "-wal")
        journal = self.path.with_name(self.path.name + "-journal")
        # (immutable reads ignore a write-ahead log, and an unfinished write's journal: only
        # when there is neither beside the file)
        unchanging = not any(log.exists() and log.stat().st_size > 0 for log in (wal, journal))
        for extra in ("", "&immutable=1") if unchanging else ("",):
            conn = sqlite3.connect(sqlite_uri(self.path, "ro") + extra, timeout=BUSY_TIMEOUT_MS / 1000,
                                   uri=True, isolation_level=None, check_same_thread=False)
            try:
                read_identity(conn)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                last = exc
                if _unfinished_write(exc):
                    return self._read_private_copy(journal)
                if _log_needs_writing(exc) and wal.exists() and wal.stat().st_size > 0 \
                        and os.access(self.path, os.R_OK) and os.access(wal, os.R_OK):
                    return self._read_private_copy(wal)
        raise last  # type: ignore[misc]

    def _read_private_copy(self, journal: Path) -> sqlite3.Connection:
        """A connection to a copy of the database and the log left beside it (``journal``: an
        unfinished write's ``-journal``, or a ``-wal`` that could not be read in place), made in a
        private temporary folder and completed there (SQLite puts the journal back into the copy,
        or reads the log, as it opens it), so that the file reads as it was at its last completed
        change. The folder goes when the store is closed; it is private to the user (0700), and
        one that a read killed before it could remove it goes at the next read-only opening
        (:func:`_remove_abandoned_copies`: its name holds the reading process's id)."""
        import tempfile

        def unusable(cause: str) -> FetalIQAError:
            if journal.name.endswith("-wal"):
                left = (f"has changes in a write-ahead log beside it ({journal.name}) that can only be read where "
                        "SQLite may write its index")
            else:
                left = (f"has an unfinished change left beside it ({journal.name}, from a program that stopped "
                        "while writing), and it cannot be read without completing it")
            return FetalIQAError(
                f"The review database {self.path} {left} ({cause}). "
                "Nothing was changed: open it once in the FetalIQA window, or with any command that records "
                "verdicts, with write access to the file and its folder, then try again.")

        def stamp(path: Path) -> tuple[int, int, int]:
            st = path.stat()
            return st.st_ino, st.st_size, st.st_mtime_ns

        folder = Path(tempfile.mkdtemp(prefix=f"{_PRIVATE_PREFIX}{os.getpid()}-"))  # (0700)
        self._private_folder = folder
        copy = folder / self.path.name
        try:
            for _ in range(3):
                try:
                    before = (stamp(self.path), stamp(journal))
                    shutil.copyfile(journal, folder / journal.name)
                    shutil.copyfile(self.path, copy)
                    after = (stamp(self.path), stamp(journal))
                except FileNotFoundError:
                    # another program completed the change meanwhile: the file reads as it is
                    self._remove_private_copy()
                    return self._connect_read_only()
                except OSError as exc:
                    raise unusable(f"copying it aside failed: {paths.os_error_cause(exc)}") from None
                if before == after:  # (not copied half-way through another program completing it)
                    break
            else:
                raise unusable("another program kept changing it while it was copied")
            conn = sqlite3.connect(copy, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            try:
                read_identity(conn)  # (completes the copy)
            except sqlite3.Error as exc:
                conn.close()
                raise unusable(f"completing a copy of it failed: {exc}") from None
            return conn
        except BaseException:
            self._remove_private_copy()
            raise

    def _remove_private_copy(self) -> None:
        folder, self._private_folder = self._private_folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    # -- lifecycle

    def close(self) -> None:
        """Close the connection (checkpointing the WAL). Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
            self._remove_private_copy()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _user_error(self, exc: sqlite3.DatabaseError) -> FetalIQAError:
        text = str(exc)
        # A command that only reads (an export) changed nothing: "the last change was not saved"
        # and "enter it again" sent its user looking for a change they never made.
        lost = ("nothing was changed" if self._only_reads else
                "the last change was not saved (every verdict saved before it is kept)")
        again = "try again" if self._only_reads else "enter it again"
        if "full" in text or ("disk I/O error" in text and _little_space(self.path)):
            # (SQLite calls a full disk an I/O error when it cannot make its shared-memory file)
            return FetalIQAError(f"The disk holding the review database {self.path} is full: {lost}. Free disk "
                                 f"space and {again}.")
        if "disk I/O error" in text:
            limit = ("; this process may only write files of a limited size (ulimit -f), which may be the cause"
                     if _file_size_limited() else "")
            return FetalIQAError(f"The disk holding the review database {self.path} failed to write (disk I/O "
                                 f"error{limit}): {lost}. Check the disk, then {again}.")
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return DatabaseBusy(f"The review database {self.path} is busy (another FetalIQA "
                                 "window or command is writing to it). Try again in a moment.")
        if (isinstance(exc, sqlite3.OperationalError) and "unable to open" in text
                and self.path.exists() and not os.access(self.path, os.R_OK)):
            # (an export only reads: "cannot write" sent its user to fix the wrong permission)
            return FetalIQAError(f"Cannot read the review database {self.path}: permission denied. "
                                 "Ask its owner to let you read it (and write it, to enter verdicts), "
                                 "or choose another file with --db.")
        if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text
                                                          or "unable to open" in text):
            return FetalIQAError(f"Cannot write the review database {self.path} ({text}): "
                                 "check that the file and its folder are writable, or choose "
                                 "another file with --db.")
        if isinstance(exc, sqlite3.IntegrityError):
            return FetalIQAError(f"The review database {self.path} refused the change "
                                 f"({text}).")
        return unreadable_error(self.path, text)

    def _empty_error(self) -> FetalIQAError:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        what = "is empty (0 bytes)" if size == 0 else "is an empty SQLite database (no tables)"
        return FetalIQAError(f"{self.path} {what}, not a FetalIQA review database. It has been left "
                             "as it is: check the --db path (the app keeps its database in "
                             f"{default_db_path(make=False)}).")

    def _configure(self) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {self._wait_ms}")
        # Identify the file again on this connection before any write (the journal mode
        # included): a non-database fails here, and a file that changed since ``recognise``
        # is still refused untouched.
        version, app_id, n_objects = read_identity(conn)
        check_identity(self.path, version, app_id, n_objects)
        if n_objects == 0 and not self._create:
            raise self._empty_error()
        # FetalIQA makes tables and indexes only: a view or trigger put in by another program can
        # run without end (a recursive view hung every command) or act on each write
        foreign = conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('view', 'trigger') "
                               "LIMIT 1").fetchone()
        if foreign is not None:
            raise FetalIQAError(f"The review database {self.path} holds a {foreign[0]} ({str(foreign[1])[:60]!r}) that "
                                "FetalIQA never makes: another program changed it, and it is not opened. "
                                "Use a copy of an earlier version, or another --db.")
        if self._read_only:
            conn.execute("PRAGMA query_only = ON")
            return
        mode = self._set_wal(conn, self._wait_ms)
        if str(mode).lower() != "wal":
            raise FetalIQAError(f"The review database {self.path} cannot use write-ahead "
                                f"logging (journal mode {mode!r}; network drives do not "
                                "support it): keep it on a local disk.")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")

    @staticmethod
    def _set_wal(conn: sqlite3.Connection, wait_ms: int = BUSY_TIMEOUT_MS) -> str:
        """Switch to WAL, waiting for another process that is creating the same new file (the
        switch needs the file to itself, and SQLite does not wait for it on its own)."""
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        conn = self._conn
        assert conn is not None
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        # (a v2 database, read as it is, has no withdrawn column: none of its rows is a withdrawal)
        self._withdrawn_col = "withdrawn" if version >= 3 else "0"
        if version >= SCHEMA_VERSION:  # a newer one was refused by _configure
            return
        if self._read_only and version >= READABLE_FROM:
            return  # (only where it may not be written: a writable one was updated, as for any command)
        if self._read_only:
            raise FetalIQAError(f"The review database {self.path} was written by an earlier FetalIQA and must be "
                                "updated before it is read, which needs it writable: open it once in the viewer, "
                                "or copy it to a folder you may write and give that with --db.")
        if version > 0:
            self._backup(self.path.with_name(f"{self.path.name}.v{version}.bak"))
        apply_migrations(conn, SCHEMA_VERSION)
        self._withdrawn_col = "withdrawn"

    def _backup(self, target: Path) -> None:
        if target.exists():
            return
        dest = sqlite3.connect(target)
        try:
            self._conn.backup(dest)  # type: ignore[union-attr]
        finally:
            dest.close()

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[int | None]:
        """Run statements in one immediate transaction; commit before returning row ids."""
        conn = self._conn
        assert conn is not None
        with self._immediate(conn):
            ids = [conn.execute(sql, params).lastrowid for sql, params in statements]
        return ids

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA user_version").fetchone()[0]  # type: ignore

    # -- sweeps

    @_db_errors
    def add_sweep(self, content_hash: str, path: str | Path | None, n_frames: int,
                  sweep_ranges: Sequence[tuple[int, int]] | None = None,
                  spacing_mm: tuple[float, float] | None = None,
                  sweep_kinds: Sequence[str] | None = None) -> int:
        """Register a sweep (or find it by ``content_hash``) and return its id.

        A known hash keeps its id; a new ``path`` replaces the old one (the file was moved), and
        the pixel spacing given (None: unknown) replaces the one stored.
        ``sweep_ranges``: half-open [start, stop) per sub-sweep (default: one covering all).
        """
        if not content_hash:
            raise ValueError("content_hash must not be empty")
        n_frames = int(n_frames)
        ranges = [(int(a), int(b)) for a, b in (sweep_ranges or [(0, n_frames)])]
        # absolute: a path as typed ('case.mha') named no file once a report was exported elsewhere
        path_text = os.path.abspath(os.path.expanduser(str(path))) if path is not None and str(path) else None
        spacing = spacing_mm or (None, None)
        conn = self._conn
        # One immediate transaction with an upsert: two processes registering the same new
        # sweep at once both get its one id (the second waits for the first, then finds it).
        with self._immediate(conn):
            conn.execute(
                "INSERT INTO sweeps (content_hash, path, n_frames, sweep_ranges, spacing_row_mm, "
                "spacing_col_mm, added_utc, sweep_kinds) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (content_hash) DO NOTHING",
                (content_hash, path_text, n_frames, json.dumps(ranges),
                 None if spacing[0] is None else float(spacing[0]),
                 None if spacing[1] is None else float(spacing[1]), utc_now(),
                 json.dumps(list(sweep_kinds)) if sweep_kinds is not None else None))
            sweep_id, known_frames, known_path, row_mm, col_mm = conn.execute(
                "SELECT id, n_frames, path, spacing_row_mm, spacing_col_mm FROM sweeps WHERE content_hash = ?",
                (content_hash,)).fetchone()
            if known_frames != n_frames:
                raise FetalIQAError(f"The review database {self.path} already holds sweep "
                                    f"{content_hash[:12]} with {known_frames} frames, not "
                                    f"{n_frames}: the file's hash is inconsistent.")
            if path_text and path_text != known_path:
                conn.execute("UPDATE sweeps SET path = ? WHERE id = ?", (path_text, sweep_id))
            new_spacing = tuple(None if v is None else float(v) for v in spacing)
            if new_spacing != (row_mm, col_mm):
                # the pixel size the app measures with now (the file's, or one the user set): the
                # reports measure the latest run with it (they kept the first one ever seen)
                conn.execute("UPDATE sweeps SET spacing_row_mm = ?, spacing_col_mm = ? WHERE id = ?",
                             (*new_spacing, sweep_id))
        return int(sweep_id)

    def add_sweep_from(self, sweep: Any) -> int:
        """``add_sweep`` from a ``fetaliqa_core.io.Sweep`` (computes its content hash); its pixel
        spacing only when lengths may be shown with it (no ``spacing_problem``)."""
        usable = getattr(sweep, "spacing_problem", None) is None
        return self.add_sweep(sweep.content_hash, sweep.path, sweep.n_frames,
                              sweep.sweep_ranges, sweep.spacing_mm if usable else None,
                              getattr(sweep, "sweep_kinds", None))

    _sweep_row = staticmethod(sweep_from_row)

    _SWEEP_COLS = ("id, content_hash, path, n_frames, sweep_ranges, spacing_row_mm, "
                   "spacing_col_mm, added_utc, sweep_kinds")

    @_db_errors
    def sweep(self, sweep_id: int) -> SweepRecord:
        row = self._conn.execute(f"SELECT {self._SWEEP_COLS} FROM sweeps WHERE id = ?",
                                 (sweep_id,)).fetchone()
        if row is None:
            raise FetalIQAError(f"The review database {self.path} has no sweep {sweep_id}.")
        return self._sweep_row(row)

    @_db_errors
    def sweeps(self) -> list[SweepRecord]:
        rows = self._conn.execute(f"SELECT {self._SWEEP_COLS} FROM sweeps ORDER BY id")
        return [self._sweep_row(r) for r in rows]

    @_db_errors
    def find_sweep(self, content_hash: str) -> SweepRecord | None:
        """The sweep with this content hash, or None. A unique hash prefix also matches (an empty
        one none: it is every hash's; "_" and "%" are themselves, not LIKE's wildcards, which
        picked the database's only sweep for a prefix "_")."""
        if not content_hash:
            return None
        prefix = content_hash.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._conn.execute(
            f"SELECT {self._SWEEP_COLS} FROM sweeps WHERE content_hash = ? OR "
            "content_hash LIKE ? ESCAPE '\\' ORDER BY content_hash = ? DESC LIMIT 2",
            (content_hash, prefix + "%", content_hash)).fetchall()
        if not rows or (len(rows) == 2 and rows[0][1] != content_hash):
            return None
        return self._sweep_row(rows[0])

    # -- model runs

    @_db_errors
    def add_model_run(self, sweep_id: int, bundles: Mapping[str, Any], p_cls: Any, p_seg: Any,
                      seg_area_px: Any, flagged: Any, *, threshold: float = 0.5,
                      seg_threshold: float | None = None, chosen_frame: int | None = None,
                      ac_mm: float | None = None, ga_weeks: float | None = None,
                      masks: Mapping[int, np.ndarray] | None = None) -> int:
        """Store one run of the models over a sweep; return the run id.

        bundles: e.g. ``{"cls": {"hash": "ab12...", "name": "FetalCLIP_CLS"}, "seg": ...}``
            (any JSON-serialisable mapping).
        p_cls, p_seg: (n_frames,) float probabilities, NaN where the model did not run.
        seg_area_px: (n_frames,) int predicted-mask pixel counts. flagged: (n_frames,) bool.
        threshold / seg_threshold: the calls' thresholds on p_cls / p_seg (seg defaults to
            0.5, the paper's 1 % mask rule on the engine's mask score). chosen_frame, ac_mm, ga_weeks: the frame chosen for measurement and
            what was measured there.
        masks: optional {frame: (H, W) uint8 labels 0/1/2}, in frame pixels or in the 224 x
            224 model space, for overlays in reports (keep it to flagged frames; ~1 KB each).
        """
        sweep = self.sweep(sweep_id)
        n = sweep.n_frames
        flagged_arr = np.asarray(flagged).reshape(-1)
        if flagged_arr.shape[0] != n:
            raise ValueError(f"flagged has {flagged_arr.shape[0]} values; the sweep has {n}")
        if chosen_frame is not None and not 0 <= int(chosen_frame) < n:
            raise ValueError(f"chosen_frame {chosen_frame} is outside 0..{n - 1}")
        # only a number to act on is stored (records.run_from_row calls anything else a damaged row,
        # and the export of the whole database stopped on what this method had accepted)
        from fetaliqa_core.review.records import stored_reading

        ac_mm = None if ac_mm is None or not np.isfinite(ac_mm) else float(ac_mm)
        ga_weeks = None if ga_weeks is None or not np.isfinite(ga_weeks) else float(ga_weeks)
        stored_reading(ac_mm, ga_weeks, "", error=ValueError)
        run_insert = (
            "INSERT INTO model_runs (sweep_id, created_utc, bundles, threshold, seg_threshold, "
            "p_cls, p_seg, seg_area_px, flagged, chosen_frame, ac_mm, ga_weeks) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sweep_id, utc_now(), json.dumps(dict(bundles), sort_keys=True), float(threshold),
             float(SEG_THRESHOLD if seg_threshold is None else seg_threshold),
             f32_blob(p_cls, n, "p_cls"), f32_blob(p_seg, n, "p_seg"),
             i32_blob(seg_area_px, n, "seg_area_px"),
             flagged_arr.astype(bool).astype(np.uint8).tobytes(),
             None if chosen_frame is None else int(chosen_frame),
             ac_mm, ga_weeks))
        encoded = [(int(f), encode_mask(m)) for f, m in (masks or {}).items()]
        for frame, _ in encoded:
            if not 0 <= frame < n:
                raise ValueError(f"mask for frame {frame} is outside 0..{n - 1}")
        # The run id is needed by the mask rows: insert them in the same transaction.
        conn = self._conn
        with self._immediate(conn):
            run_id = conn.execute(*run_insert).lastrowid
            conn.executemany("INSERT INTO run_masks (run_id, frame, png) VALUES (?, ?, ?)",
                             [(run_id, f, blob) for f, blob in encoded])
        return int(run_id)

    # the sweep's frame count comes along, so that every blob's length can be checked
    _RUN_COLS = ("id, sweep_id, created_utc, bundles, threshold, seg_threshold, p_cls, p_seg, "
                 "seg_area_px, flagged, chosen_frame, ac_mm, ga_weeks, "
                 "(SELECT n_frames FROM sweeps WHERE sweeps.id = model_runs.sweep_id)")

    _run_row = staticmethod(run_from_row)

    @_db_errors
    def latest_run(self, sweep_id: int) -> ModelRun | None:
        """The most recent model run of a sweep, or None."""
        row = self._conn.execute(f"SELECT {self._RUN_COLS} FROM model_runs WHERE sweep_id = ? "
                                 "ORDER BY id DESC LIMIT 1", (sweep_id,)).fetchone()
        return None if row is None else self._run_row(row)

    @_db_errors
    def model_run(self, run_id: int) -> ModelRun:
        row = self._conn.execute(f"SELECT {self._RUN_COLS} FROM model_runs WHERE id = ?",
                                 (run_id,)).fetchone()
        if row is None:
            raise FetalIQAError(f"The review database {self.path} has no model run {run_id}.")
        return self._run_row(row)

    @_db_errors
    def model_runs(self, sweep_id: int) -> list[ModelRun]:
        rows = self._conn.execute(f"SELECT {self._RUN_COLS} FROM model_runs WHERE sweep_id = ? "
                                  "ORDER BY id", (sweep_id,))
        return [self._run_row(r) for r in rows]

    def _check_mask_frames(self, run_id: int) -> None:
        """A mask row for a frame the sweep does not have is a damaged row, as a verdict's is (and,
        one per frame, no run holds more masks than its sweep has frames): checked without
        reading a blob. 600 such rows of 4096 x 4096 masks in a 10 MB file took 5 GB and more."""
        row = self._conn.execute(
            "SELECT frame FROM run_masks WHERE run_id = ? AND (typeof(frame) != 'integer' OR frame < 0 "
            "OR frame >= (SELECT n_frames FROM sweeps JOIN model_runs ON sweeps.id = model_runs.sweep_id "
            "WHERE model_runs.id = ?)) LIMIT 1", (run_id, run_id)).fetchone()
        if row is not None:
            raise DamagedRow(f"mask of frame {row[0]} in model run {run_id}, which its sweep does not have")

    @_db_errors
    def run_masks(self, run_id: int) -> dict[int, np.ndarray]:
        """{frame: (H, W) uint8 labels} stored with a run (empty when none were stored)."""
        self._check_mask_frames(run_id)
        rows = self._conn.execute("SELECT frame, png FROM run_masks WHERE run_id = ? "
                                  "ORDER BY frame", (run_id,))
        return {int(f): mask_from_blob(blob, f"mask of frame {f} in model run {run_id}") for f, blob in rows}

    @_db_errors
    def run_mask(self, run_id: int, frame: int,
                 sizes: Callable[[int, int], bool] | None = None) -> np.ndarray | None:
        """The (H, W) uint8 labels stored with a run for one frame, or None: a report decodes only
        the masks it shows, one at a time. ``sizes(height, width)``: whether a mask of that size
        can be drawn on the frame; one that cannot is not decoded (None, as when none was stored)."""
        self._check_mask_frames(run_id)
        row = self._conn.execute("SELECT png FROM run_masks WHERE run_id = ? AND frame = ?",
                                 (run_id, int(frame))).fetchone()
        if row is None:
            return None
        what = f"mask of frame {frame} in model run {run_id}"
        if sizes is not None and not sizes(*mask_size(row[0], what)):
            return None
        return mask_from_blob(row[0], what)

    # -- verdicts

    @_db_errors
    def record_verdict(self, sweep_id: int, frame: int, reviewer: str, label: str | int, *,
                       agrees_with_model: bool | None | str = AUTO, note: str = "",
                       queue: str | None = None, wait_ms: int | None = None) -> Verdict:
        """Add a verdict and commit it before returning; also remember the resume position.

        ``wait_ms``: how long to wait for another program's write (default: the database's busy
        timeout); when it is not over by then, :class:`DatabaseBusy` and nothing is changed (the
        viewer waits briefly and tries again later, so that its window never freezes).

        label: "optimal" | "suboptimal" | "not_usable" (or ACOUSLIC code 1 | 2 | 0).
        agrees_with_model: True/False as the reviewer said, None for "not stated", or AUTO
            (default): compare the label with the latest model run's flag for the frame
            (None when the sweep has no model run).
        """
        sweep = self.sweep(sweep_id)
        frame = int(frame)
        if not 0 <= frame < sweep.n_frames:
            raise FetalIQAError(f"Frame {frame} is outside sweep {sweep.name} "
                                f"(0..{sweep.n_frames - 1}).")
        reviewer = self.known_reviewer(reviewer)
        label = check_label(label)
        note = clean_note(note)
        run = self.latest_run(sweep_id)
        if isinstance(agrees_with_model, str):
            if agrees_with_model != AUTO:
                raise ValueError(f"agrees_with_model must be True, False, None or AUTO, "
                                 f"not {agrees_with_model!r}")
            # a frame the run never scored (stopped part-way) has no call to agree with
            agrees = None if run is None or not run.scored[frame] else bool(
                (label != "not_usable") == bool(run.flagged[frame]))
        else:
            agrees = None if agrees_with_model is None else bool(agrees_with_model)
        now = utc_now()
        with self._busy_wait(wait_ms):
            (vid, _) = self._write([
                ("INSERT INTO verdicts (sweep_id, frame, reviewer, label, agrees_with_model, note, "
                 "created_utc, model_run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (sweep_id, frame, reviewer, label, None if agrees is None else int(agrees),
                  note or "", now, None if run is None else run.id)),
                (self._POSITION_UPSERT, (sweep_id, reviewer, queue, frame, now)),
            ])
        return Verdict(id=int(vid), sweep_id=sweep_id, frame=frame, reviewer=reviewer,  # type: ignore[arg-type]
                       label=label, agrees_with_model=agrees, note=note or "", time=now,
                       model_run_id=None if run is None else run.id)

    @_db_errors
    def withdraw_verdict(self, sweep_id: int, frame: int, reviewer: str, *, queue: str | None = None,
                         wait_ms: int | None = None) -> Verdict:
        """Withdraw the reviewer's verdict on a frame and commit it before returning; also remember
        the resume position (``queue``, ``wait_ms`` and :class:`DatabaseBusy` as for
        :meth:`record_verdict`). Returns the withdrawal's row.

        Nothing is deleted: a row marked withdrawn, holding the label it withdraws, is added, so
        the history keeps who withdrew what and when. Where the reviewer has no verdict on the
        frame (never judged, or withdrawn already), :class:`FetalIQAError` and nothing is written,
        rather than nothing said: a withdrawal aimed at the wrong frame or name would otherwise
        pass for done, and a row withdrawing no label is no history. The verdict is looked up in
        the transaction that adds the row, so two windows withdrawing it at once add one row.
        """
        sweep = self.sweep(sweep_id)
        frame = int(frame)
        if not 0 <= frame < sweep.n_frames:
            raise FetalIQAError(f"Frame {frame} is outside sweep {sweep.name} "
                                f"(0..{sweep.n_frames - 1}).")
        if self._read_only:
            raise FetalIQAError(f"The review database {self.path} is open only to read: nothing was withdrawn.")
        reviewer = self.known_reviewer(reviewer)
        conn = self._conn
        now = utc_now()
        with self._busy_wait(wait_ms), self._immediate(conn):
            row = conn.execute(f"SELECT {self._verdict_cols} FROM verdicts WHERE sweep_id = ? AND frame = ? "
                               "AND reviewer = ? ORDER BY id DESC LIMIT 1",
                               (sweep_id, frame, reviewer)).fetchone()
            standing = None if row is None else self._verdict_row(row)
            if standing is None or standing.withdrawn:
                raise FetalIQAError(f"{reviewer} has no verdict on frame {frame} of {sweep.name} to withdraw"
                                    f"{' (it is withdrawn already)' if standing is not None else ''}.")
            vid = conn.execute(
                "INSERT INTO verdicts (sweep_id, frame, reviewer, label, agrees_with_model, note, "
                "created_utc, model_run_id, withdrawn) VALUES (?, ?, ?, ?, ?, '', ?, ?, 1)",
                (sweep_id, frame, reviewer, standing.label,
                 None if standing.agrees_with_model is None else int(standing.agrees_with_model),
                 now, standing.model_run_id)).lastrowid
            conn.execute(self._POSITION_UPSERT, (sweep_id, reviewer, queue, frame, now))
        return Verdict(id=int(vid), sweep_id=sweep_id, frame=frame, reviewer=reviewer, label=standing.label,
                       agrees_with_model=standing.agrees_with_model, note="", time=now,
                       model_run_id=standing.model_run_id, withdrawn=True)

    _POSITION_UPSERT = ("INSERT INTO positions (sweep_id, reviewer, queue, frame, updated_utc) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sweep_id, reviewer) DO UPDATE SET "
                        "queue = coalesce(excluded.queue, positions.queue), frame = excluded.frame, "
                        "updated_utc = excluded.updated_utc")

    @property
    def _verdict_cols(self) -> str:
        """The columns ``verdict_from_row`` reads; the last: the sweep's frame count, to tell a
        verdict on a frame it does not have."""
        return ("id, sweep_id, frame, reviewer, label, agrees_with_model, note, created_utc, model_run_id, "
                f"{self._withdrawn_col}, (SELECT n_frames FROM sweeps WHERE sweeps.id = verdicts.sweep_id)")

    _verdict_row = staticmethod(verdict_from_row)

    @_db_errors
    def verdicts(self, sweep_id: int | None = None, reviewer: str | None = None, *,
                 history: bool = False) -> list[Verdict]:
        """Verdicts ordered by sweep, frame, reviewer (then time when ``history``).

        By default only the verdicts that stand: the latest row per (sweep, frame, reviewer),
        unless it is a withdrawal. ``history=True`` returns every row ever entered, withdrawals
        included (``Verdict.withdrawn``). ``sweep_id=None``: all sweeps.
        """
        where, params = [], []
        if sweep_id is not None:
            where.append("sweep_id = ?")
            params.append(sweep_id)
        if reviewer is not None:
            where.append("reviewer = ?")
            params.append(reviewer)
        if not history:
            # the latest row of each frame and reviewer, looked for in the sweep (and the reviewer's
            # rows) only, through the index: grouped over the whole table, each start of a review
            # and each verdict on a database of 1,000 sweeps took half a second and more
            inner = ("WHERE " + " AND ".join(where)) if where else ""
            where.append(f"id IN (SELECT max(id) FROM verdicts {inner} GROUP BY sweep_id, frame, reviewer)")
            params = params + params
            where.append(f"{self._withdrawn_col} = 0")
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._conn.execute(f"SELECT {self._verdict_cols} FROM verdicts {clause} "
                                  "ORDER BY sweep_id, frame, reviewer, id", params)
        return [self._verdict_row(r) for r in rows]

    @_db_errors
    def verdict_for(self, sweep_id: int, frame: int, reviewer: str) -> Verdict | None:
        """The reviewer's verdict on a frame (to show in the panel), or None (never judged, or
        the latest row withdraws it)."""
        row = self._conn.execute(
            f"SELECT {self._verdict_cols} FROM verdicts WHERE sweep_id = ? AND frame = ? AND "
            "reviewer = ? ORDER BY id DESC LIMIT 1", (sweep_id, int(frame), reviewer)).fetchone()
        verdict = None if row is None else self._verdict_row(row)
        return None if verdict is None or verdict.withdrawn else verdict

    @_db_errors
    def data_version(self) -> int:
        """A number that changes when another connection (another window, a ``fetaliqa review``
        command) has committed to the database since this store last asked, and never for this
        store's own writes (SQLite's ``PRAGMA data_version``): one cheap statement that tells a
        window whether the verdicts it shows still stand, without reading them again."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])  # type: ignore[union-attr]

    @_db_errors
    def known_reviewer(self, name: str) -> str:
        """``name`` as this database already spells it: one person is one reviewer whatever the
        case or the Unicode form they typed ("Alice" and "alice" were two, each with half the
        verdicts and her own resume position); a new name as typed (trimmed, NFC)."""
        name = unicodedata.normalize("NFC", check_reviewer(name))
        key = name.casefold()
        for known in self._conn.execute("SELECT DISTINCT reviewer FROM verdicts UNION "
                                        "SELECT DISTINCT reviewer FROM positions ORDER BY 1"):
            if isinstance(known[0], str) and unicodedata.normalize("NFC", known[0]).casefold() == key:
                return known[0]
        return name

    @_db_errors
    def reviewers(self, sweep_id: int | None = None) -> list[str]:
        """Names of everyone who entered a verdict (in one sweep, or anywhere), sorted."""
        if sweep_id is None:
            rows = self._conn.execute("SELECT DISTINCT reviewer FROM verdicts ORDER BY 1")
        else:
            rows = self._conn.execute("SELECT DISTINCT reviewer FROM verdicts WHERE "
                                      "sweep_id = ? ORDER BY 1", (sweep_id,))
        return [r[0] for r in rows]

    # -- queues and progress

    def _reviewed_frames(self, sweep_id: int, reviewer: str | None) -> dict[int, Verdict]:
        return {v.frame: v for v in self.verdicts(sweep_id, reviewer)}

    def _scope(self, sweep_id: int, kind: str, reviewer: str | None) -> list[int]:
        if kind not in QUEUE_KINDS:
            raise ValueError(f"queue kind must be one of {QUEUE_KINDS}, not {kind!r}")
        sweep = self.sweep(sweep_id)
        if kind == "all":
            return list(range(sweep.n_frames))
        run = self.latest_run(sweep_id)
        candidates: set[int] = set()
        disagreements: set[int] = set()
        if run is not None:
            candidates = set(np.flatnonzero(run.flagged).tolist())
            if run.chosen_frame is not None:
                candidates.add(int(run.chosen_frame))
            disagreements = set(np.flatnonzero(run.models_disagree()).tolist())
            scored = run.scored
            for v in self._reviewed_frames(sweep_id, reviewer).values():
                if scored[v.frame] and v.positive != bool(run.flagged[v.frame]):
                    disagreements.add(v.frame)
        chosen = {"candidates": candidates, "disagreements": disagreements,
                  "unreviewed": candidates | disagreements}[kind]
        return sorted(chosen)

    @_db_errors
    def review_queue(self, sweep_id: int, kind: str = "candidates",
                     reviewer: str | None = None) -> list[int]:
        """Frame indices to review, ascending (see the module docstring for the kinds).

        ``reviewer=None`` counts verdicts by anyone (for "unreviewed" and "disagreements").
        """
        frames = self._scope(sweep_id, kind, reviewer)
        if kind == "unreviewed":
            done = self._reviewed_frames(sweep_id, reviewer)
            frames = [f for f in frames if f not in done]
        return frames

    @_db_errors
    def progress(self, sweep_id: int, reviewer: str | None,
                 queue: str = "candidates") -> tuple[int, int]:
        """(reviewed, total) over the queue's frames, e.g. (12, 40) for "12 / 40 reviewed"."""
        frames = self._scope(sweep_id, queue, reviewer)
        done = self._reviewed_frames(sweep_id, reviewer)
        return sum(1 for f in frames if f in done), len(frames)

    @_db_errors
    def next_in_queue(self, sweep_id: int, kind: str, reviewer: str | None,
                      after: int | None) -> int | None:
        """The queue's first frame after ``after`` (wrapping round), or None when it is empty.

        For "save and next": call it after ``record_verdict``.
        """
        frames = self.review_queue(sweep_id, kind, reviewer)
        if not frames:
            return None
        if after is None:
            return frames[0]
        later = [f for f in frames if f > after]
        return later[0] if later else frames[0]

    # -- resume

    @_db_errors
    def set_position(self, sweep_id: int, reviewer: str, frame: int,
                     queue: str | None = None, wait_ms: int | None = None) -> None:
        """Remember where the reviewer is (the panel calls it when moving between frames).
        ``wait_ms``: how long to wait for another writer (default: the database's busy timeout);
        the viewer waits briefly, as a resume position is worth no frozen window."""
        reviewer = check_reviewer(reviewer)
        with self._busy_wait(wait_ms):
            self._write_position(sweep_id, reviewer, frame, queue)

    @contextlib.contextmanager
    def _busy_wait(self, wait_ms: int | None):
        """Wait at most ``wait_ms`` for another program's write inside the block (None: as long
        as outside it: the database's busy timeout, or :meth:`waiting_at_most`'s)."""
        if wait_ms is None:
            yield
            return
        conn = self._conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {max(int(wait_ms), 0)}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._wait_ms}")

    @contextlib.contextmanager
    def waiting_at_most(self, wait_ms: int):
        """Every read and write inside the block waits at most ``wait_ms`` for another program's
        write, then raises :class:`DatabaseBusy` (nothing changed): the window starts a review
        in several of them, and waited the full busy timeout on each key press, its event loop
        stopped, while another program held the database."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise FetalIQAError(f"The review database {self.path} is closed.")
            previous, self._wait_ms = self._wait_ms, max(int(wait_ms), 0)
            conn.execute(f"PRAGMA busy_timeout = {self._wait_ms}")
        try:
            yield
        finally:
            with self._lock:
                self._wait_ms = previous
                if self._conn is not None:
                    self._conn.execute(f"PRAGMA busy_timeout = {previous}")

    def _write_position(self, sweep_id: int, reviewer: str, frame: int, queue: str | None) -> None:
        self._write([(self._POSITION_UPSERT, (sweep_id, reviewer, queue, int(frame), utc_now()))])

    @_db_errors
    def last_position(self, sweep_id: int, reviewer: str) -> ReviewPosition | None:
        """Where the reviewer stopped in this sweep (also after a restart), or None.

        Falls back to the frame of their latest verdict (databases from before positions
        were kept).
        """
        row = self._conn.execute("SELECT frame, queue, updated_utc FROM positions WHERE "
                                 "sweep_id = ? AND reviewer = ?", (sweep_id, reviewer)).fetchone()
        if row is not None:
            return ReviewPosition(frame=int(row[0]), queue=row[1], time=row[2])
        row = self._conn.execute("SELECT frame, created_utc FROM verdicts WHERE sweep_id = ? AND "
                                 "reviewer = ? ORDER BY id DESC LIMIT 1",
                                 (sweep_id, reviewer)).fetchone()
        return None if row is None else ReviewPosition(frame=int(row[0]), queue=None,
                                                       time=row[1])
