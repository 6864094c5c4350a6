"""``fetaliqa score`` with bad inputs and bad outputs: each bad folder member reported in its
row while the others are scored, inputs checked before models load, output errors named by
their cause, SIGTERM handled like Ctrl-C, an unwritable cache never stops scoring."""

from __future__ import annotations

import csv
import errno
import gzip
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fetaliqa_core.cli import main
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.io import write_volume

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from fetaliqa_core.synth import synthesize_case

    c = synthesize_case(seed=4, n_sweeps=1, frames_per_sweep=6, height=96, width=128)
    path = tmp_path_factory.mktemp("hostile_case") / "case.mha"
    write_volume(path, c.frames, spacing_mm=(0.28, 0.28))
    return path


def _bad_members(folder: Path) -> dict[str, str]:
    """Several kinds of bad member -> a word its failure row must contain."""
    (folder / "text.mha").write_text("patient notes, not an image\n")
    (folder / "empty.nrrd").write_bytes(b"")
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 128 96 6\nElementType = MET_UCHAR\n"
              "ElementDataFile = LOCAL\n")
    (folder / "truncated.mha").write_bytes(header.encode() + bytes(1000))
    (folder / "strip.mha").write_bytes(header.replace("128 96 6", "20000 32 2").encode() + bytes(20000 * 32 * 2))
    hdr = bytearray(352)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, 1024, 1024, 4096, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 2, 8)
    struct.pack_into("<f", hdr, 108, 352.0)
    hdr[344:348] = b"n+1\0"
    (folder / "claims4gib.nii.gz").write_bytes(gzip.compress(bytes(hdr)))
    return {"text.mha": "not a MetaImage", "empty.nrrd": "empty", "truncated.mha": "truncated",
            "strip.mha": "20000", "claims4gib.nii.gz": "claims4gib"}


def test_score_folder_reports_each_kind_of_bad_member_in_its_row_and_scores_the_others(
        case, tiny_bundle_dirs, tmp_path, capsys):
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "good.mha").write_bytes(case.read_bytes())
    bad = _bad_members(folder)
    out = tmp_path / "out"
    rc = main(["score", str(folder), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"scored 1 of {len(bad) + 1} sweeps" in captured.out
    assert (out / "good" / "frames.csv").is_file()
    rows = {r["file"]: r for r in csv.DictReader((out / "summary.csv").open(encoding="utf-8"))}
    assert rows["good.mha"]["status"] == "ok" and rows["good.mha"]["error"] == ""
    for name, word in bad.items():
        assert rows[name]["status"] == "failed", name  # the status words of export.STATUSES
        assert word.lower() in rows[name]["error"].lower(), (name, rows[name]["error"])


def test_score_reports_a_bad_sweep_before_loading_any_model(tmp_path, monkeypatch, capsys):
    from fetaliqa_core.models import choice

    def no_models(*_a, **_k):
        raise AssertionError("models were loaded before the sweep was checked")

    monkeypatch.setattr(choice, "load_models", no_models)
    bad = tmp_path / "bad.mha"
    bad.write_text("not an image")
    assert main(["score", str(bad), "--quiet", "--out", str(tmp_path / "o")]) == 1
    assert "bad.mha" in capsys.readouterr().err


def test_score_out_that_is_an_existing_file_gives_one_line(case, tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    assert main(["score", str(case), "--out", str(target), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "existing file" in err and target.read_text() == "keep me"


def test_score_out_below_a_file_gives_one_line(case, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["score", str(case), "--out", str(tmp_path / "afile" / "sub"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err


def test_results_never_replace_the_sweep_being_scored(case, tiny_bundle_dirs, tmp_path, capsys):
    """`score DIR/fetal-abdomen-segmentation.mha --out DIR --challenge-output` replaced the sweep
    with its own 1.5 KB answer and exited 0. Refused before scoring, the sweep untouched; and the
    writer itself never replaces (nor drops) the file being read. (The answer's mask now goes in
    the challenge's layout, images/fetal-abdomen-segmentation/: a sweep there is the one in its way.)"""
    import shutil

    from fetaliqa_core.files import atomic_output_dir

    folder = tmp_path / "case"
    where = folder / "images" / "fetal-abdomen-segmentation"
    where.mkdir(parents=True)
    sweep = where / "fetal-abdomen-segmentation.mha"
    sweep.write_bytes(case.read_bytes())
    before = sweep.read_bytes()
    rc = main(["score", str(sweep), "--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]),
               "--out", str(folder), "--challenge-output", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "would replace this sweep itself" in err
    assert sweep.read_bytes() == before and sorted(p.name for p in folder.rglob("*")) == [
        "fetal-abdomen-segmentation", sweep.name, "images"]
    with pytest.raises(FetalIQAError, match="is the file being read"):  # the writer itself, in a subfolder
        with atomic_output_dir(folder, protect=(sweep,)) as tmp:
            (tmp / "images" / "fetal-abdomen-segmentation").mkdir(parents=True)
            (tmp / "images" / "fetal-abdomen-segmentation" / sweep.name).write_text("an answer")
    assert sweep.read_bytes() == before
    sweep = sweep.rename(folder / sweep.name)
    shutil.rmtree(folder / "images")
    # without --challenge-output nothing would go over it: scored
    assert main(["score", str(sweep), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(folder), "--quiet"]) == 0
    assert sweep.read_bytes() == before and (folder / "summary.json").is_file()
    with pytest.raises(FetalIQAError, match="is the file being read"):
        with atomic_output_dir(folder, protect=(sweep,)) as tmp:
            (tmp / sweep.name).write_text("an answer")
    with pytest.raises(FetalIQAError, match="is the file being read"):
        with atomic_output_dir(folder, drop=(sweep.name,), protect=(sweep,)) as tmp:
            (tmp / "frames.csv").write_text("frame")
    assert sweep.read_bytes() == before


def test_a_sweep_named_near_the_length_limit_is_scored_into_its_folder(case, tiny_bundle_dirs, tmp_path, capsys):
    """A 250-byte file name (legal) was scored, then its results failed to be written: the
    temporary folder's name ('.' + the name + 9 characters) went past the 255-byte limit."""
    long = tmp_path / ("a" * 246 + ".mha")
    long.write_bytes(case.read_bytes())
    rc = main(["score", str(long), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(tmp_path / ("b" * 250)),
               "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / ("b" * 250) / "summary.json").is_file()


@pytest.mark.parametrize("code,cause", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permission denied")])
def test_score_output_write_failure_names_its_cause(case, tiny_bundle_dirs, tmp_path, monkeypatch, capsys,
                                                    code, cause):
    from fetaliqa_core import export

    def failing(out, *a, **k):
        raise OSError(code, os.strerror(code), str(out))

    monkeypatch.setattr(export, "write_scores", failing)
    rc = main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(tmp_path / "o"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and cause in err and "Traceback" not in err


@pytest.mark.parametrize("no_cache", [True, False])
def test_score_with_an_unwritable_cache_folder_still_scores(case, tiny_bundle_dirs, tmp_path, monkeypatch, capsys,
                                                            no_cache):
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").write_text("a file where the cache folder should be")  # unwritable, even for root
    monkeypatch.setenv("FETALIQA_HOME", str(home))
    out = tmp_path / "o"
    argv = ["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"]
    assert main(argv + (["--no-cache"] if no_cache else [])) == 0
    assert (out / "summary.json").is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_base_weights_hash_is_computed_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    from fetaliqa_core.models.base import file_sha256

    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").write_text("not a folder")
    monkeypatch.setenv("FETALIQA_HOME", str(home))
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sigterm_behaves_like_ctrl_c(tmp_path):
    """The command-line dispatcher turns SIGTERM into the KeyboardInterrupt Ctrl-C raises."""
    code = ("import sys, time\nfrom fetaliqa_core.cli import terminate_as_interrupt\nterminate_as_interrupt()\n"
            "try:\n    print('ready', flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            "    print('interrupted', flush=True)\n    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in out


def test_sigterm_during_score_of_a_folder_exits_130_and_keeps_finished_sweeps(case, tiny_bundle_dirs, tmp_path):
    from fetaliqa_core.synth import synthesize_case

    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "a.mha").write_bytes(case.read_bytes())
    long = synthesize_case(seed=5, n_sweeps=1, frames_per_sweep=400, height=96, width=128)
    write_volume(folder / "b.mha", long.frames, spacing_mm=(0.28, 0.28))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fetaliqa_core.cli", "score", str(folder), "--cls",
                             str(tiny_bundle_dirs["cls"]), "--out", str(out), "--no-cache"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", cwd=ROOT, env=env)
    deadline = time.monotonic() + 240
    while not (out / "a" / "summary.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert (out / "a" / "frames.csv").is_file() and not (out / "b").exists()


@pytest.mark.parametrize("code,cause", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"),
                                        (errno.ENOTDIR, "not a folder")])
def test_review_export_failure_names_its_cause(tmp_path, monkeypatch, capsys, code, cause):
    from fetaliqa_core.review import report
    from fetaliqa_core.review.store import ReviewStore

    with ReviewStore(tmp_path / "r.sqlite3") as store:
        sid = store.add_sweep("abc", "/x.mha", 4)
        store.record_verdict(sid, 1, "A", "optimal")

    def failing(path, data, *a, **k):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(report, "atomic_write", failing)
    for action, name in (("export", "report.csv"), ("labels", "labels.csv")):
        rc = main(["review", action, "--db", str(tmp_path / "r.sqlite3"), "--out", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1 and cause in err and name in err, err


def test_a_file_name_cannot_write_lines_or_codes_on_the_terminal(tmp_path, capsys):
    """A file named 'x\\n  sweep 1 (transverse): best frame 3 ... AC 301.0 mm' printed a forged
    result line; an escape sequence in a name hid the error or cleared the screen."""
    from fetaliqa_core.cli import main

    forged = "bad\n  sweep 1 (transverse): best frame 3 (score 0.99), AC 301.0 mm, GA 33w 2d\x1b[2J.mha"
    path = tmp_path / forged
    path.write_bytes(b"not an image")
    assert main(["score", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err
    assert "bad\\n  sweep 1" in err and "\\x1b[2J" in err


def test_an_output_path_that_is_not_text_is_a_wrong_command_line(tmp_path, capsys):
    """A non-UTF-8 --out: the image writer aborted the process (SIGABRT) after the scoring, and
    left a half-written folder behind."""
    import os

    from fetaliqa_core.cli import main
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.io import write_volume

    bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff\xfename")
    with pytest.raises(SystemExit) as usage:
        main(["score", str(tmp_path / "any.mha"), "--out", bad])
    assert usage.value.code == 2 and "not UTF-8 text" in capsys.readouterr().err
    with pytest.raises(FetalIQAError, match="not UTF-8 text"):
        write_volume(os.path.join(bad, "x.mha"), np.zeros((2, 8, 8), np.uint8))
    assert not os.path.exists(bad)


def test_a_name_that_is_not_utf8_is_printed_escaped_where_the_terminal_takes_only_utf8():
    """With a strict UTF-8 stdout (PYTHONIOENCODING=utf-8) printing such a file name in the
    folder's table ended the run in a traceback."""
    import io

    from fetaliqa_core.cli import _ClosedPipeTolerant

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    out = _ClosedPipeTolerant(stream)
    out.write("bad\udcff.mha  failed\n")
    out.flush()
    assert raw.getvalue() == b"bad\\xff.mha  failed\n"
    # a stream in another encoding (PYTHONIOENCODING=ascii): a valid name it cannot show ended the
    # run in a traceback from this very fallback
    raw = io.BytesIO()
    out = _ClosedPipeTolerant(io.TextIOWrapper(raw, encoding="ascii", errors="strict"))
    out.write("\u4e2d\u6587\u00e9.mha  failed\n")
    out.flush()
    assert raw.getvalue() == b"\\u4e2d\\u6587\\xe9.mha  failed\n"


def test_a_link_that_loops_as_a_bundle_or_an_archive_results_folder_gives_one_line(case, tiny_bundle_dirs,
                                                                                     tmp_path, capsys):
    """--cls / --seg / --archive --out naming a link that leads back to itself ended in "RuntimeError:
    Symlink loop" (resolving it), where --base and a sweep's --out said so in one line."""
    cls, seg = tiny_bundle_dirs["cls"], tiny_bundle_dirs["seg"]
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    demo = Path(__file__).resolve().parents[1] / "resources" / "demo"
    for option in (["--cls", str(loop), "--seg", str(seg)], ["--cls", str(cls), "--seg", str(loop)],
                   ["--cls", str(demo / "cls"), "--seg", str(demo / "seg"), "--base", str(loop)]):  # ("does not exist")
        assert main(["score", str(case), *option, "--out", str(tmp_path / "out"), "--quiet"]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "leads back to itself" in err and str(loop) in err, err
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / case.name).write_bytes(case.read_bytes())
    assert main(["score", str(folder), "--archive", "--out", str(loop), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "link to nothing" in err and str(loop) in err, err


def test_a_model_choice_naming_a_link_that_loops_is_described_without_a_traceback(tmp_path):
    """The label of a choice whose classifier and segmenter are one folder compared the two paths
    resolved, and a link that loops raised "Symlink loop" there (the status bar's label is made
    before any model loads): the paths are compared as the loading compares them."""
    from fetaliqa_core.models.choice import ModelChoice

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert ModelChoice(model=None, cls=loop, seg=loop).describe() == "classifier loop, segmenter loop"


def test_a_results_folder_inside_a_link_that_loops_gives_one_line(case, tmp_path, capsys):
    """--out under a link that leads back to itself: the archive ended in "RuntimeError: Symlink
    loop", a sweep or a folder of sweeps said "a file of that name exists"; each names the link."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / case.name).write_bytes(case.read_bytes())
    for args in ([str(case), "--out", str(loop / "sub")], [str(folder), "--archive", "--out", str(loop / "sub")],
                 [str(folder), "--out", str(loop)], [str(folder), "--out", str(loop / "sub")]):
        assert main(["score", *args, "--quiet"]) != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{loop} is a link to nothing" in err, (args, err)


def test_a_full_disk_names_the_folder_being_written(case, tiny_bundle_dirs, tmp_path, monkeypatch, capsys):
    """A write that fails on a full disk names no file ("the disk is full; free disk space or write
    elsewhere." alone): the results folder being written is named."""
    from fetaliqa_core import export

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() on an open file raises it

    monkeypatch.setattr(export, "write_frames_csv", full)
    out = tmp_path / "o"
    rc = main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "disk is full" in err and str(out) in err, err


def test_a_utf8_name_read_under_an_ascii_locale_blames_the_setting_not_the_name(monkeypatch):
    """Under LC_ALL=C with PYTHONUTF8=0 a name such as "fötal.mha", valid UTF-8 on disk, was
    refused as "not valid UTF-8 text (made by another system's encoding) ... Rename the file"."""
    from fetaliqa_core.validate import check_path_name

    monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "ascii")
    read_as_ascii = "f\xc3\xb6tal.mha".encode("latin-1").decode("ascii", "surrogateescape")
    with pytest.raises(FetalIQAError, match="PYTHONUTF8=1") as refused:
        check_path_name(Path(read_as_ascii))
    assert "Rename" not in str(refused.value)
    # bytes that are UTF-8 in no locale are still the name's fault
    with pytest.raises(FetalIQAError, match="Rename"):
        check_path_name(Path(b"bad\xff\xfe.mha".decode("ascii", "surrogateescape")))


def test_model_libraries_that_cannot_be_mapped_for_lack_of_memory_are_one_line(tmp_path, case):
    """Under `ulimit -v 2000000`, `fetaliqa score good.mha` gave a 27-line traceback ending in
    "ImportError: libtorch_cpu.so: failed to map segment from shared object"."""
    import resource

    from fetaliqa_core.cli import run_guarded

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (2_000_000 * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "fetaliqa_core.cli", "score", str(case), "--out", str(tmp_path / "o"),
                           "--quiet", "--no-cache"], capture_output=True, text=True, encoding="utf-8", errors="replace",
                          cwd=ROOT, env=env, preexec_fn=limited, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "out of memory: the model libraries" in lines[0] and "ulimit -v" in lines[0]
    # the loader's own wording, as an ImportError or an OSError, is told the same way
    for exc in (ImportError("libtorch_cpu.so: failed to map segment from shared object"),
                OSError(12, "libc10.so: cannot allocate memory")):
        def fail(exc=exc):
            raise exc
        assert run_guarded(fail) == 1
    with pytest.raises(ImportError):  # any other failed import is no memory problem
        run_guarded(lambda: __import__("no_such_module_here"))


def test_score_under_an_address_space_limit_loads_the_model_libraries_before_the_sweep(case, tmp_path, monkeypatch):
    """Under `ulimit -v 10000000` a 7.9 GB sweep passed the memory check (which leaves 256 MB of
    the limit), was read over 137 s, then the model libraries (3 GB of address space) could not be
    loaded: loaded first, they are counted by the check, and a limit too small is said at once."""
    import resource

    from fetaliqa_core import io as fio
    from fetaliqa_core.cli import score

    order = []
    monkeypatch.setattr(score, "_import_model_libraries", lambda: order.append("libraries"), raising=False)
    real = fio.load_sweep
    monkeypatch.setattr(fio, "load_sweep", lambda *a, **k: order.append("sweep") or real(*a, **k))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (10_000_000 * 1024, resource.RLIM_INFINITY))
    assert main(["score", str(case), "--out", str(tmp_path / "limited"), "--quiet", "--no-cache"]) == 0
    assert order[:2] == ["libraries", "sweep"]
    order.clear()
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert main(["score", str(case), "--out", str(tmp_path / "free"), "--quiet", "--no-cache"]) == 0
    assert order[:1] == ["sweep"] and "libraries" not in order


def test_a_results_folder_that_takes_no_data_is_refused_before_the_frames_are_scored(case, tmp_path):
    """On a full disk, `score --out` scored every frame (104 s) before its first write said the
    disk is full: an empty probe file takes no block, so the folder passed the check. The probe
    now writes data. Here a file size limit (ulimit -f 16 KB) stands in for the full disk: the
    refusal comes before any model is loaded."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    code = ("import sys; from fetaliqa_core.cli import main; rc = main(sys.argv[1:]); "
            "print('torch loaded' if 'torch' in sys.modules else 'no model loaded'); raise SystemExit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "score", str(case), "--out", str(tmp_path / "o"), "--quiet",
                           "--no-cache"], capture_output=True, text=True, encoding="utf-8", errors="replace", cwd=ROOT,
                          env=env, preexec_fn=limited, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing can be written in" in lines[0] and "file size limit" in lines[0], lines
    assert proc.stdout.strip() == "no model loaded"
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".fetaliqa-probe-*"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize("limit_kb", [3_250_000, 3_900_000])
def test_a_limit_just_short_of_the_model_libraries_is_one_line_not_an_abort(case, tmp_path, limit_kb):
    """Under `ulimit -v 3250000` PyTorch's loader aborted the process ("terminate called after
    throwing an instance of 'std::bad_alloc'", status 134) as it mapped its libraries; a little
    more (3.6-4.2 GB) and the models ran out while loading, told "close other programs". What the
    limit leaves is now compared with what the libraries take before they are loaded."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_kb * 1024, resource.getrlimit(resource.RLIMIT_AS)[1]))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "fetaliqa_core.cli", "score", str(case), "--out", str(tmp_path / "o"),
                           "--quiet", "--no-cache"], capture_output=True, text=True, encoding="utf-8", errors="replace",
                          cwd=ROOT, env=env, preexec_fn=limited, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ulimit -v" in lines[0] and "close other programs" not in lines[0], lines


def test_running_out_under_an_address_space_limit_names_the_limit(monkeypatch, capsys):
    """A MemoryError while the models loaded under `ulimit -v` said "Close other programs", which
    would not help; without a limit the machine's advice stays."""
    from fetaliqa_core import validate
    from fetaliqa_core.cli import OUT_OF_MEMORY, run_guarded

    def fail():
        raise MemoryError

    monkeypatch.setattr(validate, "address_space_left", lambda: 100 << 20)
    assert run_guarded(fail) == 1
    err = capsys.readouterr().err
    assert "ulimit -v" in err and "close other programs" not in err.lower()
    monkeypatch.setattr(validate, "address_space_left", lambda: None)
    assert run_guarded(fail) == 1
    assert capsys.readouterr().err.strip() == OUT_OF_MEMORY
