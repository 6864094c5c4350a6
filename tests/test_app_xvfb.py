"""The viewer on a real X server (Xvfb), not Qt's offscreen platform: the window opens through
Qt's xcb plugin, scores and takes its screenshot; or, where the X11 libraries Qt needs are
missing, the process says which packages to install in one line and renders offscreen (never
Qt's abort, exit 134).

Skips when Xvfb is not installed (``apt install xvfb``); ``.ci/run`` installs it where it can.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.xvfb

CHILD = """
import sys
sys.path.insert(0, {tests!r})
from fakes import fake_models
from fetaliqa_core.models import choice
choice.load_models = lambda c, **_: fake_models(choice=c)
from fetaliqa_core.cli import main
code = main(["gui", {sweep!r}, "--screenshot", {shot!r}, "--exit-when-scored"])
from PySide6.QtGui import QGuiApplication
app = QGuiApplication.instance()
print("platform", app.platformName() if app is not None else "none", flush=True)
sys.exit(code)
"""


@pytest.fixture
def xvfb_display():
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt install xvfb): the real-X smoke test is skipped")
    r, w = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        with os.fdopen(r, encoding="ascii", errors="replace") as f:
            number = f.readline().strip()
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_window_on_a_real_x_server(xvfb_display, tmp_path):
    from app.qt_platform import display_problem
    from fakes import tiny_sweep
    from fetaliqa_core.io import write_volume

    sweep = tmp_path / "case.mha"
    write_volume(sweep, tiny_sweep(2, 10, 64, 80).frames)
    shot = tmp_path / "x11.png"
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=xvfb_display, FETALIQA_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(tests=str(TESTS), sweep=str(sweep), shot=str(shot))],
                          cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=240)
    problem = display_problem({"DISPLAY": xvfb_display})
    assert proc.returncode != 134 and "Could not load the Qt platform plugin" not in proc.stderr, proc.stderr
    data = shot.read_bytes()  # a picture either way
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") >= 1024
    if problem is not None:
        # Missing X11 libraries: one line naming the packages; the picture is rendered offscreen.
        assert proc.returncode == 0, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "apt install" in lines[0] and "offscreen" in lines[0], proc.stderr
        assert "platform offscreen" in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 0, proc.stderr
        assert "platform xcb" in proc.stdout, proc.stdout
