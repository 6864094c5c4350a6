"""``fetaliqa ac``: AC and GA printed for a mask file's frame."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from fetaliqa_core import analysis
from fetaliqa_core.cli import main

H, W = 562, 744
BIG = (150, 110)  # semi-axes of the frame-2 ellipse, px
SMALL = (90, 70)


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory):
    masks = np.zeros((3, H, W), np.uint8)  # frame 0 empty
    cv2.ellipse(masks[1], (372, 280), SMALL, 30, 0, 360, 2, -1)
    cv2.ellipse(masks[2], (372, 300), BIG, 10, 0, 360, 1, -1)
    image = sitk.GetImageFromArray(masks)
    image.SetSpacing((0.28, 0.28, 1.0))
    path = tmp_path_factory.mktemp("masks") / "case.mha"
    sitk.WriteImage(image, str(path), True)
    return path


def ac_of(axes, spacing=0.28):
    return analysis.ramanujan_circumference(*axes) * spacing


def test_largest_frame_by_default(mask_file, capsys):
    assert main(["ac", str(mask_file)]) == 0
    out, note, fan = capsys.readouterr().out.strip().splitlines()
    match = re.fullmatch(r"frame 2: AC ([\d.]+) mm, GA (\d+w \d+d) \(pixel 0.28 x 0.28 mm, file header; "
                         r"in ACOUSLIC's fan\)", out)
    assert match, out
    # a number to act on from a mask nobody judged: ac checks its shape, not its anatomy
    assert note.startswith("note: the outline's shape is checked here, not what it outlines")
    assert "--sweep" in note and "another probe's image" in fan  # what would check it further
    ac = float(match.group(1))
    assert ac == pytest.approx(ac_of(BIG), rel=0.01)
    assert match.group(2) == analysis.format_ga(analysis.hadlock_ga(ac).weeks)


def test_frame_and_spacing_and_json(mask_file, capsys):
    assert main(["ac", str(mask_file), "--frame", "1", "--spacing", "0.5", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["frame"] == 1
    assert record["spacing_mm"] == [0.5, 0.5]
    assert record["ac_mm"] == pytest.approx(ac_of(SMALL, 0.5), rel=0.01)
    assert record["ga_weeks"] == pytest.approx(analysis.hadlock_ga(record["ac_mm"]).weeks, abs=0.01)
    assert record["ga"] == analysis.format_ga(record["ga_weeks"]) and record["ac_status"] == "ok"
    assert record["truncated"] is False and record["n_points"] > 100
    # the text's caveat under a plain AC is in the record too: a thorax's outline passes as well,
    # and scripts read only the record (it read "note": null beside a GA)
    assert record["caveat"].startswith("the outline's shape is checked here, not what it outlines")
    assert main(["ac", str(mask_file), "--frame", "1", "--spacing", "0.1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["caveat"] is None  # (doubtful: its note says why)


def test_small_ac_flagged_outside_hadlock_range(mask_file, capsys):
    assert main(["ac", str(mask_file), "--frame", "1"]) == 0  # ~141 mm: inside the range
    assert "[" not in capsys.readouterr().out
    assert main(["ac", str(mask_file), "--frame", "1", "--spacing", "0.1"]) == 0  # ~50 mm
    out = capsys.readouterr().out
    assert "doubtful" in out and "GA" not in out  # not a number to act on, and no GA from it


def test_empty_frame_reports_no_ac(mask_file, capsys):
    assert main(["ac", str(mask_file), "--frame", "0"]) == 1
    assert capsys.readouterr().out.strip() == "frame 0: no AC (the frame is empty)"


def test_a_mask_of_every_pixel_is_said_to_fill_the_frame(tmp_path, capsys):
    """A mask labelling every pixel of the frame was "too small or too cut off for an ellipse
    fit": it is the whole frame, and is said so (text and JSON)."""
    image = sitk.GetImageFromArray(np.ones((1, H, W), np.uint8))
    image.SetSpacing((0.28, 0.28, 1.0))
    sitk.WriteImage(image, str(tmp_path / "ones.mha"), True)
    assert main(["ac", str(tmp_path / "ones.mha")]) == 1
    said = f"the mask fills the whole frame ({H * W} px): it outlines nothing to fit an ellipse to"
    assert capsys.readouterr().out.strip() == f"frame 0: no AC ({said})"
    assert main(["ac", str(tmp_path / "ones.mha"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["note"] == said


def test_frame_out_of_range(mask_file, capsys):
    assert main(["ac", str(mask_file), "--frame", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fetaliqa: ") and "out of range" in err and "0..2" in err
    assert "\n" not in err


def test_bad_files(tmp_path, capsys):
    junk = tmp_path / "junk.mha"
    junk.write_bytes(b"not an image")
    assert main(["ac", str(junk)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fetaliqa: ") and "junk.mha" in err and "\n" not in err
    assert main(["ac", str(tmp_path / "missing.mha")]) == 1
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 20, 30), np.uint8)), str(empty))
    assert main(["ac", str(empty)]) == 1
    assert "no frame has a label" in capsys.readouterr().err


def test_grey_image_refused_in_one_line(tmp_path, capsys):
    grey = tmp_path / "frames.mha"
    rng = np.random.default_rng(0)
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)), str(grey))
    assert main(["ac", str(grey), "--frame", "1"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("fetaliqa: ") and "\n" not in err and "AC" not in captured.out


def test_no_spacing_no_mm_unless_given(tmp_path, capsys):
    masks = np.zeros((1, H, W), np.uint8)
    cv2.ellipse(masks[0], (372, 300), BIG, 10, 0, 360, 1, -1)
    path = tmp_path / "nospacing.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(path))  # written without spacing: 1 x 1
    assert main(["ac", str(path)]) == 1
    out = capsys.readouterr().out
    assert "mm," not in out and "GA" not in out and "pixel spacing unknown" in out and "--spacing MM" in out
    assert main(["ac", str(path), "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ac_mm"] is None and record["ga_weeks"] is None and record["ac_status"] == "no units"
    assert main(["ac", str(path), "--spacing", "0.28"]) == 0
    out = capsys.readouterr().out
    assert "GA" in out and "mm, given with --spacing; in ACOUSLIC's fan)" in out
    assert main(["ac", str(path), "--spacing", "0.28", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_mm"] == pytest.approx(ac_of(BIG), rel=0.01)
    assert record["spacing_source"] == "user"  # the value `score --spacing` records
    with pytest.raises(SystemExit) as usage:  # implausible: a wrong command line, refused in one line
        main(["ac", str(path), "--spacing", "7"])
    assert usage.value.code == 2
    assert "implausible" in capsys.readouterr().err


@pytest.mark.parametrize("huge", [1e308, 1e200])
def test_an_implausible_spacing_is_the_reason_given_not_the_mask(tmp_path, huge, capfd):
    """A mask whose spacing read 1e308 mm was fitted in mm: numpy's overflow warning was printed and
    the answer blamed the mask ("too small or too cut off for an ellipse fit"), while --json named
    the spacing."""
    masks = np.zeros((1, H, W), np.uint8)
    cv2.ellipse(masks[0], (372, 300), BIG, 10, 0, 360, 1, -1)
    image = sitk.GetImageFromArray(masks)
    image.SetSpacing((huge, 0.3, 1.0))
    path = tmp_path / "huge.mha"
    sitk.WriteImage(image, str(path))
    assert main(["ac", str(path)]) == 1
    out, err = capfd.readouterr()
    assert "AC not shown: pixel spacing" in out and "implausible" in out and "ellipse fit" not in out
    assert "Warning" not in err and "overflow" not in err, err
    assert main(["ac", str(path), "--json"]) == 1
    record = json.loads(capfd.readouterr().out)
    assert record["ac_status"] == "no units" and "implausible" in record["note"]


def _write(tmp_path, masks, name, spacing=0.28):
    image = sitk.GetImageFromArray(masks)
    image.SetSpacing((spacing, spacing, 1.0))
    path = tmp_path / name
    sitk.WriteImage(image, str(path), True)
    return path


def test_crossing_lines_give_a_doubtful_ac_without_ga(tmp_path, capsys):
    lines = np.zeros((1, 256, 256), np.uint8)  # two 1-pixel lines crossing near a corner
    lines[0, 10, :] = 1
    lines[0, :, 10] = 2
    path = _write(tmp_path, lines, "lines.mha")
    assert main(["ac", str(path), "--no-fov"]) == 0  # a doubtful number is still an answer
    out = capsys.readouterr().out.strip()
    assert out.startswith("frame 0: AC ") and "GA" not in out
    assert "(doubtful: the mask there does not outline an abdomen (not ellipse-like)" in out
    assert main(["ac", str(path), "--no-fov", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "doubtful" and record["ac_mm"] is not None
    assert record["ga_weeks"] is None and record["ga"] is None
    assert record["mask_plausible"] is False and record["mask_problem"] == "not ellipse-like"
    assert "not ellipse-like" in record["note"]
    cross = np.zeros((1, H, W), np.uint8)  # the same across the middle, inside the field of view
    cross[0, 300, :] = 1
    cross[0, :, 372] = 2
    assert main(["ac", str(_write(tmp_path, cross, "cross.mha"))]) == 0
    out = capsys.readouterr().out
    assert "doubtful" in out and "not ellipse-like" in out and "GA" not in out


def test_round_abdomen_mask_gives_a_plain_ac(mask_file, capsys):
    for extra in ([], ["--no-fov"]):
        assert main(["ac", str(mask_file), *extra]) == 0
        assert re.fullmatch(r"frame 2: AC [\d.]+ mm, GA \d+w \dd \(pixel [\d.]+ x [\d.]+ mm, [a-z -]+; [a-zA-Z' ]+\)",
                            capsys.readouterr().out.strip().splitlines()[0])
        assert main(["ac", str(mask_file), "--json", *extra]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["ac_status"] == "ok" and record["ga"] and record["note"] is None
        assert record["mask_plausible"] is True and record["mask_problem"] is None


def test_outline_cut_by_image_edge_without_field_of_view(tmp_path, capsys):
    masks = np.zeros((1, H, W), np.uint8)
    cv2.ellipse(masks[0], (100, 300), BIG, 0, 0, 360, 1, -1)  # runs past the left edge
    path = _write(tmp_path, masks, "edge.mha")
    assert main(["ac", str(path), "--no-fov"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[0]
    assert re.fullmatch(r"frame 0: AC [\d.]+ mm, GA \d+w \dd \[outline cut by the image's edge; "
                        r"ellipse extrapolated\] \(pixel 0.28 x 0.28 mm, file header; on the whole frame\)", out), out
    from fetaliqa_core.analysis.ac import resolve_fov

    fan = np.zeros((1, H, W), np.uint8)
    cv2.ellipse(fan[0], (372, 60), BIG, 0, 0, 360, 1, -1)  # runs past the fan's top ...
    fan[0][~resolve_fov("acouslic", (H, W))] = 0  # ... drawn inside it, as an annotation is
    assert main(["ac", str(_write(tmp_path, fan, "fan.mha"))]) == 0
    out = capsys.readouterr().out
    assert "[outline cut by the field of view; ellipse extrapolated]" in out and "image's edge" not in out


def _written_mask(path, masks, metadata):
    from fetaliqa_core.io import write_volume

    write_volume(path, masks, spacing_mm=(0.28, 0.28), compress=True, metadata=metadata)
    return path


def test_a_mask_the_answer_doubted_stays_doubtful(tmp_path, capsys):
    """The challenge's mask of a demo-model answer, measured again by hand, gave a plain AC and
    a GA (a mask on amniotic fluid: 261 mm, "30w 2d"): the file kept nothing of the answer's
    doubt. The mask now carries it, and ``ac`` keeps it."""
    from fetaliqa_core.io import META_AC_NOTE, META_AC_STATUS, META_SOURCE

    masks = np.zeros((3, H, W), np.uint8)
    cv2.ellipse(masks[2], (372, 300), BIG, 10, 0, 360, 1, -1)
    meta = {META_AC_STATUS: "doubtful", META_AC_NOTE: "from a demonstration model\nnot a measurement",
            META_SOURCE: "FetalIQA 9.9, models: demo"}
    path = _written_mask(tmp_path / "answer.mha", masks, meta)
    assert main(["ac", str(path)]) == 0
    out = capsys.readouterr().out
    assert "doubtful: the answer that wrote this mask doubted it: from a demonstration model not a measurement" in out
    assert "GA" not in out and "mask written by FetalIQA 9.9, models: demo" in out
    assert main(["ac", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "doubtful" and record["ga"] is None
    assert record["written_by"] == "FetalIQA 9.9, models: demo" and record["recorded_doubt"]

    # the same mask, its answer without doubt: measured as any mask (plain AC and GA)
    meta[META_AC_STATUS] = "ok"
    path = _written_mask(tmp_path / "ok.mha", masks, meta)
    assert main(["ac", str(path)]) == 0
    assert re.match(r"frame 2: AC [\d.]+ mm, GA \d+w \d+d ", capsys.readouterr().out)

    # a doubt recorded for one frame says nothing of a mask with several labelled frames
    masks[1] = 0
    cv2.ellipse(masks[1], (372, 280), SMALL, 30, 0, 360, 2, -1)
    meta[META_AC_STATUS] = "doubtful"
    path = _written_mask(tmp_path / "edited.mha", masks, meta)
    assert main(["ac", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recorded_doubt"] is None


def test_the_answers_doubt_is_said_beside_the_outlines_own(tmp_path, capsys):
    """A mask the answer doubted because the models disagreed, whose outline has a doubt of its
    own (pinched): ``ac``'s text named only the outline's, so checking the answer by hand seemed
    to contradict ``score`` and the window; its JSON alone carried the answer's."""
    from fetaliqa_core.io import META_AC_NOTE, META_AC_STATUS, META_SOURCE

    masks = np.zeros((3, H, W), np.uint8)
    cv2.circle(masks[2], (330, 300), 70, 1, -1)  # two bodies side by side: pinched in the middle
    cv2.circle(masks[2], (450, 300), 70, 1, -1)
    why = "the classifier does not call this frame an abdomen (0.47 < 0.67): the models disagree"
    meta = {META_AC_STATUS: "doubtful", META_AC_NOTE: why, META_SOURCE: "FetalIQA 9.9, models: mine"}
    path = _written_mask(tmp_path / "answer.mha", masks, meta)
    assert main(["ac", str(path)]) == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert "doubtful: the mask's outline is pinched" in first and "GA" not in first
    assert f"note: the answer that wrote this mask doubted it: {why}" in rest


def test_score_challenge_mask_carries_the_demo_answers_doubt(tmp_path, capsys):
    from fetaliqa_core.io import read_mask_volume, write_volume
    from fetaliqa_core.synth import synthesize_case

    case = synthesize_case(seed=2, n_sweeps=1, frames_per_sweep=24, height=281, width=372)
    path = tmp_path / "case.mha"
    write_volume(path, case.frames, spacing_mm=(0.56, 0.56))
    out = tmp_path / "out"
    assert main(["score", str(path), "--challenge-output", "--out", str(out), "--quiet", "--no-cache"]) == 0
    capsys.readouterr()
    frame = int((out / "fetal-abdomen-frame-number.json").read_text())
    assert frame >= 0, "the demo model chose no frame on this case: choose another seed"
    mask = out / "images" / "fetal-abdomen-segmentation" / "fetal-abdomen-segmentation.mha"  # (the challenge's layout)
    written = read_mask_volume(mask)
    assert written.metadata["FetalIQA_ACStatus"] == "doubtful"
    assert "demonstration" in written.metadata["FetalIQA_Source"]
    # the sweep's spacing is known: where it came from goes with the mask
    assert written.metadata["FetalIQA_PixelSpacing"] == "sweep: file header"
    assert main(["ac", str(mask)]) == 0
    text = capsys.readouterr().out
    assert f"frame {frame}: " in text and "doubtful" in text and "GA" not in text
    assert "mm, the sweep's file header; on the whole frame)" in text  # (281 x 372: not ACOUSLIC's fan)
    assert main(["ac", str(mask), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["spacing_source"] == "file header"  # the sweep's, as recorded
    # another frame of it is empty: said as what it is, not as if the frame had no abdomen
    other = 0 if frame else 1
    assert main(["ac", str(mask), "--frame", str(other)]) == 1
    assert f"holds the answer's chosen frame {frame} only" in capsys.readouterr().out


def test_the_acouslic_fan_is_not_applied_to_a_mask_drawn_outside_it(tmp_path, capsys):
    """Every 744 x 562 mask was cut by the ACOUSLIC fan, so a whole ellipse drawn on another
    probe's image near its edge was measured as "cut by the field of view; extrapolated"."""
    from fetaliqa_core.analysis.ac import resolve_fov

    fov = resolve_fov("acouslic", (H, W))
    masks = np.zeros((1, H, W), np.uint8)
    centre, axes = (120, 300), (100, 80)
    cv2.ellipse(masks[0], centre, axes, 0, 0, 360, 1, -1)
    spill = 1 - np.count_nonzero(masks[0][fov]) / np.count_nonzero(masks[0])
    assert 0.01 < spill < 0.5  # the ellipse crosses the fan's edge
    path = _write(tmp_path, masks, "other_probe.mha")
    assert main(["ac", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["truncated"] is False and record["field_of_view"] == "whole frame"
    assert record["ac_mm"] == pytest.approx(ac_of(axes), rel=0.01)
    assert main(["ac", str(path)]) == 0
    out = capsys.readouterr().out
    assert "extrapolated" not in out and "outside the ACOUSLIC field of view" in out


def test_another_size_is_measured_without_the_acouslic_fan(tmp_path, capsys):
    """The ACOUSLIC fan, stretched to a 600 x 800 mask of a linear probe, cut a whole ellipse."""
    masks = np.zeros((1, 600, 800), np.uint8)
    axes = (300, 200)
    cv2.ellipse(masks[0], (400, 300), axes, 0, 0, 360, 1, -1)
    path = _write(tmp_path, masks, "linear.mha")
    assert main(["ac", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "whole frame" and record["truncated"] is False
    assert record["ac_mm"] == pytest.approx(ac_of(axes), rel=0.01)


def test_the_mask_of_an_answer_without_a_frame_says_so(tmp_path, capsys):
    from fetaliqa_core.io import META_AC_STATUS

    path = _written_mask(tmp_path / "none.mha", np.zeros((3, H, W), np.uint8), {META_AC_STATUS: "none"})
    assert main(["ac", str(path)]) == 1
    err = capsys.readouterr().err
    assert "chose no frame (-1)" in err and "give --frame" not in err


def test_json_says_when_there_is_nothing_to_measure(tmp_path, capsys):
    """`ac --json` on an empty mask printed nothing on stdout (only the error line): a script
    reading its JSON had nothing to parse. It prints the record, with the same keys as a
    measurement's, its status "none" and why, and still ends with 1."""
    from fetaliqa_core.io import META_AC_STATUS

    axes = (120, 90)
    masks = np.zeros((2, H, W), np.uint8)
    cv2.ellipse(masks[1], (W // 2, H // 2), axes, 0, 0, 360, 1, -1)
    measured = _write(tmp_path, masks, "one.mha")
    assert main(["ac", str(measured), "--json"]) == 0
    keys = list(json.loads(capsys.readouterr().out))
    for name, meta, why in ((
            "none.mha", {META_AC_STATUS: "none"}, "chose no frame (-1)"), ("blank.mha", {}, "no frame has a label")):
        path = _written_mask(tmp_path / name, np.zeros((3, H, W), np.uint8), meta)
        assert main(["ac", str(path), "--json"]) == 1
        out = capsys.readouterr().out
        record = json.loads(out)
        assert list(record) == keys
        assert record["ac_status"] == "none" and record["ac_mm"] is None and record["frame"] is None
        assert why in record["note"] and record["file"] == str(path)


def test_an_outline_cut_by_another_probe_s_edge_is_doubtful_unless_measured_in_that_probe_s_view(tmp_path, capsys):
    """A mask of ACOUSLIC's frame size drawn on a linear probe's image, its abdomen cut by the
    image's right edge: measured in ACOUSLIC's fan the cut was fitted as outline (AC 11-15 % short
    with a GA, 'ok'). It is doubtful now; with --sweep the sweep's own field of view is used and
    the ellipse is extrapolated past the cut (doubtful still: a third of the outline is unseen)."""
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(3)
    frames = np.zeros((4, H, W), np.uint8)
    frames[:, 40:520, 150:500] = rng.integers(20, 80, (4, 480, 350), dtype=np.uint8)  # the probe's image
    whole = np.zeros((H, W), np.uint8)
    cv2.ellipse(whole, (430, 280), BIG, 0, 0, 360, 1, -1)
    body = (whole != 0)[None] & (frames > 0)
    frames[body] = rng.integers(110, 170, int(body.sum()), dtype=np.uint8)  # the body, brighter than around it
    write_volume(tmp_path / "linear.mha", frames, spacing_mm=(0.28, 0.28))
    masks = np.zeros((1, H, W), np.uint8)
    masks[0, 40:520, 150:500] = whole[40:520, 150:500]  # cut at x = 500
    path = _write(tmp_path, masks, "cut.mha")
    truth = ac_of(BIG)

    assert main(["ac", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "doubtful" and record["ga"] is None and "cut off straight" in record["mask_problem"]
    assert record["ac_mm"] < 0.95 * truth  # what the cut makes of it
    assert main(["ac", str(path), "--sweep", str(tmp_path / "linear.mha"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "the sweep's own fan" and record["truncated"] is True
    assert record["ac_mm"] == pytest.approx(truth, rel=0.02)
    # (35 % of the outline lies past the cut: extrapolated over that much, the AC stays doubtful)
    assert record["ac_status"] == "doubtful" and record["mask_problem"].startswith("extrapolated over 35%")
    # the straightness measure itself: whole outlines near 1, the cut one well above the bar
    from fetaliqa_core.analysis.ac import STRAIGHT_CUT_RATIO, straight_cut

    assert straight_cut(whole, None) < 1.5 < STRAIGHT_CUT_RATIO < straight_cut(masks[0], None)
    # cut on both sides (an abdomen wider than a narrow fan): two chords of like length, which the
    # polygon rule below used to take for the sides of a polygon ("AC 355.4 mm, GA 39w 3d" for 370)
    both = whole.copy()
    both[:, :430 - 120] = 0
    both[:, 430 + 120:] = 0
    assert straight_cut(both, None) > STRAIGHT_CUT_RATIO
    # ... while whole outlines drawn as polygons of 6-12 unevenly spaced clicks stay whole (the first
    # rule for two cuts called 11-28 of 40 of them cut off)
    rng = np.random.default_rng(15)
    flagged = 0
    for clicks in range(6, 13):
        for _ in range(20):
            t = np.sort(np.linspace(0, 2 * np.pi, clicks, endpoint=False) + rng.uniform(-0.15, 0.15, clicks))
            polygon = np.zeros((H, W), np.uint8)
            cv2.fillPoly(polygon, [np.stack([372 + 150 * np.cos(t), 280 + 110 * np.sin(t)], 1).astype(np.int32)], 1)
            flagged += straight_cut(polygon, None) >= STRAIGHT_CUT_RATIO
    assert flagged <= 2, flagged  # of 140
    # a whole abdomen drawn as a polygon of a few clicks has several straight sides, none alone
    for clicks in (5, 7, 10):
        t = np.linspace(0, 2 * np.pi, clicks, endpoint=False)
        polygon = np.zeros((H, W), np.uint8)
        cv2.fillPoly(polygon, [np.stack([372 + 150 * np.cos(t), 280 + 110 * np.sin(t)], 1).astype(np.int32)], 1)
        assert straight_cut(polygon, None) < 1.5, clicks
    wrong = np.zeros((H, W), np.uint8)
    assert main(["ac", str(path), "--sweep", str(_write(tmp_path, wrong[None, :100], "small.mha"))]) == 1
    assert "give the sweep the mask was drawn on" in capsys.readouterr().err


def test_scores_beside_a_threshold_and_anisotropic_pixels_read_as_they_are(tmp_path):
    from fetaliqa_core.analysis.units import beside_threshold, classifier_doubt
    from fetaliqa_core.io._common import spacing_text

    assert beside_threshold(0.6663, 0.67) == "0.666" and beside_threshold(0.38, 0.67) == "0.38"
    assert beside_threshold(0.67, 0.67) == "0.67" and beside_threshold(0.67004, 0.67) == "0.67004"
    assert "score 0.666, threshold 0.67" in classifier_doubt(0.6663, 0.67)
    # (row, col) = (0.35, 0.28): width first, as frame sizes are given, and said so
    assert spacing_text((0.35, 0.28)) == "0.28 x 0.35 mm (width x height)"
    assert spacing_text((0.28, 0.28)) == "0.28 x 0.28 mm"


def test_a_challenge_mask_of_a_sweep_without_pixel_size_says_so_not_that_1_mm_is_a_placeholder(tmp_path, capsys):
    """MetaImage cannot leave the spacing out: the mask of a sweep with none has 1 x 1 in its header,
    which ac called 'the value image writers put when no spacing was known' (FetalIQA put it)."""
    from fetaliqa_core.io import META_SPACING, META_SPACING_UNKNOWN, write_volume

    masks = np.zeros((1, H, W), np.uint8)
    cv2.ellipse(masks[0], (372, 300), BIG, 10, 0, 360, 1, -1)
    path = tmp_path / "written.mha"
    write_volume(path, masks, spacing_mm=(1.0, 1.0), compress=True, metadata={
        META_SPACING: META_SPACING_UNKNOWN + "pixel spacing unknown (the file records no pixel spacing): lengths "
                                             "in mm and the gestational age are not shown."})
    assert main(["ac", str(path)]) == 1
    text = capsys.readouterr().out
    assert "its sweep's file records no pixel spacing" in text and "image writers" not in text and "GA" not in text
    assert main(["ac", str(path), "--spacing", "0.28"]) == 0  # the user's pixel size still measures it
    assert "GA" in capsys.readouterr().out


def test_with_its_sweep_ac_judges_the_outline_by_the_frame_and_takes_the_sweep_s_pixel_size(tmp_path, capsys):
    """`ac --sweep` used the sweep's fan only: a mask of the brain inside a bright skull ring read
    "AC 201.9 mm, GA 24w 6d" where `score` rejects the same outline; a mask whose own pixel size
    (0.30 mm) disagreed with its sweep's (0.25 mm) was measured with its own, without a word."""
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(5)
    frames = rng.integers(20, 60, (3, H, W), dtype=np.uint8)
    brain = np.zeros((H, W), np.uint8)
    cv2.ellipse(brain, (372, 280), (120, 100), 0, 0, 360, 1, -1)
    ring = np.zeros((H, W), np.uint8)
    cv2.ellipse(ring, (372, 280), (130, 110), 0, 0, 360, 1, 14)
    frames[:, brain != 0] = rng.integers(5, 25, int(brain.sum()), dtype=np.uint8)  # dark brain
    frames[:, ring != 0] = 230  # bright bone around it
    write_volume(tmp_path / "head.mha", frames, spacing_mm=(0.25, 0.25))
    path = _write(tmp_path, brain[None].repeat(3, 0), "brain.mha", spacing=0.25)
    assert main(["ac", str(path), "--frame", "1", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["ac_status"] == "ok"  # a mask alone shows no bone: its shape is an abdomen's
    assert main(["ac", str(path), "--frame", "1", "--sweep", str(tmp_path / "head.mha"), "--json"]) == 0
    judged = json.loads(capsys.readouterr().out)
    assert judged["ac_status"] == "doubtful" and "skull" in judged["mask_problem"] and judged["ga"] is None
    # the mask says 0.30 mm, its sweep 0.25 mm: one is wrong, no length
    other = _write(tmp_path, brain[None].repeat(3, 0), "other.mha", spacing=0.30)
    main(["ac", str(other), "--frame", "1", "--sweep", str(tmp_path / "head.mha"), "--json"])
    record = json.loads(capsys.readouterr().out)
    assert record["ac_mm"] is None and "disagree" in record["spacing_problem"]
    # a mask without a pixel size measured with its sweep's
    none = _write(tmp_path, brain[None].repeat(3, 0), "none.mha", spacing=1.0)
    main(["ac", str(none), "--frame", "1", "--sweep", str(tmp_path / "head.mha"), "--no-fov", "--json"])
    record = json.loads(capsys.readouterr().out)
    assert record["spacing_mm"] == [0.25, 0.25] and record["spacing_source"] == "its sweep's file header"


def test_ac_with_its_sweep_says_what_reading_the_sweep_found(tmp_path, capsys):
    """Pixels of the sweep that hold no number (NaN) were taken for the fan's edge without a word
    in `ac --sweep` (`score` notes them)."""
    frames = np.full((2, 120, 160), 60.0, np.float32)
    frames[:, 40:80, 50:110] = 140.0
    frames[:, :, :6] = np.nan
    image = sitk.GetImageFromArray(frames)
    image.SetSpacing((0.28, 0.28, 1.0))
    sitk.WriteImage(image, str(tmp_path / "sweep.mha"))
    masks = np.zeros((2, 120, 160), np.uint8)
    cv2.ellipse(masks[1], (80, 60), (30, 20), 0, 0, 360, 1, -1)
    path = _write(tmp_path, masks, "mask.mha")
    main(["ac", str(path), "--sweep", str(tmp_path / "sweep.mha")])
    out = capsys.readouterr().out
    assert "note: the sweep:" in out and "hold no number" in out
    main(["ac", str(path), "--sweep", str(tmp_path / "sweep.mha"), "--json"])
    record = json.loads(capsys.readouterr().out)
    assert any(n.startswith("sweep:") and "hold no number" in n for n in record["read_notes"])


def test_a_mask_scored_with_a_given_spacing_is_measured_with_its_sweep(tmp_path, capsys):
    """`score SWEEP --spacing 0.3` writes a mask recording that size as given for its sweep; `ac
    MASK --sweep SWEEP` called the two sizes a disagreement (0.3 against the file's 0.28) and
    measured nothing."""
    from fetaliqa_core.io import META_SPACING, META_SPACING_OF_SWEEP

    frames = np.full((2, 120, 160), 60, np.uint8)
    image = sitk.GetImageFromArray(frames)
    image.SetSpacing((0.28, 0.28, 1.0))
    sitk.WriteImage(image, str(tmp_path / "sweep.mha"))
    masks = np.zeros((2, 120, 160), np.uint8)
    cv2.ellipse(masks[1], (80, 60), (30, 24), 0, 0, 360, 1, -1)
    mask = sitk.GetImageFromArray(masks)
    mask.SetSpacing((0.3, 0.3, 1.0))
    mask.SetMetaData(META_SPACING, f"{META_SPACING_OF_SWEEP}user")
    sitk.WriteImage(mask, str(tmp_path / "mask.mha"))
    main(["ac", str(tmp_path / "mask.mha"), "--sweep", str(tmp_path / "sweep.mha"), "--json"])
    record = json.loads(capsys.readouterr().out)
    assert record["spacing_mm"] == [0.3, 0.3] and record["ac_mm"] is not None and record["spacing_problem"] is None


def test_a_mask_of_another_frame_count_than_its_sweep_is_refused(tmp_path, capsys):
    """A skull outline labelled on frame 6 of an 8-frame mask, given with a 5-frame sweep of heads,
    read "AC 230.2 mm, GA 27w 3d": the checks against the image were skipped without a word."""
    from fetaliqa_core.io import write_volume

    write_volume(tmp_path / "sweep.mha", np.full((5, 120, 160), 40, np.uint8), spacing_mm=(0.3, 0.3))
    masks = np.zeros((8, 120, 160), np.uint8)
    cv2.ellipse(masks[6], (80, 60), (40, 30), 0, 0, 360, 1, -1)
    path = _write(tmp_path, masks, "mask.mha", spacing=0.3)
    assert main(["ac", str(path), "--sweep", str(tmp_path / "sweep.mha")]) == 1
    captured = capsys.readouterr()
    assert "the sweep has 5 frame(s), the mask 8" in captured.err and "AC" not in captured.out
    # a mask of one frame is measured in the sweep's fan, saying that its grey levels were not looked at
    one = _write(tmp_path, masks[6:7], "one.mha", spacing=0.3)
    assert main(["ac", str(one), "--sweep", str(tmp_path / "sweep.mha")]) == 0
    assert "the mask has one frame and the sweep 5" in capsys.readouterr().out


def test_a_sweep_whose_header_states_another_frame_count_is_refused_before_its_pixels_are_read(
        tmp_path, capsys, monkeypatch):
    """A 34 MB sweep declaring 19,000 frames given with a 12-frame mask was read (7.8 GB over
    92 s) to say "the sweep has 19000 frame(s), the mask 12": its header says so at once."""
    from fetaliqa_core import io as fio

    fio.write_volume(tmp_path / "sweep.mha", np.full((5, 120, 160), 40, np.uint8), spacing_mm=(0.3, 0.3))
    masks = np.zeros((8, 120, 160), np.uint8)
    cv2.ellipse(masks[6], (80, 60), (40, 30), 0, 0, 360, 1, -1)
    path = _write(tmp_path, masks, "mask.mha", spacing=0.3)

    def read(*args, **kwargs):
        raise AssertionError("the sweep's pixels were read")

    monkeypatch.setattr(fio, "load_sweep", read)
    assert main(["ac", str(path), "--sweep", str(tmp_path / "sweep.mha")]) == 1
    captured = capsys.readouterr()
    assert "the sweep has 5 frame(s), the mask 8" in captured.err and "AC" not in captured.out


def test_a_binary_mask_saved_as_0_and_255_is_measured_and_said(tmp_path, capsys):
    masks = np.zeros((2, H, W), np.uint8)
    cv2.ellipse(masks[1], (372, 300), BIG, 10, 0, 360, 255, -1)
    path = _write(tmp_path, masks, "mask255.mha")
    assert main(["ac", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["frame"] == 1 and record["ac_mm"] == pytest.approx(ac_of(BIG), rel=0.02)
    assert any("0 and 255" in n for n in record["read_notes"])
    # where a label's meaning matters (training, evaluation) it is refused, saying what it is
    from fetaliqa_core.errors import FetalIQAError
    from fetaliqa_core.io import load_mask

    with pytest.raises(FetalIQAError, match="binary mask stored as 0 and 255"):
        load_mask(path)
    # 255 beside labels 1/2 is an 'ignore' value, not a binary mask: dividing by 255 would erase the 1s
    ignore = masks.copy()
    ignore[0, :10, :10] = 1
    with pytest.raises(FetalIQAError, match="beside the labels 1 and 2"):
        load_mask(_write(tmp_path, ignore, "ignore.mha"))
    # a 16-bit binary mask (0 and 65535) is measured as the 8-bit one is
    wide = (masks.astype(np.uint16) // 255) * 65535
    assert main(["ac", str(_write(tmp_path, wide, "mask65535.mha")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ac_mm"] == pytest.approx(record["ac_mm"])
    # a probability map is called one
    probs = np.clip(masks.astype(np.float32) / 255 * 0.9 + 0.05, 0, 1)
    image = sitk.GetImageFromArray(probs)
    image.SetSpacing((0.28, 0.28, 1.0))
    sitk.WriteImage(image, str(tmp_path / "probs.mha"))
    assert main(["ac", str(tmp_path / "probs.mha")]) == 1
    assert "a probability map, not labels. Threshold it" in capsys.readouterr().err


def test_the_optimal_plane_is_measured_first_and_other_outlines_are_said(tmp_path, capsys):
    """An ACOUSLIC-style mask (label 1 on the optimal frame, label 2 on a larger oblique one) was
    measured on the larger label-2 frame, +17 %, without a word; twins in one frame were measured
    as the larger one without saying another outline was left out."""
    masks = np.zeros((3, H, W), np.uint8)
    cv2.ellipse(masks[0], (372, 300), SMALL, 0, 0, 360, 1, -1)  # optimal plane, smaller
    cv2.ellipse(masks[2], (372, 300), BIG, 0, 0, 360, 2, -1)  # suboptimal, larger
    path = _write(tmp_path, masks, "planes.mha")
    assert main(["ac", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["frame"] == 0 and record["ac_mm"] == pytest.approx(ac_of(SMALL), rel=0.02)
    assert record["frame_notes"] is None
    main(["ac", str(path), "--frame", "2"])
    out = capsys.readouterr().out
    assert "frame 2 is labelled 2 (a suboptimal plane) only; frame(s) 0 hold label 1" in out
    twins = np.zeros((1, H, W), np.uint8)
    cv2.ellipse(twins[0], (250, 280), (110, 100), 0, 0, 360, 1, -1)
    cv2.ellipse(twins[0], (520, 280), (50, 45), 0, 0, 360, 1, -1)
    main(["ac", str(_write(tmp_path, twins, "twins.mha")), "--no-fov"])
    out = capsys.readouterr().out
    assert "2 separate outlines" in out and "the largest" in out


def test_a_one_hot_mask_is_refused_as_a_mask_not_as_a_sweep(tmp_path, capsys):
    onehot = np.zeros((3, 2, 40, 64), np.uint8)  # channels, frames, height, width
    onehot[0] = 1
    image = sitk.GetImageFromArray(onehot)
    sitk.WriteImage(image, str(tmp_path / "onehot.nii.gz"))
    assert main(["ac", str(tmp_path / "onehot.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "a mask holds one label" in err and "Export the sweep" not in err and "\n" not in err.strip()


def test_without_a_pixel_size_in_either_file_the_sweeps_reason_is_given(tmp_path, capsys):
    """A mask and its sweep both without a usable pixel size: ac gave the mask file's reason ("the file
    records 1 x 1 mm per pixel, the value image writers put..."), sending the user to the wrong file;
    the sweep's is the one to fix (here its NRRD gives lengths in pixels)."""
    masks = np.zeros((1, H, W), np.uint8)
    cv2.ellipse(masks[0], (372, 300), BIG, 10, 0, 360, 1, -1)
    mask = tmp_path / "mask.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(mask))  # written without spacing: 1 x 1
    sweep = tmp_path / "sweep.nrrd"
    frames = np.full((1, H, W), 60, np.uint8)
    sweep.write_bytes(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {W} {H} 1\nencoding: raw\n"
                      'spacings: 0.3 0.3 1\nunits: "px" "px" ""\n\n'.encode() + frames.tobytes())
    assert main(["ac", str(mask), "--sweep", str(sweep)]) == 1
    out = capsys.readouterr().out
    assert "pixel spacing unknown (its sweep: " in out and "'px'" in out and "image writers" not in out
    assert "mm," not in out and "GA" not in out


def test_a_mask_outside_the_field_of_view_found_in_its_sweep_is_measured_on_the_whole_frame(tmp_path, capsys):
    """Fluid shown pure black hides a fan's edges: the field of view found in the frames was the
    band of uterine wall along the fan's arc (the largest region), a whole abdomen floating in the
    black lay wholly outside it and read 'no AC (the mask ... is too small or too cut off for an
    ellipse fit)'. The mask is measured on the whole frame now, and the note says why."""
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(5)
    frames = np.zeros((4, H, W), np.uint8)
    wall = np.zeros((H, W), np.uint8)
    cv2.ellipse(wall, (372, -300), (700, 760), 0, 0, 180, 1, -1)
    cv2.ellipse(wall, (372, -300), (700, 680), 0, 0, 180, 0, -1)
    frames[:, wall != 0] = rng.integers(60, 140, (4, int((wall != 0).sum())), dtype=np.uint8)
    body = np.zeros((H, W), np.uint8)
    cv2.ellipse(body, (372, 190), SMALL, 0, 0, 360, 1, -1)
    frames[:, body != 0] = rng.integers(90, 170, (4, int((body != 0).sum())), dtype=np.uint8)
    write_volume(tmp_path / "black.mha", frames, spacing_mm=(0.28, 0.28))
    masks = np.repeat(body[None], 4, axis=0)
    path = _write(tmp_path, masks, "body.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "black.mha"), "--frame", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "whole frame" and "outside the field of view found" in record["field_of_view_note"]
    assert record["ac_mm"] == pytest.approx(ac_of(SMALL), rel=0.02)
    # where the fan's edge runs near it is not known: a number to check, not to act on (below)
    assert record["ac_status"] == "doubtful" and record["ga"] is None
    assert record["mask_problem"].startswith("not checked against the fan's edge")


def test_twins_one_of_them_outside_the_field_of_view_found_are_said_and_doubtful(tmp_path, capsys, monkeypatch):
    """Twins in fluid shown pure black: the field of view found in an independent generator's
    frames was one twin's body (and what touched it); the other twin lay outside it, was left out
    without a word and the first one's AC read plain (the same mask read "fragmented" where the
    fluid showed). Both outlines are seen now, on the whole frame, and the AC is doubtful."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(7)
    frames = np.zeros((3, H, W), np.uint8)
    one, two = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    cv2.ellipse(one, (250, 200), (95, 85), 0, 0, 360, 1, -1)
    cv2.ellipse(two, (520, 400), (80, 70), 0, 0, 360, 1, -1)
    for region in (one, two):
        frames[:, region != 0] = rng.integers(90, 170, (3, int((region != 0).sum())), dtype=np.uint8)
    write_volume(tmp_path / "twins.mha", frames, spacing_mm=(0.28, 0.28))
    found = cv2.dilate(one, np.ones((15, 15), np.uint8)) != 0  # the first twin and a margin round it
    monkeypatch.setattr(acouslic, "sweep_fov", lambda sweep: found)
    path = _write(tmp_path, np.repeat(((one | two) != 0)[None].astype(np.uint8), 3, axis=0), "twins_mask.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "twins.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "whole frame"
    assert "a separate outline of the mask" in record["field_of_view_note"]
    assert record["ac_status"] == "doubtful" and record["ga"] is None
    assert "2 separate outlines" in " ".join(record["frame_notes"] or [])


def test_an_abdomen_in_black_fluid_cut_by_the_fan_s_arc_is_never_a_plain_short_ac(tmp_path, capsys):
    """A bright abdomen in fluid shown pure black that reaches the fan's depth arc, its outline cut
    there: the field of view found leaves out the fluid and the body, the mask was measured on the
    whole frame, cut edge and all, and read 3-4 % short, plain, with a GA (an independent
    generator's phased fan: 301.4 mm for 312.6). Now it is measured in the fan found closed over
    the fluid (its convex hull), so the cut is known and left out of the fit; where even that does
    not hold the mask, the AC is doubtful."""
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(9)
    fan, fluid, body = (np.zeros((H, W), np.uint8) for _ in range(3))
    cv2.ellipse(fan, (372, 0), (520, 520), 90, -40, 40, 1, -1)  # a sector, its depth arc at row 520
    cv2.circle(fluid, (372, 470), 125, 1, -1)
    cv2.ellipse(body, (372, 470), (90, 75), 0, 0, 360, 1, -1)  # a quarter of it past the arc
    frames = np.zeros((4, H, W), np.uint8)
    tissue = (fan != 0) & (fluid == 0)
    frames[:, tissue] = rng.integers(60, 140, (4, int(tissue.sum())), dtype=np.uint8)
    shown = (body != 0) & (fan != 0)
    frames[:, shown] = rng.integers(120, 200, (4, int(shown.sum())), dtype=np.uint8)
    write_volume(tmp_path / "arc.mha", frames, spacing_mm=(0.28, 0.28))
    path = _write(tmp_path, np.repeat(shown[None].astype(np.uint8), 4, axis=0), "cut.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "arc.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "the sweep's own fan, closed" and "convex hull" in record["field_of_view_note"]
    assert record["truncated"] is True
    assert record["ac_mm"] == pytest.approx(ac_of((90, 75)), rel=0.02)  # (on the whole frame: 3.6 % short)
    assert record["ac_status"] != "ok" or record["ac_mm"] == pytest.approx(ac_of((90, 75)), rel=0.01)


def test_an_abdomen_cut_by_a_curved_probe_s_face_is_measured_as_cut(tmp_path, capsys):
    """A curved probe's face is an arc bending into the fan; with fluid shown pure black reaching
    it, the field of view found was the convex hull of the tissue, which filled the dome between
    that arc and its chord: an abdomen the face cut was measured as whole, 125.3 mm for 130.2
    (-3.8 %), plain, with a GA. The field of view now ends at the face, so the cut is known."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.io import load_sweep, write_volume

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:600, 0:W]
    radius, angle = np.hypot(xx - W / 2, yy + 200), np.degrees(np.arctan2(xx - W / 2, yy + 200))
    fan = (radius >= 260) & (radius <= 780) & (np.abs(angle) <= 40)  # the face: an arc at row 60
    fluid, body = np.zeros((600, W), np.uint8), np.zeros((600, W), np.uint8)
    cv2.circle(fluid, (372, 130), 115, 1, -1)
    cv2.ellipse(body, (372, 106), (76, 72), 0, 0, 360, 1, -1)  # its top 11 % past the face
    frames = np.zeros((4, 600, W), np.uint8)
    tissue = fan & (fluid == 0)
    frames[:, tissue] = rng.integers(60, 140, (4, int(tissue.sum())), dtype=np.uint8)
    shown = (body != 0) & fan
    frames[:, shown] = rng.integers(120, 200, (4, int(shown.sum())), dtype=np.uint8)
    write_volume(tmp_path / "curved.mha", frames, spacing_mm=(0.28, 0.28))
    fov = np.asarray(acouslic.sweep_fov(load_sweep(tmp_path / "curved.mha")))
    assert not (fov & (radius < 259)).any()  # (the dome reached up to row 2)
    assert (fov & fan).sum() >= 0.98 * fan.sum()
    path = _write(tmp_path, np.repeat(shown[None].astype(np.uint8), 4, axis=0), "cut.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "curved.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["truncated"] is True
    assert record["ac_mm"] == pytest.approx(ac_of((76, 72)), rel=0.01)


def test_a_fan_whose_top_the_image_cuts_straight_keeps_its_top_with_fluid_reaching_it(tmp_path, capsys):
    """A face that is no arc round the apex (a sector the image cuts straight at its top row, a
    trapezoid): the nearest tissue lay at the fluid's corners, and the field of view lost a lens of
    the fan under the top, with the top of a whole abdomen floating in the fluid (doubtful, "47 %
    of its outline outside the field of view", where it read plain and right)."""
    from fetaliqa_core import acouslic
    from fetaliqa_core.io import load_sweep, write_volume

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:H, 0:W]
    radius, angle = np.hypot(xx - W / 2, yy + 120), np.degrees(np.arctan2(xx - W / 2, yy + 120))
    fan = (radius <= 640) & (np.abs(angle) <= 35)  # its apex above the image: the top row cuts it
    fluid, body = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
    cv2.circle(fluid, (372, 60), 70, 1, -1)  # reaching the top row, tissue either side
    cv2.ellipse(body, (372, 68), (50, 46), 0, 0, 360, 1, -1)  # whole, 22 px below it
    frames = np.zeros((4, H, W), np.uint8)
    tissue = fan & (fluid == 0)
    frames[:, tissue] = rng.integers(60, 140, (4, int(tissue.sum())), dtype=np.uint8)
    frames[:, body != 0] = rng.integers(120, 200, (4, int((body != 0).sum())), dtype=np.uint8)
    write_volume(tmp_path / "flat.mha", frames, spacing_mm=(0.28, 0.28))
    fov = np.asarray(acouslic.sweep_fov(load_sweep(tmp_path / "flat.mha")))
    assert fov[:20][fan[:20]].mean() > 0.99
    path = _write(tmp_path, np.repeat((body != 0)[None].astype(np.uint8), 4, axis=0), "whole.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "flat.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["truncated"] is False and record["ac_mm"] == pytest.approx(ac_of((50, 46)), rel=0.02)


def test_a_field_of_view_closed_over_a_notch_stays_beyond_a_curved_probe_s_face():
    """`ac` closes the field of view found over fluid shown pure black that reaches the fan's edge
    (its convex hull): over a curved probe's face, the hull filled the dome above the face too."""
    from fetaliqa_core.acouslic import closed_fan

    yy, xx = np.mgrid[0:600, 0:W]
    radius, angle = np.hypot(xx - W / 2, yy + 200), np.degrees(np.arctan2(xx - W / 2, yy + 200))
    fan = (radius >= 260) & (radius <= 780) & (np.abs(angle) <= 40)
    notch = np.hypot(xx - 372, yy - 200) <= 90  # fluid at the fan's middle, away from its face
    closed = closed_fan(fan & ~notch)
    assert closed[notch & fan].all()  # the notch closed again
    assert not (closed & (radius < 259.5)).any()  # and nothing above the face


def test_a_body_that_is_all_its_sweep_shows_is_measured_on_the_whole_frame(tmp_path, capsys):
    """Fluid shown pure black and no fan edge to be seen: the field of view found in the frames is
    the body itself, the whole abdomen's outline ran along its edge all round, and it read 'no AC
    (the mask ... is too small or too cut off for an ellipse fit)'."""
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(6)
    frames = np.zeros((3, H, W), np.uint8)
    body = np.zeros((H, W), np.uint8)
    cv2.ellipse(body, (372, 280), SMALL, 20, 0, 360, 1, -1)
    frames[:, body != 0] = rng.integers(90, 170, (3, int((body != 0).sum())), dtype=np.uint8)
    write_volume(tmp_path / "only.mha", frames, spacing_mm=(0.28, 0.28))
    path = _write(tmp_path, np.repeat(body[None], 3, axis=0), "body.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "only.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "whole frame" and "this outline itself" in record["field_of_view_note"]
    assert record["ac_mm"] == pytest.approx(ac_of(SMALL), rel=0.02)


def test_a_sweep_in_acouslic_s_fan_names_that_fan_as_the_field_of_view(tmp_path, capsys):
    """With --sweep, a sweep whose frames show ACOUSLIC's fan is measured in ACOUSLIC's own mask,
    but the answer said "in the sweep's own fan" (and a cut "by an edge the sweep's own fan does
    not have"): the field of view named was not the one used."""
    from fetaliqa_core.acouslic import fov_mask
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(4)
    frames = (rng.integers(30, 200, (4, H, W)) * fov_mask((H, W))).astype(np.uint8)
    write_volume(tmp_path / "sweep.mha", frames, spacing_mm=(0.28, 0.28))
    masks = np.zeros((4, H, W), np.uint8)
    cv2.ellipse(masks[1], (372, 300), BIG, 0, 0, 360, 1, -1)
    path = _write(tmp_path, masks, "mask.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "sweep.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "acouslic"
    assert main(["ac", str(path), "--sweep", str(tmp_path / "sweep.mha"), "--frame", "1"]) == 0
    assert "in ACOUSLIC's fan" in capsys.readouterr().out


def test_a_mask_measured_on_the_whole_frame_says_a_fan_s_cut_is_not_known(tmp_path, capsys):
    """A mask of another probe's frame size, cut by its fan's curved depth arc, read a plain AC and
    GA 3 % short with nothing said of the fan: without the sweep its edges are unknown."""
    masks = np.zeros((1, 300, 400), np.uint8)
    cv2.ellipse(masks[0], (200, 150), (80, 60), 0, 0, 360, 1, -1)
    path = _write(tmp_path, masks, "other_probe.mha")
    assert main(["ac", str(path)]) == 0
    out = capsys.readouterr().out
    assert "on the whole frame" in out and "whether the fan's edge cuts the outline is known only from the sweep" in out
    assert main(["ac", str(path), "--no-fov"]) == 0  # asked for: nothing to add
    assert "known only from the sweep" not in capsys.readouterr().out


def test_a_mask_of_one_other_label_is_measured_naming_it(tmp_path, capsys):
    """A 3D Slicer segmentation whose one segment has label value 3 (and an ITK-SNAP mask of label 5)
    was refused as "not an image or a probability map": one value beside 0 outlines one thing."""
    masks = np.zeros((2, H, W), np.uint8)
    cv2.ellipse(masks[1], (372, 300), BIG, 10, 0, 360, 3, -1)
    image = sitk.GetImageFromArray(masks)
    image.SetSpacing((0.28, 0.28, 1.0))
    image.SetMetaData("Segment0_LabelValue", "3")
    image.SetMetaData("Segment0_Name", "abdomen")
    sitk.WriteImage(image, str(tmp_path / "mask.seg.nrrd"), True)
    assert main(["ac", str(tmp_path / "mask.seg.nrrd"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["frame"] == 1 and record["ac_mm"] == pytest.approx(ac_of(BIG), rel=0.02)
    assert any("label 3" in n and "'abdomen'" in n for n in record["read_notes"])
    assert main(["ac", str(_write(tmp_path, masks // 3 * 5, "label5.nii.gz")), "--json"]) == 0
    assert any("label 5 only" in n for n in json.loads(capsys.readouterr().out)["read_notes"])
    # several labels: named, with how to relabel the abdomen as 1
    several = masks.copy()
    several[1, :20, :20] = 4
    assert main(["ac", str(_write(tmp_path, several, "several.mha"))]) == 1
    err = capsys.readouterr().err
    assert "found 3, 4" in err and "Export to label map" in err and "probability map" not in err


def test_one_spacing_value_on_pixels_that_are_not_square_is_refused(tmp_path, capsys):
    """`--spacing 0.3` on a sweep calibrated 0.3 mm wide x 0.4 mm high made its pixels square
    without a word (AC 288.5 -> 258.4 mm): refused now, and two sizes replace it, said so."""
    from fakes import us_dicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 159, 119
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.03, 0.04
    sweep = us_dicom(tmp_path / "sweep.dcm", np.full((1, 120, 160), 40, np.uint8),
                     SequenceOfUltrasoundRegions=Sequence([region]))
    masks = np.zeros((1, 120, 160), np.uint8)
    cv2.ellipse(masks[0], (80, 60), (40, 30), 0, 0, 360, 1, -1)
    mask = _write(tmp_path, masks, "mask.mha", spacing=1.0)
    assert main(["ac", str(mask), "--sweep", str(sweep), "--spacing", "0.3"]) == 1
    assert "not square" in capsys.readouterr().err
    assert main(["ac", str(mask), "--sweep", str(sweep), "--spacing", "0.3x0.45", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["spacing_mm"] == [0.45, 0.3] and record["spacing_source"] == "user"
    assert any("replacing the file's 0.3 x 0.4 mm" in n for n in record["read_notes"])
    with pytest.raises(SystemExit) as exc:
        main(["ac", str(mask), "--spacing", "0.3x"])
    assert exc.value.code == 2 and "not a pixel spacing" in capsys.readouterr().err


def test_a_mask_path_that_is_a_link_loop_is_named_so(tmp_path, capsys):
    """`ac LOOP` said "no such file" of a link that leads back to itself, and named .mha alone."""
    loop = tmp_path / "loop.mha"
    loop.symlink_to(loop)
    assert main(["ac", str(loop)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "leads back to itself" in err and ".nii.gz" in err, err


def test_a_mask_file_s_pixel_size_does_not_stand_in_for_a_sweep_that_has_none(tmp_path, capsys):
    """A mask written with ACOUSLIC's 0.28 mm as a template, given with a sweep that records no
    pixel size: `ac --sweep` measured at the mask's 0.28 mm, called it "file header" (taken for the
    sweep's) and printed a plain AC with a GA (116.8 mm, 17w 3d, on a sweep drawn at 0.3 mm). The
    mask file's size is now named as such and not used: no mm, with the --spacing that would use it."""
    frames = np.full((2, 120, 160), 60, np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(frames), str(tmp_path / "sweep.mha"))  # no ElementSpacing
    masks = np.zeros((2, 120, 160), np.uint8)
    cv2.ellipse(masks[1], (80, 60), (40, 30), 0, 0, 360, 1, -1)
    mask = _write(tmp_path, masks, "mask.mha", spacing=0.28)
    assert main(["ac", str(mask), "--sweep", str(tmp_path / "sweep.mha")]) == 1
    out = capsys.readouterr().out
    assert "AC not shown" in out and "GA" not in out and "file header" not in out
    assert "its sweep: the file records" in out and "The mask file's header states 0.28 x 0.28 mm" in out
    assert "--spacing 0.28." in out and out.count("--spacing") == 1, out
    assert main(["ac", str(mask), "--sweep", str(tmp_path / "sweep.mha"), "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "no units" and record["ac_mm"] is None and record["spacing_source"] is None
    # given with --spacing, it is measured
    assert main(["ac", str(mask), "--sweep", str(tmp_path / "sweep.mha"), "--spacing", "0.28", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_mm"] is not None and record["spacing_mm"] == [0.28, 0.28] and record["spacing_source"] == "user"
    # beside a sweep that has one, a mask's size that disagrees is named as the mask file's
    calibrated = sitk.GetImageFromArray(frames)
    calibrated.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(calibrated, str(tmp_path / "sweep03.mha"))
    assert main(["ac", str(mask), "--sweep", str(tmp_path / "sweep03.mha")]) == 1
    assert "0.28 x 0.28 mm (the mask file's header)" in capsys.readouterr().out


def test_a_mask_whose_header_stores_it_flipped_against_its_sweep_is_laid_on_it_the_sweep_s_way(tmp_path, capsys):
    """A NIfTI mask written by a reorienting tool (rows stored bottom to top, its affine saying so)
    and a 3D Slicer .seg.nrrd with its axes reversed lie where the sweep lies in space, but were laid
    on the sweep as stored: the outline on the mirrored place of the frame, doubted for a wrong
    cause. They are turned to the sweep's storage order now, said so; an orientation that is no flip
    is refused; headers that place the mask elsewhere leave it as stored, and a mask written with no geometry
    (its writer's default) is laid as stored, as before."""
    from fetaliqa_core.io import load_mask, load_sweep

    h, w, s = 120, 160, 0.3
    frames = np.full((2, h, w), 30, np.uint8)
    cv2.ellipse(frames[1], (70, 40), (40, 30), 0, 0, 360, 140, -1)  # the body, in the upper half
    sweep = sitk.GetImageFromArray(frames)
    sweep.SetSpacing((s, s, 1.0))
    sitk.WriteImage(sweep, str(tmp_path / "sweep.nii.gz"))
    masks = np.zeros((2, h, w), np.uint8)
    cv2.ellipse(masks[1], (70, 40), (40, 30), 0, 0, 360, 1, -1)

    def stored(name, flip_rows, flip_cols, origin=None, direction=None):
        data = masks[:, ::-1 if flip_rows else 1, ::-1 if flip_cols else 1]
        image = sitk.GetImageFromArray(np.ascontiguousarray(data))
        image.SetSpacing((s, s, 1.0))
        image.SetDirection(direction or (-1.0 if flip_cols else 1.0, 0, 0, 0, -1.0 if flip_rows else 1.0, 0, 0, 0, 1))
        image.SetOrigin(origin if origin is not None else
                        ((w - 1) * s if flip_cols else 0.0, (h - 1) * s if flip_rows else 0.0, 0.0))
        sitk.WriteImage(image, str(tmp_path / name))
        return str(tmp_path / name)

    for name, rows, cols, said in (("rows.nii.gz", True, False, "its rows stored bottom to top"),
                                   ("both.seg.nrrd", True, True, "and its columns stored right to left")):
        path = stored(name, rows, cols)
        assert main(["ac", path, "--sweep", str(tmp_path / "sweep.nii.gz"), "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["ellipse_px"]["center"] == pytest.approx([70, 40], abs=1.5), name
        assert any(said in n and "turned to the sweep's storage order" in n for n in record["read_notes"]), record
        on_sweep = load_mask(path, like=load_sweep(tmp_path / "sweep.nii.gz"))
        assert np.array_equal(on_sweep, masks), name
    # stored transposed (rows and columns exchanged), its header saying so
    transposed = sitk.GetImageFromArray(np.ascontiguousarray(masks.transpose(0, 2, 1)))
    transposed.SetSpacing((s, s, 1.0))
    transposed.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    sitk.WriteImage(transposed, str(tmp_path / "transposed.nii.gz"))
    assert main(["ac", str(tmp_path / "transposed.nii.gz"), "--sweep", str(tmp_path / "sweep.nii.gz"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ellipse_px"]["center"] == pytest.approx([70, 40], abs=1.5)
    assert any("rows and columns exchanged" in n for n in record["read_notes"])
    # the same flip placed elsewhere in space (its writer's default origin): as stored, said so
    elsewhere = stored("elsewhere.nii.gz", True, False, origin=(0.0, 0.0, 0.0))
    assert main(["ac", elsewhere, "--sweep", str(tmp_path / "sweep.nii.gz"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ellipse_px"]["center"] == pytest.approx([70, h - 1 - 40], abs=1.5)
    assert any("places it elsewhere in space: laid on the sweep as stored" in n for n in record["read_notes"])
    # turned by 30 degrees: no flip makes it the sweep's
    c, si = np.cos(np.pi / 6), np.sin(np.pi / 6)
    turned = stored("turned.nii.gz", False, False, direction=(c, -si, 0, si, c, 0, 0, 0, 1))
    assert main(["ac", turned, "--sweep", str(tmp_path / "sweep.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "orients the mask otherwise than the sweep's" in err and err.count("\n") == 1
    # a mask written with no geometry (its writer's default: origin 0, no orientation) states none: laid as
    # stored, without a word, on a sweep whatever its header's orientation (a NIfTI's RAS axes, a turned NRRD)
    plain = tmp_path / "plain.mha"
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(plain))
    for name, direction in (("ras.nii.gz", (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1)),
                            ("turned.nrrd", (c, -si, 0, si, c, 0, 0, 0, 1))):
        other = sitk.GetImageFromArray(frames)
        other.SetSpacing((s, s, 1.0))
        other.SetDirection(direction)
        sitk.WriteImage(other, str(tmp_path / name))
        assert main(["ac", str(plain), "--sweep", str(tmp_path / name), "--json"]) == 0, name
        record = json.loads(capsys.readouterr().out)
        assert record["ellipse_px"]["center"] == pytest.approx([70, 40], abs=1.5)
        assert not any("orients" in n for n in record["read_notes"] or []), name
    # the same storage and orientation as the sweep: as before, no word
    same = stored("same.nii.gz", False, False)
    assert main(["ac", same, "--sweep", str(tmp_path / "sweep.nii.gz"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ellipse_px"]["center"] == pytest.approx([70, 40], abs=1.5)
    assert not any("orients" in n for n in record["read_notes"] or [])


def test_a_mask_whose_header_places_it_elsewhere_with_the_sweep_s_orientation_is_said_so(tmp_path, capsys):
    """A mask oriented as its sweep but placed elsewhere by its header (its origin 50 pixels to the
    side, or two frames on) was laid on the sweep without a word, where one stored flipped and placed
    elsewhere was said: by the headers, the frame measured was another of the sweep's. Said now,
    with where the headers put it; an origin within half a pixel of the sweep's is the same place."""
    h, w, s = 120, 160, 0.3
    frames = np.full((4, h, w), 30, np.uint8)
    cv2.ellipse(frames[1], (70, 50), (40, 30), 0, 0, 360, 140, -1)
    sweep = sitk.GetImageFromArray(frames)
    sweep.SetSpacing((s, s, 1.0))
    sweep.SetOrigin((3.0, 6.0, 0.0))
    sitk.WriteImage(sweep, str(tmp_path / "sweep.mha"))
    masks = np.zeros((4, h, w), np.uint8)
    cv2.ellipse(masks[1], (70, 50), (40, 30), 0, 0, 360, 1, -1)

    def notes_of(name, origin):
        image = sitk.GetImageFromArray(masks)
        image.SetSpacing((s, s, 1.0))
        image.SetOrigin(origin)
        sitk.WriteImage(image, str(tmp_path / name))
        assert main(["ac", str(tmp_path / name), "--sweep", str(tmp_path / "sweep.mha"), "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["ellipse_px"]["center"] == pytest.approx([70, 50], abs=1.5)  # laid as stored
        return [n for n in record["read_notes"] or [] if "elsewhere in space" in n]

    aside = notes_of("aside.mha", (3.0 + 50 * s, 6.0, 0.0))
    assert len(aside) == 1 and "laid on the sweep as stored" in aside[0] and "50 pixels to the right" in aside[0]
    later = notes_of("later.mha", (3.0, 6.0, 2.0))
    assert len(later) == 1 and "its frame I on the sweep's frame I+2" in later[0]
    up = notes_of("up.mha", (3.0, 6.0 - 0.6 * s, 0.0))  # (0.6 of a pixel)
    assert len(up) == 1 and "0.6 pixels up" in up[0]
    # within half a pixel (a writer's rounding of the origin): the same place, no word
    assert notes_of("same.mha", (3.0 + 0.4 * s, 6.0, 0.3)) == []
    # text output: the note is printed
    assert main(["ac", str(tmp_path / "aside.mha"), "--sweep", str(tmp_path / "sweep.mha")]) == 0
    assert "note: the mask's header places it elsewhere in space" in capsys.readouterr().out


def test_a_sweep_whose_metaimage_header_is_refused_prints_only_the_refusal(tmp_path, capfd):
    """`ac --sweep` reads the sweep's header for its orientation before reading the sweep: on a
    MetaImage header the image reader cannot parse (one ElementSpacing value for three axes), its
    parser's four lines ("DimSize required and not defined.", "MetaObject: Read: MET_Read Failed",
    ...) came on stderr before the one line that says what is wrong."""
    masks = np.zeros((3, 60, 80), np.uint8)
    cv2.ellipse(masks[1], (40, 30), (20, 15), 0, 0, 360, 1, -1)
    mask = tmp_path / "mask.mha"
    sitk.WriteImage(sitk.GetImageFromArray(masks), str(mask))
    sweep = tmp_path / "sweep.mha"
    sweep.write_bytes(b"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                      b"CompressedData = False\nElementSpacing = 0.6\nDimSize = 80 60 3\nElementType = MET_UCHAR\n"
                      b"ElementDataFile = LOCAL\n" + bytes(3 * 60 * 80))
    capfd.readouterr()
    assert main(["ac", str(mask), "--sweep", str(sweep)]) == 1
    err = capfd.readouterr().err
    assert "ElementSpacing '0.6' is not a list of 3 numbers" in err
    assert err.count("\n") == 1, err


def test_a_whole_outline_flattened_well_inside_the_sweep_s_fan_is_doubted_as_flattened_not_cut(tmp_path, capsys):
    """A whole abdomen, exactly outlined, pressed flat on the probe's side, well inside the sweep's
    fan, was doubted as "cut off straight, by an edge the sweep's own fan does not have": the
    doubt stands, but the reason sent the user looking for a cut that is not there. It now says
    the outline is flattened; a straight side near the fan's edge keeps the old reason."""
    from fetaliqa_core.io import write_volume

    rng = np.random.default_rng(6)
    fan = np.zeros((H, W), np.uint8)
    fan[30:530, 60:684] = 1  # a linear probe's image: the sweep's own fan
    frames = (rng.integers(40, 200, (3, H, W)) * fan).astype(np.uint8)
    body = np.zeros((H, W), np.uint8)
    cv2.ellipse(body, (372, 300), BIG, 0, 0, 360, 1, -1)
    body[:220] = 0  # flattened straight across the top, 190 rows clear of the fan's edge
    frames[:, (body != 0)] = rng.integers(120, 230, (3, int(body.sum())), dtype=np.uint8)
    write_volume(tmp_path / "sweep.mha", frames, spacing_mm=(0.28, 0.28))
    masks = np.zeros((3, H, W), np.uint8)
    masks[1] = body
    path = _write(tmp_path, masks, "flat.mha")
    assert main(["ac", str(path), "--sweep", str(tmp_path / "sweep.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "doubtful" and record["ga"] is None
    assert record["mask_problem"].startswith("flattened, straight along one side, well inside the fan"), record
    assert "cut off" not in record["note"]
    # a sweep on ACOUSLIC's own fan (found in its frames): the same, as `score` says it (this said
    # "cut off straight, by an edge ACOUSLIC's fan does not have" where score said flattened)
    from fetaliqa_core.acouslic import fov_mask

    acouslic = rng.integers(40, 200, (3, H, W)).astype(np.uint8)
    acouslic[:, (body != 0)] = frames[:, (body != 0)]
    acouslic *= fov_mask((H, W))[None].astype(np.uint8)
    assert (fov_mask((H, W)) | (body == 0)).all()  # (the body lies in the fan)
    write_volume(tmp_path / "acouslic.mha", acouslic, spacing_mm=(0.28, 0.28))
    assert main(["ac", str(path), "--sweep", str(tmp_path / "acouslic.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["field_of_view"] == "acouslic", record
    assert record["mask_problem"].startswith("flattened, straight along one side, well inside the fan"), record
    # the same straight side 3 px from the fan's edge: that edge may be what cut it, and is named
    near = frames.copy()
    near[:, :217] = 0
    write_volume(tmp_path / "near.mha", near, spacing_mm=(0.28, 0.28))
    assert main(["ac", str(path), "--sweep", str(tmp_path / "near.mha"), "--frame", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["mask_problem"].startswith("cut off straight, by an edge"), record


def test_ac_with_its_sweep_doubts_a_section_of_the_thorax_not_an_abdomen_with_its_stomach(tmp_path, capsys):
    """A transverse section of the thorax outlined as round as an abdomen read 'AC ... mm, GA ...'
    plain with its sweep (36 of 44 thoraxes of an independent generator): the heart's chambers,
    dark and divided by bright septa, now make it doubtful, with the reason. An abdomen with its
    stomach, umbilical vein and a short rib on each side still reads plain."""
    from fetaliqa_core.io import write_volume
    from tests.test_frame_choice import PX_MM, _section

    for kind in ("thorax", "abdomen"):  # (frames of the model's size, as `score` writes its masks)
        frame, mask = _section(kind, axes=(46, 41), angle=20.0, seed=0)
        write_volume(tmp_path / f"{kind}.mha", frame[None].repeat(2, 0), spacing_mm=(PX_MM, PX_MM))
        path = _write(tmp_path, mask[None].repeat(2, 0), f"{kind}_mask.mha", spacing=PX_MM)
        assert main(["ac", str(path), "--frame", "1", "--sweep", str(tmp_path / f"{kind}.mha"), "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        if kind == "thorax":
            assert record["ac_status"] == "doubtful" and record["ga"] is None
            assert "heart" in record["mask_problem"], record["mask_problem"]
        else:
            assert record["ac_status"] == "ok" and record["ga"], record


def test_ac_with_its_sweep_doubts_a_thorax_whose_heart_has_thin_septa(tmp_path, capsys):
    """A thorax whose heart's septa are 2 px wide at the model's size read 'AC ... mm, GA ...'
    plain with its sweep: the smoothing that reads the chambers blurred the septa away and the
    chambers joined into one dark piece, as a stomach is. It is now doubtful, with the heart named
    in the reason."""
    from fetaliqa_core.io import write_volume
    from tests.test_frame_choice import PX_MM, _section

    frame, mask = _section("thorax", axes=(46, 41), angle=20.0, seed=0, septum=2)
    write_volume(tmp_path / "thorax.mha", frame[None].repeat(2, 0), spacing_mm=(PX_MM, PX_MM))
    path = _write(tmp_path, mask[None].repeat(2, 0), "thorax_mask.mha", spacing=PX_MM)
    assert main(["ac", str(path), "--frame", "1", "--sweep", str(tmp_path / "thorax.mha"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "doubtful" and record["ga"] is None, record
    assert "heart" in record["mask_problem"], record["mask_problem"]


@pytest.mark.parametrize("matrix,said", [("2 0 0 0 2 0 0 0 1", "states two pixel sizes"),
                                         ("1 0 0 0.5 0.866025 0 0 0 1", "meet at 60 degrees, not 90")])
def test_a_mask_and_sweep_whose_metaimage_matrix_is_no_rotation_are_measured_without_mm(tmp_path, capsys, matrix,
                                                                                        said):
    """A sweep and its mask whose headers both give a TransformMatrix of 2s (pixels placed 0.6 mm
    apart where the ElementSpacing says 0.3 mm), or both one of skewed axes: the AC was shown plain
    at 0.3 mm (half the file's geometry's; a sheared grid read as square), and the mask, with the
    same header as its sweep, was refused as oriented otherwise. The mask lies on its sweep; the
    pixel size is unknown, the matrix named as the reason."""
    frames = np.full((2, 120, 160), 60, np.uint8)
    masks = np.zeros((2, 120, 160), np.uint8)
    cv2.ellipse(masks[1], (80, 60), (40, 30), 0, 0, 360, 1, -1)
    frames[masks != 0] = 120
    for name, data in (("sweep.mha", frames), ("mask.mha", masks)):
        head = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nElementSpacing = 0.3 0.3 1\n"
                f"TransformMatrix = {matrix}\nOffset = 5 7 0\nDimSize = 160 120 2\nElementType = MET_UCHAR\n"
                "ElementDataFile = LOCAL\n")
        (tmp_path / name).write_bytes(head.encode() + data.tobytes())
    assert main(["ac", str(tmp_path / "mask.mha"), "--sweep", str(tmp_path / "sweep.mha"), "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ac_mm"] is None and record["ac_status"] == "no units" and record["frame"] == 1
    assert "TransformMatrix" in record["spacing_problem"] and said in record["spacing_problem"], record
    assert record["ellipse_px"]["center"] == pytest.approx([80, 60], abs=1.5)
    assert not any("orients" in n for n in record["read_notes"] or [])


def test_a_mask_whose_own_pixel_size_is_implausible_is_measured_at_its_sweep_s_and_said(tmp_path, capsys):
    """A mask whose header says 0.03 mm per pixel (its sweep's 0.3 mm written in cm as mm) beside
    a sweep of 0.3 mm was measured at the sweep's size without a word that the two files disagree."""
    frames = np.full((2, 120, 160), 60, np.uint8)
    calibrated = sitk.GetImageFromArray(frames)
    calibrated.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(calibrated, str(tmp_path / "sweep.mha"))
    masks = np.zeros((2, 120, 160), np.uint8)
    cv2.ellipse(masks[1], (80, 60), (40, 30), 0, 0, 360, 1, -1)
    mask = _write(tmp_path, masks, "mask.mha", spacing=0.03)
    assert main(["ac", str(mask), "--sweep", str(tmp_path / "sweep.mha"), "--no-fov", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["spacing_mm"] == [0.3, 0.3] and record["spacing_source"] == "its sweep's file header"
    assert record["ac_mm"] == pytest.approx(ac_of((40, 30), 0.3), rel=0.02)
    said = [n for n in record["read_notes"] or [] if "0.03 x 0.03 mm" in n]
    assert said and "implausible" in said[0] and "in cm, written as mm" in said[0] and "not used" in said[0], record
    assert main(["ac", str(mask), "--sweep", str(tmp_path / "sweep.mha"), "--no-fov"]) == 0
    assert "note: pixel spacing: the mask file's header states 0.03 x 0.03 mm per pixel" in capsys.readouterr().out
    # a mask with no pixel size of its own (1 x 1, a writer's default) takes its sweep's without a word
    plain = _write(tmp_path, masks, "plain.mha", spacing=1.0)
    assert main(["ac", str(plain), "--sweep", str(tmp_path / "sweep.mha"), "--no-fov", "--json"]) == 0
    assert not json.loads(capsys.readouterr().out)["read_notes"]
