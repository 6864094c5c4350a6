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


def test_a_mistyped_command_is_told_as_one(capsys, tmp_path, monkeypatch):
    """'fetaliqa scor' answered 'scor: no such file or folder' (a file to open in the viewer),
    and 'fetaliqa scor SWEEP' with the viewer's usage."""
    import pytest

    monkeypatch.chdir(tmp_path)
    for argv in (["scor"], ["scor", "case.mha"], ["sythn", "--out", "x"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert f"unknown command '{argv[0]}'" in err and "did you mean" in err and err.count("\n") == 1
    # a file to open still goes to the viewer, which says it is missing
    assert main(["missing.mha"]) == 1
    assert "missing.mha: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # as --help
        main(["help"])
    assert done.value.code == 0 and "COMMAND" in capsys.readouterr().out
