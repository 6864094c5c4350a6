import subprocess
import sys

from fetaliqa_core.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "COMMAND" in out


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "fetaliqa_core.cli", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("fetaliqa ")
