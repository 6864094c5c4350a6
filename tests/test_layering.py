"""The core stands alone: no file under fetaliqa_core/ imports or names the viewer (``app``) or the
training scripts (``training``) as a package. What they add to the core (commands, the display
probe, the PDF writer) they register as entry points (fetaliqa_core.plugins)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "fetaliqa_core"
OUTSIDE = ("app", "training")
# a module path in code, a string or a comment: app.cli, training.train (not "the app." in prose)
DOTTED = re.compile(r"(?<![\w./-])(app|training)\.[A-Za-z_]")
FROM_IMPORT = re.compile(r"\bfrom\s+(app|training)(\.\w+)*\s+import\b")


def _names_outside(value: str) -> bool:
    return value in OUTSIDE or any(value.startswith(f"{p}.") or value.startswith(f"{p}:") for p in OUTSIDE)


def offences(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")  # any file: sources, data, notes
    found = []
    tree = ast.parse(text, filename=str(path)) if path.suffix == ".py" else ast.Module(body=[], type_ignores=[])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if _names_outside(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _names_outside(node.module or ""):
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _names_outside(node.value.strip()):
            found.append(f"{node.lineno}: string {node.value!r}")
    for lineno, line in enumerate(text.splitlines(), start=1):
        for pattern in (DOTTED, FROM_IMPORT):
            m = pattern.search(line)
            if m:
                found.append(f"{lineno}: {m.group(0)!r} in {line.strip()!r}")
    return found


def test_core_never_names_app_or_training():
    sources = sorted(p for p in CORE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert sum(p.suffix == ".py" for p in sources) > 20
    bad = {str(p.relative_to(CORE.parent)): o for p in sources if (o := offences(p))}
    assert not bad, bad


def test_the_check_catches_what_it_must(tmp_path):
    caught = {
        "import app.cli\n": True,
        "from training.train import main\n": True,
        "def f():\n    from app import report_pdf\n": True,
        "importlib.import_module('app.frame_view')\n": True,
        "COMMANDS = {'train': 'training.cli_train'}\n": True,
        "x = 'training'\n": True,
        "# loads app.bench_display when present\n": True,
        "# frames from training data, shown in the app. Not a module\n": False,
        "home = root / 'app-home'\n": False,
        "doc = 'reviewer labels for training'\n": False,
    }
    for source, expected in caught.items():
        path = tmp_path / "m.py"
        path.write_text(source, encoding="utf-8")
        assert bool(offences(path)) is expected, source


def test_commands_come_from_entry_points(monkeypatch, capsys):
    """The viewer's and training's commands are found through the ``fetaliqa.commands`` group;
    without them (a core-only install) the core's commands still work and ``fetaliqa`` alone
    shows the help instead of failing on the missing viewer."""
    import pytest

    from fetaliqa_core import cli, plugins

    real = plugins.registered(plugins.COMMANDS)
    assert {"gui", "demo", "train", "eval"} <= set(real)
    assert list(cli._available_commands())[0] == cli.DEFAULT_COMMAND

    monkeypatch.setattr(plugins, "registered", lambda group: {})
    assert set(cli._available_commands()) == set(cli.BUILTIN_COMMANDS)
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "score" in out and "gui" not in out.split("options:")[0].split("COMMAND")[-1]


def test_pdf_export_without_a_registered_writer_says_so(monkeypatch, tmp_path, capsys):
    from fetaliqa_core import cli, plugins

    monkeypatch.setattr(plugins, "registered", lambda group: {})
    code = cli.main(["review", "export", "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "r.pdf")])
    assert code != 0
    err = capsys.readouterr().err
    assert "PDF export" in err and ".html" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.pdf").exists()


def test_the_window_opens_before_torch_is_imported():
    """The viewer's modules pulled in torch (through the engine's constants from the segmenter),
    1.6-3.8 s before the window could first paint; torch is needed only once models load."""
    import subprocess
    import sys

    code = ("import sys, app.main_window, app.cli, fetaliqa_core.engine, fetaliqa_core.analysis.assessment; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_sources_compile_without_warnings():
    """Every Python file of the project compiles without a warning: an invalid escape in a docstring
    is silent on Python 3.11 but printed to the user on every command by 3.12 (a SyntaxWarning
    seen on the GPU machines' Python 3.12 before this test)."""
    import warnings

    root = CORE.parent
    noisy = []
    for folder in ("fetaliqa_core", "app", "training", "scripts", "tests"):
        for path in sorted((root / folder).rglob("*.py")):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                compile(path.read_text(encoding="utf-8"), str(path), "exec")
            noisy += [f"{path.relative_to(root)}:{w.lineno}: {w.message}" for w in caught]
    assert not noisy, "\n".join(noisy)
