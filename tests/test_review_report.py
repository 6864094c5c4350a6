"""Review reports (HTML, CSV, PDF), agreement statistics and the reviewer-label export."""

from __future__ import annotations

import base64
import csv
import io
import math
import re
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fetaliqa_core.cli import main
from fetaliqa_core.review import ReviewStore
from fetaliqa_core.review.figures import LABEL_BGR, MASK_BGR, draw_quality_curve, overlay_thumbnail
from fetaliqa_core.review.report import (
    agreement,
    build_report,
    cohen_kappa,
    labels_csv_text,
    render_report_html,
    report_csv_text,
)

UUID = "0199616b-b9d7-4c6d-9a4e-9a2c1d0c7d11"
N = 30
H, W = 48, 64


def _frames() -> np.ndarray:
    """(N, H, W) uint8: dark frames with a bright ring."""
    frames = np.full((N, H, W), 20, np.uint8)
    for i in range(N):
        cv2.circle(frames[i], (W // 2, H // 2), 10 + i % 5, 220, 2)
    return frames


@pytest.fixture
def store(tmp_path):
    """Two sweeps: one with a model run and verdicts by two reviewers, one bare."""
    s = ReviewStore(tmp_path / "reviews.sqlite3")
    sid = s.add_sweep("a1" * 32, f"/data/{UUID}.mha", N, [(0, 15), (15, 30)], (0.28, 0.28))
    t = np.arange(N)
    p_cls = np.exp(-((t - 10) / 3.0) ** 2).astype(np.float32)
    p_seg = p_cls * 0.9
    p_seg[20:23] = np.nan
    flagged = p_cls >= 0.5  # frames 8..12
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (W // 2, H // 2), 12, 1, -1)
    s.add_model_run(sid, {"cls": {"hash": "9f" * 32, "name": "demo cls"}}, p_cls, p_seg,
                    np.nan_to_num(p_seg * 900).astype(int), flagged, chosen_frame=10, ac_mm=250.0,
                    masks={10: mask})
    s.record_verdict(sid, 9, "alice", "optimal")
    s.record_verdict(sid, 10, "alice", "suboptimal", note="<b>edge</b> & blur")
    s.record_verdict(sid, 11, "alice", "not_usable")
    s.record_verdict(sid, 2, "alice", "not_usable")
    s.record_verdict(sid, 2, "alice", "optimal")  # changed mind: latest wins
    s.record_verdict(sid, 10, "bob", "optimal")
    other = s.add_sweep("b2" * 32, "/data/other.nii.gz", 12)
    s.record_verdict(other, 4, "carol", "suboptimal")
    yield s
    s.close()


def test_cohen_kappa_matches_hand_computed_examples():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # Three categories: p_o = 3/4; p_e = .5*.5 + .25*.5 + .25*0 = .375; kappa = .375/.625.
    assert cohen_kappa([0, 1, 2, 0], [0, 1, 1, 0]) == pytest.approx(0.6)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))  # one label throughout: undefined
    assert math.isnan(cohen_kappa([], []))


def test_agreement_compares_usable_labels_with_model_flags(store):
    sid = store.find_sweep("a1").id
    run = store.latest_run(sid)
    by_name = {a.reviewer: a for a in agreement(store.verdicts(sid), run)}
    alice = by_name["alice"]
    # frames 2 (usable, not flagged), 9 (usable, flagged), 10 (usable, flagged),
    # 11 (not usable, flagged)
    assert (alice.n, alice.both_usable, alice.reviewer_only, alice.model_only, alice.neither) \
        == (4, 2, 1, 1, 0)
    assert alice.accuracy == pytest.approx(0.5)
    assert alice.kappa == pytest.approx(cohen_kappa([1, 1, 1, 0], [0, 1, 1, 1]))
    assert by_name["bob"].accuracy == 1.0


def test_curve_picture_marks_verdicts_and_tolerates_gaps():
    n = 50
    p = np.linspace(0, 1, n)
    p_seg = p.copy()
    p_seg[5:9] = np.nan
    img = draw_quality_curve(n, p, p_seg, 0.5, [(0, 25), (25, 50)], p > 0.7,
                             {40: "not_usable"}, chosen_frame=45)
    assert img.shape == (400, 1280, 3) and img.dtype == np.uint8
    red = np.all(img == LABEL_BGR["not_usable"], axis=2)
    ys, xs = np.nonzero(red[60:100])  # the verdict strip (the legend is above it)
    assert xs.size and abs(xs.mean() - (96 + (40.5 / n) * (1280 - 96 - 24))) < 3


def test_thumbnail_tints_the_mask_and_leaves_the_rest():
    frame = np.full((100, 200), 100, np.uint8)
    mask = np.zeros((100, 200), np.uint8)
    mask[30:70, 80:120] = 1
    thumb = overlay_thumbnail(frame, mask, width=100)
    assert thumb.shape == (50, 100, 3)
    inside, outside = thumb[25, 50].astype(int), thumb[5, 5].astype(int)
    assert outside.tolist() == [100, 100, 100]
    assert inside[1] > inside[0] + 30  # green tint of label 1
    assert overlay_thumbnail(frame, None, width=100)[25, 50].tolist() == [100, 100, 100]
    assert MASK_BGR[1][1] > MASK_BGR[1][0]


def _images(page: str) -> list[np.ndarray]:
    blobs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    return [cv2.imdecode(np.frombuffer(base64.b64decode(b), np.uint8), cv2.IMREAD_COLOR)
            for b in blobs]


def test_html_report_is_self_contained_and_complete(store, tmp_path):
    frames = _frames()
    out = build_report(store, tmp_path / "r.html", sweep_loader=lambda p: (
        frames if UUID in p else None))
    page = out.read_text(encoding="utf-8")
    assert not re.search(r'src="(?!data:)', page)  # no external pictures
    images = _images(page)
    assert len(images) == 1 + 5  # the curve + flagged frames 8..12 (chosen frame 10 among them)
    assert images[0].shape[:2] == (400, 1280)
    assert "250.0 mm" in page
    # Hadlock from AC 25.0 cm when no GA was stored: 8.14 + 0.753*25 + 0.0036*625 = 29.215
    assert "29w 2d" in page and "29.2 weeks" not in page  # one GA format
    assert "&lt;b&gt;edge&lt;/b&gt; &amp; blur" in page and "<b>edge</b>" not in page
    assert ">50 %<" in page and ">100 %<" in page  # alice and bob agreement
    assert "other.nii.gz" in page and "No model results" in page
    # Overlay from the stored mask on the chosen frame: a green-tinted pixel in that thumbnail.
    chosen_thumb = images[1 + 2]
    assert (chosen_thumb[..., 1].astype(int) - chosen_thumb[..., 2] > 60).any()
    assert not (images[1][..., 1].astype(int) - images[1][..., 2] > 60).any()

    # A sweep file that cannot be loaded: the report still comes out, and says why.
    def broken(path):
        raise OSError("disk gone")

    page = build_report(store, tmp_path / "r2.html", sweep_loader=broken).read_text(encoding="utf-8")
    assert "Frames not shown" in page and "disk gone" in page
    assert len(_images(page)) == 1


def test_report_csv_lists_flagged_and_reviewed_frames(store):
    rows = list(csv.DictReader(io.StringIO(report_csv_text(store))))
    first = [r for r in rows if r["content_hash"] == "a1" * 32]
    assert sorted({int(r["frame"]) for r in first}) == [2, 8, 9, 10, 11, 12]
    chosen = [r for r in first if r["chosen"] == "1"]
    assert {r["reviewer"] for r in chosen} == {"alice", "bob"}
    assert all(r["ac_mm"] == "250" and r["ac_status"] == "ok" for r in chosen)
    assert all(r["ac_status"] == "" for r in first if r["chosen"] != "1")
    (frame2,) = [r for r in first if r["frame"] == "2"]
    assert (frame2["label"], frame2["label_code"], frame2["flagged"], frame2["sub_sweep"]) == (
        "optimal", "1", "0", "1")
    (frame8,) = [r for r in first if r["frame"] == "8"]
    assert frame8["reviewer"] == "" and frame8["flagged"] == "1"


def test_a_changed_threshold_is_reported_with_the_models_own(tmp_path):
    s = ReviewStore(tmp_path / "r.sqlite3")
    sid = s.add_sweep("c3" * 32, "/data/c.mha", 6)
    p = np.linspace(0.1, 0.9, 6).astype(np.float32)
    s.add_model_run(sid, {"cls": {"hash": "ab", "threshold": 0.7}}, p, np.full(6, np.nan), np.zeros(6, int),
                    p >= 0.62, threshold=0.62)
    out = tmp_path / "r.html"
    build_report(s, out)
    assert "threshold 0.62 (model: 0.70) on p_cls" in out.read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(report_csv_text(s))))
    assert rows and all((r["threshold"], r["model_threshold"]) == ("0.6200", "0.7000") for r in rows)
    s.close()


def test_the_csv_report_tells_an_ac_not_to_act_on_from_no_chosen_frame(tmp_path):
    """The chosen frame's row had an empty ac_mm whether its AC was doubtful or there was none:
    ac_status says 'not to act on' there (score printed 276.8 mm, doubtful, for that frame)."""
    s = ReviewStore(tmp_path / "r.sqlite3")
    sid = s.add_sweep("c4" * 32, "/data/d.mha", 6)
    p = np.linspace(0.1, 0.9, 6).astype(np.float32)
    s.add_model_run(sid, {"cls": {"hash": "ab", "threshold": 0.5}}, p, np.full(6, np.nan), np.zeros(6, int),
                    p >= 0.5, chosen_frame=5, ac_mm=None)
    rows = list(csv.DictReader(io.StringIO(report_csv_text(s))))
    (chosen,) = [r for r in rows if r["chosen"] == "1"]
    assert chosen["ac_mm"] == "" and chosen["ac_status"] == "not to act on"
    s.close()


def test_labels_csv_uses_acouslic_codes_and_case_ids(store):
    rows = list(csv.DictReader(io.StringIO(labels_csv_text(store))))
    assert list(rows[0]) == ["uuid_or_hash", "path", "frame", "label", "reviewer", "time", "content_hash"]
    got = [(r["uuid_or_hash"], int(r["frame"]), int(r["label"]), r["reviewer"]) for r in rows]
    assert got == [
        (UUID, 2, 1, "alice"), (UUID, 9, 1, "alice"), (UUID, 10, 2, "alice"),
        (UUID, 10, 1, "bob"), (UUID, 11, 0, "alice"), ("other", 4, 2, "carol")]  # any file name is a case id
    assert all(r["time"].endswith("+00:00") for r in rows)


def test_cli_export_and_labels(store, tmp_path, capsys):
    db = str(store.path)
    assert main(["review", "export", "--db", db, "--out", str(tmp_path / "r.html"),
                 "--no-frames"]) == 0
    assert "Frames not shown" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert main(["review", "export", "--db", db, "--out", str(tmp_path / "r.csv"),
                 "--sweep", "b2b2"]) == 0
    assert {r["content_hash"] for r in csv.DictReader(open(tmp_path / "r.csv"))} == {"b2" * 32}
    assert main(["review", "labels", "--db", db, "--out", str(tmp_path / "l.csv")]) == 0
    assert "wrote 6 label(s)" in capsys.readouterr().out

    assert main(["review", "export", "--db", db, "--out", str(tmp_path / "r.docx")]) == 2
    assert ".html, .pdf or .csv" in capsys.readouterr().err
    missing = tmp_path / "nope.sqlite3"
    assert main(["review", "export", "--db", str(missing), "--out",
                 str(tmp_path / "x.html")]) == 1
    assert "does not exist" in capsys.readouterr().err and not missing.exists()
    assert main(["review", "export", "--db", db, "--out", str(tmp_path / "y.html"),
                 "--sweep", "zzz"]) == 1
    assert "no sweep" in capsys.readouterr().err


def test_cli_pdf_export_renders_pages_with_pictures(store, tmp_path):
    out = tmp_path / "report.pdf"
    assert main(["review", "export", "--db", str(store.path), "--out", str(out),
                 "--no-frames"]) == 0
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2  # one section per sweep
    assert b"/Subtype /Image" in data or b"/Subtype/Image" in data  # the curve
    assert not list(tmp_path.glob(".*.part"))


def test_core_report_does_not_import_qt():
    code = ("import sys, fetaliqa_core.review.report, fetaliqa_core.cli.review; "
            "sys.exit(any(m.startswith(('PySide6', 'app')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_pdf_export_leaves_a_process_that_can_still_open_windows():
    """Exporting a PDF first (CLI, or a test run) must not stop widgets being created later:
    a bare QGuiApplication made any later QWidget abort the process."""
    import subprocess
    import sys

    code = ("from app.report_pdf import ensure_gui_application; ensure_gui_application(); "
            "from PySide6.QtWidgets import QWidget; w = QWidget(); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__('os').environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == "ok"


def test_report_csv_rows_of_a_demo_run_carry_the_not_for_clinical_use_notice(tmp_path):
    from fetaliqa_core.review.report import DEMO_REPORT_NOTICE

    s = ReviewStore(tmp_path / "r.sqlite3")
    p = np.linspace(0.1, 0.9, 6).astype(np.float32)
    demo = s.add_sweep("d1" * 32, "/data/demo.mha", 6)
    s.add_model_run(demo, {"cls": {"hash": "ab", "threshold": 0.5, "demo": True}}, p, np.full(6, np.nan),
                    np.zeros(6, int), p >= 0.5, threshold=0.5)
    own = s.add_sweep("e2" * 32, "/data/own.mha", 6)
    s.add_model_run(own, {"cls": {"hash": "cd", "threshold": 0.5}}, p, np.full(6, np.nan),
                    np.zeros(6, int), p >= 0.5, threshold=0.5)
    rows = list(csv.DictReader(io.StringIO(report_csv_text(s))))
    demo_rows = [r for r in rows if r["content_hash"] == "d1" * 32]
    own_rows = [r for r in rows if r["content_hash"] == "e2" * 32]
    assert demo_rows and all(r["notice"] == DEMO_REPORT_NOTICE for r in demo_rows)
    assert own_rows and all(r["notice"] == "" for r in own_rows)
    s.close()


def test_thumbnail_ac_is_plain_only_on_an_abdomens_outline():
    """A flagged frame's caption reads its AC as the viewer does: a limb-like bar's ellipse is
    marked doubtful, a round abdomen's is a plain number."""
    from types import SimpleNamespace

    import cv2

    from fetaliqa_core.analysis.ac import measure_ac
    from fetaliqa_core.review.report import _thumbnail_ac_text

    sweep = SimpleNamespace(spacing_mm=(0.5, 0.5))
    fov = np.zeros((300, 400), bool)
    fov[10:290, 20:380] = True
    texts = []
    for axes in ((120, 14), (70, 60)):
        mask = np.zeros((300, 400), np.uint8)
        cv2.ellipse(mask, (200, 150), axes, 10, 0, 360, 1, -1)
        ac = measure_ac(mask > 0, sweep.spacing_mm, fov=fov)
        texts.append(_thumbnail_ac_text(mask, ac, sweep, fov))
    assert "(doubtful: " in texts[0] and "elongated" in texts[0] and texts[0].startswith("AC ")
    assert texts[1].startswith("AC ") and "doubtful" not in texts[1]
    # the same round mask on a frame where it runs along a bright bone ring round a dark inside
    # (a head, at the frame's own size): doubtful, as the viewer and `score` read it
    frame = np.full((300, 400), 10, np.uint8)
    cv2.ellipse(frame, (200, 150), (70, 60), 10, 0, 360, 200, -1)
    cv2.ellipse(frame, (200, 150), (62, 52), 10, 0, 360, 40, -1)
    assert "(doubtful: " in _thumbnail_ac_text(mask, ac, sweep, fov, frame) and "skull" in _thumbnail_ac_text(
        mask, ac, sweep, fov, frame)
    flat = np.where(mask > 0, 100, 10).astype(np.uint8)  # an even inside: an abdomen's reading
    assert "doubtful" not in _thumbnail_ac_text(mask, ac, sweep, fov, flat)
    # the same abdomen's outline on a frame the classifier does not call: doubtful too
    assert _thumbnail_ac_text(mask, ac, sweep, fov, flat, "the classifier does not call it").endswith(
        "(doubtful: the classifier does not call it; check the frame)")
    # a run of a distilled student scoring alone: doubtful as in the window (a plain AC before)
    from fetaliqa_core.analysis.units import STUDENT_ALONE_DOUBT
    from fetaliqa_core.review.report import is_student_alone_run

    assert _thumbnail_ac_text(mask, ac, sweep, fov, flat, student_alone=True).endswith(f"(doubtful: {STUDENT_ALONE_DOUBT})")
    assert is_student_alone_run(SimpleNamespace(bundles={"student_alone": True}))
    assert not is_student_alone_run(SimpleNamespace(bundles={"cls": {"demo": False}}))


def test_thumbnail_doubt_follows_the_viewer_for_both_models():
    """The viewer calls an AC doubtful where the segmenter itself does not call the frame; the
    report's thumbnails passed the classifier's doubt only (review finding)."""
    from types import SimpleNamespace

    from fetaliqa_core.analysis.assessment import Thresholds
    from fetaliqa_core.review.report import _thumbnail_doubt

    run = SimpleNamespace(thresholds=Thresholds(0.5, 0.5), seg_threshold=0.5,
                          p_cls=np.array([0.9, 0.3, 0.9]), p_seg=np.array([0.3, 0.9, 0.9]))
    assert "segmenter does not call" in _thumbnail_doubt(run, 0)
    assert "classifier does not call" in _thumbnail_doubt(run, 1)
    assert _thumbnail_doubt(run, 2) is None
    run.p_seg = np.full(3, np.nan)  # a classifier alone: its word only
    assert _thumbnail_doubt(run, 0) is None


def test_labels_follow_the_pixels_not_the_file_name(tmp_path):
    """A file name says nothing of the pixels. Replaced and then restored, a file's own verdicts
    were exported under their hash (training dropped them) and the other pixels' verdicts under
    its case id; the same name in two folders gave one frame two labels, the last row winning;
    so did two reviewers who disagree."""
    from fetaliqa_core.io import load_sweep, write_volume
    from training.dataset import FrameIndex, apply_extra_labels, read_extra_labels

    mine = np.full((6, 32, 40), 40, np.uint8)
    theirs = np.full((6, 32, 40), 200, np.uint8)
    path = tmp_path / "data" / f"{UUID}.mha"
    path.parent.mkdir()
    s = ReviewStore(tmp_path / "r.sqlite3")
    write_volume(path, mine)
    a = s.add_sweep_from(load_sweep(path))
    s.record_verdict(a, 1, "alice", "optimal")
    s.record_verdict(a, 2, "alice", "optimal")
    s.record_verdict(a, 2, "bob", "not_usable")  # reviewers disagree
    write_volume(path, theirs)  # replaced by other pixels under the same name, reviewed later
    b = s.add_sweep_from(load_sweep(path))
    s.record_verdict(b, 1, "alice", "not_usable")
    s.record_verdict(b, 3, "alice", "not_usable")
    write_volume(tmp_path / f"{UUID}.mha", theirs)  # the same name in another folder
    c = s.add_sweep_from(load_sweep(tmp_path / f"{UUID}.mha"))
    s.record_verdict(c, 4, "alice", "optimal")
    write_volume(path, mine)  # ... and the dataset's file restored
    out = tmp_path / "labels.csv"
    out.write_text(labels_csv_text(s), encoding="utf-8")
    s.close()
    assert {r["uuid_or_hash"] for r in csv.DictReader(io.StringIO(out.read_text()))} == {UUID}

    case = SimpleNamespace(uuid=UUID, image_path=path)
    index = FrameIndex([case], np.zeros(6, np.int32), np.arange(6, dtype=np.int32), np.zeros(6, np.int16),
                       np.zeros(6, np.uint8))
    done = apply_extra_labels(index, read_extra_labels(out))
    assert index.target.tolist() == [0, 1, 0, 0, 0, 0]  # its own verdict on frame 1, nothing else
    assert (done.changed, done.other_pixels, done.conflicting) == (1, 3, 1)


def test_agreement_is_with_the_run_the_report_shows(tmp_path):
    """A verdict saved while the frame was not yet flagged (scoring in progress, or before the
    threshold moved) kept 'agrees: no' beside 'flagged' in the exports, while the agreement table
    of the same report counted it as agreeing."""
    s = ReviewStore(tmp_path / "r.sqlite3")
    sid = s.add_sweep("c4" * 32, "/data/c.mha", 6)
    p = np.linspace(0.1, 0.9, 6).astype(np.float32)
    nan = np.full(6, np.nan)
    s.add_model_run(sid, {"cls": {"hash": "ab", "threshold": 0.7}}, p, nan, np.zeros(6, int), p >= 0.9, threshold=0.9)
    s.record_verdict(sid, 3, "alice", "optimal")  # frame 3 not flagged at 0.9: stored as disagreeing
    s.add_model_run(sid, {"cls": {"hash": "ab", "threshold": 0.7}}, p, nan, np.zeros(6, int), p >= 0.4, threshold=0.4)
    rows = [r for r in csv.DictReader(io.StringIO(report_csv_text(s))) if r["reviewer"]]
    assert [(r["flagged"], r["agrees_with_model"]) for r in rows] == [("1", "1")]
    out = tmp_path / "r.html"
    build_report(s, out)
    text = out.read_text(encoding="utf-8")
    assert "<b>no</b>" not in text
    s.close()


def test_the_csv_report_lists_a_sweep_with_nothing_flagged(tmp_path):
    """A sweep in the review with no flagged, chosen or judged frame was in the HTML report and
    not in the CSV."""
    import csv
    import io

    import numpy as np

    from fetaliqa_core.review import ReviewStore
    from fetaliqa_core.review.report import REPORT_CSV_COLUMNS, report_csv_text

    with ReviewStore(tmp_path / "r.db") as store:
        sid = store.add_sweep("ef" * 32, "/quiet.mha", 6)
        store.add_model_run(sid, {"cls": {"hash": "h"}}, np.zeros(6), np.zeros(6), np.zeros(6),
                            np.zeros(6, bool), chosen_frame=None)
        rows = list(csv.reader(io.StringIO(report_csv_text(store))))
    assert rows[0] == REPORT_CSV_COLUMNS and len(rows) == 2
    row = dict(zip(REPORT_CSV_COLUMNS, rows[1]))
    assert row["path"] == "/quiet.mha" and row["frame"] == "" and row["threshold"] != ""
    assert all(len(r) == len(REPORT_CSV_COLUMNS) for r in rows)


def test_a_run_of_models_on_a_random_base_carries_their_notice(tmp_path):
    """The window's review run of a test model (randomly initialised base) carried no notice:
    its report read like the user's own trained models'."""
    from fetaliqa_core.review.report import RANDOM_BASE_REPORT_NOTICE

    s = ReviewStore(tmp_path / "r.sqlite3")
    sid = s.add_sweep("c5" * 32, "/data/e.mha", 6)
    p = np.linspace(0.1, 0.9, 6).astype(np.float32)
    s.add_model_run(sid, {"cls": {"hash": "ab", "threshold": 0.5, "demo": False, "random_base": True}}, p,
                    np.full(6, np.nan), np.zeros(6, int), p >= 0.5, chosen_frame=5)
    rows = list(csv.DictReader(io.StringIO(report_csv_text(s))))
    assert rows and all(r["notice"] == RANDOM_BASE_REPORT_NOTICE for r in rows)
    out = tmp_path / "r.html"
    build_report(s, out)
    assert "randomly initialised base" in out.read_text(encoding="utf-8")
    s.close()


def test_report_hides_the_frames_of_a_file_replaced_under_its_name(tmp_path, capsys):
    """A sweep file overwritten by another sweep of the same size has the same path and shape:
    its thumbnails would show the new pixels beside the old sweep's masks and verdicts."""
    from fetaliqa_core.io import load_sweep, write_volume

    path = tmp_path / "case.mha"
    write_volume(path, np.full((6, 32, 40), 40, np.uint8))
    db = tmp_path / "r.sqlite3"
    with ReviewStore(db) as s:
        sid = s.add_sweep_from(load_sweep(path))
        flagged = np.zeros(6, bool)
        flagged[2:4] = True
        s.add_model_run(sid, {}, np.where(flagged, 0.9, 0.1), np.full(6, np.nan), np.zeros(6), flagged,
                        chosen_frame=2)
        s.record_verdict(sid, 2, "alice", "optimal")
    out = tmp_path / "r.html"
    assert main(["review", "export", "--db", str(db), "--out", str(out)]) == 0
    assert len(_images(out.read_text(encoding="utf-8"))) == 1 + 2  # its own file: curve + 2 frames

    write_volume(path, np.full((6, 32, 40), 200, np.uint8))  # another sweep, same name and size
    assert main(["review", "export", "--db", str(db), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Frames not shown" in page and "changed since it was reviewed" in page
    assert len(_images(page)) == 1  # the curve only: no thumbnail of pixels nobody reviewed


def test_frames_a_stopped_run_never_scored_count_in_no_agreement(tmp_path):
    """Scoring stopped part-way leaves NaN scores and flagged False on the frames it never
    reached: that is no call of the model's, and counting it made every verdict of "optimal"
    there a disagreement."""
    with ReviewStore(tmp_path / "r.sqlite3") as s:
        sid = s.add_sweep("ab" * 32, "/data/case.mha", 10, [(0, 10)], (0.3, 0.3))
        p_cls = np.full(10, np.nan, np.float32)
        p_cls[:4] = [0.1, 0.9, 0.9, 0.1]  # stopped after frame 3
        s.add_model_run(sid, {}, p_cls, np.full(10, np.nan), np.zeros(10), p_cls > 0.5)
        s.record_verdict(sid, 1, "alice", "optimal")  # scored, agrees
        for f in (6, 7, 8):  # never scored
            v = s.record_verdict(sid, f, "alice", "optimal")
        assert v.agrees_with_model is None
        assert s.review_queue(sid, "disagreements", "alice") == []
        (a,) = agreement(s.verdicts(sid), s.latest_run(sid))
        assert (a.n, a.accuracy) == (1, 1.0)
        rows = [r for r in csv.DictReader(io.StringIO(report_csv_text(s))) if r["frame"] == "7"]
        assert rows[0]["flagged"] == "" and rows[0]["agrees_with_model"] == ""
        page = render_report_html(s)
    assert "stopped part-way: 4 of 10 frames scored" in page
    assert "not scored" in page and "100 %" in page


def test_review_reads_the_database_the_window_remembers(tmp_path, capsys):
    """After `fetaliqa gui --db project.sqlite3` the window goes on writing there; `review`
    without --db read the default database instead and silently missed those verdicts."""
    from app.settings import AppSettings
    from fetaliqa_core.review.store import default_db_path, remembered_db_path

    with ReviewStore(default_db_path()) as s:
        s.add_sweep("cd" * 32, "/data/default.mha", 4, [(0, 4)], None)
    project = tmp_path / "project.sqlite3"
    with ReviewStore(project) as s:
        sid = s.add_sweep("ef" * 32, "/data/project.mha", 4, [(0, 4)], None)
        s.record_verdict(sid, 1, "alice", "optimal")
    settings = AppSettings.load()
    settings.review_db = str(project)  # what `gui --db` leaves behind
    settings.save()
    assert remembered_db_path() == project

    assert main(["review", "list"]) == 0
    out, err = capsys.readouterr()
    assert "project.mha" in out and "default.mha" not in out
    assert str(project) in err  # which database it read, since it is not the default
    assert main(["review", "list", "--db", str(default_db_path())]) == 0
    assert "default.mha" in capsys.readouterr().out
    # the remembered database removed since: said so, not "check the --db path" (none was given)
    project.unlink()
    assert main(["review", "list"]) != 0
    err = capsys.readouterr().err
    assert "the window was last given" in err and "no longer exists" in err and err.count("\n") == 1


def test_an_export_never_replaces_the_database_or_a_file_it_did_not_write(store, tmp_path, capsys):
    """`review labels --db reviews.csv --out reviews.csv` replaced the database with the CSV,
    every verdict lost; an existing spreadsheet given as --out was replaced without a word."""
    import shutil

    store.close()
    db = tmp_path / "reviews.csv"
    shutil.copy(store.path, db)
    before = db.read_bytes()
    assert main(["review", "labels", "--db", str(db), "--out", str(db)]) != 0
    assert "is the review database" in capsys.readouterr().err
    assert db.read_bytes() == before
    assert main(["review", "export", "--db", str(db), "--out", str(db), "--no-frames"]) != 0
    assert "is the review database" in capsys.readouterr().err and db.read_bytes() == before

    mine = tmp_path / "mine.csv"
    mine.write_text("my precious spreadsheet\n")
    for command in (["labels"], ["export", "--no-frames"]):
        assert main(["review", *command, "--db", str(db), "--out", str(mine)]) != 0
        err = capsys.readouterr().err
        assert "left as it is" in err and err.count("\n") == 1
    assert mine.read_text() == "my precious spreadsheet\n"
    # a page that names FetalIQA and a PDF of someone's are not earlier reports either
    notes, thesis = tmp_path / "notes.html", tmp_path / "thesis.pdf"
    notes.write_text("<html><head><title>My notes on FetalIQA</title></head><body>fetaliqa</body></html>")
    thesis.write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Title (My thesis) >>\nendobj\n")
    for other in (notes, thesis):
        before = other.read_bytes()
        assert main(["review", "export", "--db", str(db), "--out", str(other), "--no-frames"]) != 0
        assert "left as it is" in capsys.readouterr().err and other.read_bytes() == before

    labels, report = tmp_path / "labels.csv", tmp_path / "r.html"
    for _ in range(2):  # an earlier export of the same kind is replaced
        assert main(["review", "labels", "--db", str(db), "--out", str(labels)]) == 0
        assert main(["review", "export", "--db", str(db), "--out", str(report), "--no-frames"]) == 0
    assert main(["review", "export", "--db", str(db), "--out", str(labels), "--no-frames"]) != 0  # no report CSV


def test_a_long_note_is_cut_in_the_pdf_page_only(tmp_path):
    """A 100,000-character note made a 77-page PDF; the HTML and CSV keep it whole."""
    from fetaliqa_core.review.report import PDF_NOTE_CHARS, render_report

    with ReviewStore(tmp_path / "r.sqlite3") as s:
        sid = s.add_sweep("ab" * 32, "/data/case.mha", 4, [(0, 4)], None)
        s.record_verdict(sid, 1, "alice", "optimal", note="x" * 100_000)
        pdf_page = render_report(s, tmp_path / "r.pdf")
        html_page = render_report(s, tmp_path / "r.html")
    assert "x" * 100_000 not in pdf_page and "x" * PDF_NOTE_CHARS in pdf_page
    assert f"({100_000 - PDF_NOTE_CHARS} more characters in the HTML/CSV report)" in pdf_page
    assert "x" * 100_000 in html_page


def test_a_withdrawn_verdict_is_in_no_report_label_or_agreement_but_in_the_history(store, tmp_path, capsys):
    """A verdict pressed on the wrong frame went into the report, the agreement with the model and
    the labels for training, with no way to take it back. Withdrawn, it is in none of them; the
    history shows it and its withdrawal, neither current."""
    sid = store.find_sweep("a1").id
    store.withdraw_verdict(sid, 9, "alice")
    store.withdraw_verdict(sid, 2, "alice")  # (replaced once before)
    labels = [(int(r["frame"]), r["reviewer"]) for r in csv.DictReader(io.StringIO(labels_csv_text(store)))]
    assert labels == [(10, "alice"), (10, "bob"), (11, "alice"), (4, "carol")]
    (alice, _bob) = agreement(store.verdicts(sid), store.latest_run(sid))
    assert (alice.n, alice.both_usable, alice.reviewer_only, alice.model_only) == (2, 1, 0, 1)
    report = [r for r in csv.DictReader(io.StringIO(report_csv_text(store))) if r["content_hash"] == "a1" * 32]
    assert [r["reviewer"] for r in report if r["frame"] == "9"] == [""]  # flagged, judged by nobody now
    assert not [r for r in report if r["frame"] == "2"]  # neither flagged nor judged
    page = render_report_html(store)
    assert re.search(r"<td>1</td><td>[^<]*</td><td>30</td><td>5</td><td>3</td>", page)  # 3 verdicts, not 5
    out = tmp_path / "history.csv"  # one written before withdrawals (no such column) is replaced
    out.write_text("content_hash,path,frame,reviewer,label,label_code,note,time,current\n", encoding="utf-8")
    assert main(["review", "history", "--db", str(store.path), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [(r["label"], r["current"], r["withdrawn"]) for r in rows if r["frame"] in ("2", "9")] == [
        ("not_usable", "0", "0"), ("optimal", "0", "0"), ("optimal", "0", "1"),  # frame 2
        ("optimal", "0", "0"), ("optimal", "0", "1")]  # frame 9
    assert main(["review", "list", "--db", str(store.path)]) == 0
    assert "   3 verdicts" in capsys.readouterr().out


def test_the_verdict_history_is_exported_with_what_replaced_what(store, tmp_path, capsys):
    """The store keeps every verdict entered, but no export gave the replaced ones: a trainer
    could not see that alice first called frame 2 not usable, then optimal."""
    out = tmp_path / "history.csv"
    assert main(["review", "history", "--db", str(store.path), "--out", str(out)]) == 0
    assert "wrote 7 verdict row(s)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert list(rows[0]) == ["content_hash", "path", "frame", "reviewer", "label", "label_code", "note", "time",
                             "current", "withdrawn"]
    frame2 = [(r["label"], r["label_code"], r["current"]) for r in rows if r["frame"] == "2"]
    assert frame2 == [("not_usable", "0", "0"), ("optimal", "1", "1")]  # oldest first; the later one stands
    assert sum(r["current"] == "1" for r in rows) == len(list(csv.DictReader(io.StringIO(labels_csv_text(store)))))
    assert {r["content_hash"] for r in rows} == {"a1" * 32, "b2" * 32}
    # an earlier history is replaced; the labels CSV, the database and a stranger's file are not
    assert main(["review", "history", "--db", str(store.path), "--out", str(out), "--sweep", "b2b2"]) == 0
    assert [r["reviewer"] for r in csv.DictReader(open(out, encoding="utf-8"))] == ["carol"]
    labels = tmp_path / "labels.csv"
    assert main(["review", "labels", "--db", str(store.path), "--out", str(labels)]) == 0
    capsys.readouterr()
    for other in (labels, store.path):
        before = other.read_bytes()
        assert main(["review", "history", "--db", str(store.path), "--out", str(other)]) != 0
        assert other.read_bytes() == before
    assert "not an earlier verdict history CSV" in capsys.readouterr().err


_HOSTILE_NOTE = ("bell\x07 esc\x1b[31mRED\x1b[0m back\x08\x08 nul\x00byte c1\x9b rtl \u202egnp.exe\u202c\u202d end"
                 "\nline 2\tcol")
_CLEAN_NOTE = "bell esc[31mRED[0m back nulbyte c1 rtl gnp.exe end\nline 2\tcol"


def test_notes_lose_control_characters_and_direction_overrides_in_every_export(store, tmp_path):
    """A note kept NUL, ESC sequences, backspaces and U+202E (which shows 'rtl gnp.exe' as
    'rtl exe.png') raw in the CSV, history CSV and HTML reports, where reviewer names were
    cleaned. Line breaks and tabs stay; a formula start is still made text."""
    from fetaliqa_core.review.report import history_csv_text

    sid = store.sweeps()[0].id
    store.record_verdict(sid, 3, "dave", "optimal", note=_HOSTILE_NOTE)
    assert store.verdict_for(sid, 3, "dave").note == _CLEAN_NOTE  # cleaned as it is recorded
    # a database of an earlier version (or another program) holds the note raw: cleaned as it is read
    store._conn.execute("UPDATE verdicts SET note = ? WHERE reviewer = 'bob'", ("=cmd\x1b]0;x\x07\u202e|calc",))
    store._conn.commit()
    html = render_report_html(store)
    texts = {"csv": report_csv_text(store), "history": history_csv_text(store), "html": html}
    for kind, text in texts.items():
        bad = sorted({f"U+{ord(c):04X}" for c in text if (c < " " and c not in "\n\r\t") or "\x7f" <= c <= "\x9f"
                      or c in "\u202a\u202b\u202c\u202d\u202e"})
        assert bad == [], (kind, bad)
    for kind in ("csv", "history"):
        notes = {r["reviewer"]: r["note"] for r in csv.DictReader(io.StringIO(texts[kind]))}
        assert notes["dave"] == _CLEAN_NOTE and notes["bob"] == "'=cmd]0;x|calc", kind
    assert "rtl gnp.exe end" in html


def test_a_right_to_left_note_keeps_its_marks_and_isolates(store):
    """Notes lost the right-to-left mark and isolates, ordinary in Hebrew and Arabic text (they
    reorder nothing beyond their own run, unlike the overrides, which still go)."""
    sid = store.sweeps()[0].id
    note = "\u05d1\u05d8\u05df \u200f(AC \u2067\u05ea\u05e7\u05d9\u05df\u2069) \u0627\u0644\u0628\u0637\u0646\u061c"
    store.record_verdict(sid, 4, "dana", "optimal", note=note + "\u202e")
    assert store.verdict_for(sid, 4, "dana").note == note
    # one left open runs to the end of its line: in a report's CSV it reordered the columns after the note
    store.record_verdict(sid, 5, "dana", "optimal", note="looks fine \u2067\u05d1\u05d8\u05df \u200f")
    assert store.verdict_for(sid, 5, "dana").note == "looks fine \u05d1\u05d8\u05df \u200f"


@pytest.mark.parametrize("ac_mm", [110.8, 81.3, 93.6, 117.7])
def test_the_report_s_gestational_age_is_the_one_the_window_shows(ac_mm):
    """The report worked the GA's text out again from the weeks stored with the run, rounded to two
    decimals: for AC 110.8 mm it printed "17w 0d" where the window, `score` and `ac` said 16w 6d
    (a day off for 51 of 3051 ACs). It now derives it from the AC as shown, as they do."""
    from fetaliqa_core.analysis import format_ga, read_ac
    from fetaliqa_core.review.report import ga_weeks_of

    shown = read_ac(ac_mm)
    run = SimpleNamespace(ac_mm=shown.ac_mm, ga_weeks=shown.ga_weeks)  # as the window stores it
    assert format_ga(ga_weeks_of(run)) == shown.ga_text


def test_the_csv_report_writes_the_weeks_of_gestation_as_every_other_output(tmp_path):
    """The report's CSV wrote Hadlock's weeks to four decimals (21.3965) where summary.json,
    summary.csv and cases.csv write the answer's two (21.40)."""
    from fetaliqa_core.analysis import read_ac

    s = ReviewStore(tmp_path / "r.sqlite3")
    sid = s.add_sweep("c5" * 32, "/data/e.mha", 6)
    p = np.linspace(0.1, 0.9, 6).astype(np.float32)
    shown = read_ac(201.7)
    s.add_model_run(sid, {"cls": {"hash": "ab", "threshold": 0.5}}, p, np.full(6, np.nan), np.zeros(6, int),
                    p >= 0.5, chosen_frame=5, ac_mm=shown.ac_mm, ga_weeks=shown.ga_weeks)
    (chosen,) = [r for r in csv.DictReader(io.StringIO(report_csv_text(s))) if r["chosen"] == "1"]
    assert float(chosen["ga_weeks"]) == shown.ga_weeks and len(chosen["ga_weeks"].split(".")[-1]) <= 2
    s.close()


def test_an_earlier_export_someone_added_a_column_to_is_not_replaced(store, tmp_path, capsys):
    """The check asked only whether the header row started with the export's columns: a labels
    CSV someone had added a "comment" column to (their work) was replaced. The header must be
    the export's own, or a verdict history's from before withdrawals were kept."""
    from fetaliqa_core.review.report import HISTORY_CSV_COLUMNS, LABELS_CSV_COLUMNS

    db = str(store.path)
    annotated = tmp_path / "annotated.csv"
    annotated.write_text(",".join(LABELS_CSV_COLUMNS) + ",comment\ncase,/x.mha,1,1,alice,t,h,looks fine\n")
    history = tmp_path / "history.csv"
    history.write_text(",".join(HISTORY_CSV_COLUMNS) + ",why\n")
    for command, out in (("labels", annotated), ("history", history)):
        before = out.read_bytes()
        assert main(["review", command, "--db", db, "--out", str(out)]) != 0
        err = capsys.readouterr().err
        assert "is not an earlier" in err and err.count("\n") == 1 and out.read_bytes() == before
    # an export of its own, re-saved by a spreadsheet with a byte-order mark and CRLF, or a history
    # of an earlier version (no "withdrawn" column), is still replaced
    ours = tmp_path / "ours.csv"
    ours.write_bytes(b"\xef\xbb\xbf" + ",".join(LABELS_CSV_COLUMNS).encode() + b"\r\n")
    old = tmp_path / "old_history.csv"
    old.write_text(",".join(HISTORY_CSV_COLUMNS[:-1]) + "\n")
    assert main(["review", "labels", "--db", db, "--out", str(ours)]) == 0
    assert main(["review", "history", "--db", db, "--out", str(old)]) == 0
    assert ours.read_text().startswith(",".join(LABELS_CSV_COLUMNS) + "\n")
    assert old.read_text().startswith(",".join(HISTORY_CSV_COLUMNS) + "\n")


def test_an_output_that_is_a_pipe_a_link_or_a_folder_is_refused(store, tmp_path, capsys):
    """--out a named pipe printed "wrote" and the pipe was gone; a link (to /dev/null, to the
    team's shared labels) became a file of its own while its target kept the old content. Only
    a regular file, or nothing, is written."""
    import os

    db = str(store.path)
    shared = tmp_path / "shared.csv"
    assert main(["review", "labels", "--db", db, "--out", str(shared)]) == 0
    capsys.readouterr()
    link, null, pipe, folder = (tmp_path / n for n in ("link.csv", "null.csv", "pipe.csv", "folder.csv"))
    link.symlink_to(shared)
    null.symlink_to(os.devnull)
    os.mkfifo(pipe)
    folder.mkdir()
    for out, what in ((link, "a link"), (null, "a link"), (pipe, "a named pipe"), (folder, "a folder")):
        for command in (["labels"], ["history"], ["export", "--no-frames"]):
            assert main(["review", *command, "--db", db, "--out", str(out)]) != 0
            err = capsys.readouterr().err
            assert f"is {what}" in err and "give the path of a file" in err.lower() and err.count("\n") == 1, err
    assert link.is_symlink() and null.is_symlink() and pipe.is_fifo() and folder.is_dir()


def test_a_sweep_named_twice_is_exported_once_and_like_wildcards_name_no_sweep(store, tmp_path, capsys):
    """`--sweep a1a1 --sweep A1A1A1` doubled every row; `--sweep _` picked a sweep ("_" is any
    character to SQL's LIKE), and `--sweep ""` matched every hash's empty start."""
    db = str(store.path)
    once, twice = tmp_path / "once.csv", tmp_path / "twice.csv"
    assert main(["review", "labels", "--db", db, "--out", str(once), "--sweep", "a1a1"]) == 0
    assert main(["review", "labels", "--db", db, "--out", str(twice), "--sweep", "a1a1",
                 "--sweep", "A1A1A1"]) == 0
    assert twice.read_text() == once.read_text()
    capsys.readouterr()
    single = ReviewStore(tmp_path / "single.sqlite3")
    single.add_sweep("c3" * 32, "/data/c.mha", 5)
    single.close()
    for prefix in ("_", "__", "%", "c_", ""):
        out = tmp_path / "none.csv"
        assert main(["review", "labels", "--db", str(single.path), "--out", str(out), "--sweep", prefix]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("no sweep whose hash" in err or "--sweep is empty" in err), err
        assert not out.exists()
    with ReviewStore(single.path, read_only=True) as again:
        assert again.find_sweep("_") is None and again.find_sweep("") is None
        assert again.find_sweep("c3c") is not None


def test_reviewer_names_and_paths_from_another_program_lose_control_characters_in_every_export(tmp_path):
    """Names and paths written into the database by another program kept their escape
    sequences (a terminal showing the CSV cleared its screen) and direction overrides (a path
    read backwards) in the labels, history and report CSVs and the HTML, where the notes beside
    them were cleaned."""
    from fetaliqa_core.review.report import history_csv_text

    s = ReviewStore(tmp_path / "r.sqlite3")
    sid = s.add_sweep("d4" * 32, "/x/case.mha", 40)
    s.record_verdict(sid, 30, "alice", "optimal")
    s._conn.execute("UPDATE sweeps SET path = ?", ("/x/\x1b[2Jcase\u202egnp.mha",))
    s._conn.execute("UPDATE verdicts SET reviewer = ?, created_utc = created_utc || ?",
                    ("evil\x1b[31mRED\x1b]0;title\x07\u202eabc\u2066", "\x00"))
    s._conn.commit()
    texts = {"labels": labels_csv_text(s), "history": history_csv_text(s), "csv": report_csv_text(s),
             "html": render_report_html(s)}
    for kind, text in texts.items():
        bad = sorted({f"U+{ord(c):04X}" for c in text if (c < " " and c not in "\n\r\t") or "\x7f" <= c <= "\x9f"
                      or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"})
        assert bad == [], (kind, bad)
    for kind in ("labels", "history", "csv"):
        row = next(csv.DictReader(io.StringIO(texts[kind])))
        assert row["reviewer"] == "evil[31mRED]0;titleabc" and row["path"] == "/x/[2Jcasegnp.mha", kind
    assert next(csv.DictReader(io.StringIO(texts["labels"])))["uuid_or_hash"] == "[2Jcasegnp"
    assert "evil[31mRED]0;titleabc" in texts["html"] and "[2Jcasegnp.mha" in texts["html"]
    s.close()


def test_the_report_says_an_ac_whose_outline_the_field_of_view_cut_was_extrapolated(tmp_path):
    """`fetaliqa ac` said "[outline cut by the field of view; ellipse extrapolated]" and the window
    "ellipse extrapolated"; the report gave the same AC plainly (the store keeps no word of it), on
    the chosen frame's picture and beside the number to act on. Worked out from the frames when the
    report is written; a whole outline's AC stays plain."""
    from fetaliqa_core.analysis import ramanujan_circumference

    cut = "outline cut by the field of view; ellipse extrapolated"
    pages, tables = {}, {}
    for name, centre_y in (("cut", 188), ("whole", 140)):
        # a sector fan of radius 235 px; at 188 px below the apex the abdomen's lower edge runs past
        # its arc (black there: a few percent of the outline is cut), at 140 px it is whole
        frames = np.zeros((6, 240, 320), np.uint8)
        fan = np.zeros((240, 320), np.uint8)
        cv2.ellipse(fan, (160, 0), (235, 235), 90, -35, 35, 1, -1)
        mask = np.zeros((240, 320), np.uint8)
        cv2.ellipse(mask, (160, centre_y), (60, 45), 15, 0, 360, 1, -1)
        mask[fan == 0] = 0
        for f in range(6):
            frames[f][fan > 0] = 60
            frames[f][mask > 0] = 230 if 2 <= f <= 4 else 60
        s = ReviewStore(tmp_path / f"{name}.sqlite3")
        sid = s.add_sweep(name[0] * 64, f"/data/{name}.nii.gz", 6, [(0, 6)], (0.5, 0.5))
        p = np.array([0.1, 0.3, 0.8, 0.9, 0.8, 0.3], np.float32)
        ac_mm = round(ramanujan_circumference(60, 45) * 0.5, 1)
        s.add_model_run(sid, {"cls": {"hash": "ab", "name": "own cls"}, "seg": {"hash": "cd", "name": "own seg"}},
                        p, p, (p * 9000).astype(int), p >= 0.5, chosen_frame=3, ac_mm=ac_mm, masks={3: mask})
        pages[name] = build_report(s, tmp_path / f"{name}.html", sweep_loader=lambda path, fr=frames: fr).read_text(
            encoding="utf-8")
        tables[name] = list(csv.DictReader(io.StringIO(build_report(
            s, tmp_path / f"{name}.csv", sweep_loader=lambda path, fr=frames: fr).read_text(encoding="utf-8"))))
        tables[name + " unread"] = list(csv.DictReader(io.StringIO(report_csv_text(s))))
        s.close()
    page = pages["cut"]
    # the number to act on is kept (the frame choice's verdict decides that); what was done is said
    assert re.search(r"<b>\d+\.\d mm</b> \(" + re.escape(cut) + r"\)", page), page
    assert re.search(r"AC \d+\.\d mm \(" + re.escape(cut) + r"\)", page) and "doubtful" not in page
    assert "extrapolated" not in pages["whole"] and re.search(r"AC \d+\.\d mm<", pages["whole"])
    # the overview table at the top says it beside the AC too, and the CSV on the chosen frame's row
    # (both gave the number plain where the picture said it)
    overview = page.split("<h2")[0]
    assert re.search(r"<td>\d+\.\d \(ellipse extrapolated\)</td>", overview), overview
    assert re.search(r"<td>\d+\.\d</td>", pages["whole"].split("<h2")[0])
    chosen = {name: [r for r in rows if r["chosen"] == "1"] for name, rows in tables.items()}
    assert [(r["ac_status"], r["ac_extrapolated"]) for r in chosen["cut"]] == [("ok", "1")]
    assert [(r["ac_status"], r["ac_extrapolated"]) for r in chosen["whole"]] == [("ok", "0")]
    # without the sweep's frames it cannot be told: said by an empty cell, not by a 0
    assert [r["ac_extrapolated"] for r in chosen["cut unread"]] == [""]
    assert all(r["ac_extrapolated"] == "" for r in tables["cut"] if r["chosen"] != "1")


def test_a_report_csv_written_before_it_said_whether_an_ellipse_was_extrapolated_is_replaced(tmp_path):
    """A report CSV of the version before ``ac_extrapolated`` (its header ends at ``ac_status``) is an
    earlier report of ours: writing the report again replaces it, where a table of someone else's
    is still refused."""
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.review.report import REPORT_CSV_COLUMNS, check_output

    with ReviewStore(tmp_path / "r.sqlite3") as store:
        earlier = tmp_path / "earlier.csv"
        earlier.write_text(",".join(REPORT_CSV_COLUMNS[:-1]) + "\n")
        check_output(earlier, store)  # (no refusal)
        theirs = tmp_path / "theirs.csv"
        theirs.write_text(",".join(REPORT_CSV_COLUMNS[:-2]) + "\n")
        with pytest.raises(FetalIQAError, match="is not an earlier report CSV"):
            check_output(theirs, store)
