"""The review database's schema, its migrations, and recognising a file before writing to it."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from fetaliqa_core.errors import FetalIQAError

#: How long a call waits for another process that holds the write lock.
BUSY_TIMEOUT_MS = 5000

#: ``PRAGMA application_id``: marks the file as a FetalIQA review database ("FIQA").
APPLICATION_ID = 0x46495141

# Ordered schema steps. Entry i takes the schema from version i to version i + 1. Statements
# run one by one inside one transaction (``executescript`` would commit half-way).
MIGRATIONS: list[tuple[str, ...]] = [
    # v1: sweeps, model runs with per-frame results, verdicts.
    (
        """CREATE TABLE sweeps (
            id INTEGER PRIMARY KEY,
            content_hash TEXT NOT NULL UNIQUE,
            path TEXT,
            n_frames INTEGER NOT NULL CHECK (n_frames > 0),
            sweep_ranges TEXT NOT NULL,          -- JSON [[start, stop], ...], half-open
            spacing_row_mm REAL,
            spacing_col_mm REAL,
            added_utc TEXT NOT NULL
        )""",
        """CREATE TABLE model_runs (
            id INTEGER PRIMARY KEY,
            sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
            created_utc TEXT NOT NULL,
            bundles TEXT NOT NULL,               -- JSON {role: {"hash": ..., "name": ...}}
            threshold REAL NOT NULL,
            p_cls BLOB NOT NULL,                 -- float32 little-endian, n_frames values
            p_seg BLOB NOT NULL,                 -- float32 little-endian
            seg_area_px BLOB NOT NULL,           -- int32 little-endian
            flagged BLOB NOT NULL,               -- uint8 0/1
            chosen_frame INTEGER,
            ac_mm REAL,
            ga_weeks REAL
        )""",
        """CREATE TABLE verdicts (
            id INTEGER PRIMARY KEY,
            sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
            frame INTEGER NOT NULL CHECK (frame >= 0),
            reviewer TEXT NOT NULL,
            label TEXT NOT NULL CHECK (label IN ('optimal', 'suboptimal', 'not_usable')),
            agrees_with_model INTEGER CHECK (agrees_with_model IN (0, 1)),
            note TEXT NOT NULL DEFAULT '',
            created_utc TEXT NOT NULL
        )""",
        "CREATE INDEX verdicts_by_sweep ON verdicts (sweep_id, reviewer, frame)",
        "CREATE INDEX model_runs_by_sweep ON model_runs (sweep_id)",
    ),
    # v2: sweep kinds, a separate segmenter threshold, the run a verdict was made against,
    # segmentation masks of the flagged frames (for report overlays), and resume positions.
    (
        "ALTER TABLE sweeps ADD COLUMN sweep_kinds TEXT",
        "ALTER TABLE model_runs ADD COLUMN seg_threshold REAL",
        "ALTER TABLE verdicts ADD COLUMN model_run_id INTEGER REFERENCES model_runs(id)",
        """CREATE TABLE run_masks (
            run_id INTEGER NOT NULL REFERENCES model_runs(id),
            frame INTEGER NOT NULL,
            png BLOB NOT NULL,                   -- uint8 label image 0/1/2, PNG
            PRIMARY KEY (run_id, frame)
        )""",
        """CREATE TABLE positions (
            sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
            reviewer TEXT NOT NULL,
            queue TEXT,
            frame INTEGER NOT NULL,
            updated_utc TEXT NOT NULL,
            PRIMARY KEY (sweep_id, reviewer)
        )""",
    ),
    # v3: a trainer can withdraw a verdict (a key pressed on the wrong frame). A withdrawal is a
    # row of its own, with the label it withdraws, so that the history keeps who withdrew what and
    # when; every earlier row is a verdict (0).
    (
        "ALTER TABLE verdicts ADD COLUMN withdrawn INTEGER NOT NULL DEFAULT 0 CHECK (withdrawn IN (0, 1))",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

#: The oldest schema read as it is when the database may not be updated (on read-only media, in a
#: folder one may not write): every step after it only adds what reads take a default for (v3's
#: ``withdrawn``: no row of a v2 database is a withdrawal). An older one must be updated first.
READABLE_FROM = 2


def apply_migrations(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring an open database up to schema ``target`` in one transaction; return the version.

    The version is re-read inside the transaction, so two processes opening an old file at the
    same moment do not both migrate it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, target):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
        if version < target:
            conn.execute(f"PRAGMA user_version = {int(target)}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return max(version, target)


#: The first 16 bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_uri(path: Path, mode: str) -> str:
    """An SQLite URI for ``path`` opened with ``mode`` ("ro" or "rw": never creating the file)."""
    return "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=" + mode


def read_identity(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(user_version, application_id, number of schema objects) of an open database; only reads.

    One statement, so one snapshot: read one by one, another process creating the database in
    between could be seen half-way (no version yet, but its id and tables), which is neither a
    blank database nor a FetalIQA one."""
    version, app_id, n_objects = conn.execute(
        "SELECT (SELECT user_version FROM pragma_user_version), "
        "(SELECT application_id FROM pragma_application_id), "
        "(SELECT count(*) FROM sqlite_master)").fetchall()[0]  # all: the statement ends, no read stays open
    return version, app_id, n_objects


def foreign_error(path: Path) -> FetalIQAError:
    """The one-line refusal of another program's SQLite database."""
    return FetalIQAError(f"{path} is an SQLite database of another program, not a FetalIQA review "
                         "database. It has been left as it is: choose another file with --db.")


def unreadable_error(path: Path, cause: object) -> FetalIQAError:
    """The one-line refusal of a file SQLite cannot read (``cause``: what SQLite said)."""
    return FetalIQAError(f"The review database {path} cannot be read ({cause}). It has been left as it "
                         "is: move it aside (or restore it from a backup) and start again, or choose "
                         "another file with --db.")


def check_identity(path: Path, version: int, app_id: int, n_objects: int) -> None:
    """Refuse a database that is not a FetalIQA review database this version can open.

    A FetalIQA database gets its application id and its schema version in the transaction that
    creates its tables, so the only database without the id that may become one is a blank one
    (no tables, schema version 0). Anything else without the id, anything with another program's
    id, and a file with the id but tables and no schema version belong to another program.
    """
    blank = version == 0 and n_objects == 0
    ours = app_id == APPLICATION_ID and version != 0
    if not (ours or blank and app_id in (0, APPLICATION_ID)):
        raise foreign_error(path)
    if version > SCHEMA_VERSION:
        raise FetalIQAError(f"The review database {path} was written by a newer FetalIQA (schema "
                            f"{version}; this version knows up to {SCHEMA_VERSION}). Update FetalIQA "
                            "to open it.")


def recognise(path: Path) -> int | None:
    """Check, read-only, that an existing file is a FetalIQA review database (or a blank one).

    Runs before the store's own connection sets anything (journal mode, migrations), so a file
    that belongs to another program is never modified. The 100-byte SQLite header is read first:
    a file that is not an SQLite database, or that carries another program's application id, is
    refused without SQLite opening it at all. The rest is read through a read-only connection,
    which also sees what is still in a write-ahead log. A file in WAL mode with no log beside it
    is read as immutable, so that no -wal / -shm files are left next to another program's file
    (never with a journal beside it: an immutable read takes the pages of an unfinished change).

    Returns the number of schema objects (tables, indexes) the file holds, 0 for an empty
    (0-byte) file, or None when it cannot tell read-only (the store's own connection then
    reports what is wrong).
    """
    try:
        if not path.is_file():
            return None
        with path.open("rb") as f:
            header = f.read(100)
    except OSError:
        return None
    if not header:
        return 0
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise unreadable_error(path, "file is not a database")
    if int.from_bytes(header[68:72], "big", signed=True) not in (0, APPLICATION_ID):
        raise foreign_error(path)
    uri = sqlite_uri(path, "ro")
    if header[18] == 2 and not any(path.with_name(path.name + end).exists() for end in ("-wal", "-journal")):
        uri += "&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return None
    try:
        version, app_id, n_objects = read_identity(conn)
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise unreadable_error(path, exc) from None
        return None
    finally:
        conn.close()
    check_identity(path, version, app_id, n_objects)
    return n_objects


def rollback(conn: sqlite3.Connection) -> None:
    """ROLLBACK that never hides the error that made it necessary (after a full disk SQLite
    may already have rolled back, and a second ROLLBACK fails)."""
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
