"""The review database under attack and under load: a foreign file is recognised read-only and
never modified, damaged rows give one line, a full disk is named as such, and app instances in
separate processes registering the same new sweep at once never fail or lose a write."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.review.store import SCHEMA_VERSION, ReviewStore, apply_migrations

ROOT = Path(__file__).resolve().parents[1]


def _foreign(path: Path, **pragmas) -> None:
    conn = sqlite3.connect(path)
    for key, value in pragmas.items():
        conn.execute(f"PRAGMA {key} = {value}")
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('someone')")
    conn.commit()
    conn.close()


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize("pragmas", [{}, {"user_version": 7}, {"application_id": 1234, "user_version": 2}])
def test_sqlite_file_of_another_program_is_refused_and_left_unmodified(tmp_path, pragmas):
    path = tmp_path / "other.sqlite3"
    _foreign(path, **pragmas)
    before = path.read_bytes()
    with pytest.raises(FetalIQAError, match="another program") as info:
        ReviewStore(path)
    assert "\n" not in str(info.value) and "--db" in str(info.value)
    assert path.read_bytes() == before
    assert _journal_mode(path) == "delete"  # not switched to WAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite3"]  # no -wal / -shm left


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("setup", [
    {"application_id": 0x12345678, "user_version": 7},  # another program's mark, no tables yet
    {"application_id": 0x12345678},
    {"user_version": 7},  # a schema version but no FetalIQA mark: not ours, nor a newer FetalIQA's
    {"journal_mode": "WAL", "application_id": 0x12345678, "user_version": 7},
])
def test_sqlite_file_of_another_program_without_tables_is_refused_before_any_write(tmp_path, setup):
    """Another program's database that holds no tables yet is recognised by its header alone: no
    journal-mode switch, no change counter bump, no -wal / -shm files beside it."""
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for key, value in setup.items():
        conn.execute(f"PRAGMA {key} = {value}")
    conn.close()
    before = _sha256(path)
    for create in (True, False):
        with pytest.raises(FetalIQAError, match="another program") as info:
            ReviewStore(path, create=create)
        assert "\n" not in str(info.value) and "--db" in str(info.value)
        assert _sha256(path) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite3"]


def test_sqlite_file_of_another_program_in_wal_mode_is_refused_without_leaving_wal_files(tmp_path):
    path = tmp_path / "other.sqlite3"
    _foreign(path, journal_mode="WAL")
    before = _sha256(path)
    with pytest.raises(FetalIQAError, match="another program"):
        ReviewStore(path, create=False)
    assert _sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite3"]


def test_review_database_of_a_newer_fetaliqa_is_refused_before_any_write(tmp_path):
    path = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(conn)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = _sha256(path)
    with pytest.raises(FetalIQAError, match="newer FetalIQA"):
        ReviewStore(path)
    assert _sha256(path) == before
    assert _journal_mode(path) == "delete"


def test_empty_file_is_refused_by_a_command_that_does_not_create_and_left_at_zero_bytes(tmp_path):
    path = tmp_path / "reviews.sqlite3"
    path.touch()
    with pytest.raises(FetalIQAError, match="is empty.*not a FetalIQA review database") as info:
        ReviewStore(path, create=False)
    assert "\n" not in str(info.value) and "--db" in str(info.value)
    assert path.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.sqlite3"]


def test_sqlite_file_without_tables_is_refused_by_a_command_that_does_not_create(tmp_path):
    path = tmp_path / "reviews.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")  # a valid SQLite file that holds nothing
    conn.close()
    before = _sha256(path)
    with pytest.raises(FetalIQAError, match="empty SQLite database.*not a FetalIQA review database"):
        ReviewStore(path, create=False)
    assert _sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.sqlite3"]


def test_empty_file_becomes_a_new_review_database_when_the_store_may_create_one(tmp_path):
    """The app opening its own store: a 0-byte file holds nothing to lose (and is what a second
    app instance creating the same new file leaves for a moment), so it is created there."""
    path = tmp_path / "reviews.sqlite3"
    path.touch()
    with ReviewStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.add_sweep("abc", "/x/case.mha", 3)
    with ReviewStore(path, create=False) as store:
        assert [s.content_hash for s in store.sweeps()] == ["abc"]


@pytest.mark.parametrize("content", [b"S", b"SQLite format 3\x00", b"\x00" * 50])
def test_short_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path, content):
    path = tmp_path / "reviews.sqlite3"
    path.write_bytes(content)
    for create in (True, False):
        with pytest.raises(FetalIQAError, match="cannot be read.*left as it is"):
            ReviewStore(path, create=create)
        assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reviews.sqlite3"]


def _store_with_run(tmp_path) -> tuple[Path, int, int]:
    path = tmp_path / "reviews.sqlite3"
    with ReviewStore(path) as store:
        sid = store.add_sweep("abc123", "/x/case.mha", 6)
        rid = store.add_model_run(sid, {"cls": {"hash": "h"}}, np.linspace(0, 1, 6), np.zeros(6), np.zeros(6),
                                  np.ones(6, bool), masks={2: np.ones((8, 8), np.uint8)})
        store.record_verdict(sid, 2, "Dr A", "optimal")
    return path, sid, rid


def _tamper(path: Path, sql: str, *params) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def test_database_row_with_bad_json_gives_one_line(tmp_path):
    path, sid, _ = _store_with_run(tmp_path)
    _tamper(path, "UPDATE sweeps SET sweep_ranges = '[[0, 6' WHERE id = ?", sid)
    with ReviewStore(path) as store, pytest.raises(FetalIQAError, match="damaged row") as info:
        store.sweeps()
    assert "\n" not in str(info.value) and "backup" in str(info.value)


def test_database_row_with_bad_json_in_bundles_gives_one_line(tmp_path):
    path, _, rid = _store_with_run(tmp_path)
    _tamper(path, "UPDATE model_runs SET bundles = 'not json' WHERE id = ?", rid)
    with ReviewStore(path) as store, pytest.raises(FetalIQAError, match="damaged row"):
        store.model_run(rid)


@pytest.mark.parametrize("column", ["p_cls", "p_seg", "seg_area_px", "flagged"])
def test_database_row_with_a_short_blob_gives_one_line(tmp_path, column):
    path, sid, rid = _store_with_run(tmp_path)
    _tamper(path, f"UPDATE model_runs SET {column} = x'0000' WHERE id = ?", rid)
    with ReviewStore(path) as store, pytest.raises(FetalIQAError, match="damaged row"):
        store.latest_run(sid)


def test_database_mask_that_is_not_a_png_gives_one_line(tmp_path):
    path, _, rid = _store_with_run(tmp_path)
    _tamper(path, "UPDATE run_masks SET png = x'89504e47' WHERE run_id = ?", rid)
    with ReviewStore(path) as store, pytest.raises(FetalIQAError, match="damaged row"):
        store.run_masks(rid)


def _png_header_of(width: int, height: int) -> bytes:
    """A PNG of 8 x 8 whose header states another size (the decoder would allocate that)."""
    import struct
    import zlib

    import cv2

    png = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


@pytest.mark.parametrize("sql,params,call", [
    ("UPDATE verdicts SET frame = 100", (), lambda s, sid, rid: s.verdicts(sid)),
    ("UPDATE model_runs SET created_utc = x'00ff'", (), lambda s, sid, rid: s.latest_run(sid)),
    ("UPDATE sweeps SET sweep_ranges = '[[0, 1e21]]'", (), lambda s, sid, rid: s.sweeps()),
    ("UPDATE sweeps SET sweep_ranges = '[[-5, 6]]'", (), lambda s, sid, rid: s.sweeps()),
    ("UPDATE run_masks SET png = ?", (_png_header_of(30000, 30000),), lambda s, sid, rid: s.run_masks(rid)),
    ("UPDATE model_runs SET ac_mm = 1e308", (), lambda s, sid, rid: s.latest_run(sid)),
    ("UPDATE model_runs SET ac_mm = 40", (), lambda s, sid, rid: s.latest_run(sid)),
    ("UPDATE model_runs SET ac_mm = 250, ga_weeks = -5", (), lambda s, sid, rid: s.latest_run(sid)),
])
def test_rows_another_program_changed_give_one_line_before_any_allocation(tmp_path, sql, params, call):
    """A verdict on frame 100 of a 6-frame sweep, a run's time as a blob, sub-sweeps past the
    sweep: tracebacks in `review export`. A 875 KB mask PNG stating 30,000 x 30,000 pixels: 1.8 GB.
    An AC of 1e308 mm or a GA of -5 weeks (only a number to act on is stored): exported as plain
    numbers with ac_status "ok"."""
    path, sid, rid = _store_with_run(tmp_path)
    _tamper(path, sql, *params)
    with ReviewStore(path) as store, pytest.raises(FetalIQAError, match="damaged row") as info:
        call(store, sid, rid)
    assert "\n" not in str(info.value)


def _run_with_masks(tmp_path, masks: dict[int, bytes]) -> tuple[Path, int]:
    """A 6-frame sweep of 40 x 48 frames, all flagged, whose run's mask rows are ``masks``
    (written as another program would, past the store's checks)."""
    path = tmp_path / "reviews.sqlite3"
    with ReviewStore(path) as store:
        sid = store.add_sweep("abc123", "/x/case.mha", 6)
        rid = store.add_model_run(sid, {"cls": {"hash": "h"}}, np.linspace(0.6, 1, 6), np.zeros(6),
                                  np.zeros(6), np.ones(6, bool), chosen_frame=5)
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO run_masks (run_id, frame, png) VALUES (?, ?, ?)",
                     [(rid, f, png) for f, png in masks.items()])
    conn.commit()
    conn.close()
    return path, rid


def test_a_mask_row_for_a_frame_the_sweep_does_not_have_is_a_damaged_row(tmp_path):
    """600 mask rows of 4096 x 4096 PNGs for a 12-frame sweep (a 10 MB file): `review export`
    decoded them all at once and passed 5 GB; a mask for frame 12 of 12 was taken as it came."""
    import cv2

    from fetaliqa_core.review.report import build_report

    png = cv2.imencode(".png", np.ones((8, 8), np.uint8))[1].tobytes()
    path, rid = _run_with_masks(tmp_path, {1: png, 6: png})
    frames = np.zeros((6, 40, 48), np.uint8)
    with ReviewStore(path) as store:
        for call in (lambda: store.run_masks(rid), lambda: store.run_mask(rid, 1),
                     lambda: build_report(store, tmp_path / "r.html", sweep_loader=lambda p: frames)):
            with pytest.raises(FetalIQAError, match="damaged row .mask of frame 6 in model run") as info:
                call()
            assert "\n" not in str(info.value)
    assert not (tmp_path / "r.html").exists()


def test_a_report_decodes_only_the_masks_it_shows_and_only_of_a_size_that_fits(tmp_path, monkeypatch):
    """Every mask of a run was decoded into one dict before a thumbnail was drawn, whatever its
    size: memory grew with what the database held, not with what the report shows."""
    import cv2

    from fetaliqa_core.review import records
    from fetaliqa_core.review.report import build_report

    fits = cv2.imencode(".png", np.ones((224, 224), np.uint8))[1].tobytes()
    too_big = cv2.imencode(".png", np.ones((4096, 4096), np.uint8))[1].tobytes()
    path, rid = _run_with_masks(tmp_path, {0: fits, 1: fits, 2: too_big, 3: too_big, 4: fits, 5: fits})
    decoded = []
    real = records.decode_mask
    monkeypatch.setattr(records, "decode_mask", lambda blob: decoded.append(real(blob)) or decoded[-1])
    monkeypatch.setattr("fetaliqa_core.review.report.MAX_THUMBNAILS", 3)
    with ReviewStore(path) as store:
        build_report(store, tmp_path / "r.html", sweep_loader=lambda p: np.zeros((6, 40, 48), np.uint8))
    assert [m.shape for m in decoded] == [(224, 224)] * 2  # frames 5 and 4 (3: too big; 0-2: not shown)


class _FullDisk:
    """A connection whose COMMIT fails as on a full disk (after which SQLite has already rolled
    back, so ROLLBACK fails too)."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self._conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        if sql == "ROLLBACK":
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_disk_io_error_on_a_full_disk_is_named_full_and_an_export_is_not_told_of_a_lost_change(
        tmp_path, monkeypatch):
    """On a full disk SQLite could not make its shared-memory file and said "disk I/O error":
    the message sent the user to check a disk that was only full. And a command that only reads
    (an export) was told "the last change was not saved ... enter it again"."""
    import collections

    path, _, _ = _store_with_run(tmp_path)
    io_error = sqlite3.OperationalError("disk I/O error")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda p: usage(1 << 20, 1 << 20, 0))
    with ReviewStore(path) as store:
        message = str(store._user_error(io_error))
    assert "is full" in message and "Free disk space" in message and "Check the disk" not in message
    monkeypatch.setattr("shutil.disk_usage", lambda p: usage(1 << 40, 0, 1 << 40))
    with ReviewStore(path, read_only=True) as store:
        message = str(store._user_error(io_error))
    assert "disk I/O error" in message and "nothing was changed" in message
    assert "last change" not in message and "enter it again" not in message


def test_disk_full_during_review_is_named_as_a_full_disk_not_hidden_by_the_rollback(tmp_path):
    path, sid, _ = _store_with_run(tmp_path)
    store = ReviewStore(path)
    real = store._conn
    store._conn = _FullDisk(real)
    try:
        with pytest.raises(FetalIQAError) as info:
            store.record_verdict(sid, 3, "Dr A", "not_usable")
    finally:
        store._conn = real
    message = str(info.value)
    assert "full" in message and "Free disk space" in message and "move" not in message
    assert len(store.verdicts(sid)) == 1  # the earlier verdict is kept
    store.close()


_WORKER = r"""
import json, sys, time
from pathlib import Path
from fetaliqa_core.review.store import ReviewStore
db, me, n, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
while not start.exists():
    time.sleep(0.001)
failures, ok = [], 0
try:
    store = ReviewStore(db)  # all open the same new file at once
except Exception as exc:
    print(json.dumps({"ok": 0, "failures": [f"open: {type(exc).__name__}: {exc}"]}))
    sys.exit()
for i in range(n):
    try:
        sid = store.add_sweep(f"sweep-{i:03d}", f"/data/case{i}.mha", 10)
        if i % 10 == 0:
            store.record_verdict(sid, me, f"reviewer-{me}", "optimal", agrees_with_model=None)
        ok += 1
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
store.close()
print(json.dumps({"ok": ok, "failures": failures[:5]}))
"""


def test_app_instances_registering_the_same_new_sweep_at_once_never_fail_or_lose_a_write(tmp_path):
    """Six processes open the same new database and register the same 150 new sweeps at the same
    moments (before the fix about 1 in 100 registrations failed with a UNIQUE constraint), each
    recording a verdict on every tenth: every call succeeds and every verdict is there."""
    db, start, workers, n = tmp_path / "reviews.sqlite3", tmp_path / "go", 6, 150
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(db), str(w), str(n), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", cwd=ROOT, env=env)
             for w in range(workers)]
    time.sleep(2.0)  # let them all import and wait at the start line
    start.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["failures"] == [] for r in results), results
    assert sum(r["ok"] for r in results) == workers * n
    with ReviewStore(db) as store:
        sweeps = store.sweeps()
        assert len(sweeps) == n
        verdicts = store.verdicts(history=True)
        assert len(verdicts) == workers * (n // 10)
        tenth = {s.id for s in sweeps if int(s.content_hash.split("-")[1]) % 10 == 0}
        assert {(v.sweep_id, v.reviewer) for v in verdicts} == {
            (sid, f"reviewer-{w}") for sid in tenth for w in range(workers)}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_given_as_the_database_is_refused_in_one_line(tmp_path):
    """A pipe named as --db: one line saying it is no file (SQLite would report a disk I/O error)."""
    os.mkfifo(tmp_path / "db.sqlite3")
    with pytest.raises(FetalIQAError, match="not a regular file"):
        ReviewStore(tmp_path / "db.sqlite3", create=False)


def test_a_view_or_trigger_another_program_added_is_refused(tmp_path):
    """A database with FetalIQA's identity whose 'sweeps' table was replaced by a view over an
    endless recursive query hung `review list` (and ignored SIGTERM)."""
    import sqlite3

    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.review import ReviewStore

    for kind in ("view", "trigger"):
        db = tmp_path / f"{kind}.sqlite3"
        ReviewStore(db).close()
        with sqlite3.connect(db) as conn:
            if kind == "view":
                conn.execute("ALTER TABLE sweeps RENAME TO old_sweeps")
                conn.execute("CREATE VIEW sweeps AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
                             "SELECT x AS id FROM n")
            else:
                conn.execute("CREATE TRIGGER t AFTER INSERT ON verdicts BEGIN DELETE FROM verdicts; END")
        with pytest.raises(FetalIQAError, match=f"holds a {kind} .* that FetalIQA never makes"):
            ReviewStore(db, create=False)


def test_a_db_path_that_is_a_link_loop_is_said_so_not_called_missing(tmp_path):
    """`review export --db` given a link that leads back to itself said "does not exist"."""
    loop = tmp_path / "loop.sqlite3"
    loop.symlink_to(loop.name)
    with pytest.raises(FetalIQAError, match="leads back to itself") as info:
        ReviewStore(loop, create=False)
    assert "does not exist" not in str(info.value)


def test_a_database_the_user_may_not_read_is_called_unreadable_not_unwritable(tmp_path, monkeypatch):
    """A database of mode 000 (another user's) gave an export, which only reads, "Cannot write the
    review database ... check that the file and its folder are writable": the wrong permission to
    ask for. (As root every file is readable, so the refusal SQLite gives another user is played.)"""
    import fetaliqa_core.review.store as store_module

    db = tmp_path / "theirs.sqlite3"
    ReviewStore(db).close()
    real_access = os.access

    def no_read(path, mode, *args, **kwargs):
        if Path(path) == db and mode & os.R_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def refused(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(store_module.os, "access", no_read)
    monkeypatch.setattr(store_module.sqlite3, "connect", refused)
    with pytest.raises(FetalIQAError) as caught:
        ReviewStore(db, create=False, read_only=True)
    text = str(caught.value)
    assert "Cannot read" in text and "permission denied" in text
    assert "writable" not in text


_DIE_MID_WRITE = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode = DELETE")
conn.execute("PRAGMA cache_size = 1")  # (the change spills into the file before its commit)
conn.execute("BEGIN IMMEDIATE")
conn.execute("DELETE FROM verdicts")
conn.execute("CREATE TABLE junk (x)")
conn.executemany("INSERT INTO junk VALUES (?)", [(os.urandom(500),) for _ in range(2000)])
os._exit(0)  # killed in the middle of the change: its journal stays beside the file
"""


def _left_mid_write(folder: Path) -> Path:
    """A review database holding five verdicts that another program was changing (in rollback
    journal mode) when it was killed: the file holds pages of the unfinished change, and its
    ``-journal`` the pages it replaced."""
    folder.mkdir()
    db = folder / "hot.sqlite3"
    with ReviewStore(db) as store:
        sid = store.add_sweep("ab" * 32, "/data/case.mha", 12)
        for frame in range(5):
            store.record_verdict(sid, frame, "alice", "optimal" if frame % 2 else "suboptimal")
    subprocess.run([sys.executable, "-c", _DIE_MID_WRITE, str(db)], check=True)
    assert (folder / "hot.sqlite3-journal").stat().st_size > 0
    return db


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("folder_writable", [True, False])
def test_a_database_left_in_the_middle_of_a_write_reads_its_verdicts_and_is_left_as_it_is(
        tmp_path, monkeypatch, capsys, folder_writable):
    """A review database beside the journal of a writer killed in the middle of a change read as
    empty in `review list / labels / history / export` ("0 verdicts", "wrote 0 label(s)", exit 0):
    the read-only connection cannot put the journal back, and the file was then read as unchanging,
    with the unfinished change's pages. The verdicts of the last completed change are read now,
    from a private copy, and the user's files stay as they were (a read-only folder too)."""
    import tempfile

    from fetaliqa_core.cli import main

    db = _left_mid_write(tmp_path / "reviews")
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    before = _hashes(db.parent)
    if not folder_writable:
        db.parent.chmod(0o555)
    try:
        with ReviewStore(db, create=False, read_only=True) as store:
            assert [(v.frame, v.label) for v in store.verdicts()] == [
                (0, "suboptimal"), (1, "optimal"), (2, "suboptimal"), (3, "optimal"), (4, "suboptimal")]
            assert [t[0] for t in store._conn.execute("SELECT name FROM sqlite_master")].count("junk") == 0
        assert main(["review", "list", "--db", str(db)]) in (0, None)
        assert "5 verdicts" in capsys.readouterr().out
        out = tmp_path / "labels.csv"
        assert main(["review", "labels", "--db", str(db), "--out", str(out)]) in (0, None)
        assert len(out.read_text().splitlines()) == 1 + 5
    finally:
        db.parent.chmod(0o755)
    assert _hashes(db.parent) == before  # the file and its journal untouched, nothing added
    assert list(private.iterdir()) == []  # the private copy is gone once read
    # a store that may write completes the change in place, as the window does
    with ReviewStore(db) as store:
        assert len(store.verdicts()) == 5
    assert not (tmp_path / "reviews" / "hot.sqlite3-journal").exists()


def test_a_database_left_in_the_middle_of_a_write_that_cannot_be_copied_says_what_to_do(
        tmp_path, monkeypatch):
    import shutil

    db = _left_mid_write(tmp_path / "reviews")
    before = _hashes(db.parent)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", no_space)
    with pytest.raises(FetalIQAError, match="unfinished change") as caught:
        ReviewStore(db, create=False, read_only=True)
    assert "hot.sqlite3-journal" in str(caught.value) and "write access" in str(caught.value)
    assert _hashes(db.parent) == before


_DIE_WITH_WAL = """
import os, sys
from fetaliqa_core.review.store import ReviewStore
ReviewStore._empty_log = staticmethod(lambda conn: None)  # (its log is left as a killed writer leaves it)
store = ReviewStore(sys.argv[1])
sid = store.add_sweep("cd" * 32, "/data/case.mha", 12)
for frame in range(7):
    store.record_verdict(sid, frame, "bob", "optimal")
os._exit(0)  # killed: its verdicts are in the -wal only, and its -shm is removed below
"""


def _left_in_wal(folder: Path) -> Path:
    """A review database whose seven verdicts are in its write-ahead log only (a writer killed
    with -9), with no shared-memory index beside it."""
    folder.mkdir()
    db = folder / "k.sqlite3"
    subprocess.run([sys.executable, "-c", _DIE_WITH_WAL, str(db)], check=True)
    (folder / "k.sqlite3-shm").unlink()
    assert (folder / "k.sqlite3-wal").stat().st_size > 0
    return db


def _no_index_may_be_made(monkeypatch, db: Path) -> None:
    """What SQLite does for a user who may not write ``db``'s folder (the tests run as root, who
    may): a read-only connection to a database with a -wal and no -shm cannot make the -shm, and
    fails with "unable to open database file"."""
    import fetaliqa_core.review.store as store_module

    real_connect = sqlite3.connect

    class NoIndex(sqlite3.Connection):  # (SQLite opens the file at the first statement)
        def execute(self, *args, **kwargs):
            exc = sqlite3.OperationalError("unable to open database file")
            exc.sqlite_errorcode = sqlite3.SQLITE_CANTOPEN
            raise exc

    def connect(target, *args, **kwargs):
        text = str(target)
        if text.startswith("file:") and "mode=ro" in text and text.split("?")[0].endswith(db.name) \
                and not db.with_name(db.name + "-shm").exists():
            kwargs["factory"] = NoIndex
        return real_connect(target, *args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)


def test_a_database_with_a_write_ahead_log_in_a_folder_that_may_not_be_written_is_read(
        tmp_path, monkeypatch, capsys):
    """A database with a -wal and no -shm (a writer killed with -9), in a folder the user may not
    write, was refused by every read command (`review list / labels / history / export`) with
    "Cannot write the review database ... check that the file and its folder are writable": a
    command that only reads, told of writing. Its log is read from a private copy now, and the
    user's files are left as they are."""
    import tempfile

    from fetaliqa_core.cli import main

    db = _left_in_wal(tmp_path / "reviews")
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    before = _hashes(db.parent)
    _no_index_may_be_made(monkeypatch, db)
    db.parent.chmod(0o555)
    try:
        with ReviewStore(db, create=False, read_only=True) as store:
            assert [(v.frame, v.label) for v in store.verdicts()] == [(f, "optimal") for f in range(7)]
        assert main(["review", "list", "--db", str(db)]) in (0, None)
        assert "7 verdicts" in capsys.readouterr().out
        out = tmp_path / "labels.csv"
        assert main(["review", "labels", "--db", str(db), "--out", str(out)]) in (0, None)
        assert len(out.read_text().splitlines()) == 1 + 7
        assert "writable" not in capsys.readouterr().err
    finally:
        db.parent.chmod(0o755)
    assert _hashes(db.parent) == before  # the file and its log untouched, no -shm added
    assert list(private.iterdir()) == []  # the private copy is gone once read


_READ_AND_WAIT = """
import sys, time
from fetaliqa_core.review.store import ReviewStore
store = ReviewStore(sys.argv[1], create=False, read_only=True)
print(len(store.verdicts()), flush=True)
time.sleep(60)  # killed with -9 meanwhile, its private copy still there
"""


def test_a_private_copy_left_by_a_read_killed_with_9_is_removed_by_the_next_read(tmp_path, monkeypatch):
    """An export killed with -9 while it read a database through a private copy left the copy
    in the temporary folder for good (reviewers' names, notes and patients' file paths). The
    next read-only opening removes it: only folders of the copies' own name, owned by the user,
    whose process is gone; never one of a running process, another user's, or through a link."""
    import tempfile

    db = _left_mid_write(tmp_path / "reviews")
    private = tmp_path / "tmp"
    private.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _READ_AND_WAIT, str(db)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "TMPDIR": str(private)})
    try:
        assert child.stdout.readline().strip() == "5"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    (left,) = private.iterdir()
    assert left.name.startswith(f"fetaliqa-review-{child.pid}-")
    assert (left / "hot.sqlite3").is_file()
    assert left.stat().st_mode & 0o777 == 0o700  # private to the user meanwhile

    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    kept = {
        f"fetaliqa-review-{running.pid}-abcd1234": None,  # a read still running
        "fetaliqa-review-abcd1234": None,                   # not the copies' name
        f"fetaliqa-review-{child.pid}-theirs_1": 65534,     # another user's
    }
    try:
        for name, owner in kept.items():
            (private / name).mkdir()
            (private / name / "x.sqlite3").write_bytes(b"keep")
            if owner is not None:
                os.chown(private / name, owner, owner)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "x.sqlite3").write_bytes(b"keep")
        (private / f"fetaliqa-review-{child.pid}-linked12").symlink_to(elsewhere)
        monkeypatch.setattr(tempfile, "tempdir", str(private))
        with ReviewStore(db, create=False, read_only=True) as store:
            assert len(store.verdicts()) == 5
    finally:
        running.kill()
        running.wait()
    assert not left.exists()
    assert sorted(p.name for p in private.iterdir()) == sorted([*kept, f"fetaliqa-review-{child.pid}-linked12"])
    assert (elsewhere / "x.sqlite3").read_bytes() == b"keep"
