"""``fetaliqa ac MASK``: measure the abdominal circumference on one frame of a mask file.

The mask is read by :func:`fetaliqa_core.io.read_mask_volume`, with the label checks of every
other mask reader (a grey image is refused), and measured as the app and ``fetaliqa score``
measure (``analysis.measure_ac``), so a value shown there can be checked by hand against a mask
exported or annotated elsewhere. Lengths are printed only with a known, plausible pixel spacing
(the file's or ``--spacing``). The mask is judged as the frame choice judges every mask
(:func:`~fetaliqa_core.analysis.frame_choice.mask_shape`, at the mask's own size, inside the field
of view the command uses, its size in mm when the spacing is known; the file has no grey levels,
so the outline is judged by its shape alone): an AC fitted to a mask that is not an abdomen's
outline, or outside the plausible range, is marked doubtful with the reason and has no GA
(:func:`~fetaliqa_core.analysis.units.read_ac`), as in ``fetaliqa score``, the viewer and reports.
A mask FetalIQA wrote (``score --challenge-output``) carries the doubt its answer had about that
frame (``io.META_AC_STATUS``: the grey levels, the classifier, a demonstration model); measured
again here it stays doubtful, and the line after the AC says what wrote it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fetaliqa_core.cli._args import shown, spacing_mm
from fetaliqa_core.errors import FetalIQAError

#: Share of a mask outside the ACOUSLIC fan above which the fan is not applied (the mask was
#: drawn on another probe's image; a cut it does not have would be extrapolated).
FOV_SPILL = 0.01
#: Share of a mask outside the field of view found in its sweep's own frames above which that
#: field of view is not applied: the mask was drawn on pixels the search left out (fluid shown pure
#: black hides the fan's edges, and a band of tissue along the fan's arc was taken for the fan: a
#: whole abdomen floating in the black was 'too small or too cut off for an ellipse fit').
OWN_FAN_SPILL = 0.5
#: ... and where the body is all the frames show (fluid pure black around it), the field of view
#: found is the body itself: a whole abdomen's outline ran along its edge all round and was 'too
#: small or too cut off'. A mask that fills this share of the field of view, along this share of
#: its outline, is that body (a fan-cut abdomen covers little of its fan).
OWN_FAN_OUTLINE = 0.8
#: Share of a mask allowed outside the convex hull of the field of view found for that hull to
#: stand for the fan (:func:`fetaliqa_core.acouslic.closed_fan`), as :data:`OWN_FAN_SPILL` for
#: the field of view itself: the hull closes a notch with a chord, short of the fan's arc across
#: it, and what of the mask lies past the chord counts as cut (its AC extrapolated, doubtful past
#: the README's shares).
#: On an independent generator's 672 masks no plain AC was then more than 3 % off (9 were on the
#: whole frame); a zoomed image filling the frame, where the whole frame was right, is doubted.
HULL_SPILL = 0.5
#: Said (as the reason an AC is doubtful) where a mask is measured on the whole frame because the
#: field of view found leaves it out and its hull does not hold it: where the fan's edge runs near
#: the outline is not known, and an outline the fan cuts reads short (an abdomen in pure-black
#: fluid reaching the fan's depth arc, 26 % of its outline past it, read 301.4 mm for 312.6, plain).
UNKNOWN_EDGE_REASON = ("not checked against the fan's edge: where it runs near the outline is not known (the "
                       "field of view found in the sweep leaves this mask out), and an outline it cuts reads short")


#: Said (as the reason an AC is doubtful) where the sweep's fan changes between frames and the mask
#: has one frame: which fan it was drawn in is not known, and a smaller one may cut it.
UNKNOWN_FAN_REASON = ("not checked against the fan's edge: the sweep's fan changes between frames and which "
                      "frame the mask was drawn on is not known, and an outline a smaller fan cuts reads short")


#: Said under every plain AC of a mask: ``ac`` checks the outline's shape (and, with the sweep, the
#: frame's grey levels round it), not that it is an abdomen's (a thorax's outline passes).
SHAPE_ONLY_CAVEAT = "the outline's shape is checked here, not what it outlines: check that the frame shows the abdomen"


#: A mask whose every pixel lies at least this far (px) from the edge of the sweep's own field of
#: view and of the image lies well inside it: a straight side there is no cut by the fan's edge.
CLEAR_OF_EDGE_PX = 5
#: Why an outline cut off straight, well inside the sweep's own fan, is doubted: whole, exactly
#: outlined abdomens pressed flat on the probe's side read "cut off straight, by an edge the
#: sweep's own fan does not have", which sent the user to look for a cut that is not there.
FLAT_SIDE_REASON = ("flattened, straight along one side, well inside the fan (the body pressed flat, as by "
                    "the probe, or outlined in part): it is no one ellipse's, so the AC may be off")


def _clear_of_edge(mask: np.ndarray, fov: np.ndarray) -> bool:
    """Whether every pixel of ``mask`` lies :data:`CLEAR_OF_EDGE_PX` or more from the edge of
    ``fov`` and of the image."""
    import cv2

    inside = np.zeros((fov.shape[0] + 2, fov.shape[1] + 2), np.uint8)
    inside[1:-1, 1:-1] = fov != 0
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[1:-1, 1:-1]
    return bool((mask != 0).any()) and float(distance[mask != 0].min()) >= CLEAR_OF_EDGE_PX


def _outline_on_edge(mask: np.ndarray, fov: np.ndarray) -> float:
    """The share of ``mask``'s outline pixels that lie on (within 2 pixels of) ``fov``'s edge."""
    import cv2

    def outline(region: np.ndarray) -> np.ndarray:
        region = (region != 0).astype(np.uint8)
        return region & ~cv2.erode(region, np.ones((3, 3), np.uint8)).astype(bool)

    own = outline(mask).astype(bool)
    if not own.any():
        return 0.0
    edge = cv2.dilate(outline(fov).astype(np.uint8), np.ones((5, 5), np.uint8)) != 0
    return float(np.count_nonzero(own & edge)) / float(np.count_nonzero(own))


HELP = "Measure the abdominal circumference (mm) and gestational age on a mask file's frame."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mask", metavar="MASK", help="label volume (.mha/.nii.gz...): 0 background, 1/2 abdomen")
    parser.add_argument(
        "--frame", type=int, default=None, metavar="I",
        help="frame number, 0-based as everywhere in FetalIQA (default: the frame with the largest area of "
             "label 1, the optimal plane; without label 1, the largest area of label 2)",
    )
    parser.add_argument(
        "--spacing", type=spacing_mm, default=None, metavar="MM|WxH",
        help="pixel spacing in mm per pixel, overriding the file's (needed when the file records none): one "
             "number for square pixels, or width x height (0.3x0.4) for pixels that are not square",
    )
    parser.add_argument(
        "--no-fov", action="store_true",
        help="do not apply the ACOUSLIC probe's field-of-view mask (measure the whole frame); it is "
             "applied only to a mask of ACOUSLIC's frame size (744 x 562) lying inside it",
    )
    parser.add_argument(
        "--sweep", default=None, metavar="SWEEP",
        help="the sweep the mask was drawn on: its own field of view (its fan) is used, so an outline "
             "cut by that fan's edge is fitted without it; its pixel size stands for the mask's (a sweep "
             "without one gives no mm: the mask file's size is named, not used; give it with --spacing), and "
             "its grey levels tell a skull's outline from an abdomen's",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _pick_frame(masks: np.ndarray, frame: int | None, path: Path) -> int:
    n = masks.shape[0]
    if frame is not None:
        if not 0 <= frame < n:
            raise FetalIQAError(
                f"{path}: frame {frame} is out of range; the file has {n} frames (0..{n - 1})"
            )
        return frame
    flat = masks.reshape(n, -1)
    areas = np.count_nonzero(flat, axis=1)
    if not areas.any():
        raise FetalIQAError(f"{path}: no frame has a label; give --frame I or a mask with an annotation")
    # ACOUSLIC's annotations mark the plane to measure on with 1 (optimal) and others with 2
    # (suboptimal): the optimal plane first, as the challenge's baseline takes it
    optimal = np.count_nonzero(flat == 1, axis=1)
    return int(np.argmax(optimal)) if optimal.any() else int(np.argmax(areas))


#: A separate piece of a frame's mask at least this share of the largest one's area is said (twins,
#: or a stray blob): the AC is the largest outline's.
OTHER_PIECE_SHARE = 0.05


def _piece_outside(frame: np.ndarray, fov: np.ndarray) -> int | None:
    """The area (px) of the largest separate piece of ``frame``'s mask (at least
    :data:`OTHER_PIECE_SHARE` of the largest piece) lying mostly outside ``fov``, or None."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((frame != 0).astype(np.uint8), connectivity=8)
    if n < 3:  # one piece: what lies outside is said by the share outside
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    inside = np.bincount(labels[fov], minlength=n)[1:]
    out = [int(a) for a, i in zip(areas, inside) if a >= OTHER_PIECE_SHARE * areas.max() and i < 0.5 * a]
    return max(out) if out else None


def _frame_notes(masks: np.ndarray, index: int, fov) -> list[str]:
    """What the user should know about the frame measured: a suboptimal plane's label where an
    optimal one exists, separate outlines of which only the largest is measured."""
    import cv2

    frame = masks[index]
    notes = []
    if (frame == 2).any() and not (frame == 1).any():
        ones = np.flatnonzero(np.count_nonzero(masks.reshape(masks.shape[0], -1) == 1, axis=1))
        notes.append(f"frame {index} is labelled 2 (a suboptimal plane) only" + (
            f"; frame(s) {', '.join(map(str, ones[:5]))}{' ...' if ones.size > 5 else ''} hold label 1, the "
            "optimal plane the AC is measured on" if ones.size else ""))
    region = frame != 0
    if fov is not None:
        region &= fov
    n, _, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    areas = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1]
    others = int((areas[1:] >= OTHER_PIECE_SHARE * areas[0]).sum()) if areas.size else 0
    if others:
        notes.append(f"the frame's mask has {others + 1} separate outlines (twins, or a stray piece): the "
                     f"largest ({int(areas[0])} px) is measured, the other(s) ({', '.join(str(int(a)) for a in areas[1:others + 1])} px) left out")
    return notes


def _mask_shape(frame: np.ndarray, fov: np.ndarray | None, spacing: tuple, problem: str | None,
                grey: np.ndarray | None = None):
    """The frame choice's verdict on ``frame``'s mask at its own size, inside ``fov`` (None: the
    whole frame), with its size and shape in mm when the pixel spacing is known and plausible
    (``problem`` None), else as a share of the field of view; with the frame's grey levels
    ``grey`` (the sweep given), its outline is judged as the frame choice judges it (a skull's
    bright ring, an outline through fluid or along no edge)."""
    from fetaliqa_core.analysis import frame_choice

    px_mm = None if problem is not None else (float(spacing[0]), float(spacing[-1]))
    return frame_choice.mask_shape(frame, fov, px_mm, grey=grey)


#: The keys of ``ac --json``'s record, in order (the same when there is nothing to measure).
_JSON_KEYS = ("file", "frame", "area_px", "spacing_mm", "spacing_source", "spacing_problem", "ac_mm",
              "ac_status", "ga_weeks", "ga", "note", "mask_plausible", "mask_problem", "truncated",
              "n_points", "ellipse_px", "field_of_view", "field_of_view_note", "written_by",
              "recorded_doubt", "read_notes", "frame_notes", "caveat")


def run(args: argparse.Namespace) -> int:
    from fetaliqa_core import analysis
    from fetaliqa_core import io as fio
    from fetaliqa_core.analysis.ac import STRAIGHT_CUT_RATIO, resolve_fov, straight_cut
    from fetaliqa_core.io import spacing as fspacing
    from fetaliqa_core.io._common import spacing_text

    path = Path(args.mask)
    if not path.exists():  # (a link that loops or leads nowhere is named so, as score names it)
        from fetaliqa_core.paths import missing_path

        raise FetalIQAError(missing_path(path, "Give the path of a mask volume (.mha, .nrrd, .nii.gz or DICOM)."))
    volume = fio.read_mask_volume(path, binary_255=True)  # only the outline counts here
    masks = volume.labels
    spacing = tuple(volume.spacing_mm)
    if args.sweep is not None and Path(args.sweep).is_file():
        # a mask whose header says it is stored flipped against its sweep: laid on it the sweep's way
        masks, turned, swapped = fio.orient_like(masks, path, Path(args.sweep))
        if swapped:
            spacing = (spacing[1], spacing[0])
        if turned:
            volume.notes.append(turned)
    problem = volume.spacing_problem
    source = volume.spacing_source
    recorded_spacing = " ".join(volume.metadata.get(fio.META_SPACING, "").split())
    # a mask FetalIQA wrote says where its sweep's spacing came from
    of_sweep = args.spacing is None and problem is None and recorded_spacing.startswith(fio.META_SPACING_OF_SWEEP)
    # what the files state of the pixel, for a spacing given with --spacing: the mask's own here, its sweep's below
    stated = (spacing, source) if problem is None and source != fio.SPACING_NONE else (None, source)
    if args.spacing is not None:
        spacing = fspacing.user_spacing(args.spacing)
        problem, source = None, fio.SPACING_FROM_USER  # as `score --spacing` records it
    elif of_sweep:
        source = recorded_spacing[len(fio.META_SPACING_OF_SWEEP):]
    elif recorded_spacing.startswith(fio.META_SPACING_UNKNOWN):
        # FetalIQA wrote this mask from a sweep without a usable pixel size: its header's spacing
        # only repeats the sweep's (1 x 1 when there was none); the reason is the sweep's
        problem = recorded_spacing[len(fio.META_SPACING_UNKNOWN):].replace(
            "the file records", "its sweep's file records", 1)
        source = fio.SPACING_NONE

    writer = " ".join(volume.metadata.get(fio.META_SOURCE, "").split())
    if args.frame is None and not masks.any():
        # nothing to measure: an answer of its own (JSON too, for the scripts that read it)
        why = (f"{path}: the answer that wrote this mask chose no frame (-1): it found no abdomen "
               "to measure, so the mask is empty"
               if volume.metadata.get(fio.META_AC_STATUS, "").strip() == "none" else
               f"{path}: no frame has a label; give --frame I or a mask with an annotation")
        if not args.json:
            raise FetalIQAError(why)
        print(json.dumps(dict.fromkeys(_JSON_KEYS) | {
            "file": str(path), "area_px": 0, "ac_status": analysis.units.NONE, "note": why,
            "written_by": writer or None}))
        return 1
    sweep = None
    change_note, fan_unknown = "", False
    if args.sweep is not None:
        # both headers state their frames: a sweep of another count is refused before its pixels
        # are read (a 34 MB file declaring 19,000 frames was read, 7.8 GB over 92 s, to say so)
        header_frames = fio.stated_frames(Path(args.sweep))
        if header_frames is not None:
            _refuse_other_frame_count(Path(args.sweep), header_frames, masks.shape[0])
        sweep = fio.load_sweep(Path(args.sweep)).in_memory()
        masks = fio.crop_like(masks, sweep)  # a mask drawn on the scanner's whole screen, cut as its frames are
    index = _pick_frame(masks, args.frame, path)
    frame = masks[index]
    from fetaliqa_core.acouslic import FRAME_SHAPE

    # the ACOUSLIC probe's fan belongs to its frames' size; another size is another probe's image
    fov = None if args.no_fov or tuple(frame.shape) != FRAME_SHAPE else resolve_fov("acouslic", frame.shape)
    fov_name = "acouslic" if fov is not None else "whole frame"
    if sweep is not None:
        _check_fits(sweep, Path(args.sweep), masks.shape)
    given_note = ""
    if args.spacing is not None:
        # one value where the pixels are said not to be square would make them square: refused
        if sweep is not None and (sweep.spacing_known or sweep.pixel_aspect is not None):
            stated = (tuple(sweep.spacing_mm) if sweep.spacing_known else None, sweep.spacing_source)
        spacing, given_note = fspacing.given_spacing(args.spacing, stated[0], stated[1],
                                                     None if sweep is None else sweep.pixel_aspect,
                                                     "given with --spacing", "sweep" if sweep is not None else "mask")
    if sweep is not None and not args.no_fov:
        from fetaliqa_core import acouslic
        from fetaliqa_core.analysis.assessment import FANS_OF_RUNS

        found = acouslic.sweep_fov(sweep)  # ACOUSLIC's own mask where the sweep's fan is that probe's
        change = None if isinstance(found, str) else acouslic.fan_change(sweep)
        changes = "the sweep's fan changes between frames (its depth or width was changed while scanning)"
        if change is not None and masks.shape[0] != sweep.n_frames:
            # a mask of one frame: which run of frames, and so which fan, it was drawn on is not known
            change_note = (f"{changes}, and which frame this mask was drawn on is not known: measured in the "
                           "union of the frames' fans, so a cut by a smaller one is not known")
            fan_unknown = True
            change = None
        if change is not None:
            # the fan changes between frames (a depth shortened while scanning): the frame is measured
            # in the fan of the frames like it, as score measures it (in the deep fan of the others, an
            # abdomen cut by the short fan's depth arc read whole, up to 3.8 % short, with a GA)
            run = change.run_of(index)
            first, last = change.frames_of(run, sweep.n_frames)
            part = "all" if change.fans[run] is found else "less"
            change_note = (f"{changes}: frames {first}-{last} show {part} of it, and this frame is measured in "
                           "their fan")
            found = change.fans[run]
        fov = resolve_fov(found, frame.shape)
        fov_name = ("acouslic" if isinstance(found, str) else
                    "the sweep's own fan" if change is None else FANS_OF_RUNS)
    fov_note = ""
    edge_unknown = False
    if fov is not None and frame.any() and fov_name == "acouslic":
        outside = 1.0 - np.count_nonzero(frame[fov]) / np.count_nonzero(frame)
        if outside > FOV_SPILL:
            # an ACOUSLIC annotation lies inside the probe's fan: this mask was drawn on another one
            fov, fov_name, fov_note = None, "whole frame", (
                f"{outside:.0%} of the mask lies outside the ACOUSLIC field of view: measured on the whole "
                "frame (another probe's image)")
    elif fov is not None and frame.any() and fov.shape == frame.shape:
        outside = 1.0 - np.count_nonzero(frame[fov]) / np.count_nonzero(frame)
        from fetaliqa_core.acouslic import closed_fan

        closed = closed_fan(fov) if outside > OWN_FAN_SPILL else None
        if closed is not None and 1.0 - np.count_nonzero(frame[closed]) / np.count_nonzero(frame) <= HULL_SPILL:
            # the mask lies in a notch of the fan found (black fluid reaching its edge): measured in the
            # fan closed over it, so an outline its edge cuts is fitted without the cut
            fov, fov_name, fov_note = closed, "the sweep's own fan, closed", (
                f"{outside:.0%} of the mask lies outside the field of view found in the sweep's frames (fluid "
                "shown pure black reaching the fan's edge is left out of it): measured in that field of view "
                "closed over the fluid (its convex hull), where the fan's edge runs")
        elif outside > OWN_FAN_SPILL:
            fov, fov_name, fov_note = None, "whole frame", (
                f"{outside:.0%} of the mask lies outside the field of view found in the sweep's frames (where "
                "fluid is shown pure black the fan's edges cannot be seen): measured on the whole frame, so a "
                "cut by the fan's edge is not known")
            edge_unknown = True
        elif (piece := _piece_outside(frame, fov)) is not None:
            # twins in fluid shown pure black: the field of view found held one body (and what
            # touches it), the other outline lay outside it and was left out without a word, the
            # AC plain (the same mask read "fragmented" where the fluid showed)
            fov, fov_name, fov_note = None, "whole frame", (
                f"a separate outline of the mask ({piece} px) lies outside the field of view found in the "
                "sweep's frames (where fluid is shown pure black the fan's edges cannot be seen): measured on "
                "the whole frame, so a cut by the fan's edge is not known")
            edge_unknown = True
        elif (np.count_nonzero(frame[fov]) >= OWN_FAN_OUTLINE * np.count_nonzero(fov)
              and _outline_on_edge(frame, fov) > OWN_FAN_OUTLINE):
            fov, fov_name, fov_note = None, "whole frame", (
                "the field of view found in the sweep's frames is this outline itself (a body in fluid shown "
                "pure black, no edge of the fan to be seen): measured on the whole frame, so a cut by the fan's "
                "edge is not known")
    if change_note:
        fov_note = "; ".join(t for t in (change_note, fov_note) if t)
    region_note = ""
    if sweep is not None and args.spacing is None:
        # the sweep's calibration stands for its mask's: a mask file's pixel size may be a writer's;
        # where the sweep's image regions state different sizes, that of the region holding the outline
        inside = frame != 0
        if isinstance(fov, np.ndarray) and fov.shape == frame.shape:
            inside = inside & fov
        sweep_spacing, sweep_problem, region_note = sweep.outline_spacing(inside)
        regional = sweep_problem is not None and sweep.spacing_problem is None  # the outline's region's, not the sweep's
        sweep_source = sweep.spacing_source + (", the region holding the outline" if region_note else "")
        given_for_it = of_sweep and source.strip() == fio.SPACING_FROM_USER  # score --spacing wrote it: that stands
        # (never plain "file header" for the mask's: read beside a sweep, that is taken for the sweep's)
        mask_source = "the mask file's header" if source == fio.SPACING_FROM_HEADER else source
        if (sweep_problem is None and problem is None and not given_for_it
                and not fspacing.same_pixel_size(spacing, sweep_spacing)):
            source, problem = fio.SPACING_NONE, fspacing.problem(spacing, fio.SPACING_NONE, (
                f"the mask's pixel size, {spacing_text(spacing)} ({mask_source}), and its sweep's, "
                f"{spacing_text(sweep_spacing)} ({sweep_source}), disagree: one of them is wrong"))
        elif sweep_problem is None and problem is not None:
            if source != fio.SPACING_NONE and not fspacing.is_plausible(spacing):
                # the mask's header states a size of its own, one no obstetric scan has (0.03 mm: the
                # sweep's numbers in cm written as mm): the two files disagree, which was not said
                in_cm = fspacing.same_pixel_size(tuple(10.0 * v for v in spacing), sweep_spacing)
                volume.notes.append(
                    f"pixel spacing: the mask file's header states {spacing_text(spacing)} per pixel, implausible for "
                    "obstetric ultrasound" + (" (its sweep's size in cm, written as mm?)" if in_cm else "")
                    + f", and is not used: measured at its sweep's {spacing_text(sweep_spacing)} ({sweep_source})")
            spacing, problem, source = sweep_spacing, None, f"its sweep's {sweep_source}"
        elif sweep_problem is not None and not given_for_it:
            # no usable pixel size where the outline lies: the sweep's reason is the one to act on (its
            # calibration stands for its mask's; the mask file's header often only holds a writer's
            # default or a template's size, e.g. ACOUSLIC's 0.28 mm, and is not taken in its place)
            mask_states = problem is None and not of_sweep
            problem = sweep_problem if regional else (
                sweep_problem.replace("pixel spacing unknown (", "pixel spacing unknown (its sweep: ", 1)
                if sweep_problem.startswith("pixel spacing unknown (") else f"its sweep's {sweep_problem}")
            if mask_states:
                example = (f"{spacing[1]:g}" if fspacing.is_square(spacing) else f"{spacing[1]:g}x{spacing[0]:g}")
                problem += (f" The mask file's header states {spacing_text(spacing)} per pixel, which is not used (a "
                            f"mask writer often leaves a template's or its own default size there): if it is the "
                            f"sweep's, give it with --spacing {example}.")
            source = fio.SPACING_NONE
        elif (sweep_problem is None and problem is None and not given_for_it and not of_sweep
              and sweep_source != source):
            # the two agree: the sweep's calibration is named (a DICOM region's, say), the mask's beside it
            source = f"its sweep's {sweep_source}; the mask's {source} agrees"
            spacing = sweep_spacing if region_note else spacing
        if problem is not None:
            region_note = ""
    elif sweep is not None and sweep.region_calibrations:
        # a size given for every pixel of a sweep whose image regions the file calibrates differently:
        # what it replaces is the size the file gives where the outline lies (the largest region's was
        # named, and 0.3 mm given for an outline in a 0.6 mm inset, half its length, was not said; where
        # the regions are of like size, and so the sweep's size unknown, nothing was)
        inside = frame != 0
        if isinstance(fov, np.ndarray) and fov.shape == frame.shape:
            inside = inside & fov
        there, _, _ = fspacing.outline_spacing(sweep.region_calibrations, tuple(sweep.spacing_mm), inside)
        if there is not None:
            given_note = fspacing.given_spacing(args.spacing, there, f"{fio.SPACING_FROM_US_REGION}, the region "
                                                "holding the outline", None, "given with --spacing", "sweep")[1]
        else:
            given_note = (f"given with --spacing for every pixel: the file gives no one size where the outline lies "
                          f"(its image regions are calibrated at {fspacing.regions_text(sweep.region_calibrations)})")
    # what reading the sweep found (pixels that hold no number make part of its fan unknown)
    sweep_notes = [] if sweep is None else [n for n in sweep.read_notes
                                            if args.spacing is None or not n.startswith("pixel spacing:")]
    grey = None
    if sweep is not None and masks.shape[0] != sweep.n_frames:
        # a mask of one frame: the sweep's fan holds for every frame, but which frame's grey levels
        # it was drawn on is not known
        sweep_notes.append(f"the mask has one frame and the sweep {sweep.n_frames}: measured in the sweep's "
                           "fan, without the checks against the frame's grey levels (a skull's ring among them)")
    elif sweep is not None and index < sweep.n_frames:
        candidate = np.asarray(sweep.frames[index])
        grey = candidate if candidate.dtype == np.uint8 and candidate.shape == frame.shape else None
    # fitted in pixels when the spacing is not usable (no mm is shown then): a spacing of 1e308 mm
    # overflowed the fit in mm, which then blamed the mask for the spacing's fault
    m = analysis.measure_ac(frame, spacing if problem is None else (1.0, 1.0), fov=fov)
    shape = None if m is None else _mask_shape(frame, fov, spacing, problem, grey)
    mask_problem = None if shape is None else shape.problem
    cut = None if m is None else straight_cut(frame, fov)
    if (mask_problem is None or shape.plausible) and cut is not None and cut >= STRAIGHT_CUT_RATIO:
        # (before a flattened side: the straight cut says more, and what to do)
        # an edge the field of view used does not know: the body may go on past it
        where = {"acouslic": "ACOUSLIC's fan", "whole frame": "the whole frame"}.get(fov_name, fov_name)
        mask_problem = f"cut off straight, by an edge {where} does not have" + (
            "" if args.sweep is not None else "; give the sweep with --sweep")
        if (sweep is not None and isinstance(fov, np.ndarray) and fov_name != "whole frame"
                and _clear_of_edge(frame, fov)):
            # the sweep's own fan is known (ACOUSLIC's too, found in the sweep's frames), and the
            # outline keeps clear of its edges: no edge of it cut the body there (a body pressed flat
            # by the probe read as cut; on ACOUSLIC's fan `score` said flattened where this said cut)
            mask_problem = FLAT_SIDE_REASON
    if mask_problem is None and edge_unknown and m is not None and problem is None:
        mask_problem = UNKNOWN_EDGE_REASON
    if mask_problem is None and fan_unknown and m is not None and problem is None:
        mask_problem = UNKNOWN_FAN_REASON
    frame_notes = _frame_notes(masks, index, fov)
    recorded = _recorded_doubt(volume.metadata, masks, index)
    reading = analysis.read_ac(None if m is None else m.ac_mm, problem, mask_problem, model_doubt=recorded)

    if args.json:
        record = {
            "file": str(path),
            "frame": index,
            "area_px": int(np.count_nonzero(frame)),
            "spacing_mm": list(spacing) if problem is None else None,
            "spacing_source": source if problem is None else None,
            "spacing_problem": problem,
            "ac_mm": reading.ac_mm,
            "ac_status": reading.status,
            "ga_weeks": reading.ga_weeks,
            "ga": reading.ga_text or None,
            "note": reading.note or (_why_no_ac(frame, masks, writer) if m is None else None),
            # the frame choice's verdict (a pinched or flattened outline is plausible, its AC doubtful);
            # an outline cut off straight is not taken for a whole one
            "mask_plausible": None if shape is None else bool(shape.plausible) and not (cut is not None
                                                                                     and cut >= STRAIGHT_CUT_RATIO),
            "mask_problem": mask_problem,
            "truncated": None if m is None else m.truncated,
            "n_points": None if m is None else m.n_points,
            "ellipse_px": None if m is None else {"center": list(m.center), "axes": list(m.axes), "angle": m.angle},
            "field_of_view": fov_name,
            "field_of_view_note": fov_note or None,
            "written_by": writer or None,
            "recorded_doubt": recorded,
            "read_notes": list(volume.notes) + [f"sweep: {n}" for n in sweep_notes]
            + ([f"pixel spacing {given_note}"] if given_note else [])
            + ([f"pixel spacing: {region_note}"] if region_note else []) or None,
            "frame_notes": frame_notes or None,
            # (the line the text output prints under a plain AC: scripts read only this record)
            "caveat": SHAPE_ONLY_CAVEAT if reading.status == analysis.units.OK and not writer else None,
        }
        print(json.dumps(record))
        return 0 if reading.status in (analysis.units.OK, analysis.units.DOUBTFUL) else 1

    if m is None:
        print(f"frame {index}: no AC ({shown(_why_no_ac(frame, masks, writer))})")
        return 1
    cut_note = analysis.extrapolated_note(m, fov)
    tail = f" [{cut_note}]" if cut_note else ""
    from_where = {(False, fio.SPACING_FROM_USER): given_note or "given with --spacing",
                  (True, fio.SPACING_FROM_USER): "given for its sweep with --spacing",
                  (True, fio.SPACING_GIVEN): "given with its sweep"}.get(
        (of_sweep, source), f"the sweep's {source}" if of_sweep else source)
    fov_words = {"acouslic": "; in ACOUSLIC's fan", "whole frame": "; on the whole frame"}.get(
        fov_name, f"; in {fov_name}")
    units = "" if problem is not None else (
        f" (pixel {spacing_text(spacing)}, {from_where}{fov_words})")
    both = sweep is not None and sweep.pixel_aspect is not None  # (pixels said not to be square)
    hint = "" if reading.status != analysis.units.NO_UNITS or "--spacing" in (problem or "") else (
        " Give both sizes with --spacing WxH (width x height)." if both else " Give it with --spacing MM.")
    print(shown(f"frame {index}: {reading.text()}{tail}{units}{hint}"))  # (texts from the file's header)
    notes = [n for n in volume.notes if args.spacing is None or not n.startswith("pixel spacing:")]
    notes += [f"the sweep: {n}" for n in sweep_notes] + frame_notes
    notes += [f"pixel spacing: {region_note}"] if region_note else []
    if recorded and recorded not in reading.note:
        # the outline's own doubt is named first above; the answer's (the classifier's word, the
        # models' provenance) is the one `score` and the window gave for this frame: said too
        notes.append(recorded)
    for note in notes + ([fov_note] if fov_note else []):
        print(shown(f"note: {note}"))
    if writer:
        print(f"mask written by {shown(writer)}")
    elif reading.status == analysis.units.OK:
        print(f"note: {SHAPE_ONLY_CAVEAT}" + ("" if args.sweep is not None else "; give the sweep with --sweep to "
                                                                          "check it against the frame"))
    if reading.status == analysis.units.OK and fov_name == "acouslic" and args.sweep is None:
        print("note: measured in ACOUSLIC's fan: for a mask drawn on another probe's image, give that sweep "
              "with --sweep (an outline cut by its fan's edge measures short)")
    elif reading.status == analysis.units.OK and fov_name == "whole frame" and args.sweep is None and not args.no_fov:
        # (a straight cut is seen in the outline alone; one along a fan's curved edge is not)
        print("note: measured on the whole frame: whether the fan's edge cuts the outline is known only from the "
              "sweep: give it with --sweep (an outline cut by a fan's curved edge measures short)")
    return 0 if reading.status != analysis.units.NO_UNITS else 1


def _check_fits(sweep, path: Path, shape: tuple[int, ...]) -> None:
    """That ``sweep`` (read from ``path``) is the one the mask was drawn on, as far as its shape
    tells: ``shape``, the mask's (frames, height, width). A mask of another frame count is of
    another sweep (its frame I is not the sweep's frame I, and the checks against the image, a
    skull's ring among them, would look at the wrong frame); one of one frame is let pass."""
    n, h, w = shape
    if (sweep.height, sweep.width) != (h, w):
        raise FetalIQAError(f"{path}: the sweep's frames are {sweep.width} x {sweep.height} pixels, the mask's "
                            f"{w} x {h}: give the sweep the mask was drawn on")
    _refuse_other_frame_count(path, sweep.n_frames, n)


def _refuse_other_frame_count(path: Path, frames: int, n: int) -> None:
    """A sweep of ``frames`` frames (read from ``path``, or stated by its header) for a mask of
    ``n``: refused, unless the mask has one frame (see :func:`_check_fits`)."""
    if frames != n and n != 1:
        raise FetalIQAError(f"{path}: the sweep has {frames} frame(s), the mask {n}: a mask's frame I is "
                            "its sweep's frame I, so give the sweep the mask was drawn on (or leave out --sweep)")


def _why_no_ac(frame: np.ndarray, masks: np.ndarray, writer: str) -> str:
    area = int(np.count_nonzero(frame))
    if area == frame.size:  # (was "too small or too cut off" for a mask of every pixel)
        return f"the mask fills the whole frame ({area} px): it outlines nothing to fit an ellipse to"
    if area:
        return f"the mask ({area} px) is too small or too cut off for an ellipse fit"
    labelled = np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1))
    if writer and labelled.size == 1:  # the challenge's mask: the answer's frame alone
        return (f"the frame is empty: this mask holds the answer's chosen frame {int(labelled[0])} only; "
                "the other frames' masks are not written")
    return "the frame is empty"


def _recorded_doubt(metadata: dict[str, str], masks: np.ndarray, index: int) -> str | None:
    """The doubt a mask FetalIQA wrote carries about the AC on its frame (its answer saw the
    frame's grey levels, the classifier, the models' provenance; a mask alone shows none of
    them), when ``index`` is that frame: the mask's only labelled frame. None otherwise."""
    from fetaliqa_core import io as fio

    if metadata.get(fio.META_AC_STATUS, "").strip().lower() != "doubtful":
        return None
    labelled = np.flatnonzero(masks.reshape(masks.shape[0], -1).any(axis=1))
    if labelled.size != 1 or int(labelled[0]) != index:
        return None
    note = " ".join(metadata.get(fio.META_AC_NOTE, "").split())
    return "the answer that wrote this mask doubted it" + (f": {note}" if note else "")
