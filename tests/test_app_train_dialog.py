"""The Train… dialog driven offscreen: a small script stands in for ``training.train`` (same
stdout protocol), so progress, log, success, cancel, failure and validation run in seconds.
One slow test runs a real one-epoch tiny training through the dialog."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from app import train_dialog as td
from app.train_dialog import TrainDialog, TrainRequest, parse_bundle, parse_progress

FAKE_TRAIN = textwrap.dedent("""
    import os, signal, sys, time
    mode, out, bundle = sys.argv[1], sys.argv[2], sys.argv[3]
    print("PID", os.getpid(), flush=True)
    print("train: 4 cases, 96 frames", file=sys.stderr, flush=True)
    if mode == "fail":
        print("PROGRESS trial=1/1 epoch=1/2 step=1/4 loss=0.9 frames_per_s=10", flush=True)
        print("fetaliqa: --data /x: the validation split is empty; give more cases", file=sys.stderr, flush=True)
        sys.exit(2)
    if mode in ("long", "stubborn"):
        if mode == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("PROGRESS trial=1/1 epoch=1/5 step=1/100 loss=0.7 frames_per_s=10", flush=True)
        time.sleep(120)
        sys.exit(0)
    for e in (1, 2):
        for s in (1, 2, 3, 4):
            print(f"PROGRESS trial=1/1 epoch={e}/2 step={s}/4 loss={1.0 / (e * s):.4f} frames_per_s=50", flush=True)
            time.sleep(0.05)
        print(f"VALIDATION trial=1/1 epoch={e}/2 train_loss=0.5 val_loss=0.4 f1=0.6 best=1", flush=True)
    print("BUNDLE " + bundle, flush=True)
""")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """The smallest folder that passes the layout check (the fake never reads it)."""
    d = tmp_path / "data"
    (d / "images" / "stacked_fetal_ultrasound").mkdir(parents=True)
    (d / "images" / "stacked_fetal_ultrasound" / "case.mha").write_bytes(b"")
    return d


@pytest.fixture
def make_dialog(qtbot, tmp_path, data_dir):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)

    def make(mode: str = "ok", bundle: str | Path = "/runs/x/bundle", grace_ms: int = 2000) -> TrainDialog:
        dlg = TrainDialog(command=lambda req: (sys.executable, [str(script), mode, str(req.out), str(bundle)]),
                          terminate_grace_ms=grace_ms, interactive=False)
        qtbot.addWidget(dlg)
        dlg.data.set_text(data_dir)
        dlg.out.set_text(tmp_path / f"run-{mode}")
        dlg.show()
        return dlg

    return make


def _child_pid(dlg: TrainDialog) -> int:
    line = next(ln for ln in dlg.log.toPlainText().splitlines() if ln.startswith("PID "))
    return int(line.split()[1])


def _alive(pid: int) -> bool:
    """Whether a process id is still taken (our children are reaped by QProcess when they end)."""
    if sys.platform == "win32":
        return False  # os.kill(pid, 0) would end the process there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- parsing and the command line -----------------------------------------------------------
def test_parse_progress_gives_overall_fraction():
    p = parse_progress("PROGRESS trial=1/1 epoch=2/5 step=10/100 loss=0.4123 frames_per_s=85.2")
    assert (p.epoch, p.n_epochs, p.step, p.n_steps) == (2, 5, 10, 100)
    assert p.fraction == pytest.approx((1 + 0.1) / 5)
    assert p.loss == pytest.approx(0.4123)
    # the second of two trials: half done before it starts
    p2 = parse_progress("PROGRESS trial=2/2 epoch=1/1 step=5/10 loss=nan frames_per_s=1")
    assert p2.fraction == pytest.approx(0.75)
    assert parse_progress("VALIDATION trial=1/1 epoch=1/5 val_loss=0.3") is None
    assert parse_progress("PROGRESS epoch=x/5 step=1/2") is None
    assert parse_progress("PROGRESS epoch=1/5 step=1/0") is None
    assert parse_bundle("BUNDLE /a b/run/bundle\n") == "/a b/run/bundle"
    assert parse_bundle("PROGRESS BUNDLE /x") is None


def test_request_arguments_are_accepted_by_the_training_cli(tmp_path):
    from training.train import build_parser

    req = TrainRequest(task="seg", data=tmp_path / "d", out=tmp_path / "o", epochs=3, batch_size=8,
                       device="cpu", all_sweeps=True)
    args = build_parser().parse_args(req.cli_args())
    assert (args.task, args.epochs, args.batch_size, args.device) == ("seg", 3, 8, "cpu")
    assert args.base_config == "tiny" and args.base is None and args.all_sweeps and not args.resume
    assert args.progress_bar is False
    req2 = TrainRequest(task="cls", data=tmp_path, out=tmp_path / "o", base_weights=tmp_path / "w.pt", resume=True)
    args2 = build_parser().parse_args(req2.cli_args())
    assert args2.base == str(tmp_path / "w.pt") and args2.base_config is None and args2.resume
    prog, argv = td.default_command(req)
    assert prog == sys.executable and argv[:2] == ["-m", "training.train"]


def test_distill_task_runs_the_distill_command_on_the_demo_teacher(tmp_path, make_dialog):
    import argparse

    from training.distill import add_arguments

    req = TrainRequest(task="distill", data=tmp_path / "d", out=tmp_path / "o", epochs=2, batch_size=4, device="cpu")
    prog, argv = td.default_command(req)
    assert argv[:2] == ["-m", "training.distill"]
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(argv[2:])
    assert (args.epochs, args.batch_size, args.device, args.out) == (2, 4, "cpu", tmp_path / "o")
    assert (args.cls / "manifest.json").is_file() and (args.seg / "manifest.json").is_file() and args.base.is_file()
    dlg = make_dialog()
    assert "distill" in [dlg.task.itemData(i) for i in range(dlg.task.count())]


# -- validation -----------------------------------------------------------------------------
def test_invalid_inputs_are_refused_with_a_clear_message(make_dialog, tmp_path, data_dir):
    dlg = make_dialog()
    for bad, words in (("", "none chosen"), (str(tmp_path / "missing"), "does not exist"),
                       (str(tmp_path), "images/stacked_fetal_ultrasound")):
        dlg.data.set_text(bad)
        assert dlg.start() is False
        assert not dlg.running and dlg.state == td.IDLE
        assert dlg.message.isVisible() and words in dlg.message.text()
    empty = tmp_path / "empty_layout"
    (empty / "images" / "stacked_fetal_ultrasound").mkdir(parents=True)
    dlg.data.set_text(empty)
    assert dlg.start() is False and "no .mha" in dlg.message.text()

    dlg.data.set_text(data_dir)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something.txt").write_text("x")
    dlg.out.set_text(taken)
    assert dlg.start() is False and "not empty" in dlg.message.text()
    dlg.resume.setChecked(True)
    assert dlg.start() is False and "no run to continue" in dlg.message.text()
    dlg.resume.setChecked(False)
    dlg.out.set_text(tmp_path / "fresh")
    dlg.base.setCurrentIndex(1)
    dlg.weights.set_text(tmp_path / "nope.pt")
    assert dlg.start() is False and "does not exist" in dlg.message.text()
    assert not dlg.running


def test_a_file_chosen_as_the_data_folder_is_called_a_file(make_dialog, tmp_path):
    """A sweep file chosen as the data folder was said not to exist: it does, as a file."""
    dlg = make_dialog()
    sweep = tmp_path / "one_frame.mha"
    sweep.write_bytes(b"x")
    dlg.data.set_text(sweep)
    assert not dlg.start()
    assert "is a file, not a folder" in dlg.message.text() and "does not exist" not in dlg.message.text()
    dlg.data.set_text(tmp_path / "nowhere")
    assert not dlg.start() and "does not exist" in dlg.message.text()


def test_empty_output_folder_gets_a_fresh_run_folder(make_dialog, qtbot):
    dlg = make_dialog()
    dlg.out.set_text("")
    assert dlg.start()
    assert "runs" in dlg.out.text() and dlg.request.out == Path(dlg.out.text()).resolve()
    qtbot.waitUntil(lambda: not dlg.running, timeout=15000)


# -- running --------------------------------------------------------------------------------
def test_successful_run_updates_progress_and_log_and_reports_the_bundle(make_dialog, qtbot, tmp_path):
    dlg = make_dialog(bundle=tmp_path / "my run" / "bundle")
    fractions: list[float] = []
    states: list[str] = []
    dlg.progress_changed.connect(fractions.append)
    dlg.state_changed.connect(states.append)
    with qtbot.waitSignal(dlg.training_finished, timeout=20000) as blocker:
        assert dlg.start()
        assert dlg.state == td.RUNNING and not dlg.start_button.isEnabled() and dlg.cancel_button.isEnabled()
        assert not dlg.form.isEnabled()
    assert blocker.args == [str(tmp_path / "my run" / "bundle"), ""]
    assert len(fractions) == 8 and fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert fractions[0] == pytest.approx(1 / 8)
    assert dlg.progress_bar.value() == dlg.progress_bar.maximum() == td.PROGRESS_SCALE
    log = dlg.log.toPlainText()
    assert "PROGRESS trial=1/1 epoch=2/2 step=4/4" in log and "train: 4 cases" in log  # stdout and stderr
    assert dlg.state == td.FINISHED and states[-1] == td.FINISHED
    assert dlg.bundle_path == str(tmp_path / "my run" / "bundle")
    assert "my run" in dlg.bundle_label.text() and dlg.load_button.isVisible()
    assert "val loss 0.4" in dlg.status.text() or "finished" in dlg.status.text()
    with qtbot.waitSignal(dlg.load_requested, timeout=1000) as load:
        dlg.load_button.click()
    assert load.args[0] == dlg.bundle_path
    assert dlg.start_button.isEnabled() and dlg.form.isEnabled()


def test_eta_is_shown_while_running(make_dialog, qtbot):
    dlg = make_dialog()
    seen: list[str] = []
    dlg.progress_changed.connect(lambda f: seen.append(dlg.progress_bar.format()))
    dlg.start()
    qtbot.waitUntil(lambda: dlg.state == td.FINISHED, timeout=20000)
    assert any("left" in text and "epoch 2/2" in text for text in seen), seen


def test_cancel_stops_a_long_run_and_returns_to_idle(make_dialog, qtbot):
    dlg = make_dialog("long")
    dlg.start()
    qtbot.waitUntil(lambda: dlg.progress is not None, timeout=15000)
    pid = _child_pid(dlg)
    t0 = time.monotonic()
    dlg.cancel()
    assert dlg.state == td.CANCELLING and not dlg.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: dlg.state == td.IDLE, timeout=10000)
    assert time.monotonic() - t0 < 5
    assert not dlg.running and dlg.start_button.isEnabled() and dlg.form.isEnabled()
    assert "cancelled" in dlg.status.text()
    assert not dlg.message.isVisible()  # a cancel is not an error
    qtbot.waitUntil(lambda: not _alive(pid), timeout=5000)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be ignored on Windows")
def test_cancel_kills_a_process_that_ignores_terminate(make_dialog, qtbot):
    dlg = make_dialog("stubborn", grace_ms=300)
    dlg.start()
    qtbot.waitUntil(lambda: dlg.progress is not None, timeout=15000)
    pid = _child_pid(dlg)
    dlg.cancel()
    qtbot.waitUntil(lambda: dlg.state == td.IDLE, timeout=10000)
    assert "killed" in dlg.log.toPlainText()
    qtbot.waitUntil(lambda: not _alive(pid), timeout=5000)


def test_non_zero_exit_shows_the_error_and_the_last_log_lines(make_dialog, qtbot):
    dlg = make_dialog("fail")
    finished: list = []
    dlg.training_finished.connect(lambda *a: finished.append(a))
    dlg.start()
    qtbot.waitUntil(lambda: dlg.state == td.FAILED, timeout=15000)
    text = dlg.message.text()
    assert dlg.message.isVisible() and "exit code 2" in text
    assert "the validation split is empty" in text and "Last lines" in text and "train: 4 cases" in text
    assert "validation split is empty" in dlg.last_error
    assert not finished and not dlg.load_button.isVisible() and dlg.start_button.isEnabled()
    assert dlg.progress_bar.format() == "failed"


def test_the_log_shows_the_start_of_its_lines(qtbot, tmp_path, data_dir):
    """The log (no wrap) followed the end of the text: it opened scrolled to the end of its longest
    line, and the start of every line, where the child says what happened, was off to the left."""
    talk = ("import sys\nfor i in range(60):\n    print(f'line {i}: ' + 'x' * 400)\n"
            "print('fetaliqa: the run stopped: ' + 'why ' * 100, file=sys.stderr)\nsys.exit(1)\n")
    dlg = TrainDialog(command=lambda req: (sys.executable, ["-c", talk]), interactive=False)
    qtbot.addWidget(dlg)
    dlg.data.set_text(data_dir)
    dlg.out.set_text(tmp_path / "run")
    dlg.show()
    qtbot.waitExposed(dlg)
    dlg.start()
    qtbot.waitUntil(lambda: dlg.state == td.FAILED, timeout=15000)
    qtbot.wait(50)
    across, down = dlg.log.horizontalScrollBar(), dlg.log.verticalScrollBar()
    assert across.maximum() > 0 and across.value() == 0
    assert down.maximum() > 0 and down.value() == down.maximum()  # the last lines in view


def test_a_program_that_cannot_start_is_reported(qtbot, tmp_path, data_dir):
    dlg = TrainDialog(command=lambda req: (str(tmp_path / "no-such-python"), []), interactive=False)
    qtbot.addWidget(dlg)
    dlg.data.set_text(data_dir)
    dlg.out.set_text(tmp_path / "run")
    dlg.start()
    qtbot.waitUntil(lambda: dlg.state == td.FAILED, timeout=10000)
    assert "could not start" in dlg.message.text() and not dlg.running


def test_closing_mid_run_cancels_cleanly(make_dialog, qtbot):
    dlg = make_dialog("long")
    dlg.start()
    qtbot.waitUntil(lambda: dlg.progress is not None, timeout=15000)
    pid = _child_pid(dlg)
    dlg.close()
    assert not dlg.isVisible()
    qtbot.waitUntil(lambda: not dlg.running, timeout=10000)
    assert dlg.state == td.IDLE
    qtbot.waitUntil(lambda: not _alive(pid), timeout=5000)


def test_closing_mid_run_asks_and_keeps_running_on_no(make_dialog, qtbot, monkeypatch):
    dlg = make_dialog("long")
    dlg.interactive = True
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.No))
    dlg.start()
    qtbot.waitUntil(lambda: dlg.progress is not None, timeout=15000)
    dlg.close()
    assert dlg.isVisible() and dlg.running and dlg.state == td.RUNNING
    dlg.shutdown(timeout_ms=2000)
    assert not dlg.running and dlg.state == td.IDLE


# -- the main window --------------------------------------------------------------------------
@pytest.fixture
def window(qtbot, monkeypatch):
    from app.main_window import MainWindow
    from app.settings import AppSettings

    alerts: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(lambda p, t, text, *a, **k: alerts.append(text)))
    win = MainWindow(settings=AppSettings())
    qtbot.addWidget(win)
    win.alerts = alerts
    return win


def test_train_action_opens_one_dialog_and_loading_applies_the_bundle(window, tiny_bundle_dirs, tmp_path):
    win = window
    assert win.act_train.shortcut().toString() == "Ctrl+T"
    assert win.act_train in win.menuBar().actions()[2].menu().actions()  # the Scoring menu
    dlg = win.train_dialog()
    assert isinstance(dlg, TrainDialog) and dlg.isVisible() and win.train_dialog() is dlg
    assert win.choice.model == "demo"

    dlg.load_requested.emit(str(tiny_bundle_dirs["cls"]), "")  # from demo: only the new classifier
    assert win.choice.model is None and win.choice.cls == Path(tiny_bundle_dirs["cls"]) and win.choice.seg is None
    assert win.settings.cls_bundle == str(tiny_bundle_dirs["cls"]) and win.settings.model == "custom"
    weights = tmp_path / "w.pt"
    assert win.load_trained_bundle(str(tiny_bundle_dirs["seg"]), str(weights))  # keeps the classifier
    assert win.choice.cls == Path(tiny_bundle_dirs["cls"]) and win.choice.seg == Path(tiny_bundle_dirs["seg"])
    assert win.choice.base == weights

    before = win.choice
    assert not win.load_trained_bundle(str(tmp_path))  # no manifest.json
    assert win.choice == before and win.alerts and "manifest.json" in win.alerts[-1]


def _window_training(window, qtbot, tmp_path, data_dir, mode: str) -> TrainDialog:
    """The window's Train dialog running the fake training in ``mode``, its first step reported."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    dlg = window.train_dialog()
    dlg.command = lambda req: (sys.executable, [str(script), mode, str(req.out), "/x"])
    dlg.data.set_text(data_dir)
    dlg.out.set_text(tmp_path / "run")
    dlg.start()
    qtbot.waitUntil(lambda: dlg.progress is not None, timeout=15000)
    return dlg


def test_closing_the_window_stops_a_training_run(window, qtbot, tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.Yes))
    dlg = _window_training(window, qtbot, tmp_path, data_dir, "long")
    pid = _child_pid(dlg)
    closed: list[bool] = []
    window.closed.connect(lambda: closed.append(True))
    window.close()
    qtbot.waitUntil(lambda: bool(closed), timeout=10000)
    assert not dlg.running
    qtbot.waitUntil(lambda: not _alive(pid), timeout=5000)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be ignored on Windows")
def test_closing_the_window_mid_training_asks_and_never_waits_for_the_run(window, qtbot, tmp_path, data_dir,
                                                                           monkeypatch):
    """Closing the viewer stopped a training run without the question its own dialog asks, and
    held the application (the Train dialog too) while the child ended: 3.7 s for a real run, up to
    twice the grace period for one that does not end on terminate."""
    asked: list[str] = []
    answer = [QMessageBox.No]
    monkeypatch.setattr(QMessageBox, "question",
                        staticmethod(lambda p, title, text, *a, **k: asked.append(text) or answer[0]))
    window.show()
    dlg = _window_training(window, qtbot, tmp_path, data_dir, "stubborn")
    dlg.terminate_grace_ms = 1500
    pid = _child_pid(dlg)
    window.close()  # No: the run goes on, the window stays
    assert asked and asked[-1].startswith("Training is still running. Stop it?")
    assert window.isVisible() and dlg.running and dlg.state == td.RUNNING and _alive(pid)
    answer[0] = QMessageBox.Yes
    closed: list[bool] = []
    window.closed.connect(lambda: closed.append(True))
    t0 = time.monotonic()
    window.close()  # Yes: stopped on its own time, the window closes once it has ended
    assert time.monotonic() - t0 < 0.5
    assert len(asked) == 2 and window.isVisible() and dlg.state == td.CANCELLING
    assert "closes once it has stopped" in window.status_message.full_text()
    qtbot.waitUntil(lambda: bool(closed), timeout=10000)
    assert not window.isVisible() and not dlg.running and "killed" in dlg.log.toPlainText()
    qtbot.waitUntil(lambda: not _alive(pid), timeout=5000)


# -- the real training CLI ---------------------------------------------------------------------
@pytest.mark.slow
def test_real_one_epoch_tiny_training_through_the_dialog(qtbot, tmp_path):
    from fetaliqa_core.models.bundle import read_manifest
    from fetaliqa_core.synth import write_dataset

    data = tmp_path / "synth"
    write_dataset(data, cases=6, seed=1, frames_per_sweep=4, height=96, width=128)
    dlg = TrainDialog(interactive=False)
    qtbot.addWidget(dlg)
    dlg.data.set_text(data)
    dlg.out.set_text(tmp_path / "run")
    dlg.task.setCurrentIndex(0)
    dlg.epochs.setValue(1)
    dlg.batch.setValue(8)
    dlg.device.setCurrentText("cpu")
    dlg.all_sweeps.setChecked(True)
    fractions: list[float] = []
    dlg.progress_changed.connect(fractions.append)
    with qtbot.waitSignal(dlg.training_finished, timeout=300000, raising=False) as blocker:
        assert dlg.start()
    assert dlg.state == td.FINISHED, dlg.log.toPlainText()[-3000:]
    bundle = Path(blocker.args[0])
    assert bundle == (tmp_path / "run" / "bundle").resolve()
    assert read_manifest(bundle).task == "cls"
    assert fractions and fractions[-1] == pytest.approx(1.0)


def test_the_window_and_the_train_dialog_open_no_taller_than_the_screen(qtbot):
    """On a 1366 x 768 laptop the window opened at 1440 x 900 (its answer line and Stop button
    below the screen) and the Train dialog at 760 x 720 (Start and Close below it)."""
    from PySide6.QtGui import QGuiApplication

    from app.main_window import MainWindow
    from app.settings import AppSettings

    avail = QGuiApplication.primaryScreen().availableGeometry()
    assert avail.height() < 900  # the offscreen screen is smaller than the window's wanted size
    win = MainWindow(settings=AppSettings())
    qtbot.addWidget(win)
    assert win.height() <= avail.height()
    dlg = TrainDialog(interactive=False)
    qtbot.addWidget(dlg)
    assert dlg.height() <= avail.height() and dlg.width() <= avail.width()
