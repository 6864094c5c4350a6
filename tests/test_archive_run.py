"""Archive scoring end to end with the demo model: one process, and two gloo processes under
torchrun with one of them killed (SIGKILL) mid-run and a rerun that completes the archive."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fetaliqa_core import archive as ar
from fetaliqa_core.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory):
    from fetaliqa_core.acouslic import IMAGES_SUBDIR
    from fetaliqa_core.synth import write_dataset

    root = tmp_path_factory.mktemp("archive")
    write_dataset(root, cases=4, seed=11, n_sweeps=2, frames_per_sweep=3, height=64, width=96)
    return root / IMAGES_SUBDIR


def _table(out: Path) -> list[dict]:
    with open(out / ar.TABLE_FILE, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _results(out: Path) -> list[dict]:
    """The combined table without the columns that say when and where a case ran."""
    return [{k: v for k, v in row.items() if k not in ar.RUN_COLUMNS} for row in _table(out)]


@pytest.fixture(scope="module")
def reference(archive_dir, tmp_path_factory):
    """The archive scored by one process without torchrun, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "out"
    rc = main(["score", str(archive_dir), "--archive", "--out", str(out), "--no-cache", "--quiet",
               "--challenge-output"])
    assert rc == 0
    return out


def _tree(out: Path) -> dict[str, bytes]:
    """Every file of the challenge output tree, by its path in the tree."""
    root = out / ar.CHALLENGE_DIR
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_one_process_archive_then_a_rerun_skips_everything(archive_dir, reference, capsys):
    rows = _table(reference)
    members = sorted(p.name for p in archive_dir.iterdir())
    assert [r["file"] for r in rows] == members
    assert {r["status"] for r in rows} == {"ok"}
    for row in rows:
        folder = ar.case_dir(reference, row["case"])
        assert {"frames.csv", "summary.json", ar.RECORD_FILE} <= {p.name for p in folder.iterdir()}
        summary = json.loads((folder / "summary.json").read_text())
        assert int(row["chosen_frame"]) == summary["chosen_frame"]
        assert row["content_hash"] == summary["content_hash"] and int(row["n_frames"]) == 6
        assert row["cls_hash"] and row["seg_hash"] and row["base_hash"] and row["file_hash"]
        assert "demo model" in row["models"] and row["device"] == "cpu"
        assert "not for clinical use" in row["notice"]  # on each row, as summary.csv has it
        assert row["precision"] in ("fp32", "bf16")
        if row["ac_mm"]:
            assert int(row["chosen_frame"]) >= 0 and float(row["ac_mm"]) > 0
            # GA only for an AC inside Hadlock's range (a doubtful AC gets none)
            assert bool(row["ga_weeks"]) == (summary["chosen_ac"]["ga_weeks"] is not None)
            # the table says whether the AC is one to act on, as summary.json does
            assert row["ac_status"] == summary["chosen_ac"]["status"] in ("ok", "doubtful")
    # --challenge-output: every case's two files in the challenge's output layout, as the case
    # folder holds them, and predictions.json listing the cases as the organisers' evaluator reads it
    tree = _tree(reference)
    jobs = json.loads(tree.pop(ar.PREDICTIONS_FILE))
    assert [(j["pk"], j["inputs"][0]["image"]["name"]) for j in jobs] == [(r["case"], r["file"]) for r in rows]
    for row in rows:
        folder = ar.case_dir(reference, row["case"])
        frame = tree.pop(f"{row['case']}/output/fetal-abdomen-frame-number.json")
        assert frame == (folder / "fetal-abdomen-frame-number.json").read_bytes() and int(json.loads(frame)) >= -1
        mask = tree.pop(f"{row['case']}/output/images/fetal-abdomen-segmentation/fetal-abdomen-segmentation.mha")
        assert mask == (folder / "fetal-abdomen-segmentation.mha").read_bytes()
    assert tree == {}
    before = {r["case"]: r["finished_utc"] for r in rows}
    tree = _tree(reference)
    import shutil

    # a rerun scores nothing and rebuilds the tree from the case folders (a lost case, a foreign one gone)
    shutil.rmtree(reference / ar.CHALLENGE_DIR / rows[0]["case"])
    (reference / ar.CHALLENGE_DIR / "not-a-case").mkdir()
    capsys.readouterr()
    assert main(["score", str(archive_dir), "--archive", "--out", str(reference), "--no-cache", "--quiet",
                 "--challenge-output"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already scored with these models, skipped") == 4
    assert f"challenge output: 4 case(s) in {reference / ar.CHALLENGE_DIR}" in printed
    assert {r["case"]: r["finished_utc"] for r in _table(reference)} == before
    assert _tree(reference) == tree


def test_a_bad_member_gets_a_failed_row_and_the_rest_is_scored(archive_dir, reference, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    first = sorted(archive_dir.iterdir())[0]
    (folder / first.name).write_bytes(first.read_bytes())
    (folder / "broken.mha").write_text("this is not an image\n")
    out = tmp_path / "out"
    rc = main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet", "--challenge-output"])
    assert rc == 1
    rows = {r["file"]: r for r in _table(out)}
    # the challenge output holds the answers there are: none is made up for the failed case
    jobs = json.loads((out / ar.CHALLENGE_DIR / ar.PREDICTIONS_FILE).read_text())
    assert [j["inputs"][0]["image"]["name"] for j in jobs] == [first.name]
    captured = capsys.readouterr()
    assert "1 without an answer" in captured.out and "broken.mha" in captured.err
    assert rows["broken.mha"]["status"] == "failed" and "broken.mha" in rows["broken.mha"]["error"]
    assert rows[first.name]["status"] == "ok"
    # the good case's results are those of the whole-archive run
    ref = {r["file"]: r for r in _results(reference)}
    assert {k: v for k, v in rows[first.name].items() if k not in ar.RUN_COLUMNS} == ref[first.name]


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _worker_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"fetaliqa_core.cli" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def _torchrun(archive_dir: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fetaliqa_core.cli", "score", str(archive_dir), "--out", str(out), "--no-cache",
           "--device", "cpu", "--rank-timeout", "60", "--challenge-output"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finished(out: Path, rank: int) -> list[str]:
    root = out / ar.CASES_DIR
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir()
            if not p.name.startswith(".") and (ar.read_record(p) or {}).get("rank") == rank]


@pytest.mark.slow
def test_torchrun_two_ranks_killed_mid_run_then_rerun_completes(archive_dir, reference, tmp_path):
    out = tmp_path / "out"
    proc = _torchrun(archive_dir, out)
    try:
        deadline = time.monotonic() + 120
        while not _finished(out, 1):  # rank 1 has its first case done, and is on its second
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "rank 1 finished no case in time"
            time.sleep(0.02)
        victim = _worker_pid(proc.pid, rank=1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        log = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, log[-3000:]
    names = [r["case"] for r in _table(reference)]
    done = sorted(p.name for p in (out / ar.CASES_DIR).iterdir() if not p.name.startswith("."))
    assert set(_finished(out, 1)) == {names[1]}  # rank 1 lost only the case it was scoring
    assert names[3] not in done
    records = {n: (ar.case_dir(out, n) / ar.RECORD_FILE).read_text() for n in done}
    killed_state = {p.name for p in (out / ar.STATE_DIR).iterdir()} if (out / ar.STATE_DIR).is_dir() else set()

    proc = _torchrun(archive_dir, out)
    log = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, log[-3000:]
    assert log.count("already scored with these models, skipped") == len(done)
    assert f"archive {out}: 4 cases, 4 ok" in log and log.count("table: ") == 1
    # finished cases were kept as they were, the rest scored, no temporary folder left
    assert {n: (ar.case_dir(out, n) / ar.RECORD_FILE).read_text() for n in done} == records
    assert sorted(p.name for p in (out / ar.CASES_DIR).iterdir()) == sorted(names)
    # the rerun's own heartbeats are gone; the killed run's stay until they are hours old (another
    # launch on the same --out may be running: its heartbeats must not be taken away)
    assert not (out / ar.STATE_DIR).exists() or {p.name for p in (out / ar.STATE_DIR).iterdir()} <= killed_state
    rows = _table(out)
    assert [r["rank"] for r in rows] == ["0", "1", "0", "1"]  # index modulo the world size
    assert _results(out) == _results(reference)  # identical to one uninterrupted process
    assert _tree(out) == _tree(reference)  # rank 0 gathered every case's challenge answer


def _write_dicom_series(folder: Path, frames, spacing_mm: float) -> None:
    """One DICOM file per frame, written in reverse order: the reader sorts them by position."""
    import SimpleITK as sitk

    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in reversed(range(len(frames))):
        img = sitk.GetImageFromArray(frames[k])
        img.SetSpacing((spacing_mm, spacing_mm))
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1.42"), ("0020|0013", str(k + 1)),
                           ("0020|0032", f"0\\0\\{float(k)}"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0008|0060", "US")):
            img.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"im{k}.dcm"))
        writer.Execute(img)


def test_a_dicom_series_folder_is_one_case_and_its_key_covers_all_its_files(archive_dir, tmp_path, capsys):
    import numpy as np

    from fetaliqa_core.cli.score import sweep_folder_members
    from fetaliqa_core.io import load_sweep

    first = sorted(archive_dir.iterdir())[0]
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / first.name).write_bytes(first.read_bytes())
    sweep = load_sweep(first)
    frames = np.asarray(sweep.frames[:3])
    _write_dicom_series(folder / "series01", frames, sweep.spacing_mm[0])
    (folder / "notes").mkdir()  # a folder without DICOM files is no sweep
    (folder / "notes" / "read-me.txt").write_text("not a sweep")
    assert sweep_folder_members(folder) == [folder / first.name, folder / "series01"]  # as plain `score FOLDER`
    assert sweep_folder_members(folder / "series01") is None  # the series itself is one sweep
    out = tmp_path / "out"
    args = ["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]
    assert main(args) == 0
    rows = {r["file"]: r for r in _table(out)}
    assert list(rows) == [first.name, "series01"] and rows["series01"]["status"] == "ok"
    assert int(rows["series01"]["n_frames"]) == 3 and rows["series01"]["file_hash"]
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.count("already scored with these models, skipped") == 2
    # one frame of the series changed: that case alone is scored again
    (folder / "series01" / "im1.dcm").unlink()
    _write_dicom_series(tmp_path / "other", 255 - frames, sweep.spacing_mm[0])
    (tmp_path / "other" / "im1.dcm").rename(folder / "series01" / "im1.dcm")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("already scored with these models, skipped") == 1 and "series01: chosen frame" in printed
    assert _table(out)[1]["file_hash"] != rows["series01"]["file_hash"]


def test_an_output_that_cannot_be_written_is_one_line_before_any_model(archive_dir, tmp_path, capsys,
                                                                          monkeypatch):
    from fetaliqa_core.models import choice

    def no_models(*a, **k):
        raise AssertionError("models loaded before the output folder was checked")

    monkeypatch.setattr(choice, "load_models", no_models)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = main(["score", str(archive_dir), "--archive", "--out", str(blocker / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "cannot write results" in err[0] and "--out" in err[0]
    assert blocker.read_text() == "not a folder"


def test_entries_named_like_sweeps_that_are_no_files_fail_in_their_own_rows(archive_dir, tmp_path, capsys):
    """A broken link, a pipe and a folder named like sweep files are members of the archive that
    fail with the reason, not entries left out without a word; the good sweep is scored."""
    import os

    first = sorted(archive_dir.iterdir())[0]
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / first.name).write_bytes(first.read_bytes())
    (folder / "gone.mha").symlink_to(folder / "nowhere.mha")
    (folder / "box.mha").mkdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.mha")
    out = tmp_path / "out"
    rc = main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"])
    rows = {r["file"]: r for r in _table(out)}
    assert rc != 0 and rows[first.name]["status"] == "ok"
    odd = ["box.mha", "gone.mha"] + (["pipe.mha"] if hasattr(os, "mkfifo") else [])
    for name in odd:
        assert rows[name]["status"] == "failed" and rows[name]["error"], rows[name]
    capsys.readouterr()


def test_an_ac_not_shown_for_want_of_a_spacing_says_so_in_the_table(tmp_path, capsys):
    """cases.csv left ac_status empty where summary.json said "no units", and the progress line
    said nothing of the AC: a reader of the table could not tell "no AC" from "no spacing"."""
    from fetaliqa_core.io import write_volume
    from fetaliqa_core.synth import synthesize_case

    folder = tmp_path / "archive"
    folder.mkdir()
    case = synthesize_case(seed=2, n_sweeps=1, frames_per_sweep=24, height=281, width=372)
    write_volume(folder / "nospacing.mha", case.frames, spacing_mm=(1.0, 1.0))  # 1 x 1: the writers' default
    out = tmp_path / "scores"
    assert main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--challenge-output"]) == 0
    text = capsys.readouterr().out
    (row,) = _table(out)
    from fetaliqa_core.io import read_mask_volume

    written = read_mask_volume(ar.case_dir(out, row["case"]) / "fetal-abdomen-segmentation.mha")
    assert written.metadata["FetalIQA_PixelSpacing"].startswith("unknown: pixel spacing unknown")
    assert written.spacing_problem  # its 1 x 1 is read as no length
    summary = json.loads((ar.case_dir(out, row["case"]) / "summary.json").read_text())
    assert int(row["chosen_frame"]) >= 0, "the demo model chose no frame on this case: choose another seed"
    assert summary["chosen_ac"]["status"] == "no units" and summary["spacing_mm"] is None
    assert row["ac_status"] == "no units" and row["ac_mm"] == "" and row["ga_weeks"] == ""
    assert "AC not shown (pixel spacing unknown" in text


def _fresh_archive(tmp_path, n=3):
    import shutil

    from fetaliqa_core.acouslic import IMAGES_SUBDIR
    from fetaliqa_core.synth import write_dataset

    root = tmp_path / "data"
    write_dataset(root, cases=n, seed=11, n_sweeps=2, frames_per_sweep=3, height=64, width=96)
    folder = tmp_path / "archive"
    shutil.move(str(root / IMAGES_SUBDIR), folder)
    return folder


def test_reruns_rescore_what_changed_and_keep_what_a_passing_error_could_not_read(tmp_path, capsys, monkeypatch):
    """Found by scoring archives as several machines would:
    - a rerun with --spacing (or --cascade) skipped every case and kept results made without it;
    - the table called a case "ok" with its old results when its file had changed since and the
      process that should have rescored it never did (a rank that stopped);
    - a file that could not be read for a moment on a rerun had its finished results replaced by
      a failure record;
    - challenge/ kept answers from before when a rerun without --challenge-output rescored."""
    folder = _fresh_archive(tmp_path)
    out = tmp_path / "scores"
    base = ["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]
    assert main(base + ["--challenge-output"]) == 0
    first = {r["case"]: r for r in _table(out)}
    assert {r["status"] for r in first.values()} == {"ok"}
    capsys.readouterr()

    # --spacing is part of what a case was scored with
    assert main(base + ["--spacing", "0.3"]) == 0
    assert "skipped" not in capsys.readouterr().out
    assert all(r["finished_utc"] >= first[r["case"]]["finished_utc"] for r in _table(out))
    # ... and challenge/ was rebuilt from the case folders, which now hold no answer
    assert not any((out / ar.CHALLENGE_DIR).glob("*/output/*.json"))

    # a file changed since it was scored, not rescored: stale, not ok
    members = sorted(folder.iterdir())
    names = [r["case"] for r in _table(out)]
    victim = members[0]
    victim.write_bytes(victim.read_bytes())  # the same bytes, a new modification time ...
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    rows = ar.table_rows(out, names, [m.name for m in members], None, members)
    assert rows[0]["status"] == "stale" and "changed" in rows[0]["error"]
    assert {r["status"] for r in rows[1:]} == {"ok"}
    # ... a rerun finds the same bytes by their hash, skips the case and records its new signature
    assert main(base + ["--spacing", "0.3"]) == 0
    assert {r["status"] for r in _table(out)} == {"ok"}
    assert capsys.readouterr().out.count("skipped") == 3

    # a passing read error keeps the results of the same settings on the unchanged file
    real = ar.file_hash
    monkeypatch.setattr(ar, "file_hash", lambda p: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if p == victim else real(p))
    kept = (ar.case_dir(out, names[0]) / "summary.json").read_bytes()
    assert main(base + ["--spacing", "0.3"]) == 0
    err = capsys.readouterr().err
    assert "could not be read now" in err and "are kept" in err
    assert (ar.case_dir(out, names[0]) / "summary.json").read_bytes() == kept
    assert {r["status"] for r in _table(out)} == {"ok"}
    # ... but not when the bytes hash otherwise (changed in place, size and time kept) and do not read
    monkeypatch.setattr(ar, "file_hash", lambda p: "0" * 32 if p == victim else real(p))
    from fetaliqa_core import io as fio
    from fetaliqa_core.errors import FetalIQAError

    readable = fio.load_sweep

    def unreadable(p, *a, **k):
        if Path(p) == victim:
            raise FetalIQAError(f"{p}: the file is truncated")
        return readable(p, *a, **k)

    monkeypatch.setattr(fio, "load_sweep", unreadable)
    assert main(base + ["--spacing", "0.3"]) == 1
    assert "are kept" not in capsys.readouterr().err
    assert _table(out)[0]["status"] == "failed"


def test_an_interrupted_run_writes_the_table_of_what_it_finished(tmp_path, capsys, monkeypatch):
    """Ctrl-C left the previous run's cases.csv (or none) behind: the cases finished before the
    interruption had no row until the next complete run."""
    from fetaliqa_core.cli import score as score_cmd

    folder = _fresh_archive(tmp_path)
    out = tmp_path / "scores"
    real, calls = score_cmd.score_one, []

    def interrupted_on_the_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(score_cmd, "score_one", interrupted_on_the_second)
    assert main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]) == 130
    assert "interrupted" in capsys.readouterr().err
    rows = _table(out)
    assert [r["status"] for r in rows] == ["ok", "missing", "missing"]

    # scored in full with the challenge's files, then rescored with --spacing and interrupted:
    # challenge/ keeps no answer of a case the table no longer calls ok
    monkeypatch.setattr(score_cmd, "score_one", real)
    assert main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet",
                 "--challenge-output"]) == 0
    assert len(json.loads((out / ar.CHALLENGE_DIR / ar.PREDICTIONS_FILE).read_text())) == 3
    calls.clear()
    monkeypatch.setattr(score_cmd, "score_one", interrupted_on_the_second)
    assert main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet",
                 "--challenge-output", "--spacing", "0.3"]) == 130
    rows = _table(out)
    assert [r["status"] for r in rows] == ["ok", "stale", "stale"]
    jobs = json.loads((out / ar.CHALLENGE_DIR / ar.PREDICTIONS_FILE).read_text())
    assert [j["pk"] for j in jobs] == [rows[0]["case"]]


def test_the_table_gives_each_bundle_of_a_pair_its_own_hash(tmp_path, capsys):
    """The demo pair runs on one base, whose loaded model carries the pair's hash: cases.csv gave
    it as both cls_hash and seg_hash, where summary.json gives each bundle's own."""
    folder = _fresh_archive(tmp_path, n=1)
    out = tmp_path / "scores"
    assert main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]) == 0
    (row,) = _table(out)
    summary = json.loads((ar.case_dir(out, row["case"]) / "summary.json").read_text())
    own = {b["role"]: b["sha256"] for b in summary["bundles"]}
    assert row["cls_hash"] == own["classifier"] and row["seg_hash"] == own["segmenter"]
    assert row["cls_hash"] != row["seg_hash"]


def test_machines_that_choose_other_number_formats_share_an_archive(archive_dir, reference, tmp_path, capsys,
                                                                     monkeypatch, cpu_without_bf16):
    """The number format was part of every case's key: a machine whose CPU chose fp32 rescored
    every case a bf16 machine had scored (and the other way round), and rank 0's table called the
    other machines' cases stale. Left to each machine, the format is recorded and not compared;
    asked for with --precision, it is."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    here = _table(out)[0]["precision"]
    assert here == "fp32"  # (the tests pin fp32; left to itself, this machine chooses fp32 too: cpu_without_bf16)
    other = "bf16"
    monkeypatch.delenv("FETALIQA_PRECISION", raising=False)
    args = ["score", str(archive_dir), "--archive", "--out", str(out), "--no-cache", "--quiet"]
    capsys.readouterr()
    # asked for the format this machine chose anyway: the cases scored so are these settings' too
    # (they were all scored again, and called stale after an interruption)
    assert main(args + ["--precision", here]) == 0
    assert capsys.readouterr().out.count("already scored with these models, skipped") == 4
    assert {r["status"] for r in _table(out)} == {"ok"}
    assert main(args + ["--precision", other]) == 0  # asked for: every case is computed that way
    assert capsys.readouterr().out.count("already scored with these models, skipped") == 0
    assert {r["precision"] for r in _table(out)} == {other} and {r["status"] for r in _table(out)} == {"ok"}
    assert main(args) == 0  # left to this machine, which chooses fp32: the bf16 cases stand, nothing to do
    said = capsys.readouterr().out
    assert said.count("already scored with these models, skipped") == 4 and "mixes" not in said
    assert {r["precision"] for r in _table(out)} == {other} and {r["status"] for r in _table(out)} == {"ok"}
    # one case scored again here: the table mixes both formats, and the run's last lines say so (the
    # precision column alone did)
    shutil.rmtree(sorted((out / "cases").iterdir())[0])
    assert main(args) == 0
    said = capsys.readouterr().out
    assert sorted(r["precision"] for r in _table(out)) == sorted([here] + [other] * 3)
    assert f"the table mixes cases scored in different number formats (" in said and f"1 in {here}" in said
    assert main(args + ["--precision", here]) == 0
    assert capsys.readouterr().out.count("already scored with these models, skipped") == 1
    assert {r["precision"] for r in _table(out)} == {here}


_CRASHING_READER = '''
import os, resource, signal, threading, time
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
from fetaliqa_core import io as _io
_real = _io.load_sweep


def _load_sweep(path, *args, **kwargs):
    # stands for a file whose parser crashes inside the image library: no Python error, the process ends
    if "crash" in os.path.basename(str(path)):
        signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)  # in this thread, as a crash is
        time.sleep(60)
    return _real(path, *args, **kwargs)


_io.load_sweep = _load_sweep
'''


def _archive_process(folder: Path, out: Path, hooks: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(hooks), str(REPO)]))
    cmd = [sys.executable, "-m", "fetaliqa_core.cli", "score", str(folder), "--archive", "--out", str(out),
           "--no-cache", "--quiet", "--device", "cpu"]
    return subprocess.run(cmd, cwd=hooks, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_file_that_crashes_the_reader_fails_its_case_on_the_next_run_instead_of_every_run(archive_dir, tmp_path):
    """A segmentation fault inside an image library ends the process without a word; every rerun
    used to reach the same file and die the same way, so the archive could never be finished."""
    folder = tmp_path / "archive"
    folder.mkdir()
    good = sorted(archive_dir.iterdir())[:2]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "a_crash.mha").write_bytes(good[0].read_bytes())  # first in the list: read while the others wait
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_CRASHING_READER)
    out = tmp_path / "out"
    first = _archive_process(folder, out, hooks)
    assert first.returncode == -signal.SIGSEGV, first.stderr[-2000:]
    marker = ar.read_attempt(out, "a_crash")
    assert marker is not None and marker["stage"] == ar.STAGE_READING

    second = _archive_process(folder, out, hooks)
    assert second.returncode == 1, second.stderr[-2000:]  # a failed case, not a crash
    rows = {r["file"]: r for r in _table(out)}
    assert rows["a_crash.mha"]["status"] == "failed"
    error = rows["a_crash.mha"]["error"]
    assert "reading it ended the process (SIGSEGV), as it did in an earlier run" in error
    assert str(ar.attempt_file(out, "a_crash")) in error  # what to delete to try again
    assert all(rows[p.name]["status"] == "ok" for p in good)  # read ahead when the first run died: scored
    assert "Traceback" not in second.stderr
    # the failure stands on every later run, which never reads the file in its own process again
    third = _archive_process(folder, out, hooks)
    assert third.returncode == 1 and "Traceback" not in third.stderr
    assert {r["file"]: r["status"] for r in _table(out)} == {"a_crash.mha": "failed", **{p.name: "ok" for p in good}}
    # nothing is left of the good cases' markers
    assert sorted(p.name for p in (out / ar.CASES_DIR).glob(f"*{ar.ATTEMPT_SUFFIX}")) == [".a_crash.attempt.json"]


def test_a_run_that_died_scoring_a_case_scores_it_again_once_then_fails_it(archive_dir, tmp_path, capsys):
    """A marker left while scoring (the process killed: memory, a crash in the model's libraries):
    the next run scores the case again; a second death there fails it rather than loop for ever."""
    folder = tmp_path / "archive"
    folder.mkdir()
    src = sorted(archive_dir.iterdir())[0]
    (folder / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    ar.prepare_out(out)
    name = ar.case_names([folder / src.name], lambda p: p.name.split(".")[0])[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process of this machine that has ended
    fhash = ar.file_hash(folder / src.name)

    def left(stage: str, deaths: int) -> None:
        record = {"format": ar.RECORD_FORMAT + "-attempt", "file_hash": fhash, "stage": stage,
                  "scoring_deaths": deaths, "host": ar._host_tag(), "pid": pid, "started_utc": ar.utc_now()}
        ar.attempt_file(out, name).write_text(json.dumps(record))

    args = ["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet", "--device", "cpu"]
    left(ar.STAGE_SCORING, 0)
    assert main(args) == 0
    assert _table(out)[0]["status"] == "ok" and not ar.attempt_file(out, name).exists()
    # a marker of a live process (another run on this folder, at this case now) is not taken as a death
    assert not ar.died_on(dict(json.loads(json.dumps({"file_hash": fhash, "host": ar._host_tag(),
                                                       "pid": os.getppid()})), stage="scoring"), fhash)
    import shutil

    shutil.rmtree(ar.case_dir(out, name))
    left(ar.STAGE_SCORING, ar.MAX_SCORING_DEATHS - 1)  # it died scoring this case before, and again
    capsys.readouterr()
    assert main(args) == 1
    row = _table(out)[0]
    assert row["status"] == "failed" and f"the run stopped {ar.MAX_SCORING_DEATHS} times while scoring it" in row["error"]
    assert ar.attempt_file(out, name).exists()  # kept: the next run does not try it again
    # another machine's marker is a death only when old: its run may be at this case now
    foreign = {"file_hash": fhash, "host": "elsewhere.0000", "pid": 1, "stage": "scoring"}
    ar.attempt_file(out, name).write_text(json.dumps(foreign))
    assert not ar.died_on(foreign, fhash, ar.attempt_file(out, name))
    old = time.time() - ar.FOREIGN_LEFTOVER_S - 60
    os.utime(ar.attempt_file(out, name), (old, old))
    assert ar.died_on(foreign, fhash, ar.attempt_file(out, name))
    # a marker of other bytes (the file replaced since) is not this file's
    left(ar.STAGE_SCORING, 5)
    (folder / src.name).write_bytes(src.read_bytes() + b"")
    assert not ar.died_on(ar.read_attempt(out, name), "0" * 64)


def test_case_folders_of_files_no_longer_in_the_archive_are_said(tmp_path, capsys):
    """A deleted or renamed file's case folder stayed in cases/ without a word (the table never
    mentions it)."""
    folder = _fresh_archive(tmp_path, n=2)
    out = tmp_path / "scores"
    args = ["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]
    assert main(args) == 0
    gone = sorted(folder.iterdir())[0]
    gone.rename(folder / "renamed.mha")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"1 case folder(s) in {out / ar.CASES_DIR} are of files no longer in the archive" in err
    assert gone.name.split(".")[0] in err


def test_an_archive_of_subfolders_only_says_so_in_one_line(tmp_path, capsys):
    """A folder holding only subfolders of sweeps was scored as one failed case named after it."""
    import shutil

    folder = _fresh_archive(tmp_path, n=2)
    top = tmp_path / "patients"
    for k, sweep in enumerate(sorted(folder.iterdir())):
        (top / f"patient{k + 1}").mkdir(parents=True)
        shutil.copy(sweep, top / f"patient{k + 1}" / sweep.name)
    assert main(["score", str(top), "--archive", "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "holds no sweep files, only subfolders (patient1, patient2)" in err and "Traceback" not in err
    assert not (tmp_path / "o" / ar.TABLE_FILE).exists()


def _two_ranks_by_hand(archive_dir: Path, tmp_path: Path, outs: tuple[str, str]) -> list[tuple[int, str]]:
    """Two ranks started as torchrun would on two machines (RANK, WORLD_SIZE, MASTER_*), each in a
    working folder of its own holding a link to the archive: ``(returncode, output)`` per rank."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        here = tmp_path / f"machine{rank}"
        here.mkdir(exist_ok=True)
        if not (here / "archive").exists():
            (here / "archive").symlink_to(archive_dir)
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fetaliqa_core.cli", "score", "archive", "--out", outs[rank], "--no-cache",
             "--device", "cpu", "--rank-timeout", "60"],
            cwd=here, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    done = []
    for proc in procs:
        try:
            done.append((0, proc.communicate(timeout=120)[0]))
        finally:
            if proc.poll() is None:
                proc.kill()
        done[-1] = (proc.returncode, done[-1][1])
    return done


@pytest.mark.slow
def test_ranks_that_would_write_to_different_folders_stop_together_and_say_why(archive_dir, tmp_path):
    """Two machines given the same relative --out from different working folders: each rank wrote
    into its own folder; rank 0 waited out its timeout, called rank 1 (which had finished) a rank
    that "stopped without finishing", and told the user to run the same command again, which
    never finished either. The ranks compare folders before scoring and stop together."""
    done = _two_ranks_by_hand(archive_dir, tmp_path, ("scores", "scores"))
    assert [rc for rc, _ in done] == [1, 1], done
    for _, log in done:
        assert "rank 1 on" in log and "not to rank 0's output folder" in log, log[-2000:]
        assert "stopped without finishing" not in log and "Traceback" not in log
    for rank in (0, 1):  # nothing scored anywhere
        cases = tmp_path / f"machine{rank}" / "scores" / ar.CASES_DIR
        assert not cases.exists() or not any(cases.iterdir())


@pytest.mark.slow
def test_an_output_path_no_rank_can_write_is_one_line_on_every_rank(archive_dir, tmp_path):
    """An --out that is a file: rank 0 stopped on an internal folder's path and rank 1 said it had
    lost contact with the others (a gloo error), where both had named the folder before."""
    taken = tmp_path / "taken"
    taken.write_text("someone's file\n")
    done = _two_ranks_by_hand(archive_dir, tmp_path, (str(taken), str(taken)))
    assert [rc for rc, _ in done] == [1, 1], done
    for _, log in done:
        assert f"{taken}: cannot write results there" in log and "lost contact" not in log, log[-2000:]
    assert taken.read_text() == "someone's file\n"


def test_a_file_name_that_is_not_utf8_is_one_failed_row_and_reruns_work(archive_dir, tmp_path, capsys):
    """A name from another system's encoding ended folder and archive runs in a traceback after all
    the scoring, with no table written (and every archive rerun the same): it is one failed row, its
    undecodable byte written escaped."""
    import os

    first = sorted(archive_dir.iterdir())[0]
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / first.name).write_bytes(first.read_bytes())
    with open(os.path.join(os.fsencode(folder), b"bad\xff.mha"), "wb") as fh:
        fh.write(first.read_bytes())
    out = tmp_path / "out"
    for _ in range(2):  # the rerun reads the failed case's record back
        main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"])
        rows = {r["file"]: r for r in _table(out)}
        assert rows[first.name]["status"] == "ok"
        assert rows["bad\\xff.mha"]["status"] == "failed" and "UTF-8" in rows["bad\\xff.mha"]["error"]
    folder_out = tmp_path / "folder_out"
    main(["score", str(folder), "--out", str(folder_out), "--no-cache", "--quiet"])
    with open(folder_out / "summary.csv", encoding="utf-8") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert rows["bad\\xff.mha"]["status"] == "failed" and rows[first.name]["status"] != "failed"
    capsys.readouterr()


def test_a_table_fetaliqa_did_not_write_is_refused_not_replaced(archive_dir, tmp_path, capsys):
    """A cases.csv (archive) or summary.csv (folder of sweeps) of the user's own in the output folder
    was replaced without a word, and a link of that name by a file; one sweep's frames.csv and
    summary.json are refused so. The tables of an earlier run are still replaced."""
    first = sorted(archive_dir.iterdir())[0]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / first.name).write_bytes(first.read_bytes())
    notes = tmp_path / "notes.csv"
    notes.write_text("case,my own notes\nkeep,this\n")
    for archive, table in ((True, "cases.csv"), (False, "summary.csv")):
        for kind in ("file", "link"):
            out = tmp_path / f"out-{table}-{kind}"
            out.mkdir()
            if kind == "file":
                (out / table).write_text(notes.read_text())
            else:
                (out / table).symlink_to(notes)
            rc = main(["score", str(folder), *(["--archive"] if archive else []), "--out", str(out),
                       "--no-cache", "--quiet"])
            err = capsys.readouterr().err
            assert rc != 0 and f"holds {table} that FetalIQA did not write" in err, err
            assert (out / table).read_text() == "case,my own notes\nkeep,this\n"
            assert (out / table).is_symlink() == (kind == "link")
        out = tmp_path / f"rerun-{table}"
        for _ in range(2):
            main(["score", str(folder), *(["--archive"] if archive else []), "--out", str(out), "--no-cache",
                  "--quiet"])
            assert "did not write" not in capsys.readouterr().err
        assert first.name in (out / table).read_text()


def test_a_table_is_told_ours_by_its_first_fields_not_its_first_bytes(tmp_path):
    """A table of the user's starting "file,sweep,kindness" was taken for FetalIQA's and replaced,
    FetalIQA's own re-saved with a byte-order mark was refused as the user's, and a folder named
    summary.csv was called "a file FetalIQA did not write"."""
    from fetaliqa_core.cli.score import TABLE_COLUMNS
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.export import refuse_foreign_table

    table = tmp_path / "summary.csv"
    head = ",".join(TABLE_COLUMNS[:3])
    for text in (head + ",more\n", "\ufeff" + head + "\r\n", ",".join(f'"{c}"' for c in TABLE_COLUMNS[:3]) + "\n"):
        table.write_text(text, encoding="utf-8")
        refuse_foreign_table(table, TABLE_COLUMNS)  # ours
    table.write_text(head.replace(TABLE_COLUMNS[2], TABLE_COLUMNS[2] + "ness") + ",notes\n", encoding="utf-8")
    with pytest.raises(FetalIQAError, match="did not write"):
        refuse_foreign_table(table, TABLE_COLUMNS)
    table.unlink()
    table.mkdir()
    with pytest.raises(FetalIQAError, match="is a folder where"):
        refuse_foreign_table(table, TABLE_COLUMNS)


def test_many_files_failing_alike_are_counted_not_each_listed_and_count_in_the_throughput(archive_dir, tmp_path,
                                                                                          capsys):
    """100,000 empty files printed 100,000 failure lines, and the throughput counted only the one
    good case ("0.003 cases/s (1 cases in 313.5 s)"): the first failures of a kind are listed, the
    rest counted in one line; the throughput is of the cases scored, the failed ones said apart."""
    listed, extra = 20, 3
    first = sorted(archive_dir.iterdir())[0]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / first.name).write_bytes(first.read_bytes())
    for k in range(listed + extra):
        (folder / f"empty{k:03d}.mha").write_bytes(b"")
    out = tmp_path / "out"
    main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"])
    captured = capsys.readouterr()
    assert captured.err.count(": failed: ") == listed
    assert f"{extra} more case(s) failed the same way (the file is empty" in captured.err
    failed = listed + extra
    # the rate is of the case scored (the failures, instant, made it "174 cases/s" for one case)
    line = next(t for t in captured.out.splitlines() if t.startswith("throughput: "))
    assert f"(1 cases scored, and {failed} failed, in " in line
    rate, seconds = float(line.split()[1]), float(line.split(" in ")[1].split()[0])
    assert abs(rate * seconds - 1) <= rate * 0.05 + 0.01  # one case over the time shown (to 0.1 s)
    assert sum(r["status"] == "failed" for r in _table(out)) == failed


def _as_rank(monkeypatch, rank: int, gather=None, plan=None) -> None:
    """This process as rank ``rank`` of two, without torchrun: the exchanges between ranks are
    ``gather`` (every rank's object, from this one's) and ``plan`` (rank 0's broadcast)."""
    monkeypatch.setattr(ar, "ranks_from_env", lambda env=None: ar.Ranks(rank, 2, 0))
    monkeypatch.setattr(ar, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(ar, "close_process_group", lambda *a, **k: None)
    monkeypatch.setattr(ar, "broadcast_from_main", lambda ranks, obj: obj if plan is None else plan)
    monkeypatch.setattr(ar, "gather", gather or (lambda ranks, obj: [obj, obj]))


def test_a_rank_with_another_threshold_stops_every_rank_before_anything_is_scored(archive_dir, tmp_path, capsys,
                                                                                   monkeypatch):
    """Rank 1 (another machine) with --threshold 0.5: each rank scored its shard with its own
    threshold, rank 0's table called rank 1's cases 'stale ... run again to rescore', exit 0, and
    running again changed nothing."""
    def gather(ranks, obj):  # what rank 1 on nodeB sends
        return [obj, dict(obj, rank=1, host="nodeB", threshold=0.5) if isinstance(obj, dict) else obj]

    _as_rank(monkeypatch, 0, gather)
    out = tmp_path / "out"
    rc = main(["score", str(archive_dir), "--archive", "--out", str(out), "--no-cache", "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "rank 1 on nodeB would score with other settings than rank 0: threshold 0.5 (rank 0 on" in err[0]
    assert not any((out / ar.CASES_DIR).iterdir()) and not (out / ar.TABLE_FILE).exists()
    assert not (out / ar.STATE_DIR).exists()


def test_a_rank_reads_the_cases_through_its_own_path_to_the_archive(archive_dir, tmp_path, capsys, monkeypatch):
    """A machine that mounts the archive at another path was handed rank 0's paths: every case of
    its shard failed as 'no such file or folder' and rank 0 exited 0."""
    from fetaliqa_core.cli.score import sweep_folder_members

    members = sweep_folder_members(archive_dir)
    on_node_a = tmp_path / "only-on-node-a" / "archive"  # rank 0's path: not on this machine
    out = tmp_path / "out"
    plan = {"members": [str(on_node_a / m.name) for m in members], "names": [m.stem for m in members],
            "run_id": ar.new_run_id(), "out": str(out), "host": "nodeA",
            "relative": [m.name for m in members], "stats": [ar.file_stat(m) for m in members]}
    ar.plan_file(out, plan["run_id"]).parent.mkdir(parents=True)
    ar.plan_file(out, plan["run_id"]).write_text(json.dumps(plan))
    mounted = tmp_path / "mnt" / "archB"
    mounted.parent.mkdir()
    mounted.symlink_to(archive_dir)
    _as_rank(monkeypatch, 1, plan=plan)
    args = ["score", str(mounted), "--archive", "--out", str(out), "--no-cache", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "failed" not in printed.err and "scored 2, skipped 0, failed 0" in printed.out, printed
    for i in ar.shard(len(members), ar.Ranks(1, 2, 0)):
        record = ar.read_record(ar.case_dir(out, plan["names"][i]))
        assert record["status"] == "ok" and record["file"] == members[i].name

    plan["stats"][1] = "another"  # rank 0 sees another file there: refused, on every rank
    assert main(["score", str(mounted), "--archive", "--out", str(out), "--no-cache", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"rank 1 on {ar.hostname()}: its archive {archive_dir} has 1 file(s) of another size" in err


def test_rank_0_started_by_hand_alone_says_whom_it_waits_for_and_sigterm_ends_it(archive_dir, tmp_path):
    """RANK=0 WORLD_SIZE=2 with MASTER_ADDR/PORT and rank 1 never started: nothing was printed,
    and SIGTERM and Ctrl-C went unheard until init_process_group's ten minutes had passed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), RANK="0", WORLD_SIZE="2", LOCAL_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "fetaliqa_core.cli", "score", str(archive_dir), "--out",
                             str(tmp_path / "out"), "--device", "cpu", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import select

        # (after the start-up and ar.JOIN_NOTICE_S; nothing came in ten minutes before)
        assert select.select([proc.stderr], [], [], 60)[0], "nothing said in 60 s"
        line = proc.stderr.readline()
        assert f"rank 0: waiting for rank 1 to join at 127.0.0.1:{port}" in line and "Ctrl-C stops" in line
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
        assert rc == 130 and time.monotonic() - t0 < 10
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_parts_scored_with_shard_merge_into_the_whole_table_without_scoring_again(archive_dir, reference, tmp_path,
                                                                                   capsys):
    """Machines that cannot run torchrun together had no way to split an archive: each plain run
    scored every case. --shard K/N takes a part of the cases, and the README's merge (copy
    each part's cases/ into one --out, run without --shard) gives the whole table. (Each part
    takes the cases whose names hash to it.)"""
    import shutil

    args = ["score", str(archive_dir), "--no-cache", "--quiet", "--challenge-output"]
    parts = [tmp_path / "part1", tmp_path / "part2"]
    names = [r["case"] for r in _table(reference)]
    for k, out in enumerate(parts, 1):
        assert main(args + ["--shard", f"{k}/2", "--out", str(out)]) == 0
        n = len(ar.shard_by_name(names, k, 2))
        printed = capsys.readouterr().out
        assert f"(part {k}/2 of 4 cases): {n} cases, {n} ok; scored {n} now" in printed
        assert "other case(s) of the archive" not in printed  # (each part its own --out: nothing else there)
        assert [r["case"] for r in _table(out)] == [names[i] for i in ar.shard_by_name(names, k, 2)]
    assert sorted(r["case"] for out in parts for r in _table(out)) == sorted(names)
    merged = tmp_path / "merged"
    for out in parts:
        shutil.copytree(out / ar.CASES_DIR, merged / ar.CASES_DIR, dirs_exist_ok=True)
    assert main(args + ["--archive", "--out", str(merged)]) == 0
    printed = capsys.readouterr().out
    assert "4 cases, 4 ok; scored 0 now, 4 already scored" in printed
    assert _results(merged) == _results(reference) and _tree(merged) == _tree(reference)
    # a part run again into the merged --out (as parts run one after another into one --out): its table
    # and challenge/ hold its own cases only, and the others scored there are pointed out
    assert main(args + ["--shard", "1/2", "--out", str(merged)]) == 0
    others = 4 - len(ar.shard_by_name(names, 1, 2))
    assert (f"note: {others} other case(s) of the archive scored in {merged / ar.CASES_DIR} (other parts) are not in "
            "this part's table or challenge output: run the same command without --shard") in capsys.readouterr().out


def test_a_full_disk_while_recording_a_failed_case_says_free_space(tmp_path, capsys, monkeypatch):
    """A full disk when a failed case's record was written said "Choose a folder you can write
    to", where a full disk on a scored case said to free space; both now say the latter."""
    import errno

    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "empty.mha").write_bytes(b"")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ar, "write_failure", full)
    rc = main(["score", str(archive), "--archive", "--out", str(tmp_path / "out"), "--no-cache", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot be written (the disk is full): free space or choose another --out" in err, err


def test_a_rerun_says_why_each_case_is_scored_again(tmp_path, capsys):
    """Reruns rescored the right cases but said only each case's answer ("chosen frame 4, AC 54.8
    mm"): in a large archive an intended rescore (a new threshold) could not be told from an
    accidental one (a file rewritten by a copy) without comparing tables. And --rank-timeout was
    taken without a word by a run of one process."""
    folder = _fresh_archive(tmp_path, n=2)
    out = tmp_path / "scores"
    base = ["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]
    assert main(base + ["--rank-timeout", "5"]) == 0
    said = capsys.readouterr()
    assert "rescored" not in said.out  # nothing scored before
    # (--rank-timeout was accepted without a word in a run of one process, where it bounds nothing)
    assert "--rank-timeout applies to runs of several processes" in said.err
    threshold = float(_table(out)[0]["threshold"])
    assert main(base + ["--threshold", "0.25"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "chosen frame" in line]
    assert len(lines) == 2 and all(f"rescored: scored before at threshold {threshold:g} (now 0.25)" in line
                                   for line in lines), lines
    assert main(base + ["--threshold", "0.25"]) == 0
    said = capsys.readouterr().out
    assert said.count("skipped") == 2 and "rescored" not in said
    victim = sorted(folder.iterdir())[0]
    from fetaliqa_core import io as fio

    sweep = fio.load_sweep(victim)
    import SimpleITK as sitk

    changed = sitk.GetImageFromArray(255 - sweep.frames)
    changed.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(changed, str(victim))
    assert main(base + ["--threshold", "0.25", "--spacing", "0.3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "chosen frame" in line]
    assert any("rescored: the file changed since it was scored" in line for line in lines), lines
    assert any("rescored: scored before with other settings (pixel spacing or cascade)" in line
               for line in lines), lines


def test_merging_two_runs_folders_with_cp_rescores_cases_whose_challenge_files_are_the_other_runs(
        archive_dir, reference, tmp_path, capsys, monkeypatch):
    """The README's merge (cp -r of every part's cases/) of two whole-archive runs, one with
    --challenge-output and one without, left each case folder holding the second run's record and
    results beside the first run's challenge answer: the merge kept every case ("scored 0 now")
    and gathered answers that disagreed with the table's chosen frame. Now those cases are scored
    again, saying why. (The results' writer stages inside the case's tagged staging folder: beside
    it, a name cut to 40 characters lost the tag, and a killed run's folder stayed for good.)"""
    import shutil

    from fetaliqa_core import export

    plain = tmp_path / "plain"
    assert main(["score", str(archive_dir), "--archive", "--out", str(plain), "--no-cache", "--quiet"]) == 0
    merged = tmp_path / "merged"
    for out in (reference, plain):  # cp -r reference/cases/. plain/cases/. merged/cases/
        shutil.copytree(out / ar.CASES_DIR, merged / ar.CASES_DIR, dirs_exist_ok=True)
    capsys.readouterr()
    writer, parents = export.atomic_output_dir, []

    def watched(out, *a, **k):
        parents.append(Path(out).is_dir())  # the staging folder exists: the writer stages inside it
        return writer(out, *a, **k)

    monkeypatch.setattr(export, "atomic_output_dir", watched)
    assert main(["score", str(archive_dir), "--archive", "--out", str(merged), "--no-cache", "--quiet",
                 "--challenge-output"]) == 0
    printed = capsys.readouterr().out
    assert "4 cases, 4 ok; scored 4 now" in printed, printed
    assert printed.count("rescored: its challenge output files were not written with its case.json") == 4
    assert parents == [True] * 4
    assert _results(merged) == _results(reference) and _tree(merged) == _tree(reference)


def test_an_empty_table_in_the_output_folder_is_rebuilt_with_a_note(reference, archive_dir, tmp_path, capsys):
    """A cases.csv emptied by a failed copy stopped the merge: 'holds cases.csv that FetalIQA did
    not write'. It is only an index of the case folders: it is rebuilt, and the run says so."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    for text, said in (("", "is empty"), ("case,file,sta", "is cut short")):
        (out / ar.TABLE_FILE).write_text(text)
        capsys.readouterr()
        assert main(["score", str(archive_dir), "--archive", "--out", str(out), "--no-cache", "--quiet",
                     "--challenge-output"]) == 0
        printed = capsys.readouterr()
        assert "did not write" not in printed.err and f"cases.csv {said}" in printed.err, printed.err
        assert "scored 0 now, 4 already scored" in printed.out
        assert _results(out) == _results(reference)


@pytest.mark.timeout(300)
def test_a_case_json_listing_a_file_outside_its_folder_is_rescored_with_why(tmp_path, capsys):
    """A case.json edited to list a file outside the case folder (../ or an absolute path, with
    that file's own hash) and sealed again: the rerun read the user's file and took the case as
    finished; one listing /dev/zero read for ever. Now each is rescored, and the line says why."""
    import hashlib

    folder = _fresh_archive(tmp_path, n=1)
    out = tmp_path / "scores"
    base = ["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]
    assert main(base) == 0
    mine = tmp_path / "mine.txt"
    mine.write_text("the user's own file\n")
    digest = hashlib.blake2b(mine.read_bytes(), digest_size=16).hexdigest()
    case = ar.case_dir(out, _table(out)[0]["case"])
    listed = ["../../../mine.txt", str(mine)] + (["/dev/zero"] if os.path.exists("/dev/zero") else [])
    for name in listed:
        rec = ar.read_record(case)
        rec["files"][name] = digest
        (case / ar.RECORD_FILE).write_text(ar.record_json(rec))  # sealed again, as anyone can
        capsys.readouterr()
        assert main(base) == 0
        said = capsys.readouterr().out
        assert f"rescored: its case.json lists {name!r}, which is not a file of its folder" in said, said
        assert name not in ar.read_record(case)["files"]  # the record written now lists its own files only


@pytest.mark.parametrize("value, said", [
    ("1/99999999999999999999", "'1/99999999999999999999' splits the archive in more parts than machines could score; "
                               "give N from 1 to 100,000"),
    ("-1/2", "'-1/2' is not a part K/N of the archive; give K from 1 to N"),
])
def test_a_shard_no_machines_could_share_or_a_negative_part_is_one_line(value, said, tmp_path, capsys):
    """--shard 1/99999999999999999999 was taken, and its part held none of the cases: 0 scored,
    exit status 0, not a word; --shard -1/2 said only "argument --shard: expected one argument"."""
    with pytest.raises(SystemExit) as usage:
        main(["score", str(tmp_path), "--archive", "--out", str(tmp_path / "out"), "--shard", value])
    err = capsys.readouterr().err
    assert usage.value.code == 2 and said in err.strip().splitlines()[-1], err
    assert "expected one argument" not in err and not (tmp_path / "out").exists()


def test_more_parts_than_cases_is_said_and_an_empty_part_says_it_scores_nothing(archive_dir, reference, tmp_path,
                                                                                  capsys):
    """A part of more parts than the archive has cases scored nothing without a word (exit status 0,
    "0 cases"), as if the archive were empty."""
    names = [r["case"] for r in _table(reference)]
    parts = 8
    empty = next(k for k in range(1, parts + 1) if not ar.shard_by_name(names, k, parts))
    assert main(["score", str(archive_dir), "--no-cache", "--quiet", "--shard", f"{empty}/{parts}",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert (f"--shard {empty}/{parts} splits the archive's 4 case(s) in more parts than cases: some parts hold "
            "none; this one holds none, so it scores nothing") in err, err


def test_an_empty_part_of_fewer_parts_than_cases_says_it_scores_nothing(archive_dir, reference, tmp_path, capsys):
    """Parts hold about 1/N of the cases each, by their names: with 3 parts of 4 cases one may
    hold none, and its run scored nothing without a word (the note was said only for more parts
    than cases)."""
    names = [r["case"] for r in _table(reference)]
    found = [(k, n) for n in (2, 3, 4) for k in range(1, n + 1) if not ar.shard_by_name(names, k, n)]
    if not found:
        pytest.skip("every part of 2-4 holds a case of this archive")
    empty, parts = found[0]
    assert main(["score", str(archive_dir), "--no-cache", "--quiet", "--shard", f"{empty}/{parts}",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"--shard {empty}/{parts} holds none of the archive's 4 case(s)" in err and "scores nothing" in err, err


def test_a_second_run_into_the_same_out_is_refused_naming_the_first_then_runs_once_it_ends(tmp_path, capsys):
    """Two runs scoring into one --out at once each scored every case, one's case folders and
    table replacing the other's without a word. The lock is the first run's (here a process
    that holds it as a run does); once that process ends, the folder is free again."""
    folder = _fresh_archive(tmp_path, n=2)
    out = tmp_path / "scores"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from fetaliqa_core import archive as ar; "
         "ar.lock_out(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]
        assert main(args) == 1
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert lines == [f"fetaliqa: another FetalIQA run (host {ar.hostname()}, pid {holder.pid}) is scoring "
                         f"into {out}; wait for it or give another --out"]
        assert not (out / ar.CASES_DIR).exists() and not (out / ar.TABLE_FILE).exists()  # nothing touched
    finally:
        holder.communicate("", timeout=60)
    assert main(args) == 0  # the first run ended: its lock went with it
    assert {r["status"] for r in _table(out)} == {"ok"}
    assert main(args) == 0  # (and a run releases its own when it ends)


def test_mac_metadata_files_beside_the_sweeps_are_left_out_and_counted(tmp_path, capsys):
    """A folder copied from a Mac holds ``._name.mha`` beside each sweep (a few kB of metadata):
    each was a failed case, and the run exited 1."""
    folder = _fresh_archive(tmp_path, n=2)
    for sweep in sorted(folder.iterdir()):
        (folder / f"._{sweep.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(4092))
    out = tmp_path / "scores"
    assert main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "2 macOS metadata file(s) (named ._*, written beside files copied from a Mac) are not sweeps and are " \
           "left out" in err
    assert [r["file"] for r in _table(out)] == sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_an_out_that_is_the_archive_itself_leaves_its_own_outputs_out_without_a_word(tmp_path, capsys):
    folder = _fresh_archive(tmp_path, n=2)
    args = ["score", str(folder), "--archive", "--out", str(folder), "--no-cache", "--quiet", "--challenge-output"]
    assert main(args) == 0
    assert (folder / ar.TABLE_FILE).is_file() and (folder / ar.CHALLENGE_DIR).is_dir()
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "left out" not in err and "not looked into" not in err, err
    assert len(_table(folder)) == 2


def test_the_table_marks_an_ac_whose_outline_the_field_of_view_cut(tmp_path, capsys, monkeypatch):
    """cases.csv gave the AC of an outline the field of view cut as plainly as a whole one's (`fetaliqa
    ac` said "ellipse extrapolated"): ``ac_extrapolated`` says it (1; 0 for a whole outline), at the
    table's end, and the case's summary.json says it in `ac`'s words."""
    import cv2
    import numpy as np
    import SimpleITK as sitk
    from fakes import fake_models

    from fetaliqa_core.models import choice

    folder = tmp_path / "archive"
    folder.mkdir()
    for name, centre_y in (("cut", 188), ("whole", 140)):
        # a sector fan of radius 235 px; at 188 px below the apex the abdomen's lower edge runs past
        # its arc (black there: a few percent of the outline is cut), at 140 px it is whole
        frames = np.zeros((6, 240, 320), np.uint8)
        fan = np.zeros((240, 320), np.uint8)
        cv2.ellipse(fan, (160, 0), (235, 235), 90, -35, 35, 1, -1)
        for f in range(6):
            frames[f][fan > 0] = 60
            if 2 <= f <= 4:
                cv2.ellipse(frames[f], (160, centre_y), (60, 45), 15, 0, 360, 230, -1)
            frames[f][fan == 0] = 0
        image = sitk.GetImageFromArray(frames)
        image.SetSpacing((0.5, 0.5, 1.0))
        sitk.WriteImage(image, str(folder / f"{name}.mha"))
    monkeypatch.setattr(choice, "load_models", lambda c: fake_models(choice=c))  # the user's own, not the demo
    out = tmp_path / "scores"
    assert main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"]) == 0
    capsys.readouterr()
    rows = {r["case"]: r for r in _table(out)}
    assert rows["cut"]["ac_status"] == rows["whole"]["ac_status"] == "ok"  # not doubted for it
    assert rows["cut"]["ac_extrapolated"] == "1" and rows["whole"]["ac_extrapolated"] == "0"
    assert ar.TABLE_COLUMNS[-1] == "ac_extrapolated"
    summary = json.loads((ar.case_dir(out, "cut") / "summary.json").read_text())
    assert summary["chosen_ac"]["note"] == "outline cut by the field of view; ellipse extrapolated"
