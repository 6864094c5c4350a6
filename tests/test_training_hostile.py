"""Training inputs that are damaged or hostile: one line each, never a traceback, and never
advice to load a file unsafely."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fetaliqa_core.errors import FetalIQAError
from training import dataset as ds
from training.checkpoints import check_resume, load_checkpoint
from training.config import CONFIG_FILE


class Payload:
    """Stands for an attacker's object: unpickling it would run code."""

    def __reduce__(self):
        return (print, ("this would run code",))


def test_resume_checkpoint_that_lacks_its_keys_gives_one_line(tmp_path):
    path = tmp_path / "epoch_001.pt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(FetalIQAError, match="lacks model, optimizer, history, best") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_hostile_resume_checkpoint_is_refused_without_advice_to_load_it_unsafely(tmp_path):
    path = tmp_path / "epoch_001.pt"
    torch.save({"epoch": 1, "model": Payload()}, path)
    with pytest.raises(FetalIQAError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "could run code" in message and "\n" not in message
    assert "weights_only" not in message and "False" not in message


def test_resume_checkpoint_with_damaged_history_gives_one_line(tmp_path):
    path = tmp_path / "epoch_001.pt"
    torch.save({"epoch": 1, "model": {}, "optimizer": {}, "history": "[[[", "best": "{}"}, path)
    with pytest.raises(FetalIQAError, match="damaged training history"):
        load_checkpoint(path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 50_000])
def test_resume_with_a_corrupt_run_config_gives_one_line(tmp_path, text):
    (tmp_path / CONFIG_FILE).write_text(text)
    cfg = SimpleNamespace(run_dir=tmp_path, resume=True, to_json=lambda: {})
    with pytest.raises(FetalIQAError) as info:
        check_resume(cfg)
    assert "\n" not in str(info.value) and "resume" in str(info.value).lower()


def test_extra_labels_csv_in_latin1_is_read(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("uuid,frame,label,reviewer\ncase-1,3,optimal,Dr Müller\ncase-2,4,0,Zoë\n".encode("latin-1"))
    assert ds.read_extra_labels(path).targets() == {("case-1", 3): 1.0, ("case-2", 4): 0.0}


def test_an_extra_labels_file_with_a_huge_field_is_one_line(tmp_path):
    from training.dataset import read_extra_labels

    path = tmp_path / "labels.csv"
    path.write_text("uuid,frame,label\n" + "x" * 400_000 + ",1,1\n")
    with pytest.raises(FetalIQAError, match="not a readable CSV"):
        read_extra_labels(path)


def test_a_run_that_stopped_before_its_first_epoch_says_its_folder_can_go(tmp_path):
    """A wrong --base or a divergence left config.json behind: the corrected command was refused
    without --resume ('already holds a run') and with it ('started with base=...'), and nothing
    said to delete the folder."""
    (tmp_path / CONFIG_FILE).write_text('{"task": "cls", "data": "d", "out": "r", "split_seed": 42, "lr": 1000000.0}')
    for resume in (False, True):
        cfg = SimpleNamespace(run_dir=tmp_path, resume=resume, to_json=lambda: {"lr": 0.001})
        with pytest.raises(FetalIQAError, match="stopped before its first epoch ended.*Delete that folder"):
            check_resume(cfg)


def test_a_folder_of_another_program_is_not_called_a_run(tmp_path):
    """Another tool's config.json in --out was called 'a run that stopped before its first epoch
    ended ... Delete that folder' (with 'task=None' under --resume)."""
    (tmp_path / CONFIG_FILE).write_text('{"lr": 0.1, "model": "resnet"}')
    for resume in (False, True):
        cfg = SimpleNamespace(run_dir=tmp_path, resume=resume, to_json=lambda: {"lr": 0.001})
        with pytest.raises(FetalIQAError, match="not a FetalIQA training run.*choose another --out") as exc:
            check_resume(cfg)
        assert "Delete" not in str(exc.value) and "None" not in str(exc.value)
    assert (tmp_path / CONFIG_FILE).read_text() == '{"lr": 0.1, "model": "resnet"}'


def test_a_second_training_into_a_folder_in_use_is_refused(tmp_path):
    """Two trainings into one --out at once both said done and left one's bundle beside the
    other's configuration; one started seconds later was told to delete the live run's folder."""
    import subprocess
    import sys

    from training.trials import claim_run_folder

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from training.trials import claim_run_folder; "
        f"claim_run_folder(__import__('pathlib').Path({str(run)!r})); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FetalIQAError, match=f"another FetalIQA run .* is writing to this folder \\(pid {holder.pid}\\)"):
            claim_run_folder(run)
    finally:
        holder.kill()
        holder.wait()
    claim_run_folder(run)  # free again once that run has ended


def test_train_says_an_out_folder_it_cannot_write_in_before_reading_the_dataset(tmp_path, monkeypatch):
    """A read-only --out was found at the run's first write, once the splits were built and the
    cases read (as distill and eval did, after hours of work): said first now, in one line."""
    import errno
    import os

    import training.trials as trials
    from fetaliqa_core import paths
    from training.config import TrainConfig

    monkeypatch.setattr(trials, "prepare_splits", lambda *a, **k: pytest.fail("the dataset was read"))
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    cfg = TrainConfig(task="cls", data=str(tmp_path), out=str(afile / "run"), base_config="tiny", progress_bar=False)
    with pytest.raises(FetalIQAError, match="cannot write results there .a part of the path is a file"):
        trials.train(cfg)

    def read_only(folder):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder / ".fetaliqa-probe-x"))

    monkeypatch.setattr(paths, "probe_writable", read_only)
    cfg = TrainConfig(task="cls", data=str(tmp_path), out=str(tmp_path / "new" / "run"), base_config="tiny", progress_bar=False)
    with pytest.raises(FetalIQAError, match="cannot write results there .the disk is read-only.. Give --out a folder"):
        trials.train(cfg)
    assert not (tmp_path / "new").exists()


def test_a_full_disk_leaves_the_earlier_bundle_whole_and_says_so(tmp_path, monkeypatch):
    """`train` on a full disk printed 'fetaliqa: Error; check the path and try again.' and left
    RUN/bundle with a half-copied adapter beside a complete manifest."""
    import errno
    import os
    import shutil

    from fetaliqa_core.errors import FetalIQAError
    from training import trials

    source, final = tmp_path / "trial1" / "bundle", tmp_path / "run" / "bundle"
    for folder, text in ((source, "new"), (final, "old")):
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(text)
        (folder / "adapter.safetensors").write_text(text * 100)

    def full(src, dst, *a, **k):
        os.makedirs(dst)
        (Path(dst) / "manifest.json").write_text("new")
        raise shutil.Error([(str(src), str(dst), f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}")])

    monkeypatch.setattr(trials.shutil, "copytree", full)
    with pytest.raises(FetalIQAError) as exc:
        trials._put_bundle(source, final)
    assert "full" in str(exc.value) and "--resume" in str(exc.value) and "Error;" not in str(exc.value)
    assert (final / "adapter.safetensors").read_text() == "old" * 100  # the earlier bundle, whole
    assert sorted(p.name for p in final.parent.iterdir()) == ["bundle"]  # nothing half-written beside it
    monkeypatch.undo()
    trials._put_bundle(source, final)
    assert (final / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["bundle"]


def test_labels_that_name_no_case_of_the_dataset_are_counted(tmp_path):
    """Labels exported under ids the dataset does not use relabelled 0 frames, and the line said
    only that: nobody could tell labels that matched nothing from labels that changed nothing."""
    from training.data import extra_labels_message

    path = tmp_path / "labels.csv"
    path.write_text("uuid_or_hash,frame,label\n" + "".join(f"{'ab' * 32},{f},0\n" for f in range(5))
                    + "case001,2,1\n")
    cases = [SimpleNamespace(uuid="case001"), SimpleNamespace(uuid="case002")]
    index = ds.FrameIndex(cases, np.zeros(4, np.int32), np.arange(4, dtype=np.int32), np.zeros(4, np.int16),
                          np.zeros(4, np.uint8))
    line = extra_labels_message(path, index, cases)
    assert "\n" not in line
    assert "1 training frame(s) relabelled" in line and "5 label(s) name no case in --data" in line
    # labels on a case of the data outside the training split: said, not a bare 0
    path.write_text("uuid_or_hash,frame,label\ncase002,1,1\ncase002,2,1\n")
    train = ds.FrameIndex(cases[:1], np.zeros(4, np.int32), np.arange(4, dtype=np.int32), np.zeros(4, np.int16),
                          np.zeros(4, np.uint8))
    line = extra_labels_message(path, train, cases)
    assert "0 training frame(s) relabelled" in line and "2 label(s) on validation or test cases" in line


_SAVES_UNDER_A_SIZE_LIMIT = r"""
import resource, sys
from pathlib import Path
import torch
from training.checkpoints import save_checkpoint
from fetaliqa_core.models.base import save_base_weights

resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
out = Path(sys.argv[1])
model = torch.nn.Linear(512, 512)
optimizer = torch.optim.AdamW(model.parameters())
model(torch.zeros(1, 512)).sum().backward()
optimizer.step()
for name, save in (("checkpoint", lambda: save_checkpoint(out / "checkpoints" / "epoch_001.pt", model, optimizer, 1,
                                                           [], {})),
                   ("pt", lambda: save_base_weights(model.state_dict(), out / "w" / "base_weights.pt")),
                   ("safetensors", lambda: save_base_weights(model.state_dict(), out / "s" / "base.safetensors"))):
    try:
        save()
        print(name, "saved")
    except OSError as exc:
        print(name, "OSError", exc.errno, exc.filename)
    except BaseException as exc:
        print(name, type(exc).__name__)
"""


def test_a_checkpoint_or_weights_file_cut_by_a_full_disk_is_one_os_error_and_leaves_nothing(tmp_path):
    """`train` printed a 50-line traceback (torch.save's two RuntimeErrors, 'iostream error' and
    'unexpected pos') when the disk filled, or a file size limit was met, while a checkpoint was
    written: only an OSError is said in one line ("the disk is full", "a file size limit")."""
    import errno
    import os
    import subprocess
    import sys

    script = tmp_path / "saves.py"
    script.write_text(_SAVES_UNDER_A_SIZE_LIMIT)
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=repo)
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout + done.stderr
    for line, target in zip(lines, ("checkpoints/epoch_001.pt", "w/base_weights.pt", "s/base.safetensors")):
        assert line.split()[1:3] == ["OSError", str(errno.EFBIG)], line
        assert line.split()[3] == str(out / target)  # the file named, not a temporary one
    # nothing half-written that a resume (or a --base) would trust
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == []


def _write_mha(path: Path, frames: np.ndarray) -> None:
    n, h, w = frames.shape
    head = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"CompressedData = False\nDimSize = {w} {h} {n}\nElementSpacing = 0.28 0.28 1\n"
            "ElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head.encode() + np.ascontiguousarray(frames, np.uint8).tobytes())


def test_labels_of_a_sweep_last_opened_from_a_copy_say_why_they_name_no_case(tmp_path):
    """Verdicts given at the dataset's file, on a sweep opened afterwards from a copy of the
    file, are exported under the copy's name (one sweep per pixels, named by the path it was last
    opened from). The line said "export them from sweeps at the dataset's own files", which is
    what had been done; it says now under which name labels are exported and what to do, and
    doing it relabels the frames."""
    from fetaliqa_core.io import load_sweep
    from fetaliqa_core.review.report import write_labels_csv
    from fetaliqa_core.review.store import ReviewStore
    from training.data import extra_labels_message

    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 40), dtype=np.uint8)
    own, copy = tmp_path / "data" / "patient.mha", tmp_path / "desk" / "patient_copy.mha"
    _write_mha(own, frames)
    _write_mha(copy, frames)
    sweep = load_sweep(own)
    labels = tmp_path / "labels.csv"
    with ReviewStore(tmp_path / "reviews.sqlite3") as store:
        sid = store.add_sweep(sweep.content_hash, own, sweep.n_frames)
        for frame in range(4):
            store.record_verdict(sid, frame, "tA", "not_usable")
        store.add_sweep(sweep.content_hash, copy, sweep.n_frames)  # the copy opened later
        write_labels_csv(store, labels)
    cases = [SimpleNamespace(uuid="patient", image_path=own)]
    index = ds.FrameIndex(cases, np.zeros(6, np.int32), np.arange(6, dtype=np.int32), np.zeros(6, np.int16),
                          np.ones(6, np.uint8))
    line = extra_labels_message(labels, index, cases)
    assert "0 training frame(s) relabelled" in line and "4 label(s) name no case in --data (patient_copy)" in line
    assert "last opened from" in line and "from its file in --data" in line
    assert "export them from sweeps at the dataset's own files" not in line
    # what it says to do: the sweep opened again from the dataset's file, the labels exported again
    with ReviewStore(tmp_path / "reviews.sqlite3") as store:
        store.add_sweep(sweep.content_hash, own, sweep.n_frames)
        write_labels_csv(store, labels)
    line = extra_labels_message(labels, index, cases)
    assert "4 training frame(s) relabelled" in line and "name no case" not in line
