"""A sweep whose fan changes between frames (a display depth shortened while scanning, frames of
two settings joined): each frame is measured in the fan of the frames like it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import SimpleITK as sitk

from fetaliqa_core import acouslic
from fetaliqa_core.cli import main

H, W = 480, 640  # (not ACOUSLIC's frame size: the sweep's own fan is its field of view)
APEX = (320, -60)
DEEP, SHORT = 530, 420  # the fan's depth arcs, px from the apex: frames 8-15 show the shorter
N, CHANGE = 16, 8
BODY = ((320, 330), (80, 65))  # the abdomen: whole in the deep fan, cut by the short fan's arc
SPACING = 0.3


def _sector(depth: int) -> np.ndarray:
    y, x = np.mgrid[:H, :W]
    r = np.hypot(x - APEX[0], y - APEX[1])
    angle = np.degrees(np.arctan2(x - APEX[0], y - APEX[1]))
    return (r >= 120) & (r <= depth) & (np.abs(angle) <= 35)


def _sweep(change: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (N, H, W), the exact abdomen masks (the body's ellipse inside each frame's fan) and
    each frame's fan: speckled tissue, the body in a ring of fluid shown pure black, and from
    frame CHANGE on (when ``change``) the fan shortened and the gain lowered."""
    rng = np.random.default_rng(seed)
    body = np.zeros((H, W), np.uint8)
    cv2.ellipse(body, BODY[0], BODY[1], 0, 0, 360, 1, -1)
    ring = np.zeros((H, W), np.uint8)
    cv2.ellipse(ring, BODY[0], (BODY[1][0] + 14, BODY[1][1] + 14), 0, 0, 360, 1, -1)
    frames = np.zeros((N, H, W), np.uint8)
    masks = np.zeros((N, H, W), np.uint8)
    fans = np.zeros((N, H, W), bool)
    for i in range(N):
        short = change and i >= CHANGE
        fan = _sector(SHORT if short else DEEP)
        tissue = rng.integers(30, 200, (H, W)).astype(np.float32)
        tissue[ring != 0] = 0  # fluid shown pure black around the body
        tissue[body != 0] = rng.integers(60, 230, int(body.sum()))
        frames[i] = np.where(fan, tissue * (0.7 if short else 1.0), 0).astype(np.uint8)
        masks[i] = (body != 0) & fan
        fans[i] = fan
    return frames, masks, fans


def _as_sweep(frames: np.ndarray):
    n, h, w = frames.shape
    return SimpleNamespace(frames=frames, n_frames=n, height=h, width=w, spacing_mm=(SPACING, SPACING))


def test_a_fan_shortened_mid_sweep_gives_each_run_of_frames_its_own_field_of_view():
    """The field of view was the union of what all frames show: frames whose fan was shortened mid-
    sweep were measured in the deep fan of the others, 110 000 pixels beyond their own depth arc.
    Each run of frames now has its own fan."""
    frames, _, fans = _sweep()
    sweep = _as_sweep(frames)
    union = acouslic.sweep_fov(sweep)
    assert isinstance(union, np.ndarray) and (union & ~fans[CHANGE]).sum() > 20000  # the deep fan
    change = acouslic.fan_change(sweep)
    assert change is not None and change.starts == [0, CHANGE]
    for i in (0, CHANGE - 1, CHANGE, N - 1):
        own = acouslic.frame_fov(sweep, i)
        # (within 2 px of the shortened arc: a band left out where a mark may lie across it)
        assert (own != fans[i]).sum() < 0.015 * fans[i].sum(), i
    assert acouslic.frame_fov(sweep, 0) is union  # the deep frames show all of it


def test_a_fan_that_does_not_change_keeps_one_field_of_view():
    """A far field that fades in every frame, the gain changed mid-sweep, or fluid shown pure black
    reaching the fan's edge in half of the frames is no fan change: each frame keeps the sweep's
    field of view (a smaller one would turn a whole outline into a cut one)."""
    frames, _, _ = _sweep(change=False)
    assert acouslic.fan_change(_as_sweep(frames)) is None
    gain = frames.copy()
    gain[CHANGE:] = (gain[CHANGE:] * 0.5).astype(np.uint8)
    assert acouslic.fan_change(_as_sweep(gain)) is None
    rng = np.random.default_rng(5)
    y, x = np.mgrid[:H, :W]
    far = np.hypot(x - APEX[0], y - APEX[1]) > SHORT
    faded = frames.copy()  # beyond the short depth, sparse specks in a black far field, every frame
    faded[:, far] = np.where(rng.random((N, int(far.sum()))) < 0.25, faded[:, far], 0)
    assert acouslic.fan_change(_as_sweep(faded)) is None
    fluid = frames.copy()  # a pocket of fluid over the fan's lower left corner in frames 8-15
    pocket = np.zeros((H, W), np.uint8)
    cv2.circle(pocket, (60, 440), 150, 1, -1)
    fluid[CHANGE:, pocket != 0] = 0
    assert acouslic.fan_change(_as_sweep(fluid)) is None


def test_an_abdomen_cut_by_a_fan_shortened_mid_sweep_is_measured_as_cut_by_ac_and_score(tmp_path, capsys):
    """The abdomen, whole in the deep frames, cut by the shortened fan's depth arc in the others,
    was measured in the deep fan: the cut read as outline, a plain AC 3-4 % short with a GA (`ac
    --sweep`, and the answer of `score` and the window alike). It is now measured in its own
    frame's fan, by both: the cut is known (extrapolated, doubtful, no GA), and the whole outline
    of a deep frame is measured as before; a mask of one frame, whose fan is not known, is doubtful."""
    frames, masks, _ = _sweep()
    sweep_path, mask_path = tmp_path / "sweep.mha", tmp_path / "mask.mha"
    for path, arr in ((sweep_path, frames), (mask_path, masks)):
        image = sitk.GetImageFromArray(arr)
        image.SetSpacing((SPACING, SPACING, 1.0))
        sitk.WriteImage(image, str(path), True)
    whole = None
    for frame in (2, CHANGE + 2):
        assert main(["ac", str(mask_path), "--sweep", str(sweep_path), "--frame", str(frame), "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        note = record["field_of_view_note"]
        assert record["field_of_view"] == "the fan of its run of frames" and "changes between frames" in note
        if frame < CHANGE:
            whole = record
            assert record["truncated"] is False and "frames 0-7 show all of it" in note
        else:
            assert "frames 8-15 show less of it" in note
            assert record["truncated"] is True and record["ga"] is None, record
            assert record["ac_status"] == "doubtful"
    # a mask of one frame: which fan it was drawn in is not known, and the AC is doubtful for it
    one = tmp_path / "one.mha"
    image = sitk.GetImageFromArray(masks[CHANGE + 2:CHANGE + 3])
    image.SetSpacing((SPACING, SPACING, 1.0))
    sitk.WriteImage(image, str(one), True)
    assert main(["ac", str(one), "--sweep", str(sweep_path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ac_status"] == "doubtful" and record["ga"] is None, record
    assert "which frame this mask was drawn on is not known" in record["field_of_view_note"]
    # the score path: the frame measured in its own fan (assess's and the window's measure)
    from fetaliqa_core.analysis.ac import measure_frame_ac
    from fetaliqa_core.io import load_sweep
    from fetaliqa_core.preprocess import preprocess_masks

    model = preprocess_masks(masks).numpy()
    results = SimpleNamespace(mask=lambda i: model[i])
    sweep = load_sweep(sweep_path)
    cut = measure_frame_ac(sweep, results, CHANGE + 2)
    assert cut.truncated is True
    deep = measure_frame_ac(sweep, results, 2)
    assert deep.truncated is False and abs(deep.ac_mm - whole["ac_mm"]) < 0.02 * whole["ac_mm"]
    # and the frame choice judges the outline in the same fan: cut there, whole in the deep frames
    from fetaliqa_core.analysis.assessment import mask_shapes

    shapes = mask_shapes(sweep, SimpleNamespace(mask=lambda i: model[i], mask_size=model.shape[-1]))
    assert shapes[CHANGE + 2].in_fan < 0.9 and shapes[2].in_fan > 0.99


def test_a_review_report_measures_each_thumbnail_in_its_own_frame_s_fan():
    """The review report's thumbnails were measured in the union of the frames' fans: an abdomen
    the shortened fan cut read whole there, a plain AC 3.8 % short in the report's caption, where
    the window, `score` and `ac` measure it cut."""
    from fetaliqa_core.review import report

    frames, masks, _ = _sweep()
    view = _as_sweep(frames)
    record = SimpleNamespace(spacing_mm=(SPACING, SPACING))
    cut, fov = report._thumbnail_ac(masks[CHANGE + 2], frames, record, view, CHANGE + 2)
    assert cut.truncated is True and fov is acouslic.frame_fov(view, CHANGE + 2)
    whole, _ = report._thumbnail_ac(masks[2], frames, record, view, 2)
    assert whole.truncated is False
