"""Cascade: the student scores every frame, the teacher re-scores its candidate runs per sweep."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import FakeModel, tiny_sweep
from fetaliqa_core.analysis.assessment import Thresholds, assess
from fetaliqa_core.cascade import (MAX_RUN_FRAMES, RUN_MARGIN, CascadeEngine, candidate_runs, follow_runs,
                                   teacher_calls)
from fetaliqa_core.engine import ScoringEngine


def test_candidate_runs_best_run_per_sweep_margin_and_budget():
    n = 40
    ranges = [(0, 20), (20, 40)]
    cand = np.zeros(n, bool)
    combined = np.zeros(n)
    cand[3:5] = True  # sweep 1: a weak run ...
    combined[3:5] = 0.6
    cand[10:13] = True  # ... and a strong one
    combined[10:13] = 0.9
    cand[20:22] = True  # sweep 2: one run at its start (the margin stays inside the sweep)
    combined[20:22] = 0.7
    got = candidate_runs(combined, cand, ranges, runs_per_sweep=2, margin=1, max_fraction=1.0)
    assert got.tolist() == [2, 3, 4, 5, 9, 10, 11, 12, 13, 20, 21, 22]
    # a small budget keeps each sweep's best run only (runs of up to 3 frames: a floor of 10)
    got = candidate_runs(combined, cand, ranges, runs_per_sweep=2, margin=1, max_fraction=0.05, max_run=3)
    assert got.tolist() == [9, 10, 11, 12, 13, 20, 21, 22]
    # one run per sweep asked for
    assert candidate_runs(combined, cand, ranges, runs_per_sweep=1, margin=0).tolist() == [10, 11, 12, 20, 21]
    assert candidate_runs(combined, np.zeros(n, bool), ranges, fallback=False).size == 0
    # a sweep where the student flags nothing still sends its best-scored frames
    got = candidate_runs(combined, np.zeros(n, bool), ranges, margin=0, max_run=3)
    assert got.tolist() == [9, 10, 11, 20, 21, 22]  # centred on the first best frame
    # a long run is cut around its best frame
    long = np.zeros(n, bool)
    long[0:20] = True
    peak = np.zeros(n)
    peak[15] = 1.0
    assert candidate_runs(peak, long, ranges, margin=0, max_run=4, fallback=False).tolist() == [13, 14, 15, 16]


def test_candidate_runs_a_file_of_one_sweep_sends_its_second_run_too():
    # 140 frames: a tenth (14) is less than the best run widened (20); the second run the
    # student flags must still reach the teacher, whose own choice may be there
    n = 140
    cand = np.zeros(n, bool)
    combined = np.zeros(n)
    cand[30:46] = True
    combined[30:46] = 0.8
    cand[55:61] = True
    combined[55:61] = 0.7
    got = candidate_runs(combined, cand, [(0, n)])
    assert set(range(30, 46)) <= set(got.tolist()) and set(range(55, 61)) <= set(got.tolist())
    assert len(got) <= 2 * (MAX_RUN_FRAMES + 2 * RUN_MARGIN)
    # a third, weaker run does not fit: the floor is two runs, not every run
    cand[100:116] = True
    combined[100:116] = 0.6
    assert not set(range(100, 116)) & set(candidate_runs(combined, cand, [(0, n)], runs_per_sweep=3).tolist())


def test_cascade_teacher_sees_only_candidate_runs_and_decides_the_answer():
    sweep = tiny_sweep(n_sweeps=3, per_sweep=30)
    student = FakeModel("joint")
    cls, seg = FakeModel("cls"), FakeModel("seg")
    thresholds = Thresholds.of_models(type("M", (), {"cls": cls, "seg": seg})())
    engine = CascadeEngine(sweep, student, cls, seg, cache=False, thresholds=thresholds, max_fraction=0.1)
    stages = [b.stage for b in engine.iter_batches()]
    assert stages[0] == "student" and stages[-1] == "teacher" and "student" not in stages[stages.index("teacher"):]
    assert engine.student.results.complete and engine.merged.complete
    teacher_frames = np.flatnonzero(engine.confirmed)
    # each sweep's candidates are one run of ~12 frames here: the best of each, cut and widened
    assert 0 < len(teacher_frames) <= 3 * (MAX_RUN_FRAMES + 2 * RUN_MARGIN) < sweep.n_frames
    assert np.array_equal(teacher_frames, engine.teacher_frames())
    assert np.array_equal(engine.teacher_plan, teacher_frames) and engine.complete
    assert engine.results is engine.merged
    assert np.array_equal(np.flatnonzero(engine.teacher_results.done), teacher_frames)
    # the teacher scored nothing else, and its values are what the curve shows there
    assert np.isnan(engine.teacher_results.p_cls[~engine.confirmed]).all()
    assert np.array_equal(engine.merged.p_cls[engine.confirmed], engine.teacher_results.p_cls[engine.confirmed])
    for start, stop in sweep.sweep_ranges:  # every sweep's best run was re-scored
        assert engine.confirmed[start:stop].any()
    answer = assess(sweep, engine.teacher_results, thresholds)
    assert answer.summary.chosen_frame in set(teacher_frames.tolist())
    # the same models over every frame choose the same frame
    full = ScoringEngine(sweep, cls=cls, seg=seg, cache=False).run()
    assert assess(sweep, full, thresholds).summary.chosen_frame == answer.summary.chosen_frame


def test_the_student_sends_the_teacher_its_near_misses_too():
    """The frames a student hands its teacher are a wider net than the frames the window flags: a
    run its classifier nearly calls (0.60 at 0.70) and its segmenter calls strongly (0.95) is
    re-scored, though no frame of it is flagged (the teacher, not the student, decides it)."""
    from fetaliqa_core.analysis.assessment import flag_frames

    sweep = tiny_sweep(n_sweeps=1, per_sweep=80)
    cls, seg = FakeModel("cls"), FakeModel("seg")
    engine = CascadeEngine(sweep, FakeModel("joint"), cls, seg, cache=False, thresholds=Thresholds(0.7, 0.7),
                           margin=0, max_fraction=1.0)
    r = engine.student.results
    r.p_cls[:], r.p_seg[:] = 0.1, 0.1
    r.p_cls[10:14], r.p_seg[10:14] = 0.9, 0.9  # a run both models call
    r.p_cls[50:54], r.p_seg[50:54] = 0.6, 0.95  # the classifier's near miss
    r.done[:] = True
    assert not flag_frames(r.p_cls, r.p_seg, 0.7, 0.5).candidates[50:54].any()
    assert engine.teacher_frames().tolist() == [10, 11, 12, 13, 50, 51, 52, 53]


def test_candidate_runs_a_few_frames_apart_are_one_run():
    n = 40
    ranges = [(0, 40)]
    cand = np.zeros(n, bool)
    combined = np.zeros(n)
    cand[10:13] = True  # the student's run breaks where it is unsure ...
    combined[10:13] = 0.7
    cand[16:20] = True  # ... three frames on
    combined[16:20] = 0.9
    cand[30:32] = True  # a run too far away to join
    combined[30:32] = 0.6
    # one run per sweep, no margin: with gaps of up to 4 closed, the best run holds both pieces
    assert candidate_runs(combined, cand, ranges, runs_per_sweep=1, margin=0, gap=4).tolist() == list(range(10, 20))
    assert candidate_runs(combined, cand, ranges, runs_per_sweep=1, margin=0, gap=0).tolist() == list(range(16, 20))
    assert candidate_runs(combined, cand, ranges, runs_per_sweep=1, margin=0, gap=2).tolist() == list(range(16, 20))


def test_follow_runs_extends_only_runs_cut_by_the_edge_of_what_was_scored():
    ranges = [(0, 20), (20, 40)]
    scored = np.zeros(40, bool)
    scored[5:10] = True  # a run that goes on past both edges
    scored[15:20] = True  # a run ending at the sweep's end: nothing to follow beyond it
    scored[24:30] = True  # calls only inside: the run is whole
    calls = np.zeros(40, bool)
    calls[5:10] = True
    calls[18:20] = True
    calls[26:28] = True
    assert follow_runs(scored, calls, ranges, step=3).tolist() == [2, 3, 4, 10, 11, 12]
    # a call one frame inside the edge still counts (a gap of one frame joins a run)
    calls2 = np.zeros(40, bool)
    calls2[28] = True
    assert follow_runs(scored, calls2, ranges, step=2).tolist() == [30, 31]
    # calls where nothing was scored are ignored; nothing called: nothing to follow
    assert follow_runs(scored, ~scored, ranges).size == 0
    assert follow_runs(np.zeros(40, bool), np.ones(40, bool), ranges).size == 0


class _StrictStudent(FakeModel):
    """A student that calls only the middle of each bright run (its scores lowered)."""

    def predict(self, x):
        pred = super().predict(x)
        pred.p_cls = (pred.p_cls - 0.35).clamp(min=0)
        return pred


def test_cascade_teacher_follows_a_run_past_the_student_s_frames():
    sweep = tiny_sweep(n_sweeps=2, per_sweep=60)
    cls, seg = FakeModel("cls"), FakeModel("seg")
    thresholds = Thresholds.of_models(type("M", (), {"cls": cls, "seg": seg})())
    full = ScoringEngine(sweep, cls=cls, seg=seg, cache=False).run()
    whole = teacher_calls(full, thresholds)
    kw = dict(cache=False, thresholds=thresholds, margin=0, runs_per_sweep=1)
    fixed = CascadeEngine(sweep, _StrictStudent("joint"), cls, seg, follow_fraction=0.0, **kw).run()
    plan = fixed.teacher_frames()
    assert np.array_equal(np.flatnonzero(fixed.confirmed), plan)
    assert (whole & ~fixed.confirmed).any()  # the teacher's runs are longer than what it was handed
    follow = CascadeEngine(sweep, _StrictStudent("joint"), cls, seg, follow_fraction=1.0, **kw).run()
    assert follow.complete and np.array_equal(np.flatnonzero(follow.confirmed), follow.teacher_plan)
    assert set(plan.tolist()) <= set(follow.teacher_plan.tolist())
    assert not (whole & ~follow.confirmed).any()  # every run the teacher calls is seen whole
    assert follow.confirmed.sum() < sweep.n_frames  # and not much beyond: a few frames past each end
    assert follow.confirmed.sum() <= whole.sum() + 2 * 2 * 4 + len(plan)
    chosen = assess(sweep, follow.teacher_results, thresholds).summary.chosen_frame
    assert chosen == assess(sweep, full, thresholds).summary.chosen_frame
    # the default bound: the teacher adds at most a tenth of the case's frames
    bounded = CascadeEngine(sweep, _StrictStudent("joint"), cls, seg, **kw).run()
    assert len(bounded.teacher_plan) <= len(plan) + int(0.10 * sweep.n_frames)


def test_score_also_adds_frames_to_a_limited_engine():
    sweep = tiny_sweep(n_sweeps=1, per_sweep=20)
    engine = ScoringEngine(sweep, cls=FakeModel("cls"), cache=False, frames=np.array([3, 4]))
    engine.run()
    assert np.flatnonzero(engine.results.done).tolist() == [3, 4]
    engine.score_also([4, 9, 10])
    engine.run()
    assert np.flatnonzero(engine.results.done).tolist() == [3, 4, 9, 10]
    with pytest.raises(ValueError):
        engine.score_also([20])


def test_cancelled_student_stage_never_runs_the_teacher():
    sweep = tiny_sweep(n_sweeps=2, per_sweep=20)
    engine = CascadeEngine(sweep, FakeModel("joint"), FakeModel("cls"), FakeModel("seg"), cache=False)
    for item in engine.iter_batches():
        engine.cancel()
    assert engine.teacher is None and not engine.confirmed.any()
    assert not engine.complete and engine.results is engine.merged


@pytest.mark.parametrize("args, message", [
    (["--model", "demo-student", "--cascade"], "not --model demo-student"),
    (["--student", "x"], "add --cascade"),
])
def test_cli_refuses_inconsistent_cascade_options(args, message, capsys, tmp_path):
    from fetaliqa_core.cli import main

    sweep = tmp_path / "s.mha"
    sweep.write_bytes(b"")
    rc = main(["score", str(sweep), *args, "--device", "cpu", "--out", str(tmp_path / "o")])
    assert rc != 0 and message in capsys.readouterr().err


class _SilentClassifier(FakeModel):
    """A classifier that calls nothing: the teacher's models never agree on a frame."""

    def predict(self, x):
        pred = super().predict(x)
        pred.p_cls = pred.p_cls * 0.1
        return pred


def test_cascade_teacher_follows_the_runs_its_choice_falls_back_to():
    """When the teacher's classifier calls nothing, its own frame choice falls back to the runs of
    plausible masks; the cascade's teacher follows those runs past the student's frames too, so
    it sees them whole and answers with the teacher's own frame."""
    from fetaliqa_core.cascade import teacher_positive
    from fetaliqa_core.io import Sweep

    small = tiny_sweep(n_sweeps=2, per_sweep=60)
    # no usable spacing: the masks' size is judged as a share of the fan (these blobs are small)
    sweep = Sweep(frames=small.frames, spacing_mm=(3.0, 3.0), sweep_ranges=small.sweep_ranges,
                  sweep_kinds=small.sweep_kinds)
    cls, seg = _SilentClassifier("cls"), FakeModel("seg")
    thresholds = Thresholds.of_models(type("M", (), {"cls": cls, "seg": seg})())
    full = ScoringEngine(sweep, cls=cls, seg=seg, cache=False).run()
    own = assess(sweep, full, thresholds)
    assert own.choice.basis == "segmenter" and own.chosen_frame >= 0
    assert not teacher_calls(full, thresholds).any()  # nothing that every model calls
    runs = teacher_positive(sweep, full, thresholds)
    assert runs.any()
    kw = dict(cache=False, thresholds=thresholds, margin=0, runs_per_sweep=1)
    casc = CascadeEngine(sweep, _StrictStudent("joint"), cls, seg, follow_fraction=1.0, **kw).run()
    assert not (runs & ~casc.confirmed).any()  # every run its choice is made from, seen whole
    assert len(casc.teacher_plan) > len(casc.teacher_frames())  # it followed beyond its plan
    assert assess(sweep, casc.teacher_results, thresholds).chosen_frame == own.chosen_frame


def _student_of(cls_hash, seg_hash):
    """A fake student whose manifest records the teachers it was distilled from."""
    student = FakeModel("joint")
    teacher = {} if cls_hash is None else {"cls_bundle_sha256": cls_hash, "seg_bundle_sha256": seg_hash}
    student.manifest.student = {"teacher": teacher}
    student.path = "runs/st/bundle"
    return student


@pytest.mark.parametrize("cls_hash, seg_hash, said", [
    ("fake-cls", "fake-seg", None),
    ("other-cls", "fake-seg", "not the classifier given"),
    ("other-cls", "other-seg", "not the classifier and segmenter given"),
    (None, None, "records no teacher"),
])
def test_cascade_says_when_its_student_learnt_from_other_models(cls_hash, seg_hash, said):
    """A student of other models misses frames the teacher would call, which the teacher then
    never sees: the answer says so (a demo teacher with another student chose no frame where the
    teacher alone chose one, without a word)."""
    from fetaliqa_core.models.choice import foreign_student_note, provenance

    sweep = tiny_sweep(n_sweeps=2, per_sweep=30)
    cls, seg = FakeModel("cls"), FakeModel("seg")
    student = _student_of(cls_hash, seg_hash)
    note = foreign_student_note(student, cls, seg)
    models = type("M", (), {"cls": cls, "seg": seg, "student": student})()
    thresholds = Thresholds.of_models(models)
    engine = CascadeEngine(sweep, student, cls, seg, cache=False, thresholds=thresholds).run()
    summary = assess(sweep, engine.teacher_results, thresholds, provenance=provenance(models)).summary
    if said is None:
        assert note == "" and "distilled from other models" not in summary.choice_note
    else:
        assert said in note and "the student st was distilled from other models" in note
        assert note in summary.choice_note


def test_a_student_of_a_pair_with_one_teacher_given_is_not_said_to_be_of_other_models():
    """A student recording its teachers as the pair's hash (the demo student does) was said to be
    "distilled from other models" when only its classifier was given: the pair's hash cannot be
    formed from one teacher, so the note says it cannot be checked; a different pair is still
    named as other models."""
    from fetaliqa_core.models.choice import foreign_student_note

    student = _student_of("pair-hash", "pair-hash")
    for given in ({"cls": FakeModel("cls"), "seg": None}, {"cls": None, "seg": FakeModel("seg")}):
        note = foreign_student_note(student, **given)
        assert "other models" not in note and "cannot be checked" in note
        assert note.count("student") == 1 and "student st " in note
    assert "other models" in foreign_student_note(student, FakeModel("cls"), FakeModel("seg"))
    assert "other models" in foreign_student_note(_student_of("other-cls", "fake-seg"), FakeModel("cls"), None)


def test_no_frame_reason_says_of_how_many_frames_the_models_scored():
    """In a cascade the teacher scores a few runs: "no frame reaches the threshold" is said of
    those frames, not of the sweep."""
    from fetaliqa_core.io import Sweep

    dark = np.zeros((20, 96, 128), dtype=np.uint8)
    sweep = Sweep(frames=dark, spacing_mm=(0.28, 0.28), sweep_ranges=[(0, 20)], sweep_kinds=["transverse"])
    cls, seg = FakeModel("cls"), FakeModel("seg")
    thresholds = Thresholds.of_models(type("M", (), {"cls": cls, "seg": seg})())
    part = ScoringEngine(sweep, cls=cls, seg=seg, cache=False, frames=np.arange(4, 10)).run()
    note = assess(sweep, part, thresholds).summary.sweeps[0].ac_note
    assert note.startswith("no frame") and "outline (of the 6 of 20 frames these models scored)" in note
    whole = ScoringEngine(sweep, cls=cls, seg=seg, cache=False).run()
    assert "frames these models scored" not in assess(sweep, whole, thresholds).summary.sweeps[0].ac_note


def test_model_label_names_the_student_given(tmp_path):
    """`--model demo --cascade --student OWN` was labelled "cascade after the demo student", and a
    student scored alone "classifier student, segmenter student" like a teacher pair."""
    import shutil

    from fetaliqa_core import paths
    from fetaliqa_core.models.choice import ModelChoice

    own = tmp_path / "st_own" / "bundle"
    shutil.copytree(paths.resources_dir() / "demo" / "student", own)
    label = ModelChoice(model="demo", cascade=True, student=own).describe()
    assert "cascade after student st_own" in label and "demo student" not in label
    assert ModelChoice(model="demo", cascade=True).describe().endswith("cascade after the demo student")
    alone = ModelChoice(model=None, cls=own, seg=own).describe()
    assert alone.startswith("student st_own (") and "distilled" in alone and "classifier" not in alone
    teacher = paths.resources_dir() / "demo" / "cls"
    assert ModelChoice(model=None, cls=teacher, cascade=True, student=own).describe() == \
        "classifier cls, cascade after student st_own"
    named = tmp_path / "st_named" / "student"  # was "cascade after student student"
    assert ModelChoice(model=None, cls=teacher, cascade=True, student=named).describe() == \
        "classifier cls, cascade after student st_named"


def test_the_demo_student_is_not_said_to_be_of_other_models():
    """The demo student records its teachers by the hash of the pair sharing one base: loaded on
    one base or apart (a large GPU), the demo pair is its teacher."""
    from fetaliqa_core import paths
    from fetaliqa_core.models import bundle as bundle_mod
    from fetaliqa_core.models import choice as choice_mod

    shared = choice_mod.load_models(choice_mod.ModelChoice(model="demo", cascade=True, device="cpu"))
    assert choice_mod.foreign_student_note(shared.student, shared.cls, shared.seg) == ""
    root = paths.resources_dir() / "demo"
    apart = [bundle_mod.load_bundle(root / r, base_weights=root / bundle_mod.DEMO_BASE_FILE, device="cpu")
             for r in ("cls", "seg")]
    assert choice_mod.foreign_student_note(shared.student, *apart) == ""


def test_a_student_names_no_base_weights_it_never_loaded():
    """summary.json's base_sha256 named the teacher's base for a student scored alone, which holds
    a tower of its own; a cascade still names its teacher's."""
    from fetaliqa_core.models import choice as choice_mod

    student = choice_mod.load_models(choice_mod.ModelChoice(model="demo-student", device="cpu"))
    assert choice_mod.provenance(student)["base_sha256"] is None
    cascade = choice_mod.load_models(choice_mod.ModelChoice(model="demo", cascade=True, device="cpu"))
    assert len(choice_mod.provenance(cascade)["base_sha256"]) == 64


def test_a_student_scored_alone_is_marked_so_whoever_taught_it(tmp_path):
    """A copy of a student whose manifest names no demo teacher (as a user's own student does)
    scored alone gave a plain AC and GA: nothing marked the answer as a student's first look.
    In a cascade the numbers are the teacher's: not marked."""
    import json
    import shutil

    from fetaliqa_core import paths
    from fetaliqa_core.models import choice as choice_mod

    own = tmp_path / "st_own"
    shutil.copytree(paths.resources_dir() / "demo" / "student", own)
    manifest = json.loads((own / "manifest.json").read_text())
    manifest["student"]["teacher"] = {"cls_bundle_sha256": "a" * 64, "seg_bundle_sha256": "b" * 64}
    manifest["base_sha256"] = "c" * 64
    (own / "manifest.json").write_text(json.dumps(manifest))
    alone = choice_mod.provenance(choice_mod.load_models(choice_mod.ModelChoice(model=None, cls=own, seg=own,
                                                                                  device="cpu")))
    assert alone["student_alone"] is True and alone["demo"] is False
    demo_student = choice_mod.load_models(choice_mod.ModelChoice(model="demo-student", device="cpu"))
    assert choice_mod.provenance(demo_student)["student_alone"] is True
    cascade = choice_mod.load_models(choice_mod.ModelChoice(model="demo", cascade=True, student=own, device="cpu"))
    assert choice_mod.provenance(cascade)["student_alone"] is False
    teacher = choice_mod.load_models(choice_mod.ModelChoice(model="demo", device="cpu"))
    assert choice_mod.provenance(teacher)["student_alone"] is False


def test_a_cascade_stopped_in_its_teacher_stage_says_in_its_files_how_many_candidates_were_checked(tmp_path):
    """`demo --cascade --max-seconds` stopped while the teacher re-scored wrote `complete: false`
    beside 840 of 840 frames scored and an empty `choice_note`: "chosen among 13 of 103
    candidates" was said only by the terminal and the window."""
    import json

    from fetaliqa_core.cascade import write_cascade_scores

    sweep = tiny_sweep(n_sweeps=2, per_sweep=30)
    cls, seg = FakeModel("cls"), FakeModel("seg")
    thresholds = Thresholds.of_models(type("M", (), {"cls": cls, "seg": seg})())
    engine = CascadeEngine(sweep, FakeModel("joint"), cls, seg, cache=False, thresholds=thresholds)
    for item in engine.iter_batches():
        if item.stage == "teacher":
            engine.cancel()  # stopped after the teacher's first batch
    done, planned = int(engine.confirmed.sum()), len(engine.teacher_plan)
    assert 0 < done < planned and not engine.complete
    answer = assess(sweep, engine.teacher_results, thresholds)
    write_cascade_scores(tmp_path, sweep, engine.merged, engine.confirmed, answer, "student",
                         complete=engine.complete, teacher_planned=planned)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False
    assert f"chosen among the {done} of {planned} candidate frames the teacher had re-scored" in summary["choice_note"]
    record = json.loads((tmp_path / "cascade.json").read_text())
    assert record["teacher_frame_count"] == done and record["teacher_frames_planned"] == planned
    assert "stopped" not in answer.summary.choice_note  # the window's own answer says it in its own words
    # a finished cascade says nothing of the kind
    whole = CascadeEngine(sweep, FakeModel("joint"), cls, seg, cache=False, thresholds=thresholds).run()
    out = tmp_path / "whole"
    written = write_cascade_scores(out, sweep, whole.merged, whole.confirmed,
                                   assess(sweep, whole.teacher_results, thresholds), "student",
                                   complete=whole.complete, teacher_planned=len(whole.teacher_plan))
    # the files written, as `demo --cascade` lists them: cascade.json among them
    assert sorted(p.name for p in written) == ["cascade.json", "frames.csv", "summary.json"]
    assert all(p.parent == out and p.is_file() for p in written)
    assert "stopped" not in json.loads((out / "summary.json").read_text())["choice_note"]
    assert "teacher_frames_planned" not in json.loads((out / "cascade.json").read_text())


def test_score_s_text_names_the_models_that_scored(tmp_path, capsys):
    """The student alone, the cascade and the teacher printed the same lines: only `--json`,
    summary.json and the window said which models gave the numbers."""
    from fetaliqa_core.cli import main
    from fetaliqa_core.io import write_volume

    sweep = tmp_path / "sweep.mha"
    write_volume(sweep, tiny_sweep(1, 6, 64, 64).frames, spacing_mm=(0.3, 0.3))
    said = {}
    for name, args in (("student", ["--model", "demo-student"]), ("cascade", ["--model", "demo", "--cascade"]),
                       ("teacher", ["--model", "demo"])):
        assert main(["score", str(sweep), *args, "--device", "cpu", "--no-cache", "--quiet",
                     "--out", str(tmp_path / name)]) == 0
        said[name] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  models: ")]
    assert len(said["student"]) == 1 and said["student"][0].startswith("  models: demo student")
    assert len(said["cascade"]) == 1 and "cascade after the demo student" in said["cascade"][0]
    assert len(said["teacher"]) == 1 and said["teacher"][0].startswith("  models: demo model")
    assert "student" not in said["teacher"][0]
