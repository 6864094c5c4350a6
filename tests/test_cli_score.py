"""``fetaliqa score`` end to end on a small synthetic case with tiny random-weight bundles."""

from __future__ import annotations

import csv
import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from fetaliqa_core.analysis.units import beside_threshold
from fetaliqa_core.cli import main
from fetaliqa_core.io import load_mask, load_sweep, write_volume


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    from fetaliqa_core.synth import synthesize_case

    root = tmp_path_factory.mktemp("score_case")
    c = synthesize_case(seed=4, n_sweeps=2, frames_per_sweep=6, height=96, width=128)
    path = root / "case.mha"
    write_volume(path, c.frames, spacing_mm=(0.28, 0.28), sweep_ranges=[(0, 6), (6, 12)],
                 sweep_kinds=["transverse", "transverse"])
    return path


def test_score_writes_frames_summary_and_challenge_files(case, tiny_bundle_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]),
               "--out", str(out), "--challenge-output", "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert [r["frame"] for r in rows] == [str(i) for i in range(12)]
    assert list(rows[0]) == ["frame", "sweep", "p_cls", "p_seg", "seg_area_px", "flagged", "threshold",
                             "model_threshold", "models"]
    assert {r["sweep"] for r in rows} == {"1", "2"}
    for r in rows:
        assert 0.0 <= float(r["p_cls"]) <= 1.0 and 0.0 <= float(r["p_seg"]) < 1.0
        assert int(r["seg_area_px"]) >= 0 and r["flagged"] in ("0", "1")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_frames"] == 12 and summary["frames_scored"] == 12 and summary["complete"]
    own = json.loads((tiny_bundle_dirs["cls"] / "manifest.json").read_text())["threshold"]
    assert summary["threshold"] == summary["model_threshold"] == pytest.approx(own)
    assert summary["threshold_score"] == "p_cls" and summary["threshold_changed"] is False
    assert all(float(r["threshold"]) == pytest.approx(own, abs=1e-4) for r in rows)
    # the models that scored, named on every row as summary.json names them (a frames.csv on its own
    # said nothing of them)
    assert summary["models"] and {r["models"] for r in rows} == {summary["models"]}
    assert [s["sweep"] for s in summary["sweeps"]] == [1, 2]
    chosen = summary["chosen_frame"]
    written = int((out / "fetal-abdomen-frame-number.json").read_text())
    # in the challenge's output layout, as its algorithm writes /output (they were side by side)
    mask = load_mask(out / "images" / "fetal-abdomen-segmentation" / "fetal-abdomen-segmentation.mha",
                     like=load_sweep(case))
    assert not (out / "fetal-abdomen-segmentation.mha").exists()
    filled = np.flatnonzero(mask.reshape(12, -1).any(axis=1))
    # never a frame index with an empty mask: the chosen frame, or a frame near it with a mask, or -1
    assert (written == -1 and filled.tolist() == []) or filled.tolist() == [written]
    assert written == -1 or (chosen >= 0 and abs(written - chosen) <= 15)
    assert summary["app_version"] and [b["role"] for b in summary["bundles"]] == ["classifier", "segmenter"]
    assert all(len(b["sha256"]) == 64 and b["demo"] is False for b in summary["bundles"])
    assert summary["demo"] is False and summary["frame_numbering"] == "0-based"
    # these test bundles adapt a random tower: said as such, not as a trained model
    assert summary["random_base"] is True and "randomly initialised base" in summary["notice"]
    assert summary["base_sha256"].startswith("random:")  # the base they ran on, named
    printed = capsys.readouterr().out
    assert "chosen frame" in printed
    assert "  pixel 0.28 x 0.28 mm (file header)\n" in printed  # every length's unit and its source
    # the number format and why, on the terminal and in summary.json (it was only inside "models")
    from fetaliqa_core.models.device import select_device

    ran = select_device("cpu")
    assert summary["precision"] == ran.precision and summary["precision_reason"] == ran.precision_record
    assert f"  precision {ran.precision} ({ran.precision_record})\n" in printed
    # where the ACs are measured, named as `ac --json` names it (summary.json said nothing of it)
    from fetaliqa_core import acouslic

    own_fan = isinstance(acouslic.sweep_fov(load_sweep(case)), np.ndarray)
    assert summary["field_of_view"] == ("the sweep's own fan" if own_fan else "acouslic")
    for s in summary["sweeps"]:  # the models' own scores at the best frame, as frames.csv has them
        if s["best_frame"] >= 0:
            row = rows[s["best_frame"]]
            assert s["p_cls"] == pytest.approx(float(row["p_cls"]), abs=1e-3)
            assert s["p_seg"] == pytest.approx(float(row["p_seg"]), abs=1e-3)
            plane = f", {s['plane']} plane (segmenter)" if s["plane"] else ""
            # two decimals, or the digits that tell a score from its threshold (random test models
            # often score ~0.5, which "0.50" would show as on the threshold)
            p_cls, p_seg = beside_threshold(s["p_cls"], summary["threshold"]), beside_threshold(s["p_seg"], 0.5)
            assert f"best frame {s['best_frame']} (p_cls {p_cls}, p_seg {p_seg}{plane})" in printed
            assert s["plane"] in (None, "optimal", "suboptimal")
        else:
            assert s["p_cls"] is None and s["p_seg"] is None


def test_what_reading_the_file_did_is_printed_and_written(tmp_path, tiny_bundle_dirs, capsys):
    """Pixels that hold no number are shown black; the answer says so (summary and output)."""
    import SimpleITK as sitk

    from fetaliqa_core.synth import synthesize_case

    frames = synthesize_case(seed=4, n_sweeps=1, frames_per_sweep=4, height=96, width=128).frames
    arr = frames.astype(np.float32) / 255.0
    arr[:, 40:42, 60:62] = np.nan
    path = tmp_path / "nan.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    out = tmp_path / "out"
    assert main(["score", str(path), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"]) == 0
    notes = json.loads((out / "summary.json").read_text())["read_notes"]
    assert len(notes) == 1 and notes[0].startswith("16 pixel(s)") and "NaN" in notes[0]
    assert f"note: {notes[0]}" in capsys.readouterr().out


def test_a_changed_threshold_is_written_as_such(case, tiny_bundle_dirs, tmp_path, capsys):
    own = json.loads((tiny_bundle_dirs["cls"] / "manifest.json").read_text())["threshold"]
    mine = 0.62 if abs(own - 0.62) > 0.01 else 0.3
    out = tmp_path / "out"
    assert main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet",
                 "--threshold", str(mine)]) == 0
    assert f"threshold {mine:.2f} (model: {own:.2f})" in capsys.readouterr().out  # printed as well as written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"] == pytest.approx(mine) and summary["model_threshold"] == pytest.approx(own)
    assert summary["threshold_changed"] is True
    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert float(rows[0]["threshold"]) == pytest.approx(mine) and float(rows[0]["model_threshold"]) == pytest.approx(own)
    # classifier alone: a frame is flagged exactly where p_cls reaches the threshold
    assert [r["flagged"] == "1" for r in rows] == [float(r["p_cls"]) >= mine for r in rows]


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, tiny_bundle_dirs, capsys):
    bad = tmp_path / "broken.mha"
    bad.write_text("this is not an image\n")
    out = tmp_path / "out"
    rc = main(["score", str(bad), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fetaliqa: ") and "broken.mha" in err[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folder left


def test_missing_sweep_and_bad_bundle(tmp_path, tiny_bundle_dirs, capsys):
    assert main(["score", str(tmp_path / "nope.mha"), "--quiet"]) == 1
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "case.mha").write_bytes(b"")
    assert main(["score", str(tmp_path / "case.mha"), "--cls", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_score_json_prints_the_answer_as_one_line_and_nothing_else(case, tiny_bundle_dirs, tmp_path, capsys,
                                                                   monkeypatch):
    """A script reading `score`'s answer had to parse lines of text or find summary.json: --json
    prints summary.json's record (and where the results are) as the only line on stdout."""
    from fetaliqa_core import progress

    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.0)  # progress lines (into this pipe) at every batch
    out = tmp_path / "out"
    rc = main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]),
               "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert rc == 0 and len(captured.out.splitlines()) == 1
    record = json.loads(captured.out)
    assert record.pop("results") == str(out.resolve())
    assert record == json.loads((out / "summary.json").read_text())
    assert "chosen frame" not in captured.out and "frame" in captured.err  # the progress bar stays on stderr
    # a folder's answers are in its table: one clear line, nothing scored
    folder = tmp_path / "sweeps"
    folder.mkdir()
    (folder / "a.mha").write_bytes(case.read_bytes())
    rc = main(["score", str(folder), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(tmp_path / "o2"), "--json"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and "--json prints one sweep's answer" in captured.err  # (a wrong command line)
    assert not (tmp_path / "o2").exists()


def _another_run_holding(folder: Path):
    """Another process that has claimed ``folder`` for its results (as a run scoring into it)."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from fetaliqa_core.files import claim_output_folder; "
        f"assert claim_output_folder({str(folder)!r}); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_two_runs_never_write_into_one_results_folder_at_once(case, tiny_bundle_dirs, tmp_path, capsys, monkeypatch):
    """Two `score` runs started together on two sweeps of the same name both chose the free default
    folder: one's results replaced the other's and both said where their results were. A folder
    another run is writing into is refused (--out) or passed over (the default)."""
    out = tmp_path / "out"
    holder = _another_run_holding(out)
    try:
        rc = main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert rc == 1 and "another FetalIQA run is writing its results there now" in err and not out.exists()
        default = tmp_path / "fetaliqa-scores" / "case"
        monkeypatch.chdir(tmp_path)
        holder2 = _another_run_holding(default)
        try:
            assert main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--quiet"]) == 0
            assert (tmp_path / "fetaliqa-scores" / "case-2" / "summary.json").is_file() and not default.exists()
            assert "another run is writing" in capsys.readouterr().err
        finally:
            holder2.kill()
        # a folder of sweeps into a folder another run holds: refused, nothing written
        folder = tmp_path / "sweeps"
        folder.mkdir()
        (folder / "a.mha").write_bytes(case.read_bytes())
        rc = main(["score", str(folder), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"])
        assert rc == 1 and "another FetalIQA run is writing" in capsys.readouterr().err and not out.exists()
        rc = main(["score", str(folder), "--archive", "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out),
                   "--quiet"])
        # (an archive's line names the run: this machine, the pid that claimed the folder)
        assert rc == 1 and not out.exists()
        assert f"another FetalIQA run (host {socket.gethostname()}, pid {holder.pid}) is scoring into {out}; " \
               "wait for it or give another --out" in capsys.readouterr().err
    finally:
        holder.kill()


def test_a_results_folder_passed_over_is_not_kept_claimed(case, tiny_bundle_dirs, tmp_path, capsys, monkeypatch):
    """A run that passed over the default folder (another sweep's results there) kept it claimed to
    the end, and the other sweep's own rerun into it was refused as if a run were writing there."""
    from fetaliqa_core import files

    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other" / "case.mha"
    other.parent.mkdir()
    frames = load_sweep(case).frames.copy()
    frames[0] = 255 - frames[0]  # another sweep of the same name
    write_volume(other, frames, spacing_mm=(0.28, 0.28))
    assert main(["score", str(other), "--cls", str(tiny_bundle_dirs["cls"]), "--quiet"]) == 0
    files._CLAIMED.clear()  # as a new process
    assert main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--quiet"]) == 0
    claimed = {Path(k).name for k in files._CLAIMED}
    assert claimed == {"case-2"}, claimed


def test_an_interrupted_run_says_the_folder_still_holds_an_earlier_run(case, tiny_bundle_dirs, tmp_path, capsys,
                                                                         monkeypatch):
    """Ctrl-C said "nothing was written to OUT" where OUT held an earlier, complete run's answer (at
    another threshold), which then read as this run's."""
    from fetaliqa_core.cli import score as score_cli

    out = tmp_path / "out"
    args = ["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"]
    assert main([*args, "--threshold", "0.3"]) == 0
    capsys.readouterr()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(score_cli, "score_one", interrupted)
    try:
        rc = main(args)
    except KeyboardInterrupt:
        rc = 130
    err = capsys.readouterr().err
    assert rc == 130 and "nothing was written to" in err and "its files are an earlier run's (threshold 0.30)" in err


def test_folder_of_sweeps_is_scored_one_after_another(case, tiny_bundle_dirs, tmp_path, capsys):
    folder = tmp_path / "sweeps"
    folder.mkdir()
    for name in ("a.mha", "b.mha"):
        (folder / name).write_bytes(case.read_bytes())
    (folder / "c.mha").write_text("broken")
    out = tmp_path / "out"
    rc = main(["score", str(folder), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"])
    assert rc == 1  # one failure is reported, the others are scored
    captured = capsys.readouterr()
    assert "scored 2 of 3 sweeps" in captured.out and "c.mha" in captured.err
    assert (out / "a" / "frames.csv").is_file() and (out / "b" / "summary.json").is_file()
    assert not (out / "c").exists()
    # the combined table: one row per sweep of each scored file, one row for the failed file
    import csv as _csv
    import json as _json

    table = list(_csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    a = _json.loads((out / "a" / "summary.json").read_text(encoding="utf-8"))
    assert [r["file"] for r in table] == ["a.mha"] * len(a["sweeps"]) + ["b.mha"] * len(a["sweeps"]) + ["c.mha"]
    assert [int(r["best_frame"]) for r in table[:len(a["sweeps"])]] == [s["best_frame"] for s in a["sweeps"]]
    assert all(int(r["chosen_frame"]) == a["chosen_frame"] for r in table[:-1])
    assert {r["status"] for r in table[:-1]} == {"ok"} and table[-1]["status"] == "failed"
    # numbers from a test model say so on each row they fill (these bundles adapt a random tower)
    assert all("not for clinical use" in r["notice"] for r in table[:-1]) and table[-1]["notice"] == ""
    assert "c.mha" in table[-1]["error"] and "summary.csv" in captured.out
    # what scored is named on each row its numbers fill (a student's and a teacher's rows looked alike)
    assert all(r["models"] == a["models"] != "" for r in table[:-1]) and table[-1]["models"] == ""
    # the terminal's table shows the failed file's status where a scored file shows its chosen frame
    assert [line.split()[-1] for line in captured.out.splitlines() if line.startswith("c.mha")] == ["failed"]


def test_an_interrupted_folder_run_writes_the_table_of_what_it_finished(case, tiny_bundle_dirs, tmp_path, capsys,
                                                                       monkeypatch):
    """Ctrl-C or SIGTERM during `score FOLDER` kept the sweeps scored but wrote no summary.csv
    (an archive run writes its table up to the interruption)."""
    import csv as _csv

    from fetaliqa_core.cli import score as score_cmd

    folder = tmp_path / "sweeps"
    folder.mkdir()
    for name in ("a.mha", "b.mha", "c.mha"):
        (folder / name).write_bytes(case.read_bytes())
    real = score_cmd.score_one

    def stopped_at_b(member, *a, **k):
        if member.name == "b.mha":
            raise KeyboardInterrupt
        return real(member, *a, **k)

    monkeypatch.setattr(score_cmd, "score_one", stopped_at_b)
    out = tmp_path / "out"
    assert main(["score", str(folder), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "table (up to the interruption)" in err
    table = list(_csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    assert {r["status"] for r in table if r["file"] == "a.mha"} == {"ok"}
    assert [(r["file"], r["status"]) for r in table if r["file"] != "a.mha"] == [("b.mha", "missing"),
                                                                                ("c.mha", "missing")]
    assert (out / "a" / "summary.json").is_file() and not (out / "b").exists()


@pytest.fixture(scope="module")
def nifti_without_spacing(tmp_path_factory):
    import SimpleITK as sitk

    from fetaliqa_core.synth import synthesize_case

    c = synthesize_case(seed=11, n_sweeps=1, frames_per_sweep=16, kind="optimal")  # abdomen in frames 8-12
    path = tmp_path_factory.mktemp("nospacing") / "sweep.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(c.frames)), str(path))  # no spacing given
    return path


def test_demo_numbers_carry_the_notice_and_provenance(nifti_without_spacing, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["score", str(nifti_without_spacing), "--model", "demo", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["demo"] is True and "not for clinical use" in summary["notice"]
    assert "not for clinical use" in text
    assert [b["name"] for b in summary["bundles"]] == ["demo/cls", "demo/seg"]
    assert all(len(b["sha256"]) == 64 and b["demo"] for b in summary["bundles"])
    # the base weights the models ran on: a bundle's hash does not name them (the archive table did)
    assert re.fullmatch(r"[0-9a-f]{64}", summary["base_sha256"])
    assert "pixel spacing unknown" in summary["spacing_problem"]


AXES = (60, 45)  # semi-axes (px) of the hand-drawn abdomen
SPACING = 0.5


@pytest.fixture(scope="module")
def hand_drawn_nifti(tmp_path_factory):
    """Not from the synthesiser: a narrow sector fan (grey) with a bright ellipse of known axes in
    frames 2-4 of 6, written as NIfTI without any pixel spacing."""
    import cv2
    import SimpleITK as sitk

    frames = np.zeros((6, 240, 320), np.uint8)
    for f in range(6):
        cv2.ellipse(frames[f], (160, 0), (235, 235), 90, -35, 35, 60, -1)  # the fan
        if 2 <= f <= 4:
            cv2.ellipse(frames[f], (160, 140), AXES, 15, 0, 360, 230, -1)
    path = tmp_path_factory.mktemp("handdrawn") / "sweep.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(path))
    return path


def test_no_pixel_spacing_no_mm_anywhere_unless_given(hand_drawn_nifti, tmp_path, capsys, monkeypatch):
    import re

    from fakes import fake_models

    from fetaliqa_core.analysis import format_ga, hadlock_ga, ramanujan_circumference
    from fetaliqa_core.models import choice

    monkeypatch.setattr(choice, "load_models", lambda c: fake_models(choice=c))
    out = tmp_path / "nospacing"
    assert main(["score", str(hand_drawn_nifti), "--out", str(out), "--quiet", "--no-cache"]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert "pixel spacing unknown" in summary["spacing_problem"]
    assert summary["chosen_frame"] in (2, 3, 4)
    assert all(s["ac_mm"] is None and s["ga_weeks"] is None and s["ga"] == "" for s in summary["sweeps"])
    assert summary["chosen_ac"]["ac_mm"] is None and summary["chosen_ac"]["status"] == "no units"
    assert not re.search(r"AC [\d.]+ mm", text) and "GA " not in text
    assert "pixel spacing unknown" in text and "--spacing" in text

    out2 = tmp_path / "given"
    assert main(["score", str(hand_drawn_nifti), "--out", str(out2), "--quiet", "--no-cache",
                 "--spacing", str(SPACING)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["spacing_problem"] is None and summary["spacing_source"] == "user"
    # the words `ac` uses for the same spacing, not the files' short key
    assert f"({SPACING:g} mm per pixel" not in text and "given with --spacing)" in text and "(user)" not in text
    truth = ramanujan_circumference(*AXES) * SPACING  # ~166 mm
    reading = summary["chosen_ac"]
    assert reading["status"] == "ok" and reading["ac_mm"] == pytest.approx(truth, rel=0.03)
    assert reading["ga_text"] == format_ga(hadlock_ga(reading["ac_mm"]).weeks)
    assert f"GA {reading['ga_text']}" in text
    with pytest.raises(SystemExit) as usage:  # a wrong command line (status 2), before the file is read
        main(["score", str(hand_drawn_nifti), "--out", str(out2), "--quiet", "--spacing", "5"])
    assert usage.value.code == 2 and "implausible" in capsys.readouterr().err


CUT = "outline cut by the field of view; ellipse extrapolated"  # `fetaliqa ac`'s and the window's words


def _fan_sweep(path, centre_y: int):
    """The hand-drawn sweep's fan (a sector of radius 235 px) and abdomen in frames 2-4, the abdomen's
    centre ``centre_y`` px below the apex: at 188 its lower edge runs past the fan's arc, and what lies
    past it is black (the field of view cuts the outline, a few percent of it); at 140 it is whole."""
    import cv2
    import SimpleITK as sitk

    frames = np.zeros((6, 240, 320), np.uint8)
    fan = np.zeros((240, 320), np.uint8)
    cv2.ellipse(fan, (160, 0), (235, 235), 90, -35, 35, 1, -1)
    for f in range(6):
        frames[f][fan > 0] = 60
        if 2 <= f <= 4:
            cv2.ellipse(frames[f], (160, centre_y), AXES, 15, 0, 360, 230, -1)
        frames[f][fan == 0] = 0
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(path))
    return path


@pytest.fixture(scope="module")
def cut_and_whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("fancut")
    return _fan_sweep(root / "cut.nii.gz", 188), _fan_sweep(root / "whole.nii.gz", 140)


def _score_with_own_models(monkeypatch, *argv):
    from fakes import fake_models

    from fetaliqa_core.models import choice

    monkeypatch.setattr(choice, "load_models", lambda c: fake_models(choice=c))  # the user's own, not the demo
    return main(["score", *map(str, argv), "--quiet", "--no-cache", "--spacing", str(SPACING)])


def test_score_says_an_ac_whose_outline_the_field_of_view_cut_was_extrapolated(cut_and_whole, tmp_path, capsys,
                                                                               monkeypatch):
    """`fetaliqa ac` said "[outline cut by the field of view; ellipse extrapolated]" and the window
    "ellipse extrapolated"; `score` printed the same AC plainly with the user's own models."""
    cut, whole = cut_and_whole
    assert _score_with_own_models(monkeypatch, cut, "--out", tmp_path / "cut") == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("  sweep 1:"))
    # the number stays one to act on (the frame choice judges the cut small): what was done is said
    assert re.search(r", AC \d+\.\d mm, GA \d+w \dd \(" + re.escape(CUT) + r"\)$", line), line
    assert _score_with_own_models(monkeypatch, whole, "--out", tmp_path / "whole") == 0
    line = next(t for t in capsys.readouterr().out.splitlines() if t.startswith("  sweep 1:"))
    assert re.search(r", AC \d+\.\d mm, GA \d+w \dd$", line), line


def test_summary_json_records_an_ac_whose_outline_the_field_of_view_cut(cut_and_whole, tmp_path, monkeypatch):
    """summary.json gave the cut outline's AC as plainly as a whole one's: its notes now say it in the
    same words, and ``ac_extrapolated`` (per sweep, null without an AC shown) records it."""
    cut, whole = cut_and_whole
    summaries = {}
    for name, path in (("cut", cut), ("whole", whole)):
        assert _score_with_own_models(monkeypatch, path, "--out", tmp_path / name) == 0
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    s = summaries["cut"]
    assert s["chosen_frame"] in (2, 3, 4) and s["chosen_ac"]["status"] == "ok"  # not doubted for it
    assert s["chosen_ac"]["note"] == CUT and s["chosen_ac"]["ga_text"]
    assert s["sweeps"][0]["ac_note"] == CUT and s["sweeps"][0]["ac_extrapolated"] is True
    w = summaries["whole"]
    assert w["chosen_ac"]["status"] == "ok" and w["chosen_ac"]["note"] == ""
    assert w["sweeps"][0]["ac_note"] == "" and w["sweeps"][0]["ac_extrapolated"] is False


def test_a_folder_s_table_marks_an_ac_whose_outline_the_field_of_view_cut(cut_and_whole, tmp_path, capsys,
                                                                         monkeypatch):
    """summary.csv gave the cut outline's AC as plainly as a whole one's: ``ac_extrapolated`` says it
    (1, 0 for a whole outline), at the table's end, where an earlier table's columns stay in place."""
    from fetaliqa_core.cli.score import TABLE_COLUMNS

    folder = tmp_path / "sweeps"
    folder.mkdir()
    for path in cut_and_whole:
        (folder / path.name).write_bytes(path.read_bytes())
    assert _score_with_own_models(monkeypatch, folder, "--out", tmp_path / "out") == 0
    capsys.readouterr()
    table = {r["file"]: r for r in csv.DictReader((tmp_path / "out" / "summary.csv").open(encoding="utf-8"))}
    assert table["cut.nii.gz"]["ac_status"] == table["whole.nii.gz"]["ac_status"] == "ok"
    assert table["cut.nii.gz"]["ac_extrapolated"] == "1" and table["whole.nii.gz"]["ac_extrapolated"] == "0"
    assert TABLE_COLUMNS[-1] == "ac_extrapolated"


def test_folder_table_marks_an_ac_that_is_not_a_number_to_act_on(capsys):
    """The per-sweep lines said "(doubtful: ...)", but the folder's table printed the bare number."""
    from fetaliqa_core.cli.score import print_table, table_rows

    def sweep(k, status, ac):
        return {"sweep": k, "kind": "transverse", "best_frame": 10 * k, "score": 0.8, "ac_mm": ac,
                "ac_status": status, "ga": "", "ga_weeks": None}

    summary = {"complete": True, "frames_scored": 30, "n_frames": 30, "chosen_frame": 10,
               "sweeps": [sweep(1, "doubtful", 276.8), sweep(2, "ok", 250.1), sweep(3, "no units", None)]}
    print_table(table_rows("a.mha", summary))
    lines = capsys.readouterr().out.splitlines()
    assert "276.8 (doubtful)" in lines[1]
    assert "250.1" in lines[2] and "(" not in lines[2]
    assert "mm" not in lines[3] and "(no units)" in lines[3]  # no number, and why (the cell was blank)
    # the table holds the models' scores at each best frame, and how the file's frame was chosen
    from fetaliqa_core.cli.score import TABLE_COLUMNS

    summary["sweeps"][0].update(p_cls=0.6663, p_seg=0.91)
    summary["choice_basis"] = "segmenter"
    row = dict(zip(TABLE_COLUMNS, table_rows("a.mha", summary)[0]))
    assert row["p_cls"] == "0.6663" and row["p_seg"] == "0.9100" and row["choice_basis"] == "segmenter"
    assert "score" not in TABLE_COLUMNS


def test_a_student_of_the_demo_models_is_a_demo_model(tmp_path):
    """A student learns nothing but its teachers' outputs: distilled from the demonstration
    models it carries their notice. And a pair on one base reports each bundle's own hash."""
    from types import SimpleNamespace

    from fetaliqa_core.models.bundle import bundle_hash
    from fetaliqa_core.models.choice import bundle_part, is_demo_bundle, provenance
    from fetaliqa_core.paths import resources_dir

    demo_cls = bundle_hash(resources_dir() / "demo" / "cls")
    student = SimpleNamespace(path=tmp_path / "mine", bundle_hash="0" * 64,
                              manifest=SimpleNamespace(student={"teacher": {"cls_bundle_sha256": demo_cls}}))
    own = SimpleNamespace(path=tmp_path / "mine", bundle_hash="0" * 64,
                          manifest=SimpleNamespace(student={"teacher": {"cls_bundle_sha256": "1" * 64}}))
    assert is_demo_bundle(student) and not is_demo_bundle(own)
    odd = SimpleNamespace(path=tmp_path / "odd", manifest=SimpleNamespace(
        student={"teacher": {"cls_bundle_sha256": [demo_cls], "seg_bundle_sha256": {"a": 1}}}))
    assert not is_demo_bundle(odd)  # a manifest's odd values are not hashes (and raise nothing)
    record = provenance(SimpleNamespace(cls=student, seg=None))
    assert record["demo"] and "not for clinical use" in record["notice"]
    assert record["bundles"][0]["name"] == "mine"  # not named as one of the shipped files
    pair = SimpleNamespace(path=tmp_path, bundle_hash="f" * 64,
                           parts=[("classifier", tmp_path / "c", "a" * 64), ("segmenter", tmp_path / "s", "b" * 64)])
    assert bundle_part(pair, "segmenter") == (tmp_path / "s", "b" * 64)
    from fetaliqa_core.models.choice import part_is_demo

    mixed = SimpleNamespace(path=tmp_path / "mine_seg", bundle_hash="f" * 64,
                            parts=[("classifier", resources_dir() / "demo" / "cls", demo_cls),
                                   ("segmenter", tmp_path / "mine_seg", "c" * 64)])
    assert part_is_demo(mixed, "classifier") and not part_is_demo(mixed, "segmenter")
    assert bundle_part(own, "segmenter") == (tmp_path / "mine", "0" * 64)


def test_a_folder_scored_again_keeps_no_answer_of_the_run_before(case, tiny_bundle_dirs, tmp_path, capsys):
    """The challenge's frame number and mask of a run with --challenge-output stayed beside the
    summary of a later run without it (frame 13 beside chosen_frame -1), and `ac` measured them."""
    out = tmp_path / "out"
    models = ["--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"])]
    assert main(["score", str(case), *models, "--out", str(out), "--challenge-output", "--quiet"]) == 0
    assert (out / "fetal-abdomen-frame-number.json").exists()
    (out / "notes.txt").write_text("mine")
    assert main(["score", str(case), *models, "--out", str(out), "--quiet", "--no-cache"]) == 0
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["frames.csv", "notes.txt", "summary.json"]  # the user's own file stays
    # the mask's folders go with it, but not one holding a file of the user's
    assert main(["score", str(case), *models, "--out", str(out), "--challenge-output", "--quiet"]) == 0
    (out / "images" / "mine.txt").write_text("mine")
    assert main(["score", str(case), *models, "--out", str(out), "--quiet"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if not p.name.startswith(".")) == [
        "frames.csv", "images", "images/mine.txt", "notes.txt", "summary.json"]


def test_results_stay_in_out_and_never_delete_the_user_s_files(case, tiny_bundle_dirs, tmp_path, capsys):
    """A sweep named '...mha' had its folder named '..': results went to the parent of --out,
    over the user's frames.csv, and deleted files there named like FetalIQA's; case.mha and
    case.nrrd shared one folder; an --out holding the user's cascade.json or a folder named
    summary.json lost them."""
    import shutil

    models = ["--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]), "--quiet", "--no-cache"]
    home = tmp_path / "work"
    (home / "sweeps").mkdir(parents=True)
    (home / "frames.csv").write_text("the user's own table\n")
    (home / "cascade.json").write_text("{}\n")
    shutil.copy(case, home / "sweeps" / "...mha")
    shutil.copy(case, home / "sweeps" / "case.mha")
    write_volume(home / "sweeps" / "case.nrrd", load_sweep(case).frames[:7])
    out = home / "run"
    assert main(["score", str(home / "sweeps"), "--out", str(out), *models]) == 0
    assert (home / "frames.csv").read_text() == "the user's own table\n" and (home / "cascade.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["...mha", "case.mha", "case.nrrd", "summary.csv"]
    assert json.loads((out / "case.nrrd" / "summary.json").read_text())["n_frames"] == 7
    assert json.loads((out / "case.mha" / "summary.json").read_text())["n_frames"] == 12
    capsys.readouterr()

    mine = tmp_path / "mine"
    (mine / "summary.json").mkdir(parents=True)
    (mine / "summary.json" / "precious.txt").write_text("keep")
    (mine / "cascade.json").write_text('{"user": "notes"}')
    (mine / "fetal-abdomen-frame-number.json").write_text("7")
    assert main(["score", str(case), "--out", str(mine), *models]) == 1
    assert "summary.json is a folder where a result file goes; nothing was written" in capsys.readouterr().err
    assert (mine / "summary.json" / "precious.txt").read_text() == "keep" and not (mine / "frames.csv").exists()
    shutil.rmtree(mine / "summary.json")
    # files named like FetalIQA's optional outputs that it did not write are the user's: kept,
    # in a folder new to it and after it has written there too
    for _ in range(2):
        assert main(["score", str(case), "--out", str(mine), *models]) == 0
        assert (mine / "cascade.json").read_text() == '{"user": "notes"}'
        assert (mine / "fetal-abdomen-frame-number.json").read_text() == "7"


def test_a_dataset_folder_points_at_its_sweep_files(tmp_path, capsys):
    """`score DATASET` (the folder `synth` writes) said 'no DICOM series in this folder', though
    score reads a folder of .mha files: the folder holding them is named."""
    from fetaliqa_core.synth import write_dataset

    write_dataset(tmp_path / "d", cases=1, seed=3, frames_per_sweep=3, height=64, width=80)
    for folder in (tmp_path / "d", tmp_path / "d" / "images"):
        assert main(["score", str(folder), "--out", str(tmp_path / "o")]) == 1
        err = capsys.readouterr().err
        assert "images/stacked_fetal_ultrasound holds image files" in err and "takes that folder, to score them all" in err



def test_a_folder_given_for_a_sweep_names_the_sweep_files_it_holds(tmp_path):
    """`gui FOLDER` on the folder holding demo_s27_v3.mha said only "Choose the sweep file itself",
    and on a folder whose subfolder held one mask file pointed there without naming it (it was
    FetalIQA's own field-of-view mask, not a sweep): the files are named."""
    from fetaliqa_core.errors import FetalIQAError

    frames = np.zeros((2, 8, 8), np.uint8)
    here = tmp_path / "demo"
    here.mkdir()
    write_volume(here / "demo_s27_v3.mha", frames)
    (here / "demo_s27_v3.mha.sizes.json").write_text("{}")
    with pytest.raises(FetalIQAError) as told:
        load_sweep(here)
    assert "a folder, not a sweep; it holds demo_s27_v3.mha: choose one of them" in str(told.value)
    top = tmp_path / "clone"
    (top / "resources").mkdir(parents=True)
    write_volume(top / "resources" / "acouslic_fov_mask.mha", frames)
    with pytest.raises(FetalIQAError) as told:
        load_sweep(top)
    assert "resources holds image files (acouslic_fov_mask.mha): choose one of them" in str(told.value)


def test_results_of_another_sweep_or_of_the_user_are_not_replaced_without_a_word(tmp_path, capsys, monkeypatch):
    """`score patientA/sweep.mha` then `score patientB/sweep.mha` both wrote fetaliqa-scores/sweep:
    A's results were replaced without a word; a folder holding the user's own frames.csv and
    summary.json had both overwritten."""
    import numpy as np

    from fetaliqa_core.cli import main
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(0)
    for patient in ("patientA", "patientB"):
        (tmp_path / patient).mkdir()
        write_volume(tmp_path / patient / "sweep.mha", rng.integers(0, 200, (3, 64, 80), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    models = ["--model", "demo", "--device", "cpu", "--quiet", "--no-cache"]
    assert main(["score", "patientA/sweep.mha", *models]) == 0
    assert main(["score", "patientB/sweep.mha", *models]) == 0
    err = capsys.readouterr().err
    a = json.loads((tmp_path / "fetaliqa-scores" / "sweep" / "summary.json").read_text())
    b = json.loads((tmp_path / "fetaliqa-scores" / "sweep-2" / "summary.json").read_text())
    assert a["path"].startswith("patientA") and b["path"].startswith("patientB")
    assert "these go into fetaliqa-scores/sweep-2" in err
    assert main(["score", "patientA/sweep.mha", *models]) == 0  # the same sweep again: its own folder
    assert "patientA" in json.loads((tmp_path / "fetaliqa-scores" / "sweep" / "summary.json").read_text())["path"]
    # the same file changed since: its own results are replaced (it went to sweep-3 as "another sweep")
    write_volume(tmp_path / "patientA" / "sweep.mha", rng.integers(0, 200, (3, 64, 80), dtype=np.uint8))
    capsys.readouterr()
    assert main(["score", "patientA/sweep.mha", *models]) == 0
    assert "another sweep" not in capsys.readouterr().err and not (tmp_path / "fetaliqa-scores" / "sweep-3").exists()
    # scoring the folder the results went into does not call the results folder a folder of sweeps left out
    write_volume(tmp_path / "top.mha", rng.integers(0, 200, (3, 64, 80), dtype=np.uint8))
    assert main(["score", ".", *models, "--out", "folder-scores"]) == 0
    assert "fetaliqa-scores" not in capsys.readouterr().err
    # an --out given is the user's choice: replaced, and said
    assert main(["score", "patientB/sweep.mha", *models, "--out", "fetaliqa-scores/sweep"]) == 0
    assert "held the results of patientA/sweep.mha; they are replaced" in capsys.readouterr().err
    # the user's own files of those names are not replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"my": "notes"}')
    assert main(["score", "patientA/sweep.mha", *models, "--out", "mine"]) == 1
    assert "holds summary.json that FetalIQA did not write" in capsys.readouterr().err
    assert (mine / "summary.json").read_text() == '{"my": "notes"}'


def test_a_pair_on_two_bases_says_it_runs_two_encoder_passes_and_records_each_base(case, tiny_bundle_dirs,
                                                                                    tmp_path, capsys):
    """A classifier and a segmenter on two random bases (test models) ran as two models, two
    encoder passes and two towers in memory, without a word; summary.json named the classifier's
    base alone ("random:5") though the segmenter ran on another. Each bundle's base is recorded,
    and the run says whether the pair shared one encoder pass."""
    from fetaliqa_core.models.base import random_base
    from fetaliqa_core.models.bundle import manifest_for, save_bundle
    from fetaliqa_core.models.lora import LoraSettings
    from fetaliqa_core.models.segmenter import FetalCLIPSegmenter

    visual, info = random_base("tiny", 6)
    seg = FetalCLIPSegmenter(visual, LoraSettings(), n_classes=3, init_filters=8)
    other_seg = save_bundle(seg, tmp_path / "seg6", manifest_for(seg, info))
    runs = {}
    for name, seg_dir in (("two", other_seg), ("one", tiny_bundle_dirs["seg"])):
        out = tmp_path / name
        assert main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(seg_dir),
                     "--out", str(out), "--quiet", "--no-cache"]) == 0
        runs[name] = (json.loads((out / "summary.json").read_text()), capsys.readouterr().out)
    summary, printed = runs["two"]
    assert summary["base_sha256"] == "random:5"  # the key readers use: the first model's, as before
    assert {b["role"]: b["base_sha256"] for b in summary["bundles"]} == {"classifier": "random:5",
                                                                          "segmenter": "random:6"}
    assert summary["encoder_passes"] == 2
    said = ("classifier and segmenter on different bases (random:5, random:6): two encoder passes per batch, "
            "and two towers in memory where a pair on one base holds one")
    assert summary["encoder_note"] == said and f"  {said}\n" in printed
    summary, printed = runs["one"]
    assert {b["role"]: b["base_sha256"] for b in summary["bundles"]} == {"classifier": "random:5",
                                                                          "segmenter": "random:5"}
    assert summary["encoder_passes"] == 1
    said = "classifier and segmenter on one base: one encoder pass per batch"
    assert summary["encoder_note"] == said and f"  {said}\n" in printed


def test_progress_into_a_pipe_or_log_is_plain_lines(case, tiny_bundle_dirs, tmp_path, capsys, monkeypatch):
    """Into a pipe or a log file (even with TERM=dumb) ``score`` wrote tqdm's bar, one line redrawn
    with carriage returns and block characters; it now writes a plain line every few seconds,
    as ``fetaliqa demo`` does."""
    from fetaliqa_core import progress

    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.0)  # a line at every batch
    rc = main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--seg", str(tiny_bundle_dirs["seg"]),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "\r" not in err and "█" not in err, err
    lines = [line for line in err.splitlines() if "frames" in line]
    assert lines and all(re.fullmatch(r"  case\.mha: \d+ / 12 frames( · [\d.]+/s( · .+ left)?)?", line)
                         for line in lines), err


def test_a_folder_s_table_names_the_models_on_each_row_and_keeps_its_columns_in_place(tmp_path):
    """summary.csv of a folder scored by the student alone and by the cascade had the same columns,
    only the numbers differing: a copy of the table could not tell a student's answer from a
    teacher's. A row without an answer keeps every column in its place."""
    import csv

    from fetaliqa_core.cli.score import TABLE_COLUMNS, blank_row, failed_row, table_rows, write_table

    sweep = {"sweep": 1, "kind": "transverse", "best_frame": 4, "p_cls": 0.8, "p_seg": 0.9, "ac_mm": 250.1,
             "ac_status": "doubtful", "ga": "", "ga_weeks": None}
    student = {"sweeps": [sweep], "frames_scored": 10, "n_frames": 10, "chosen_frame": 4, "complete": True,
               "models": "demo student (distilled from the demo model, trained on synthetic sweeps) on cpu, fp32"}
    cascade = dict(student, models="demo model (tiny, trained on synthetic sweeps), cascade after the demo student")
    rows = table_rows("a.mha", student) + table_rows("b.mha", cascade) + [failed_row("c.mha", "broken"),
                                                                        blank_row("d.mha", "missing", "interrupted")]
    table = list(csv.DictReader(write_table(tmp_path / "summary.csv", rows).open(encoding="utf-8")))
    assert [r["models"] for r in table] == [student["models"], cascade["models"], "", ""]
    assert all(len(row) == len(TABLE_COLUMNS) for row in rows)
    assert (table[2]["status"], table[2]["error"], table[3]["status"], table[3]["error"]) == \
        ("failed", "broken", "missing", "interrupted")
    assert table[0]["ac_mm"] == "250.1" and table[0]["status"] == "ok"
