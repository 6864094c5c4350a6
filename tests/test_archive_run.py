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
    rc = main(["score", str(archive_dir), "--archive", "--out", str(out), "--no-cache", "--quiet"])
    assert rc == 0
    return out


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
        assert row["precision"] in ("fp32", "bf16")
        if row["ac_mm"]:
            assert int(row["chosen_frame"]) >= 0 and float(row["ac_mm"]) > 0
            # GA only for an AC inside Hadlock's range (a doubtful AC gets none)
            assert bool(row["ga_weeks"]) == (summary["chosen_ac"]["ga_weeks"] is not None)
    before = {r["case"]: r["finished_utc"] for r in rows}
    capsys.readouterr()
    assert main(["score", str(archive_dir), "--archive", "--out", str(reference), "--no-cache", "--quiet"]) == 0
    assert capsys.readouterr().out.count("already scored with these models, skipped") == 4
    assert {r["case"]: r["finished_utc"] for r in _table(reference)} == before


def test_a_bad_member_gets_a_failed_row_and_the_rest_is_scored(archive_dir, reference, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    first = sorted(archive_dir.iterdir())[0]
    (folder / first.name).write_bytes(first.read_bytes())
    (folder / "broken.mha").write_text("this is not an image\n")
    out = tmp_path / "out"
    rc = main(["score", str(folder), "--archive", "--out", str(out), "--no-cache", "--quiet"])
    assert rc == 1
    rows = {r["file"]: r for r in _table(out)}
    assert rows["broken.mha"]["status"] == "failed" and "broken.mha" in rows["broken.mha"]["error"]
    assert rows[first.name]["status"] == "ok"
    assert "broken.mha" in capsys.readouterr().err
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
           "--device", "cpu", "--rank-timeout", "60"]
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

    proc = _torchrun(archive_dir, out)
    log = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, log[-3000:]
    assert log.count("already scored with these models, skipped") == len(done)
    assert f"archive {out}: 4 cases, 4 ok" in log and log.count("table: ") == 1
    # finished cases were kept as they were, the rest scored, no temporary folder left
    assert {n: (ar.case_dir(out, n) / ar.RECORD_FILE).read_text() for n in done} == records
    assert sorted(p.name for p in (out / ar.CASES_DIR).iterdir()) == sorted(names)
    assert not (out / ar.STATE_DIR).exists()
    rows = _table(out)
    assert [r["rank"] for r in rows] == ["0", "1", "0", "1"]  # index modulo the world size
    assert _results(out) == _results(reference)  # identical to one uninterrupted process


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
