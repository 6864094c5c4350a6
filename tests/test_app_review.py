"""Review panel in the window: keys 1/2/0 + Enter commit verdicts, progress, note, resume after
a restart, reviewer name asked once, report export."""

from __future__ import annotations

import contextlib
import sqlite3
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QInputDialog, QMessageBox

from fakes import tiny_sweep
from review_window import press, scored_window
from app.settings import AppSettings
from fetaliqa_core.review import ReviewStore, default_db_path


@pytest.fixture(autouse=True)
def no_modal(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda p, t, text, *a, **k: seen.append(text)))
    return seen



@contextlib.contextmanager
def _held_by_another_program(db):
    """Another program's write lock on the review database ``db`` for the block's duration."""
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def _reviewing(qtbot, tmp_path, reviewer: str):
    """A scored window reviewing as ``reviewer`` into ``tmp_path/r.sqlite3``: the window, the
    database's path and the panel's messages as they come."""
    db = tmp_path / "r.sqlite3"
    win = scored_window(qtbot, AppSettings(reviewer=reviewer, review_db=str(db)))
    messages: list[str] = []
    win.review.message.connect(messages.append)
    return win, db, messages


def test_keys_commit_verdicts_and_resume_after_restart(qtbot):
    settings = AppSettings(reviewer="alice")
    win = scored_window(qtbot, settings)
    panel = win.review
    assert panel.start()  # resume: the first unreviewed candidate
    press(win, "1")  # picks "optimal"
    assert panel.active
    queue = list(win.model.queue)
    assert queue and win.model.queue_kind == "candidates"
    first = queue[0]
    assert win.model.frame == first
    assert panel.label_buttons["optimal"].isChecked()
    panel.note.setText("stomach bubble visible")
    press(win, "\n")
    assert win.model.frame == queue[1]  # save and next
    press(win, "0")
    press(win, "\n")
    assert win.model.frame == queue[2]
    assert f"2 / {len(queue)}" in panel.progress_label.text()
    # Typing in the note field does not trigger the viewer's keys.
    panel.note.setFocus()
    QTest.keyClicks(panel.note, "ok 1 2 s")
    assert panel.note.text() == "ok 1 2 s"
    assert win.model.overlay_visible and win.model.frame == queue[2]
    # Enter in the note field saves once and goes on once.
    panel.choose("suboptimal")
    panel.note.setFocus()
    QTest.keyClick(panel.note, Qt.Key_Return)
    QApplication.processEvents()
    assert win.model.frame == queue[3]
    assert f"3 / {len(queue)}" in panel.progress_label.text()
    win.close()

    with ReviewStore(default_db_path()) as store:
        v = store.verdicts(reviewer="alice")
        assert [(x.frame, x.label) for x in v] == [(first, "optimal"), (queue[1], "not_usable"),
                                                   (queue[2], "suboptimal")]
        assert v[2].note == "ok 1 2 s"
        assert v[0].note == "stomach bubble visible"
        assert v[0].agrees_with_model is True  # a candidate judged usable

    # Restart: a new window on the same sweep resumes at the frame alice reached.
    win2 = scored_window(qtbot, AppSettings.load())
    assert win2.review.start()
    assert win2.model.frame == queue[3]
    assert f"3 / {len(queue)}" in win2.review.progress_label.text()
    assert win2.model.verdicts[first] == "optimal"


def test_a_verdict_key_that_starts_a_review_while_the_database_is_busy_neither_freezes_nor_is_lost(
        qtbot, tmp_path, no_modal):
    """The first verdict key starts the review, which waited the database's full busy timeout on
    the window's thread (5 s per key press, the window frozen) while another program held it,
    then said so in a box and dropped the verdict. Now each statement waits a moment; the key
    and Enter are kept, and the review starts and saves them once the database is free."""
    win, db, messages = _reviewing(qtbot, tmp_path, "vi")
    ReviewStore(db).close()
    panel = win.review
    frame = win.model.frame
    with _held_by_another_program(db):
        t0 = time.monotonic()
        press(win, "1")
        press(win, "\n")
        assert time.monotonic() - t0 < 2.0  # a moment per statement, not 5 s per key
        assert panel.session is None and panel.waiting_verdict() == (frame, "optimal")
        assert "saved as soon as" in messages[-1] and not no_modal
        time.sleep(0.5)
        QApplication.processEvents()  # a retry while it is still held: no box, still kept
        assert panel.waiting_verdict() == (frame, "optimal") and not no_modal
    qtbot.waitUntil(lambda: panel.waiting_verdict() is None and panel.session is not None, timeout=10000)
    assert not no_modal and messages[-1].startswith(f"Saved frame {frame}: optimal")
    with ReviewStore(db) as store:
        assert [(v.frame, v.label) for v in store.verdicts(reviewer="vi")] == [(frame, "optimal")]


def test_a_verdict_withdrawn_in_the_window_leaves_the_frame_not_reviewed(qtbot, tmp_path, no_modal):
    """A verdict key pressed on the wrong frame could not be taken back: the frame counted as
    judged in the queue, the progress and every export. Backspace (or Del, or the panel's
    Withdraw) withdraws it: the panel shows no verdict, the progress drops, the database keeps it
    as withdrawn, and a blinded review hides the model's call on the frame again."""
    win, db, messages = _reviewing(qtbot, tmp_path, "vi")
    panel = win.review
    assert panel.start()
    panel.blinded.setChecked(True)
    frame = win.model.frame
    total = len(win.model.queue)
    assert panel.hides_model() and not panel.withdraw_button.isEnabled()
    press(win, "1")
    press(win, "\n")
    assert win.model.frame != frame and f"1 / {total}" in panel.progress_label.text()
    win.model.set_frame(frame)
    QApplication.processEvents()
    assert panel.verdict_label.text() == "Your verdict: optimal" and not panel.hides_model()
    assert panel.withdraw_button.isEnabled() and win.frame_view.overlay.isVisible()
    panel.note.setFocus()  # Backspace in the note field edits the note
    QTest.keyClicks(panel.note, "ab")
    QTest.keyClick(panel.note, Qt.Key_Backspace)
    QApplication.processEvents()
    assert panel.note.text() == "a" and win.model.verdicts[frame] == "optimal"
    win.splitter.setFocus()

    QTest.keyClick(win.splitter, Qt.Key_Backspace)
    QApplication.processEvents()
    assert win.model.frame == frame and frame not in win.model.verdicts
    assert panel.verdict_label.text() == "Not reviewed yet"
    assert not any(b.isChecked() for b in panel.label_buttons.values()) and not panel.withdraw_button.isEnabled()
    assert f"0 / {total}" in panel.progress_label.text() and win.model.review_progress == (0, total)
    assert messages[-1].startswith(f"Withdrew your verdict on frame {frame} (optimal)")
    assert "hidden again" in messages[-1]
    assert panel.hides_model() and not win.frame_view.overlay.isVisible()
    with ReviewStore(db) as store:
        assert store.verdicts(reviewer="vi") == []
        assert [(v.frame, v.label, v.withdrawn) for v in store.verdicts(reviewer="vi", history=True)] == [
            (frame, "optimal", False), (frame, "optimal", True)]
    QTest.keyClick(win.splitter, Qt.Key_Delete)  # nothing left to withdraw: said, nothing written
    QApplication.processEvents()
    assert messages[-1] == f"Frame {frame} has no verdict of yours to withdraw."
    press(win, "2")
    press(win, "\n")
    assert win.model.verdicts[frame] == "suboptimal" and f"1 / {total}" in panel.progress_label.text()
    assert not no_modal


def test_a_withdrawal_while_another_program_holds_the_database_is_refused_at_once(qtbot, tmp_path, no_modal):
    """Withdrawing is saved as a verdict is, at once: under another program's write lock the
    window does not freeze for the busy timeout, says the verdict stands, and shows it so."""
    win, db, _ = _reviewing(qtbot, tmp_path, "wu")
    panel = win.review
    press(win, "0")
    frame = win.model.frame
    press(win, "\n")
    win.model.set_frame(frame)
    QApplication.processEvents()
    with _held_by_another_program(db):
        started = time.monotonic()
        panel.withdraw_button.click()
        assert time.monotonic() - started < 1.0
    assert "busy" in no_modal[-1] and f"on frame {frame} (not usable) stands" in no_modal[-1]
    assert win.model.verdicts[frame] == "not_usable" and panel.verdict_label.text() == "Your verdict: not usable"
    panel.withdraw_button.click()
    assert frame not in win.model.verdicts and panel.session.store.verdicts(panel.session.sweep_id) == []


def test_reviewer_name_asked_once_and_queue_switch(qtbot, monkeypatch):
    asked = []

    def get_text(*args, **kwargs):
        asked.append(1)
        return "bob", True

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(get_text))
    win = scored_window(qtbot, AppSettings())
    press(win, "2")
    assert asked == [1]
    assert AppSettings.load().reviewer == "bob"
    press(win, "\n")
    press(win, "1")
    assert asked == [1]
    # The queue follows the combo box; "all" holds every frame, the viewer follows it.
    combo = win.review.queue_combo
    combo.setCurrentIndex(combo.findData("all"))
    assert win.model.queue_kind == "all"
    assert len(win.model.queue) == win.model.n_frames
    win.review.move(1)
    assert win.model.frame == win.model.queue[win.model.queue_pos]


def test_export_report_html_and_pdf(qtbot, tmp_path, monkeypatch):
    """The PDF's pages are laid out on the report's thread too (0.3 s and more for a few sweeps
    froze the window when they were laid out on its thread)."""
    import threading

    import app.report_pdf as report_pdf

    win = scored_window(qtbot, AppSettings(reviewer="carol"))
    assert win.review.start()
    press(win, "1")
    press(win, "\n")
    html = win.review.write_report(tmp_path / "report.html")
    assert html is not None and html.stat().st_size > 1000
    assert "carol" in html.read_text(encoding="utf-8")
    on_main, real = [], report_pdf.html_to_pdf_bytes

    def recording(html_text, *args, **kwargs):
        on_main.append(threading.current_thread() is threading.main_thread())
        return real(html_text, *args, **kwargs)

    monkeypatch.setattr(report_pdf, "html_to_pdf_bytes", recording)
    pdf = win.review.write_report(tmp_path / "report.pdf")
    assert pdf is not None and pdf.read_bytes()[:5] == b"%PDF-"
    assert on_main == [False]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    assert win.review.write_labels(tmp_path / "labels.csv") == 1
    row = (tmp_path / "labels.csv").read_text().splitlines()[1].split(",")
    assert row[2] == str(win.model.queue[0]) and row[3] == "1" and row[4] == "carol"
    assert win.review.write_history(tmp_path / "history.csv") == 1  # the menu's verdict history
    menus = [a.menu() for a in win.menuBar().actions() if a.menu() is not None]
    assert any(win.act_history in m.actions() for m in menus)


def test_the_window_s_exports_refuse_a_file_they_did_not_write_as_the_command_line_does(qtbot, tmp_path, no_modal):
    """A name typed without an extension ("minutes") got ".pdf" after the save dialog had
    asked about it, and someone's minutes.pdf was replaced without a question; a spreadsheet
    picked in the dialog was replaced by the report, where `fetaliqa review export` refuses
    both. The refusals speak of the file, not of a --out the window does not have."""
    win = scored_window(qtbot, AppSettings(reviewer="alice", review_db=str(tmp_path / "r.sqlite3")))
    assert win.review.start()
    press(win, "1")
    press(win, "\n")
    minutes, budget = tmp_path / "minutes.pdf", tmp_path / "budget.csv"
    minutes.write_bytes(b"%PDF-1.4 the meeting minutes, not a report")
    budget.write_text("item,cost\nprobe,1000\n")
    before = {p: p.read_bytes() for p in (minutes, budget)}
    assert win.review.write_report(tmp_path / "minutes") is None
    assert "minutes.pdf exists and is not an earlier PDF" in no_modal[-1]
    assert win.review.write_report(budget) is None
    assert "budget.csv exists and is not an earlier report CSV" in no_modal[-1]
    for write in (win.review.write_labels, win.review.write_history):
        assert write(budget) is None
        assert "left as it is" in no_modal[-1]
    assert all("--out" not in text for text in no_modal) and len(no_modal) == 4
    assert {p: p.read_bytes() for p in (minutes, budget)} == before
    # its own earlier exports are still replaced, a name without extension too
    assert win.review.write_report(tmp_path / "fetaliqa-review") == tmp_path / "fetaliqa-review.pdf"
    assert win.review.write_report(tmp_path / "fetaliqa-review") == tmp_path / "fetaliqa-review.pdf"
    assert win.review.write_labels(tmp_path / "labels.csv") == 1 == win.review.write_labels(tmp_path / "labels.csv")
    assert len(no_modal) == 4


def test_a_report_shows_progress_and_can_be_cancelled(qtbot, tmp_path, monkeypatch):
    """Writing a report reads each sweep again for its thumbnails (every sweep in the database
    when no review is open): 0.5-1.2 s a sweep. A progress dialog steps a sweep at a time, and
    Cancel writes nothing."""
    from PySide6.QtWidgets import QProgressDialog

    from fakes import tiny_sweep

    from fetaliqa_core.io import load_sweep, write_volume

    write_volume(tmp_path / "sweep.mha", tiny_sweep(n_sweeps=2, per_sweep=20, height=64, width=80).frames)
    win = scored_window(qtbot, AppSettings(reviewer="carol"), sweep=load_sweep(tmp_path / "sweep.mha"))
    press(win, "1")
    press(win, "\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    shown = []
    monkeypatch.setattr(QProgressDialog, "wasCanceled", lambda self: shown.append(self.labelText()) or True)
    messages = []
    win.review.message.connect(messages.append)
    assert win.review.write_report(tmp_path / "report.html") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert shown and shown[0].startswith("Reading sweep 1 of 1")
    assert messages[-1] == "Report cancelled: nothing written"


def test_a_report_reads_its_sweeps_off_the_window_thread(qtbot, tmp_path):
    """The sweeps a report reads again were read on the window's thread: it froze for as long
    (a progress dialog stepped between them). They are read on a thread of their own now, and
    the window's event loop keeps running meanwhile."""
    import threading

    from PySide6.QtCore import QTimer

    import fetaliqa_core.io as fio
    from fakes import tiny_sweep

    fio.write_volume(tmp_path / "first.mha", tiny_sweep(n_sweeps=2, per_sweep=20, height=64, width=80).frames)
    win = scored_window(qtbot, AppSettings(reviewer="carol"), sweep=fio.load_sweep(tmp_path / "first.mha"))
    press(win, "1")
    press(win, "\n")
    ended = []
    win.scoring_ended.connect(lambda c, m: ended.append(c))
    win.set_sweep(tiny_sweep(n_sweeps=1, per_sweep=12, height=64, width=80))  # first.mha is not open now
    qtbot.waitUntil(lambda: bool(ended), timeout=20000)
    assert win.review.session is None

    readers, real_load = [], fio.load_sweep

    def slow_load(path, *args, **kwargs):
        readers.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.6)
        return real_load(path, *args, **kwargs)

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    try:
        import unittest.mock as mock

        with mock.patch.object(fio, "load_sweep", slow_load):
            out = win.review.write_report(tmp_path / "report.html")
    finally:
        timer.stop()
    assert out is not None and "first.mha" in out.read_text(encoding="utf-8")
    assert readers == [False]  # read once, not on the window's thread
    assert len(ticks) >= 10  # the event loop ran while it was read (0.6 s: ~30 ticks)

    # Cancel while a sweep is being read: the next one is never read, nothing is written.
    from PySide6.QtWidgets import QProgressDialog

    fio.write_volume(tmp_path / "second.mha", tiny_sweep(n_sweeps=1, per_sweep=12, height=64, width=80).frames)
    win.set_sweep(fio.load_sweep(tmp_path / "second.mha"))
    ended.clear()
    qtbot.waitUntil(lambda: bool(ended), timeout=20000)
    press(win, "1")
    press(win, "\n")
    win.review.close_store()  # the review ends: the report covers every sweep of the database
    win.set_sweep(tiny_sweep(n_sweeps=1, per_sweep=12, height=64, width=80))
    readers.clear()

    def press_cancel():
        for w in QApplication.topLevelWidgets():
            if isinstance(w, QProgressDialog) and w.isVisible():
                w.cancel()

    QTimer.singleShot(300, press_cancel)  # during the first sweep's 0.6 s read
    with mock.patch.object(fio, "load_sweep", slow_load):
        assert win.review.write_report(tmp_path / "cancelled.html") is None
    assert len(readers) == 1 and not (tmp_path / "cancelled.html").exists()


def test_a_review_never_starts_in_a_database_with_damaged_rows(qtbot, tmp_path, no_modal):
    """Its reports and exports refuse it; a review used to write its verdicts into it all the same."""
    import hashlib

    db = tmp_path / "reviews.sqlite3"
    with ReviewStore(db) as store:
        sid = store.add_sweep("abc", "/x/case.mha", 3)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE sweeps SET sweep_ranges = '[[0, 6' WHERE id = ?", (sid,))
    conn.commit()
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    win = scored_window(qtbot, AppSettings(reviewer="alice", review_db=str(db)))
    assert win.review.start() is False and not win.review.active
    assert len(no_modal) == 1 and "damaged row" in no_modal[0]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    win.close()


def test_an_unreadable_review_database_is_said_once_in_the_window_s_own_terms(qtbot, tmp_path, no_modal):
    """A junk review database gave the box "… cannot be read … or choose another file with --db."
    (an option the window has no control for), and the verdict key after it tried to start the
    review again and showed the same box a second time."""
    db = tmp_path / "reviews.sqlite3"
    db.write_bytes(b"not a database " * 600)
    before = db.read_bytes()
    win = scored_window(qtbot, AppSettings(reviewer="alice", review_db=str(db)))
    messages = []
    win.review.message.connect(messages.append)
    assert win.review.start() is False
    assert len(no_modal) == 1 and "cannot be read" in no_modal[0]
    assert "choose another file with --db" not in no_modal[0] and "start the window again with --db" in no_modal[0]
    press(win, "1")  # a verdict key tries to start the review again
    assert len(no_modal) == 1 and not win.review.active
    assert any(m.startswith("The review did not start:") and "cannot be read" in m for m in messages)
    assert db.read_bytes() == before
    win.close()


def test_a_report_shows_no_length_where_the_viewer_shows_none(qtbot, tmp_path):
    """A sweep with a writer's 1 x 1 mm (or another implausible pixel size): the viewer said "AC not
    shown (pixel spacing)" while the report's thumbnails printed "AC 184.9 mm" as a measurement."""
    import dataclasses
    import re

    from fakes import tiny_sweep

    for spacing, lengths in (((1.0, 1.0), False), ((0.28, 0.28), True)):
        sweep = dataclasses.replace(tiny_sweep(n_sweeps=2, per_sweep=20, height=160, width=200),
                                    spacing_mm=spacing, path=f"/nowhere/case_{spacing[0]}.mha")
        win = scored_window(qtbot, AppSettings(reviewer="kim", review_db=str(tmp_path / f"{spacing[0]}.sqlite3")),
                            sweep=sweep)
        press(win, "1")
        press(win, "\n")
        out = win.review.write_report(tmp_path / f"r{spacing[0]}.html")
        html = out.read_text(encoding="utf-8")
        assert bool(re.search(r"AC [\d.]+ mm", html)) is lengths
        if not lengths:
            assert "AC not shown" in win.status_ac.text() and "no lengths" in html
        win.close()
        win.review.close_store()


def test_a_note_stays_with_its_frame(qtbot, tmp_path):
    """A note typed on one frame, then left unsaved, was saved with the next frame's verdict; coming
    back to a judged frame showed an empty note, which a corrected label then saved over the old."""
    win = scored_window(qtbot, AppSettings(reviewer="lee", review_db=str(tmp_path / "r.sqlite3")))
    panel = win.review
    press(win, "1")
    first = win.model.frame
    panel.note.setText(f"frame {first}: stomach bubble")
    win.splitter.setFocus()
    press(win, "]")  # moves on without saving
    second = win.model.frame
    assert second != first and panel.note.text() == ""
    press(win, "2")
    panel.note.setText("cord insertion")
    win.splitter.setFocus()
    press(win, "\n")  # saved with its note, on to the next frame
    assert win.model.frame != second and panel.note.text() == ""
    win.model.set_frame(second)
    QApplication.processEvents()
    assert panel.note.text() == "cord insertion"
    press(win, "1")
    press(win, "\n")  # the label corrected: the note goes with it
    latest = panel.session.store.verdict_for(panel.session.sweep_id, second, "lee")
    assert latest.label == "optimal" and latest.note == "cord insertion"
    assert all(v.note != f"frame {first}: stomach bubble" for v in panel.session.store.verdicts(panel.session.sweep_id))


def test_a_second_window_on_the_same_database_shows_the_verdicts_it_holds(qtbot, tmp_path, no_modal):
    """Two windows, one reviewer, one review database, one sweep: each window read the verdicts
    once, when its review started. A verdict saved in one showed in the other as "Not reviewed
    yet", a verdict replaced there kept showing the old one as "Your verdict", and Withdraw said
    there was "no verdict of yours" on a frame the database held one on. Now a frame shown, the
    window coming back to the front, a save and a withdrawal read them again; what the reviewer
    has chosen or typed and not saved stays."""
    db = tmp_path / "r.sqlite3"
    a = scored_window(qtbot, AppSettings(reviewer="ann", review_db=str(db)))
    b = scored_window(qtbot, AppSettings(reviewer="ann", review_db=str(db)))
    assert a.review.start() and b.review.start()
    pa, pb = a.review, b.review
    queue = list(a.model.queue)
    f, g, h = queue[:3]
    total = len(queue)

    def show(win, frame):
        win.model.set_frame(frame)
        QApplication.processEvents()
        return win.review.verdict_label.text()

    def judge(win, frame, label, note=""):
        win.model.set_frame(frame)
        win.review.choose(label)
        win.review.note.setText(note)
        win.review.save_and_next()
        QApplication.processEvents()

    def front(win):
        win.activateWindow()
        qtbot.waitUntil(win.isActiveWindow, timeout=3000)
        QApplication.processEvents()

    front(a)
    judge(a, f, "optimal")
    assert b.model.frame == f
    front(b)  # B still on the frame: read again as the reviewer comes back to it
    assert pb.verdict_label.text() == "Your verdict: optimal"  # was "Not reviewed yet"
    assert f"1 / {total}" in pb.progress_label.text() and b.model.review_progress == (1, total)
    judge(b, f, "suboptimal")
    assert show(a, f) == "Your verdict: suboptimal"  # was "optimal", the database's "suboptimal"
    assert pa.label_buttons["suboptimal"].isChecked() and a.model.verdicts[f] == "suboptimal"

    # B judges the frame A shows, while A has a label chosen and a note typed on it, not saved
    a.model.set_frame(g)
    QApplication.processEvents()
    pa.choose("not_usable")
    pa.note.setText("shadow, typed in A")
    judge(b, g, "optimal", "typed in B")
    front(a)
    assert pa.verdict_label.text() == "Your verdict: optimal"  # read again on coming to the front
    assert pa.unsaved_verdict() == (g, "not_usable") and pa.note.text() == "shadow, typed in A"
    assert pa.label_buttons["not_usable"].isChecked()

    # a verdict withdrawn in B: A, still on the frame, withdraws nothing and says so
    judge(a, h, "optimal")
    b.model.set_frame(h)
    QApplication.processEvents()
    assert pb.withdraw()  # was refused: "no verdict of yours"
    a.model.set_frame(h)
    QApplication.processEvents()
    messages: list[str] = []
    pa.message.connect(messages.append)
    assert not pa.withdraw()
    assert messages[-1] == f"Frame {h} has no verdict of yours to withdraw."
    assert pa.verdict_label.text() == "Not reviewed yet" and h not in a.model.verdicts
    # and one B saved, A withdraws
    a.model.set_frame(f)
    QApplication.processEvents()
    assert pa.withdraw() and messages[-1].startswith(f"Withdrew your verdict on frame {f} (suboptimal)")
    assert show(b, f) == "Not reviewed yet"
    with ReviewStore(db) as store:
        assert {v.frame: v.label for v in store.verdicts(reviewer="ann")} == {g: "optimal"}
    assert not no_modal
    for win in (a, b):
        win.review.close_store()


def test_next_after_a_frame_judged_in_another_window_is_the_next_unreviewed_one(qtbot, tmp_path, no_modal):
    """Queue "unreviewed" in two windows of one reviewer: B judged the frame A showed, the first
    of the queue. A, reading the verdicts again on coming to the front, stayed on it with the
    queue's position on the next unreviewed frame, so ] stepped one further and that frame was
    passed over without a word. Now ] goes to it, and [ (no queue frame before) stays."""
    db = tmp_path / "r.sqlite3"
    a = scored_window(qtbot, AppSettings(reviewer="ann", review_db=str(db)))
    b = scored_window(qtbot, AppSettings(reviewer="ann", review_db=str(db)))
    assert a.review.start() and b.review.start()
    for win in (a, b):
        win.review.session.set_queue("unreviewed")
        QApplication.processEvents()
    queue = list(a.model.queue)
    shown = a.model.frame
    assert shown == queue[0] and len(queue) >= 3
    b.model.set_frame(shown)
    b.review.choose("optimal")
    b.review.save_and_next()
    QApplication.processEvents()
    a.activateWindow()
    qtbot.waitUntil(a.isActiveWindow, timeout=3000)
    QApplication.processEvents()
    assert a.model.frame == shown and a.model.queue == queue[1:]  # read again; the frame shown stays
    press(a, "[")
    assert a.model.frame == shown
    press(a, "]")
    assert a.model.frame == queue[1]  # was queue[2]
    press(a, "]")
    assert a.model.frame == queue[2]
    press(a, "[")
    assert a.model.frame == queue[1]
    assert not no_modal
    for win in (a, b):
        win.review.close_store()


def _typed(keys) -> None:
    """Keys as the keyboard sends them: to whatever has the focus (a key or a string)."""
    target = QApplication.focusWidget()
    assert target is not None
    QTest.keyClicks(target, keys) if isinstance(keys, str) else QTest.keyClick(target, keys)
    QApplication.processEvents()


def test_enter_or_esc_in_the_note_hands_the_keys_back_to_the_frame(qtbot, tmp_path):
    """After Enter in the note (saved, next frame) the focus stayed in the note: the next frame's
    verdict keys were typed into it ("2", Enter: "Choose a verdict first"), Esc did not leave it,
    and the frame was then saved with the note "20" made of those keys."""
    win = scored_window(qtbot, AppSettings(reviewer="noor", review_db=str(tmp_path / "r.sqlite3")))
    panel = win.review
    _typed("1")
    first = win.model.frame
    panel.note.setFocus()
    _typed("edge")
    _typed(Qt.Key_Return)  # saved with its note, on to the next frame
    second = win.model.frame
    assert second != first and win.model.verdicts[first] == "optimal"
    assert not panel.note.hasFocus() and win.splitter.hasFocus()
    _typed("2")  # the next frame's verdict, as on the frame before
    _typed(Qt.Key_Return)
    assert panel.note.text() == "" and win.model.verdicts[second] == "suboptimal"
    third = win.model.frame
    panel.note.setFocus()
    _typed("gas")
    _typed(Qt.Key_Escape)  # leaves the note, unsaved, the keys back on the frame
    assert not panel.note.hasFocus() and panel.note.text() == "gas"
    _typed("0")
    _typed(Qt.Key_Return)
    assert win.model.verdicts[third] == "not_usable"
    panel.note.setFocus()
    _typed("x")
    _typed(Qt.Key_Return)  # no verdict chosen: said, the note kept, the keys back on the frame
    assert not panel.note.hasFocus() and "note keeps what you typed" in win.status_message.full_text()
    store = panel.session.store
    notes = {v.frame: v.note for v in store.verdicts(panel.session.sweep_id)}
    assert notes == {first: "edge", second: "", third: "gas"}


def test_moving_through_the_queue_while_another_program_holds_the_database(qtbot, tmp_path, no_modal):
    """Another program's write lock: ']' raised out of its key's slot (the message went to stderr
    only) after freezing the window for the database's 5 s busy timeout. The resume position is
    given up after a moment; the move itself happens."""
    win, db, _ = _reviewing(qtbot, tmp_path, "finn")
    press(win, "1")
    press(win, "\n")
    before = win.model.frame
    with _held_by_another_program(db):
        started = time.monotonic()
        win.review.move(1)
        assert time.monotonic() - started < 2.0
        assert win.model.frame != before
    assert not no_modal  # nothing to warn about: only the resume position was not stored


def test_saving_a_verdict_while_another_program_holds_the_database_never_freezes_the_window(
        qtbot, tmp_path, no_modal):
    """Enter under another program's write lock froze the window for the database's 5 s busy
    timeout, then said it was busy. The panel waits a moment, tries again while the window goes
    on, and saves the verdict once the lock is gone (on its frame, even after the reviewer moved)."""
    win, db, messages = _reviewing(qtbot, tmp_path, "ida")
    panel = win.review
    press(win, "1")
    frame = win.model.frame
    with _held_by_another_program(db):
        started = time.monotonic()
        press(win, "\n")
        assert time.monotonic() - started < 1.0
        assert "busy" in messages[-1] and "trying again" in messages[-1]
        assert panel.session.store is not None and win.model.verdicts.get(frame) is None
        press(win, "\n")  # a second Enter does not save twice
        assert "Still saving" in messages[-1]
        win.model.set_frame(frame + 1)  # the reviewer goes on meanwhile
        qtbot.wait(900)
    qtbot.waitUntil(lambda: win.model.verdicts.get(frame) == "optimal", timeout=3000)
    assert messages[-1].startswith(f"Saved frame {frame}: optimal")
    assert win.model.frame == frame + 1  # not moved back nor on
    saved = [v for v in panel.session.store.verdicts(panel.session.sweep_id) if v.frame == frame]
    assert [v.label for v in saved] == ["optimal"]
    assert not no_modal


def test_a_verdict_waiting_for_the_database_is_saved_to_its_own_sweep_after_another_opens(
        qtbot, tmp_path, no_modal):
    """A verdict waiting for a busy database when the reviewer opened another sweep was marked on
    the new sweep's frame (or, with the lock still held, froze the window 5 s and then told the
    reviewer to go back to a frame of a closed review). It goes on waiting without freezing, and
    is saved to the sweep it was entered on; a label changed while it waited is the one saved."""
    win, db, messages = _reviewing(qtbot, tmp_path, "ida")
    panel = win.review
    press(win, "1")
    frame, old_sweep = win.model.frame, panel.session.sweep_id
    store = panel.session.store
    with _held_by_another_program(db):
        press(win, "\n")
        press(win, "2")  # the reviewer changes their mind before the database takes the first
        started = time.monotonic()
        win.set_sweep(tiny_sweep(n_sweeps=1, per_sweep=30, height=64, width=80))
        assert time.monotonic() - started < 1.0
        qtbot.wait(500)
    qtbot.waitUntil(lambda: messages[-1].startswith("Saved frame"), timeout=3000)
    assert messages[-1].startswith(f"Saved frame {frame} (of the sweep reviewed before): suboptimal")
    assert [v.label for v in store.verdicts(old_sweep) if v.frame == frame] == ["suboptimal"]
    assert win.model.verdicts == {} and not no_modal


def test_a_verdict_the_database_never_takes_is_kept_to_save_again(qtbot, tmp_path, no_modal, monkeypatch):
    """When the other program keeps its lock, the panel gives up after a while, says the verdict
    was not saved, and keeps it chosen so that Enter saves it later."""
    import app.review_panel as review_panel

    monkeypatch.setattr(review_panel, "SAVE_GIVE_UP_S", 0.5)
    win, db, _ = _reviewing(qtbot, tmp_path, "jo")
    panel = win.review
    press(win, "2")
    frame = win.model.frame
    with _held_by_another_program(db):
        press(win, "\n")
        qtbot.waitUntil(lambda: bool(no_modal), timeout=3000)
    assert "busy" in no_modal[-1] and f"Frame {frame}'s verdict was not saved: press Enter" in no_modal[-1]
    assert win.model.verdicts.get(frame) is None and panel.label_buttons["suboptimal"].isChecked()
    press(win, "\n")
    assert win.model.verdicts.get(frame) == "suboptimal"


def test_a_verdict_entered_after_the_database_was_replaced_is_refused_and_stays_chosen(
        qtbot, tmp_path, no_modal):
    """A backup put back over the review database (copied, then renamed) while the window had it
    open: the verdicts entered afterwards were said saved, written where no one would read them,
    and the file read as damaged. The save is refused, saying why and what to do, the verdict
    stays chosen (closing the window asks about it), and the restored file is left as it was."""
    import os
    import shutil

    win, db, _ = _reviewing(qtbot, tmp_path, "jo")
    assert win.review.start()
    press(win, "1")
    press(win, "\n")  # saved before the file is replaced
    shutil.copy(db, tmp_path / "backup.sqlite3")  # (the log is emptied after each write: the file holds it)
    os.replace(tmp_path / "backup.sqlite3", db)
    frame = win.model.frame
    press(win, "2")
    press(win, "\n")
    assert len(no_modal) == 1 and "moved, deleted or replaced" in no_modal[0], no_modal
    assert "Close the window and start it again" in no_modal[0]
    assert f"Frame {frame}'s verdict (suboptimal) was not saved" in no_modal[0]
    assert win.review.unsaved_verdict() == (frame, "suboptimal") and win.model.frame == frame
    win.review.close_store()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [r[0] for r in conn.execute("SELECT label FROM verdicts")] == ["optimal"]
    conn.close()


@pytest.mark.parametrize("queue", ["bogus", 7])
def test_a_resume_position_in_a_queue_this_version_does_not_know_starts_in_the_default_queue(
        qtbot, tmp_path, no_modal, queue):
    """A resume position in a queue of a newer version (or a row changed by hand) stopped every
    start of the review with an error; the review starts in the candidates queue."""
    win, db, _ = _reviewing(qtbot, tmp_path, "jo")
    assert win.review.start()
    press(win, "1")
    press(win, "\n")
    sid = win.review.session.sweep_id
    win.review.close_store()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE positions SET queue = ?, frame = 3 WHERE sweep_id = ?", (queue, sid))
    conn.commit()
    conn.close()
    assert win.review.start() and not no_modal
    assert win.model.queue_kind == "candidates" and win.model.frame == 3


def test_the_last_verdict_of_a_queue_says_the_queue_is_finished(qtbot, tmp_path):
    """After the last frame of a queue, a verdict key silently judged the frame still shown again."""
    win = scored_window(qtbot, AppSettings(reviewer="max", review_db=str(tmp_path / "r.sqlite3")))
    panel = win.review
    messages = []
    panel.message.connect(messages.append)
    press(win, "1")
    for _ in range(200):
        press(win, "\n")
        done, total = win.model.review_progress
        if total and done >= total:
            break
        press(win, "1")
    assert total and done >= total
    assert "Queue finished" in messages[-1]


def test_the_review_database_measures_with_the_pixel_size_the_window_uses(qtbot, tmp_path):
    """A sweep reviewed, then given another pixel size in the window: the reports measured its
    runs with the first one ever stored."""
    from app import window_tools

    win = scored_window(qtbot, AppSettings(reviewer="kai", review_db=str(tmp_path / "r.sqlite3")))
    press(win, "1")
    store, sid = win.review.session.store, win.review.session.sweep_id
    first = store.sweep(sid).spacing_mm
    assert window_tools.ask_spacing(win, 0.31) is True
    qtbot.waitUntil(lambda: win.model.sweep.spacing_source == "user", timeout=5000)
    win.review.session.sync_run(force=True)
    assert store.sweep(sid).spacing_mm == (0.31, 0.31) != first


def test_a_verdict_key_judges_the_frame_shown_and_an_unsaved_one_is_not_dropped_silently(qtbot, tmp_path):
    """A trainer on frame 5 pressed 1 and Enter: the key opened the review at its resume position
    (frame 17) and saved frame 17, which they never looked at, as optimal. A verdict chosen but not
    saved was dropped without a word when the reviewer moved on."""
    win, db, messages = _reviewing(qtbot, tmp_path, "gil")
    candidates = set(int(f) for f in win.model.flags.candidates)
    assert candidates  # the review resumes at one of these
    shown = next(f for f in range(1, win.model.n_frames) if f not in candidates)
    win.model.set_frame(shown)
    QApplication.processEvents()
    press(win, "1")
    assert win.review.active and win.model.frame == shown and win.review.label_buttons["optimal"].isChecked()
    press(win, "\n")
    assert not any("not saved" in m for m in messages)  # (the save's own move to the next frame)
    with ReviewStore(db) as store:
        assert [(v.frame, v.label) for v in store.verdicts(reviewer="gil")] == [(shown, "optimal")]
    now = win.model.frame
    press(win, "2")
    win.model.set_frame(now + 1 if now + 1 < win.model.n_frames else now - 1)
    QApplication.processEvents()
    assert any(f"Frame {now}: suboptimal was not saved" in m for m in messages)


def test_closing_with_a_chosen_unsaved_verdict_asks_to_save_it(qtbot, tmp_path, monkeypatch):
    """A verdict chosen (1) but not saved (Enter) was dropped without a word when the window closed."""
    from PySide6.QtGui import QGuiApplication

    win, db, _ = _reviewing(qtbot, tmp_path, "hal")
    assert win.review.start()
    frame = win.model.frame
    press(win, "2")
    monkeypatch.setattr(QGuiApplication, "platformName", staticmethod(lambda: "xcb"))  # someone can answer
    asked = []

    def answer(parent, title, text, *a, **k):
        asked.append(text)
        return QMessageBox.Cancel if len(asked) == 1 else QMessageBox.Save

    monkeypatch.setattr(QMessageBox, "question", staticmethod(answer))
    assert not win.close()  # Cancel: the window stays, the choice too
    assert win.review.unsaved_verdict() == (frame, "suboptimal")
    assert win.close()
    assert "before closing?" in asked[0]
    assert f"Frame {frame}: suboptimal is chosen but not saved" in asked[0]
    with ReviewStore(db) as store:
        assert [(v.frame, v.label) for v in store.verdicts(reviewer="hal")] == [(frame, "suboptimal")]


def test_a_remembered_database_that_is_gone_is_not_made_again_empty(tmp_path, capsys):
    """After `gui --db project.sqlite3`, the window remembers that database; once the file was
    moved away, a plain window made a new empty one in its place without a word, and the
    verdicts were split between two files. It says so now and uses the default database."""
    from app.cli import run_window
    from fetaliqa_core.review.store import default_db_path

    gone = tmp_path / "moved" / "project.sqlite3"
    settings = AppSettings.load()
    settings.review_db = str(gone)
    settings.save()
    run_window(None, headless=True, max_seconds=0.5)
    err = capsys.readouterr().err
    assert str(gone) in err and "no longer exists" in err and str(default_db_path()) in err
    assert not gone.exists() and AppSettings.load().review_db == ""


def test_a_new_database_named_with_gui_db_is_made_at_once(tmp_path, capsys):
    """`gui --db new.sqlite3` with nothing reviewed remembered a file that was never written:
    every `fetaliqa review` command, and the next window, then said it "no longer exists", which
    reads as lost verdicts (and the next window went back to the default database)."""
    from app.cli import run_window
    from fetaliqa_core.cli import main as cli_main

    new = tmp_path / "project" / "new.sqlite3"
    run_window(None, headless=True, max_seconds=0.5, review_db=new)
    assert new.is_file()
    capsys.readouterr()
    assert cli_main(["review", "list"]) == 0
    err = capsys.readouterr().err
    assert "no longer exists" not in err and str(new.resolve()) in err, err
    run_window(None, headless=True, max_seconds=0.5)
    assert "no longer exists" not in capsys.readouterr().err
    assert AppSettings.load().review_db == str(new.resolve())


def test_closing_while_a_verdict_waits_for_the_database_keeps_the_window_open_until_it_is_saved(
        qtbot, tmp_path, no_modal):
    """Closing the window while a verdict waited for a database another program held froze the
    window for the database's busy timeout, then lost the verdict and said "press Enter to try
    again" in a window that was closing. The window now stays open and responsive, says that it
    waits, and closes once the verdict is saved."""
    win, db, messages = _reviewing(qtbot, tmp_path, "lu")
    press(win, "2")
    frame = win.model.frame
    closed: list[int] = []
    win.closed.connect(lambda: closed.append(1))
    with _held_by_another_program(db):
        press(win, "\n")
        started = time.monotonic()
        win.close()
        assert time.monotonic() - started < 1.0
        qtbot.wait(900)  # the panel tries again meanwhile; the window waits for it, open
        assert not closed and win.isVisible()
        assert "closes once it is saved" in win.status_message.full_text()
    qtbot.waitUntil(lambda: bool(closed), timeout=5000)
    assert not win.isVisible() and not no_modal
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute("SELECT label FROM verdicts WHERE frame = ?", (frame,)).fetchall()
    assert rows == [("suboptimal",)]


@pytest.mark.parametrize("answer", ["Close without it", "Close when saved"])
def test_the_answers_to_closing_while_a_verdict_waits_are_kept(qtbot, tmp_path, monkeypatch, answer):
    """Where someone is asked (a real screen): "Close without it" asked a second question (the
    verdict still counted as chosen), whose default, Save, waited out the lock on the window's
    thread (5 s) and then said "press Enter to try again" in a closing window; "Close when saved"
    closed without the verdict when the save gave up while the question was open."""
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QMessageBox

    from app import review_panel

    win, db, _messages = _reviewing(qtbot, tmp_path, "lu")
    monkeypatch.setattr(QGuiApplication, "platformName", staticmethod(lambda: "xcb"))
    asked, chosen = [], {}

    def exec_(box):
        asked.append(box.text())
        if answer == "Close when saved":  # the question stays open past the time the panel gives up
            win.review._saving.started -= review_panel.SAVE_GIVE_UP_S + 1
            win.review._retry_save()
        chosen["button"] = next(b for b in box.buttons() if b.text() == answer)
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    monkeypatch.setattr(QMessageBox, "clickedButton", lambda box: chosen.get("button"))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(
        lambda *a, **k: (asked.append(a[2]), QMessageBox.Save)[1]))
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda *a, **k: asked.append(a[2])))
    closed: list[int] = []
    win.closed.connect(lambda: closed.append(1))
    press(win, "2")
    with _held_by_another_program(db):
        press(win, "\n")
        started = time.monotonic()
        win.close()
        assert time.monotonic() - started < 1.0  # never the database's busy timeout on the window's thread
    assert not any("is chosen but not saved" in text for text in asked), asked
    if answer == "Close without it":
        assert closed and len(asked) == 1
    else:  # given up: the window stays where the verdict can be entered again, and said so
        assert not closed and win.isVisible() and "press Enter to try again" in asked[-1]
