"""Every CSV the app writes neutralises formula cells (OWASP's rule for CSV injection), and
output folders get the permissions a plain mkdir gives (colleagues on a shared folder can read)."""

from __future__ import annotations

import csv
import io
import os
import stat

import numpy as np
import pytest

from fetaliqa_core.files import atomic_output_dir, csv_writer, spreadsheet_safe
from fetaliqa_core.review.report import labels_csv_text, report_csv_text
from fetaliqa_core.review.store import ReviewStore

HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\tlead", "\rlead"]


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_csv_writer_neutralises_formula_cells_but_keeps_numbers():
    buf = io.StringIO()
    w = csv_writer(buf, lineterminator="\n")
    w.writerow(HOSTILE[:5] + ["-0.25", -3, 1.5, None, "plain"])
    row = _rows(buf.getvalue())[0]
    assert row[:5] == ["'" + v for v in HOSTILE[:5]]
    assert row[5:] == ["-0.25", "-3", "1.5", "", "plain"]
    assert spreadsheet_safe("\rlead") == "'\rlead"


@pytest.fixture
def hostile_store(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite3")
    sid = store.add_sweep("=cafe", "=evil.mha", 4)
    import sqlite3

    with sqlite3.connect(tmp_path / "r.sqlite3") as raw:  # as a database written before paths were made absolute
        raw.execute("UPDATE sweeps SET path = ? WHERE id = ?", ("=evil.mha", sid))
    store.add_model_run(sid, {"cls": {"hash": "h", "name": "@model"}}, np.full(4, 0.9), np.full(4, 0.9),
                        np.full(4, 500), np.ones(4, bool), chosen_frame=1)
    for name in HOSTILE[:4]:
        store.record_verdict(sid, 1, name, "optimal", note="=1+1")
    yield store
    store.close()


def _no_formula_cells(text: str) -> None:
    for row in _rows(text)[1:]:
        for cell in row:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(cell)  # only plain numbers may start so


def test_review_report_csv_neutralises_reviewer_names_and_notes(hostile_store):
    text = report_csv_text(hostile_store)
    _no_formula_cells(text)
    assert "'=HYPERLINK" in text and "'@SUM(A1:A9)" in text


def test_labels_csv_neutralises_reviewer_names_and_paths(hostile_store):
    text = labels_csv_text(hostile_store)
    _no_formula_cells(text)
    assert "'=evil.mha" in text


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_output_folder_is_created_with_normal_permissions_not_0700(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "results") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "results").stat().st_mode)
    assert mode == 0o755, oct(mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX folder fsync")
def test_results_and_their_folder_are_flushed_to_disk(tmp_path, monkeypatch):
    from fetaliqa_core.files import atomic_write

    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    with atomic_output_dir(tmp_path / "results") as tmp:
        atomic_write(tmp / "summary.json", "{}")
    assert any(p.endswith(".tmp.json") for p in synced)  # the file's bytes
    assert str(tmp_path) in synced  # the rename of the results folder into place


def test_a_carriage_return_inside_a_cell_never_splits_the_row():
    import csv
    import io

    from fetaliqa_core.files import csv_writer

    for terminator in ("\n", "\r\n"):
        buf = io.StringIO(newline="")
        w = csv_writer(buf, lineterminator=terminator)
        w.writerow(["frame", "note"])
        w.writerow([3, "looks fine\rbut check\r\nagain"])
        rows = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))
        assert rows == [["frame", "note"], ["3", "looks fine\nbut check\nagain"]], (terminator, buf.getvalue())
