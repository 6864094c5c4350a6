"""Synthetic ACOUSLIC-style cases: structure, labels, circumference, determinism, CLI, demo."""

from __future__ import annotations

import csv
import math
import shutil

import cv2
import numpy as np
import pytest

from fetaliqa_core import synth
from fetaliqa_core.cli import main
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.io import load_mask, load_sweep
from fetaliqa_core.synth import ramanujan_circumference, synthesize_case

H, W = 96, 128          # small frames keep the tests fast
FPS = 12


def _frame_labels(mask: np.ndarray) -> np.ndarray:
    return mask.reshape(mask.shape[0], -1).max(axis=1)


def _fov(h: int, w: int) -> np.ndarray:
    from fetaliqa_core import acouslic

    return acouslic.fov_mask((h, w))


@pytest.fixture(scope="module")
def optimal_case():
    return synthesize_case(21, frames_per_sweep=FPS, height=H, width=W, kind="optimal")


def test_shapes_types_and_layout(optimal_case):
    c = optimal_case
    assert c.frames.shape == c.mask.shape == (6 * FPS, H, W)
    assert c.frames.dtype == c.mask.dtype == np.uint8
    assert c.sweep_ranges == [(i * FPS, (i + 1) * FPS) for i in range(6)]
    assert c.sweep_kinds == ["transverse"] * 3 + ["sagittal"] * 3
    assert c.spacing_mm == (0.28, 0.28)
    assert set(np.unique(c.mask)) <= {0, 1, 2}
    assert len(c.ac_mm) == 6


def test_labels_form_runs_in_the_abdomen_sweeps(optimal_case):
    c = optimal_case
    labels = _frame_labels(c.mask)
    assert (labels == 1).any() and (labels == 2).any()
    for k, (a, b) in enumerate(c.sweep_ranges):
        sweep = labels[a:b]
        if k not in c.abdomen_sweeps:
            assert not sweep.any(), f"sweep {k} should be unlabelled"
            assert c.ac_mm[k] is None
            continue
        labelled = np.nonzero(sweep)[0]
        assert c.ac_mm[k] is not None, "every annotated sweep has an AC"
        ones = np.nonzero(sweep == 1)[0]
        if len(ones):
            # optimal frames sit in the middle of the run, with suboptimal neighbours on both sides
            assert labelled[0] < ones[0] and ones[-1] < labelled[-1]


def _labels_of(seed, **kw):
    kw.setdefault("height", 48)
    kw.setdefault("width", 64)
    c = synthesize_case(seed, labels_only=True, **kw)
    return c, _frame_labels(c.mask)


def test_labels_only_gives_the_labels_of_the_full_case():
    full = synthesize_case(4, frames_per_sweep=10, height=64, width=96)
    quick = synthesize_case(4, frames_per_sweep=10, height=64, width=96, labels_only=True)
    np.testing.assert_array_equal(full.mask, quick.mask)
    assert full.ac_mm == quick.ac_mm and not quick.frames.any()


def test_every_annotated_sweep_has_an_ac_and_no_other_does():
    """No annotated case without an AC (ACOUSLIC-AI has none), ACs for suboptimal-only sweeps too."""
    sub_only = 0
    for seed in range(60):
        c, labels = _labels_of(seed)
        for k, (a, b) in enumerate(c.sweep_ranges):
            annotated = bool(labels[a:b].any())
            assert annotated == (c.ac_mm[k] is not None), (seed, k)
            if annotated and not (labels[a:b] == 1).any():
                sub_only += 1
    assert sub_only >= 5


def test_sagittal_sweeps_are_annotated_when_the_fetus_lies_across():
    found = 0
    for seed in range(80):
        c, labels = _labels_of(seed)
        if not c.across or not c.abdomen_sweeps:
            continue
        found += 1
        for k in c.abdomen_sweeps:
            assert c.sweep_kinds[k] == "sagittal"
            a, b = c.sweep_ranges[k]
            assert labels[a:b].any() and c.ac_mm[k] is not None
        for k, (a, b) in enumerate(c.sweep_ranges):
            if c.sweep_kinds[k] == "transverse":  # these now cut the fetus lengthwise
                assert not labels[a:b].any()
    assert found >= 5


def test_annotated_runs_can_have_gaps():
    """The fetus (or the probe) leaves the plane for a few frames: unannotated frames inside a run."""
    gapped = 0
    for seed in range(50):
        c, labels = _labels_of(seed, height=48, width=64)
        for a, b in c.sweep_ranges:
            lab = np.nonzero(labels[a:b])[0]
            if len(lab) and (np.diff(lab) > 1).any():
                gapped += 1
                assert np.diff(lab).max() <= 7  # short gaps, not two separate passes
    assert gapped >= 5


def test_label_statistics_follow_acouslic():
    """ACOUSLIC-AI: ~187 of 300 cases with an optimal frame, ~1,909 optimal and ~3,944 suboptimal
    frames in 300 cases of 840 frames (6.4 and 13.1 per case)."""
    n = 100
    with_optimal, optimal, suboptimal = 0, 0, 0
    for seed in range(n):
        _, labels = _labels_of(1000 + seed)
        with_optimal += bool((labels == 1).any())
        optimal += int((labels == 1).sum())
        suboptimal += int((labels == 2).sum())
    assert 0.50 <= with_optimal / n <= 0.75
    assert 4.0 <= optimal / n <= 9.0
    assert 9.0 <= suboptimal / n <= 18.0


def test_fan_shape_and_mask_inside_fov(optimal_case):
    c = optimal_case
    fov = _fov(H, W)
    assert not c.frames[:, ~fov].any(), "pixels outside the fan must be black"
    assert not c.mask[:, ~fov].any(), "mask must be clipped to the fan"
    inside = c.frames[:, fov]
    assert 15 < inside.mean() < 130


@pytest.mark.parametrize("kind", ["suboptimal", "none"])
def test_case_kinds(kind):
    c = synthesize_case(5, n_sweeps=6, frames_per_sweep=8, height=64, width=96, kind=kind)
    labels = _frame_labels(c.mask)
    assert c.kind == kind
    assert not (labels == 1).any()
    if kind == "suboptimal":  # suboptimal-only sweeps have an AC too
        assert (labels == 2).any() and c.abdomen_sweeps
        assert [k for k, v in enumerate(c.ac_mm) if v is not None] == c.abdomen_sweeps
    else:
        assert not labels.any() and not c.abdomen_sweeps
        assert all(v is None for v in c.ac_mm)


def test_the_kind_said_is_what_the_mask_holds():
    """With 20 frames per sweep an optimal plane can fall between frames: synth printed
    "optimal" for a case whose mask held no label-1 frame."""
    c = synthesize_case(9, frames_per_sweep=20, height=64, width=96, kind="optimal", labels_only=True)
    assert not (c.mask == 1).any() and (c.mask == 2).any()
    assert c.kind == "suboptimal"


def test_kinds_mix_and_circumference_range():
    kinds = []
    for seed in range(30):
        c = synthesize_case(seed, n_sweeps=6, frames_per_sweep=3, height=56, width=74)
        kinds.append(c.kind)
        s = min(56 / 562, 74 / 744)
        for ac in c.ac_mm:
            if ac is not None:  # the full-size equivalent lies in the clinical range
                assert 130 <= ac / s <= 370, ac / s
    assert {"optimal", "suboptimal", "none"} <= set(kinds)
    assert kinds.count("optimal") >= 10


def test_circumference_matches_the_drawn_mask():
    """The CSV value is what the challenge's measurement (fitEllipse on the mask, Ramanujan,
    0.28 mm/px) gives on every optimal frame."""
    h, w = 281, 372
    c = synthesize_case(21, n_sweeps=3, frames_per_sweep=70, height=h, width=w, kind="optimal")
    labels = _frame_labels(c.mask)
    checked = 0
    for k, (a, b) in enumerate(c.sweep_ranges):
        for i in range(a, b):
            if labels[i] != 1:
                continue
            contours, _ = cv2.findContours((c.mask[i] == 1).astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_NONE)
            pts = max(contours, key=len)
            (_, _), (d1, d2), _ = cv2.fitEllipse(pts)
            ac = ramanujan_circumference(d1 / 2, d2 / 2) * 0.28
            assert ac == pytest.approx(c.ac_mm[k], rel=0.025)
            checked += 1
    assert checked >= 2


def test_abdomen_looks_like_an_abdomen():
    """Inside the optimal-plane ellipse: tissue brighter than the fluid around it, a bright spine
    and a dark stomach bubble."""
    h, w = 281, 372
    for seed in (21, 8, 3):
        c = synthesize_case(seed, n_sweeps=3, frames_per_sweep=20, height=h, width=w, kind="optimal")
        labels = _frame_labels(c.mask)
        ones = np.nonzero(labels == 1)[0]
        i = ones[len(ones) // 2]
        ell = (c.mask[i] == 1).astype(np.uint8)
        inner = cv2.erode(ell, np.ones((5, 5), np.uint8)) > 0
        frame = c.frames[i]
        med = np.median(frame[inner])
        assert frame[inner].max() >= med + 90, "spine should be bright"
        assert np.percentile(frame[inner], 2) <= 25, "stomach / vein should be dark"
        assert med >= 30


def test_same_seed_same_case_different_seed_differs():
    a = synthesize_case(7, n_sweeps=2, frames_per_sweep=6, height=64, width=96)
    b = synthesize_case(7, n_sweeps=2, frames_per_sweep=6, height=64, width=96)
    c = synthesize_case(8, n_sweeps=2, frames_per_sweep=6, height=64, width=96)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.ac_mm == b.ac_mm and a.uuid == b.uuid
    assert not np.array_equal(a.frames, c.frames)
    assert a.uuid != c.uuid


def test_structure_does_not_depend_on_frame_size():
    small = synthesize_case(21, frames_per_sweep=6, height=48, width=64)
    larger = synthesize_case(21, frames_per_sweep=6, height=96, width=128)
    assert small.kind == larger.kind and small.abdomen_sweeps == larger.abdomen_sweeps


def test_too_small_frames_are_refused():
    with pytest.raises(FetalIQAError):
        synthesize_case(1, height=16, width=64)


# --------------------------------------------------------------------------------------------
# Dataset and command line


def _run_synth(out, *extra):
    return main(["synth", "--out", str(out), "--cases", "2", "--seed", "3", "--frames-per-sweep", "4",
                 "--height", "64", "--width", "96", "--quiet", *extra])


def test_cli_writes_acouslic_layout(tmp_path):
    out = tmp_path / "ds"
    assert _run_synth(out) == 0
    images = sorted((out / "images" / "stacked_fetal_ultrasound").glob("*.mha"))
    masks = sorted((out / "masks" / "stacked_fetal_abdomen").glob("*.mha"))
    csv_path = out / "circumferences" / "fetal_abdominal_circumferences_per_sweep.csv"
    assert len(images) == len(masks) == 2
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["uuid", "subject_id"] + [f"sweep_{k}_ac_mm" for k in range(1, 7)]
    assert sorted(r[0] for r in rows[1:]) == sorted(p.stem for p in images) == sorted(p.stem for p in masks)
    for row in rows[1:]:
        sweep = load_sweep(out / "images" / "stacked_fetal_ultrasound" / f"{row[0]}.mha")
        mask = load_mask(out / "masks" / "stacked_fetal_abdomen" / f"{row[0]}.mha", like=sweep)
        assert sweep.frames.shape == (24, 64, 96)
        assert sweep.spacing_mm == (0.28, 0.28)
        assert sweep.sweep_ranges == [(i * 4, (i + 1) * 4) for i in range(6)]
        assert sweep.sweep_kinds == ["transverse"] * 3 + ["sagittal"] * 3
        labels = _frame_labels(mask)
        for k, (a, b) in enumerate(sweep.sweep_ranges):
            annotated = bool(labels[a:b].any())
            assert (row[2 + k] != "") == annotated
            if annotated:
                assert float(row[2 + k]) > 0
    # images compressed by default, masks always
    header = images[0].read_bytes()[:600]
    assert b"CompressedData = True" in header


def test_cli_is_deterministic_to_the_byte(tmp_path):
    _run_synth(tmp_path / "a")
    _run_synth(tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 6  # 2 cases x (image, mask), the table, synth's record
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_parallel_jobs_give_the_same_dataset(tmp_path):
    _run_synth(tmp_path / "a")
    _run_synth(tmp_path / "b", "--jobs", "2")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_cli_no_compress_and_overwrite(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _run_synth(out) == 0
    assert _run_synth(out) == 1  # refuses to replace a dataset (a failure, not a usage error)
    assert "--overwrite" in capsys.readouterr().err
    assert _run_synth(out, "--overwrite", "--no-compress") == 0
    img = next((out / "images" / "stacked_fetal_ultrasound").glob("*.mha"))
    assert b"CompressedData = False" in img.read_bytes()[:600]
    assert isinstance(load_sweep(img).frames, np.memmap)
    # a dataset synth did not write (a real one) is never overwritten, its scans never deleted
    real = tmp_path / "real"
    shutil.copytree(out, real)
    (real / ".fetaliqa-synth.json").unlink()
    before = sorted(p.relative_to(real) for p in real.rglob("*"))
    assert _run_synth(real, "--overwrite", "--seed", "4") == 1
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.relative_to(real) for p in real.rglob("*")) == before
    # another seed over it: the earlier cases go (they stayed, and scoring images/ took them in),
    # a file of the user's own there stays
    (out / "images" / "stacked_fetal_ultrasound" / "mine.mha").write_bytes(b"mine")
    assert _run_synth(out, "--overwrite", "--seed", "4") == 0
    listed = (out / "circumferences" / "fetal_abdominal_circumferences_per_sweep.csv").read_text().splitlines()[1:]
    uuids = sorted(line.split(",")[0] for line in listed)
    for sub in ("images/stacked_fetal_ultrasound", "masks/stacked_fetal_abdomen"):
        names = sorted(p.stem for p in (out / sub).glob("*.mha"))
        assert names == sorted(uuids + (["mine"] if sub.startswith("images") else [])), sub


def test_cli_rejects_bad_sizes(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path), "--height", "16"])
    assert exc.value.code == 2


def test_custom_sweep_count_is_recorded_in_the_file(tmp_path):
    assert main(["synth", "--out", str(tmp_path / "d"), "--cases", "1", "--seed", "1", "--sweeps", "2",
                 "--frames-per-sweep", "5", "--height", "48", "--width", "64", "--quiet"]) == 0
    img = next((tmp_path / "d" / "images" / "stacked_fetal_ultrasound").glob("*.mha"))
    sweep = load_sweep(img)
    assert sweep.sweep_ranges == [(0, 5), (5, 10)] and sweep.sweep_kinds == ["transverse", "sagittal"]


# --------------------------------------------------------------------------------------------
# Demo sweep


def test_demo_sweep_is_made_once_in_the_cache(monkeypatch):
    from fetaliqa_core import paths

    calls = []
    real = synth.synthesize_case

    def small(seed, **kw):
        calls.append(seed)
        return real(seed, frames_per_sweep=4, height=64, width=96)

    monkeypatch.setattr(synth, "synthesize_case", small)
    path = synth.demo_sweep_path()
    assert path.is_file() and path.parent == paths.cache_dir() / "demo"
    assert calls == [synth.DEMO_SEED]
    assert synth.demo_sweep_path() == path and calls == [synth.DEMO_SEED]  # cached
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, synth.demo_case_paths()[1].name,
                                                                     path.name + ".sizes.json"])
    sweep = load_sweep(path)
    assert isinstance(sweep.frames, np.memmap)  # uncompressed: opens instantly
    mask = load_mask(synth.demo_case_paths()[1], like=sweep)
    assert (mask == 1).any()
    # a file damaged in the cache (cut short) is made again, not refused on every run
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert synth.demo_sweep_path() == path and calls == [synth.DEMO_SEED] * 2
    assert load_sweep(path).n_frames == sweep.n_frames


def test_full_size_demo_case():
    """One real ACOUSLIC-size case (4-10 s here: generation plus a 351 MB write)."""
    path = synth.demo_sweep_path()
    sweep = load_sweep(path)
    assert sweep.frames.shape == (840, 562, 744)
    assert isinstance(sweep.frames, np.memmap)
    assert sweep.sweep_ranges == [(i * 140, (i + 1) * 140) for i in range(6)]
    mask = load_mask(synth.demo_case_paths()[1], like=sweep)
    labels = _frame_labels(mask)
    assert (labels == 1).sum() >= 3 and (labels == 2).sum() >= 6
    assert math.isclose(sweep.spacing_mm[0], 0.28)


# --------------------------------------------------------------------------------------------
# Fans and distractors


def test_fan_variety_puts_cases_on_other_fans():
    from fetaliqa_core.synth.fan import Fan

    h, w = 64, 86
    openings = set()
    for seed in range(20):
        c = synthesize_case(seed, n_sweeps=1, frames_per_sweep=3, height=h, width=w, fan_variety=True)
        plain = synthesize_case(seed, n_sweeps=1, frames_per_sweep=3, height=h, width=w)
        # same layout (the kind is what the mask holds: another fan may leave the optimal frames out)
        assert c.abdomen_sweeps == plain.abdomen_sweeps and c.across == plain.across
        fov = Fan(h, w, c.fan).fov
        assert not c.frames[:, ~fov].any() and not c.mask[:, ~fov].any()
        assert c.frames[:, fov].mean() > 10
        if not c.fan.acouslic:
            openings.add(round(math.degrees(2 * c.fan.half_angle)))
            assert (fov != _fov(h, w)).mean() > 0.02  # not the ACOUSLIC outline
    assert len(openings) >= 2


def _draws(fn, n=150):
    from fetaliqa_core.synth.fan import Fan

    fan = Fan(96, 128)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        out += fn(rng, fan)
    return fan, out


def test_distractors_cover_what_sweeps_cross_with_varied_sizes():
    from fetaliqa_core.synth import layout
    from fetaliqa_core.synth.anatomy import Blob, BodyTrack, Sagittal

    a = 20.0
    fan, across = _draws(lambda rng, fan: layout.section_distractors(rng, fan, 140, a, 0.9, 80.0, 0.0))
    heads = [t for t in across if isinstance(t, Blob) and t.kind == "head"]
    limbs = [t for t in across if isinstance(t, Blob) and t.kind == "limb"]
    thorax = [t for t in across if isinstance(t, BodyTrack) and t.u_min > 1.0]
    cut = [t for t in across if isinstance(t, BodyTrack) and t.u_min <= 1.0]
    assert heads and limbs and thorax and cut
    for t in thorax + cut:  # distractors are never annotated
        assert all(t.label(f) == 0 for f in range(140))
    for t in cut:  # the abdomen's centre lies outside the fan: less than half of it visible
        x, y = int(round(t.cx)), int(round(t.cy))
        assert not (0 <= x < fan.w and 0 <= y < fan.h and fan.fov[y, x])
    for group in (heads, limbs):
        sizes = [t.a for t in group]
        assert max(sizes) / min(sizes) > 1.3
    _, along = _draws(lambda rng, fan: layout.lengthwise_distractors(rng, fan, 140, a, 80.0, 0.0))
    assert any(isinstance(t, Sagittal) for t in along)


def _render(prims=(), shadows=()):
    from fetaliqa_core.synth.fan import Fan
    from fetaliqa_core.synth.render import CaseRenderer

    fan = Fan(281, 372)
    rng = np.random.default_rng(3)
    r = CaseRenderer(np.random.default_rng(4), fan)
    bg = r.background(rng, {"fat": 20.0, "muscle": 15.0, "myo": 15.0}, cavity_bottom=450.0)
    out = np.empty((281, 372), np.uint8)
    r.render_frame(bg, 0, (0, 0), list(prims), 0.0, None, out, shadows=list(shadows))
    return fan, out


def test_head_shows_a_skull_ring_and_a_midline_echo():
    from fetaliqa_core.synth.anatomy import Blob

    head = Blob(centre=0.0, half=5.0, cx=186.0, cy=170.0, a=45.0, b=38.0, angle=0.0, vx=0.0, vy=0.0,
                kind="head", brightness=0.0)
    _, img = _render(head.prims(0))
    yy, xx = np.mgrid[0:281, 0:372]
    d = np.hypot((xx - 186.0) / 45.0, (yy - 170.0) / 38.0)
    ring = img[(d > 0.9) & (d < 1.0)].astype(float).mean()
    inside = img[(d > 0.3) & (d < 0.75) & (np.abs(yy - 170) > 4)].astype(float).mean()
    midline = img[(np.abs(yy - 170) <= 1) & (np.abs(xx - 186) < 25)].astype(float).mean()
    assert ring > inside + 40, (ring, inside)
    assert midline > inside + 20, (midline, inside)


def test_acoustic_shadow_darkens_the_scan_lines_below_it():
    from fetaliqa_core.synth.render import Shadow

    fan, plain = _render()
    _, shaded = _render(shadows=[Shadow(theta=0.0, half=0.08, depth=150.0, db=25.0)])
    yy, xx = np.mgrid[0:281, 0:372]
    r, t = np.vectorize(fan.polar_of)(xx.astype(float), yy.astype(float))
    band = fan.fov & (np.abs(t) < 0.03)
    below, above = band & (r - fan.g.r_in > 200), band & (r - fan.g.r_in < 120)
    assert shaded[below].mean() < 0.5 * plain[below].mean() and plain[below].mean() - shaded[below].mean() > 15
    assert np.array_equal(plain[above], shaded[above])


def test_a_hostile_synth_record_is_read_bounded_and_taken_for_none(tmp_path, capsys):
    """synth's record of the cases it wrote is read with a size bound: a huge or damaged one is no
    record, so --overwrite refuses the folder rather than read it whole or trust it."""
    out = tmp_path / "ds"
    assert _run_synth(out) == 0
    marker = out / ".fetaliqa-synth.json"
    with open(marker, "wb") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MB of zeros
    assert _run_synth(out, "--overwrite") == 1
    assert "did not write" in capsys.readouterr().err
