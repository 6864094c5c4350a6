"""Headless ``fetaliqa demo`` talks: progress lines while scoring (frames, rate, time left),
then the answer (chosen frame, AC, GA) and where the files are. And on an X display without
Qt's libraries it renders offscreen and says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakes import fake_models, tiny_sweep
from fetaliqa_core.cli import main as cli_main
from fetaliqa_core.io import write_volume


@pytest.fixture
def demo_sweep(tmp_path, monkeypatch) -> Path:
    from fetaliqa_core import synth

    path = tmp_path / "case.mha"
    write_volume(path, tiny_sweep(2, 16, 64, 80).frames)
    monkeypatch.setattr(synth, "demo_sweep_path", lambda: path)
    return path


@pytest.fixture
def slow_models(monkeypatch):
    from fetaliqa_core.models import choice

    monkeypatch.setattr(choice, "load_models", lambda c, **_: fake_models(delay=0.15, batch_size=4, choice=c))


def test_headless_demo_shows_progress_then_the_answer(qtbot, demo_sweep, slow_models, tmp_path,
                                                      monkeypatch, capsys):
    import app.cli_demo as demo

    monkeypatch.setattr(demo, "PROGRESS_SECONDS", 0.1)
    out = tmp_path / "demo-out"
    assert cli_main(["demo", "--headless", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    progress = [ln for ln in lines if re.search(r"\d+ / 32 frames", ln)]
    assert len(progress) >= 2, text
    assert any(re.search(r"[\d.]+/s", ln) and "left" in ln for ln in progress), text
    answer = next(ln for ln in lines if ln.startswith("answer:"))
    # A plausible AC comes with its GA; an implausible one is marked doubtful and has no GA.
    assert re.search(r"AC [\d.]+ mm( · GA \d+w ?\d+d| \(doubtful(: [a-z ,']+)?\))", answer), answer
    assert not ("doubtful" in answer and "GA" in answer), answer
    assert "(sweep " in answer, answer
    assert lines.index(answer) > lines.index(progress[-1])
    if "doubtful" in answer:  # the reason follows, indented, as the status bar's tooltip gives it
        why = lines[lines.index(answer) + 1]
        assert why.startswith("  ") and len(why.strip()) > 20, text
    assert f"demo output: {out}" in text and "frames.csv" in text and "screenshot.png" in text


def test_demo_on_a_display_without_xcb_libraries_renders_offscreen(qtbot, demo_sweep, slow_models,
                                                                    tmp_path, monkeypatch, capsys):
    from app import qt_platform

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr(qt_platform, "_loads", lambda so: so != "libxcb-cursor.so.0")
    out = tmp_path / "o"
    assert cli_main(["demo", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "apt install libxcb-cursor0" in captured.err and "offscreen" in captured.err
    assert (out / "frames.csv").is_file() and (out / "screenshot.png").is_file()


def test_a_cache_that_cannot_be_written_names_the_setting_that_moves_it(tmp_path, monkeypatch, capsys):
    """With the cache folder unwritable (HOME read-only or unset, XDG_CACHE_HOME or FETALIQA_HOME
    under a file) the demo warned "continuing without it", then failed with "cannot create the
    folder ... Choose a folder you can write to", which named nothing to set."""
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("FETALIQA_HOME", str(tmp_path / "afile" / "home"))
    assert cli_main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "The demo sweep needs the cache folder" in err and "set FETALIQA_HOME to a folder" in err, err
    assert "continuing without it" not in err and len(err.strip().splitlines()) == 1, err

    monkeypatch.delenv("FETALIQA_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))
    monkeypatch.setattr("sys.platform", "linux")
    assert cli_main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "or XDG_CACHE_HOME" in err and "continuing without it" not in err, err


def test_outputs_for_a_cache_that_cannot_be_written_point_to_out(demo_sweep, tmp_path, monkeypatch, capsys):
    """The demo sweep there already (a cache made read-only since): the outputs, which go into
    the cache by default, name --out as well as FETALIQA_HOME."""
    from fetaliqa_core import synth

    monkeypatch.setattr(synth, "demo_case_exists", lambda: True)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("FETALIQA_HOME", str(tmp_path / "afile" / "home"))
    assert cli_main(["demo", "--headless"]) == 1
    err = capsys.readouterr().err
    assert "demo's outputs needs the cache folder" in err and "--out DIR" in err and "FETALIQA_HOME" in err, err


_STOPPED_WHILE_IMPORTING = '''
import importlib.abc, sys, threading, time
from pathlib import Path

SWEEP, OUT = sys.argv[1:3]


class HoldTheImport(importlib.abc.MetaPathFinder):
    """PyTorch's import, in the window's background thread, halts near its end (as on a slow disk)."""

    def find_spec(self, name, path, target=None):
        if name == "torch._precompile" and threading.current_thread().name == "fetaliqa-preload":
            time.sleep(120)
        return None


sys.meta_path.insert(0, HoldTheImport())
from fetaliqa_core import synth
synth.demo_case_exists = lambda: True
synth.demo_sweep_path = lambda: Path(SWEEP)
from fetaliqa_core.cli import main
sys.argv = ["fetaliqa", "demo", "--headless", "--max-seconds", "0.3", "--out", OUT]
sys.exit(main())
'''


def test_a_demo_stopped_while_pytorch_is_imported_ends_after_its_one_line(tmp_path):
    """``fetaliqa demo --max-seconds 3`` stopping while PyTorch was still being imported printed its
    line, then 36 "Exception ignored ... torch/library.py ... TypeError" tracebacks as the interpreter
    shut down under the half-imported library (or waited for the import to end first)."""
    import os
    import subprocess
    import sys
    import time

    sweep = tmp_path / "case.mha"
    write_volume(sweep, tiny_sweep(1, 8, 64, 80).frames)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "FETALIQA_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _STOPPED_WHILE_IMPORTING, str(sweep), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=200, env=env)
    took = time.monotonic() - t0
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("fetaliqa: The demo could not score the sweep: stopped after 0.3 s")
    assert took < 60  # not after the import ended


def _demo_with_damaged_models(out, monkeypatch, capsys) -> str:
    """``fetaliqa demo --headless --out OUT`` whose models fail to load (it scores nothing):
    asserts it fails, returns what it said on stderr."""
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.models import choice

    capsys.readouterr()

    def no_models(c, **_):
        raise FetalIQAError("the model files are damaged")

    monkeypatch.setattr(choice, "load_models", no_models)
    assert cli_main(["demo", "--headless", "--out", str(out)]) == 1
    return capsys.readouterr().err


def test_a_demo_that_scored_nothing_leaves_no_earlier_results_beside_its_screenshot(qtbot, demo_sweep, slow_models,
                                                                                   tmp_path, monkeypatch, capsys):
    """A stopped ``fetaliqa demo`` wrote a new screenshot of nothing scored beside the previous run's
    frames.csv and summary.json (another answer) and said only 'could not score the sweep'."""
    out = tmp_path / "demo-out"
    assert cli_main(["demo", "--headless", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"frames.csv", "summary.json", "screenshot.png"}
    (out / "notes.txt").write_text("mine")
    err = _demo_with_damaged_models(out, monkeypatch, capsys)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "screenshot.png"]
    assert "the model files are damaged" in err
    assert f"{out / 'screenshot.png'} shows the window with nothing scored" in err
    assert "the earlier run's frames.csv and summary.json there were removed" in err


def test_a_demo_that_scored_nothing_leaves_another_sweep_s_results_alone(qtbot, demo_sweep, slow_models,
                                                                        tmp_path, monkeypatch, capsys):
    """A demo that scored nothing removed the results `fetaliqa score` had written into the same
    folder for another sweep: only a demo's own earlier results are removed."""
    from fetaliqa_core.cli import main as core_main
    from fetaliqa_core.models import choice

    out = tmp_path / "shared-out"
    other = tmp_path / "other.mha"
    write_volume(other, tiny_sweep(1, 6, 64, 80).frames)
    monkeypatch.setattr(choice, "load_models", lambda c, **_: fake_models())
    assert core_main(["score", str(other), "--out", str(out), "--quiet"]) in (0, 1)
    assert (out / "summary.json").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    err = _demo_with_damaged_models(out, monkeypatch, capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert "the folder also holds the results of other.mha, another run's, left as they were" in err


def test_a_cascade_demo_stopped_in_its_student_s_pass_says_what_its_screenshot_shows(demo_sweep, tmp_path,
                                                                                    monkeypatch, capsys):
    """`fetaliqa demo --cascade --max-seconds 14` stopped while the student scored (385 of 840 frames on
    the curve, no answer yet: nothing to write) said its screenshot showed "the window with nothing
    scored". It says how many frames were scored and that a cascade answers once its student is done."""
    from types import SimpleNamespace

    import app.cli as app_cli

    out = tmp_path / "dc"
    shot = out / "screenshot.png"

    def stopped(path, choice, screenshot=None, **_):
        out.mkdir(exist_ok=True)
        shot.write_bytes(b"\x89PNG\r\n\x1a\n")
        window = SimpleNamespace(model=SimpleNamespace(results=SimpleNamespace(n_done=385, n_frames=840)),
                                 models=SimpleNamespace(student=SimpleNamespace(path="student")))
        return app_cli.GuiOutcome(1, False, "stopped after 14 s", shot, window=window)

    monkeypatch.setattr(app_cli, "run_window", stopped)
    monkeypatch.setattr(app_cli, "save_scores", lambda window, out_dir: [])
    monkeypatch.setattr("app.cli_demo.answer_line", lambda window: "")
    capsys.readouterr()
    assert cli_main(["demo", "--headless", "--cascade", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{shot} shows the window with 385 of 840 frames scored and no answer yet" in err, err
    assert "a cascade answers once its student has scored every frame" in err and "nothing scored" not in err
