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

    monkeypatch.setattr(choice, "load_models", lambda c: fake_models(delay=0.15, batch_size=4, choice=c))


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
