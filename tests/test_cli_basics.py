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
    # options before the command: the viewer's usage said "fetaliqa gui: unrecognized arguments: x"
    with pytest.raises(SystemExit) as done:
        main(["--device", "cpu", "score", "x"])
    assert done.value.code == 2
    assert capsys.readouterr().err == "fetaliqa: options go after the command: fetaliqa score --device cpu x\n"
    # a command's name as an option's value is that value (--save-scores into ./review)
    assert main(["--save-scores", "review", "missing.mha"]) == 1
    assert "missing.mha: no such file" in capsys.readouterr().err
    # a file to open still goes to the viewer, which says it is missing
    assert main(["missing.mha"]) == 1
    assert "missing.mha: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # as --help
        main(["help"])
    assert done.value.code == 0 and "COMMAND" in capsys.readouterr().out


def test_sigterm_after_a_command_ended_exits_with_that_commands_status():
    """SIGTERM arriving while the interpreter shut down killed a finished run (status 143 after
    'scored 3 of 3 sweeps' was printed): once the command has ended, it ends the process with the
    command's own status."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = ("import atexit, sys, time\n"
            "from fetaliqa_core.cli import end_with_on_terminate\n"
            "atexit.register(lambda: time.sleep(20))  # a shutdown that takes its time\n"
            "end_with_on_terminate(3)\n"
            "print('done', flush=True)\n"
            "raise SystemExit(3)\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "done"
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 3
    assert "Traceback" not in p.stderr.read()


def test_a_reader_that_closes_the_output_does_not_fail_the_command(tmp_path):
    """`fetaliqa ... | head -1`: the closed pipe was reported as 'Broken pipe; check the path and
    try again', with status 1, and a folder's sweeps after it were recorded as failed."""
    import subprocess
    import sys
    from pathlib import Path

    from fetaliqa_core.synth import write_dataset

    write_dataset(tmp_path / "d", cases=2, seed=3, frames_per_sweep=3, height=64, width=80)
    folder = tmp_path / "d" / "images" / "stacked_fetal_ultrasound"
    out = tmp_path / "scores"
    p = subprocess.Popen([sys.executable, "-m", "fetaliqa_core.cli", "score", str(folder), "--out", str(out),
                          "--quiet", "--no-cache"], cwd=Path(__file__).resolve().parents[1],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.readline()
    p.stdout.close()  # as `| head -1` does
    err = p.stderr.read()
    assert p.wait(timeout=300) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err
    assert (out / "summary.csv").is_file() and len(list(out.glob("*/summary.json"))) == 2


def test_a_mistyped_option_is_told_with_the_option_meant(capsys):
    """'score x.mha --thresold 0.5' got "unrecognized arguments" without a suggestion (a mistyped
    command gets one), and 'score --treshold 0.5 x.mha' blamed "x.mha" (0.5 was taken for the sweep)."""
    import pytest

    for argv in (["score", "x.mha", "--thresold", "0.5"], ["score", "--treshold", "0.5", "x.mha"],
                 ["score", "x.mha", "--thresold=0.5"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert err.rstrip().endswith("unknown option " + argv[2 if argv[1] == "x.mha" else 1].split("=")[0]
                                     + " (did you mean --threshold?)"), err
        assert "x.mha" not in err.splitlines()[-1]


def test_review_without_an_action_says_which_actions_there_are(capsys):
    """'fetaliqa review' printed only a usage fragment, 'usage: fetaliqa review {export,...} --help',
    saying neither that an action is needed nor what each does."""
    assert main(["review"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "say what to do" in err, err
    assert all(f"{action} (" in err for action in ("export", "labels", "history", "list")), err
