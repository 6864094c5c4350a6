"""``fetaliqa gui`` / ``fetaliqa demo`` headless: screenshot, scores, readable errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fakes import fake_models, tiny_sweep
from fetaliqa_core.cli import main as cli_main
from fetaliqa_core.io import write_volume

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_sweep(tmp_path) -> Path:
    path = tmp_path / "case.mha"
    write_volume(path, tiny_sweep(2, 12, 64, 80).frames)
    return path


@pytest.fixture
def fast_models(monkeypatch):
    from fetaliqa_core.models import choice

    monkeypatch.setattr(choice, "load_models", lambda choice, **_: fake_models(choice=choice))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_gui_screenshot_when_scored(qtbot, small_sweep, fast_models, tmp_path, capsys):
    shot = tmp_path / "shots" / "window.png"
    code = cli_main(["gui", str(small_sweep), "--screenshot", str(shot), "--exit-when-scored"])
    assert code == 0
    w, h = _png_size(shot)
    assert w >= 1000 and h >= 700
    printed = capsys.readouterr().out
    # the picture's answer in words too, with the model's notice (only "screenshot: X" was printed)
    assert "screenshot:" in printed and "\nanswer: " in printed, printed


def test_demo_headless_writes_scores_and_screenshot(qtbot, small_sweep, fast_models, tmp_path, monkeypatch, capsys):
    from fetaliqa_core import synth

    monkeypatch.setattr(synth, "demo_sweep_path", lambda: small_sweep)
    out = tmp_path / "demo-out"
    code = cli_main(["demo", "--headless", "--out", str(out)])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert len(rows) == 24 and all(r["p_cls"] != "" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_scored"] == 24 and summary["complete"] is True
    assert len(summary["sweeps"]) == 1
    _png_size(out / "screenshot.png")


def test_gui_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["gui", str(tmp_path / "missing.mha")]) == 1  # a failure, not a usage error
    err = capsys.readouterr().err
    assert "missing.mha" in err and "Traceback" not in err
    assert cli_main(["gui", "--base", str(tmp_path / "w.pt")]) == 2
    assert "--cls" in capsys.readouterr().err
    # a review database the user names is never filled or taken over: an empty file stays empty
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    assert cli_main(["gui", "--db", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "empty (0 bytes)" in err and "left as it is" in err and empty.stat().st_size == 0


def test_a_sweep_alone_without_a_display_says_what_to_add(tmp_path, capsys, monkeypatch):
    """`fetaliqa SWEEP` with no display ran 20 s, wrote nothing and said nothing (status 0)."""
    from fetaliqa_core.io import write_volume

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    write_volume(tmp_path / "s.mha", np.zeros((3, 40, 48), np.uint8))
    assert cli_main(["gui", str(tmp_path / "s.mha")]) == 2
    assert "--screenshot" in capsys.readouterr().err


def test_gui_headless_without_model_still_renders(tmp_path, small_sweep):
    """A real process, the real model loader: with no model available (a bundle folder that
    does not exist) the window still renders the frames, says why, and exits non-zero."""
    shot = tmp_path / "nomodel.png"
    env_cmd = [sys.executable, "-m", "fetaliqa_core.cli", "gui", str(small_sweep),
               "--cls", str(tmp_path / "no_bundle"), "--screenshot", str(shot), "--exit-when-scored"]
    proc = subprocess.run(env_cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 1, proc.stderr
    assert "no_bundle" in proc.stderr and "Traceback" not in proc.stderr
    _png_size(shot)


def test_gui_save_scores_equal_score_output(qtbot, small_sweep, tmp_path, capsys):
    """The viewer and `fetaliqa score` assess a sweep the same way: same models, same files."""
    from fetaliqa_core.engine import ScoringEngine
    from fetaliqa_core.io import load_sweep
    from fetaliqa_core.models.base import random_base
    from fetaliqa_core.models.bundle import load_bundle, manifest_for, save_bundle
    from fetaliqa_core.models.classifier import FetalCLIPClassifier
    from fetaliqa_core.models.lora import LoraSettings

    # A classifier whose own threshold is not 0.5 and splits this sweep's frames.
    visual, info = random_base("tiny", 5)
    net = FetalCLIPClassifier(visual, LoraSettings())
    probe = load_bundle(save_bundle(net, tmp_path / "probe", manifest_for(net, info)), device="cpu")
    p_cls = ScoringEngine(load_sweep(small_sweep), cls=probe, cache=False).run().p_cls
    own = round(float(np.quantile(p_cls, 0.6)), 4)
    assert own != 0.5
    cls_dir = save_bundle(net, tmp_path / "cls", manifest_for(net, info, threshold=own))
    models = ["--cls", str(cls_dir), "--device", "cpu"]
    cli_out, gui_out = tmp_path / "cli", tmp_path / "gui"
    assert cli_main(["score", str(small_sweep), *models, "--out", str(cli_out), "--quiet"]) == 0
    assert cli_main(["gui", str(small_sweep), *models, "--exit-when-scored", "--save-scores", str(gui_out)]) == 0
    printed = capsys.readouterr().out
    assert f"scores: {gui_out}" in printed
    # the answer, as score and demo print it (the headless window printed none), with the test
    # model's notice: these bundles adapt a random tower
    assert "answer: " in printed and "randomly initialised base" in printed, printed
    cli_rows = (cli_out / "frames.csv").read_text()
    assert (gui_out / "frames.csv").read_text() == cli_rows
    cli_summary = json.loads((cli_out / "summary.json").read_text())
    assert json.loads((gui_out / "summary.json").read_text()) == cli_summary
    # not trivially equal: frames were scored, some flagged, the operating point is the bundle's
    rows = list(csv.DictReader(cli_rows.splitlines()))
    assert all(r["p_cls"] != "" for r in rows)
    assert cli_summary["frames_scored"] == 24 and cli_summary["threshold_changed"] is False
    assert cli_summary["threshold"] == pytest.approx(own, abs=1e-6)
    assert 0 < sum(r["flagged"] == "1" for r in rows) < len(rows)


def test_corrupt_bundle_in_headless_mode_prints_one_error_line(qtbot, small_sweep, tmp_path, capsys):
    """The window tells the problem on stderr once; the command line does not repeat it."""
    bundle = tmp_path / "broken"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{ not json", encoding="utf-8")
    code = cli_main(["gui", str(small_sweep), "--cls", str(bundle), "--base", str(REPO / "resources/demo/base_tiny.pt"),
                     "--exit-when-scored", "--max-seconds", "60"])
    err = capsys.readouterr().err
    problems = [ln for ln in err.splitlines() if ln.startswith("fetaliqa:")]
    assert code == 1
    assert len(problems) == 1, err
    assert "manifest" in problems[0], err


def test_gui_cascade_marks_teacher_frames_and_saves_what_score_cascade_writes(qtbot, small_sweep, tmp_path, capsys,
                                                                              monkeypatch):
    """`fetaliqa gui --cascade`: the demo student scores every frame, the demo model re-scores its
    candidate runs; the curve marks those frames and the saved scores equal `score --cascade`'s."""
    from app import cli as app_cli

    windows = []
    real = app_cli.run_window

    def keep(*a, **k):
        k["keep_window"] = True
        out = real(*a, **k)
        windows.append(out.window)
        return out

    monkeypatch.setattr(app_cli, "run_window", keep)
    models = ["--model", "demo", "--cascade", "--device", "cpu", "--precision", "fp32"]
    cli_out, gui_out = tmp_path / "cli", tmp_path / "gui"
    assert cli_main(["score", str(small_sweep), *models, "--out", str(cli_out), "--quiet"]) == 0
    import threading

    from fetaliqa_core.analysis import frame_choice

    on_main, real_shape = [], frame_choice.mask_shape

    def counting(*args, **kwargs):
        on_main.append(threading.current_thread() is threading.main_thread())
        return real_shape(*args, **kwargs)

    monkeypatch.setattr(frame_choice, "mask_shape", counting)
    assert cli_main(["gui", str(small_sweep), *models, "--exit-when-scored", "--save-scores", str(gui_out)]) == 0
    # the teacher's masks are judged in the scoring thread, not on the window's
    assert on_main and not any(on_main), f"{sum(on_main)} of {len(on_main)} masks judged on the window's thread"
    assert (gui_out / "frames.csv").read_text() == (cli_out / "frames.csv").read_text()
    summary = json.loads((cli_out / "summary.json").read_text())
    assert json.loads((gui_out / "summary.json").read_text()) == summary
    # what ran: the student that chose the teacher's frames is listed beside the two bundles
    assert [b["role"] for b in summary["bundles"]] == ["classifier", "segmenter", "student (cascade)"]
    assert summary["bundles"][-1]["name"] == "demo/student" and len(summary["bundles"][-1]["sha256"]) == 64
    record = json.loads((cli_out / "cascade.json").read_text())
    assert json.loads((gui_out / "cascade.json").read_text())["teacher_frames"] == record["teacher_frames"]
    teacher = record["teacher_frames"]
    assert 0 < len(teacher) < 24
    rows = list(csv.DictReader(open(cli_out / "frames.csv")))  # whose scores each row holds
    assert [int(r["frame"]) for r in rows if r["scored_by"] == "teacher"] == teacher
    assert {r["scored_by"] for r in rows} == {"teacher", "student"}
    for r in rows:  # a student's row is flagged by the rule on the scores it shows, as the teacher's are
        if r["scored_by"] == "student" and r["p_cls"] and r["p_seg"]:
            from fetaliqa_core.analysis.assessment import SEG_THRESHOLD, flag_frames

            f = flag_frames(np.array([float(r["p_cls"])]), np.array([float(r["p_seg"])]),
                            float(r["threshold"]), SEG_THRESHOLD)
            assert int(r["flagged"]) == int(f.candidates[0]), r
    win = windows[0]
    assert np.flatnonzero(win.model.confirmed).tolist() == teacher
    xs, _ = win.curve.confirmed.getData()
    assert sorted(int(x) for x in xs) == teacher  # the curve marks exactly the teacher's frames
    assert "re-scored by the teacher" in win.curve.legend.text()
    chosen = win.model.assessment.summary.chosen_frame
    assert chosen == -1 or chosen in teacher  # the answer comes from the teacher's frames only
    unconfirmed = next(f for f in range(24) if f not in teacher)
    assert win.model.measure_ac(unconfirmed) is None  # no AC from a student's mask


def test_gui_never_writes_its_picture_or_scores_over_a_file_it_was_not_given(qtbot, small_sweep, fast_models,
                                                                             tmp_path, capsys):
    """`--screenshot` used to replace whatever it named, the sweep being opened included, with a
    PNG; `--save-scores` on a file printed an OS error and left a hidden folder behind."""
    sweep_bytes = small_sweep.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me", encoding="utf-8")
    for target in (small_sweep, notes, tmp_path / "shot.jpg"):
        code = cli_main(["gui", str(small_sweep), "--screenshot", str(target), "--exit-when-scored"])
        err = capsys.readouterr().err
        assert code in (1, 2) and "--screenshot" in err and "Traceback" not in err
    renamed = tmp_path / "case.png"  # the sweep itself under a .png name (a link to it)
    renamed.symlink_to(small_sweep)
    assert cli_main(["gui", str(renamed), "--screenshot", str(renamed), "--exit-when-scored"]) == 1
    assert "is the sweep being opened" in capsys.readouterr().err
    assert small_sweep.read_bytes() == sweep_bytes and notes.read_text(encoding="utf-8") == "keep me"
    # a screenshot taken before is a PNG and is replaced
    shot = tmp_path / "again.png"
    assert cli_main(["gui", str(small_sweep), "--screenshot", str(shot), "--exit-when-scored"]) == 0
    first = shot.read_bytes()
    assert cli_main(["gui", str(small_sweep), "--screenshot", str(shot), "--exit-when-scored"]) == 0
    _png_size(shot)
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli_main(["gui", str(small_sweep), "--save-scores", str(notes), "--exit-when-scored"]) == 1
    err = capsys.readouterr().err
    assert "--save-scores" in err and "existing file" in err and "Errno" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and first[:8] == b"\x89PNG\r\n\x1a\n"


def test_gui_save_scores_on_a_full_disk_says_so_as_score_does(qtbot, small_sweep, fast_models, tmp_path, monkeypatch,
                                                               capsys):
    """`gui --save-scores` on a full disk printed the system's "[Errno 28] No space left on device:
    '.../frames.csv'" where `score` says "the disk is full; free disk space or write elsewhere"."""
    import errno

    from fetaliqa_core import export

    def full(out_dir, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "frames.csv"))

    monkeypatch.setattr(export, "write_scores", full)
    out = tmp_path / "scores"
    assert cli_main(["gui", str(small_sweep), "--exit-when-scored", "--save-scores", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the disk is full; free disk space or write elsewhere" in err and "Errno" not in err, err
    assert str(out / "frames.csv") in err and len(err.strip().splitlines()) == 1, err


def test_results_folder_on_a_file_leaves_nothing_behind(tmp_path):
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.files import atomic_output_dir

    taken = tmp_path / "taken"
    taken.write_text("x", encoding="utf-8")
    with pytest.raises(FetalIQAError, match="existing file"):
        with atomic_output_dir(taken) as tmp:
            (tmp / "a.csv").write_text("1", encoding="utf-8")
    # a failure while the files are put in place: the temporary folder goes too
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").write_text("old", encoding="utf-8")
    import os

    real = os.replace

    def failing(src, dst):
        raise OSError(28, "No space left on device")

    os.replace = failing
    try:
        with pytest.raises(OSError):
            with atomic_output_dir(out) as tmp:
                (tmp / "a.csv").write_text("1", encoding="utf-8")
    finally:
        os.replace = real
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "taken"]
    assert (out / "a.csv").read_text(encoding="utf-8") == "old"


def test_ctrl_c_in_the_viewer_is_an_interruption_and_the_demo_writes_nothing(qtbot, small_sweep, tmp_path,
                                                                            monkeypatch, capsys):
    """Ctrl+C (or SIGTERM) used to close the window as if scoring had failed: the demo then printed
    an answer from a stale status bar (another sweep's frame), or 'could not score the sweep: '
    with no reason, left an empty folder and exited 1."""
    import os
    import signal

    from PySide6.QtCore import QTimer

    from fetaliqa_core import synth
    from fetaliqa_core.models import choice

    monkeypatch.setattr(choice, "load_models", lambda choice, **_: fake_models(delay=0.5, batch_size=1, choice=choice))
    monkeypatch.setattr(synth, "demo_sweep_path", lambda: small_sweep)
    out = tmp_path / "demo-out"
    for sig in (signal.SIGINT, signal.SIGTERM):
        QTimer.singleShot(1500, lambda sig=sig: os.kill(os.getpid(), sig))
        code = cli_main(["demo", "--headless", "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 130, captured.err
        assert "fetaliqa: interrupted" in captured.err and "answer:" not in captured.out
        assert not out.exists()


def test_the_window_loads_the_model_libraries_while_it_opens():
    """The first model load froze the window 0.3-0.8 s while PyTorch's native libraries loaded
    (they hold the interpreter lock): the window imports them in the background as it opens."""
    code = ("import sys, threading\n"
            "from app.cli import preload_model_libraries\n"
            "assert 'torch' not in sys.modules\n"
            "preload_model_libraries()\n"
            "[t.join() for t in threading.enumerate() if t.name == 'fetaliqa-preload']\n"
            "missing = [m for m in ('torch', 'open_clip', 'peft', 'fetaliqa_core.engine', "
            "'fetaliqa_core.models.choice') if m not in sys.modules]\n"
            "print(missing)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_closing_while_the_models_load_ends_the_process_without_waiting_for_them(qtbot, small_sweep, tmp_path,
                                                                                  monkeypatch, capsys):
    """Ctrl+C or closing the window while the models loaded (imports and a precision probe that
    cannot be interrupted) hid the window and kept the process 8-13 s: the load writes nothing,
    so the process now ends at once, with the usual line and status."""
    import os
    import signal
    import threading
    import time

    from PySide6.QtCore import QTimer

    from app import worker
    from fetaliqa_core.models import choice

    release = threading.Event()

    def slow_load(c, **_):
        release.wait(60)
        return fake_models(choice=c)

    class Exited(BaseException):
        pass

    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(choice, "load_models", slow_load)
    monkeypatch.setattr(os, "_exit", fake_exit)
    QTimer.singleShot(800, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    try:
        with pytest.raises(Exited) as ended:
            cli_main(["gui", str(small_sweep), "--save-scores", str(tmp_path / "scores")])
        assert ended.value.args == (130,) and time.monotonic() - t0 < 20
        assert "fetaliqa: interrupted" in capsys.readouterr().err
        assert worker.abandoned_work_running()
    finally:
        release.set()
        worker._wait_detached()
    assert not worker.abandoned_work_running()
    assert not (tmp_path / "scores").exists()
