"""Option checking and exit statuses: 2 for a wrong command line, 1 for a failure at run time;
one readable line either way. And what the viewer does where it cannot open a window."""

from __future__ import annotations

import time

import pytest

from fetaliqa_core.cli import main as cli_main


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "inf", "half"])
def test_score_threshold_outside_0_1_is_a_usage_error(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["score", str(tmp_path / "x.mha"), "--threshold", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--threshold" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].count("\n") == 0


@pytest.mark.parametrize("value", ["0", "-3", "nan"])
def test_max_seconds_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["gui", "--max-seconds", value])
    assert exc.value.code == 2
    assert "--max-seconds" in capsys.readouterr().err


def test_runtime_failure_exits_1_and_usage_error_2(tmp_path, capsys):
    assert cli_main(["score", str(tmp_path / "missing.mha")]) == 1
    assert "missing.mha" in capsys.readouterr().err
    assert cli_main(["gui", "--base", str(tmp_path / "w.pt")]) == 2  # --base without bundles
    assert "--cls" in capsys.readouterr().err


def test_no_sweep_and_no_display_says_what_to_do_at_once(monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    t0 = time.monotonic()
    code = cli_main([])
    elapsed = time.monotonic() - t0
    assert code == 2 and elapsed < 3.0
    err = capsys.readouterr().err
    assert "fetaliqa score SWEEP" in err and "--screenshot" in err and len(err.strip().splitlines()) == 1


def test_missing_xcb_libraries_named_in_one_line(monkeypatch, capsys):
    """With an X display but without Qt's xcb libraries, the viewer says which packages to
    install (instead of Qt's abort) and exits 1 without creating a window."""
    from app import qt_platform

    env = {"DISPLAY": ":0"}
    absent = {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    line = qt_platform.display_problem(env, loads=lambda so: so not in absent)
    assert "apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in line
    assert qt_platform.display_problem(env, loads=lambda so: True) is None
    assert qt_platform.display_problem({}, loads=lambda so: False) is None  # no X display
    assert qt_platform.display_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"},
                                       loads=lambda so: False) is None

    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(qt_platform, "_loads", lambda so: so not in absent)
    made = []
    monkeypatch.setattr("app.cli.run_window", lambda *a, **k: made.append(a))
    assert cli_main(["gui"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libxcb-icccm4" in err[0] and not made
