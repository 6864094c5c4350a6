"""Distilled students: the bundle kind, its validation, ``fetaliqa distill`` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.models.bundle import BundleManifest, load_bundle, read_manifest, save_bundle, student_manifest
from fetaliqa_core.models.student import StudentModel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from fetaliqa_core.synth import write_dataset

    out = tmp_path_factory.mktemp("distill_data")
    write_dataset(out, cases=6, seed=4, frames_per_sweep=3, height=96, width=128, compress=False)
    return out


def test_student_bundle_round_trip_and_validation(tmp_path, tiny_bundle_dirs):
    torch.manual_seed(0)
    student = StudentModel("efficientvit_b0", n_classes=3, decoder_width=8).eval()
    teacher = read_manifest(tiny_bundle_dirs["seg"])
    manifest = student_manifest(student, teacher, threshold=0.3, teacher_info={"seg_bundle_sha256": "x" * 64})
    path = save_bundle(student, tmp_path / "student", manifest)
    data = json.loads((path / "manifest.json").read_text())
    assert data["kind"] == "student" and data["student"]["backbone"] == "efficientvit_b0"
    assert data["lora"] is None and data["format_version"] == 2 and "adapter.safetensors" not in data["files"]
    lm = load_bundle(path, device="cpu")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        c, m = student(x)
    pred = lm.predict(x)
    assert lm.threshold == 0.3 and pred.seg_prob.shape == (2, 3, 224, 224)
    assert torch.allclose(pred.p_cls, torch.sigmoid(c)[:, 0], atol=1e-6)

    def bad(**edit):
        d = dict(data)
        d.update(edit)
        with pytest.raises(FetalIQAError):
            BundleManifest.from_dict(d)

    bad(student={"backbone": "resnet_from_the_internet", "decoder_width": 8})
    bad(student={"backbone": "efficientvit_b0", "decoder_width": 0})
    bad(student={"backbone": "efficientvit_b0", "decoder_width": 8, "extra": 1})
    bad(kind="other")
    bad(task="cls", head="binary")
    bad(lora={"r": 8})
    bad(format_version=1)  # an older reader must not take a student for a FetalCLIP bundle
    bad(kind="fetalclip")  # a FetalCLIP bundle carries no student object
    plain = json.loads((tiny_bundle_dirs["cls"] / "manifest.json").read_text())
    assert plain["kind"] == "fetalclip" and plain["format_version"] == 1  # other bundles unchanged


def test_distill_end_to_end_and_score_loads_the_student(tmp_path, tiny_data, tiny_bundle_dirs, monkeypatch,
                                                          capsys):
    import tomllib

    from training.distill import main

    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["fetaliqa.commands"]
    assert entry["distill"] == "training.distill"  # `fetaliqa distill`
    import training.distill as distill_mod

    out = tmp_path / "run"
    argv = ["--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]),
            "--data", str(tiny_data), "--out", str(out), "--student", "efficientvit_b0", "--epochs", "2",
            "--frames-per-case", "2", "--batch-size", "4", "--decoder-width", "8", "--device", "cpu",
            "--quiet"]
    # Stopped (Ctrl-C or SIGTERM) after the first epoch: its checkpoint is kept, no bundle yet.
    save = distill_mod.save_checkpoint

    def save_then_stop(*a, **k):
        save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(distill_mod, "save_checkpoint", save_then_stop)
    assert main(argv) == 130
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 1
    assert not (out / "bundle").exists()
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(distill_mod, "save_checkpoint", save)
    assert main(argv) == 1  # an unfinished run is not overwritten without --resume
    assert "--resume" in capsys.readouterr().err
    rc = main([*argv, "--resume"])
    assert rc == 0
    assert json.loads((out / "checkpoint.json").read_text())["epoch"] == 2
    # the resumed run is the uninterrupted one (the optimiser restarted from zero and epoch 2 replayed
    # epoch 1's order: the resumed student agreed with its teacher on 14 % of held-out flags, 41 % uninterrupted)
    whole = tmp_path / "whole"
    monkeypatch.chdir(tiny_data.parent)  # --data as typed, relative: recorded as the folder it named
    # teachers that record their training cases: the student records them too (it copies their
    # outputs there, so eval notes them as its own)
    import shutil

    recorded = {}
    for key in ("cls", "seg"):
        recorded[key] = shutil.copytree(tiny_bundle_dirs[key], tmp_path / f"teacher_{key}")
        teacher_manifest = json.loads((recorded[key] / "manifest.json").read_text())
        teacher_manifest.setdefault("metrics", {})["training"] = {"train_cases": [f"digest-{key}"]}
        (recorded[key] / "manifest.json").write_text(json.dumps(teacher_manifest))
    relative = [tiny_data.name if a == str(tiny_data) else a for a in argv]
    relative = [str(recorded["cls"]) if a == str(tiny_bundle_dirs["cls"]) else
                str(recorded["seg"]) if a == str(tiny_bundle_dirs["seg"]) else a for a in relative]
    assert main([*relative[:argv.index("--out") + 1], str(whole), *relative[argv.index("--out") + 2:]]) == 0
    monkeypatch.chdir(tmp_path)
    whole_metrics = read_manifest(whole / "bundle").metrics
    assert whole_metrics["data"] == str(tiny_data.resolve())
    assert whole_metrics["teacher_precision"] in ("bf16", "fp32") and whole_metrics["precision_requested"] is None
    from safetensors.torch import load_file

    resumed, straight = load_file(str(out / "checkpoint.safetensors")), load_file(str(whole / "checkpoint.safetensors"))
    assert resumed.keys() == straight.keys() and any(k.startswith("optimizer.") for k in resumed)
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-6) for k in resumed)
    metrics = json.loads((out / "metrics.json").read_text())
    agree = metrics["held_out_vs_teacher"]
    assert agree["frames"] > 0 and 0.0 <= agree["flag_agreement"] <= 1.0
    manifest = read_manifest(out / "bundle")
    assert manifest.is_student and manifest.metrics["train_frames"] > 0
    # the cases it learnt from, as train records them: eval notes those it is evaluated on
    from training.dataset import case_digest, read_cases, split_cases
    from training.evaluate import _trained_cases

    trained = {case_digest(c.uuid) for c in split_cases(read_cases(tiny_data))["train"]}
    assert manifest.metrics["train_cases"] == sorted(trained) and trained
    student = SimpleNamespace(manifest=manifest)
    # teachers that do not record their cases: which cases the student copied cannot be checked
    assert manifest.metrics["teacher_train_cases"] is None
    assert _trained_cases(SimpleNamespace(cls=student, seg=student)) is None
    assert whole_metrics["teacher_train_cases"] == ["digest-cls", "digest-seg"]
    student = SimpleNamespace(manifest=read_manifest(whole / "bundle"))
    assert _trained_cases(SimpleNamespace(cls=student, seg=student)) == trained | {"digest-cls", "digest-seg"}
    # an ordinary bundle: `score` loads it as a joint bundle, unchanged
    sweep = next((tiny_data / "images" / "stacked_fetal_ultrasound").glob("*.mha"))
    from fetaliqa_core.cli import main as cli_main

    rc = cli_main(["score", str(sweep), "--cls", str(out / "bundle"), "--seg", str(out / "bundle"), "--device", "cpu",
                   "--out", str(tmp_path / "scores"), "--quiet", "--no-cache"])
    assert rc == 0
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    assert summary["frames_scored"] == summary["n_frames"] > 0
    # a second run into the same folder is refused rather than overwriting the bundle
    with pytest.raises(FetalIQAError, match="already holds"):
        from training.distill import add_arguments, distill
        import argparse

        p = argparse.ArgumentParser()
        add_arguments(p)
        distill(p.parse_args(["--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]),
                              "--data", str(tiny_data), "--out", str(out)]))



def test_distill_refuses_bad_settings_with_one_line_and_exit_1(tmp_path, capsys):
    from training.distill import main

    rc = main(["--cls", str(tmp_path / "c"), "--seg", str(tmp_path / "s"), "--data", str(tmp_path),
               "--out", str(tmp_path / "run"), "--epochs", "0", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1  # a run-time failure, not a usage error
    assert len(err) == 1 and err[0].startswith("fetaliqa: ") and "--epochs" in err[0]


def test_distill_resume_refuses_a_damaged_or_foreign_checkpoint_in_one_line(tmp_path):
    import argparse

    import torch

    from training.distill import CHECKPOINT, CHECKPOINT_INFO, add_arguments, load_checkpoint, save_checkpoint

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--cls", "c", "--seg", "s", "--data", "d", "--out", str(tmp_path), "--epochs", "3",
                         "--student", "efficientvit_b0", "--decoder-width", "8"])
    student = torch.nn.Linear(4, 2)
    save_checkpoint(tmp_path, student, 2, args)
    fresh = torch.nn.Linear(4, 2)
    assert load_checkpoint(tmp_path, fresh, args)[0] == 2  # (epochs finished, seconds they took)
    assert torch.equal(fresh.weight, student.weight)
    with pytest.raises(FetalIQAError, match="cannot be loaded"):
        load_checkpoint(tmp_path, torch.nn.Linear(5, 2), args)  # another architecture
    (tmp_path / CHECKPOINT).write_bytes(b"\x00" * 7)  # truncated weights
    with pytest.raises(FetalIQAError, match="cannot be loaded"):
        load_checkpoint(tmp_path, fresh, args)
    (tmp_path / CHECKPOINT_INFO).write_text("[[[", encoding="utf-8")
    with pytest.raises(FetalIQAError, match="damaged"):
        load_checkpoint(tmp_path, fresh, args)
    (tmp_path / CHECKPOINT_INFO).write_text('{"epoch": 9, "student": "efficientvit_b0", "decoder_width": 8}',
                                            encoding="utf-8")
    with pytest.raises(FetalIQAError, match="--epochs is 3"):
        load_checkpoint(tmp_path, fresh, args)


def test_distill_resume_without_a_checkpoint_is_told_before_any_model_loads(tmp_path, capsys):
    from training.distill import main

    rc = main(["--cls", str(tmp_path / "missing-cls"), "--seg", str(tmp_path / "missing-seg"),
               "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "no checkpoint to resume from" in err  # not the missing bundles: nothing loaded


def test_distill_says_an_out_folder_it_cannot_write_in_before_any_model_loads(tmp_path, monkeypatch, capsys):
    """A read-only --out was found at the first checkpoint, after the teacher pass (hours on a full
    dataset) and a first epoch."""
    import errno
    import os

    from fetaliqa_core import paths
    from fetaliqa_core.models import choice
    from training.distill import main

    reached = []
    monkeypatch.setattr(choice, "load_models", lambda *a, **k: reached.append(a) or pytest.fail("models loaded"))
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    common = ["--cls", str(tmp_path / "cls"), "--seg", str(tmp_path / "seg"), "--data", str(tmp_path), "--quiet"]
    assert main([*common, "--out", str(afile / "run")]) == 1  # a file where a folder of the path is
    err = capsys.readouterr().err
    assert f"{afile / 'run'}: cannot write results there (a part of the path is a file, not a folder)" in err

    def read_only(folder):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder / ".fetaliqa-probe-x"))

    monkeypatch.setattr(paths, "probe_writable", read_only)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new" / "run", tmp_path / "empty"):  # made later, or there already
        assert main([*common, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.strip() == (f"fetaliqa: {out}: cannot write results there (the disk is read-only). Give --out a "
                               "folder you can write to."), err
    assert not reached and not (tmp_path / "new").exists()


def test_a_checkpoint_that_cannot_be_written_names_the_out_folder(tmp_path, tiny_data, tiny_bundle_dirs,
                                                                 monkeypatch, capsys):
    """A disk filling during the run is said of the --out folder given, not of a temporary file."""
    import errno
    import os

    import training.distill as distill_mod

    out = tmp_path / "run"

    def disk_full(folder, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / ".checkpoint.safetensors.x1y2"))

    monkeypatch.setattr(distill_mod, "save_checkpoint", disk_full)
    rc = distill_mod.main(["--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]),
                           "--data", str(tiny_data), "--out", str(out), "--student", "efficientvit_b0",
                           "--epochs", "1", "--frames-per-case", "2", "--batch-size", "4", "--decoder-width", "8",
                           "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == (f"fetaliqa: {out}: cannot write results there (the disk is full). Free disk "
                                       "space, or give --out a folder on another disk."), err


def test_mined_frames_keep_what_the_teacher_flags_with_its_neighbours_inside_each_sweep():
    import numpy as np

    from training.distill import MINE_NEIGHBOURS, _pick_frames, _teacher_hot

    flagged = np.zeros(40, dtype=bool)
    flagged[[9, 10, 25]] = True  # 9-10 in the first sweep (0-10), 25 in the second (11-39)
    hot = _teacher_hot(flagged, [(0, 11), (11, 40)])
    assert set(np.flatnonzero(hot)) == {7, 8, 9, 10} | set(range(25 - MINE_NEIGHBOURS, 25 + MINE_NEIGHBOURS + 1))
    assert not hot[11]  # a flag at the end of one sweep does not spill into the next
    labels = np.zeros(40, dtype=np.int64)
    labels[30] = 1
    rng = np.random.default_rng(0)
    picked = _pick_frames(labels, 18, rng, hot)  # 10 frames that matter, within two thirds of 18
    assert set(np.flatnonzero(hot)) | {30} <= set(picked) and len(picked) == 18
    # without the teacher's flags the same budget keeps only the labelled frame for sure
    plain = _pick_frames(labels, 18, np.random.default_rng(0))
    assert 30 in plain and not set(np.flatnonzero(hot)) <= set(plain)
    # more hot frames than the budget allows: a capped random share of them, still within budget
    many = _pick_frames(labels, 6, np.random.default_rng(1), np.ones(40, dtype=bool))
    assert len(many) == 6


def test_resume_continues_only_the_same_distillation(tmp_path):
    """--resume with another teacher, dataset or learning rate went on without a word; an --out
    holding other files had them overwritten."""
    from types import SimpleNamespace

    import torch

    from fetaliqa_core.errors import FetalIQAError
    from training.distill import checkpoint_epoch, distill, save_checkpoint

    args = SimpleNamespace(cls=str(tmp_path / "cls"), seg=str(tmp_path / "seg"), base=None, data=str(tmp_path / "d"),
                           lr=1e-3, batch_size=8, frames_per_case=20, seed=0, mine=True, epochs=4,
                           student="efficientvit_b0", decoder_width=16)
    out = tmp_path / "run"
    save_checkpoint(out, torch.nn.Linear(2, 2), 2, args)
    assert checkpoint_epoch(out, args) == 2
    other = SimpleNamespace(**{**vars(args), "cls": str(tmp_path / "other"), "lr": 1e-2})
    with pytest.raises(FetalIQAError, match="other cls, lr"):
        checkpoint_epoch(out, other)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "metrics.json").write_text("{}")
    with pytest.raises(FetalIQAError, match="not empty and holds no distillation run"):
        distill(SimpleNamespace(**{**vars(args), "out": str(busy), "resume": False, "threads": None}), log=lambda *_: None)
    assert (busy / "metrics.json").read_text() == "{}"
