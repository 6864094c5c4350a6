"""The review database: durability, history, queues, resume, migrations, damaged files."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fetaliqa_core import paths
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.review import SCHEMA_VERSION, ReviewStore
from fetaliqa_core.review.store import APPLICATION_ID, apply_migrations

REPO = Path(__file__).resolve().parents[1]
N = 20


def _store_with_run(path: Path, flagged_frames=(3, 4, 5, 6), chosen=5):
    """A 20-frame sweep (two sub-sweeps) with a model run.

    Classifier positive on 2..6, segmenter positive on 3..7 -> models disagree on 2 and 7.
    """
    store = ReviewStore(path)
    sid = store.add_sweep("f" * 64, "/data/case.mha", N, [(0, 10), (10, 20)], (0.28, 0.28))
    p_cls = np.full(N, 0.1, np.float32)
    p_cls[2:7] = 0.9
    p_seg = np.full(N, 0.2, np.float32)
    p_seg[3:8] = 0.8
    flagged = np.zeros(N, bool)
    flagged[list(flagged_frames)] = True
    store.add_model_run(sid, {"cls": {"hash": "aa", "name": "c"}}, p_cls, p_seg,
                        (p_seg * 1000).astype(int), flagged, threshold=0.5, chosen_frame=chosen,
                        ac_mm=250.0, ga_weeks=28.4)
    return store, sid


def test_default_file_is_in_the_data_dir_and_uses_wal(tmp_path):
    with ReviewStore() as store:
        assert store.path == paths.data_dir() / "reviews.sqlite3"
        assert store.schema_version == SCHEMA_VERSION
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn = sqlite3.connect(paths.data_dir() / "reviews.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def test_sweep_is_found_by_hash_and_follows_a_moved_file(tmp_path):
    with ReviewStore(tmp_path / "r.db") as store:
        a = store.add_sweep("ab" * 32, "/old/case.mha", 840, None, (0.28, 0.28))
        b = store.add_sweep("ab" * 32, "/new/case.mha", 840)
        assert a == b
        record = store.sweep(a)
        assert record.path == "/new/case.mha"
        assert record.sweep_ranges == [(0, 840)]
        assert store.find_sweep("abab").id == a
        assert store.find_sweep("zz") is None
        with pytest.raises(FetalIQAError, match="840 frames"):
            store.add_sweep("ab" * 32, "/x.mha", 100)


def test_a_sweep_opened_by_a_relative_path_is_stored_by_its_absolute_one(tmp_path, monkeypatch):
    """'fetaliqa gui case.mha' stored 'case.mha': a report exported from another folder said the
    sweep no longer existed and showed no frames."""
    monkeypatch.chdir(tmp_path)
    with ReviewStore(tmp_path / "r.db") as store:
        sid = store.add_sweep("cd" * 32, "sub/case.mha", 10)
        assert store.sweep(sid).path == str(tmp_path / "sub" / "case.mha")


def test_the_pixel_size_a_sweep_is_measured_with_now_replaces_the_one_stored(tmp_path):
    """A sweep reviewed once with --spacing 0.2, then with its file's own 0.28 mm: the reports went
    on measuring the latest run with 0.2 mm (the first pixel size ever seen); one unknown now is
    unknown in the reports too."""
    with ReviewStore(tmp_path / "r.db") as store:
        sid = store.add_sweep("cd" * 32, "/case.mha", 40, None, (0.2, 0.2))
        assert store.add_sweep("cd" * 32, "/case.mha", 40, None, (0.28, 0.28)) == sid
        assert store.sweep(sid).spacing_mm == (0.28, 0.28)
        store.add_sweep("cd" * 32, "/case.mha", 40, None, None)
        assert store.sweep(sid).spacing_mm is None


def test_model_run_round_trips_arrays_and_masks(tmp_path):
    with ReviewStore(tmp_path / "r.db") as store:
        sid = store.add_sweep("c" * 64, None, 5)
        p_cls = np.array([0.1, np.nan, 0.7, 0.99, 0.0])
        mask = np.zeros((224, 224), np.uint8)
        mask[50:80, 60:90] = 2
        rid = store.add_model_run(sid, {"seg": {"hash": "h"}}, p_cls, np.full(5, np.nan),
                                  [0, 10, 600, 7000, 0], [0, 0, 1, 1, 0], masks={3: mask})
        run = store.latest_run(sid)
        assert run.id == rid and run.bundles == {"seg": {"hash": "h"}}
        np.testing.assert_array_equal(run.p_cls, p_cls.astype(np.float32))
        assert run.p_cls.dtype == np.float32 and run.seg_area_px.dtype == np.int32
        assert run.seg_area_px.tolist() == [0, 10, 600, 7000, 0]
        assert run.flagged.tolist() == [False, False, True, True, False]
        assert np.isnan(run.p_seg).all() and not run.seg_call.any()
        masks = store.run_masks(rid)
        assert list(masks) == [3]
        np.testing.assert_array_equal(masks[3], mask)
        with pytest.raises(ValueError, match="4 values"):
            store.add_model_run(sid, {}, np.zeros(4), np.zeros(5), np.zeros(5), np.zeros(5))
        # only a number to act on is stored: an AC of 60 mm was written, then called a damaged row
        # that stopped every export of the database
        for reading in ({"ac_mm": 60.0}, {"ac_mm": 250.0, "ga_weeks": -5.0}):
            with pytest.raises(ValueError, match="AC 60|GA -5"):
                store.add_model_run(sid, {}, np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5), **reading)
        assert len(store.model_runs(sid)) == 1  # the failed calls left nothing behind


def test_reentered_verdict_keeps_history_and_latest_wins(tmp_path):
    store, sid = _store_with_run(tmp_path / "r.db")
    with store:
        first = store.record_verdict(sid, 4, "alice", "optimal")
        assert first.agrees_with_model is True  # flagged and usable
        store.record_verdict(sid, 4, "alice", 0, note="shadow")  # ACOUSLIC code: not usable
        store.record_verdict(sid, 4, "bob", "2", agrees_with_model=None)
        latest = store.verdicts(sid, "alice")
        assert [(v.frame, v.label, v.note) for v in latest] == [(4, "not_usable", "shadow")]
        assert latest[0].agrees_with_model is False and latest[0].model_run_id is not None
        assert [v.label for v in store.verdicts(sid, "alice", history=True)] == [
            "optimal", "not_usable"]
        bob = store.verdict_for(sid, 4, "bob")
        assert bob.label == "suboptimal" and bob.agrees_with_model is None
        assert store.reviewers(sid) == ["alice", "bob"]
        with pytest.raises(FetalIQAError, match="label"):
            store.record_verdict(sid, 4, "alice", "great")
        with pytest.raises(FetalIQAError, match="reviewer name"):
            store.record_verdict(sid, 4, "  ", "optimal")
        with pytest.raises(FetalIQAError, match="outside"):
            store.record_verdict(sid, N, "alice", "optimal")
        assert len(store.verdicts(sid, history=True)) == 3


def test_queues_progress_and_next(tmp_path):
    store, sid = _store_with_run(tmp_path / "r.db", flagged_frames=(3, 4, 6), chosen=5)
    with store:
        assert store.review_queue(sid, "candidates", "alice") == [3, 4, 5, 6]
        assert store.review_queue(sid, "disagreements", "alice") == [2, 7]
        assert store.review_queue(sid, "unreviewed", "alice") == [2, 3, 4, 5, 6, 7]
        assert store.review_queue(sid, "all", "alice") == list(range(N))
        assert store.progress(sid, "alice", "candidates") == (0, 4)

        store.record_verdict(sid, 4, "alice", "optimal")
        store.record_verdict(sid, 12, "alice", "suboptimal")  # not flagged: a disagreement
        assert store.review_queue(sid, "disagreements", "alice") == [2, 7, 12]
        assert store.review_queue(sid, "disagreements", "bob") == [2, 7]
        assert store.review_queue(sid, "unreviewed", "alice") == [2, 3, 5, 6, 7]
        assert store.review_queue(sid, "unreviewed", "bob") == [2, 3, 4, 5, 6, 7]
        assert store.progress(sid, "alice", "candidates") == (1, 4)
        assert store.progress(sid, "alice", "unreviewed") == (2, 7)
        assert store.progress(sid, "alice", "all") == (2, N)

        assert store.next_in_queue(sid, "candidates", "alice", 4) == 5
        assert store.next_in_queue(sid, "candidates", "alice", 6) == 3  # wraps round
        assert store.next_in_queue(sid, "unreviewed", "alice", 3) == 5
        with pytest.raises(ValueError):
            store.review_queue(sid, "bogus", "alice")


def test_a_withdrawn_verdict_counts_as_not_judged_and_the_history_keeps_it(tmp_path):
    """A verdict pressed on the wrong frame could only be replaced by another label: the frame,
    never judged, counted as judged in the queues and the progress for good. Withdrawn now, it
    counts as not judged; the history keeps the verdict and who withdrew it, and when."""
    store, sid = _store_with_run(tmp_path / "r.db", flagged_frames=(3, 4, 6), chosen=5)
    with store:
        store.record_verdict(sid, 4, "alice", "optimal", note="wrong frame")
        store.record_verdict(sid, 12, "alice", "suboptimal")  # not flagged: a disagreement
        store.record_verdict(sid, 4, "bob", "not_usable")
        assert store.progress(sid, "alice", "unreviewed") == (2, 7)

        withdrawal = store.withdraw_verdict(sid, 12, "ALICE", queue="all", wait_ms=100)
        assert (withdrawal.frame, withdrawal.reviewer, withdrawal.label, withdrawal.withdrawn) == (
            12, "alice", "suboptimal", True)
        store.withdraw_verdict(sid, 4, "alice")
        assert store.verdicts(sid, "alice") == [] and store.verdict_for(sid, 4, "alice") is None
        assert [(v.frame, v.label) for v in store.verdicts(sid)] == [(4, "not_usable")]  # bob's stands
        history = store.verdicts(sid, "alice", history=True)
        assert [(v.frame, v.label, v.withdrawn) for v in history] == [
            (4, "optimal", False), (4, "optimal", True), (12, "suboptimal", False), (12, "suboptimal", True)]
        assert history[0].note == "wrong frame"
        # the queues and the progress: as before the verdicts
        assert store.review_queue(sid, "unreviewed", "alice") == [2, 3, 4, 5, 6, 7]
        assert store.review_queue(sid, "disagreements", "alice") == [2, 7]
        assert store.progress(sid, "alice", "unreviewed") == (0, 6)
        assert store.progress(sid, "alice", "candidates") == (0, 4)
        assert store.next_in_queue(sid, "unreviewed", "alice", 3) == 4
        assert store.review_queue(sid, "unreviewed", None) == [2, 3, 5, 6, 7]  # bob judged 4
        pos = store.last_position(sid, "alice")
        assert (pos.frame, pos.queue) == (4, "all")

        # nothing to withdraw: said, and nothing written
        for frame in (4, 9):
            with pytest.raises(FetalIQAError, match=f"no verdict on frame {frame}"):
                store.withdraw_verdict(sid, frame, "alice")
        with pytest.raises(FetalIQAError, match="outside"):
            store.withdraw_verdict(sid, N, "alice")
        assert len(store.verdicts(sid, history=True)) == 5
        # a verdict entered again stands again
        store.record_verdict(sid, 4, "alice", "suboptimal")
        assert [(v.frame, v.label) for v in store.verdicts(sid, "alice")] == [(4, "suboptimal")]
        assert store.progress(sid, "alice", "candidates") == (1, 4)


def test_the_history_marks_the_standing_verdict_even_when_one_is_saved_while_it_is_read(tmp_path):
    """``current`` in the history came from a second query: a verdict saved by the window between
    the two was marked replaced while the verdict it replaced was marked standing, and a
    withdrawal saved between them left the withdrawn verdict marked standing. Each row's
    ``current`` now says what the rows read with it say."""
    from fetaliqa_core.review.report import history_csv_text

    store, sid = _store_with_run(tmp_path / "r.db")
    store.record_verdict(sid, 4, "alice", "optimal")
    store.record_verdict(sid, 5, "alice", "optimal")
    store.record_verdict(sid, 5, "bob", "suboptimal")
    store.withdraw_verdict(sid, 5, "bob")
    real = store.verdicts
    other = ReviewStore(tmp_path / "r.db")  # the window, saving while the history is written

    def verdicts(*args, **kwargs):
        rows = real(*args, **kwargs)
        if other._conn is not None:
            other.record_verdict(sid, 4, "alice", "not_usable")
            other.withdraw_verdict(sid, 5, "alice")
            other.close()
        return rows

    store.verdicts = verdicts
    with store:
        rows = [line.split(",") for line in history_csv_text(store).splitlines()[1:]]
    # (frame, reviewer, label, current, withdrawn): as the rows read say, one standing at most per frame
    assert [(r[2], r[3], r[4], r[-2], r[-1]) for r in rows] in (
        [("4", "alice", "optimal", "1", "0"), ("5", "alice", "optimal", "1", "0"),
         ("5", "bob", "suboptimal", "0", "0"), ("5", "bob", "suboptimal", "0", "1")],
        [("4", "alice", "optimal", "0", "0"), ("4", "alice", "not_usable", "1", "0"),
         ("5", "alice", "optimal", "0", "0"), ("5", "alice", "optimal", "0", "1"),
         ("5", "bob", "suboptimal", "0", "0"), ("5", "bob", "suboptimal", "0", "1")])


@pytest.mark.parametrize("how", ["deleted", "moved", "restored"])
def test_a_database_deleted_moved_or_replaced_while_open_is_not_written(tmp_path, how):
    """SQLite writes on to the file it opened: deleted (with its log), three verdicts saved
    afterwards were reported saved and were gone once the window closed; a backup put back by
    copying and renaming read as damaged afterwards (the window's log over it), its verdicts
    lost. A write is now refused, saying why, and the file at the path is left as it is."""
    from fetaliqa_core.review.store import DatabaseReplaced

    db = tmp_path / "r.db"
    store, sid = _store_with_run(db)
    backup = tmp_path / "backup.db"
    with ReviewStore(db) as other:  # a backup made before alice's verdict, with a verdict of its own
        other._conn.execute(f"VACUUM INTO '{backup}'")
    with ReviewStore(backup) as restored:
        restored.record_verdict(sid, 9, "restored", "optimal")
    store.record_verdict(sid, 4, "alice", "optimal")  # the window's verdict before the file changed
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    elif how == "moved":
        os.replace(db, tmp_path / "moved.db")
    else:
        os.replace(backup, db)
    with store:
        for frame in (5, 6):
            with pytest.raises(DatabaseReplaced, match="moved, deleted or replaced .* nothing was saved"):
                store.record_verdict(sid, frame, "alice", "suboptimal")
        with pytest.raises(DatabaseReplaced):
            store.withdraw_verdict(sid, 4, "alice")
        with pytest.raises(DatabaseReplaced):
            store.set_position(sid, "alice", 7)
        with pytest.raises(DatabaseReplaced):
            store.add_sweep("e" * 64, None, 5)
    if how == "restored":
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert sorted(conn.execute("SELECT frame, reviewer FROM verdicts")) == [(9, "restored")]
        conn.close()
    elif how == "deleted":
        assert not db.exists()
    else:  # the moved file keeps what was saved before it was moved, and nothing after
        with ReviewStore(tmp_path / "moved.db") as moved:
            assert [(v.frame, v.reviewer) for v in moved.verdicts(sid)] == [(4, "alice")]


def test_the_standing_verdicts_of_a_sweep_are_read_from_that_sweep_only(tmp_path):
    """The standing verdicts were found by grouping over the whole table: on a database of 1,000
    sweeps, each start of a review and each verdict took half a second and more. The work done
    for one sweep's verdicts (SQLite's steps) no longer grows with the other sweeps' verdicts."""
    store, sid = _store_with_run(tmp_path / "r.db")
    with store:
        for frame in (3, 4, 5):
            store.record_verdict(sid, frame, "alice", "optimal")
        store.record_verdict(sid, 4, "alice", "not_usable")
        steps = [0]

        def counted(call):
            steps[0] = 0
            store._conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 10)
            try:
                out = [(v.frame, v.reviewer, v.label) for v in call()]
            finally:
                store._conn.set_progress_handler(None, 10)
            return out, steps[0]

        alone = [counted(lambda: store.verdicts(sid, "alice")), counted(lambda: store.verdicts(sid))]
        others = [store.add_sweep(f"{k:064x}", None, 50) for k in range(200)]
        store._conn.executemany(
            "INSERT INTO verdicts (sweep_id, frame, reviewer, label, created_utc) VALUES (?, ?, ?, 'optimal', 'x')",
            [(other, f, r) for other in others for f in range(10) for r in ("alice", "bob")])
        crowded = [counted(lambda: store.verdicts(sid, "alice")), counted(lambda: store.verdicts(sid))]
        for (rows, before), (rows_now, now) in zip(alone, crowded):
            assert rows == rows_now == [(3, "alice", "optimal"), (4, "alice", "not_usable"), (5, "alice", "optimal")]
            assert now < 2 * before + 20, (before, now)
        assert len(store.verdicts()) == 3 + 4000


def test_a_withdrawal_waits_only_as_long_as_it_is_told_for_another_programs_write(tmp_path):
    """The viewer withdraws as it saves a verdict: a busy database is said at once (DatabaseBusy),
    nothing changed, instead of freezing the window for the busy timeout."""
    import time

    from fetaliqa_core.review.store import DatabaseBusy

    db = tmp_path / "r.db"
    store, sid = _store_with_run(db)
    with store:
        store.record_verdict(sid, 4, "alice", "optimal")
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseBusy):
                store.withdraw_verdict(sid, 4, "alice", wait_ms=100)
            assert time.monotonic() - started < 2.0
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert store.verdict_for(sid, 4, "alice").label == "optimal"
        store.withdraw_verdict(sid, 4, "alice", wait_ms=100)
        assert store.verdict_for(sid, 4, "alice") is None


def test_another_connections_commit_moves_data_version_and_its_own_does_not(tmp_path):
    """A window tells by ``data_version`` whether another window or program changed the verdicts
    it shows: its own saves must not move it (a re-read on every save), another's must."""
    db = tmp_path / "r.sqlite3"
    with ReviewStore(db) as mine, ReviewStore(db) as other:
        sid = mine.add_sweep("h" * 64, "a.mha", 10)
        before = mine.data_version()
        mine.record_verdict(sid, 1, "ann", "optimal")
        assert mine.data_version() == before
        other.record_verdict(sid, 2, "ann", "suboptimal")
        moved = mine.data_version()
        assert moved != before
        assert mine.data_version() == moved  # (asking again is no change)
        other.withdraw_verdict(sid, 1, "ann")
        assert mine.data_version() != moved


def test_resume_position_survives_a_restart(tmp_path):
    db = tmp_path / "r.db"
    store, sid = _store_with_run(db)
    store.record_verdict(sid, 3, "alice", "optimal", queue="candidates")
    store.set_position(sid, "alice", 6)
    assert store.last_position(sid, "bob") is None
    store.close()
    with ReviewStore(db) as again:
        pos = again.last_position(sid, "alice")
        assert (pos.frame, pos.queue) == (6, "candidates")
        again.set_position(sid, "alice", 2, "disagreements")
        assert again.last_position(sid, "alice").queue == "disagreements"


def test_threads_share_one_store(tmp_path):
    store, sid = _store_with_run(tmp_path / "r.db")
    errors = []

    def enter(name):
        try:
            for f in range(N):
                store.record_verdict(sid, f, name, "optimal")
                store.review_queue(sid, "unreviewed", name)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=enter, args=(n,)) for n in ("gui", "worker")]
    for t in threads:
        t.start()
    # A second process-like connection reads while the threads write (WAL readers don't block).
    with ReviewStore(store.path) as reader:
        reader.verdicts(sid)
    for t in threads:
        t.join()
    assert not errors
    assert len(store.verdicts(sid)) == 2 * N
    store.close()


CHILD = r"""
import sys
import numpy as np
from fetaliqa_core.review import ReviewStore
store = ReviewStore(sys.argv[1])
sid = store.add_sweep("e" * 64, "/data/case.mha", 100000)
print("ready", flush=True)
for frame in range(100000):
    store.record_verdict(sid, frame, "alice", ("optimal", "suboptimal", "not_usable")[frame % 3],
                         note=f"n{frame}")
    print(frame, flush=True)
"""


@pytest.mark.timeout(120)
def test_sigkill_mid_review_loses_no_entered_verdict(tmp_path):
    db = tmp_path / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed: list[int] = []
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        while len(printed) < 30:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            printed.append(int(line))
        if hasattr(signal, "SIGKILL"):
            os.kill(proc.pid, signal.SIGKILL)
        else:  # Windows: TerminateProcess, just as abrupt
            proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    if hasattr(signal, "SIGKILL"):
        assert proc.returncode == -signal.SIGKILL
    with ReviewStore(db) as store:
        record = store.find_sweep("e" * 64)
        assert record is not None, "the sweep registered before the verdicts was lost"
        stored = {v.frame: v for v in store.verdicts(record.id)}
    missing = [f for f in printed if f not in stored]
    assert not missing, f"verdicts printed as committed but lost: {missing}"
    assert stored[printed[-1]].note == f"n{printed[-1]}"
    # Nothing half-written either: the stored frames are exactly 0..k.
    assert sorted(stored) == list(range(len(stored)))


def _v1_database(db: Path) -> sqlite3.Connection:
    """A review database of schema version 1 holding one 10-frame sweep (id 1, hash 'abc');
    the connection is left open for more rows."""
    conn = sqlite3.connect(db, isolation_level=None)
    apply_migrations(conn, 1)
    conn.execute("INSERT INTO sweeps (id, content_hash, path, n_frames, sweep_ranges, "
                 "added_utc) VALUES (1, 'abc', '/d/c.mha', 10, '[[0, 10]]', '2024-01-01')")
    return conn


def test_opens_a_v1_database_and_migrates_it(tmp_path):
    db = tmp_path / "old.sqlite3"
    conn = _v1_database(db)
    conn.execute("INSERT INTO verdicts (sweep_id, frame, reviewer, label, agrees_with_model, "
                 "note, created_utc) VALUES (1, 7, 'alice', 'suboptimal', 1, 'old', "
                 "'2024-01-01T10:00:00+00:00')")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()

    with ReviewStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        (v,) = store.verdicts(1)
        assert (v.frame, v.label, v.note, v.agrees_with_model, v.model_run_id) == (
            7, "suboptimal", "old", True, None)
        # Resume falls back to the latest verdict (positions did not exist in v1).
        assert store.last_position(1, "alice").frame == 7
        # v2 features work on the migrated file.
        rid = store.add_model_run(1, {}, np.zeros(10), np.zeros(10), np.zeros(10),
                                  np.zeros(10, bool), masks={2: np.ones((4, 4), np.uint8)})
        assert list(store.run_masks(rid)) == [2]
        store.set_position(1, "alice", 3, "all")
    backup = db.with_name(db.name + ".v1.bak")
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 1
    conn.close()
    with ReviewStore(db) as store:  # reopening does not migrate twice
        assert store.last_position(1, "alice").frame == 3


def _v2_database(db: Path) -> None:
    """A review database as the first two schema steps made it (before withdrawals), holding
    one 10-frame sweep with a model run, two verdicts and a resume position."""
    conn = sqlite3.connect(db, isolation_level=None)
    apply_migrations(conn, 2)
    conn.execute("INSERT INTO sweeps (id, content_hash, path, n_frames, sweep_ranges, added_utc) "
                 "VALUES (1, 'abc', '/d/c.mha', 10, '[[0, 10]]', '2024-01-01')")
    blob = np.zeros(10, "<f4").tobytes()
    conn.execute("INSERT INTO model_runs (id, sweep_id, created_utc, bundles, threshold, p_cls, p_seg, "
                 "seg_area_px, flagged, seg_threshold) VALUES (1, 1, '2024-01-01', '{}', 0.5, ?, ?, ?, ?, 0.5)",
                 (blob, blob, np.zeros(10, "<i4").tobytes(), bytes(10)))
    for frame, label in ((3, "optimal"), (5, "not_usable")):
        conn.execute("INSERT INTO verdicts (sweep_id, frame, reviewer, label, agrees_with_model, note, "
                     "created_utc, model_run_id) VALUES (1, ?, 'ann', ?, NULL, 'old', '2024-01-01T10:00:00+00:00', 1)",
                     (frame, label))
    conn.execute("INSERT INTO positions VALUES (1, 'ann', 'all', 5, '2024-01-01T10:00:00+00:00')")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_a_v2_database_keeps_its_verdicts_and_gets_withdrawals(tmp_path):
    """Withdrawals need a column a v2 database lacks: opened by this version, it is updated (a
    backup first), every verdict kept and none withdrawn, and a verdict in it can be withdrawn."""
    db = tmp_path / "v2.sqlite3"
    _v2_database(db)
    with ReviewStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [(v.frame, v.label, v.note, v.model_run_id, v.withdrawn) for v in store.verdicts(1)] == [
            (3, "optimal", "old", 1, False), (5, "not_usable", "old", 1, False)]
        assert store.last_position(1, "ann").frame == 5
        store.withdraw_verdict(1, 3, "ann")
        assert [v.frame for v in store.verdicts(1)] == [5]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT frame, withdrawn FROM verdicts ORDER BY id").fetchall() == [(3, 0), (5, 0), (3, 1)]
        with pytest.raises(sqlite3.IntegrityError):  # a withdrawal is 0 or 1, nothing else
            conn.execute("UPDATE verdicts SET withdrawn = 2 WHERE id = 1")
    with contextlib.closing(sqlite3.connect(db.with_name(db.name + ".v2.bak"))) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 2


def test_a_v2_database_that_may_not_be_written_is_still_read(tmp_path, monkeypatch):
    """`review export / labels / history` on a v2 database on read-only media: it cannot be updated,
    and needs not be (none of its rows is a withdrawal), so it is read as it is, untouched; a v1
    database there is still refused, saying what to do."""
    import hashlib

    db = tmp_path / "v2.sqlite3"
    _v2_database(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    monkeypatch.setattr(ReviewStore, "_writable", lambda self: False)
    with ReviewStore(db, create=False, read_only=True) as store:
        assert store.schema_version == 2
        assert [(v.frame, v.withdrawn) for v in store.verdicts(1, history=True)] == [(3, False), (5, False)]
        assert store.verdict_for(1, 5, "ann").label == "not_usable"
        assert store.progress(1, "ann", "all") == (2, 10)
        with pytest.raises(FetalIQAError, match="only to read"):
            store.withdraw_verdict(1, 3, "ann")
        from fetaliqa_core.review.report import history_csv_text, labels_csv_text

        assert len(labels_csv_text(store).splitlines()) == 3
        assert [line.split(",")[-2:] for line in history_csv_text(store).splitlines()[1:]] == [["1", "0"]] * 2
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not db.with_name(db.name + ".v2.bak").exists()
    old = tmp_path / "v1.sqlite3"
    _v1_database(old).close()
    with pytest.raises(FetalIQAError, match="earlier FetalIQA"):
        ReviewStore(old, create=False, read_only=True)


def test_damaged_or_foreign_files_are_reported_and_left_alone(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FetalIQAError, match="cannot be read.*left as it is"):
        ReviewStore(junk)
    assert junk.read_bytes() == b"this is not a database" * 100

    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(FetalIQAError, match="another program"):
        ReviewStore(foreign)

    newer = tmp_path / "newer.db"
    ReviewStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(FetalIQAError, match="newer FetalIQA"):
        ReviewStore(newer)

    with pytest.raises(FetalIQAError, match="does not exist"):
        ReviewStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(FetalIQAError, match="folder"):
        ReviewStore(tmp_path)


def test_one_person_is_one_reviewer_whatever_the_case_they_type(tmp_path):
    """"Alice" and "alice" were two reviewers: each had half the verdicts, her own resume position,
    an agreement row, and contradicting labels in the training CSV."""
    s = ReviewStore(tmp_path / "r.sqlite3")
    sid = s.add_sweep("d5" * 32, "/data/c.mha", 6)
    s.record_verdict(sid, 1, "Alice", "optimal")
    s.record_verdict(sid, 2, " alice ", "suboptimal")
    s.record_verdict(sid, 1, "ALICE", "not_usable")
    assert s.reviewers() == ["Alice"]
    assert [(v.frame, v.label) for v in s.verdicts(sid, "Alice")] == [(1, "not_usable"), (2, "suboptimal")]
    assert s.known_reviewer("alice") == "Alice" and s.known_reviewer("Bob") == "Bob"
    # the same letters in another Unicode form are the same name (kept in the composed form)
    s.record_verdict(sid, 3, "Zoe\u0301", "optimal")
    assert s.known_reviewer("Zo\u00e9") == "Zo\u00e9" and "Zo\u00e9" in s.reviewers()
    s.close()


def test_the_read_only_commands_open_the_database_only_to_read(tmp_path):
    """`review list / labels / export` failed on a database on read-only media or in a folder one
    may not write ('attempt to write a readonly database'): they open it read-only now."""
    import hashlib

    path = tmp_path / "r.sqlite3"
    with ReviewStore(path) as s:
        sid = s.add_sweep("e6" * 32, "/data/c.mha", 6)
        s.record_verdict(sid, 1, "ann", "optimal")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with ReviewStore(path, create=False, read_only=True) as s:
        assert [v.frame for v in s.verdicts()] == [1]
        with pytest.raises(FetalIQAError):
            s.record_verdict(sid, 2, "ann", "optimal")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    from fetaliqa_core.cli import review as review_cli

    assert review_cli._open(type("Args", (), {"db": str(path)})())._read_only


def test_a_reviewer_name_carries_no_direction_overrides_or_control_characters(tmp_path):
    from fetaliqa_core.review.records import check_reviewer

    assert check_reviewer("ann\u202egpj.exe") == "anngpj.exe"
    assert check_reviewer(" bo\x07b\n") == "bob" and check_reviewer("\u0645\u0631\u064a\u0645") == "\u0645\u0631\u064a\u0645"
    with pytest.raises(FetalIQAError):
        check_reviewer("\u202e\u2066")


@pytest.mark.parametrize("text, note, name", [
    # plain ASCII (cleaned bytewise): C0 and DEL go; a note keeps its tabs and line breaks
    ("a\x00b\x07c\x1b[31md\x7fe\tf\ng\rh", "abc[31mde\tf\ng\rh", "abc[31mdefgh"),
    # any other text: C1 and overrides go too; a note keeps balanced isolates, a name drops them
    ("\u05d0\x9b\u202e\x1bb\u2066c\u2069\t", "\u05d0b\u2066c\u2069\t", "\u05d0bc"),
    ("\u05d0\u2066open\nx", "\u05d0open\nx", "\u05d0openx"),  # an isolate left open is dropped
])
def test_notes_and_names_lose_control_characters_whatever_their_alphabet(text, note, name):
    from fetaliqa_core.review.records import clean_name, clean_note

    assert clean_note(text) == note and clean_name(text) == name


def test_a_writable_database_of_an_earlier_version_is_updated_then_read_only(tmp_path):
    db = tmp_path / "old.sqlite3"
    _v1_database(db).close()
    with ReviewStore(db, create=False, read_only=True) as s:
        assert [r.content_hash for r in s.sweeps()] == ["abc"] and s.schema_version == SCHEMA_VERSION
        with pytest.raises(FetalIQAError):
            s.add_sweep("def", "/d/e.mha", 4)
    assert (tmp_path / "old.sqlite3.v1.bak").is_file()


def test_review_list_on_a_read_only_home_says_nothing_was_reviewed(capsys, monkeypatch):
    """With a read-only home, `review list` made the data and settings folders to read nothing:
    it warned that the settings folder cannot be written and told the user to "Free space or fix
    its permissions" for the data folder; it now says, as with a writable home, that there is no
    review database yet."""
    import errno
    import pathlib

    from fetaliqa_core.cli import main

    mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert main(["review", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fetaliqa: There is no review database at ") and len(err.splitlines()) == 1, err
    assert str(paths.data_path()) in err and not paths.data_path().exists()
    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


def test_a_save_does_not_wait_for_a_reader_to_let_the_log_be_emptied(tmp_path):
    """After each commit the write-ahead log is copied into the file and emptied; with another
    program reading (an export running), that emptying waited out the busy timeout, and every
    verdict's save held the window's thread 5 s. It is left for a later write instead: the verdict
    is saved at once, and the log is emptied once the reader is done."""
    import sqlite3
    import time

    from fetaliqa_core.review.schema import BUSY_TIMEOUT_MS

    db = tmp_path / "reviews.sqlite3"
    with ReviewStore(db) as store:
        sid = store.add_sweep("cd" * 32, "/x.mha", 100)
        store.record_verdict(sid, 1, "alice", "optimal")
        reader = sqlite3.connect(str(db))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM verdicts").fetchall()
        began = time.monotonic()
        store.record_verdict(sid, 2, "alice", "suboptimal")
        took = time.monotonic() - began
        assert took < BUSY_TIMEOUT_MS / 1000 / 2, took
        reader.rollback()
        reader.close()
        store.record_verdict(sid, 3, "alice", "optimal")
        assert [v.frame for v in store.verdicts(sid)] == [1, 2, 3]
        assert (tmp_path / "reviews.sqlite3-wal").stat().st_size == 0
