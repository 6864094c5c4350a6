"""Option checking and exit statuses: 2 for a wrong command line, 1 for a failure at run time;
one readable line either way. And what the viewer does where it cannot open a window."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fetaliqa_core.cli import main as cli_main
from fetaliqa_core.errors import FetalIQAError


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "inf", "half"])
def test_score_threshold_outside_0_1_is_a_usage_error(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["score", str(tmp_path / "x.mha"), "--threshold", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--threshold" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].count("\n") == 0


@pytest.mark.parametrize("args,word", [
    (["score", "x", "--archive", "--out", "y", "--prefetch", "1000"], "0 to 16"),  # read ahead without limit
    (["synth", "--out", "y", "--jobs", "10000"], "1 to 64"),  # thousands of 1.5 GB workers
])
def test_counts_that_would_fill_memory_are_a_usage_error(args, word, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 2 and word in capsys.readouterr().err


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
    assert qt_platform.display_problem(env, loads=lambda so: True, reachable=lambda d: True) is None
    # a DISPLAY with no X server behind it (left from an ssh session) made Qt abort (exit 134)
    line = qt_platform.display_problem(env, loads=lambda so: True, reachable=lambda d: False)
    assert "no X server answers" in line and "DISPLAY=':0'" in line and "offscreen" in line
    assert qt_platform.x_display_reachable(":987") is False  # nothing listens there
    wayland = {"WAYLAND_DISPLAY": "wayland-9", "XDG_SESSION_TYPE": "wayland", "XDG_RUNTIME_DIR": "/nonexistent"}
    assert "no Wayland compositor answers" in qt_platform.display_problem(wayland, loads=lambda so: True)
    # with an X display too, Qt falls back to it (also for QT_QPA_PLATFORM="wayland;xcb"): not refused
    for extra in ({"DISPLAY": ":0"}, {"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland;xcb"}):
        assert qt_platform.display_problem({**wayland, **extra}, loads=lambda so: True,
                                           reachable=lambda d: True) is None
    assert "wayland-9" in qt_platform.display_problem({**wayland, "DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland"},
                                                      loads=lambda so: True, reachable=lambda d: True)
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



def test_a_stale_wayland_display_is_found_without_a_wayland_session_type(tmp_path):
    """Qt tries Wayland whenever WAYLAND_DISPLAY is set; the check looked only when
    XDG_SESSION_TYPE=wayland too, so a WAYLAND_DISPLAY left from another session, with no
    DISPLAY, let `fetaliqa demo` and `gui --screenshot` abort inside Qt (exit 134)."""
    from app import qt_platform

    env = {"WAYLAND_DISPLAY": "wayland-9", "XDG_RUNTIME_DIR": str(tmp_path)}
    line = qt_platform.display_problem(env, loads=lambda so: True)
    assert "no Wayland compositor answers" in line and "wayland-9" in line and "offscreen" in line
    assert qt_platform.platform_order(env) == ["wayland", "xcb"]
    # with an X server to fall back to, Qt opens its window there
    assert qt_platform.display_problem({**env, "DISPLAY": ":0"}, loads=lambda so: True,
                                       reachable=lambda d: True) is None
    (tmp_path / "wayland-9").touch()  # a compositor's socket: Wayland is used, X is not checked
    assert qt_platform.display_problem(env, loads=lambda so: False) is None
    assert not qt_platform.will_use_xcb({**env, "DISPLAY": ":0"})


def test_a_forced_platform_that_cannot_start_is_named_in_one_line(monkeypatch, capsys):
    """QT_QPA_PLATFORM=xcb with no DISPLAY (or a misspelt name) printed "no display: scoring
    ... offscreen" and then Qt aborted (exit 134): Qt tries the forced platform however headless
    the run. Now the line names the setting, the window refuses (exit 1) and a run that renders
    offscreen anyway does so in place of it."""
    from app import qt_platform

    line = qt_platform.display_problem({"QT_QPA_PLATFORM": "xcb"}, loads=lambda so: True)
    assert "QT_QPA_PLATFORM='xcb'" in line and "DISPLAY is not set" in line
    have = ["minimal", "offscreen", "wayland", "xcb"]
    line = qt_platform.display_problem({"QT_QPA_PLATFORM": "xbc", "DISPLAY": ":0"}, plugins=have)
    assert "QT_QPA_PLATFORM='xbc' names no platform" in line and "minimal, offscreen, wayland, xcb" in line
    assert qt_platform.display_problem({"QT_QPA_PLATFORM": "xbc;offscreen"}, plugins=have) is None
    monkeypatch.delenv("QT_PLUGIN_PATH", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM_PLUGIN_PATH", raising=False)
    assert {"xcb", "offscreen", "wayland", "wayland-egl"} <= set(qt_platform.platform_plugins())  # (read from PySide6)

    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    made = []

    def window(*a, **k):
        made.append(os.environ.get("QT_QPA_PLATFORM"))
        raise FetalIQAError("stopped here")

    monkeypatch.setattr("app.cli.run_window", window)
    assert cli_main(["gui"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "QT_QPA_PLATFORM='xcb'" in err[0] and not made
    sweep = Path(__file__).parent / "missing-on-purpose.mha"
    monkeypatch.setattr("fetaliqa_core.synth.demo_sweep_path", lambda: sweep)
    monkeypatch.setattr("fetaliqa_core.synth.demo_case_exists", lambda: True)
    assert cli_main(["demo"]) == 1
    err = capsys.readouterr().err
    assert "QT_QPA_PLATFORM='xcb'" in err and "offscreen instead" in err and made == ["offscreen"]

MODEL_COMMANDS = {"score": ["SWEEP"], "gui": [], "eval": ["--data", "D"], "demo": [], "bench": []}


def test_every_model_command_declares_the_same_model_options():
    """One declaration of the model options: the same flags, types and help wherever they appear."""
    from fetaliqa_core.cli import _available_commands, build_parser

    parser = build_parser(_available_commands())
    sub = parser._subparsers._group_actions[0].choices
    declared = {}
    for name in MODEL_COMMANDS:
        actions = {a.option_strings[0]: a for a in sub[name]._actions if a.option_strings}
        declared[name] = {k: (a.type, a.help) for k, a in actions.items()
                          if k in ("--model", "--cls", "--seg", "--base", "--device", "--precision")}
    assert set(declared["score"]) == set(declared["gui"]) == {"--model", "--cls", "--seg", "--base", "--device",
                                                              "--precision"}
    assert set(declared["eval"]) == {"--cls", "--seg", "--base", "--device", "--precision"}
    assert set(declared["demo"]) == {"--device", "--precision"} and set(declared["bench"]) == {"--device"}
    for flag in ("--cls", "--seg", "--base", "--precision"):
        assert declared["score"][flag] == declared["gui"][flag] == declared["eval"][flag]
    assert len({d["--device"][0] for d in declared.values()}) == 1  # one device type everywhere


@pytest.mark.parametrize("args, message", [
    (["--model", "demo", "--cls", "B"], "not both"),
    (["--base", "W.pt"], "add --cls and/or --seg"),
])
def test_one_rule_builds_the_model_choice_for_score_and_gui(args, message, tmp_path, capsys):
    sweep = tmp_path / "s.mha"
    sweep.write_bytes(b"")
    for command in (["score", str(sweep)], ["gui", str(sweep), "--exit-when-scored"]):
        assert cli_main([*command, *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_model_choice_rule():
    import argparse

    from fetaliqa_core.models.options import model_choice_from_args

    def ns(**kw):
        return argparse.Namespace(**{"model": None, "cls": None, "seg": None, "base": None, "device": None,
                                     "precision": None, **kw})

    demo = model_choice_from_args(ns())
    assert demo.model == "demo" and demo.device == "auto"
    assert model_choice_from_args(ns(), remembered=True) is None  # the viewer keeps the last choice
    assert model_choice_from_args(ns(device="cpu"), remembered=True).device == "cpu"
    both = model_choice_from_args(ns(cls="a", seg="a", base="w", device="cuda:1", precision="fp32"))
    assert (both.model, both.cls, both.seg, both.base, both.device, both.precision) == \
        (None, "a", "a", "w", "cuda:1", "fp32")


@pytest.mark.parametrize("device, ok", [("cpu", True), ("CUDA:1", True), ("mps", True), ("gpu", False),
                                        ("cuda:x", False)])
def test_device_option_accepts_what_the_loader_knows(device, ok, capsys):
    if ok:
        from fetaliqa_core.models.options import device_name

        assert device_name(device) == device.lower()
    else:
        with pytest.raises(SystemExit) as exit_:
            cli_main(["score", "x.mha", "--device", device])
        assert exit_.value.code == 2
        assert "cuda:N" in capsys.readouterr().err


def test_folder_table_cells_are_not_formulas():
    from fetaliqa_core.cli.score import _cell

    assert _cell("=HYPERLINK(1).mha") == "'=HYPERLINK(1).mha"
    assert _cell("@sum.mha") == "'@sum.mha"
    assert _cell(-1) == "-1" and _cell("case.mha") == "case.mha"


def test_the_command_line_is_built_without_torch():
    """`fetaliqa --version` and a wrong option answer at once (torch takes ~1.5 s to import),
    and Ctrl-C in that time is not a traceback."""
    import subprocess
    import sys

    code = ("import sys; from fetaliqa_core.cli import _available_commands, build_parser; "
            "build_parser(_available_commands()); print(sorted(m for m in ('torch', 'PySide6.QtWidgets', "
            "'SimpleITK') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_eval_without_a_bundle_is_a_wrong_command_line_that_names_the_demo_pair(tmp_path, capsys):
    assert cli_main(["eval", "--data", str(tmp_path), "--split", "all"]) == 2
    err = capsys.readouterr().err
    assert "--cls BUNDLE" in err and "resources/demo/cls" in err.replace("\\", "/")


def test_a_c_locale_gives_qt_a_utf8_one_without_its_warning():
    """Under LC_ALL=C Qt switched to C.UTF-8 itself and said so in four lines ("Detected locale
    "C" ... reconfigure your locale") on every window, demo and PDF run."""
    import subprocess
    import sys

    from app import qt_platform

    yes = lambda name: True  # noqa: E731
    assert qt_platform.utf8_locale_setting({"LC_ALL": "C"}, yes) == ("LC_ALL", "C.UTF-8")
    assert qt_platform.utf8_locale_setting({"LANG": "POSIX"}, yes) == ("LC_CTYPE", "C.UTF-8")
    assert qt_platform.utf8_locale_setting({}, yes) == ("LC_CTYPE", "C.UTF-8")
    assert qt_platform.utf8_locale_setting({"LC_ALL": "C"}, lambda name: False) is None  # none to switch to
    for theirs in ({"LANG": "de_DE.UTF-8"}, {"LC_CTYPE": "C.UTF-8"}, {"LANG": "C", "LC_CTYPE": "en_GB.ISO-8859-1"}):
        assert qt_platform.utf8_locale_setting(theirs, yes) is None

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env.update(LC_ALL="C", QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    run = subprocess.run([sys.executable, "-c", "from app.cli import ensure_application; ensure_application(True)"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "locale" not in run.stderr, run.stderr
