"""``fetaliqa score`` end to end on a small synthetic case with tiny random-weight bundles."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

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
                             "model_threshold"]
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
    assert [s["sweep"] for s in summary["sweeps"]] == [1, 2]
    chosen = summary["chosen_frame"]
    assert chosen == int((out / "fetal-abdomen-frame-number.json").read_text())
    flagged = [int(r["frame"]) for r in rows if r["flagged"] == "1"]
    assert (chosen in flagged) if flagged else chosen == -1
    mask = load_mask(out / "fetal-abdomen-segmentation.mha", like=load_sweep(case))
    filled = np.flatnonzero(mask.reshape(12, -1).any(axis=1))
    assert filled.tolist() in ([], [chosen])
    assert "chosen frame" in capsys.readouterr().out


def test_a_changed_threshold_is_written_as_such(case, tiny_bundle_dirs, tmp_path):
    own = json.loads((tiny_bundle_dirs["cls"] / "manifest.json").read_text())["threshold"]
    mine = 0.62 if abs(own - 0.62) > 0.01 else 0.3
    out = tmp_path / "out"
    assert main(["score", str(case), "--cls", str(tiny_bundle_dirs["cls"]), "--out", str(out), "--quiet",
                 "--threshold", str(mine)]) == 0
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
    assert table[-1]["status"].startswith("failed") and "summary.csv" in captured.out
