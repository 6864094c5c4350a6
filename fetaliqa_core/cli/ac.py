"""``fetaliqa ac MASK``: measure the abdominal circumference on one frame of a mask file.

The mask is read by :func:`fetaliqa_core.io.read_mask_volume`, with the label checks of every
other mask reader (a grey image is refused), and measured as the app and ``fetaliqa score``
measure (``analysis.measure_ac``), so a value shown there can be checked by hand against a mask
exported or annotated elsewhere. Lengths are printed only with a known, plausible pixel spacing
(the file's or ``--spacing``); an AC outside the plausible range is marked doubtful.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError

HELP = "measure the abdominal circumference (mm) and gestational age on a mask file's frame"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mask", metavar="MASK", help="label volume (.mha/.nii.gz...): 0 background, 1/2 abdomen")
    parser.add_argument(
        "--frame", type=int, default=None, metavar="I",
        help="frame number, 0-based as everywhere in FetalIQA (default: the frame with the largest labelled area)",
    )
    parser.add_argument(
        "--spacing", type=float, default=None, metavar="MM",
        help="pixel spacing in mm per pixel, overriding the file's (needed when the file records none)",
    )
    parser.add_argument(
        "--no-fov", action="store_true",
        help="do not apply the ACOUSLIC probe's field-of-view mask (measure the whole frame)",
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
    areas = np.count_nonzero(masks.reshape(n, -1), axis=1)
    if not areas.any():
        raise FetalIQAError(f"{path}: no frame has a label; give --frame I or a mask with an annotation")
    return int(np.argmax(areas))


def run(args: argparse.Namespace) -> int:
    from fetaliqa_core import analysis
    from fetaliqa_core import io as fio
    from fetaliqa_core.io import spacing as fspacing

    path = Path(args.mask)
    if not path.exists():
        raise FetalIQAError(f"{path}: no such file; give the path of a mask volume (.mha)")
    volume = fio.read_mask_volume(path)
    masks = volume.labels
    spacing = tuple(volume.spacing_mm)
    problem = volume.spacing_problem
    if args.spacing is not None:
        spacing = fspacing.user_spacing(args.spacing)
        problem = None

    index = _pick_frame(masks, args.frame, path)
    frame = masks[index]
    m = analysis.measure_ac(frame, spacing, fov=None if args.no_fov else "acouslic")
    reading = analysis.read_ac(None if m is None else m.ac_mm, problem)

    if args.json:
        record = {
            "file": str(path),
            "frame": index,
            "area_px": int(np.count_nonzero(frame)),
            "spacing_mm": list(spacing) if problem is None else None,
            "spacing_problem": problem,
            "ac_mm": reading.ac_mm,
            "ac_status": reading.status,
            "ga_weeks": reading.ga_weeks,
            "ga": reading.ga_text or None,
            "note": reading.note or None,
            "truncated": None if m is None else m.truncated,
            "n_points": None if m is None else m.n_points,
            "ellipse_px": None if m is None else {"center": list(m.center), "axes": list(m.axes), "angle": m.angle},
        }
        print(json.dumps(record))
        return 0 if reading.status in (analysis.units.OK, analysis.units.DOUBTFUL) else 1

    if m is None:
        area = int(np.count_nonzero(frame))
        why = "the frame is empty" if area == 0 else f"the mask ({area} px) is too small or too cut off for an ellipse fit"
        print(f"frame {index}: no AC ({why})")
        return 1
    tail = " [outline cut by the field of view; ellipse extrapolated]" if m.truncated else ""
    print(f"frame {index}: {reading.text()}{tail}")
    return 0 if reading.status != analysis.units.NO_UNITS else 1
