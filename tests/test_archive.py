"""Archive scoring mechanics: sharding, keys, records, the combined table, reading ahead and
rank 0's wait on heartbeats (no models here; the end-to-end runs are in test_archive_run.py)."""

from __future__ import annotations

import csv
import os
import json
import threading
import sys
import time
from pathlib import Path

import pytest

from fetaliqa_core import archive as ar


@pytest.mark.parametrize("n, world", [(0, 2), (1, 3), (4, 2), (7, 3), (10, 4), (5, 1)])
def test_shards_cover_every_case_once(n, world):
    shards = [ar.shard(n, ar.Ranks(r, world, r)) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert ar.shard(n, ar.Ranks(world - 1, world, 0)) == shards[-1]  # depends on the rank only


def test_ranks_from_torchrun_variables():
    assert ar.ranks_from_env({}) == ar.Ranks() and not ar.launched_by_torchrun({})
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu0", "MASTER_PORT": "29500"}
    assert ar.ranks_from_env(env) == ar.Ranks(3, 4, 1) and ar.launched_by_torchrun(env)
    from fetaliqa_core.errors import FetalIQAError

    with pytest.raises(FetalIQAError, match="impossible"):
        ar.ranks_from_env({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    with pytest.raises(FetalIQAError, match="integers"):
        ar.ranks_from_env({"RANK": "x", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})


def test_ranks_set_by_hand_without_a_rendezvous_address_are_one_line():
    """RANK, WORLD_SIZE and LOCAL_RANK set by hand without MASTER_ADDR ended in a 30-line
    traceback from torch.distributed's env:// rendezvous."""
    from fetaliqa_core.errors import FetalIQAError

    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    with pytest.raises(FetalIQAError, match="MASTER_ADDR and MASTER_PORT are not: start the run with torchrun"):
        ar.ranks_from_env(env)
    with pytest.raises(FetalIQAError, match="but MASTER_PORT is not"):
        ar.ranks_from_env(dict(env, MASTER_ADDR="gpu0"))
    with pytest.raises(FetalIQAError, match="not a port number"):
        ar.ranks_from_env(dict(env, MASTER_ADDR="gpu0", MASTER_PORT="http"))
    assert ar.ranks_from_env(dict(env, WORLD_SIZE="1")) == ar.Ranks()  # one process: no rendezvous


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_started_by_hand_says_whom_it_waits_for_and_gives_up(monkeypatch):
    """Rank 0 of two started by hand, rank 1 never started: it waited ten minutes in
    init_process_group without a word, deaf to Ctrl-C and SIGTERM. It now says which rank it
    waits for, in steps short enough for Ctrl-C, and gives up after its timeout."""
    from fetaliqa_core.errors import FetalIQAError

    monkeypatch.setattr(ar, "JOIN_NOTICE_S", 0.0)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(FetalIQAError, match="rank 0: rank 1 did not join at 127.0.0.1:.* in 2 s"):
        ar.join_by_hand(ar.Ranks(0, 2, 0), 1.5, env, poll=0.1, say=said.append)
    assert time.monotonic() - t0 < 10
    assert len(said) == 1 and "rank 0: waiting for rank 1 to join" in said[0] and "Ctrl-C" in said[0]

    def interrupt(line):
        raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, made one) raises between two steps

    env["MASTER_PORT"] = str(_free_port())
    with pytest.raises(KeyboardInterrupt):
        ar.join_by_hand(ar.Ranks(1, 2, 0), 300, env, poll=0.1, say=interrupt)  # rank 0 never came


def test_ranks_started_by_hand_meet(monkeypatch):
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    stores: dict[int, object] = {}

    def join(rank):
        stores[rank] = ar.join_by_hand(ar.Ranks(rank, 3, 0), 30, env, poll=0.05, say=lambda line: None)

    threads = [threading.Thread(target=join, args=(r,)) for r in (2, 1, 0)]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(timeout=30)
    assert sorted(stores) == [0, 1, 2]
    assert stores[2].get("fetaliqa/joined/0") == ar.hostname().encode()


def _settings(rank, host="vm", **changes):
    s = ar.rank_settings(ar.Ranks(rank, 2, 0), "demo model", {"cls_hash": "a", "seg_hash": "b", "base_hash": None,
                                                               "precision": "fp32"}, 0.67, None, None, "auto",
                         "FETALIQA_PRECISION")
    s.update(host=host)
    s.update(changes)
    return s


def test_ranks_whose_settings_differ_are_named_before_anything_is_scored():
    """Each rank scored its shard with its own settings and rank 0 judged the table by its own,
    so another machine's cases (FETALIQA_PRECISION set on one node only, another --threshold,
    other models) were 'stale' for good and a rerun changed nothing."""
    assert ar.settings_problem([_settings(0), _settings(1, "nodeB")]) is None
    # left to each machine, the number formats may differ (documented); they are not compared
    bf16 = _settings(1, "nodeB", hashes={"cls_hash": "a", "seg_hash": "b", "base_hash": None})
    assert ar.settings_problem([_settings(0), bf16]) is None
    line = ar.settings_problem([_settings(0), _settings(1, "nodeB", threshold=0.5)])
    assert line.startswith("rank 1 on nodeB would score with other settings than rank 0: threshold 0.5 "
                           "(rank 0 on vm: 0.67)") and "\n" not in line
    line = ar.settings_problem([_settings(0), _settings(1, "nodeB", precision="fp32")])
    assert "precision asked fp32 from FETALIQA_PRECISION (rank 0 on vm: auto, left to the machine)" in line
    line = ar.settings_problem([_settings(0, precision="fp32", precision_from="--precision"),
                                _settings(1, "nodeB", precision="bf16", precision_from="--precision")])
    assert "precision asked bf16 from --precision (rank 0 on vm: fp32 from --precision)" in line
    other = _settings(1, "nodeB", models="demo student", hashes={"cls_hash": "s", "seg_hash": "s"}, threshold=0.5)
    assert "models demo student (rank 0 on vm: demo model) (also threshold)" in ar.settings_problem(
        [_settings(0), _settings(1), other])
    assert "other model files of the same names" in ar.settings_problem(
        [_settings(0), _settings(1, hashes={"cls_hash": "a2", "seg_hash": "b"})])


def test_a_rank_checks_that_its_own_archive_holds_rank_0s_cases(tmp_path):
    """A machine that mounts the archive at another path was handed rank 0's paths: its whole
    shard failed as 'no such file' and rank 0 exited 0. Each rank reads the cases through its
    own path, after checking that it holds the same files."""
    import shutil

    here = tmp_path / "nodeA" / "archive"
    here.mkdir(parents=True)
    for name in ("a.mha", "b.mha"):
        (here / name).write_bytes(name.encode() * 10)
    relative, stats = ["a.mha", "b.mha"], [ar.file_stat(here / "a.mha"), ar.file_stat(here / "b.mha")]
    mounted = tmp_path / "mnt" / "archB"
    mounted.parent.mkdir()
    mounted.symlink_to(here)
    assert ar.archive_problem(ar.Ranks(1, 2, 0), mounted, relative, stats) is None
    copy = tmp_path / "copy"
    shutil.copytree(here, copy)  # (keeps the times)
    assert ar.archive_problem(ar.Ranks(1, 2, 0), copy, relative, stats) is None
    (copy / "b.mha").unlink()
    line = ar.archive_problem(ar.Ranks(1, 2, 0), copy, relative, stats)
    assert f"rank 1 on {ar.hostname()}: its archive {copy} lacks 1 of rank 0's 2 case file(s) (b.mha)" in line
    (copy / "b.mha").write_bytes(b"other")
    line = ar.archive_problem(ar.Ranks(1, 2, 0), copy, relative, stats)
    assert "has 1 file(s) of another size or modification time than rank 0's (b.mha" in line
    assert ar.archive_problem(ar.Ranks(1, 2, 0), here / "a.mha", [""], stats[:1]) is None  # a one-file archive


def test_case_names_are_unique_when_stems_collide():
    members = [Path("a/x.mha"), Path("a/x.nii.gz"), Path("a/y.mha")]
    stem = lambda p: p.name.split(".")[0]  # noqa: E731
    assert ar.case_names(members, stem) == ["x.mha", "x.nii.gz", "y"]
    # a stem equal to another member's whole name: a.mha, a.nii and a.mha.nii shared cases/a.mha/
    members = [Path("d/a.mha"), Path("d/a.mha.nii"), Path("d/a.nii")]
    stem = lambda p: p.name[: -len(p.suffix)]  # noqa: E731
    names = ar.case_names(members, stem)
    assert len(set(names)) == 3 and names == ["a.mha", "a.mha~2", "a.nii"]
    # a sweep named predictions.json.mha took the challenge tree's predictions.json (no tree written)
    members = [Path("d/predictions.json.mha"), Path("d/b.mha")]
    assert ar.case_names(members, stem, reserved=(ar.PREDICTIONS_FILE,)) == ["predictions.json~case", "b"]


def test_file_hash_follows_the_bytes_and_a_detached_data_file(tmp_path):
    raw = tmp_path / "v.raw"
    raw.write_bytes(bytes(range(256)) * 8)
    head = tmp_path / "v.mhd"
    head.write_text("ObjectType = Image\nNDims = 3\nElementDataFile = v.raw\n")
    before = ar.file_hash(head)
    assert before == ar.file_hash(head)
    raw.write_bytes(bytes(range(256)) * 7 + bytes(256))  # same header, other pixels
    assert ar.file_hash(head) != before
    local = tmp_path / "w.mha"
    local.write_bytes(b"ElementDataFile = LOCAL\n" + bytes(10))
    h = ar.file_hash(local)
    local.write_bytes(b"ElementDataFile = LOCAL\n" + bytes(9) + b"\x01")
    assert ar.file_hash(local) != h


def test_keys_change_with_models_threshold_and_file():
    hashes = {"cls_hash": "a", "seg_hash": "b", "base_hash": "c", "precision": "fp32"}
    s = ar.settings_key(hashes, 0.5)
    assert s == ar.settings_key(dict(hashes), 0.5)
    assert s != ar.settings_key(hashes, 0.6)
    assert s != ar.settings_key({**hashes, "seg_hash": "d"}, 0.5)
    assert s != ar.settings_key({**hashes, "base_hash": "e"}, 0.5)
    assert s != ar.settings_key({**hashes, "precision": "bf16"}, 0.5)
    assert ar.case_key("f1", s) != ar.case_key("f2", s)


def _record(name: str, **kw) -> dict:
    rec = {"format": ar.RECORD_FORMAT, "version": ar.RECORD_VERSION, "case": name, "status": "ok",
           "key": "k", "settings_key": "s", "chosen_frame": 3, "ac_mm": 250.5, "rank": 0,
           "seconds": 1.0, "finished_utc": "2026-01-01T00:00:00+00:00"}
    rec.update(kw)
    return rec


def _put_case(out: Path, name: str, files: dict[str, str]) -> None:
    staged = ar.staging_dir(out, name)
    staged.mkdir()
    for fname, text in files.items():
        (staged / fname).write_text(text)
    ar.replace_case_dir(staged, ar.case_dir(out, name))


def test_finished_needs_an_ok_record_with_the_same_key_and_the_files_asked_for(tmp_path):
    _put_case(tmp_path, "c1", {ar.RECORD_FILE: ar.record_json(_record("c1"))})
    folder = ar.case_dir(tmp_path, "c1")
    rec = ar.read_record(folder)
    assert ar.is_finished(rec, "k")
    assert not ar.is_finished(rec, "other key")
    assert not ar.is_finished(rec, "k", ["frame.json"], folder)
    assert not ar.is_finished(_record("c1", status="failed"), "k")
    (folder / ar.RECORD_FILE).write_text("{not json")
    assert ar.read_record(folder) is None
    (folder / ar.RECORD_FILE).write_text(json.dumps({"status": "ok", "key": "k"}))  # not ours
    assert ar.read_record(folder) is None


def test_replacing_a_case_folder_leaves_only_the_new_one(tmp_path):
    _put_case(tmp_path, "c1", {"old.txt": "old", ar.RECORD_FILE: ar.record_json(_record("c1"))})
    _put_case(tmp_path, "c1", {"new.txt": "new"})
    assert sorted(p.name for p in ar.case_dir(tmp_path, "c1").iterdir()) == ["new.txt"]
    assert [p.name for p in (tmp_path / ar.CASES_DIR).iterdir()] == ["c1"]
    # what a killed process leaves behind is removed for its own cases only
    (tmp_path / ar.CASES_DIR / ".c1.tmp-12-0123abcd").mkdir()
    (tmp_path / ar.CASES_DIR / ".c2.tmp-12-0123abcd").mkdir()
    ar.clean_leftovers(tmp_path, ["c1"])
    assert sorted(p.name for p in (tmp_path / ar.CASES_DIR).iterdir()) == [".c2.tmp-12-0123abcd", "c1"]


def test_an_attempt_marker_a_killed_process_was_writing_is_removed_by_the_next_run(tmp_path):
    """A worker killed while it wrote a case's attempt marker left its temporary file (named at
    random, so no run could tell it from a live writer's) among the case folders for good: a
    torchrun rank killed there failed the archive test now and then. The file is named by host and
    process now, and a later run removes a dead process's, not a live one's or another case's."""
    import os

    root = tmp_path / ar.CASES_DIR
    root.mkdir()
    ar.mark_attempt(tmp_path, "c1", "abc", ar.STAGE_READING)
    assert sorted(p.name for p in root.iterdir()) == [".c1" + ar.ATTEMPT_SUFFIX]  # no temporary file left
    me, alive = ar._host_tag(), os.getppid()
    dead = f".c1{ar.ATTEMPT_SUFFIX}.tmp-{me}-999999999-0123abcd"
    kept = [f".c1{ar.ATTEMPT_SUFFIX}.tmp-{me}-{alive}-0123abcd", f".c2{ar.ATTEMPT_SUFFIX}.tmp-{me}-999999999-0123abcd"]
    for name in [dead, *kept]:
        (root / name).write_text("{}")
    ar.clean_leftovers(tmp_path, ["c1"])
    assert sorted(p.name for p in root.iterdir()) == sorted([".c1" + ar.ATTEMPT_SUFFIX, *kept])


def test_two_processes_on_one_folder_keep_each_others_work(tmp_path, monkeypatch):
    """Two machines scoring the same archive into one shared --out: the second one's start-up
    removed the first one's case being written, and when the first put its case in place between
    the second's two renames, the second failed ("Directory not empty") and wrote a failure
    record over the good result."""
    import os
    import time

    root = tmp_path / ar.CASES_DIR
    root.mkdir()
    me, alive = ar._host_tag(), os.getppid()
    kept = [f".c1.tmp-{me}-{alive}-0123abcd", ".c1.tmp-otherhost-99999-0123abcd"]
    gone = [f".c1.tmp-{me}-999999999-0123abcd", ".c1.tmp-otherhost-4-0123abcd", ".c1.old-0123abcd"]
    for name in kept + gone:
        (root / name).mkdir()
    old = time.time() - ar.FOREIGN_LEFTOVER_S - 60
    os.utime(root / ".c1.tmp-otherhost-4-0123abcd", (old, old))
    ar.clean_leftovers(tmp_path, ["c1"])
    assert sorted(p.name for p in root.iterdir()) == sorted(kept)

    # the other process puts its complete folder in place between our two renames
    staged = ar.staging_dir(tmp_path, "c2")
    staged.mkdir()
    (staged / "mine.txt").write_text("mine")
    target = ar.case_dir(tmp_path, "c2")
    real = os.replace
    raced = []

    def replace(src, dst):
        if Path(dst) == target and not raced:
            raced.append(1)
            target.mkdir()
            (target / "theirs.txt").write_text("theirs")
        return real(src, dst)

    monkeypatch.setattr(ar.os, "replace", replace)
    ar.replace_case_dir(staged, target)
    assert raced and sorted(p.name for p in target.iterdir()) == ["mine.txt"]
    assert not [p for p in root.iterdir() if p.name.startswith(".c2.")]


def test_table_is_rebuilt_from_the_folders_and_neutralises_formulas(tmp_path):
    _put_case(tmp_path, "=evil", {ar.RECORD_FILE: ar.record_json(_record("=evil", chosen_frame=-1,
                                                                         ac_mm=None))})
    _put_case(tmp_path, "old", {ar.RECORD_FILE: ar.record_json(_record("old", settings_key="x"))})
    _put_case(tmp_path, "bad", {ar.RECORD_FILE: ar.record_json(_record(
        "bad", status="failed", error="bad.mha: not an image\nsecond line"))})
    names = ["=evil", "old", "bad", "never"]
    rows = ar.table_rows(tmp_path, names, [n + ".mha" for n in names], settings="s")
    path = ar.write_table(tmp_path, rows)
    table = list(csv.DictReader(path.open(encoding="utf-8")))
    assert list(table[0]) == list(ar.TABLE_COLUMNS)
    assert [r["status"] for r in table] == ["ok", "stale", "failed", "missing"]
    assert table[0]["case"] == "'=evil" and table[0]["file"] == "'=evil.mha"
    assert table[0]["chosen_frame"] == "-1" and table[0]["ac_mm"] == ""  # numbers stay numbers
    assert table[2]["error"] == "bad.mha: not an image second line"
    assert "run" in table[3]["error"]
    assert ar.count_statuses(rows) == {"ok": 1, "incomplete": 0, "failed": 1, "missing": 1, "stale": 1}


def test_one_status_vocabulary_for_the_folder_table_and_the_archive_table(tmp_path):
    from fetaliqa_core import export
    from fetaliqa_core.cli import score

    summary = {"sweeps": [{"sweep": 1, "kind": "transverse", "best_frame": 2, "score": 0.9, "ac_mm": None,
                           "ac_status": "none", "ga": "", "ga_weeks": None}],
               "frames_scored": 3, "n_frames": 6, "chosen_frame": 2, "complete": False}
    folder_rows = [dict(zip(score.TABLE_COLUMNS, r)) for r in
                   score.table_rows("a.mha", summary) + score.table_rows("b.mha", {**summary, "complete": True})
                   + [score.failed_row("c.mha", "c.mha: not an image")]]
    assert [r["status"] for r in folder_rows] == ["incomplete", "ok", "failed"]
    assert folder_rows[2]["error"] == "c.mha: not an image"
    # an archive case stopped part way is 'incomplete' too, and a rerun scores it again
    _put_case(tmp_path, "part", {ar.RECORD_FILE: ar.record_json(_record("part", status="incomplete"))})
    rec = ar.read_record(ar.case_dir(tmp_path, "part"))
    assert rec is not None and not ar.is_finished(rec, "k")
    archive_rows = ar.table_rows(tmp_path, ["part", "never"], ["part.mha", "never.mha"], settings="s")
    assert [r["status"] for r in archive_rows] == ["incomplete", "missing"]
    assert set(ar.count_statuses(archive_rows)) == set(export.STATUSES)
    assert {r["status"] for r in folder_rows + archive_rows} <= set(export.STATUSES)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_read_ahead_keeps_order_and_bounds_what_is_read(depth):
    items = [ar.Item(i, f"c{i}", Path(f"c{i}.mha")) for i in range(6)]
    prepared: list[int] = []
    consumed: list[int] = []

    def prepare(item):
        prepared.append(item.index)
        if item.index == 2:
            item.error = "broken"

    for item in ar.read_ahead(items, prepare, depth):
        time.sleep(0.02)  # the reader would run far ahead if nothing bounded it
        # at most `depth` items are read ahead of the one in our hands
        assert len(prepared) - len(consumed) <= depth + 1
        consumed.append(item.index)
    assert consumed == list(range(6)) and prepared == list(range(6))
    assert items[2].error == "broken"


def test_read_ahead_overlaps_reading_with_the_consumer():
    items = [ar.Item(i, f"c{i}", Path(f"c{i}.mha")) for i in range(6)]

    def run(depth, workers=None, read=0.1):
        t0 = time.perf_counter()
        for _ in ar.read_ahead(items, lambda item: time.sleep(read), depth, workers):
            time.sleep(0.1)
        return time.perf_counter() - t0

    assert run(0) > 1.15  # 6 x (read + score)
    assert run(2) < 1.0  # reads hidden behind scoring: about 6 x 0.1 + 0.1
    # reads twice as slow as scoring: one reader is the bottleneck, two keep up
    assert run(2, workers=1, read=0.2) > 1.15
    assert run(2, workers=2, read=0.2) < 1.05


def test_read_ahead_stops_its_reader_when_the_consumer_stops():
    items = [ar.Item(i, f"c{i}", Path(f"c{i}.mha")) for i in range(100)]
    gen = ar.read_ahead(items, lambda item: None, 2)
    next(gen)
    gen.close()
    time.sleep(0.3)
    assert not [t for t in threading.enumerate() if t.name.startswith("fetaliqa-read-ahead")]


def test_rank0_waits_for_live_ranks_and_gives_up_on_a_silent_one(tmp_path):
    run_id = ar.new_run_id()
    alive = ar.Heartbeat(tmp_path, run_id, 1, interval=0.05).start()
    silent = ar.Heartbeat(tmp_path, run_id, 2, interval=0.05).start()
    silent._stop.set()  # a rank killed mid-run: its file stays, unchanged
    silent._thread.join()

    def finish_later():
        time.sleep(0.8)
        alive.finish({"scored": 2, "skipped": 1, "failed": 0})

    threading.Thread(target=finish_later).start()
    t0 = time.monotonic()
    finished, dead = ar.wait_for_ranks(tmp_path, run_id, [1, 2], timeout=0.4, poll=0.05)
    waited = time.monotonic() - t0
    assert finished == {1: {"scored": 2, "skipped": 1, "failed": 0}}
    assert dead == [2]
    assert 0.7 < waited < 5  # waited for the live rank, not for ever for the dead one
    other = ar.Heartbeat(tmp_path, ar.new_run_id(), 1, interval=0.05).start()  # another launch, running
    other._stop.set()
    other._thread.join()
    ar.remove_state(tmp_path, run_id)  # this run's heartbeats only: the other's rank 0 still waits on them
    assert not (tmp_path / ar.STATE_DIR / run_id).exists() and other.path.exists()
    old = time.time() - ar.FOREIGN_LEFTOVER_S - 1
    os.utime(other.path, (old, old))  # ... until they are as old as a killed run's
    ar.remove_state(tmp_path, run_id)
    assert not (tmp_path / ar.STATE_DIR).exists()


def test_rank0_takes_a_rank_that_never_started_as_dead(tmp_path):
    finished, dead = ar.wait_for_ranks(tmp_path, "run", [1], timeout=0.2, poll=0.05)
    assert finished == {} and dead == [1]


def test_case_errors_are_one_line_naming_the_cause(tmp_path):
    from fetaliqa_core.errors import FetalIQAError

    member = tmp_path / "c.mha"
    assert ar.case_error(FetalIQAError("c.mha: not an image"), member) == "c.mha: not an image"
    text = ar.case_error(PermissionError(13, "Permission denied", str(member)), member)
    assert text.startswith("c.mha: permission denied") and "\n" not in text
    # and what to do: a row said "Permission denied" and nothing more
    assert "give this user read access to it" in text and text.endswith("then run the same command again")
    gone = ar.case_error(FileNotFoundError(2, "No such file or directory", str(member)), member)
    assert "went away during the run" in gone
    assert "unexpected ValueError" in ar.case_error(ValueError("bad"), member)


def test_a_folder_not_written_by_us_is_never_replaced(tmp_path):
    target = ar.case_dir(tmp_path, "c1")
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    assert ar.foreign_folder(target)
    staged = ar.staging_dir(tmp_path, "c1")
    staged.mkdir()
    from fetaliqa_core.errors import FetalIQAError

    with pytest.raises(FetalIQAError, match="not written by FetalIQA"):
        ar.replace_case_dir(staged, target)
    assert (target / "notes.txt").read_text() == "mine"
    empty = ar.case_dir(tmp_path, "c2")
    empty.mkdir()
    assert not ar.foreign_folder(empty) and not ar.foreign_folder(ar.case_dir(tmp_path, "c3"))


@pytest.mark.parametrize("cell, shown", [("=1+1", "'=1+1"), ("+cmd|x", "'+cmd|x"), ("-2+3", "'-2+3"),
                                         ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("-1", "-1"),
                                         ("-0.25", "-0.25"), ("case.mha", "case.mha"), (-1, "-1"),
                                         # behind spaces or invisible marks, and full-width forms
                                         (" =HYPERLINK(x)", "' =HYPERLINK(x)"), ("\u200b=cmd", "'\u200b=cmd"),
                                         ("\uff1dSUM(A1)", "'\uff1dSUM(A1)"), (" -2", " -2")])
def test_one_spreadsheet_rule_for_every_table(cell, shown):
    from fetaliqa_core.cli.score import _cell
    from fetaliqa_core.files import spreadsheet_safe

    assert spreadsheet_safe(cell) == shown
    assert _cell(cell) == shown  # the folder table of plain `fetaliqa score FOLDER`


def test_run_settings_keep_the_key_of_plain_runs_and_tell_machines_apart(monkeypatch, tmp_path):
    """Review findings: adding the spacing and the student to the key changed it for every plain
    run (each archive scored before would be rescored in full); and two host names that differ
    only in dropped characters (gpu-1-12, gpu-11-2) gave one tag, so one machine removed the
    other's case being written."""
    hashes = {"cls_hash": "a", "seg_hash": "b", "base_hash": "c", "precision": "bf16"}
    assert ar.run_settings_key(hashes, 0.5) == ar.settings_key(hashes, 0.5)
    assert ar.run_settings_key(hashes, 0.5, spacing=0.3) != ar.settings_key(hashes, 0.5)
    assert ar.run_settings_key(hashes, 0.5, student_hash="s") != ar.run_settings_key(hashes, 0.5, spacing=0.3)
    tags = set()
    for name in ("gpu-1-12", "gpu-11-2", "node_3", "node-3"):
        monkeypatch.setattr(ar, "hostname", lambda name=name: name)
        tags.add(ar._host_tag())
    assert len(tags) == 4


def test_a_swap_that_fails_puts_the_old_result_back(tmp_path):
    _put_case(tmp_path, "c1", {"old.txt": "old", ar.RECORD_FILE: ar.record_json(_record("c1"))})
    gone = ar.staging_dir(tmp_path, "c1")  # removed by someone else before the rename
    with pytest.raises(OSError):
        ar.replace_case_dir(gone, ar.case_dir(tmp_path, "c1"))
    assert sorted(p.name for p in ar.case_dir(tmp_path, "c1").iterdir()) == [ar.RECORD_FILE, "old.txt"]
    assert [p.name for p in (tmp_path / ar.CASES_DIR).iterdir()] == ["c1"]


def test_a_challenge_folder_with_the_user_s_own_files_is_never_rebuilt(tmp_path):
    """OUT/challenge holding a predictions.json counted as FetalIQA's, and was replaced whole:
    the user's other files there went with it."""
    from fetaliqa_core import archive as ar
    from fetaliqa_core import export

    target = tmp_path / ar.CHALLENGE_DIR
    assert ar._challenge_tree_is_ours(tmp_path, target)  # absent
    target.mkdir()
    assert ar._challenge_tree_is_ours(tmp_path, target)  # empty
    (target / ar.PREDICTIONS_FILE).write_text("[]")
    for _src, rel in export.challenge_job_files(target / "case1"):
        (target / "case1" / rel).parent.mkdir(parents=True, exist_ok=True)
        (target / "case1" / rel).write_text("1")
    (target / "gone").mkdir()
    assert ar._challenge_tree_is_ours(tmp_path, target)  # its own layout only
    (target / "case1" / "output" / "notes.txt").write_text("mine")
    assert not ar._challenge_tree_is_ours(tmp_path, target)
    (target / "case1" / "output" / "notes.txt").unlink()
    (target / "README.txt").write_text("mine")
    assert not ar._challenge_tree_is_ours(tmp_path, target)


def test_a_full_disk_stops_the_archive_and_leftovers_of_the_results_folder_go(tmp_path):
    """A full disk was recorded as the failure of every later sweep file (naming the input); the
    results folder's own temporary folder a killed process left inside a case's staging name was
    never removed; a challenge tree being written by another run was deleted under it."""
    import errno

    from fetaliqa_core.cli.score_archive import _output_side
    from fetaliqa_core.errors import FetalIQAError

    assert _output_side(OSError(errno.ENOSPC, "No space left on device")) == "the disk is full"
    assert _output_side(FetalIQAError("x.mha: could not write the file (No space left on device).")) == "the disk is full"
    assert _output_side(FetalIQAError("x.mha: the file is truncated")) == ""
    root = tmp_path / ar.CASES_DIR
    root.mkdir()
    dead = 2 ** 22 + 12345  # no such process
    left = root / f"..c1.tmp-{ar._host_tag()}-{dead}-0123abcd.x1y2z3"
    left.mkdir()
    mine = root / f"..c1.tmp-{ar._host_tag()}-{os.getpid()}-0123abcd.x1y2z3"
    mine.mkdir()
    ar.clean_leftovers(tmp_path, ["c1"])
    assert not left.exists()
    # another machine's challenge tree in the writing is kept (until it is old); a dead one of ours goes
    theirs = tmp_path / f".{ar.CHALLENGE_DIR}.tmp-otherhost.abcd1234-77-0123abcd"
    ours = tmp_path / f".{ar.CHALLENGE_DIR}.tmp-{ar._host_tag()}-{dead}-0123abcd"
    theirs.mkdir()
    ours.mkdir()
    ar._clean_challenge_leftovers(tmp_path)
    assert theirs.exists() and not ours.exists()


def test_a_foreign_folder_where_a_case_goes_is_a_failure_in_the_table(tmp_path):
    """It was 'missing: not scored yet; run the same command again' for ever: a rerun refuses it."""
    folder = ar.case_dir(tmp_path, "c1")
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    rows = ar.table_rows(tmp_path, ["c1", "c2"], ["c1.mha", "c2.mha"], None)
    assert rows[0]["status"] == "failed" and "not written by FetalIQA" in rows[0]["error"]
    assert rows[1]["status"] == "missing"


def test_a_killed_launchs_state_on_this_machine_goes_with_the_next_finished_run(tmp_path):
    """A torchrun run killed on this machine left OUT/.archive/<run id> behind for 6 hours after a
    rerun had finished the archive (plain reruns never removed it). A run whose rank 0 is a
    process of this machine that is gone is over: its folder goes; one of another machine, or
    whose rank 0 is alive, stays."""
    import subprocess

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    runs = {}
    for name, host, pid in (("killed", ar.hostname(), gone.pid), ("alive", ar.hostname(), os.getpid()),
                            ("elsewhere", ar.hostname() + "-other", gone.pid)):
        run_id = ar.new_run_id() + name
        ar.plan_file(tmp_path, run_id).parent.mkdir(parents=True)
        ar.plan_file(tmp_path, run_id).write_text(json.dumps({"host": host, "pid": pid}), encoding="utf-8")
        runs[name] = tmp_path / ar.STATE_DIR / run_id
    ar.remove_state(tmp_path)  # a run of one process has no state of its own
    assert not runs["killed"].exists()
    assert runs["alive"].exists() and runs["elsewhere"].exists()


def test_a_rescore_reason_names_the_number_format_only_when_one_was_asked_for():
    """A rerun with --spacing on a machine that chose bf16 by itself said "rescored: scored before
    in fp32 (now bf16, as asked)": nothing was asked, and the cause was the spacing."""
    hashes = {"cls_hash": "c", "seg_hash": "s", "base_hash": "b", "precision": "bf16"}
    columns = ar.bundle_columns(type("M", (), {"cls": None, "seg": None})(), hashes)
    old = ar.run_settings_keys(dict(hashes, precision="fp32"), 0.5)
    record = {"status": "ok", "file_hash": "f", "settings_key": old[0], "threshold": 0.5, "precision": "fp32",
              **dict(columns, precision="fp32")}
    left = ar.run_settings_keys(hashes, 0.5, spacing=0.3)
    assert ar.rescore_reason(record, "f", columns, 0.5, left) == \
        "scored before with other settings (pixel spacing or cascade)"
    asked = ar.run_settings_keys(hashes, 0.5, precision_asked=True)
    assert ar.rescore_reason(record, "f", columns, 0.5, asked) == "scored before in fp32 (now bf16, as asked)"


def _case_of_one_run(out: Path, name: str, challenge: bool, frame: int = 3) -> Path:
    """A case folder as a run writes it: its results, then a record listing them."""
    files = {"frames.csv": f"frame,p\n{frame},0.9\n", "summary.json": json.dumps({"chosen_frame": frame})}
    if challenge:
        files |= {"fetal-abdomen-frame-number.json": str(frame), "fetal-abdomen-segmentation.mha": "mask"}
    staged = ar.staging_dir(out, name)
    staged.mkdir()
    for fname, text in files.items():
        (staged / fname).write_text(text)
    rec = _record(name, chosen_frame=frame, files=ar.folder_files(staged))
    (staged / ar.RECORD_FILE).write_text(ar.record_json(rec))
    ar.replace_case_dir(staged, ar.case_dir(out, name))
    return ar.case_dir(out, name)


def test_a_case_folder_holding_another_runs_challenge_files_is_not_finished_nor_in_the_challenge_tree(tmp_path):
    """Two runs' output folders merged with cp -r held one run's record and results beside the
    other run's challenge answer: the merge kept every case, and in half of them the challenge
    answer was not the table's chosen frame. A folder's files are now judged as one set."""
    challenge = ["fetal-abdomen-frame-number.json", "fetal-abdomen-segmentation.mha"]
    a = _case_of_one_run(tmp_path / "a", "c1", challenge=True, frame=7)
    b = _case_of_one_run(tmp_path / "b", "c1", challenge=False, frame=-1)
    for name in challenge:  # cp -r a/cases/. b/cases/.: a's challenge files beside b's record
        (b / name).write_bytes((a / name).read_bytes())
    rec = ar.read_record(b)
    assert ar.is_finished(rec, "k")  # without the challenge files asked for
    assert not ar.is_finished(rec, "k", challenge, b)
    why = ar.rescore_reason(rec, None, {}, 0.5, ("s",), challenge, b)
    assert why and "challenge output files were not written with its case.json" in why
    rows = ar.table_rows(tmp_path / "b", ["c1"], ["c1.mha"], None)
    assert rows[0]["status"] == "ok"  # the record and its own files agree; only the answer is another's
    _tree, n, left_out = ar.write_challenge_tree(tmp_path / "b", rows)
    assert n == 0 and left_out == ["c1"]
    # the run's own challenge files are gathered
    assert ar.write_challenge_tree(tmp_path / "a", ar.table_rows(tmp_path / "a", ["c1"], ["c1.mha"], None))[1] == 1


def test_a_record_changed_by_hand_or_a_damaged_result_file_makes_the_case_stale_and_rescored(tmp_path):
    """The table was built from case.json alone: a record edited to chosen frame 7, AC 99.9 'ok'
    showed so while its summary.json said no frame, and a summary.json cut to 50 bytes was kept as
    'ok' without a word."""
    for damage, said in (("record", "case.json was changed after it was written"),
                         ("summary", "summary.json is not the one written with its case.json"),
                         ("frames", "frames.csv is missing")):
        out = tmp_path / damage
        folder = _case_of_one_run(out, "c1", challenge=False, frame=-1)
        rec = ar.read_record(folder)
        assert ar.is_finished(rec, "k", (), folder) and ar.table_rows(out, ["c1"], ["c1.mha"], None)[0]["status"] == "ok"
        if damage == "record":
            edited = json.loads((folder / ar.RECORD_FILE).read_text()) | {"chosen_frame": 7, "ac_mm": 99.9}
            (folder / ar.RECORD_FILE).write_text(json.dumps(edited))
        elif damage == "summary":
            (folder / "summary.json").write_text('{"chosen_fr')
        else:
            (folder / "frames.csv").unlink()
        rec = ar.read_record(folder)
        assert not ar.is_finished(rec, "k", (), folder)
        assert said in ar.rescore_reason(rec, None, {}, 0.5, ("s",), (), folder)
        row = ar.table_rows(out, ["c1"], ["c1.mha"], None)[0]
        assert row["status"] == "stale" and said in row["error"], row
    # a record rewritten by the program itself (a new file_stat) stays sealed
    folder = _case_of_one_run(tmp_path / "refresh", "c1", challenge=False)
    ar.refresh_file_stat(folder, ar.read_record(folder), "newstat")
    assert ar.read_record(folder)["file_stat"] == "newstat" and ar.folder_problem(folder, ar.read_record(folder)) is None


def test_a_case_json_cut_short_in_a_folder_of_our_files_is_scored_again_not_called_foreign(tmp_path):
    """A case.json cut to 100 bytes made the case 'failed: not written by FetalIQA; move it away'
    for good, though the folder held only FetalIQA's files."""
    folder = _case_of_one_run(tmp_path, "c1", challenge=True)
    (folder / ar.RECORD_FILE).write_text((folder / ar.RECORD_FILE).read_text()[:100])
    assert ar.damaged_folder(folder) and not ar.foreign_folder(folder)
    row = ar.table_rows(tmp_path, ["c1"], ["c1.mha"], None)[0]
    assert row["status"] == "missing" and "case.json is damaged" in row["error"]
    assert ar.rescore_reason(None, None, {}, 0.5, ("s",), (), folder) == "its case.json is damaged"
    (folder / "notes.txt").write_text("mine")  # with a file of the user's it is left alone
    assert ar.foreign_folder(folder)


def test_a_shard_by_name_moves_only_the_case_added_or_removed(tmp_path):
    """--shard split by position in each part's own listing: one file added between two parts'
    starts made both score the same half and left 13 of 25 cases to neither, without a word."""
    names = [f"{k:08x}-case" for k in range(0, 24 * 7919, 7919)]
    before = [set(names[i] for i in ar.shard_by_name(names, k, 2)) for k in (1, 2)]
    assert before[0] | before[1] == set(names) and not before[0] & before[1]
    assert min(map(len, before)) >= 6  # roughly even
    added = sorted(names + ["00-added"])
    after = [set(added[i] for i in ar.shard_by_name(added, k, 2)) for k in (1, 2)]
    assert after[0] - {"00-added"} == before[0] and after[1] - {"00-added"} == before[1]
    # part 1 listed before the file came, part 2 after: every case is in one of them
    assert before[0] | after[1] == set(added) - ({"00-added"} & after[0])


def test_leftovers_of_a_killed_run_with_uuid_case_names_are_removed(tmp_path):
    """A SIGKILL mid-write left '..<case>.tm.<random>' folders no run removed: the results'
    temporary folder was made beside the staging folder, its name cut to 40 characters, which
    dropped the process's tag for every 36-character case name (ACOUSLIC's UUIDs)."""
    import fetaliqa_core.files as files

    name = "7a1e2fd8-605f-4608-add5-96ea5d54efd4"
    out = tmp_path
    dead = 2 ** 22 + 12345  # no such process: the one that was killed
    staged = ar.staging_dir(out, name).with_name(f".{name}.tmp-{ar._host_tag()}-{dead}-0123abcd")
    staged.mkdir()  # as an archive run makes it now
    with pytest.raises(RuntimeError):
        with files.atomic_output_dir(staged) as tmp:
            (tmp / "frames.csv").write_text("x")
            raise RuntimeError("killed")
    # the writer's temporary folder was inside the staging folder, which carries the tag
    assert [p.name for p in (out / ar.CASES_DIR).iterdir()] == [staged.name]
    # one left by an earlier version beside it goes once it is old (no owner can be read from it)
    old = out / ar.CASES_DIR / f".{('.' + name + '.tmp-host')[:40]}.m1nfqs1s"
    old.mkdir()
    (old / "frames.csv").write_text("x")
    other = out / ar.CASES_DIR / f"..{name[:30]}-other.m1nfqs1s"  # not of this case's pattern
    other.mkdir()
    ar.clean_leftovers(out, [name])
    assert old.exists() and not staged.exists()  # too young to be taken for a leftover
    past = time.time() - ar.FOREIGN_LEFTOVER_S - 10
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    ar.clean_leftovers(out, [name])
    assert not old.exists() and other.exists()


def test_an_earlier_versions_challenge_answer_beside_its_chosen_frame_is_kept(tmp_path):
    """Results written by the previous version list no files, so only their challenge answer's
    frame is checked against the record's chosen frame: an answer on a neighbouring frame, or -1,
    which the export gives by design where the chosen frame's mask is empty in the field of view,
    was called "another run's, copied into its folder" and the case scored again."""
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_SEARCH

    folder = tmp_path / "c1"
    folder.mkdir()
    record = _record("c1", chosen_frame=9)
    for answer, kept in ((9, True), (10, True), (-1, True), (9 + CHALLENGE_MASK_SEARCH + 1, False)):
        (folder / CHALLENGE_FRAME_FILE).write_text(json.dumps(answer))
        problem = ar._legacy_challenge_problem(folder, record)
        assert (problem is None) is kept, (answer, problem)


@pytest.mark.timeout(60)
def test_a_record_listing_a_device_a_pipe_a_link_or_a_file_outside_its_folder_is_stale_and_none_is_read(tmp_path):
    """A case.json edited to list /dev/zero or a pipe, and sealed again (the seal is a hash anyone
    can redo), made a rerun read for ever; ../ or an absolute path had a file outside the case
    folder read, and one listed with its own hash, or a result file replaced by a link to a copy,
    kept the case as finished. The list is trusted only for plain names of regular files in the
    folder: anything else makes the case stale, with why, and is never opened."""
    import hashlib

    outside = tmp_path / "mine.txt"
    outside.write_text("the user's own file\n")
    digest = hashlib.blake2b(outside.read_bytes(), digest_size=16).hexdigest()
    edits = [("../../../mine.txt", "lists '../../../mine.txt', which is not a file of its folder"),
             (str(outside), "which is not a file of its folder")]
    if os.path.exists("/dev/zero"):
        edits.append(("/dev/zero", "lists '/dev/zero', which is not a file of its folder"))
    if hasattr(os, "symlink"):
        edits.append(("link", "its frames.csv is not a plain file"))
    if hasattr(os, "mkfifo"):
        edits += [("pipe", "its pipe.csv is not a plain file"), ("frames pipe", "its frames.csv is not a plain file")]
    for k, (edit, said) in enumerate(edits):
        out = tmp_path / f"o{k}"
        folder = _case_of_one_run(out, "c1", challenge=False)
        rec = ar.read_record(folder)
        if edit == "link":  # the same bytes, elsewhere
            copy = tmp_path / "frames-copy.csv"
            copy.write_bytes((folder / "frames.csv").read_bytes())
            (folder / "frames.csv").unlink()
            (folder / "frames.csv").symlink_to(copy)
        elif edit == "pipe":
            os.mkfifo(folder / "pipe.csv")
            rec["files"]["pipe.csv"] = "0" * 32
        elif edit == "frames pipe":
            (folder / "frames.csv").unlink()
            os.mkfifo(folder / "frames.csv")
        else:
            rec["files"][edit] = digest if edit != "/dev/zero" else "0" * 32
        (folder / ar.RECORD_FILE).write_text(ar.record_json(rec))  # sealed again
        rec = ar.read_record(folder)
        assert not ar.is_finished(rec, "k", (), folder), edit
        assert said in ar.rescore_reason(rec, None, {}, 0.5, ("s",), (), folder), edit
        row = ar.table_rows(out, ["c1"], ["c1.mha"], None)[0]
        assert row["status"] == "stale" and said in row["error"], (edit, row)
    assert outside.read_text() == "the user's own file\n"
    if hasattr(os, "mkfifo"):  # a pipe named case.json is not waited on either: the folder is not ours
        folder = _case_of_one_run(tmp_path / "p", "c1", challenge=False)
        (folder / ar.RECORD_FILE).unlink()
        os.mkfifo(folder / ar.RECORD_FILE)
        assert ar.read_record(folder) is None and ar.foreign_folder(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_sigterm_ends_a_run_whose_reader_is_stuck_in_a_read_that_never_ends(tmp_path):
    """SIGTERM (and Ctrl-C) printed "interrupted" and the process went on for ever: the
    read-ahead's thread pool was waited for, and its reader was stuck opening a pipe that no one
    writes (or reading /dev/zero). The run now ends with status 130 within a few seconds."""
    import signal
    import subprocess

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    script = f"""
import sys
from pathlib import Path
from fetaliqa_core import archive as ar
from fetaliqa_core.cli import run_guarded

def prepare(item):
    if item.index == 1:
        print("reading", flush=True)
        open({str(pipe)!r}, "rb").read()  # no writer: waits for ever

def consume():
    for item in ar.read_ahead([ar.Item(i, f"c{{i}}", Path(f"c{{i}}.mha")) for i in range(3)], prepare, 2):
        pass

sys.exit(run_guarded(consume))
"""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "reading"
        time.sleep(0.5)  # the consumer waits for the case the reader is stuck on
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 30 s after SIGTERM")
        assert rc == 130 and time.monotonic() - t0 < 10
        err = proc.stderr.read()
        assert "interrupted" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_output_folder_whose_file_system_takes_no_locks_is_a_warning_not_a_refusal(tmp_path, monkeypatch):
    """Some network file systems refuse flock: the run goes on, saying it is not guarded."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    try:
        warning = ar.lock_out(tmp_path / "out")
    finally:
        ar.unlock_outs()
    assert warning.startswith(f"{tmp_path / 'out'}: its file system takes no lock (")
    assert "would not be refused" in warning


def test_a_run_holding_its_output_folder_may_take_it_again_and_releases_it(tmp_path):
    out = tmp_path / "out"
    assert ar.lock_out(out) == "" and ar.lock_out(out) == ""  # (the same run: not refused)
    text = (out / ar.LOCK_FILE).read_text()
    assert text == f"{ar.hostname()} {os.getpid()}\n"
    ar.unlock_outs()
    assert not ar._OUT_LOCKS


def test_a_link_where_the_lock_goes_is_not_followed_and_what_it_leads_to_is_not_written(tmp_path):
    """The run writes its host and pid into OUT's lock file: a link there (to someone's file) had
    that file cut to one line. The link is left as it is, the run saying it is not guarded."""
    out = tmp_path / "out"
    out.mkdir()
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("their notes\n")
    (out / ar.LOCK_FILE).symlink_to(theirs)
    try:
        warning = ar.lock_out(out)
    finally:
        ar.unlock_outs()
    assert theirs.read_text() == "their notes\n"
    assert "is a link, not this program's lock" in warning and "would not be refused" in warning
