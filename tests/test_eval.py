"""``fetaliqa eval``: per-frame metrics equal those of the bundle run directly, the segmenter's
1 % area rule, challenge metrics per case, the printed table and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fetaliqa_core.errors import FetalIQAError


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from fetaliqa_core.synth import write_dataset

    out = tmp_path_factory.mktemp("eval_data")
    write_dataset(out, cases=4, seed=11, frames_per_sweep=4, height=96, width=128)
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """An untrained classifier and 3-class segmenter on the random tiny base (their outputs are
    arbitrary but fixed, which is all the bookkeeping checks need)."""
    import torch

    from fetaliqa_core.models.base import random_base
    from fetaliqa_core.models.bundle import manifest_for, save_bundle
    from fetaliqa_core.models.classifier import FetalCLIPClassifier
    from fetaliqa_core.models.segmenter import FetalCLIPSegmenter

    root = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    visual, info = random_base("tiny")
    cls = FetalCLIPClassifier(visual)
    with torch.no_grad():
        cls.head.bias.fill_(0.05)  # p near 0.5: both calls occur
    save_bundle(cls, root / "cls", manifest_for(cls, info))
    visual, info = random_base("tiny")
    seg = FetalCLIPSegmenter(visual, n_classes=3, init_filters=4)
    with torch.no_grad():
        seg.seg.decoder.out.bias.copy_(torch.tensor([0.0, 0.3, -0.2]))
    save_bundle(seg, root / "seg", manifest_for(seg, info))
    return {"cls": root / "cls", "seg": root / "seg"}


def _direct(bundle: Path, data: Path):
    """Per-frame p_cls and mask areas of every frame of every case, by the bundle alone."""
    from fetaliqa_core.io import load_sweep
    from fetaliqa_core.models.bundle import load_bundle
    from fetaliqa_core.models.segmenter import foreground_probability
    from fetaliqa_core.preprocess import preprocess_frames
    from training.dataset import frame_labels, read_cases

    model = load_bundle(bundle, device="cpu")
    p, area, truth = [], [], []
    for case in read_cases(data):
        sweep = load_sweep(case.image_path)
        pred = model.predict(preprocess_frames(np.asarray(sweep.frames)))
        if pred.p_cls is not None:
            p.append(pred.p_cls.numpy())
        if pred.seg_prob is not None:
            prob = pred.seg_prob
            fg = prob.argmax(dim=1) > 0 if prob.shape[1] == 3 else foreground_probability(prob) > 0.5
            area.append(fg.flatten(1).sum(1).numpy())
        truth.append(frame_labels(case) > 0)
    cat = lambda xs: np.concatenate(xs) if xs else None  # noqa: E731
    return cat(p), cat(area), cat(truth)


def test_eval_matches_the_bundle_run_directly(tiny_data, bundles, tmp_path):
    from fetaliqa_core.analysis import binary_metrics
    from training.evaluate import EvalSettings, evaluate

    out = tmp_path / "ev"
    m = evaluate(EvalSettings(cls=bundles["cls"], seg=bundles["seg"], data=tiny_data, split="all",
                              device="cpu", all_sweeps=True, progress=False), out_dir=out)
    p, area, truth = _direct(bundles["cls"], tiny_data)
    _, area, _ = _direct(bundles["seg"], tiny_data)
    assert m["n_frames"] == truth.size and m["n_positive"] == int(truth.sum())
    want = binary_metrics(truth, p >= 0.5)
    got = m["frame"]["cls"]
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (want.tp, want.fp, want.tn, want.fn)
    # the segmenter as a classifier: positive when >= 1 % of the 224 x 224 pixels are foreground
    rule = binary_metrics(truth, area >= 0.01 * 224 * 224)
    seg = m["frame"]["seg"]
    assert (seg["tp"], seg["fp"], seg["tn"], seg["fn"]) == (rule.tp, rule.fp, rule.tn, rule.fn)
    assert 0.0 <= seg["dice"] <= 1.0 and "grade_accuracy" in seg
    # challenge metrics: one row per model and one for both, aggregates = means of the cases
    assert set(m["challenge"]) == {"baseline", "cls", "seg", "cls+seg"}
    for name, per_case in m["cases"].items():
        assert len(per_case) == 4
        for c in per_case:
            assert c["wfss"] in (0.0, 0.6, 1.0)
            assert c["score"] == pytest.approx(0.5 * (1 - c["nae_ac"]) + 0.25 * c["wfss"] + 0.25 * c["dsc_soft"])
        # an undefined evaluator Dice (inf) counts as 0 in the mean, and is counted
        scores = [c["score"] if c["dsc_defined"] else 0.5 * (1 - c["nae_ac"]) + 0.25 * c["wfss"] for c in per_case]
        assert m["challenge"][name]["score"]["mean"] == pytest.approx(np.mean(scores))
        assert m["challenge"][name]["score"]["undefined"] == sum(not c["dsc_defined"] for c in per_case)
    # every row is measured on the segmenter's mask of the frame it chose: same frame, same metrics
    for a, b in zip(m["cases"]["cls"], m["cases"]["cls+seg"]):
        if a["chosen_frame"] == b["chosen_frame"]:
            assert (a["nae_ac"], a["wfss"]) == (b["nae_ac"], b["wfss"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["frame"]["cls"]["f1"] == pytest.approx(got["f1"])
    rows = (out / "per_case.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 4
    # the evaluator's AC and the product's own, each in a column of its own
    assert rows[0].endswith("ac_pred_mm,ac_gt_mm,ac_project_mm")
    got = {(r.split(",")[0], r.split(",")[1]): r.split(",")[-1] for r in rows[1:]}
    for name, per_case in m["cases"].items():
        for c in per_case:
            want = c["ac_project_mm"]
            assert got[(name, c["uuid"])] == ("" if want is None else f"{want:.4f}")


def test_eval_cli_prints_table_and_paper(tiny_data, bundles, tmp_path, capsys):
    from fetaliqa_core.cli import main

    out = tmp_path / "cli"
    rc = main(["eval", "--seg", str(bundles["seg"]), "--data", str(tiny_data), "--split", "all",
               "--device", "cpu", "--out", str(out), "--compare-paper", "--quiet", "--all-sweeps",
               "--paper-seg", str(bundles["seg"])])
    assert rc == 0
    text = capsys.readouterr().out
    assert "segmenter (1% area)" in text and "FetalCLIP_CLS" in text and "0.7570" in text
    # the second bundle's rows are printed beside the first's, each labelled with its preset
    rows = [ln for ln in text.splitlines() if ln.startswith("segmenter (1% area) [")]
    assert len(rows) == 4  # all sweeps + AC sweeps, two bundles
    # beside the paper's means of 5 runs, each is said to be one trained model
    assert all(" 1 trial " in ln for ln in rows) and "1 trial: each bundle's rows above are one trained model" in text
    # ... and so are its intervals over cases and its frame-choice rows (the answer it would give)
    assert text.count("with 95 % intervals over the") == 2 and text.count("segmenter alone [") == 2
    assert "draws a mask on a frame without abdomen" in text
    saved = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= saved["frame"]["seg"]["mask_on_empty_rate"] <= 1.0
    assert saved["intervals"]["seg_frame_f1"]["ci95"][0] <= saved["intervals"]["seg_frame_f1"]["ci95"][1]
    # the answer's honesty: cases where a number to act on is shown on a frame without abdomen
    honest = saved["intervals"]["seg_trusted_ac_off_abdomen"]
    rows = saved["cases"]["seg"]
    assert honest["k"] == sum(1 for c in rows if c["ac_status"] == "ok" and c["chosen_label"] == 0)
    assert 0 <= honest["k"] <= honest["n"] == saved["n_cases"] and "AC shown as a number, frame off abdomen" in text
    assert "WFSS" in text and "score" in text
    assert "baseline rule" in text and "segmenter alone" in text
    assert (out / "metrics.json").is_file()
    # the other bundles' full metrics (frame choice, challenge rows) are written beside the first's
    assert str(out / "paper" / "metrics.json") in text and (out / "paper" / "metrics.json").is_file()


def test_eval_errors(tiny_data, bundles, tmp_path):
    from fetaliqa_core.cli import main
    from training.evaluate import EvalSettings, evaluate

    with pytest.raises(FetalIQAError, match="--cls"):
        evaluate(EvalSettings(cls=None, seg=None, data=tiny_data, progress=False))
    # missing files are failures at run time (1), not usage errors (2)
    assert main(["eval", "--cls", str(tmp_path / "nope"), "--data", str(tiny_data), "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 1
    assert main(["eval", "--cls", str(bundles["cls"]), "--data", str(tmp_path / "nodata"), "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 1


def test_eval_leaves_a_folder_that_is_not_an_evaluation_alone(tiny_data, bundles, tmp_path, capsys):
    """--out pointing at a training run (or any folder holding files an evaluation does not
    write) is refused before anything runs: its metrics.json would be replaced without a word.
    A negative split seed and --max-cases below 1 are usage errors, not tracebacks."""
    from fetaliqa_core.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.json").write_text('{"best_epoch": 3}')
    args = ["eval", "--cls", str(bundles["cls"]), "--data", str(tiny_data), "--split", "all", "--device", "cpu",
            "--quiet", "--out"]
    assert main(args + [str(run)]) == 1
    assert (run / "metrics.json").read_text() == '{"best_epoch": 3}'
    assert "an evaluation does not write" in capsys.readouterr().err
    # files of an evaluation's names that no evaluation wrote (the user's own) are left alone too
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": true}')
    (mine / "per_case.csv").write_text("my,table\n")
    assert main(args + [str(mine), "--max-cases", "1", "--all-sweeps"]) == 1
    assert (mine / "metrics.json").read_text() == '{"mine": true}' and (mine / "per_case.csv").read_text() == "my,table\n"
    assert "holds a metrics.json, per_case.csv that no evaluation wrote" in capsys.readouterr().err
    # ... while an evaluation's own folder is written over, as asked
    for _ in range(2):
        assert main(args + [str(tmp_path / "ev"), "--max-cases", "1", "--all-sweeps"]) == 0
    for bad in (["--split-seed", "-1"], ["--max-cases", "-2"], ["--max-cases", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(args + [str(tmp_path / "o")] + bad)
        assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_no_interval_is_printed_over_a_single_case():
    """Resampling one case gives that case back: the report printed '[0.6207, 0.6207]' as a 95 %
    interval. With two cases or more the interval is printed."""
    from training.evaluate import _interval_lines

    r = {"value": 0.6207, "ci95": [0.6207, 0.6207], "n": 1, "k": 1}
    one = _interval_lines({"intervals": {"n_cases": 1, "cls_frame_f1": r}}, "")
    assert "[" not in "\n".join(one) and "only 1" in one[-1]
    two = _interval_lines({"intervals": {"n_cases": 2, "cls_frame_f1": dict(r, ci95=[0.5, 0.7])}}, "")
    assert any("[0.5" in line for line in two)


def test_eval_refuses_reference_acs_written_in_cm(tiny_data, bundles, tmp_path, capsys):
    """A circumferences CSV in cm made every NAE_AC about 9 and the challenge score meaningless
    without a word; the reference ACs are now held against their own annotations first."""
    import csv
    import shutil

    from fetaliqa_core.cli import main

    data = tmp_path / "cm"
    shutil.copytree(tiny_data, data)
    path = data / "circumferences" / "fetal_abdominal_circumferences_per_sweep.csv"
    rows = list(csv.reader(path.open()))
    rows[1:] = [row[:2] + [f"{float(v) / 10:.2f}" if v else "" for v in row[2:]] for row in rows[1:]]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    args = ["eval", "--cls", str(bundles["cls"]), "--split", "all", "--device", "cpu", "--quiet", "--data"]
    assert main(args + [str(data), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "written in cm" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "metrics.json").exists()
    assert main(args + [str(tiny_data), "--out", str(tmp_path / "mm")]) == 0  # the same cases in mm


def test_paper_bundles_are_evaluated_on_the_first_pairs_cases(tiny_data, bundles, tmp_path, capsys):
    """`--paper-cls/--paper-seg` scored the other bundles on their own split (a permutation of
    the cases, where the first pair's is grouped by subject): the two rows printed side by side
    came from different cases."""
    import shutil

    from fetaliqa_core.cli import main

    paper = tmp_path / "paper_cls"
    shutil.copytree(bundles["cls"], paper)
    manifest = json.loads((paper / "manifest.json").read_text())
    manifest.setdefault("metrics", {})["training"] = {"split_method": "permutation", "split_seed": 5}
    (paper / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "ev"
    assert main(["eval", "--cls", str(bundles["cls"]), "--paper-cls", str(paper), "--data", str(tiny_data),
                 "--split", "val", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    mine = json.loads((out / "metrics.json").read_text())
    other = json.loads((out / "paper" / "metrics.json").read_text())
    assert mine["case_uuids"] and other["case_uuids"] == mine["case_uuids"]
    assert other["n_frames"] == mine["n_frames"]


def test_the_cases_a_bundle_trained_on_are_those_its_manifest_records(tiny_data, bundles, tmp_path, capsys):
    """The check for evaluated cases a bundle was trained on reads the cases its manifest records,
    not a split of today's data (a case added moves others between splits); a bundle that records
    none is said to be uncheckable, not guessed about."""
    import shutil

    from fetaliqa_core.cli import main
    from training.dataset import case_digest, read_cases

    uuids = [c.uuid for c in read_cases(tiny_data)]
    recorded = tmp_path / "recorded"
    shutil.copytree(bundles["cls"], recorded)
    manifest = json.loads((recorded / "manifest.json").read_text())
    manifest.setdefault("metrics", {})["training"] = {"train_cases": [case_digest(uuids[2])]}
    (recorded / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    args = ["--data", str(tiny_data), "--split", "all", "--device", "cpu", "--quiet", "--max-cases", "3"]
    assert main(["eval", "--cls", str(recorded), "--out", str(tmp_path / "a"), *args]) == 0
    err = capsys.readouterr().err
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["cases_in_own_training_split"] == [uuids[2]]
    assert f"1 of these 3 case(s) are in the training split of these bundles ({uuids[2]})" in err
    # a bundle with a training record (a split seed) but no cases recorded: nothing is guessed
    manifest["metrics"]["training"] = {"split_seed": 42}
    (recorded / "manifest.json").write_text(json.dumps(manifest))
    assert main(["eval", "--cls", str(recorded), "--out", str(tmp_path / "b"), *args]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["cases_in_own_training_split"] is None
    assert "cannot be checked" in capsys.readouterr().err


@pytest.mark.parametrize("key,value,option", [("split_seed", "abc", "--split-seed"), ("split_seed", -5, "--split-seed"),
                                               ("all_sweeps", "no", "--all-sweeps"),
                                               ("split_method", ["grouped"], "restore the bundle")])
def test_a_manifest_recording_its_split_wrongly_is_told_in_one_line_alone_or_in_a_pair(
        tiny_data, bundles, tmp_path, capsys, key, value, option):
    """A classifier whose manifest recorded split_seed 'abc': a traceback with --cls alone, and
    with --seg beside it (the two loaded as one pair on one base) the segmenter's record was read
    instead of the classifier's and the evaluation went on without a word."""
    import shutil

    from fetaliqa_core.cli import main

    edited = tmp_path / "cls"
    shutil.copytree(bundles["cls"], edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest.setdefault("metrics", {})["training"] = {key: value}
    (edited / "manifest.json").write_text(json.dumps(manifest))
    args = ["--data", str(tiny_data), "--split", "all", "--device", "cpu", "--quiet", "--max-cases", "1"]
    for seg in ([], ["--seg", str(bundles["seg"])]):
        capsys.readouterr()
        assert main(["eval", "--cls", str(edited), *seg, "--out", str(tmp_path / "o"), *args]) == 1
        err = capsys.readouterr().err
        assert f"the manifest of {edited} records {key} {value!r}" in err and option in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_cases_a_classifier_trained_on_count_when_it_is_loaded_in_a_pair(tiny_data, bundles, tmp_path):
    """A classifier and a segmenter on one base are loaded as one pair whose manifest is the
    segmenter's: only the segmenter's recorded cases were checked, never the classifier's."""
    import shutil

    from fetaliqa_core.cli import main
    from training.dataset import case_digest, read_cases

    uuid = read_cases(tiny_data)[0].uuid
    edited = tmp_path / "cls"
    shutil.copytree(bundles["cls"], edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest.setdefault("metrics", {})["training"] = {"train_cases": [case_digest(uuid)]}
    (edited / "manifest.json").write_text(json.dumps(manifest))
    seg = tmp_path / "seg"
    shutil.copytree(bundles["seg"], seg)
    manifest = json.loads((seg / "manifest.json").read_text())
    manifest.setdefault("metrics", {})["training"] = {"train_cases": []}
    (seg / "manifest.json").write_text(json.dumps(manifest))
    args = ["--data", str(tiny_data), "--split", "all", "--device", "cpu", "--quiet", "--max-cases", "1", "--all-sweeps"]
    assert main(["eval", "--cls", str(edited), "--seg", str(seg), "--out", str(tmp_path / "p"), *args]) == 0
    assert json.loads((tmp_path / "p" / "metrics.json").read_text())["cases_in_own_training_split"] == [uuid]


def test_a_students_trained_cases_include_its_teachers():
    """A distilled student copies its teachers' outputs on their training cases, so its numbers
    there are flattered too: eval said nothing when a student was evaluated on them. Its teachers'
    cases count as its own; a student that does not record them cannot be checked."""
    from types import SimpleNamespace

    from training.dataset import case_digest
    from training.evaluate import _trained_cases

    def student(**metrics):
        manifest = SimpleNamespace(is_student=True, metrics=metrics, student={"teacher": {}})
        model = SimpleNamespace(manifest=manifest)
        return SimpleNamespace(cls=model, seg=model)

    own, taught = case_digest("case-A"), case_digest("case-B")
    assert _trained_cases(student(train_cases=[own], teacher_train_cases=[taught])) == {own, taught}
    assert _trained_cases(student(train_cases=[own])) is None
    assert _trained_cases(student(train_cases=[own], teacher_train_cases=None)) is None


def test_reference_acs_that_disagree_with_the_annotation_are_said(tiny_data, bundles, tmp_path, capsys):
    """An AC written a column off (on a sweep without annotation, its annotated sweep left blank)
    scored the case NAE_AC 1, or rewarded a frame of the wrong sweep, without a word, and counted
    it in "AC within 3 %". Now each kind is a note naming the case, the case is left out of "AC
    within 3 %", and NAE_AC is also given without it."""
    import csv
    import shutil

    from fetaliqa_core.cli import main
    from training.dataset import CSV_RELPATH, frame_labels, read_cases

    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    case = next(c for c in read_cases(data) if c.sweeps_with_ac())
    labels = frame_labels(case)
    per = labels.size // case.n_sweeps
    s = case.sweeps_with_ac()[0]
    empty = next(k for k in range(case.n_sweeps) if not labels[k * per:(k + 1) * per].any())
    rows = list(csv.reader((data / CSV_RELPATH).open()))
    row = next(r for r in rows if r[0] == case.uuid)
    row[2 + empty], row[2 + s] = row[2 + s], ""
    with (data / CSV_RELPATH).open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    capsys.readouterr()
    assert main(["eval", "--seg", str(bundles["seg"]), "--data", str(data), "--split", "all", "--all-sweeps",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "ev")]) == 0
    captured = capsys.readouterr()
    assert f"an annotated sweep without a reference AC (NAE_AC 1 there whatever the frame): {case.uuid} sweep {s + 1}" \
        in captured.err
    assert f"a reference AC on a sweep without annotation (is the CSV a column off?): {case.uuid} sweep {empty + 1}" \
        in captured.err
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["reference_ac_mismatch"] == {case.uuid: {"no_ac": [s + 1], "not_annotated": [empty + 1]}}
    annotated = sum(1 for c in saved["cases"]["seg"] if c["has_annotation"])
    assert saved["intervals"]["seg_ac_within_3pct"]["n"] == annotated - 1
    other = [c["nae_ac"] for c in saved["cases"]["seg"] if c["uuid"] != case.uuid]
    assert saved["challenge"]["seg"]["nae_ac_matching_reference"]["mean"] == pytest.approx(np.mean(other))
    assert "NAE_AC without the 1 case(s) whose reference AC and annotation disagree" in captured.out


def test_the_report_says_how_a_case_without_annotation_is_scored():
    """WFSS 0 for any answer, -1 included, on a case without annotation (the organisers'
    convention, not the project's credit for abstaining): the table says which it used."""
    from training.evaluate import format_report

    row = {k: {"mean": 0.0, "n": 2, "undefined": 0} for k in ("score", "wfss", "nae_ac", "dsc_soft")}
    cases = [{"uuid": "a", "has_annotation": True}, {"uuid": "b", "has_annotation": False}]
    metrics = {"split": "all", "n_cases": 2, "n_frames": 4, "n_positive": 1, "all_sweeps": True, "frame": {},
               "challenge": {"seg": row}, "cases": {"seg": cases}}
    text = format_report(metrics)
    assert "WFSS of the 1 case(s) without annotation is 0 whatever is chosen, -1 (no frame) included" in text
    cases[1]["has_annotation"] = True
    assert "without annotation" not in format_report(metrics)


def test_beside_the_paper_a_bundle_is_one_trial_and_its_runs_mean_of_trials_is_shown_too(tmp_path):
    """--compare-paper put a run's bundle (one trial: the one of lowest validation loss) beside the
    paper's means of 5 runs without a word; the mean +- std of the run's trials was in its
    metrics.json only."""
    from types import SimpleNamespace

    from training.config import TrainConfig
    from training.evaluate import _trials_record, format_report
    from training.trials import summarise_trials

    run = tmp_path / "run"
    for folder in ("bundle", "trial_3/bundle"):
        (run / folder).mkdir(parents=True)
    tests = [{"accuracy": a, "f1": f, "precision": 0.7, "recall": 0.6, "specificity": 0.9, "loss": 0.3}
             for a, f in ((0.9, 0.6), (0.8, 0.7), (0.85, 0.8))]
    results = [{"trial": k + 1, "seed": k, "best_val_loss": 0.5 - 0.1 * k, "test": t} for k, t in enumerate(tests)]
    summary = summarise_trials(TrainConfig(task="cls", data="D", out=str(run), trials=3), results)
    summary.update(best_trial=3, bundle=str(run / "bundle"))
    (run / "metrics.json").write_text(json.dumps(summary))
    (run / "trial_3" / "metrics.json").write_text(json.dumps(results[2]))
    manifest = SimpleNamespace(metrics={"best_val_loss": 0.3, "test": tests[2],
                                        "training": {"trials": 3, "seed": 2, "preset": "paper"}})
    info = _trials_record(run / "bundle", manifest)
    assert info["trials"] == 3 and info["run_test_summary"]["f1"]["mean"] == pytest.approx(0.7)
    assert info["run_test_summary"]["f1"]["n"] == 3
    assert _trials_record(run / "trial_3" / "bundle", manifest)["run_test_summary"] is None  # no run beside it
    other = SimpleNamespace(metrics={"best_val_loss": 0.4, "training": {"trials": 3, "seed": 1}})
    assert _trials_record(run / "bundle", other)["run_test_summary"] is None  # not this run's bundle
    (run / "metrics.json").write_bytes(b"\xff{")
    assert _trials_record(run / "bundle", manifest)["run_test_summary"] is None

    row = {"accuracy": 0.85, "f1": 0.8, "precision": 0.7, "recall": 0.6, "specificity": 0.9}
    metrics = {"split": "test", "n_cases": 2, "n_frames": 4, "n_positive": 1, "all_sweeps": False,
               "frame": {"cls": row}, "presets": {"cls": "paper"}, "trials": {"cls": info}, "challenge": {},
               "cases": {}}
    text = format_report(metrics, compare_paper=True)
    assert "classifier [paper] 1 trial " in text
    assert "classifier [paper]: one of its run's 3 trials, the one of lowest validation loss" in text
    mean = next(ln for ln in text.splitlines() if "classifier [paper] mean" in ln).split()
    assert mean[-6:] == ["0.8500", "0.7000", "0.7000", "0.6000", "0.9000", "-"]
    std = next(ln for ln in text.splitlines() if "classifier [paper] +- std" in ln).split()
    assert float(std[-6]) == pytest.approx(np.std([0.9, 0.8, 0.85]), abs=1e-4)
    assert "1 trial" not in format_report(metrics)  # without the paper's table: the rows as they were
    seg_row = next(ln for ln in text.splitlines() if "FetalCLIP_SEG" in ln).split()
    assert seg_row[1:] == ["-", "0.771", "-", "-"]  # as the paper gives it (not 0.7710)


def test_eval_outputs_replace_a_link_and_never_write_through_it(tmp_path):
    from training.evaluate import write_outputs

    foreign = tmp_path / "important.csv"
    foreign.write_text("someone else's table\n")
    out = tmp_path / "eval"
    out.mkdir()
    (out / "per_case.csv").symlink_to(foreign)
    metrics = {"cases": {"cls": [{"uuid": "u1", "chosen_frame": 3, "wfss": 1.0, "nae_ac": None, "dsc_soft": 0.5,
                                  "score": 0.7, "ac_pred_mm": 250.0, "ac_gt_mm": None}]}}
    write_outputs(out, metrics)
    assert foreign.read_text() == "someone else's table\n"
    assert not (out / "per_case.csv").is_symlink() and "u1" in (out / "per_case.csv").read_text()


def test_eval_says_an_out_folder_it_cannot_write_in_before_any_case_is_evaluated(tmp_path, monkeypatch, capsys):
    """A read-only --out was found after every case was evaluated, in a line naming a hidden
    temporary folder (".e.03ep0if_") instead of the folder given."""
    import errno
    import os

    import training.evaluate as evaluate_mod
    import training.evaluate_predictions as predictions_mod
    from fetaliqa_core import paths
    from fetaliqa_core.cli import main

    reached = []

    def evaluated(*a, **k):
        reached.append(a)
        raise FetalIQAError("evaluated")

    monkeypatch.setattr(evaluate_mod, "evaluate", evaluated)
    monkeypatch.setattr(predictions_mod, "evaluate_predictions", evaluated)
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    runs = (["--cls", str(tmp_path / "cls"), "--device", "cpu"], ["--predictions", str(tmp_path)])
    for how in runs:
        assert main(["eval", *how, "--data", str(tmp_path), "--split", "all", "--quiet",
                     "--out", str(afile / "e")]) == 1
        err = capsys.readouterr().err
        assert f"{afile / 'e'}: cannot write results there (a part of the path is a file, not a folder)" in err

    def read_only(folder):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder / ".fetaliqa-probe-x"))

    monkeypatch.setattr(paths, "probe_writable", read_only)
    (tmp_path / "earlier").mkdir()
    for how in runs:
        for out in (tmp_path / "new" / "e", tmp_path / "earlier"):  # made later, or there already
            assert main(["eval", *how, "--data", str(tmp_path), "--split", "all", "--quiet", "--out", str(out)]) == 1
            err = capsys.readouterr().err
            assert err.strip() == (f"fetaliqa: {out}: cannot write results there (the disk is read-only). Give --out "
                                   "a folder you can write to."), err
    assert not reached and not (tmp_path / "new").exists()


def test_a_failed_metrics_file_leaves_no_table_without_it(tmp_path, monkeypatch):
    """`eval` under a file size limit wrote a complete per_case.csv, then failed on metrics.json
    and left the table alone in --out, as if the evaluation had ended; an earlier evaluation's
    files were half replaced the same way."""
    import errno
    import os

    from training import evaluate

    metrics = {"cases": {"cls": [{"uuid": "u1", "chosen_frame": 3, "wfss": 1.0, "nae_ac": None, "dsc_soft": 0.5,
                                  "score": 0.7, "ac_pred_mm": 250.0, "ac_gt_mm": None}]}}
    earlier = tmp_path / "earlier"
    evaluate.write_outputs(earlier, metrics)
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    real = evaluate.write_json

    def too_large(path, obj, *a, **k):
        if Path(path).name == "metrics.json":
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        return real(path, obj, *a, **k)

    monkeypatch.setattr(evaluate, "write_json", too_large)
    metrics["cases"]["cls"][0]["uuid"] = "u2"
    for out in (tmp_path / "new", earlier):
        with pytest.raises(FetalIQAError) as exc:
            evaluate.write_outputs(out, metrics)
        # the folder given named, not the hidden one the files were staged in
        assert str(exc.value) == (f"{out}: cannot write results there (the file system refused a file this large (a "
                                  "file size limit, such as ulimit -f, or the file system's own)). Give --out a "
                                  "folder you can write to.")
        assert not out.exists() or {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]  # nothing staged left behind


def test_an_undefined_case_score_is_empty_in_the_table_as_it_is_null_in_the_metrics(tmp_path):
    """A case whose DSC_soft (and so its score) the evaluator leaves undefined (infinite) was
    written "inf" in per_case.csv, null in metrics.json and counted 0 in the printed table: a
    mean taken over the CSV was infinite."""
    import csv

    from training.evaluate import write_outputs

    metrics = {"cases": {"seg": [{"uuid": "u1", "chosen_frame": -1, "wfss": 0.0, "nae_ac": 1.0,
                                  "dsc_soft": float("inf"), "score": float("inf"), "ac_pred_mm": None,
                                  "ac_gt_mm": None}]}}
    write_outputs(tmp_path, metrics)
    (row,) = csv.DictReader((tmp_path / "per_case.csv").open())
    assert row["dsc_soft"] == "" and row["score"] == "" and row["wfss"] == "0.0000"
    assert json.loads((tmp_path / "metrics.json").read_text())["cases"]["seg"][0]["score"] is None


def test_eval_records_the_number_format_and_version_it_ran_in(tiny_data, bundles, tmp_path, capsys):
    """bf16 and fp32 give other numbers from the same bundles, and metrics.json said neither, nor
    the release that measured them."""
    from fetaliqa_core import __version__
    from fetaliqa_core.cli import main

    out = tmp_path / "fp32"
    assert main(["eval", "--cls", str(bundles["cls"]), "--data", str(tiny_data), "--split", "all", "--device", "cpu",
                 "--precision", "fp32", "--out", str(out), "--quiet", "--all-sweeps"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["precision"] == "fp32" and saved["app_version"] == __version__
    assert "cpu fp32" in first and f"FetalIQA {__version__}" in first


def test_each_bundle_of_a_pair_on_one_base_is_recorded_by_its_own_hash(tiny_data, tmp_path, capsys):
    """A classifier and a segmenter on one base load as one model (one encoder pass) carrying the
    pair's hash: metrics.json gave both bundles that hash, which is neither's, where summary.json
    and cases.csv give each its own."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.models.bundle import bundle_hash

    demo = Path(__file__).resolve().parents[1] / "resources" / "demo"
    out = tmp_path / "ev"
    assert main(["eval", "--cls", str(demo / "cls"), "--seg", str(demo / "seg"), "--base", str(demo / "base_tiny.pt"),
                 "--data", str(tiny_data), "--split", "all", "--max-cases", "1", "--device", "cpu",
                 "--precision", "fp32", "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["bundle_sha256"] == {"cls": bundle_hash(demo / "cls"), "seg": bundle_hash(demo / "seg")}


@pytest.mark.parametrize("kind", ["fifo", "loop", "folder", "/dev/zero"])
def test_a_case_file_that_is_no_regular_file_is_said_so_not_called_missing(tiny_data, tmp_path, kind):
    """A case's image as a pipe, a link loop, a folder or a link to /dev/zero was "missing", the
    same message saying the folder holds it (and speaking of training, in eval)."""
    import os
    import shutil

    from training.dataset import read_cases

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    image = read_cases(data)[0].image_path
    image.unlink()
    if kind == "fifo":
        os.mkfifo(image)
    elif kind == "folder":
        image.mkdir()
    else:
        image.symlink_to(image.name if kind == "loop" else kind)
    why = {"fifo": "not a regular file", "/dev/zero": "not a regular file", "folder": "a folder",
           "loop": "leads back to itself"}[kind]
    with pytest.raises(FetalIQAError, match=f"cannot be read: {image} \\(.*{why}") as info:
        read_cases(data)
    assert "are missing" not in str(info.value) and "training" not in str(info.value)


def test_a_case_whose_csv_row_is_gone_is_named_in_a_note(tiny_data, bundles, tmp_path, capsys):
    """A case whose image and mask are there but whose CSV row was deleted was left out of the
    evaluation without a word."""
    import shutil

    from fetaliqa_core.acouslic import CSV_RELPATH
    from fetaliqa_core.cli import main

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    lines = (data / CSV_RELPATH).read_text().splitlines()
    dropped = lines.pop(2).split(",")[0]
    (data / CSV_RELPATH).write_text("\n".join(lines) + "\n")
    # a Mac's metadata file beside a case: no case, counted (as train and distill count them)
    from fetaliqa_core.acouslic import IMAGES_SUBDIR

    (data / IMAGES_SUBDIR / f"._{dropped}.mha").write_bytes(b"\0\5\26\7")
    capsys.readouterr()
    assert main(["eval", "--cls", str(bundles["cls"]), "--data", str(data), "--split", "all", "--device", "cpu",
                 "--quiet", "--max-cases", "1", "--all-sweeps", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "note: 1 case(s) have files in images/" in err and f"are left out ({dropped})" in err
    assert "note: 1 macOS metadata file(s) in images/" in err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["cases_not_in_csv"] == [dropped]


@pytest.fixture(scope="module")
def scored(tiny_data, bundles, tmp_path_factory) -> Path:
    """The tiny dataset scored by the test bundles with --challenge-output, as an archive: its
    challenge/ folder is what a researcher checks before uploading it."""
    from fetaliqa_core.acouslic import IMAGES_SUBDIR
    from fetaliqa_core.cli import main

    out = tmp_path_factory.mktemp("scored") / "scores"
    assert main(["score", str(tiny_data / IMAGES_SUBDIR), "--archive", "--challenge-output", "--out", str(out),
                 "--cls", str(bundles["cls"]), "--seg", str(bundles["seg"]), "--device", "cpu", "--no-cache",
                 "--quiet"]) == 0
    return out / "challenge"


def test_answers_a_score_run_wrote_are_evaluated_without_models_as_eval_measures_its_own(
        tiny_data, bundles, scored, tmp_path, capsys):
    """`eval` could only run model bundles: the challenge output `score --challenge-output` wrote
    (or another algorithm's answers) could not be checked before upload without running the
    models again. --predictions reads them and gives, case by case, the challenge metrics `eval`
    gives the same models' answer where both answer the same frame."""
    from fetaliqa_core.cli import main
    from training.evaluate import EvalSettings, evaluate

    m = evaluate(EvalSettings(cls=bundles["cls"], seg=bundles["seg"], data=tiny_data, split="all", device="cpu",
                              all_sweeps=True, progress=False))
    out = tmp_path / "pred"
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(scored), "--split", "all", "--out", str(out),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    assert list(saved["challenge"]) == ["predictions"] and "frame" not in saved
    assert "the answers given (--predictions)" in text and "per-frame" not in text
    got = {c["uuid"]: c for c in saved["cases"]["predictions"]}
    same = [c for c in m["cases"]["cls+seg"] if got[c["uuid"]]["chosen_frame"] == c["chosen_frame"]]
    assert len(got) == 4 and len(same) >= 3  # (score answers a nearby frame where its own frame has no mask)
    for c in same:
        for k in ("wfss", "nae_ac", "dsc_soft", "score", "ac_pred_mm", "ac_gt_mm"):
            assert got[c["uuid"]][k] == pytest.approx(c[k]), (c["uuid"], k)
    rows = saved["cases"]["predictions"]
    assert saved["challenge"]["predictions"]["wfss"]["mean"] == pytest.approx(np.mean([c["wfss"] for c in rows]))
    assert len((out / "per_case.csv").read_text().splitlines()) == 1 + 4


def _write_answer(folder: Path, frame: int, volume: np.ndarray) -> None:
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE
    from fetaliqa_core.io import write_volume

    out = folder / "output"
    (out / "images" / "fetal-abdomen-segmentation").mkdir(parents=True, exist_ok=True)
    (out / CHALLENGE_FRAME_FILE).write_text(f"{frame}\n")
    write_volume(out / "images" / "fetal-abdomen-segmentation" / CHALLENGE_MASK_FILE, volume)


def test_hand_written_answers_score_by_the_rules_and_a_case_without_one_counts_as_no_frame(
        tiny_data, tmp_path, capsys):
    """Answers in the challenge's layout, written by hand: the annotation of an optimal frame is
    WFSS 1 and DSC_soft 1, -1 is WFSS 0 and NAE_AC 1; a case with no answer in the folder (the
    evaluator stops on it) is scored as -1 with no mask and counted in a note."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.io import load_mask
    from training.dataset import read_cases

    cases = read_cases(tiny_data)
    optimal = [(c, np.asarray(load_mask(c.mask_path))) for c in cases]
    optimal = [(c, gt) for c, gt in optimal if (gt == 1).any()]
    gt = optimal[0][1]
    cases = [optimal[0][0]] + [c for c in cases if c is not optimal[0][0]]  # the first has an optimal frame
    frame = int(np.flatnonzero((gt == 1).reshape(gt.shape[0], -1).any(axis=1))[0])
    answer = np.zeros(gt.shape, np.uint8)
    answer[frame] = gt[frame] == 1
    folder = tmp_path / "answers"
    _write_answer(folder / cases[0].uuid, frame, answer)
    _write_answer(folder / cases[1].uuid, -1, np.zeros(gt.shape, np.uint8))
    out = tmp_path / "ev"
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(folder), "--split", "all", "--out", str(out),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    rows = {c["uuid"]: c for c in json.loads((out / "metrics.json").read_text())["cases"]["predictions"]}
    first = rows[cases[0].uuid]
    assert first["chosen_frame"] == frame and first["wfss"] == 1.0 and first["dsc_soft"] == pytest.approx(1.0)
    for c in cases[1:]:
        assert rows[c.uuid]["chosen_frame"] == -1 and rows[c.uuid]["wfss"] == 0.0 and rows[c.uuid]["nae_ac"] == 1.0
    assert rows[cases[1].uuid]["answered"] and not rows[cases[2].uuid]["answered"]
    assert "note: 2 of the 4 case(s) have no answer" in err and "scored as -1 with no mask" in err
    assert sorted(json.loads((out / "metrics.json").read_text())["cases_without_answer"]) == sorted(
        c.uuid for c in cases[2:])


@pytest.mark.parametrize("bad", ["size", "values", "frame_text", "frame_range", "no_mask"])
def test_a_bad_answer_is_refused_in_one_line_naming_its_file(tiny_data, scored, tmp_path, capsys, bad):
    """A mask of another size than the case's frames, a mask that is not 0/1, a frame number that
    is no whole number or lies outside the case, a frame number without its mask: one line naming
    the file and what to write, never a traceback."""
    import shutil

    from fetaliqa_core.cli import main
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE
    from fetaliqa_core.io import load_mask, write_volume
    from training.dataset import read_cases

    folder = tmp_path / "challenge"
    shutil.copytree(scored, folder)
    case = read_cases(tiny_data)[0]
    out = folder / case.uuid / "output"
    mask = out / "images" / "fetal-abdomen-segmentation" / CHALLENGE_MASK_FILE
    n = load_mask(case.mask_path).shape[0]
    if bad == "size":
        write_volume(mask, np.zeros((n, 96, 127), np.uint8))
        culprit, said = mask, "write a volume of the case's size"
    elif bad == "values":
        write_volume(mask, np.full((n, 96, 128), 255, np.uint8))
        culprit, said = mask, "holds 255 beside 0 and 1"
    elif bad in ("frame_text", "frame_range"):
        (out / CHALLENGE_FRAME_FILE).write_text("3.5\n" if bad == "frame_text" else f"{n}\n")
        culprit = out / CHALLENGE_FRAME_FILE
        said = "not a whole number" if bad == "frame_text" else f"frame {n} is outside the case's frames"
    else:
        mask.unlink()
        culprit, said = out, "no mask"
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(folder), "--split", "all",
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(culprit) in err and said in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists()


def test_predictions_together_with_models_are_refused_in_one_line(tiny_data, bundles, scored, tmp_path, capsys):
    """--predictions evaluates answers already written; with --cls/--seg one of the two is not meant."""
    from fetaliqa_core.cli import main

    assert main(["eval", "--data", str(tiny_data), "--predictions", str(scored), "--cls", str(bundles["cls"]),
                 "--out", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "leave out --cls" in err and not (tmp_path / "ev").exists()


@pytest.mark.parametrize("option,named", [(["--device", "cpu"], "leave out --device"),
                                          (["--precision", "fp32"], "leave out --precision"),
                                          (["--all-sweeps"], "leave out --all-sweeps"),
                                          (["--ac-sweeps"], "leave out --ac-sweeps")])
def test_predictions_with_options_it_would_ignore_are_refused(tiny_data, scored, tmp_path, capsys, option, named):
    """Options that only act on models' answers were accepted with --predictions and did nothing:
    a user asking for the AC sweeps' metrics got the same table as without."""
    from fetaliqa_core.cli import main

    assert main(["eval", "--data", str(tiny_data), "--predictions", str(scored), *option,
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err and not (tmp_path / "ev").exists()


def test_a_folder_with_no_answer_for_any_case_is_refused_pointing_at_the_answers(tiny_data, tmp_path, capsys):
    """The archive's --out given instead of its challenge/ folder: every case would be scored as
    -1 without an answer, a table of zeros read as a result."""
    from fetaliqa_core.cli import main

    (tmp_path / "scores" / "challenge").mkdir(parents=True)
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(tmp_path / "scores"), "--split", "all",
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "holds no answer for any of the 4 case(s)" in err and f"give {tmp_path / 'scores' / 'challenge'}" in err
    assert not (tmp_path / "ev").exists()


def test_answers_in_job_folders_named_by_their_pk_are_not_said_to_be_left_out(tiny_data, scored, tmp_path, capsys):
    """Job folders named by the challenge's pk, as predictions.json names them, were all evaluated
    and still listed as answers "for cases without a row in --data's CSV, left out"."""
    import shutil

    from fetaliqa_core.cli import main

    folder = tmp_path / "challenge"
    shutil.copytree(scored, folder)
    jobs = json.loads((folder / "predictions.json").read_text())
    for k, job in enumerate(jobs):
        (folder / job["pk"]).rename(folder / f"job-{k}")
        job["pk"] = f"job-{k}"
    (folder / "predictions.json").write_text(json.dumps(jobs))
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(folder), "--split", "all",
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    err = capsys.readouterr().err
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert all(c["answered"] for c in saved["cases"]["predictions"]) and len(saved["cases"]["predictions"]) == 4
    assert saved["answers_not_evaluated"] == [] and "left out" not in err, err


def test_answers_of_a_paper_preset_model_are_evaluated_on_the_split_it_was_trained_with(tiny_data, scored, tmp_path):
    """--predictions always split the cases by subject (the default training split): the test
    cases of a `--preset paper` model, split by a permutation, were other cases, without a word.
    --split-method picks the split, as `train --split-method` does."""
    from fetaliqa_core.cli import main
    from training.dataset import REFERENCE_SPLIT_SEED, read_cases, split_cases

    cases = read_cases(tiny_data)
    assert split_cases(cases, seed=42, method="grouped")["train"] != split_cases(cases, seed=42,
                                                                                method="permutation")["train"]
    # each method's default seed is train's: 42, and --preset paper's (the reference code's) for a permutation
    for method, seed in (("grouped", 42), ("permutation", REFERENCE_SPLIT_SEED)):
        out = tmp_path / method
        assert main(["eval", "--data", str(tiny_data), "--predictions", str(scored), "--split", "train",
                     "--split-method", method, "--out", str(out), "--quiet"]) == 0
        saved = json.loads((out / "metrics.json").read_text())
        assert saved["split_method"] == method and saved["split_seed"] == seed
        assert saved["case_uuids"] == [c.uuid for c in split_cases(cases, seed=seed, method=method)["train"]]


def _blacked_out(data: Path, dest: Path) -> Path:
    """A copy of ``data`` whose images are black (a sweep exported without its pixels), the
    annotations, sizes and reference ACs unchanged."""
    import shutil

    from fetaliqa_core.io import load_sweep, write_volume
    from training.dataset import read_cases

    shutil.copytree(data, dest)
    for case in read_cases(dest):
        sweep = load_sweep(case.image_path)
        write_volume(case.image_path, np.zeros(np.asarray(sweep.frames).shape, np.uint8), sweep.spacing_mm,
                     compress=True, sweep_ranges=sweep.sweep_ranges, sweep_kinds=sweep.sweep_kinds)
    return dest


def _optimal_answers(data: Path, folder: Path) -> dict[str, int]:
    """Each case with an optimal frame answered with that frame's annotation: ``{case: frame}``."""
    from fetaliqa_core.io import load_mask
    from training.dataset import read_cases

    answered = {}
    for case in read_cases(data):
        gt = np.asarray(load_mask(case.mask_path))
        frames = np.flatnonzero((gt == 1).reshape(gt.shape[0], -1).any(axis=1))
        if frames.size:
            answer = np.zeros(gt.shape, np.uint8)
            answer[frames[0]] = gt[frames[0]] == 1
            _write_answer(folder / case.uuid, int(frames[0]), answer)
            answered[case.uuid] = int(frames[0])
    return answered


def test_frames_that_show_no_field_of_view_are_measured_on_the_whole_frame_and_said(tiny_data, tmp_path, capsys):
    """Frames not of ACOUSLIC's size are measured in the fan they show; black frames show none, and
    that empty field of view erased every mask: the annotation itself given as the answer scored
    NAE_AC 1 and DSC_soft 0 (0.25 where it is 0.87), the footnote blaming the answer. They are
    measured on the whole frame now, as on the frames themselves, and a note names the cases."""
    from fetaliqa_core.cli import main

    black = _blacked_out(tiny_data, tmp_path / "black")
    answered = _optimal_answers(tiny_data, tmp_path / "answers")
    assert answered
    rows = {}
    for name, data in (("shown", tiny_data), ("black", black)):
        capsys.readouterr()
        assert main(["eval", "--data", str(data), "--predictions", str(tmp_path / "answers"), "--split", "all",
                     "--out", str(tmp_path / f"ev-{name}"), "--quiet"]) == 0
        err = capsys.readouterr().err
        saved = json.loads((tmp_path / f"ev-{name}" / "metrics.json").read_text())
        rows[name] = {c["uuid"]: c for c in saved["cases"]["predictions"]}
        if name == "black":
            assert sorted(saved["cases_measured_on_whole_frame"]) == sorted(rows[name])
            assert "measured on the whole frame" in err and next(iter(answered)) in err
        else:
            assert saved["cases_measured_on_whole_frame"] == [] and "whole frame" not in err
    for uuid in answered:
        shown, black_row = rows["shown"][uuid], rows["black"][uuid]
        assert black_row["dsc_soft"] == pytest.approx(1.0) and black_row["field_of_view"] == "whole frame"
        assert black_row["ac_pred_mm"] is not None and black_row["nae_ac"] < 1.0
        for k in ("wfss", "dsc_soft", "nae_ac", "score"):
            assert black_row[k] == pytest.approx(shown[k]), (uuid, k)


def test_models_on_frames_that_show_no_field_of_view_are_measured_on_the_whole_frame(
        tiny_data, bundles, tmp_path, capsys):
    """The models' evaluation reads the cases as --predictions does: black frames are measured on
    the whole frame there too, and said."""
    from fetaliqa_core.cli import main

    black = _blacked_out(tiny_data, tmp_path / "black")
    capsys.readouterr()
    assert main(["eval", "--data", str(black), "--cls", str(bundles["cls"]), "--seg", str(bundles["seg"]),
                 "--split", "all", "--device", "cpu", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert len(saved["cases_measured_on_whole_frame"]) == 4 and "measured on the whole frame" in err
    assert all(c["field_of_view"] == "whole frame" for rows in saved["cases"].values() for c in rows)


def test_reference_acs_in_cm_are_refused_on_a_sweep_annotated_suboptimal_alone(tiny_data, scored, tmp_path, capsys):
    """The units check measured optimal (label 1) outlines only: an AC written in cm on a sweep whose
    frames are all suboptimal (label 2) passed, NAE_AC 0.885 and not a word. Such a sweep is held
    against its largest suboptimal outline."""
    import csv
    import shutil

    from fetaliqa_core.cli import main
    from fetaliqa_core.io import load_mask, load_sweep, write_volume
    from training.dataset import read_cases

    data = tmp_path / "cm"
    shutil.copytree(tiny_data, data)
    for case in read_cases(data):  # every optimal frame made suboptimal
        sweep, gt = load_sweep(case.image_path), np.asarray(load_mask(case.mask_path)).copy()
        gt[gt == 1] = 2
        write_volume(case.mask_path, gt, sweep.spacing_mm, compress=True, sweep_ranges=sweep.sweep_ranges,
                     sweep_kinds=sweep.sweep_kinds)
    path = data / "circumferences" / "fetal_abdominal_circumferences_per_sweep.csv"
    rows = list(csv.reader(path.open()))
    args = ["eval", "--data", str(data), "--predictions", str(scored), "--split", "all", "--quiet", "--out"]
    capsys.readouterr()
    assert main(args + [str(tmp_path / "mm")]) == 0  # in mm, the same sweeps pass
    rows[1:] = [row[:2] + [f"{float(v) / 10:.2f}" if v else "" for v in row[2:]] for row in rows[1:]]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    capsys.readouterr()
    assert main(args + [str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "written in cm" in err and "Traceback" not in err and not (tmp_path / "o" / "metrics.json").exists()


def test_a_mask_drawn_on_another_frame_than_the_one_named_is_said(tiny_data, tmp_path, capsys):
    """A mask volume empty at the frame its JSON names but drawn on the frame before (the frame
    numbered from 1) scored 0 without a word. It is still scored as the evaluator reads it; a note
    names the frame the mask is on."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE

    answered = _optimal_answers(tiny_data, tmp_path / "answers")
    uuid, frame = next(iter(answered.items()))
    (tmp_path / "answers" / uuid / "output" / CHALLENGE_FRAME_FILE).write_text(f"{frame + 1}\n")
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(tmp_path / "answers"), "--split", "all",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    row = next(c for c in saved["cases"]["predictions"] if c["uuid"] == uuid)
    assert row["chosen_frame"] == frame + 1 and row["nae_ac"] == 1.0  # the evaluator's score, unchanged
    assert saved["masks_drawn_elsewhere"] == {uuid: {"frame": frame + 1, "drawn_on": [frame], "n_drawn": 1}}
    assert f"{uuid} names frame {frame + 1}, its mask is drawn on frame {frame} (one frame off" in err
    assert len(saved["masks_drawn_elsewhere"]) == 1  # the answers drawn where they say are not named


@pytest.mark.parametrize("text,said", [('"7"', "is a string, '7'; write 7, without quotes"),
                                       ("7.0", "is a decimal, 7.0; write 7"),
                                       ("7.5", "is 7.5, not a whole number")])
def test_a_frame_number_written_as_a_string_or_a_decimal_is_told_how_to_write_it(
        tiny_data, tmp_path, capsys, text, said):
    """"152" and 152.0 were refused as "not a whole number", which they are: the line says what
    they are and the number to write."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE

    answered = _optimal_answers(tiny_data, tmp_path / "answers")
    uuid = next(iter(answered))
    (tmp_path / "answers" / uuid / "output" / CHALLENGE_FRAME_FILE).write_text(text + "\n")
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(tmp_path / "answers"), "--split", "all",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"the frame number {said}" in err


def test_a_score_results_folder_given_as_answers_is_told_how_to_lay_them_out(tiny_data, tmp_path, capsys):
    """`score SWEEP --challenge-output` writes the two files at the top of its results folder; given
    to --predictions it "holds no answer", with no word of the folder of the case's id they go in."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE
    from training.dataset import read_cases

    answered = _optimal_answers(tiny_data, tmp_path / "answers")
    uuid = next(iter(answered))
    results = tmp_path / "results"
    # as `score --challenge-output` writes them: the frame number beside images/..., the challenge's layout
    for name in (CHALLENGE_FRAME_FILE, "images/fetal-abdomen-segmentation/" + CHALLENGE_MASK_FILE):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_bytes((tmp_path / "answers" / uuid / "output" / name).read_bytes())
    image = next(c.image_path for c in read_cases(tiny_data) if c.uuid == uuid)
    (results / "summary.json").write_text(json.dumps({"path": str(image), "chosen_frame": answered[uuid]}))
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(results), "--split", "all",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "holds no answer" in err
    assert f"put {CHALLENGE_FRAME_FILE} and images/fetal-abdomen-segmentation/ in a folder named after the case's id " \
           f"(as {results / uuid}/)" in err
    (results / uuid).mkdir()  # laid out as said, it is evaluated
    for name in (CHALLENGE_FRAME_FILE, "images"):
        (results / name).rename(results / uuid / name)
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(results), "--split", "all",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0


def test_answers_of_other_splits_and_of_cases_not_in_the_csv_are_counted_apart(tiny_data, tmp_path, capsys):
    """An answer for a case of the CSV left out of the split and one for a case the CSV does not
    list were counted in one note, "cases not evaluated here (--split all evaluates every case)",
    where --split all does not evaluate the second."""
    from fetaliqa_core.cli import main
    from training.dataset import read_cases, split_cases

    from fetaliqa_core.io import load_mask

    answered = _optimal_answers(tiny_data, tmp_path / "answers")
    for case in read_cases(tiny_data):
        if case.uuid not in answered:
            _write_answer(tmp_path / "answers" / case.uuid, -1, np.zeros(load_mask(case.mask_path).shape, np.uint8))
    _write_answer(tmp_path / "answers" / "not-a-case", -1, np.zeros((1, 1, 1), np.uint8))
    test = {c.uuid for c in split_cases(read_cases(tiny_data), seed=42, method="grouped")["test"]}
    assert 0 < len(test) < 4
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(tmp_path / "answers"), "--split", "test",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    others = 4 - len(test)
    assert f"note: {others} answer(s) in" in err and "not in the test split; --split all evaluates every case" in err
    assert "note: 1 answer(s) in" in err and "cases without a row in --data's CSV, left out (not-a-case)" in err


def test_an_interval_over_a_single_case_is_null_in_the_metrics_as_in_the_report():
    """Over one case the report says there is no interval, and metrics.json wrote ``ci95: [0, 0]``
    (or the case's own value twice), read as an interval of no width."""
    from fetaliqa_core.files import json_text
    from training.evaluate import _case_bootstrap, _f1

    parts = {"tp": np.array([True, False, True]), "fp": np.array([False, True, False]),
             "fn": np.array([False, False, False])}
    one = _case_bootstrap(np.zeros(3, np.int64), 1, parts, _f1)
    assert json.loads(json_text({"ci95": one})) == {"ci95": [None, None]}
    two = _case_bootstrap(np.array([0, 1, 1]), 2, parts, _f1)
    assert all(np.isfinite(two)) and two[0] <= two[1]


def test_a_ratio_with_nothing_to_count_is_undefined_not_zero(capsys):
    """A classifier that calls no frame positive has no precision (tp = fp = 0): it was written 0.0,
    read as every call wrong. It is null in metrics.json and "-" in the table, as other undefined
    values; the ratios that are defined keep their values."""
    from training.evaluate import _Collected, _frame_metrics, _fmt

    truth = np.array([True, False, False, True])
    col = _Collected(p_cls=[np.array([0.1, 0.2, 0.3, 0.1])])
    m = _frame_metrics(col, truth, 0.5, np.ones(4, bool))["cls"]
    assert (m["tp"], m["fp"]) == (0, 0)
    assert np.isnan(m["precision"]) and _fmt(m["precision"]) == "-"
    assert m["recall"] == 0.0 and m["specificity"] == 1.0 and m["accuracy"] == 0.5 and m["f1"] == 0.0
    none_positive = _frame_metrics(col, np.zeros(4, bool), 0.5, np.ones(4, bool))["cls"]
    assert np.isnan(none_positive["recall"]) and np.isnan(none_positive["f1"])
    assert none_positive["specificity"] == 1.0


def test_results_folders_of_score_challenge_output_are_read_as_answers(tiny_data, tiny_bundle_dirs, tmp_path, capsys):
    """`score SWEEP --challenge-output` wrote the challenge's two files side by side, not in the
    challenge's output layout; it now writes them as the algorithm writes /output (the mask in
    images/fetal-abdomen-segmentation/), and a folder of such results folders, each named after its
    case, is what `eval --predictions` reads, the answer as score gave it."""
    import csv

    from fetaliqa_core.cli import main
    from training.dataset import read_cases

    case = read_cases(tiny_data)[0]
    results = tmp_path / "results"
    assert main(["score", str(case.image_path), "--cls", str(tiny_bundle_dirs["cls"]), "--seg",
                 str(tiny_bundle_dirs["seg"]), "--out", str(results / case.uuid), "--challenge-output", "--quiet"]) == 0
    answer = results / case.uuid
    assert (answer / "images" / "fetal-abdomen-segmentation" / "fetal-abdomen-segmentation.mha").is_file()
    assert not (answer / "fetal-abdomen-segmentation.mha").exists()
    frame = int((answer / "fetal-abdomen-frame-number.json").read_text())
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["eval", "--data", str(tiny_data), "--predictions", str(results), "--split", "all",
                 "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "3 of the 4 case(s) have no answer" in err and case.uuid not in err  # its answer was found
    rows = {r["uuid"]: r for r in csv.DictReader(open(out / "per_case.csv"))}
    assert int(rows[case.uuid]["chosen_frame"]) == frame


_READ_THEN_TRUNCATE = """
import os, sys
from pathlib import Path
from training.dataset import read_cases
from training.evaluate import _read_case

data = Path(sys.argv[1])
case = read_cases(data)[0]
read = _read_case(case, data)
for path in (case.image_path, case.mask_path):  # another program cuts the files short meanwhile
    os.truncate(path, 1000)
print(int(read.sweep.frames.sum()) >= 0 and int(read.gt.sum()) >= 0)
"""


def test_eval_reads_a_case_into_memory_so_a_file_cut_short_meanwhile_cannot_kill_it(tiny_data, tmp_path):
    """`eval` kept an uncompressed case's frames mapped from its file while the models scored them:
    another program truncating the file meanwhile killed it (SIGBUS, exit 135, no message, no
    metrics). The case is read into memory as `score` reads a sweep."""
    import shutil
    import subprocess
    import sys

    from fetaliqa_core.io import load_mask, load_sweep, write_volume
    from training.dataset import read_cases

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    case = read_cases(data)[0]
    sweep = load_sweep(case.image_path)
    mask = np.asarray(load_mask(case.mask_path))
    write_volume(case.image_path, np.asarray(sweep.frames), sweep.spacing_mm, compress=False,
                 sweep_ranges=sweep.sweep_ranges, sweep_kinds=sweep.sweep_kinds)
    write_volume(case.mask_path, mask, sweep.spacing_mm, compress=False,
                 sweep_ranges=sweep.sweep_ranges, sweep_kinds=sweep.sweep_kinds)
    done = subprocess.run([sys.executable, "-c", _READ_THEN_TRUNCATE, str(data)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "True"


def test_eval_tells_a_wrong_data_folder_before_loading_what_runs_the_models(tmp_path):
    """`eval` with a --data folder missing a case's file loaded torch (and what runs the models)
    first: 40 s and 650 MB on a busy machine before the one line. The folder is read first now."""
    import subprocess
    import sys

    from training.dataset import CSV_RELPATH

    data = tmp_path / "data"
    (data / CSV_RELPATH).parent.mkdir(parents=True)
    (data / CSV_RELPATH).write_text("uuid,subject_id,sweep_1_ac_mm\nabc,1,100\n")
    demo = Path(__file__).resolve().parents[1] / "resources" / "demo"
    script = (
        "import sys\n"
        "from fetaliqa_core.cli import main\n"
        f"rc = main(['eval', '--data', {str(data)!r}, '--split', 'all', '--cls', {str(demo / 'cls')!r},\n"
        f"           '--seg', {str(demo / 'seg')!r}, '--out', {str(tmp_path / 'out')!r}, '--quiet'])\n"
        "print(rc, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.split() == ["1", "False"], (done.stdout, done.stderr[-2000:])
    assert "are missing" in done.stderr


def test_an_archive_case_folder_holding_another_run_s_answer_is_not_read_as_its_own(tmp_path):
    """Two runs' archive folders merged by `cp -r`: a case's record (a run without --challenge-output)
    beside the answer files of another run; `eval --predictions ARCHIVE/cases` scored that other
    run's frame (239 where the record says 238) without a word. An answer written with its record
    is read as before."""
    from fetaliqa_core import archive
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE
    from training.evaluate_predictions import _answer_in

    folder = tmp_path / "cases" / "case-a"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text('{"chosen_frame": 238}')

    def seal():
        record = {"format": archive.RECORD_FORMAT, "status": archive.STATUS_OK, "chosen_frame": 238,
                  "files": archive.folder_files(folder)}
        (folder / archive.RECORD_FILE).write_text(archive.record_json(record), encoding="utf-8")

    seal()
    (folder / CHALLENGE_FRAME_FILE).write_text("239")  # another run's answer, copied in
    (folder / CHALLENGE_MASK_FILE).write_bytes(b"mask")
    with pytest.raises(FetalIQAError, match="not written with its case.json .*not that of its case.json's run"):
        _answer_in(folder)
    seal()  # the answer written with the record: read
    assert _answer_in(folder).frame_file == folder / CHALLENGE_FRAME_FILE
    (tmp_path / "plain").mkdir()  # a folder without a record is read as it is
    (tmp_path / "plain" / CHALLENGE_FRAME_FILE).write_text("5")
    assert _answer_in(tmp_path / "plain") is not None


def test_two_masks_of_one_answer_are_named_by_their_places(tmp_path):
    """An old-layout mask kept beside the new layout's was named twice by the same file name."""
    from fetaliqa_core.export import CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE
    from training.evaluate_predictions import MASK_DIR, _answer_in

    (tmp_path / CHALLENGE_FRAME_FILE).write_text("5")
    (tmp_path / CHALLENGE_MASK_FILE).write_bytes(b"m")
    (tmp_path / MASK_DIR).mkdir(parents=True)
    (tmp_path / MASK_DIR / CHALLENGE_MASK_FILE).write_bytes(b"m")
    with pytest.raises(FetalIQAError, match=rf"\({CHALLENGE_MASK_FILE}, {MASK_DIR}/{CHALLENGE_MASK_FILE}\) \("
                                            rf"{CHALLENGE_MASK_FILE} beside it is the layout of results written before"):
        _answer_in(tmp_path)
