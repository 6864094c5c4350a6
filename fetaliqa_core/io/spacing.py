"""Pixel spacing: where it came from, whether it is known, whether it is plausible.

A length in millimetres (and the gestational age derived from it) is only as good as the pixel
spacing. Many files carry none: ITK, NIfTI and NRRD writers record exactly 1 x 1 mm per pixel
when they were given nothing, and a DICOM ultrasound image keeps its calibration in the
Sequence of Ultrasound Regions (Physical Delta X/Y), which general image readers ignore. So:

* a DICOM file's calibration is read here with pydicom from the Sequence of Ultrasound Regions
  (units must be cm; the largest calibrated 2-D tissue region is used, never a colour-flow box or a
  grey bar beside it, and where regions state
  different sizes an outline is measured at that of the region holding it: :func:`outline_spacing`), else from Pixel Spacing
  (0028,0030) or an enhanced object's shared Pixel Measures; with neither, the spacing is unknown;
* any other file's spacing is known when its header records one other than exactly 1 x 1 mm
  (the value writers put when none was known);
* a known spacing is *plausible for obstetric ultrasound* when both values lie in
  :data:`PLAUSIBLE_SPACING_MM` (0.05-1.0 mm per pixel, 1.0 excluded): 0.05 mm is a 25 mm field
  of view on 500 pixels (a high-frequency probe, finer than any obstetric scan), and 1.0 mm would
  put a 25 cm deep obstetric field on only 250 pixels. ACOUSLIC-AI is 0.28 mm; clinical
  abdominal scanners export 0.1-0.5 mm.

Nothing here prevents scoring a sweep; it decides whether lengths may be shown.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.io._common import (
    SPACING_FROM_DICOM_PIXEL_SPACING,
    SPACING_FROM_HEADER,
    SPACING_FROM_US_REGION,
    SPACING_FROM_USER,
    SPACING_GIVEN,
    SPACING_NONE,
    dcmread_bounded,
    spacing_text,
)

#: Plausible pixel spacing for obstetric ultrasound, mm per pixel: ``lo <= s < hi``.
PLAUSIBLE_SPACING_MM = (0.05, 1.0)
#: What image writers record when they were given no spacing.
PLACEHOLDER_SPACING_MM = 1.0

# DICOM PS3.3 C.8.5.5.1.15: Physical Units X/Y Direction code 0x0003 is centimetres.
_DICOM_UNITS_CM = 3
_DICOM_TAGS = ("SequenceOfUltrasoundRegions", "PixelSpacing", "SharedFunctionalGroupsSequence",
               "PerFrameFunctionalGroupsSequence", "Rows", "Columns", "ImagerPixelSpacing",
               "PixelAspectRatio")
# PS3.3 C.8.5.5.1.1: Region Spatial Format 1 is a 2-D tissue image (others: M-mode, Doppler, ...).
_REGION_2D = 1


#: How a spacing the user gave is named where people read it (``spacing_source`` keeps the short
#: key "user" in files written before, and in JSON and CSV).
GIVEN_BY_USER_TEXT = "given with --spacing"


def source_text(source: str, given: str = GIVEN_BY_USER_TEXT) -> str:
    """Where a spacing came from, in the words a reader sees: the file's own calibrations are named
    as they are; one the user gave is ``given`` (the command line says "given with --spacing",
    the window "set by you"), never the bare key "user"."""
    return given if source.strip() == SPACING_FROM_USER else source


def is_plausible(spacing_mm: tuple[float, float]) -> bool:
    lo, hi = PLAUSIBLE_SPACING_MM
    return all(isinstance(s, (int, float)) and math.isfinite(s) and lo <= s < hi for s in spacing_mm)


def is_placeholder(spacing_mm: tuple[float, float]) -> bool:
    return all(s == PLACEHOLDER_SPACING_MM for s in spacing_mm)


def classify_header_spacing(spacing_mm: tuple[float, float], recorded: bool) -> tuple[str, str]:
    """Source and note for the spacing of a non-DICOM file: ``recorded`` is whether the header
    has a spacing field at all."""
    if not recorded:
        return SPACING_NONE, "the file records no pixel spacing"
    if is_placeholder(spacing_mm):
        return SPACING_NONE, ("the file records 1 x 1 mm per pixel, the value image writers put "
                              "when no spacing was known")
    return SPACING_FROM_HEADER, ""


def problem(spacing_mm: tuple[float, float], source: str, note: str = "") -> str | None:
    """One line saying why lengths cannot be shown, or None when they can."""
    if source == SPACING_NONE:
        why = note or "the file records no pixel spacing"
        return (f"pixel spacing unknown ({why}): lengths in mm and the gestational age are not "
                "shown. Set the pixel spacing (mm per pixel) to measure.")
    if not is_plausible(spacing_mm):
        lo, hi = PLAUSIBLE_SPACING_MM
        return (f"pixel spacing {spacing_text(spacing_mm)} ({source}) is outside {lo:g} to under {hi:g} mm per pixel, "
                "implausible for obstetric ultrasound: lengths in mm and the gestational age are "
                "not shown. Check the file's calibration or set the pixel spacing.")
    return None


def user_spacing(value: float | tuple[float, float]) -> tuple[float, float]:
    """A spacing the user typed, as ``(row_mm, col_mm)``; refused when not plausible."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value)
    try:
        row, col = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise FetalIQAError(f"pixel spacing {value!r} is not a number. Give mm per pixel, "
                            "e.g. 0.28.") from None
    lo, hi = PLAUSIBLE_SPACING_MM
    if not is_plausible((row, col)):
        shown = f"{value!r} mm" if isinstance(value, (int, float)) else spacing_text((row, col))
        raise FetalIQAError(f"pixel spacing {shown} is outside {lo:g} to under {hi:g} mm per pixel, "
                            "implausible for obstetric ultrasound. Give mm per pixel, e.g. 0.28.")
    return row, col


def parse_spacing(text: str) -> float | tuple[float, float]:
    """A pixel spacing as the user types it: one number (square pixels, mm per pixel) or two,
    width x height as the product prints them (``0.3x0.4``, ``0.3 x 0.4``): a float, or
    ``(row_mm, col_mm)``. Raises FetalIQAError for anything else; plausibility is
    :func:`user_spacing`'s. A comma is refused, not read: ``0,3`` is 0.3 written with a decimal
    comma as often as two sizes."""
    if "," in str(text):
        raise FetalIQAError(f"{str(text)[:40]!r} is not a pixel spacing: write decimals with a point (0.3) and two "
                            "sizes as width x height (0.3x0.4)")
    parts = [p.strip() for p in re.split(r"[xX×]", str(text).strip().removesuffix("mm").strip())]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2):
        raise FetalIQAError(f"{str(text)[:40]!r} is not a pixel spacing: give mm per pixel, one number for square "
                            "pixels (0.28) or width x height (0.3x0.4)")
    return numbers[0] if len(numbers) == 1 else (numbers[1], numbers[0])


#: Two sides of a pixel within this share of each other are one size (rounding of the digits).
_SQUARE_TOLERANCE = 0.01


def is_square(shape: tuple[float, float]) -> bool:
    """Whether a pixel's ``(height, width)`` (a size or proportions) is square."""
    row, col = (float(v) for v in shape)
    return abs(row - col) <= _SQUARE_TOLERANCE * max(abs(row), abs(col))


def given_spacing(value: float | tuple[float, float], stated: tuple[float, float] | None, stated_source: str,
                  aspect: tuple[float, float] | None = None, how: str = "given",
                  whose: str = "sweep") -> tuple[tuple[float, float], str]:
    """A spacing the user gives (one value: square pixels; two: ``(row_mm, col_mm)``) in place of
    what the file states: ``stated`` ``(row_mm, col_mm)`` from ``stated_source`` (None when the size
    is unknown), ``aspect`` its pixels' ``(height, width)`` proportions when only they are known
    (DICOM Pixel Aspect Ratio). Returns the spacing and a note saying what it replaced ("" when it
    replaced no calibration of the file's). One value for pixels said not to be square is refused:
    it would make them square, every length across them wrong (an AC 10 % short on 0.3 x 0.4 mm)."""
    pair = user_spacing(value)
    shape = stated if stated is not None else aspect
    if isinstance(value, (int, float)) and shape is not None and not is_square(shape):
        if stated is not None:
            said = f"{spacing_text(stated)}, {'given before' if stated_source == SPACING_FROM_USER else stated_source}"
            example = f"{stated[1]:g}x{stated[0]:g}"
        else:
            said = f"its Pixel Aspect Ratio says {_ratio_text(aspect)}"
            example = f"{float(value):g}x{float(value) * aspect[0] / aspect[1]:.3g}"
        raise FetalIQAError(f"the {whose}'s pixels are not square ({said}): one value ({float(value):g} mm) would make "
                            f"them so. Give both sizes, width x height (e.g. {example}; "
                            f"{float(value):g}x{float(value):g} for square pixels).")
    if stated is None or stated_source in (SPACING_NONE, SPACING_FROM_USER, SPACING_GIVEN):
        return pair, ""
    if all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(pair, stated)):
        return pair, ""  # (the file's own size: nothing replaced)
    return pair, f"{how}, replacing the file's {spacing_text(stated)} from its {stated_source}"


def _ratio_text(aspect: tuple[float, float]) -> str:
    return f"{aspect[0]:g}:{aspect[1]:g} (height:width)"


def pixel_aspect_ratio(ds: Any) -> tuple[float, float] | None:
    """A DICOM header's Pixel Aspect Ratio (0028,0034), vertical and horizontal, as a pixel's
    ``(height, width)`` proportions: None without one, when it is not two positive numbers, or
    when it is 1:1."""
    try:
        aspect = _pair(ds.get("PixelAspectRatio", None))
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
        return None
    return None if aspect is None or is_square(aspect) else aspect


def dicom_pixel_aspect(path: Path) -> tuple[float, float] | None:
    """:func:`pixel_aspect_ratio` of a DICOM file (None when its header cannot be read)."""
    try:
        import pydicom

        ds = dcmread_bounded(str(path), stop_before_pixels=True, force=True, specific_tags=["PixelAspectRatio"])
    except Exception:  # noqa: BLE001 - only proportions; the image reader reports a damaged header
        return None
    return pixel_aspect_ratio(ds)


def dicom_calibration_and_regions(path: Path) -> tuple[tuple[tuple[float, float] | None, str, str],
                                                        tuple[tuple[int, int, int, int], ...], tuple]:
    """From one reading of a DICOM file's header: its calibration, spacing ``(row_mm, col_mm)``,
    source and note (``(None, SPACING_NONE, note)`` when the file has neither a calibrated
    ultrasound region nor Pixel Spacing), its :func:`image_regions` and their
    :func:`region_calibrations`. Raises nothing for unreadable headers (no spacing, no regions):
    the caller's image reader reports those."""
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # declared dependency; a broken install must not stop reading pixels
        return (None, SPACING_NONE, "pydicom is not installed, so the DICOM calibration was not read"), (), ()
    try:
        # force: a file without the 128-byte preamble is common and the image reader reads it
        ds = dcmread_bounded(str(path), stop_before_pixels=True, defer_size="1 MB", force=True,
                             specific_tags=list(_DICOM_TAGS))
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, EOFError, OverflowError, NotImplementedError):
        return (None, SPACING_NONE, "the DICOM header's calibration could not be read"), (), ()
    try:
        regions = image_regions(ds, _image_size(ds))
        calibrations = region_calibrations(ds, _image_size(ds))
    except Exception:  # noqa: BLE001 - only the field of view's hint; the reader reports damage
        regions, calibrations = (), ()
    return dataset_calibration(ds), regions, calibrations


def dataset_calibration(ds: Any) -> tuple[tuple[float, float] | None, str, str]:
    """The calibration :func:`dicom_calibration_and_regions` gives, of a header pydicom has already parsed.
    A Pixel Aspect Ratio (0028,0034) beside it that gives the pixels another shape than the size
    found (4\\3 beside a Pixel Spacing of 0.3\\0.3, or 1\\1 beside region deltas of 0.03 and 0.04
    cm) makes the size unknown, as two sizes that disagree do: the header states two, and the
    square one was read plainly (every length across the pixels' height off by a third)."""
    spacing, source, note = _dataset_calibration(ds)
    if spacing is None:
        return spacing, source, note
    try:
        aspect = _pair(ds.get("PixelAspectRatio", None))  # (1\\1 too: square pixels, said so)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
        aspect = None
    if aspect is None or same_pixel_size((spacing[0] / spacing[1], 1.0), (aspect[0] / aspect[1], 1.0)):
        return spacing, source, note
    name = {SPACING_FROM_US_REGION: "its ultrasound region calibration",
            SPACING_FROM_DICOM_PIXEL_SPACING: "its Pixel Spacing"}.get(source, source)
    return None, SPACING_NONE, (f"the DICOM header gives two pixel sizes that disagree: {spacing_text(spacing)} "
                                f"({name}), {_shape_text(spacing, False)}, and {_shape_text(aspect, True)} (its "
                                "Pixel Aspect Ratio)")


def _shape_text(shape: tuple[float, float], as_written: bool) -> str:
    """A pixel's ``(height, width)`` (a size, or proportions ``as_written`` in the header) as its shape in words."""
    if is_square(shape):
        return "square pixels"
    return "pixels of " + (_ratio_text(shape) if as_written else f"{shape[0] / shape[1]:.3g}:1 (height:width)")


def _dataset_calibration(ds: Any) -> tuple[tuple[float, float] | None, str, str]:
    """:func:`dataset_calibration` before its pixels' size is checked against their Pixel Aspect Ratio."""
    try:
        regions = list(ds.get("SequenceOfUltrasoundRegions", None) or [])
        raw_spacing = ds.get("PixelSpacing", None)
        top_level = _pair(raw_spacing)
        # enhanced multi-frame objects: Pixel Measures, shared or per frame (C.7.6.16.2.1); a
        # header stating both, each its own size, states two sizes, as Pixel Spacing beside a region
        raw_shared = _shared_pixel_spacing(ds)
        shared = _pair(raw_shared)
        raw_per_frame, per_frame_note = _per_frame_pixel_spacing(ds)
        per_frame = _pair(raw_per_frame)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, EOFError, OverflowError,
            NotImplementedError, OSError):
        return None, SPACING_NONE, "the DICOM header's calibration could not be read"
    measures = shared or per_frame
    # the same header stating two pixel sizes: one of them is wrong, and which is not known here
    stated = [(top_level, "its Pixel Spacing"),
              (shared, "its shared Pixel Measures" if per_frame else "its Pixel Measures"),
              (per_frame, "every frame's Pixel Measures" if shared else "its Pixel Measures")]
    # the pixel size is that of the regions whose pixels are measured (those the frames are cut to):
    # a colour-flow box or a grey bar listed across the whole screen at another scale is not it
    measured, others = _measured_regions(regions)
    found = _region_spacing(measured, _image_size(ds))
    if found is not None and found[0] is not None:
        stated.insert(0, (found[0], "its ultrasound region calibration"))
    stated = [(value, name) for value, name in stated if value is not None]
    for value, name in stated[1:]:
        if not same_pixel_size(stated[0][0], value):
            return None, SPACING_NONE, (f"the DICOM header gives two pixel sizes that disagree: "
                                        f"{spacing_text(stated[0][0])} ({stated[0][1]}) and {spacing_text(value)} ({name})")
    if found is not None:
        return (found[0], SPACING_FROM_US_REGION, found[1]) if found[0] else (None, SPACING_NONE, found[1])
    if per_frame_note:
        return None, SPACING_NONE, per_frame_note
    pixel_spacing = top_level or measures
    if pixel_spacing is not None:
        return pixel_spacing, SPACING_FROM_DICOM_PIXEL_SPACING, ""
    for raw, name in ((raw_spacing, "Pixel Spacing"), (raw_shared, "shared Pixel Measures"),
                      (raw_per_frame, "per-frame Pixel Measures")):
        if raw is not None:
            shown = str(raw)[:60].replace("\n", " ")
            return None, SPACING_NONE, f"the DICOM file's {name} ({shown}) is not two positive numbers"
    if regions:
        small = _small_calibrated_region(measured)
        if small:
            return None, SPACING_NONE, (f"the DICOM file calibrates in cm only a region of {small} pixels, too small "
                                        "to be the image of the body (a strip or a thumbnail): its pixel size is "
                                        "not taken for the image's, and there is no Pixel Spacing")
        no_length = _region_without_length(measured)
        if no_length:
            return None, SPACING_NONE, (f"the DICOM ultrasound region is calibrated in cm, but its {no_length} "
                                        "is no length, and there is no Pixel Spacing")
        kinds = list(dict.fromkeys(_data_type_text(item) for item in others if _item_spacing(item) is not None))
        if kinds:
            return None, SPACING_NONE, (f"the DICOM file calibrates in cm only regions that are not the image of the "
                                        f"body ({', '.join(kinds[:3])}): their pixel size is not the image's, and "
                                        "there is no Pixel Spacing")
        return None, SPACING_NONE, ("the DICOM ultrasound regions are not calibrated in cm, and "
                                    "there is no Pixel Spacing")
    try:
        imager = _pair(ds.get("ImagerPixelSpacing", None))
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
        imager = None
    aspect = pixel_aspect_ratio(ds)
    if aspect is not None:  # (0028,0034): the pixels' proportions, not their size
        return None, SPACING_NONE, ("the DICOM file has no ultrasound region calibration and no Pixel Spacing; its "
                                    f"Pixel Aspect Ratio says its pixels are {_ratio_text(aspect)}, not square: "
                                    "give both sizes, width x height")
    if imager is not None:  # (0018,1164): the detector's pixel pitch (projection radiography), not the body's
        return None, SPACING_NONE, ("the DICOM file has no ultrasound region calibration and no Pixel Spacing; its "
                                    f"Imager Pixel Spacing ({spacing_text(imager)}) is the detector's, not a size in "
                                    "the body, and is not used")
    return None, SPACING_NONE, "the DICOM file has no ultrasound region calibration and no Pixel Spacing"


def _small_calibrated_region(regions: list[Any]) -> str:
    """Of 2-D regions, the size (``W x H``) of the first calibrated in cm that is narrower or lower
    than a region of the image may be (``_MIN_REGION_PX``); "" when there is none. Such a region is
    no image's: its deltas are not taken for the frames' (:func:`_region_spacing`)."""
    for item in regions:
        if _item_spacing(item) is None:
            continue
        try:
            width = int(item.get("RegionLocationMaxX1", 0)) - int(item.get("RegionLocationMinX0", 0)) + 1
            height = int(item.get("RegionLocationMaxY1", 0)) - int(item.get("RegionLocationMinY0", 0)) + 1
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError):
            continue
        if width < _MIN_REGION_PX or height < _MIN_REGION_PX:
            return f"{max(width, 0)} x {max(height, 0)}"
    return ""


def _region_without_length(regions: list[Any]) -> str:
    """Of 2-D regions whose units are cm, the first Physical Delta that is no length (zero, negative
    or not a number), said as ``Physical Delta X 0``; "" when there is none. A region calibrated
    in cm with a delta of 0 is not an uncalibrated one: the writer put its units and not its size."""
    for item in regions:
        try:
            if (int(item.get("RegionSpatialFormat", _REGION_2D)) != _REGION_2D
                    or int(item.get("PhysicalUnitsXDirection", 0)) != _DICOM_UNITS_CM
                    or int(item.get("PhysicalUnitsYDirection", 0)) != _DICOM_UNITS_CM):
                continue
            deltas = [(axis, item.get(f"PhysicalDelta{axis}", None)) for axis in "XY"]
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError):
            continue
        for axis, delta in deltas:
            try:
                value = abs(float(delta))
            except (TypeError, ValueError, OverflowError):
                value = math.nan
            if not (math.isfinite(value) and value > 0):
                return f"Physical Delta {axis} {str(delta)[:20] if delta is not None else '(none)'}"
    return ""


def _pair(value: Any) -> tuple[float, float] | None:
    """A Pixel Spacing value as ``(row_mm, col_mm)``: two finite positive numbers, else None."""
    try:
        if value is None or len(value) != 2:
            return None
        row, col = (float(f"{float(v):.9g}") for v in value)  # (a writer's 0.30000000000000004)
    except (TypeError, ValueError, OverflowError):
        return None
    return (row, col) if all(math.isfinite(v) and v > 0 for v in (row, col)) else None


def same_pixel_size(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Two pixel sizes are the same one written twice (within 2 %: rounding, cm against mm digits)."""
    return all(abs(x - y) <= 0.02 * max(x, y) for x, y in zip(a, b))


def _shared_pixel_spacing(ds: Any) -> Any:
    """Pixel Spacing from an enhanced object's Shared Functional Groups > Pixel Measures."""
    try:
        shared = ds.get("SharedFunctionalGroupsSequence", None)
        measures = shared[0].get("PixelMeasuresSequence", None) if shared else None
        return measures[0].get("PixelSpacing", None) if measures else None
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _per_frame_pixel_spacing(ds: Any) -> tuple[Any, str]:
    """Pixel Spacing from an enhanced object's Per-Frame Functional Groups > Pixel Measures, when
    every frame that states one states the same: ``(spacing or None, note)``; the note says why
    there is none when frames disagree."""
    try:
        frames = ds.get("PerFrameFunctionalGroupsSequence", None)
        if not frames:
            return None, ""
        found, stating = set(), 0
        for item in frames:
            measures = item.get("PixelMeasuresSequence", None)
            value = measures[0].get("PixelSpacing", None) if measures else None
            if value is not None and len(value) == 2:
                found.add((round(float(value[0]), 9), round(float(value[1]), 9)))
                stating += 1
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None, ""
    if len(found) > 1:
        return None, ("the pixel size changes from frame to frame (Pixel Measures of "
                      f"{len(found)} kinds), so no one pixel size applies")
    if found and stating < len(frames):
        return None, (f"Pixel Measures give the pixel size of {stating} of its {len(frames)} frames only, "
                      "so that of the others is not known")
    return (next(iter(found)) if found else None), ""


def _image_size(ds: Any) -> tuple[int, int] | None:
    """``(rows, columns)`` of a DICOM header, None when it does not say."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError, OverflowError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


#: How a series' note begins when its files state different pixel sizes (the depth or zoom was
#: changed during the sweep): a pixel size the user gives later does not make that go away.
SPACING_CHANGES = "the pixel size changes within the series"

#: PS3.3 C.8.5.5.1.2: Region Data Type 1 is tissue; 2, colour flow, is a box drawn over a tissue
#: image (never the image itself: a file listing only that box says nothing of where the image
#: lies); the others (spectral Doppler, traces, ECG, ...) are no image of the body.
_REGION_IMAGE_TYPES = (1,)
#: A region narrower than this (pixels) is a strip or a thumbnail, not the image.
_MIN_REGION_PX = 32
#: PS3.3 C.8.5.5.1.2: Region Data Type 2, a colour-flow box.
_REGION_COLOUR_FLOW = 2
#: The Region Data Types a 2-D region may state, as a note names them (PS3.3 C.8.5.5.1.2).
_REGION_DATA_TYPE_NAMES = {0: "a region of data type 'none'", 2: "a colour-flow box", 0x0D: "a grey bar",
                           0x0E: "a colour bar", 0x0F: "an integrated backscatter region"}


def _is_image_region(item: Any) -> bool:
    """Whether a 2-D ultrasound region is the image of the body: typed tissue, or of no stated type.
    Raises for a type that is not a number (the caller leaves such a region out)."""
    kind = item.get("RegionDataType", None)
    return kind is None or int(kind) in _REGION_IMAGE_TYPES


def _data_type_text(item: Any) -> str:
    """A region's Region Data Type in words, for a note."""
    try:
        kind = int(item.get("RegionDataType", None))
    except (TypeError, ValueError, OverflowError):
        return "a region of unreadable data type"
    return _REGION_DATA_TYPE_NAMES.get(kind, f"a region of data type 0x{kind:04X}")


def _measured_regions(regions: list[Any]) -> tuple[list[Any], list[Any]]:
    """Of a Sequence of Ultrasound Regions' items, the 2-D regions whose pixels are measured, and
    the other 2-D regions: ``(measured, others)``. Measured are the image's (typed tissue or of no
    stated type: those the frames are cut to, :func:`image_regions`); where the file lists none, its
    colour-flow boxes, drawn over a tissue image at that image's scale (the whole frame is scored
    then). A grey or colour bar, or a colour box beside a tissue region, is never measured:
    a colour box listed over the whole screen at 0.5 mm beside the tissue image at 0.28 mm had made
    every length 1.8 times too long, shown plainly. Non-2-D regions (M-mode, Doppler strips) are in
    neither list; a region whose type cannot be read is in neither."""
    image, colour, others = [], [], []
    for item in regions:
        try:
            if int(item.get("RegionSpatialFormat", _REGION_2D)) != _REGION_2D:
                continue
            if _is_image_region(item):
                image.append(item)
            elif int(item.get("RegionDataType")) == _REGION_COLOUR_FLOW:
                colour.append(item)
            else:
                others.append(item)
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError):
            continue
    if image:
        return image, colour + others
    return colour, others


def image_regions(ds: Any, image: tuple[int, int] | None = None) -> tuple[tuple[int, int, int, int], ...]:
    """The rectangles of a DICOM ultrasound image that show the body (2-D tissue regions of its
    Sequence of Ultrasound Regions, or 2-D regions of no stated type): ``(x0, y0, x1, y1)``, inclusive, clipped to the
    image (``image``: rows, columns). Empty without such regions; a region past the image, or one
    that cannot be read, is left out. What lies outside them on the screen (the scanner's panels,
    a spectral Doppler strip) is no part of the field of view."""
    return tuple(dict.fromkeys(box for box, _ in _tissue_regions(ds, image)))


def region_calibrations(ds: Any, image: tuple[int, int] | None = None
                        ) -> tuple[tuple[tuple[int, int, int, int], tuple[float, float] | None], ...]:
    """Each of :func:`image_regions` with its own pixel size, ``(box, (row_mm, col_mm))`` (None
    where the region is not calibrated in cm), when those regions do not all state one size (a
    picture-in-picture image beside the main one, an inset at another zoom); empty when they do.
    The sweep's one pixel size (:func:`_region_spacing`: the largest region's) then holds only for
    an outline inside that region: :func:`outline_spacing` says which applies where."""
    found = tuple(dict.fromkeys((box, _item_spacing(item)) for box, item in _tissue_regions(ds, image)))
    sizes = {spacing for _, spacing in found}
    if len(sizes) < 2 or (None not in sizes and all(same_pixel_size(a, b) for a in sizes for b in sizes)):
        return ()
    return found


def _item_spacing(item: Any) -> tuple[float, float] | None:
    """One ultrasound region's pixel size ``(row_mm, col_mm)``; None unless it is calibrated in cm
    with two positive deltas."""
    try:
        if (int(item.get("PhysicalUnitsXDirection", 0)) != _DICOM_UNITS_CM
                or int(item.get("PhysicalUnitsYDirection", 0)) != _DICOM_UNITS_CM):
            return None
        dx, dy = abs(float(item.get("PhysicalDeltaX"))), abs(float(item.get("PhysicalDeltaY")))
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError):
        return None
    if not (math.isfinite(dx) and math.isfinite(dy) and dx > 0 and dy > 0):
        return None
    return round(dy * 10.0, 9), round(dx * 10.0, 9)  # cm -> mm, (row, col)


def _tissue_regions(ds: Any, image: tuple[int, int] | None) -> list[tuple[tuple[int, int, int, int], Any]]:
    """The 2-D tissue regions of :func:`image_regions`, each ``(box, item)`` with its sequence item."""
    found = []
    try:
        items = list(ds.get("SequenceOfUltrasoundRegions", None) or [])
    except Exception:  # noqa: BLE001 - a damaged sequence: no regions, as without one
        return []
    for item in items:
        try:
            if int(item.get("RegionSpatialFormat", _REGION_2D)) != _REGION_2D:
                continue
            if not _is_image_region(item):
                continue
            box = tuple(int(item.get(k)) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                   "RegionLocationMaxX1", "RegionLocationMaxY1"))
        except (TypeError, ValueError, OverflowError, AttributeError, KeyError):
            continue
        x0, y0, x1, y1 = box
        if image is not None:
            if x0 >= image[1] or y0 >= image[0]:
                continue
            x1, y1 = min(x1, image[1] - 1), min(y1, image[0] - 1)
        if x0 < 0 or y0 < 0 or x1 - x0 + 1 < _MIN_REGION_PX or y1 - y0 + 1 < _MIN_REGION_PX:
            continue
        found.append(((x0, y0, x1, y1), item))
    return found


def outline_spacing(calibrations: tuple, used: tuple[float, float], mask: Any
                    ) -> tuple[tuple[float, float] | None, str | None, str]:
    """The pixel size for an outline ``mask`` (a 2-D array, non-zero inside) on frames whose image
    regions are calibrated differently (``calibrations``: :func:`region_calibrations`, in the
    frames' pixels), where the sweep's one size ``used`` is the largest region's: ``(spacing,
    problem, note)``. Inside one region (or several that state one size): that size, with a note
    when it is not ``used``. Partly outside every region, across regions of different sizes (an
    inset inside the main image included), or in a region not calibrated in cm: no size
    (``spacing`` None, ``problem`` one line why). A length measured at another region's size would
    be wrong by their ratio, shown plain (an outline in a picture-in-picture at 0.6 mm was measured
    at the main image's 0.3 mm: half its length, ten weeks early)."""
    import numpy as np

    if not calibrations:
        return used, None, ""
    ys, xs = np.nonzero(np.asarray(mask))
    if not ys.size:
        return used, None, ""
    inside = np.zeros(ys.size, bool)
    touched = []
    for (x0, y0, x1, y1), spacing in calibrations:
        hit = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        if hit.any():
            inside |= hit
            touched.append(spacing)
    tail = ": lengths in mm and the gestational age are not shown for it"
    if not inside.all():
        return None, (f"pixel size unknown where the outline lies: {int((~inside).sum())} of its pixels lie outside "
                      "the image regions the file calibrates, which state different pixel sizes" + tail), ""
    if None in touched:
        return None, ("pixel size unknown where the outline lies: it lies in an image region the file does not "
                      "calibrate in cm (another region is)" + tail), ""
    kinds = list(dict.fromkeys(touched))
    if any(not same_pixel_size(kinds[0], k) for k in kinds[1:]):
        shown = " and ".join(spacing_text(k) for k in kinds[:2])
        return None, (f"pixel size unknown where the outline lies: it lies in image regions calibrated differently "
                      f"({shown}), so which size applies is not known" + tail), ""
    if same_pixel_size(kinds[0], used):
        return used, None, ""
    return kinds[0], None, (f"the outline lies in the image region calibrated at {spacing_text(kinds[0])}, not the "
                            f"largest one ({spacing_text(used)}, the sweep's pixel size elsewhere): measured at "
                            f"{spacing_text(kinds[0])}")


#: How the note ends that says a sweep's one pixel size is its largest image region's (its regions
#: calibrated differently): a size the user gives for every pixel makes it untrue.
LARGEST_REGION_USED = "the largest (twice any other) used"


def regions_text(calibrations: tuple) -> str:
    """The pixel sizes ``calibrations`` (:func:`region_calibrations`) state, in words ("0.3 x 0.3 mm
    and 0.6 x 0.6 mm")."""
    sizes = list(dict.fromkeys(spacing for _, spacing in calibrations if spacing is not None))
    return " and ".join(spacing_text(size) for size in sizes[:3]) + (", ..." if len(sizes) > 3 else "")


def regions_given_note(calibrations: tuple, how: str = "given") -> str:
    """What a pixel size given for every pixel (``how``: "given with --spacing") replaces on frames
    whose image regions the file calibrates differently (``calibrations``:
    :func:`region_calibrations`): one line, said whatever the size given (the same as one region's
    replaces another's); "" without such regions."""
    if not calibrations:
        return ""
    return (f"{how} for every pixel, replacing the file's calibration of its image regions, which differ "
            f"({regions_text(calibrations)}): an outline in a region of another size measures wrong by their ratio")


def given_where_outline_lies(calibrations: tuple, given: tuple[float, float], mask: Any) -> str:
    """Where a pixel size ``given`` for every pixel measures the outline ``mask`` (2-D, the frames'
    size, non-zero inside) on frames whose image regions the file calibrates differently
    (``calibrations``): "" where the file's size there is the one given (or there are no such
    regions); else one line saying the size the file gives there, or that it gives none (the outline
    outside its regions, or across two of different sizes). A size given for the whole screen that is
    not that of the region holding the outline makes its length wrong by their ratio, shown plain."""
    if not calibrations:
        return ""
    found, problem, _ = outline_spacing(calibrations, given, mask)
    if found is not None:
        if same_pixel_size(found, given):
            return ""
        ratios = (float(given[0]) / float(found[0]), float(given[1]) / float(found[1]))
        times = (f", which makes the AC {ratios[0]:.2g} times the file's" if math.isclose(*ratios, rel_tol=0.01)
                 else "")
        return (f"the file calibrates the image region holding the outline at {spacing_text(found)}, not at the "
                f"{spacing_text(given)} given{times}: check the size given")
    return (f"the file gives no one pixel size where the outline lies (its image regions are calibrated at "
            f"{regions_text(calibrations)}): measured at the {spacing_text(given)} given")


def _region_spacing(regions: list[Any], image: tuple[int, int] | None = None
                    ) -> tuple[tuple[float, float] | None, str] | None:
    """Of ``regions`` (:func:`_measured_regions`: those whose pixels are measured), the largest
    calibrated in cm in both directions: ``((row_mm, col_mm), note)``;
    None without one. Regions calibrated differently (a split screen, a zoomed inset) leave the
    pixel size unknown, ``(None, note)``, unless the largest is at least twice the size of any
    calibrated otherwise: which of two like-sized images an abdomen lies in is not known here.
    A calibrated region reaching past the image (``image``: rows, columns) was calibrated on
    another one (a frame resized after the calibration was written): unknown too."""
    found: list[tuple[float, tuple[float, float]]] = []
    uncalibrated = 0.0  # the largest 2-D region not calibrated in cm
    outside = None
    for item in regions:
        try:
            if int(item.get("RegionSpatialFormat", _REGION_2D)) != _REGION_2D:
                continue  # an M-mode or Doppler strip: its deltas are not the image's
            x1, y1 = int(item.get("RegionLocationMaxX1", 0)), int(item.get("RegionLocationMaxY1", 0))
            width = x1 - int(item.get("RegionLocationMinX0", 0)) + 1
            height = y1 - int(item.get("RegionLocationMinY0", 0)) + 1
            area = float(max(width, 0) * max(height, 0))
            dx = dy = math.nan
            if (int(item.get("PhysicalUnitsXDirection", 0)) == _DICOM_UNITS_CM
                    and int(item.get("PhysicalUnitsYDirection", 0)) == _DICOM_UNITS_CM):
                dx = abs(float(item.get("PhysicalDeltaX")))
                dy = abs(float(item.get("PhysicalDeltaY")))
        except (TypeError, ValueError, OverflowError):
            continue
        if not (math.isfinite(dx) and math.isfinite(dy) and dx > 0 and dy > 0):
            uncalibrated = max(uncalibrated, area)
            continue
        spacing = (round(dy * 10.0, 9), round(dx * 10.0, 9))  # cm -> mm, (row, col)
        if width < _MIN_REGION_PX or height < _MIN_REGION_PX:
            continue  # a strip or a thumbnail (the frames are not cut to it either): not the image's size
        if image is not None and (x1 > image[1] or y1 > image[0]):  # (one past the last pixel is let pass)
            outside = outside or (spacing, x1 + 1, y1 + 1)
            continue
        found.append((area, spacing))
    if outside is not None:
        spacing, w, h = outside
        return None, (f"the DICOM ultrasound region calibrated at {spacing_text(spacing)} reaches to {w} x {h} "
                      f"pixels, past the {image[1]} x {image[0]} image: it was calibrated on another image "
                      "(resized since?)")
    if not found:
        return None
    area, best = max(found, key=lambda item: item[0])  # the first of equals
    if uncalibrated * 2 > area:
        return None, (f"the image's largest region is not calibrated in cm; a smaller one is "
                      f"({spacing_text(best)}), so which applies where the abdomen lies is not known")
    kinds = {spacing for _, spacing in found}
    if len(kinds) == 1:
        return best, ""
    other = max(a for a, spacing in found if spacing != best)
    shown = " and ".join(spacing_text(k) for k in sorted(kinds)[:2])
    if other * 2 > area:
        return None, (f"the image has {len(kinds)} calibrated regions of like size with different pixel "
                      f"sizes ({shown}{', ...' if len(kinds) > 2 else ''}), so which applies is not known")
    return best, f"{len(kinds)} differently calibrated regions, {LARGEST_REGION_USED}"
