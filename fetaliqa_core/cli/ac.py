"""``fetaliqa ac MASK``: measure the abdominal circumference on one frame of a mask file.

The measurement is the one the app and ``fetaliqa score`` use (``analysis.measure_ac``), so a
value shown there can be checked by hand against a mask exported or annotated elsewhere.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from fetaliqa_core.errors import FetalIQAError

HELP = "measure the abdominal circumference (mm) and gestational age on a mask file's frame"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mask", metavar="MASK", help="mask volume (.mha/.nii.gz...), non-zero = abdomen")
    parser.add_argument(
        "--frame", type=int, default=None, metavar="I",
        help="zero-based frame index (default: the frame with the largest labelled area)",
    )
    parser.add_argument(
        "--spacing", type=float, default=None, metavar="MM",
        help="pixel spacing in mm, overriding the file's (default: from the file)",
    )
    parser.add_argument(
        "--no-fov", action="store_true",
        help="do not apply the ACOUSLIC probe's field-of-view mask (measure the whole frame)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def read_mask_volume(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """Read a mask file -> ``(N, H, W)`` array and ``(row_mm, col_mm)`` pixel spacing.

    A 2-D image is returned as one frame. Raises FetalIQAError for a missing or unreadable file.
    """
    if not path.exists():
        raise FetalIQAError(f"{path}: no such file; give the path of a mask volume (.mha)")
    if path.is_dir():
        raise FetalIQAError(f"{path}: is a folder; give the path of a mask volume file (.mha)")
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except Exception:  # SimpleITK raises RuntimeError with a multi-line C++ message
        raise FetalIQAError(
            f"{path}: not a readable image volume; give a mask saved as .mha, .nrrd or .nii.gz"
        ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise FetalIQAError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} channels; a mask has one")
    array = sitk.GetArrayFromImage(image)
    spacing = image.GetSpacing()  # (x, y[, z]) = (col, row[, frame])
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise FetalIQAError(f"{path}: expected a stack of 2-D frames, got an array of shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        array = np.rint(array)
    return array, (float(spacing[1]), float(spacing[0]))


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

    path = Path(args.mask)
    masks, spacing = read_mask_volume(path)
    if args.spacing is not None:
        if not (args.spacing > 0 and math.isfinite(args.spacing)):
            raise FetalIQAError(f"--spacing {args.spacing}: must be a positive number of millimetres")
        spacing = (float(args.spacing), float(args.spacing))
    elif not all(s > 0 and math.isfinite(s) for s in spacing):
        raise FetalIQAError(f"{path}: the file's pixel spacing {spacing} is invalid; give --spacing MM")

    index = _pick_frame(masks, args.frame, path)
    frame = masks[index]
    m = analysis.measure_ac(frame, spacing, fov=None if args.no_fov else "acouslic")
    ga = None if m is None else analysis.hadlock_ga(m.ac_mm)

    if args.json:
        record = {
            "file": str(path),
            "frame": index,
            "area_px": int(np.count_nonzero(frame)),
            "spacing_mm": list(spacing),
            "ac_mm": None if m is None else round(m.ac_mm, 3),
            "ga_weeks": None if ga is None else round(ga.weeks, 3),
            "ga_out_of_range": None if ga is None else ga.out_of_range,
            "truncated": None if m is None else m.truncated,
            "n_points": None if m is None else m.n_points,
            "ellipse": None if m is None else {"center": list(m.center), "axes": list(m.axes), "angle": m.angle},
        }
        print(json.dumps(record))
        return 0 if m is not None else 1

    if m is None:
        area = int(np.count_nonzero(frame))
        why = "the frame is empty" if area == 0 else f"the mask ({area} px) is too small or too cut off for an ellipse fit"
        print(f"frame {index}: no AC ({why})")
        return 1
    notes = []
    if ga is not None and ga.out_of_range:
        lo, hi = analysis.HADLOCK_AC_RANGE_MM
        notes.append(f"AC outside Hadlock's {lo:.0f}-{hi:.0f} mm range")
    if m.truncated:
        notes.append("outline cut by the field of view; ellipse extrapolated")
    tail = f" [{'; '.join(notes)}]" if notes else ""
    print(f"frame {index}: AC {m.ac_mm:.1f} mm (GA {ga.weeks:.1f} weeks){tail}")
    return 0
