"""Sweep and mask readers: every format ends as a :class:`Raw` (numpy array in C order).

Headers are read and checked (sizes, byte counts, limits) before any pixel data is decoded;
SimpleITK's ``RuntimeError`` (with its C++ trace) never reaches the user.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import warnings
import zlib
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from fetaliqa_core import validate
from fetaliqa_core.errors import FetalIQAError, first_names
from fetaliqa_core.io._common import (
    DEFLATED_SYNTAX,
    MAX_DEFLATE_RATIO,
    META_KEYS,
    MIN_FRAME_PX,
    SPACING_FROM_HEADER,
    SPACING_FROM_IMAGEJ,
    SPACING_NONE,
    SUPPORTED_FORMATS,
    SWEEP_FILE_SUFFIXES,
    Raw,
    ZeroFilledDicom,
    check_cancelled,
    dcmread_bounded,
    dicom_frame_rate,
    fmt_dims,
    full_suffix,
    pydicom_warnings_off,
    quiet_itk,
    quiet_native_stderr,
    sitk_reason,
    spacing_text,
    truthy,
    usable_spacing,
)
from fetaliqa_core.io.frames import check_frame_shape, frame_stack_shape, precheck_dims
from fetaliqa_core.io.palette import has_segmented_palette, segmented_palette
from fetaliqa_core.io.spacing import (SPACING_CHANGES, classify_header_spacing, dataset_calibration,
                                     dicom_calibration_and_regions, dicom_pixel_aspect)


#: A kept header value is cut to this many characters (a hostile header cannot make it large).
META_VALUE_CHARS = 2000


@pydicom_warnings_off()  # (DICOM headers are read all along the way: a file's, a series folder's)
def read_raw(path: Path, purpose: str) -> Raw:
    what = "sweep" if purpose == "sweep" else "mask"
    validate.check_path_name(path)
    if not path.exists():
        if path.is_symlink():
            raise FetalIQAError(f"{path}: a link to nothing readable (its target is missing, or the link "
                                f"leads back to itself). Choose the {what} file itself ({SUPPORTED_FORMATS}).")
        raise FetalIQAError(f"{path}: no such file or folder. Check the path and choose the {what} "
                            f"file ({SUPPORTED_FORMATS}).")
    if path.is_dir():
        return _read_dicom_folder(path, what)
    validate.check_regular_file(path, f"the {what} file")  # a pipe reads as 0 bytes, or blocks
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FetalIQAError(f"{path}: cannot be read ({exc.strerror}). Check the file's permissions.") from None
    if size == 0:
        raise FetalIQAError(f"{path}: the file is empty (0 bytes), probably an interrupted copy or "
                            "download. Copy the file again.")
    if not os.access(path, os.R_OK):
        raise FetalIQAError(f"{path}: permission denied. Check the file's permissions.")
    suffix = full_suffix(path)
    if path.name.lower().endswith((".hdr", ".img", ".img.gz", ".hdr.gz")):
        # a header whose pixels lie in a second file the image library opens unchecked (a pipe there
        # blocks forever, a link leads anywhere)
        raise FetalIQAError(f"{path}: an Analyze or NIfTI pair (.hdr + .img), which is not read. Save the sweep "
                            f"as one .nii or .nii.gz file (or another of: {SUPPORTED_FORMATS}).")
    if suffix in (".mha", ".mhd"):
        # (a video named so was "not a MetaImage file ... damaged", where other names got the video line)
        video = _video_container(path) if _format_by_content(path) is None else None
        if video:
            raise FetalIQAError(_video_line(path, video))
        raw = _read_metaimage(path)
        if raw is not None:
            return raw
    return _read_with_sitk(path, what)


def _image_library(path: Path) -> Any:
    """SimpleITK, which reads every format but MetaImage; where it is not installed, one line that
    says so (a bare ImportError traceback was all a machine without it gave)."""
    try:
        import SimpleITK
    except ImportError:
        raise FetalIQAError(f"{path}: reading this kind of file needs SimpleITK, which is not installed here "
                            "(pip install SimpleITK); without it FetalIQA reads MetaImage (.mha, .mhd) "
                            "files only.") from None
    return SimpleITK


def _read_dicom_folder(folder: Path, what: str) -> Raw:
    sitk = _image_library(folder)

    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise FetalIQAError(f"{folder}: the folder cannot be read ({exc.strerror}). Check its permissions.") from None
    if not entries:
        raise FetalIQAError(f"{folder}: the folder is empty. Choose the {what} file itself, or a folder "
                            "holding one DICOM series.")
    _refuse_odd_entries(folder, entries)
    marked = [p for p in entries if p.is_file() and _named_or_marked_dicom(p)]
    # What can be refused from the files' number or the first files' headers is refused before
    # every header is parsed and the image library scans the folder: both take a time that grows
    # with the files (281 s for a folder of 28,847 tiny files, 190 s for 19,000 files of 8 x 8
    # pixels) before a refusal that was known at once.
    _refuse_too_many_files(folder, len(marked) + sum(1 for p in set(entries).difference(marked)
                                                      if p.is_file() and _bare_dicom(p)))
    _refuse_tiny_first_frames(folder, sorted(marked))
    if len(marked) == 1:
        # One DICOM file in the folder: the series is that file, and it gets the checks it gets when
        # chosen itself, before the image library's scan reads it. The scan reads every element to
        # the file's end: after a valid header and pixel data, gigabytes of appended zeros kept it
        # busy for minutes, printing nothing and deaf to Ctrl-C and SIGTERM (the file chosen itself
        # is refused in 2 s, by these checks).
        _precheck_dicom(marked[0], single=True)
    _refuse_deep_nesting(marked)
    try:
        with quiet_itk():  # "No Series were found" goes to stderr
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise FetalIQAError(f"{folder}: the folder could not be scanned for DICOM files "
                            f"({sitk_reason(exc)}). Check the folder's permissions.") from None
    if not series:
        if any(p.name.upper() == "DICOMDIR" for p in entries):
            raise FetalIQAError(f"{folder}: a DICOM media folder (it holds a DICOMDIR); the images are in its "
                                "subfolders. Choose the subfolder of one series (e.g. .../SE000000).")
        here = _sweep_files_in(folder)
        if here:  # the folder of a sweep given for the sweep: its files were not named
            raise FetalIQAError(f"{folder}: a folder, not a {what}; it holds {_some_names(here)}: choose "
                                + ("one of them (`fetaliqa score` also takes the folder, to score them all)."
                                   if what == "sweep" else f"the {what} file itself."))
        deeper = _folder_of_sweep_files(folder)
        if deeper is not None:  # e.g. a dataset in the ACOUSLIC layout, its sweeps in images/stacked_fetal_ultrasound
            raise FetalIQAError(f"{folder}: no DICOM series in this folder, but {deeper} holds image files "
                                f"({_some_names(_sweep_files_in(deeper))}): choose "
                                + ("one of them (`fetaliqa score` also takes that folder, to score them all)."
                                   if what == "sweep" else f"the {what} file itself."))
        pictures = [p for p in entries if p.is_file() and full_suffix(p) in _PICTURE_SUFFIXES]
        if what == "sweep" and len(pictures) >= 2:
            # (a folder of exported frames: their order is a guess from the names, and they state no pixel size)
            videos = [p for p in entries if p.is_file() and p not in pictures and _video_container(p)]
            beside = (f" and {len(videos)} video file(s) (e.g. {videos[0].name}, {_video_container(videos[0])}, "
                      "which is not read: export its frames instead)" if videos else "")
            raise FetalIQAError(f"{folder}: a folder of {len(pictures)} pictures (e.g. {pictures[0].name}){beside}, "
                                "not a DICOM series: a folder of single pictures is not read as one sweep (their "
                                "order is only their names' and they state no pixel size). Open one picture, or put "
                                "the frames in one file: a multi-page TIFF or an .mha (with the pixel size, if known).")
        raise FetalIQAError(f"{folder}: no DICOM series in this folder. Choose the {what} file itself "
                            f"({SUPPORTED_FORMATS}), or a folder of DICOM files of one series.")
    # Several series: take the one with most frames (the cine; others are usually single captures,
    # and a cine may be one multi-frame file beside them), and say so; two equally long ones cannot
    # be told apart.
    files_by_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    frames_by_series = {sid: _series_frames(names) for sid, names in files_by_series.items()}
    ranked = sorted(files_by_series.items(), key=lambda item: -frames_by_series[item[0]])
    files = ranked[0][1]
    notes = []
    if len(ranked) > 1:
        longest = frames_by_series[ranked[0][0]]
        if len(files) == 1 and longest > 1 and multiframe_dicom_files(folder):
            raise FetalIQAError(f"{folder}: the folder holds {len(ranked)} DICOM files of several frames each: "
                                "one sweep a file. Open one of them, or score the folder (fetaliqa score "
                                "FOLDER scores each).")
        if longest == 1:  # (was "6 DICOM series, 1 frames each at most")
            raise FetalIQAError(f"{folder}: the folder holds {len(ranked)} DICOM series of one frame each (each file "
                                "a series of its own), so none is a sweep. Export the sweep again as one series "
                                "(or one multi-frame file), or open one of the files.")
        if frames_by_series[ranked[1][0]] == longest:
            raise FetalIQAError(f"{folder}: the folder holds {len(ranked)} DICOM series, {longest} frames each "
                                "at most, and none is the obvious sweep. Put each series in its own folder and "
                                "choose one.")
        others = ", ".join(str(frames_by_series[sid]) for sid, _ in ranked[1:4]) + (", ..." if len(ranked) > 4 else "")
        notes.append(f"the folder holds {len(ranked)} DICOM series; the longest ({longest} frames) is read, "
                     f"the other(s) ({others} frame(s)) are left out")
    listed = {Path(name).resolve() for names in files_by_series.values() for name in names}
    unread = _damaged_members([p for p in entries if p.is_file() and p.resolve() not in listed], list(files))
    if unread:  # a damaged file of the series would otherwise be a frame missing without a word
        shown = first_names(unread, 3)
        raise FetalIQAError(f"{folder}: {len(unread)} file(s) of this DICOM series cannot be read ({shown}): "
                            "each would be a frame missing from the sweep. Copy the series again, or remove them.")
    if len(files) == 1:
        raw = _read_with_sitk(Path(files[0]), what)  # checks the file's pixel data itself
        raw.notes.extend(notes)
        return raw
    orders = [_precheck_dicom(Path(name)) for name in files]
    _refuse_mixed_series(folder, files, orders)
    member_of = dict(zip(files, orders))
    files, order_note = _acquisition_order(list(files), orders)
    orders = [member_of[name] for name in files]  # in the frames' order, as the files now are
    if order_note:
        notes.append(order_note)
    if len(files) > validate.MAX_SERIES_FILES:
        raise FetalIQAError(f"{folder}: the DICOM series has {len(files)} files, more than the "
                            f"{validate.MAX_SERIES_FILES} frames a sweep may have. Choose the folder of one sweep.")
    first = sitk.ImageFileReader()
    first.SetFileName(files[0])
    try:
        first.ReadImageInformation()
    except RuntimeError as exc:
        raise FetalIQAError(f"{files[0]}: the DICOM header cannot be read ({sitk_reason(exc)}). Check that "
                            "the folder holds one complete series.") from None
    size = tuple(int(s) for s in first.GetSize())
    per_file = validate.checked_product(size[2:]) if len(size) > 2 else 1
    bound_volume(folder, (len(files) * per_file, size[1], size[0]), int(first.GetNumberOfComponents()),
                 _sitk_pixel_itemsize(first) or 8, mapped=False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOff()
    try:
        syntax = orders[0].syntax if orders[0] is not None else _dicom_syntax(Path(files[0]))
        with quiet_native_stderr(dicom_jpeg=True) if syntax in _JPEG_SYNTAXES else nullcontext():
            image = reader.Execute()
    except RuntimeError as exc:
        raise FetalIQAError(f"{folder}: the DICOM series could not be read ({sitk_reason(exc)}). "
                            "Check that all files belong to one series and are complete.") from None
    raw = _raw_from_image(image, folder, {}, dicom_file=Path(files[0]))
    raw.notes.extend(notes)
    if raw.components == 1 and raw.array.dtype != np.uint8:
        _series_windows(raw, files, per_file)
    changed = _calibration_change(files, orders)
    if changed:  # the first file's calibration would stand for frames taken at another depth or zoom
        raw.spacing_mm, raw.spacing_source, raw.spacing_note = (1.0, 1.0), SPACING_NONE, changed
    return raw


def _series_windows(raw: Raw, files: list[str], per_file: int) -> None:
    """Each file's own window for its frames, where the files of a series state different ones
    (16-bit frames stored at different gains, each file's window showing its own): through the
    first file's alone, frames stored at twice its gain read twice too bright, clipped at white,
    without a word. Where the frames cannot be matched to their files (files of different frame
    counts), one window spanning all the files' windows is used, so none is clipped, and a note
    says so."""
    windows = []
    for name in files:
        window, _, own = dicom_display(Path(name), raw.notes)
        windows.extend(own if own is not None and len(own) == per_file else [window] * per_file)
    if len(set(windows)) <= 1:
        return
    if len(windows) == raw.array.shape[0]:
        raw.frame_windows = tuple(windows)
        return
    stated = [w for w in windows if w is not None]
    raw.window = (min(w[0] for w in stated), max(w[1] for w in stated))
    raw.frame_windows = None
    raw.notes.append("the series' files state different display windows (Window Center/Width) and their frames "
                     "cannot be matched to their files here: one window spanning all of them is used, so frames "
                     "may look darker or paler than their own window shows them")


def _number_of_frames(ds: Any) -> int:
    """A parsed header's Number of Frames: 1 without one, or with one that is no count."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError, OverflowError):  # ("inf" overflows)
        return 1


def _refuse_uncounted_frames(path: Path, ds: Any) -> None:
    """A Number of Frames that is no whole number ("inf", "+") could not be read as a count: the
    size checks were skipped and the image library read one frame of a multi-frame file ("4.5"
    was read as 4). A blank one is left to the size checks (one frame)."""
    if "NumberOfFrames" not in ds:
        return
    value = ds.get_item("NumberOfFrames").value
    text = (value.decode("latin-1") if isinstance(value, bytes) else str(value if value is not None else ""))
    text = text.strip(" \x00")
    try:
        whole = not text or float(text).is_integer()  # (False for inf and nan)
    except ValueError:
        whole = False
    if not whole:
        raise FetalIQAError(f"{path}: the DICOM header's Number of Frames is '{text[:20]}', not a whole number, "
                            "so the frames the file holds cannot be counted: the header is damaged. Export the "
                            "file again.")


def _series_frames(names: list[str]) -> int:
    """Frames a series holds: its files times the first file's Number of Frames (one header read
    a series; a header that cannot be read counts one frame a file)."""
    try:
        import pydicom

        per_file = _number_of_frames(dcmread_bounded(names[0], stop_before_pixels=True, force=True,
                                                      specific_tags=["NumberOfFrames"]))
    except Exception:  # noqa: BLE001 - the series' own read says what is wrong with the file
        per_file = 1
    return len(names) * min(per_file, validate.MAX_FRAMES)


def _refuse_mixed_series(folder: Path, files: list[str], members: list[_Member | None]) -> None:
    """One series UID over files that are no one sweep: two studies (an anonymiser that gave them
    one series UID: their frames would interleave), or a cine beside single images."""
    known = [m for m in members if m is not None]
    # (a writer that gives each file a Study UID of its own, as SimpleITK does, makes no two studies)
    studies = [uid for uid, n in Counter(m.study for m in known if m.study).items() if n > 1]
    if len(studies) > 1:
        raise FetalIQAError(f"{folder}: the files of this DICOM series come from {len(studies)} studies (their "
                            "Study Instance UIDs differ; an anonymiser may have given them one series UID): "
                            "their frames would be mixed. Put each study's files in a folder of its own.")
    formats = Counter(m.pixels for m in known if m.pixels)
    if len(formats) > 1:
        odd = min(formats, key=lambda f: formats[f])
        name = next(Path(f).name for f, m in zip(files, members) if m is not None and m.pixels == odd)
        words = "; ".join(f"{n} file(s) of {b} bits ({st} stored), {sp} sample(s), {ph or '?'}"
                          for (b, st, sp, ph), n in formats.most_common(3))
        raise FetalIQAError(f"{folder}: the files of this DICOM series store their pixels differently ({words}; "
                            f"e.g. {name}): their frames cannot be read as one sweep. Export the series again, "
                            "or move the odd files out.")
    sizes = Counter(m.size for m in known if m.size and all(m.size))
    if len(sizes) > 1:  # the series reader's own words named a size only ("Size: [240, 200, 1]")
        odd = min(sizes, key=lambda size: sizes[size])
        name = next(Path(f).name for f, m in zip(files, members) if m is not None and m.size == odd)
        words = "; ".join(f"{n} file(s) of {w} x {h}" for (w, h), n in sizes.most_common(3))
        raise FetalIQAError(f"{folder}: the files of this DICOM series hold frames of different sizes ({words} "
                            f"pixels, width x height; e.g. {name}): they cannot be read as one sweep. Move the odd "
                            "files out, or export the series again.")
    counts = {m.frames for m in known}
    if len(counts) > 1:
        cine = max(zip((m.frames if m else 0 for m in members), files))[1]
        what = ("a cine beside single images" if min(counts) == 1 else
                "several cines under one series UID")
        raise FetalIQAError(f"{folder}: this DICOM series mixes files of {max(counts)} frames with files of "
                            f"{min(counts)}, {what}: no one sweep. Open a cine file itself (e.g. "
                            f"{Path(cine).name}), or move the other files out of the folder.")


def _calibration_change(files: list[str], members: list[_Member | None]) -> str:
    """A note when a series' files state different pixel sizes (the depth or zoom was changed
    during the sweep), else ""."""
    seen: dict[Any, str] = {}
    for name, member in zip(files, members):
        if member is None:
            continue
        spacing = member.calibration[0]
        key = None if spacing is None else tuple(round(float(v), 6) for v in spacing)
        seen.setdefault(key, Path(name).name)
    if len(seen) < 2:
        return ""
    shown = "; ".join(f"{'none' if key is None else spacing_text(key)} from {first}"
                      for key, first in list(seen.items())[:2])
    return (f"{SPACING_CHANGES} ({shown}{'; ...' if len(seen) > 2 else ''}): "
            "the depth or zoom changed during the sweep, so no one pixel size applies")


def _refuse_cropped_slicer_segmentation(path: Path, nrrd: dict[str, str] | None) -> None:
    """3D Slicer saves a segmentation (.seg.nrrd) cropped to its segments' extent, and says where
    that extent starts in the image it was drawn on (``Segmentation_ReferenceImageExtentOffset``,
    in voxels): read as it is, a mask drawn on frame 2 was measured as frame 0, and with its sweep
    it was refused as drawn on another one."""
    key = "segmentation_referenceimageextentoffset:="
    for line in (nrrd or {}).get("", "").splitlines():
        if line.lower().startswith(key):
            offset = line[len(key):].split()
            if any(value.strip("+-0.") for value in offset):  # (any but zeros: the extent starts elsewhere)
                raise FetalIQAError(f"{path}: a 3D Slicer segmentation cropped to its segments' extent (it starts "
                                    f"at voxel {' '.join(offset[:3])[:40]} of the image it was drawn on): its frames "
                                    "and pixels would be misplaced. Export it with the sweep's geometry (Segmentations: "
                                    "Export to labelmap, with the sweep as the reference volume) and open that.")
            return


def slicer_segment_names(path: Path) -> dict[int, str]:
    """The segments a 3D Slicer segmentation (.seg.nrrd) names, by label value
    (``SegmentN_LabelValue`` and ``SegmentN_Name``); empty for other files."""
    try:
        nrrd = _nrrd_fields(path)
    except FetalIQAError:
        return {}
    found: dict[str, dict[str, str]] = {}
    for line in (nrrd or {}).get("", "").splitlines():
        match = re.match(r"segment(\d+)_(labelvalue|name):=(.*)", line.strip(), re.IGNORECASE)
        if match:
            found.setdefault(match.group(1), {})[match.group(2).lower()] = match.group(3).strip()
    names = {}
    for fields in found.values():
        try:
            names[int(fields.get("labelvalue", "1"))] = fields.get("name", "")[:60]
        except ValueError:
            continue
    return names


def _refuse_early_time_axis(path: Path, nrrd: dict[str, str] | None, what: str = "sweep") -> None:
    """A NRRD's frames must lie on its last (slowest) axis: with ``time`` on an earlier one the
    image reader takes frames for rows or columns and the frame interval for a pixel size."""
    kinds = (nrrd or {}).get("kinds", "").split()
    early = [i for i, kind in enumerate(kinds[:-1]) if kind.lower() == "time"]
    if early:
        raise FetalIQAError(f"{path}: the NRRD's time axis is its axis {early[0] + 1} of {len(kinds)} (kinds: "
                            f"{' '.join(kinds)}), not its last, so its frames are interleaved with the pixels. "
                            f"Save the {what} with the frames on the last axis (e.g. as .mha) and open that.")


def _read_with_sitk(path: Path, what: str) -> Raw:
    sitk = _image_library(path)

    nrrd = _nrrd_fields(path)
    _refuse_overfull_nrrd_fields(path, nrrd)
    _refuse_early_time_axis(path, nrrd, what)
    _refuse_cropped_slicer_segmentation(path, nrrd)
    nrrd_stored = _nrrd_stored_bytes(path, nrrd)  # before ITK opens a data file that may be a pipe
    member = _precheck_dicom(path, single=True) if has_dicom_magic(path) or _bare_dicom(path) else None
    _precheck_nifti_header(path)
    _refuse_animated_png(path)
    _refuse_mixed_case_nifti(path)
    _refuse_damaged_tiff(path, sweep=what == "sweep")
    tiff = _tiff_pages(path)  # (the image library reads on past a smaller page, printing to the terminal)
    _refuse_imagej_one_page_stack(path, tiff)
    _refuse_volumetric_tiff(path, tiff)
    pages = tiff.layouts
    is_tiff = _picture_kind(path) == "TIFF"  # (the TIFF library's complaints are kept quiet while it reads)
    odd_matrix = _nifti_orientation_not_finite(_nifti_head(path))  # (ITK prints a matrix dump for it)
    jpeg_said: list[str] | None = [] if _picture_kind(path) == "JPEG" else None  # its decoder's warnings
    # (its decoder's line on 12-bit frames is kept quiet; the header read above names the syntax)
    dicom_jpeg = (member.syntax if member is not None else _dicom_syntax(path)) in _JPEG_SYNTAXES
    hdf5 = "HDF5" in _array_file_kind(path)  # (its library prints a diagnostic stack on a damaged one)
    png = _picture_kind(path) == "PNG"  # (its library prints "libpng error: ..." on a damaged one)
    sizes = list(dict.fromkeys(size for size, _ in pages))
    if len(sizes) > 1:
        shown = ", ".join(f"{w} x {h}" for w, h in sizes[:3])
        raise FetalIQAError(f"{path}: the TIFF's pages are of different sizes ({shown}, width x height): they "
                            "are no one sweep (a thumbnail page?). Save the frames alone, all of one size.")
    if len(pages) > 1:  # the image library decodes every page as the first is laid out: scrambled frames
        shown = ", ".join(_PIL_MODE_NAMES.get(mode, mode) for _, mode in pages[:3])
        raise FetalIQAError(f"{path}: the TIFF's pages hold different kinds of pixels ({shown}): they would be "
                            "read scrambled. Save every frame the same way (all grey or all colour, one bit "
                            "depth).")
    if is_tiff and (tiff.reduced or tiff.marked or tiff.high_byte_only):  # (what the image library reads wrong)
        return _read_tiff_with_pillow(path, what, tiff)
    if is_tiff and _packbits_runs_cross_rows(path, tiff.bits):
        # the image library decodes PackBits row by row: a repeat run carried into the next row made
        # it fail ("truncated or damaged"), a literal one was read without a word as other pixels
        # (3-44 % of the values right); the picture library decodes each strip whole, as TIFF
        # readers at large do
        return _read_tiff_with_pillow(path, what, tiff, why="compressed with PackBits")
    if _picture_kind(path) == "GIF":  # (the image library has no GIF reader)
        return _read_still_gif(path, what)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk(tiff=is_tiff, matrix_dump=odd_matrix, jpeg=jpeg_said, dicom_jpeg=dicom_jpeg, hdf5=hdf5,
                       png=png):
            reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = sitk_reason(exc)
        raw = _dicom_the_image_reader_refuses(path, what, reason)
        if raw is not None:
            return raw
        unread = _unread_tiff_encoding(path) if is_tiff else None
        if unread:  # (the image library's "Sorry, can not handle images with 64-bit samples" said damage)
            raise FetalIQAError(unread) from None
        if "Unable to determine ImageIO" in reason:  # no reader takes it: say what the file is
            raise FetalIQAError(_no_image_reader(path, what)) from None
        if "Unknown PixelType" in reason:  # e.g. a PNG of grey with transparency
            raise FetalIQAError(f"{path}: its pixels are of a kind the image reader does not read ({reason.strip(': ')}; "
                                "grey with transparency, for one). Save the image as grey or RGB.") from None
        if nrrd is not None and "has a direction vector" in reason:
            raise FetalIQAError(_nrrd_fields_beside_directions(path, nrrd)) from None
        if nrrd is not None and "match" in reason.lower():
            raise FetalIQAError(f"{path}: this NRRD's axes do not fit its space as the image reader needs "
                                f"({reason}). Save the {what} as .mha, or as a NRRD with one domain axis per "
                                "dimension of its space.") from None
        raise FetalIQAError(f"{path}: the image header cannot be read ({reason}). The file is damaged "
                            "or not an image; export it again.") from None
    size = tuple(int(s) for s in reader.GetSize())       # (X, Y[, Z[, T]])
    components = int(reader.GetNumberOfComponents())
    if nrrd is not None and components > 1:
        # values per pixel lie on the fastest (first) axis; one marked so after it holds the frames
        kinds = nrrd.get("kinds", "").split()
        listed = [k for k in kinds[1:] if k.lower() in ("list", "vector", "point", "covariant-vector")]
        if listed:
            raise FetalIQAError(f"{path}: the NRRD marks an axis of {components} as '{listed[0]}' (kinds: "
                                f"{' '.join(kinds)}), so its frames would be read as {components} values per "
                                "pixel. Save the sweep as .mha (frames on its last axis) and open that.")
    if member is not None:
        _refuse_frames_of_another_size(path, member, size)
    # a grey TIFF that asks to be turned (EXIF orientation) is read by the image library as RGBA, grey
    # in each colour: a sweep's is made grey again; a label mask's was refused as "4 values per pixel"
    # (one-hot channels) while its sweep, tagged alike, was read and turned. Its one grey is kept.
    oriented_grey = (is_tiff and what == "mask" and components == 4 and tiff.orientation != 1 and tiff.samples == 1
                     and tiff.photometric in (None, 1) and tiff.bits in (None, 8)
                     and all(mode == "L" for _, mode in pages))
    precheck_dims(path, size[::-1], 1 if oriented_grey else components, "mask" if what == "mask" else "sweep")
    itemsize = _sitk_pixel_itemsize(reader) or 8
    bound_volume(path, size[::-1], components, itemsize, mapped=False)
    _precheck_nifti(path, size, components, reader)
    _check_nrrd_length(path, nrrd, size, components, itemsize)
    if nrrd_stored is not None:
        validate.check_inflation(path, validate.checked_product(size) * components * itemsize, nrrd_stored,
                                 MAX_DEFLATE_RATIO)
    metadata = {k: reader.GetMetaData(k)[:META_VALUE_CHARS] for k in reader.GetMetaDataKeys() if k in META_KEYS}
    try:
        with quiet_itk(tiff=is_tiff, matrix_dump=odd_matrix, jpeg=jpeg_said, dicom_jpeg=dicom_jpeg, hdf5=hdf5,
                       png=png):
            image = reader.Execute()
    except RuntimeError as exc:
        reason = sitk_reason(exc)
        # (a Pixel Spacing of 1e-300 makes the image's direction matrix "singular")
        if "spacing" in reason.lower() or "singular matrix" in reason.lower():
            if _looks_like_dicom(path, reader):
                raw = _dicom_without_its_spacing(path)
                if raw is not None:
                    return raw
            raise FetalIQAError(f"{path}: the image reader refuses the file's pixel spacing ({reason}). Fix "
                                "or remove the spacing (DICOM: Pixel Spacing) and export the file again.") from None
        if "Failed to allocate memory" in reason:  # the memory the process may use, not damage
            needed = validate._size_text(validate.checked_product(size) * components * itemsize)
            raise FetalIQAError(f"{path}: out of memory: its pixel data ({needed}) does not fit in the memory free "
                                "now. Close other programs, or use a machine with more memory.") from None
        raw = _dicom_the_image_reader_refuses(path, what, reason)
        if raw is not None:
            return raw
        unread = _unread_tiff_encoding(path) if is_tiff else None
        if unread:  # ("TIFF CODEC 50000 is not supported" was called truncated or damaged)
            raise FetalIQAError(unread) from None
        if "File cannot be read" in reason:  # its "Reason:" is the last system error, often unrelated
            reason = "there is less of it than the header describes"
        compressed = _dicom_compression(path) if _looks_like_dicom(path, reader) else None
        if compressed:  # the decoder's own words ("Failed to change to Implicit Transfer Syntax") say little
            raise FetalIQAError(f"{path}: the frames are compressed as {compressed} and could not be decoded: "
                                "a compression this reader does not decode, frames compressed otherwise than the "
                                "header says, or damaged ones. Export the sweep again, uncompressed if you can.") from None
        raise FetalIQAError(f"{path}: the pixel data cannot be read ({reason}). The file is "
                            "truncated or damaged; copy or export it again.") from None
    is_dicom = _looks_like_dicom(path, reader)
    scale, unit_note = _nrrd_spacing_units(nrrd)
    raw = _raw_from_image(image, path, metadata, dicom_file=path if is_dicom else None,
                          spacing_scale=scale, spacing_unit_note=unit_note, pages=tiff, grey=what == "sweep",
                          spacing_unitless=_nrrd_names_no_unit(nrrd))
    if oriented_grey:
        _keep_one_grey(raw, path)
    damage = [line for line in jpeg_said or () if line.startswith(("Corrupt JPEG data", "Premature end"))]
    if damage:  # (the decoder's own line went to stdout, where `score --json` writes its one line)
        raw.notes.append(f"the JPEG's data is damaged in places (its decoder: '{damage[0][:80]}'): parts of the "
                         "picture may be wrong; export it again if it shows blocks or streaks")
    return raw


def _keep_one_grey(raw: Raw, path: Path) -> None:
    """``raw``, read as RGBA from a grey TIFF (one that asks to be turned), as the grey it holds: one
    value per pixel, its red (the same as its green and blue). Refused as values per pixel, as before,
    where the colours differ (not the grey the TIFF's tags say)."""
    arr = np.asarray(raw.array)
    grey = arr[..., 0]
    if not all(np.array_equal(grey, arr[..., k]) for k in (1, 2)):
        precheck_dims(path, grey.shape, raw.components, "mask")
    raw.array = np.ascontiguousarray(grey)
    raw.components = 1


#: The picture library's page modes read as the image reader reads them (grey of 8, 16 or 32 bits,
#: 32-bit float, RGB), and the numpy type of their samples.
_PILLOW_PAGE_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.int32, "F": np.float32,
                      "RGB": np.uint8}


def _read_tiff_with_pillow(path: Path, what: str, tiff: _TiffPages, why: str | None = None) -> Raw:
    """A TIFF the image library reads wrong or whole, read page by page with the picture library:
    one of 16- or 32-bit samples stored in tiles (the image library reads those, and any that asks
    to be turned, through its 8-bit fallback, which keeps each sample's high byte: a 12-bit sweep
    read at 1/16 of its brightness, scored as "no frame" without a word; and it refused tiles of
    32-bit floats as damaged), and one with pages marked as reduced-resolution copies
    (NewSubfileType bit 0: a thumbnail or preview), which are left out with a note when smaller
    than the frames (the whole file was refused as pages of different sizes) and read as frames,
    with a note, when not (the image library crashed on such a file), and one the image library
    fails to decode (``why`` says how it is stored). The frames come out as the image library reads
    the same data in strips. One that asks to be turned is refused: the picture library turns
    some layouts and not others (and scrambled a transposed page in strips)."""
    from PIL import Image

    unread = _unread_tiff_encoding(path)
    if unread:
        raise FetalIQAError(unread)
    (width, height), mode = tiff.layouts[0]
    why = why or ("in 16- or 32-bit samples" if tiff.high_byte_only else "with pages marked as reduced-resolution copies")
    if tiff.orientation != 1:
        raise FetalIQAError(f"{path}: a TIFF {why} that asks to be shown {_EXIF_ORIENTATIONS[tiff.orientation][2]} "
                            "(its EXIF orientation), which this reader cannot read at full depth and turn. Save the "
                            "frames upright, without the orientation tag, or the sweep as .mha, and open that.")
    signed = _tiff_first_page_fields(path, (339,)).get(339, 1) == 2  # (SampleFormat 2: signed integers)
    kept = [k for k in range(tiff.count) if k not in tiff.reduced]
    dtype = _PILLOW_PAGE_MODES.get(mode)
    if dtype is None or (mode == "I" and not (signed and tiff.bits in (16, 32))):  # (unsigned 32-bit: wrapped)
        kind = _PIL_MODE_NAMES.get(mode, mode)
        why = "in tiles" if tiff.high_byte_only else why
        raise FetalIQAError(f"{path}: a TIFF of {kind} pixels {why}, a layout this reader does not read. "
                            "Save the frames alone, in strips (not tiles), as 8- or 16-bit grey or RGB, or the "
                            "sweep as .mha, and open that.")
    if mode == "I" and tiff.bits == 16:
        dtype = np.int16  # (the picture library widens signed 16-bit samples to 32 bits)
    components = 3 if mode == "RGB" else 1
    shape = (len(kept), height, width) if len(kept) > 1 else (height, width)
    precheck_dims(path, shape, components, "mask" if what == "mask" else "sweep")
    bound_volume(path, shape, components, np.dtype(dtype).itemsize, mapped=False)
    frames = np.empty((len(kept), height, width) + ((3,) if components > 1 else ()), dtype=dtype)
    try:
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                for i, k in enumerate(kept):
                    im.seek(k)
                    frames[i] = np.asarray(im).astype(dtype, copy=False)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise FetalIQAError(f"{path}: the pixels of this TIFF {why} cannot be decoded ({str(exc)[:120]}): it is "
                            "damaged, or stored in a way the picture library does not decode. Save the frames "
                            "alone, in strips (not tiles), uncompressed or with LZW or deflate, and open that.") from None
    if components > 1 and (tiff.bits or 8) > 8:
        _refuse_narrow_wide_colour(path, frames)
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(frames if len(kept) > 1 else frames[0], isVector=components > 1)
    image.SetSpacing(_tiff_print_spacing(tiff) + ((1.0,) if len(kept) > 1 else ()))
    raw = _raw_from_image(image, path, {}, pages=tiff, grey=what == "sweep")
    if tiff.reduced:
        pages = ", ".join(str(k + 1) for k in tiff.reduced[:5]) + (", ..." if len(tiff.reduced) > 5 else "")
        raw.notes.append(f"{len(tiff.reduced)} page(s) of the TIFF are marked as reduced-resolution copies (a "
                         f"thumbnail or preview: page {pages}) and are left out; the other {len(kept)} are the frames")
    if tiff.marked:
        raw.notes.append(f"{tiff.marked} page(s) of the TIFF are marked as reduced-resolution copies (a thumbnail or "
                         "preview) but are as large as the frames: they are read as frames")
    return raw


def _refuse_narrow_wide_colour(path: Path, frames: np.ndarray) -> None:
    """Colour samples of 16 bits reach FetalIQA as their high byte only (both libraries read them
    so from tiles): the picture is right when the values span the 16 bits (an 8-bit picture stored
    x257), and near black when they span 12 or 14 of them. Refused then, as it would be misread."""
    if np.count_nonzero(frames >= 64) < frames.size * 0.001:  # (none in the upper three quarters of 16 bits)
        raise FetalIQAError(f"{path}: a TIFF of 16-bit colour stored in tiles whose values do not span the 16 "
                            "bits: only each value's high byte can be read here, which would show the frames "
                            "near black. Save the frames in strips (not tiles), or as 8-bit RGB or grey, and "
                            "open that.")


def _tiff_print_spacing(tiff: _TiffPages) -> tuple[float, float]:
    """The (x, y) size a TIFF's printing resolution gives a pixel, in mm, as the image reader
    reports it (25.4 mm an inch over its dots per inch; 1 without one): never a calibration, but
    said as such in the reason the pixel size is unknown."""
    sizes = []
    for value in tiff.resolution:
        try:
            dpi = float(value)
        except (TypeError, ValueError):
            dpi = 0.0
        sizes.append(25.4 / dpi if math.isfinite(dpi) and dpi > 0 else 1.0)
    return sizes[0], sizes[1]


def _read_still_gif(path: Path, what: str) -> Raw:
    """A GIF of one picture, read as a one-frame picture as PNG and JPEG ones are (the image
    library has no GIF reader, and a valid still GIF was called "damaged or cut short"): its
    palette is turned into grey where every colour in it is a grey, else into RGB. An animated
    GIF is refused as video; one the picture library cannot read either is called damaged."""
    from PIL import Image

    head = _head(path, 10)
    screen = struct.unpack("<HH", head[6:10]) if len(head) == 10 else (0, 0)
    if min(screen) > 0:  # (a screen past the picture library's bomb limit was "damaged or cut short")
        bound_volume(path, screen[::-1], 3, 1, mapped=False)
    if _gif_frames(path) > 1:
        raise FetalIQAError(_no_image_reader(path, what))
    try:
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                precheck_dims(path, (im.size[1], im.size[0]), 1, "mask" if what == "mask" else "sweep")
                bound_volume(path, (im.size[1], im.size[0]), 3, 1, mapped=False)
                rgb = np.asarray(im.convert("RGB"))
    except FetalIQAError:
        raise
    except Exception:  # noqa: BLE001 - any failure of the decoder is the file's
        raise FetalIQAError(_no_image_reader(path, what)) from None
    import SimpleITK as sitk

    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    arr = np.ascontiguousarray(rgb[..., 0]) if grey else rgb
    return _raw_from_image(sitk.GetImageFromArray(arr, isVector=not grey), path, {}, grey=what == "sweep")


def _raw_from_image(image: Any, path: Path, metadata: dict[str, str], dicom_file: Path | None = None,
                    spacing_scale: tuple[float, float] = (1.0, 1.0), spacing_unit_note: str = "",
                    pages: _TiffPages | None = None, grey: bool = True, spacing_unitless: bool = False) -> Raw:
    """``grey``: the pixels are grey levels (a sweep), not labels (a mask: never inverted).
    ``spacing_unitless``: a NRRD header that names no unit for its lengths (read as mm, said so)."""
    import SimpleITK as sitk

    components = int(image.GetNumberOfComponentsPerPixel())
    arr = _keep_alive(sitk.GetArrayViewFromImage(image), image)
    # Rounded to 7 significant digits: NIfTI stores float32 (0.28 would read 0.2800000011920929).
    spacing = tuple(float(f"{s:.7g}") for s in image.GetSpacing())
    if len(spacing) >= 2:
        spacing_mm = (spacing[1], spacing[0])
    else:
        spacing_mm = (1.0, spacing[0] if spacing else 1.0)
    window = padding = frame_windows = None
    ycbcr = False
    notes = []
    regions = calibrations = ()
    aspect = frame_rate = None
    if dicom_file is not None:
        (calibrated, source, note), regions, calibrations = dicom_calibration_and_regions(dicom_file)
        aspect = None if calibrated else dicom_pixel_aspect(dicom_file)
        spacing_mm = calibrated or spacing_mm
        if calibrated and note:
            notes.append(f"pixel spacing: {note}")
        if components == 1 and arr.dtype != np.uint8:
            window, padding, frame_windows = dicom_display(dicom_file, notes)
        if components == 1 and _has_voi_lut_table(dicom_file):
            notes.append("the file's VOI LUT (the grey levels meant for display) is not applied: the frames are "
                         "shown and scored as stored")
        ycbcr = components == 3 and _jfif_labelled_rgb(dicom_file)
        frame_rate = dicom_frame_rate(dicom_file)
    else:
        # (rounded: 0.035 cm read back as 0.35000000000000003 mm)
        spacing_mm = (float(f"{spacing_mm[0] * spacing_scale[0]:.9g}"), float(f"{spacing_mm[1] * spacing_scale[1]:.9g}"))
        source, note = classify_header_spacing(spacing_mm, recorded=True)
        kind = _picture_kind(path) or (full_suffix(path)[1:].upper() if full_suffix(path) in _PICTURE_SUFFIXES else None)
        if kind:
            source, note = SPACING_NONE, ("a GIF picture records no pixel size" if kind == "GIF" else
                                          f"a {kind} picture records at most a printing resolution (dots per "
                                          "inch or per cm), not the size of a pixel in the body")
            pages = pages if pages is not None else _tiff_pages(path)
            calibrated, why = _imagej_calibration(pages)
            if calibrated is not None:
                spacing_mm, source, note = calibrated, SPACING_FROM_IMAGEJ, ""
            elif why:
                note = why
            elif pages.ome:
                note = (f"the TIFF's OME metadata states a pixel size ({pages.ome}), which is not read: of a TIFF, "
                        "only an ImageJ scale is")
            if kind == "TIFF" and pages.photometric == 0 and grey:
                arr = _white_is_zero(arr, components, pages, path)
                notes.append("the TIFF stores white as 0 (MinIsWhite): its grey levels are turned the right way "
                             "round, as picture viewers show them")
            orientation = _exif_orientation(path, pages)
            if orientation in _EXIF_ORIENTATIONS:
                left = _TIFF_READER_LEAVES.get(orientation, 1) if kind == "TIFF" else orientation
                if left in _EXIF_ORIENTATIONS:
                    arr = _upright(arr, components, left)
                turns, _, words = _EXIF_ORIENTATIONS[orientation]
                notes.append(f"the picture is shown {words}, as its EXIF orientation tag asks (picture viewers "
                             "do the same; the pixels are stored otherwise)")
                if turns % 2:  # rows become columns
                    spacing_mm = (spacing_mm[1], spacing_mm[0])
        if spacing_unit_note:
            source, note = SPACING_NONE, spacing_unit_note
        head = _nifti_head(path)
        from_sform = _nifti_sform_only_spacing(head)
        if from_sform is not None and not spacing_unit_note:
            # the one transform the header states: its voxel sizes were left at the format's default
            # (1, checked in the header itself: the image reader has turned it into 1000 mm in a
            # header in metres, and such a file was refused as self-contradictory, 1000 against 0.6 mm)
            spacing_mm, (source, note) = from_sform, classify_header_spacing(from_sform, recorded=True)
            notes.append("pixel spacing: read from the NIfTI header's sform matrix, the only transform it states "
                         "(qform_code 0, voxel sizes left at 1)")
        disagreement = _nifti_spacing_disagreement(head, spacing_mm)
        if disagreement:
            source, note = SPACING_NONE, disagreement
        elif source == SPACING_FROM_HEADER and _nifti_space_unit_code(head) == 0:
            notes.append("pixel spacing: the NIfTI header names no unit for it (xyzt_units 0); read as mm, "
                         "as image readers do")
        elif source == SPACING_FROM_HEADER and _nifti_space_unit_code(head) not in (None, 1, 2, 3):
            # (codes 4-7 are no unit of NIfTI's: the image reader reads the sizes as mm without a word)
            notes.append(f"pixel spacing: the NIfTI header's unit code for it ({_nifti_space_unit_code(head)} in "
                         "xyzt_units) is not a unit NIfTI defines; read as mm, as image readers do")
        elif source == SPACING_FROM_HEADER and spacing_unitless:
            notes.append("pixel spacing: the NRRD header names no unit for it (no 'space units' or 'units'); read "
                         "as mm, as image readers do")
    spacing_mm, source, note = usable_spacing(spacing_mm, source, note)
    axes = spacing if len(spacing) == 3 and full_suffix(path) in (".nii", ".nii.gz", ".nrrd", ".nhdr") else ()
    return Raw(array=arr, components=components, spacing_mm=spacing_mm, metadata=metadata, path=path,
               spacing_source=source, spacing_note=note, window=window, padding=padding, notes=notes,
               frame_windows=frame_windows, ycbcr=ycbcr, regions=regions, region_calibrations=calibrations,
               pixel_aspect=aspect, frame_rate=frame_rate, axes_spacing=axes)


#: ImageJ's scales read (its ``unit=`` line, in any spelling :data:`_LENGTH_UNITS_MM` knows; it
#: writes the micro sign escaped as ``\\u00B5m``): millimetres, micrometres and nanometres (a
#: microscope's habit), a calibration someone set (the pixel-size plausibility check judges its
#: value). Inches and centimetres are not: ImageJ turns a picture's printing resolution into a
#: scale in them (72 dpi became "unit=inch", 0.35 mm per pixel).
_IMAGEJ_MM_PER_UNIT = (1.0, 1e-3, 1e-6)
_IMAGEJ_PRINT_MM_PER_UNIT = (10.0, 25.4)
_IMAGEJ_DESCRIPTION_LIMIT = 1 << 16


def _imagej_fields(desc: Any) -> dict[str, str] | None:
    """The ``key=value`` lines of a TIFF's ImageDescription that ImageJ or Fiji wrote (it starts
    ``ImageJ=``), None for any other description (or one longer than any ImageJ writes)."""
    if not isinstance(desc, str) or not desc.startswith("ImageJ=") or len(desc) > _IMAGEJ_DESCRIPTION_LIMIT:
        return None
    try:  # the tag is read as Latin-1; writers that copy ImageJ's format write UTF-8 ("µm" as two bytes)
        desc = desc.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return dict(line.split("=", 1) for line in desc.splitlines() if "=" in line)


#: EXIF orientation (TIFF tag 274, the same in JPEG's EXIF): what is done to the stored pixels
#: to show them upright, as ``(quarter turns counter-clockwise, flip left-right first, words)``.
_EXIF_ORIENTATIONS = {2: (0, True, "mirrored left to right"), 3: (2, False, "turned 180 degrees"),
                      4: (2, True, "mirrored top to bottom"), 5: (1, True, "transposed"),
                      6: (3, False, "turned 90 degrees clockwise"), 7: (3, True, "transposed the other way"),
                      8: (1, False, "turned 90 degrees counter-clockwise")}


#: What the image library leaves undone of a TIFF's orientation: it reads an oriented TIFF with
#: its flips applied (2-4 whole), not its transposes (5 read as stored, 6 mirrored left to right,
#: 7 turned 180 degrees, 8 mirrored top to bottom), so what remains is a transpose either way.
#: (Applied whole over the library's flips, a TIFF tagged 2-4 came out as stored, and 5-8 wrong.)
_TIFF_READER_LEAVES = {5: 5, 6: 7, 7: 5, 8: 7}


def _known_orientation(value: Any) -> int:
    """An EXIF orientation tag's value, 1 (the stored order) when it is none of 2 to 8."""
    try:
        return int(value) if int(value) in _EXIF_ORIENTATIONS else 1
    except (TypeError, ValueError, OverflowError):
        return 1


def _exif_orientation(path: Path, pages: _TiffPages) -> int:
    """A picture's EXIF orientation (1 to 8; 1, the stored order, when it has none or it cannot be
    read): a TIFF's from the survey of its pages, another picture's from its EXIF block."""
    if _picture_kind(path) == "TIFF":
        return pages.orientation
    try:
        from PIL import Image

        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return _known_orientation(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - no tag read is the stored order, as before
        return 1


def _upright(arr: np.ndarray, components: int, orientation: int) -> np.ndarray:
    """The pixels as a picture viewer shows them under an EXIF ``orientation`` (2 to 8); the
    image's axes are the last two (before the colour values)."""
    turns, mirror, _ = _EXIF_ORIENTATIONS[orientation]
    rows = arr.ndim - 2 - (components > 1)
    if mirror:
        arr = np.flip(arr, axis=rows + 1)
    return np.ascontiguousarray(np.rot90(arr, k=turns, axes=(rows, rows + 1)))


def _imagej_calibration(pages: _TiffPages) -> tuple[tuple[float, float] | None, str]:
    """The pixel size of a TIFF that ImageJ or Fiji wrote after its scale was set (Analyze > Set
    Scale): the ImageDescription starts ``ImageJ=`` and names a length ``unit=``, and X/YResolution
    count pixels per that unit. That is a calibration someone made, not a printing resolution.
    ``(None, "")`` for any other TIFF (and for ImageJ's own "pixel"); ``(None, why)`` when ImageJ's
    unit is not a length. From the survey of the TIFF's pages (:func:`_tiff_pages`)."""
    fields = pages.imagej
    xres, yres = pages.resolution
    if fields is None:
        return None, ""
    unit = fields.get("unit", "").strip()
    if unit.lower() in ("", "pixel", "pixels"):
        return None, ""
    factor = _imagej_unit_mm(unit)
    if factor in _IMAGEJ_PRINT_MM_PER_UNIT:
        return None, (f"the TIFF's ImageJ scale is in '{unit[:20]}', the unit in which ImageJ also writes a "
                      "picture's printing resolution (dots per inch or per cm), so it may be no size in the body "
                      "and is not used; a scale set in mm, micrometres or nanometres (Analyze > Set Scale) is read, "
                      "or give the pixel size with --spacing")
    if factor not in _IMAGEJ_MM_PER_UNIT:
        what = "not a length" if factor is None else "a length no ultrasound pixel is measured in here"
        return None, (f"the TIFF's ImageJ scale is in '{unit[:20]}', {what}: a scale set in mm, micrometres or "
                      "nanometres is read, or give the pixel size with --spacing")
    try:
        per_col = float(xres)
        per_row = float(yres) if yres is not None else per_col
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None, ""
    if not (math.isfinite(per_col) and math.isfinite(per_row) and per_col > 0 and per_row > 0):
        return None, ""
    row_factor = factor
    yunit = fields.get("yunit", "").strip()
    if yunit and yunit.lower() != unit.lower():  # ImageJ writes it when rows are measured in another unit
        row_factor = _imagej_unit_mm(yunit)
        if row_factor is None:
            return None, (f"the TIFF's ImageJ scale gives its rows in '{yunit[:20]}', which is not a length: a scale "
                          "set in mm, micrometres or nanometres is read, or give the pixel size with --spacing")
    return (float(f"{row_factor / per_row:.9g}"), float(f"{factor / per_col:.9g}")), ""


def _imagej_unit_mm(unit: str) -> float | None:
    """Millimetres in one of ImageJ's length units (it escapes µ as ``\\u00B5``); None for no length."""
    return 1e-3 if unit.lower() == "\\u00b5m" else _LENGTH_UNITS_MM.get(unit.lower())


#: Picture formats the image reader also opens: their resolution is for printing, not a calibration.
_PICTURE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Their first bytes: the image reader recognises them by content, whatever the file's name.
_PICTURE_MAGIC = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
                  (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"))


def _picture_kind(path: Path) -> str | None:
    """"TIFF", "PNG", "JPEG", "GIF" or "BMP" for a picture file, by its first bytes (a TIFF named
    ``.dat`` or without a suffix is opened by the image reader all the same, and its 72 dpi was read
    as a pixel size of 0.35 mm from the "file header"); None for anything else."""
    head = _head(path, 8)
    for magic, kind in _PICTURE_MAGIC:
        if head.startswith(magic):
            return kind
    return None


#: TIFF field types by size in bytes (BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE, UNDEFINED, SSHORT,
#: SLONG, SRATIONAL, FLOAT, DOUBLE, IFD, LONG8, SLONG8, IFD8), and the struct letter of those a
#: page's size and pixel places are written in.
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8,
                    17: 8, 18: 8}
_TIFF_INTEGER_LETTERS = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
#: A page's width and height, and where its strips (or tiles) lie and how long they are; and what
#: decides how long they must be when stored uncompressed or decoded (bits and samples per pixel,
#: compression, photometric, rows per strip, planar configuration, tile width and length, SGI's
#: ImageDepth), and how they are decoded (predictor, sample format).
_TIFF_PIXEL_TAGS = (256, 257, 273, 279, 324, 325, 258, 259, 262, 277, 278, 284, 322, 323, 32997, 317, 339)
_TIFF_PIXEL_TAG_SET = np.zeros(1 << 16, bool)  # (by tag number: a directory's entries picked at once)
_TIFF_PIXEL_TAG_SET[list(_TIFF_PIXEL_TAGS)] = True


def _damaged_tiff(path: Path, why: str) -> FetalIQAError:
    return FetalIQAError(f"{path}: a TIFF file whose contents cannot be read: it is damaged or cut short ({why}). "
                         "Copy or export it again.")


class _TiffLayout(NamedTuple):
    """How a TIFF lays out its directories (classic, or BigTIFF: 8-byte offsets and counts)."""

    order: str      # struct's byte order: "<" (II) or ">" (MM)
    first: int      # where the first page's directory lies
    count_fmt: str  # struct letter of a directory's entry count
    entry: int      # bytes per directory entry
    inline: int     # bytes of an entry's value field, and of an offset


def _tiff_layout(path: Path, head: bytes) -> _TiffLayout | None:
    """:class:`_TiffLayout` from a file's first 16 bytes; None for a file that is no TIFF."""
    if head[:2] not in (b"II", b"MM") or _picture_kind(path) != "TIFF":
        return None
    order = "<" if head[:2] == b"II" else ">"
    if struct.unpack(order + "H", head[2:4])[0] == 43:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        return _TiffLayout(order, struct.unpack(order + "Q", head[8:16])[0], "Q", 20, 8)
    return _TiffLayout(order, struct.unpack(order + "I", head[4:8])[0], "H", 12, 4)


def _refuse_damaged_tiff(path: Path, sweep: bool = False) -> None:
    """A TIFF's directories (one per page) form a chain of file offsets, and each names where its
    pixels lie. The chain and those places are checked here first (offsets only, no pixels): a
    chain that points back to an earlier directory made the image library loop forever inside its
    C code, where neither Ctrl-C nor SIGTERM reached it; and the image library reads the pages it
    reaches, so a file cut short (an interrupted copy) or with a damaged directory was scored as
    fewer frames, or with made-up ones, without a word. A chain longer than the frame limit is
    refused here, where it passes the limit: the image library counts pages by walking them all,
    which took more than ten minutes for a million one-pixel pages. For a ``sweep``, frames smaller
    than any sweep's (the largest page's size) are refused here too, before pages are surveyed."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            layout = _tiff_layout(path, fh.read(16))
            if layout is None:
                return
            order, offset, count_fmt, entry, inline = layout
            next_fmt = "Q" if inline == 8 else "I"
            seen: set[int] = set()
            largest = (0, 0)  # (width, height) of the largest page
            while offset and len(seen) <= validate.MAX_FRAMES:
                page = len(seen) + 1
                if offset in seen:
                    raise FetalIQAError(f"{path}: the TIFF's list of pages loops back on itself (page {page} "
                                        "is an earlier one again): the file is damaged or crafted, and is not read. "
                                        "Export the sweep again.")
                if offset < 8 or offset + struct.calcsize(count_fmt) > size:
                    where = "inside the file's header" if offset < 8 else f"past the end of the file ({size} bytes)"
                    raise _damaged_tiff(path, f"page {page}'s directory would lie at byte {offset}, {where}")
                seen.add(offset)
                fh.seek(offset)
                raw = fh.read(struct.calcsize(count_fmt))
                count = struct.unpack(order + count_fmt, raw)[0]
                at = offset + len(raw) + count * entry
                if count > 0xFFFF or at + struct.calcsize(next_fmt) > size:  # (a classic TIFF's most)
                    raise _damaged_tiff(path, f"page {page}'s directory runs past the end of the file")
                table = np.frombuffer(fh.read(count * entry), dtype=[
                    ("tag", order + "u2"), ("kind", order + "u2"), ("number", order + next_fmt),
                    ("field", f"V{inline}")])
                wanted = table[_TIFF_PIXEL_TAG_SET[table["tag"]]].tolist()  # (no loop over every entry)
                entries = {int(tag): (int(kind), int(number), bytes(field)) for tag, kind, number, field in wanted}
                width, height = _check_tiff_page(path, fh, order, size, inline, page, entries)
                if width * height > largest[0] * largest[1]:
                    largest = (width, height)
                fh.seek(at)
                offset = struct.unpack(order + next_fmt, fh.read(struct.calcsize(next_fmt)))[0]
    except (OSError, struct.error):
        return
    if len(seen) > validate.MAX_FRAMES:
        raise FetalIQAError(f"{path}: the TIFF holds more than {validate.MAX_FRAMES} pages (frames); at most "
                            f"{validate.MAX_FRAMES} are accepted (an ACOUSLIC case has 840). The recording is not "
                            "one sweep; export the sweep again.")
    if sweep and seen:  # (here, from the directories: a survey of 19 000 pages of 16 x 16 took 54 s to refuse)
        check_frame_shape((len(seen), largest[1], largest[0]), path)


#: TIFF compressions (tag 259) the image reader decodes: none, LZW, JPEG, deflate (both codes), PackBits.
_TIFF_DECODED = (1, 5, 7, 8, 32773, 32946)
#: Names of other compressions writers use (tifffile, libtiff, GDAL, ImageJ's plugins).
_TIFF_COMPRESSION_NAMES = {2: "CCITT Group 3 (1-bit)", 3: "CCITT fax 3 (1-bit)", 4: "CCITT fax 4 (1-bit)",
                           6: "old-style JPEG", 32809: "ThunderScan", 32909: "PixarLog", 33003: "JPEG 2000",
                           33004: "JPEG 2000", 33005: "JPEG 2000", 34712: "JPEG 2000", 34887: "LERC",
                           34892: "lossy JPEG", 34925: "LZMA", 34933: "PNG", 34934: "JPEG XR",
                           50000: "Zstandard", 50001: "WebP", 50002: "JPEG XL", 52546: "JPEG XL"}


def _tiff_first_page_fields(path: Path, tags: tuple[int, ...]) -> dict[int, int]:
    """The first value of each of ``tags`` that a TIFF's first page holds (integer fields only),
    read from its directory alone; empty for other files or when it cannot be read."""
    found: dict[int, int] = {}
    try:
        with open(path, "rb") as fh:
            layout = _tiff_layout(path, fh.read(16))
            if layout is None:
                return found
            order, offset, count_fmt, entry, inline = layout
            fh.seek(offset)
            count = struct.unpack(order + count_fmt, fh.read(struct.calcsize(count_fmt)))[0]
            table = fh.read(min(count, 0xFFFF) * entry)
            for k in range(len(table) // entry):
                tag, kind = struct.unpack(order + "HH", table[k * entry:k * entry + 4])
                letter = _TIFF_INTEGER_LETTERS.get(kind)
                if tag not in tags or letter is None:
                    continue
                size = _TIFF_TYPE_SIZES[kind]
                field = table[k * entry + entry - inline:(k + 1) * entry]
                if size > inline:
                    continue
                found[tag] = struct.unpack(order + letter, field[:size])[0]  # (the first value lies first)
    except (OSError, struct.error):
        return {}
    return found


def _unread_tiff_encoding(path: Path) -> str | None:
    """One line saying what in a TIFF the image reader cannot decode and what to do, when it is
    its compression (Zstandard, LZMA, ...) or its 64-bit samples, which the image library's own
    words called truncated or damaged: copying the file again cannot help. None otherwise."""
    fields = _tiff_first_page_fields(path, (258, 259, 339))
    compression, bits, kind = fields.get(259, 1), fields.get(258), fields.get(339, 1)
    if compression not in _TIFF_DECODED:
        name = _TIFF_COMPRESSION_NAMES.get(compression, "a compression")
        return (f"{path}: the TIFF's pixels are compressed with {name} (TIFF compression {compression}), which "
                "this reader does not decode. Save the frames uncompressed or with LZW or deflate compression and "
                "open that.")
    if bits == 64:
        what = "floating-point numbers" if kind == 3 else "integers"
        return (f"{path}: the TIFF holds 64-bit {what}, which the image reader does not read. Save the frames "
                "as 32-bit float or as 8- or 16-bit integers (or the sweep as .mha) and open that.")
    return None


def tiff_compressed_without_predictor(path: Path) -> str | None:
    """The name of a TIFF's compression ("LZW", "deflate") when its first page's pixels are
    compressed with one that a Predictor goes with and its Predictor tag says none; None
    otherwise. Pixels stored with a predictor under a tag saying none decode to noise whose columns
    are far less alike than its rows (-0.41 and 0.02 in one such sweep), which no length shows,
    and which was put down to frames stored along another axis alone."""
    if _picture_kind(path) != "TIFF":
        return None
    fields = _tiff_first_page_fields(path, (259, 317))
    if fields.get(259) not in _TIFF_PREDICTED or fields.get(317, 1) != 1:
        return None
    return "LZW" if fields[259] == 5 else "deflate"


def _check_tiff_page(path: Path, fh: BinaryIO, order: str, size: int, inline: int, page: int,
                     entries: dict[int, tuple[int, int, bytes]]) -> tuple[int, int]:
    """Refuses a TIFF page without its size or its pixels' places (a directory read from the wrong
    bytes), or whose pixels lie past the end of the file (cut short); its (width, height)."""
    def values(tag: int, most: int | None = None) -> np.ndarray | None:
        if tag not in entries:
            return None
        kind, number, field = entries[tag]
        letter = _TIFF_INTEGER_LETTERS.get(kind)
        if letter is None or number < 1:
            raise _damaged_tiff(path, f"page {page}'s field {tag} is of no kind a TIFF writes there")
        number = number if most is None else min(number, most)
        nbytes = number * _TIFF_TYPE_SIZES[kind]
        if nbytes <= inline:
            data = field[:nbytes]
        else:
            where = struct.unpack(order + ("Q" if inline == 8 else "I"), field)[0]
            if where + nbytes > size:
                raise _damaged_tiff(path, f"page {page}'s list of where its pixels lie runs past the end of the file")
            fh.seek(where)
            data = fh.read(nbytes)
        return np.frombuffer(data, dtype=np.dtype(letter).newbyteorder(order)).astype(np.uint64)

    width, height = values(256), values(257)
    places, lengths = values(273), values(279)
    if places is None:
        places, lengths = values(324), values(325)
    if width is None or height is None or places is None or not width[0] or not height[0]:
        raise _damaged_tiff(path, f"page {page} names no size or no place for its pixels")
    # (8 bytes of header, 16 for a BigTIFF: twice the inline size; an empty strip or tile may be at 0)
    held = places if lengths is None else places[:len(lengths)][lengths[:len(places)] > 0]
    if held.size and int(held.min()) < 2 * inline:
        # every page's strips placed at offset 0 read as identical frames of the header's bytes
        raise _damaged_tiff(path, f"page {page}'s pixels are placed in the file's header")
    if lengths is not None:
        n = min(len(places), len(lengths))
        ends = np.minimum(places[:n], size + 1) + np.minimum(lengths[:n], size + 1)  # (no wrap past 2**64)
        if n and int(ends.max()) > size:
            raise _damaged_tiff(path, f"page {page}'s pixels run past the end of the file, at {size} bytes")

    def optional(tag: int) -> list[int] | None:  # (a field of an odd kind: the image reader's to judge)
        if tag not in entries:
            return None
        kind, number, field = entries[tag]
        letter = _TIFF_INTEGER_LETTERS.get(kind)
        if letter is None or not 1 <= number or number * _TIFF_TYPE_SIZES[kind] > inline:
            try:  # (a few samples' bits: the first 16 of many, as a page of 96 samples a pixel was taken for 1-bit)
                found = values(tag, most=16) if letter is not None and 1 <= number else None
            except FetalIQAError:
                return None
            return None if found is None else [int(v) for v in found]
        return list(struct.unpack(order + letter * number, field[:number * _TIFF_TYPE_SIZES[kind]]))

    if lengths is not None:
        _check_tiff_page_length(path, fh, page, int(width[0]), int(height[0]), places, lengths, optional,
                                tiled=273 not in entries)
    return int(width[0]), int(height[0])


#: Compressions the image reader decodes with a Predictor (LZW, deflate under both codes); and the
#: Predictor values TIFF defines: 1 none, 2 horizontal differencing, 3 floating point.
_TIFF_PREDICTED = (5, 8, 32946)
_TIFF_PREDICTORS = {1: "none", 2: "horizontal differencing", 3: "floating point"}
#: Bytes past a compressed strip's or tile's pixels that pass as padding (a writer's alignment).
_TIFF_PACKBITS_PAD = 16
#: Bytes past an uncompressed strip's pixels a writer may add to align its end (a word's at most).
_TIFF_ALIGN_PAD = 8
#: PackBits pages whose strips' or tiles' decoded lengths are checked: the first these many, then
#: every ``_TIFF_PACKBITS_EVERY``-th. Raw pixels under a PackBits tag fail on the first page; a page
#: between those checked that decodes short is refused by the decoders as damaged, one that decodes
#: long is read cut to its size.
_TIFF_PACKBITS_PAGES, _TIFF_PACKBITS_EVERY = 16, 8


def _check_tiff_page_length(path: Path, fh: BinaryIO, page: int, width: int, height: int, places: np.ndarray,
                            lengths: np.ndarray, field: Any, tiled: bool) -> None:
    """Refuses a TIFF page whose strips or tiles do not hold what its fields say they must (bits
    and samples per pixel, size, rows per strip, tile size): uncompressed, by their lengths (a tiled
    16-bit page whose BitsPerSample said 12 was decoded as 12-bit samples, garbage that correlated
    0.13 with the picture stored, and was scored); compressed with PackBits, by the length each
    decodes to (raw 16-bit pixels under a Compression tag saying PackBits were decoded as noise,
    correlating 0.03 with the picture stored, and scored without a note). A last strip as long as
    a full one (padded) passes, and so do pad bytes of less than a row past any strip's or tile's
    pixels (of fewer than 16 bytes past a PackBits one's). A Predictor TIFF does not define, or a
    floating-point one on integer samples, is refused naming it (the TIFF library's refusal read
    as a file cut short)."""
    compression, photometric = (field(259) or [1])[0], (field(262) or [None])[0]
    bits, samples, planar = field(258) or [1], (field(277) or [1])[0], (field(284) or [1])[0]
    what = f"{path}: the TIFF's page {page} does not hold what its header describes"
    if compression in _TIFF_PREDICTED:
        predictor, kind = (field(317) or [1])[0], (field(339) or [1])[0]
        if predictor not in _TIFF_PREDICTORS or (predictor == 3 and kind != 3):
            said = ("3 (floating point) on integer samples" if predictor in _TIFF_PREDICTORS
                    else f"{predictor}, a value TIFF does not define (1 none, 2 horizontal differencing, "
                         "3 floating point)")
            raise FetalIQAError(f"{what}: its Predictor tag says {said}, so its pixels cannot be decoded; the file "
                                "is damaged or crafted, and is not read. Export the sweep again.")
    if compression not in (1, 32773) or photometric == 6 or not samples or min(bits) < 1 \
            or (field(32997) or [1])[0] > 1:
        return  # (YCbCr is subsampled; a volumetric page, refused later, holds several frames)
    planes = samples if planar == 2 else 1
    per_pixel = bits[0] if planar == 2 else (sum(bits) if len(bits) == samples else bits[0] * samples)
    if tiled:
        tile_w, tile_h = (field(322) or [0])[0], (field(323) or [0])[0]
        if not tile_w or not tile_h:
            return  # (the image reader says what is missing)
        chunk, rows, row = "tile", tile_h, -(-tile_w * per_pixel // 8)
        per_plane = -(-width // tile_w) * -(-height // tile_h)
    else:
        tile_w, rows = width, min((field(278) or [height])[0] or height, height)
        chunk, row, per_plane = "strip", -(-width * per_pixel // 8), -(-height // rows)
    advice = ("its BitsPerSample, SamplesPerPixel, size or tile size is wrong: the file is damaged or crafted, "
              "and is not read. Export the sweep again.")
    if len(lengths) < per_plane * planes:  # (checked first: the count may be huge, the list is not)
        raise FetalIQAError(f"{what}: it lists {len(lengths)} {chunk}(s), where {width} x {height} pixels in "
                            f"{chunk}s of {tile_w} x {rows} need {per_plane * planes}; {advice}")
    depth = f"{bits[0]}-bit samples" + (f", {samples} a pixel" if samples > 1 else "")
    stored = np.asarray(lengths[:per_plane * planes], dtype=np.uint64)  # (pages of many tiles: no loop)
    high = np.full(per_plane, rows) if tiled else np.minimum(rows, height - np.arange(per_plane) * rows)
    needed = np.tile(high * row, planes).astype(np.uint64)
    padded = np.zeros(per_plane, bool)
    padded[-1] = not tiled  # (a last strip as long as a full one)
    if compression == 32773:
        if page > _TIFF_PACKBITS_PAGES and page % _TIFF_PACKBITS_EVERY:
            return  # (the walk is a loop over the runs: 5 s for 300 frames of 744 x 562, on every opening)
        for k in range(min(per_plane * planes, len(places))):
            fh.seek(int(places[k]))
            data = fh.read(int(stored[k]))
            full = padded[k % per_plane] and int(needed[k]) != rows * row
            wants = (int(needed[k]), rows * row) if full else (int(needed[k]),)
            got = [_packbits_length(data, want) for want in wants]
            if not any(out == want and 0 <= len(data) - used < _TIFF_PACKBITS_PAD
                       for (out, used), want in zip(got, wants)):
                (out, used), want = got[0], wants[0]
                said = (f"{out} bytes, not the {want}" if out < want and used <= len(data) else
                        f"less than the {want} bytes" if used > len(data) else f"more than the {want} bytes")
                raise FetalIQAError(
                    f"{what}: its {chunk} {k + 1}, compressed with PackBits, decodes to {said} that {tile_w} x "
                    f"{int(high[k % per_plane])} pixels of {depth} fill; its Compression tag, BitsPerSample, "
                    "SamplesPerPixel, size or tile size is wrong: the file is damaged or crafted, and is not read. "
                    "Export the sweep again.")
        return
    # (a few pad bytes past the pixels pass: less than a row's more cannot be another bit depth)
    wrong = ((stored < needed) | (stored >= needed + np.uint64(row))) & ~(np.tile(padded, planes)
                                                                           & (stored == rows * row))
    if wrong.any():
        k = int(np.argmax(wrong))
        raise FetalIQAError(f"{what}: its {chunk} {k + 1} holds {int(stored[k])} bytes, where {tile_w} x "
                            f"{int(high[k % per_plane])} pixels of {depth} fill {int(needed[k])}; {advice}")
    # Less than a row more passes as padding, but a whole pixel more on every row of every strip is
    # the rows of an image wider than its ImageWidth says: read at that width, each row starts one
    # pixel further along than the last and the picture is sheared (a writer's padding aligns a
    # strip's end to at most 8 bytes, it does not grow with its rows). Strips of one row are left
    # alone: each row is read from its own place, so the shear cannot arise (one pixel is lost).
    if not tiled and per_pixel % 8 == 0 and rows > 1:
        pixel = per_pixel // 8  # (bytes a pixel takes in a strip: one sample's in a planar page)
        extra = stored.astype(np.int64) - needed.astype(np.int64)
        rows_k = np.tile(high, planes).astype(np.int64)
        full = ~np.tile(padded, planes) | (per_plane == 1)
        per_row = extra[full] // np.maximum(rows_k[full], 1)
        if (per_row.size and int(extra[full].min()) >= _TIFF_ALIGN_PAD
                and not (extra[full] % np.maximum(rows_k[full], 1)).any()
                and not (per_row % pixel).any() and (per_row == per_row[0]).all()):
            more = int(per_row[0]) // pixel
            raise FetalIQAError(f"{what}: each of its strips holds {more} pixel{'s' if more > 1 else ''} more on "
                                f"every row than its width of {width} says (strip 1: {int(stored[0])} bytes for "
                                f"{int(high[0])} rows); its ImageWidth is wrong, and read at that width the "
                                "picture would be sheared: the file is damaged or crafted, and is not read. "
                                "Export the sweep again.")


def _packbits_runs_cross_rows(path: Path, bits: int | None) -> bool:
    """Whether a PackBits TIFF's first strip (or tile) has a run that carries on from one row into
    the next (TIFF says each row is packed on its own; some writers pack a strip whole). A writer
    does it throughout or nowhere, so the first strip tells. ``bits``: the first page's bits per
    sample. False for other files."""
    fields = _tiff_first_page_fields(path, (256, 259, 273, 277, 279, 284, 322, 324, 325))
    if fields.get(259) != 32773:
        return False
    place, length = fields.get(273, fields.get(324)), fields.get(279, fields.get(325))
    width = fields.get(322, fields.get(256))
    samples = fields.get(277, 1) if fields.get(284, 1) == 1 else 1
    if not place or not length or not width or not bits:
        return False
    row = -(-int(width) * int(samples) * int(bits) // 8)
    try:
        with open(path, "rb") as fh:
            fh.seek(int(place))
            data = fh.read(min(int(length), 1 << 24))
    except OSError:
        return False
    out, at, end = 0, 0, len(data)
    while at < end:
        n = data[at]
        count = n + 1 if n < 128 else 257 - n if n > 128 else 0
        if count and out // row != (out + count - 1) // row:
            return True
        out += count
        at += n + 2 if n < 128 else 2 if n > 128 else 1
    return False


def _packbits_length(data: bytes, want: int) -> tuple[int, int]:
    """``(bytes decoded, bytes read)`` of PackBits ``data`` decoded until ``want`` bytes are out
    or the data ends: a run of headers, each a count of literal bytes that follow (0 to 127: one
    more), or of one byte repeated (-1 to -127: 1 - n times), or nothing (-128). Bytes read past
    the end of ``data``: a last literal run cut short. Lengths only, no pixels: the headers are
    walked, not the bytes they hold."""
    out, at, end = 0, 0, len(data)
    while at < end and out < want:
        n = data[at]
        if n < 128:
            out, at = out + n + 1, at + n + 2
        elif n > 128:
            out, at = out + 257 - n, at + 2
        else:
            at += 1
    return out, at


#: JPEG Baseline and Extended: the syntaxes whose colour streams are JFIF (YCbCr) by default.
_JPEG_LOSSY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")


_PIL_MODE_NAMES = {"1": "1-bit", "L": "8-bit grey", "P": "palette colour", "RGB": "RGB", "RGBA": "RGBA",
                   "CMYK": "CMYK", "I;16": "16-bit grey", "I;16B": "16-bit grey", "I": "32-bit integer",
                   "F": "32-bit float", "LA": "grey with transparency"}


class _TiffPages(NamedTuple):
    """A TIFF's pages: their distinct ``(size, mode)`` layouts, how many there are, and of the first
    page the fields of its ImageJ description (None: not ImageJ's), its X/YResolution and its EXIF
    orientation (1: none), read in the same pass."""

    layouts: list[tuple[tuple[int, int], str]]
    count: int
    imagej: dict[str, str] | None
    resolution: tuple[Any, Any] = (None, None)
    orientation: int = 1
    photometric: int | None = None  # the first page's PhotometricInterpretation (0: white is 0)
    bits: int | None = None  # its BitsPerSample (the first sample's)
    depth: int = 1  # its ImageDepth (SGI's tag 32997: several frames on one page)
    ome: str = ""  # the pixel size its OME-XML description states, as written ("PhysicalSizeX 0.3 mm, ..."); not read
    #: The pages marked as reduced-resolution copies of another (NewSubfileType bit 0: a thumbnail
    #: or preview) and smaller than the largest page, by index; left out of ``layouts``, and of the
    #: frames.
    reduced: tuple[int, ...] = ()
    #: Whether a page (a full-resolution one) of samples wider than 8 bits is stored in tiles or
    #: asks to be turned (EXIF orientation): the image library reads such a file through its 8-bit
    #: fallback, which keeps each sample's high byte.
    high_byte_only: bool = False
    samples: int = 1  # the first full-resolution page's SamplesPerPixel
    #: How many pages are marked as reduced-resolution copies but are as large as the largest page:
    #: frames (the image library skips them, or crashes on them).
    marked: int = 0


def _tiff_pages(path: Path) -> _TiffPages:
    """:class:`_TiffPages` of a TIFF, from one pass over its pages (no layouts, and no count, for
    other files or when they cannot be read)."""
    none = _TiffPages([], 0, None)
    if _picture_kind(path) != "TIFF":
        return none
    try:
        from PIL import Image

        with warnings.catch_warnings(), quiet_native_stderr():  # (damage is the image reader's to say, once)
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                tags = getattr(im, "tag_v2", {})
                imagej = _imagej_fields(tags.get(270))
                ome = _ome_physical_size(tags.get(270))
                resolution, orientation = (tags.get(282), tags.get(283)), _known_orientation(tags.get(274))
                photometric, bits, depth = (_first_int(tags.get(t)) for t in (262, 258, 32997))
                count = int(getattr(im, "n_frames", 1))
                surveyed = []  # (reduced, layout, read by its high bytes, samples per pixel), page by page
                for k in range(min(count, validate.MAX_FRAMES)):
                    im.seek(k)
                    page = getattr(im, "tag_v2", {})
                    surveyed.append((bool((_first_int(page.get(254)) or 0) & 1),
                                     (tuple(im.size), str(im.mode).replace("I;16B", "I;16")),
                                     (_first_int(page.get(258)) or 1) > 8
                                     and (322 in page or _known_orientation(page.get(274)) != 1),
                                     _first_int(page.get(277)) or 1))
        # (a page as large as the largest is a frame whatever its mark: a writer that marked a sweep's
        # frames so lost them, and one blank page was scored)
        largest = max((w * h for _, ((w, h), _), _, _ in surveyed), default=0)
        smaller = [reduced and w * h < largest for reduced, ((w, h), _), _, _ in surveyed]
        marked = sum(page[0] for page in surveyed) - sum(smaller)
        full = [page for page, small in zip(surveyed, smaller) if not small]
        layouts = list(dict.fromkeys(layout for _, layout, _, _ in full))
        reduced = tuple(k for k, small in enumerate(smaller) if small)
        return _TiffPages(layouts, count, imagej, resolution, orientation, photometric, bits, depth or 1, ome,
                          reduced, any(wide for *_, wide, _ in full), full[0][3] if full else 1, marked)
    except Exception:  # noqa: BLE001 - only a better message: the reader's own stands
        return none


def _ome_physical_size(description: Any) -> str:
    """The pixel size an OME-TIFF's OME-XML description states (``PhysicalSizeX 0.3 mm,
    PhysicalSizeY 0.3 mm``; OME's unit is micrometres where none is named), for saying so: it is
    not read as the sweep's calibration. Empty for any other description."""
    text = description.decode("utf-8", "replace") if isinstance(description, bytes) else str(description or "")
    if "<OME" not in text[:4096]:
        return ""
    found = []
    for axis in "XY":
        size = re.search(rf'PhysicalSize{axis}\s*=\s*"([^"]{{1,30}})"', text)
        if size:
            unit = re.search(rf'PhysicalSize{axis}Unit\s*=\s*"([^"]{{1,12}})"', text)
            found.append(f"PhysicalSize{axis} {size.group(1)} {unit.group(1) if unit else 'µm'}")
    return ", ".join(found)


def _first_int(value: Any) -> int | None:
    """A TIFF tag's (first) value as an int; None without one."""
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def _refuse_volumetric_tiff(path: Path, pages: _TiffPages) -> None:
    """A TIFF page holding several frames (SGI's ImageDepth, as tifffile writes a volume with
    ``volumetric=True``): the image library reads its first frame alone, and a sweep of N frames
    was scored as one without a word."""
    if pages.depth > 1:
        raise FetalIQAError(f"{path}: a volumetric TIFF: its page holds {pages.depth} frames (ImageDepth), a layout "
                            "that is not read (only the first frame would be). Save the sweep as .mha, or as a TIFF "
                            "with one page per frame.")


def _white_is_zero(arr: np.ndarray, components: int, pages: _TiffPages, path: Path) -> np.ndarray:
    """The grey levels of a TIFF that stores white as 0 (PhotometricInterpretation 0, MinIsWhite)
    turned the way round picture viewers show them: read as stored, the sweep was its negative
    (the fan's black white) and no frame was chosen. Unsigned integers are inverted over their
    bits per sample; a signed or floating-point one is refused (no range to invert over)."""
    if components != 1:
        return arr
    if not np.issubdtype(arr.dtype, np.unsignedinteger):
        raise FetalIQAError(f"{path}: a TIFF that stores white as 0 (MinIsWhite) in {arr.dtype} values, which "
                            "cannot be turned the right way round. Save the sweep with black as 0 (MinIsBlack), "
                            "or as .mha.")
    top = np.iinfo(arr.dtype).max
    if pages.bits and 1 <= pages.bits < 8 * arr.dtype.itemsize and int(arr.max(initial=0)) < (1 << pages.bits):
        top = (1 << pages.bits) - 1
    return (arr.dtype.type(top) - arr).astype(arr.dtype, copy=False)


def _refuse_imagej_one_page_stack(path: Path, pages: _TiffPages) -> None:
    """ImageJ saves a large stack as one page whose description says how many images follow it
    (``images=N``) with the rest of the frames laid after the first: the image library reads the
    first frame alone, and a sweep of N frames was scored as one without a word."""
    if pages.imagej is None:
        return
    images = _imagej_count(pages.imagej, "images")
    if images > pages.count:
        raise FetalIQAError(f"{path}: ImageJ wrote this stack of {images} images as {pages.count} page(s), its "
                            "layout for large stacks, which is not read (only the first frame would be). Save the "
                            "sweep as .mha, or as a TIFF with one page per frame.")
    _refuse_imagej_hyperstack(path, pages)


def _imagej_count(fields: dict[str, str], key: str) -> int:
    """A count in ImageJ's description (``images``, ``channels``, ``slices``, ``frames``); 1 without one."""
    found = re.fullmatch(r"(\d{1,9})\s*", fields.get(key, ""))
    return int(found.group(1)) if found else 1


def _refuse_imagej_hyperstack(path: Path, pages: _TiffPages) -> None:
    """An ImageJ hyperstack keeps each channel on a page of its own, channel fastest: read page by
    page, a composite of 4 time points in 3 channels was scored as 12 frames. Such a file, one of
    several slices at several time points (slice fastest: the two interleaved as one series), and
    one whose counts do not multiply to its pages, is refused."""
    fields = pages.imagej or {}
    if not any(k in fields for k in ("channels", "slices", "frames")):
        return
    channels, slices, frames = (_imagej_count(fields, k) for k in ("channels", "slices", "frames"))
    if channels > 1:
        raise FetalIQAError(f"{path}: an ImageJ hyperstack of {channels} channels, each stored as a page of its "
                            "own: read as frames, the channels would be scored as separate frames. Split or merge "
                            "the channels in ImageJ (Image > Color) and save the frames as one channel.")
    if slices > 1 and frames > 1:
        raise FetalIQAError(f"{path}: an ImageJ hyperstack of {slices} slices at each of {frames} time points: read "
                            "page by page, the slices of one time point and the next would follow each other as one "
                            "sweep's frames. Keep one of the two in ImageJ (Image > Hyperstacks > Reduce Dimensionality) "
                            "and save that stack.")
    described = channels * slices * frames
    if described != pages.count or ("images" in fields and described != _imagej_count(fields, "images")):
        raise FetalIQAError(f"{path}: the TIFF holds {pages.count} page(s) but its ImageJ description counts "
                            f"{described} ({channels} channel(s) x {slices} slice(s) x {frames} frame(s)): it "
                            "is damaged or was changed after ImageJ saved it. Save the stack again from ImageJ.")


def _no_image_reader(path: Path, what: str) -> str:
    """Why no image reader takes ``path``, from what the file is: a DICOM file of pixels none
    decodes, an archive, a video, a damaged gzip stream, a sweep file named as another kind, or
    nothing known."""
    if has_dicom_magic(path):
        return (f"{path}: a DICOM file whose pixels this reader cannot decode ({_dicom_pixel_format(path)}). "
                "Export the sweep with 8- or 16-bit grey or RGB pixels.")
    packed = _archive_kind(path)
    if packed == "ZIP" and full_suffix(path).lower().endswith(".npz"):  # numpy.savez: a ZIP of .npy files
        return (f"{path}: a NumPy archive of arrays (.npz), which is not read (it records no pixel size). Save "
                f"the {what} as .mha, e.g. an array of frames x height x width with SimpleITK.WriteImage("
                f"SimpleITK.GetImageFromArray(array), '{what}.mha'), and open that.")
    if packed:
        return (f"{path}: a {packed} archive of files, not an image: unpack it and choose the "
                f"{what} file{' (or its folder)' if what == 'sweep' else ''} inside.")
    video = _video_container(path)
    if video:
        return _video_line(path, video)
    if full_suffix(path).endswith(".gz") and not _gzip_readable(path):
        return f"{path}: the file's compressed data is damaged (or it is no gzip file): it cannot be read. Copy or export it again."
    picture = _picture_kind(path)
    if picture:  # (it starts as one: "no supported image header" said nothing of what it is)
        return (f"{path}: a {picture} file whose contents cannot be read: it is damaged or cut short. "
                "Copy or export it again.")
    unread = _unread_picture(path)
    if unread:
        return (f"{path}: a {unread} picture, a format this reader does not read. Save the frames as a "
                f"multi-page TIFF or PNG files (or the sweep as .mha) and open that.")
    if _head(path, 6) == b"\x93NUMPY":  # (was "no supported image header found")
        return (f"{path}: a NumPy array file (.npy), which is not read (it records no pixel size). Save the {what} "
                "as .mha, e.g. an array of frames x height x width with SimpleITK.WriteImage("
                f"SimpleITK.GetImageFromArray(array), '{what}.mha'), and open that.")
    array_file = _array_file_kind(path)
    if array_file:  # (was "no supported image header found": nothing said it was recognised, nor how to convert it)
        loader = "scipy.io.loadmat" if array_file == "a MATLAB file" else "h5py"
        return (f"{path}: {array_file}, which is not read (it records no pixel size image readers know). Load the "
                f"array ({loader}), arrange it as frames x height x width, save it with SimpleITK.WriteImage("
                f"SimpleITK.GetImageFromArray(array), '{what}.mha') and open that.")
    named = _format_by_content(path)
    if named:
        kind, suffix = named
        return (f"{path}: this is a {kind} file, but its name does not end in {suffix}, and image "
                f"readers go by the name: rename it (or a copy) to end in {suffix} and open that.")
    if _head(path, 2) == b"\x1f\x8b":  # (was "no supported image header found": a .mha.gz, a DICOM .dcm.gz)
        inside = _gzip_inner_kind(path)
        return (f"{path}: the file is gzip-compressed{f' ({inside} inside)' if inside else ''}, which image readers "
                f"do not read: decompress it (gunzip, 7-Zip) and open the file it holds.")
    # (a sweep may also be pictures, which the list of sweep formats left out)
    pictures = "; or pictures: a multi-page TIFF, PNG, JPEG or a still GIF, read without a pixel size" if what == "sweep" else ""
    return (f"{path}: not a readable image file (no supported image header found). "
            f"Choose a {what} file in one of: {SUPPORTED_FORMATS}{pictures}.")


#: Where an HDF5 file's signature may lie: at its start or after a user block of 512 bytes
#: times a power of two (MATLAB's v7.3 files keep their 512-byte header there).
_HDF5_SIGNATURE, _HDF5_OFFSETS = b"\x89HDF\r\n\x1a\n", (0, 512, 1024, 2048)


def _array_file_kind(path: Path) -> str:
    """What array file ``path`` is, in words, from its first bytes: a MATLAB file (v5, or v7.3 in
    HDF5) or another HDF5 file; empty for anything else."""
    head = _head(path, max(_HDF5_OFFSETS) + len(_HDF5_SIGNATURE))
    matlab = head[:116].startswith(b"MATLAB ") and b"MAT-file" in head[:116]
    if any(head[at:at + len(_HDF5_SIGNATURE)] == _HDF5_SIGNATURE for at in _HDF5_OFFSETS):
        return "a MATLAB file (v7.3, HDF5)" if matlab else "an HDF5 file"
    return "a MATLAB file" if matlab else ""


def _video_line(path: Path, video: str) -> str:
    """The one line for a video file, whatever its name."""
    return (f"{path}: a video file ({video}); FetalIQA reads sweeps from image files. Export "
            "the sweep's frames as DICOM, .mha, .nrrd or .nii (or a multi-page TIFF) and open that.")


def _gzip_readable(path: Path) -> bool:
    """Whether the start of a gzip file inflates (a header's worth)."""
    try:
        with gzip.open(path, "rb") as fh:
            fh.read(4096)
        return True
    except (OSError, EOFError, zlib.error):
        return False


def _format_by_content(path: Path) -> tuple[str, str] | None:
    """``(kind, suffix)`` of a sweep file its name does not tell (a MetaImage, NRRD or NIfTI-1
    file named otherwise), from its first bytes; None for anything else."""
    head = _head(path, 352)
    if head[:7] == b"NRRD000":
        return "NRRD", ".nrrd"
    first = head.split(b"\n", 1)[0].strip().lower()
    if first.split(b"=")[0].strip() in (b"objecttype", b"ndims", b"comment"):
        return "MetaImage", ".mha"
    if len(head) >= 348 and head[344:347] == b"ni1" and _nifti_size_field(head):
        return None  # the header of a NIfTI pair (.hdr/.img): refused as such under its own name
    if len(head) >= 348 and head[344:347] == b"n+1" and _nifti_size_field(head):
        return "NIfTI", ".nii"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                inner = fh.read(348)
            if inner[344:347] == b"n+1" and _nifti_size_field(inner):
                return "gzip-compressed NIfTI", ".nii.gz"
        except (OSError, EOFError, ValueError, zlib.error):
            return None
    return None


def _gzip_inner_kind(path: Path) -> str:
    """What a gzip-compressed file holds, from its first inflated bytes: "a MetaImage", "a NRRD",
    "a DICOM file", or "" when that is not known (or the stream does not inflate)."""
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(132)
    except (OSError, EOFError, ValueError, zlib.error):
        return ""
    if head[:7] == b"NRRD000":
        return "a NRRD"
    if head.split(b"\n", 1)[0].split(b"=")[0].strip().lower() in (b"objecttype", b"ndims", b"comment"):
        return "a MetaImage"
    if head[128:132] == b"DICM":
        return "a DICOM file"
    return ""


def _nifti_size_field(head: bytes) -> bool:
    """A NIfTI-1 header's sizeof_hdr (348), in either byte order."""
    return head[:4] in ((348).to_bytes(4, "little"), (348).to_bytes(4, "big"))


#: ISO media files (an 'ftyp' box) that hold a still picture, not video: HEIF and AVIF photos.
_STILL_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif", b"avis")


def _head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a file (fewer for a shorter one; none when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _archive_kind(path: Path) -> str | None:
    """'ZIP', '7-Zip', 'tar' or 'RAR' for an archive of files (None for anything else)."""
    head = _head(path, 262)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "ZIP"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7-Zip"
    if head[:4] == b"Rar!":
        return "RAR"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def _video_container(path: Path) -> str | None:
    """The kind of video file ``path`` is, from its first bytes (None for anything else): whatever
    its name (.mp4, .mov, .m4v, .3gp, .mkv, .webm, .avi, .wmv, .flv, .ts, .m2ts, .ogv, .mpg, .rm, .gif)."""
    head = _head(path, 400)
    if head[4:8] == b"ftyp":
        return None if head[8:12] in _STILL_BRANDS else "MP4 / QuickTime"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "QuickTime"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska / WebM"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF animation" if _gif_frames(path) > 1 else None
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "MPEG"
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":  # the ASF header object's GUID
        return "Windows Media"
    if head[:3] == b"FLV":
        return "Flash video"
    if head[:4] == b"OggS":
        return "Ogg"
    if head[:4] == b".RMF":
        return "RealMedia"
    for start, step in ((0, 188), (4, 192)):  # an MPEG transport stream (.ts; .m2ts: 4 bytes before each packet)
        if len(head) > start + 2 * step and head[start] == head[start + step] == head[start + 2 * step] == 0x47:
            return "MPEG transport stream"
    return None


def _unread_picture(path: Path) -> str | None:
    """The name of a picture format the image reader does not open (WebP, still or animated;
    HEIF and AVIF photos), from its first bytes; None for anything else."""
    head = _head(path, 16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in _STILL_BRANDS:
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    return None


def _gif_frames(path: Path) -> int:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - only a better message
        return 1


def _refuse_animated_png(path: Path) -> None:
    """An animated PNG holds frames the image reader never sees (it reads the first): refused,
    as every file whose frames would be left out is."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return
            for _ in range(64):  # the animation control chunk comes before the first image data
                head = fh.read(8)
                if len(head) < 8:
                    return
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if kind == b"acTL":
                    frames = int.from_bytes(fh.read(4), "big")
                    break
                if kind in (b"IDAT", b"IEND"):
                    return
                fh.seek(length + 4, os.SEEK_CUR)
            else:
                return
    except OSError:
        return
    if frames > 1:
        raise FetalIQAError(f"{path}: an animated PNG of {frames} frames; the image reader reads its first frame "
                            f"only. Save the sweep in a format that keeps every frame ({SUPPORTED_FORMATS}).")


def _refuse_mixed_case_nifti(path: Path) -> None:
    """The NIfTI library takes '.nii' and '.NII' but not '.Nii' (and says so on the terminal)."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        tail = name[-len(suffix):]
        if name.lower().endswith(suffix) and tail not in (suffix, suffix.upper()):
            raise FetalIQAError(f"{path}: the image library reads a NIfTI file only when its extension is all "
                                f"lower or all upper case ('{tail}'): rename it to end in '{suffix}'.")


def _photometric(ds: Any) -> str:
    """The Photometric Interpretation as the standard spells it (code strings are upper case;
    some writers send them in lower case or padded)."""
    return str(ds.get("PhotometricInterpretation", "") or "").strip().upper()


def _jfif_labelled_rgb(path: Path) -> bool:
    """Whether a DICOM file says RGB but holds JFIF (YCbCr) JPEG frames, a common export quirk
    (PS3.5 8.2.1 asks for YBR_FULL_422 there): the image reader then hands on YCbCr as RGB."""
    try:
        import pydicom

        ds = dcmread_bounded(str(path), defer_size=1024, force=True)  # the pixel data stays on disk
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        if syntax not in _JPEG_LOSSY or _photometric(ds) != "RGB":
            return False
        element = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
        head = _first_fragment_head(path, getattr(element, "value_tell", None), 11)
        # the first frame's start-of-image, then an APP0 segment named JFIF
        return head is not None and head[:4] == b"\xff\xd8\xff\xe0" and head[6:11] == b"JFIF\0"
    except Exception:  # noqa: BLE001 - cannot tell: the reader's colours stand
        return False


def _dicom_the_image_reader_refuses(path: Path, what: str, reason: str) -> Raw | None:
    """A valid DICOM file in a layout the image reader refuses, read through pydicom
    (:func:`_dicom_through_pydicom`): frames split over several fragments each (PS3.5 A.4: a
    single JPEG frame in 3 fragments was "pixels this reader cannot decode ... Export the sweep
    with 8- or 16-bit grey", for a file that was), or pixels whose Rescale Intercept takes them
    past the image reader's types (a signed 12-bit image with Intercept 2048 was called damaged).
    When pydicom cannot decode them either, one line names the layout and what to do. None for
    any other file: the caller's message stands. ``reason``: the image reader's words."""
    if not (has_dicom_magic(path) or _bare_dicom(path)):
        return None
    layout = _unread_dicom_layout(path, reason)
    if layout is None:
        return None
    raw = _dicom_through_pydicom(path, what)
    if raw is not None:
        return raw
    said, advice = layout
    # (not called valid: a damaged file fails the same way)
    raise FetalIQAError(f"{path}: {said}, and they could not be decoded here (no decoder for them, or they are "
                        f"damaged). {advice}")


def _unread_dicom_layout(path: Path, reason: str) -> tuple[str, str] | None:
    """``(the layout in words, what to do)`` for a DICOM file whose valid layout the image reader
    refuses (:func:`_dicom_the_image_reader_refuses`), None for any other."""
    try:
        import pydicom

        ds = dcmread_bounded(path, defer_size=1024, force=_bare_dicom(path))
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if "Pixel type larger than output type" in reason:  # (the image reader's words for a rescale it cannot hold)
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            if slope != 1 or intercept != 0:
                signed = "signed " if int(ds.get("PixelRepresentation", 0) or 0) else ""
                return (f"its {signed}pixels are rescaled by a Rescale Intercept of {intercept:g} (Slope {slope:g}) "
                        "to values the image reader's pixel types do not hold",
                        "Export the sweep with the values applied (plain 8- or 16-bit grey), or as .mha.")
        if _photometric(ds) == "PALETTE COLOR" and has_segmented_palette(ds):  # (PS3.3 C.7.9.2; was called damaged)
            return ("its colour table is given as Segmented Palette Color LUT Data, which the image reader does "
                    "not read", "Export the sweep as RGB or grey.")
        element = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
        if element is None or syntax is None or str(syntax) in _NATIVE_SYNTAXES:
            return None
        if str(syntax) == _ENCAPSULATED_UNCOMPRESSED:  # (the file was told to be exported as the 8-bit grey it was)
            return (f"its frames are stored in the transfer syntax {syntax.name or 'Encapsulated Uncompressed'} "
                    f"({syntax}), which few readers decode",
                    "Export the sweep as Explicit VR Little Endian (uncompressed) or as JPEG.")
        if "ExtendedOffsetTable" in ds:  # (PS3.5 A.4, 2019; the image reader fails on it with an internal message)
            return ("its compressed frames are indexed by an Extended Offset Table (7FE0,0001)",
                    "Export the file again uncompressed, or compressed without that table.")
        items = _encapsulated_items(path, getattr(element, "value_tell", None))
        frames = _number_of_frames(ds)
        if items is not None and not items.damaged and items.fragments > frames:
            name = getattr(syntax, "name", "") or str(syntax)
            return (f"its compressed frames ({name}) are split over several fragments each ({items.fragments} "
                    f"fragments for {frames} frame(s))",
                    "Export the sweep again uncompressed, or with each frame in one fragment.")
    except Exception:  # noqa: BLE001 - only a better reading: the caller's message stands
        return None
    return None


def _dicom_without_its_spacing(path: Path) -> Raw | None:
    """A DICOM file whose Pixel Spacing is no length (zero, negative, text) is refused whole by
    the image reader; its pixels are decoded by :func:`_dicom_through_pydicom` instead, with the
    spacing unknown unless the ultrasound regions calibrate it, so that --spacing or the View menu
    can set it. None when pydicom cannot decode the pixels either."""
    raw = _dicom_through_pydicom(path, "sweep")
    if raw is not None and raw.spacing_source == SPACING_NONE:
        raw.spacing_note = "the file's Pixel Spacing is not a length the image reader accepts"
    return raw


def _rescaled_type(ds: Any, stored: np.dtype) -> tuple[float, float, np.dtype | None]:
    """A DICOM image's Rescale Slope and Intercept, and the smallest integer type that holds every
    stored value rescaled (None when the rescale gives fractions: float64), as the image reader
    chooses it: a signed 12-bit image with Intercept 2048 reads as 0-4095 integers, so its grey
    levels are those of the same image stored unsigned."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or not intercept.is_integer():
        return slope, intercept, None
    bits = int(ds.get("BitsStored", 8 * stored.itemsize) or 8 * stored.itemsize)
    if int(ds.get("PixelRepresentation", 0) or 0):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    lo, hi = lo + int(intercept), hi + int(intercept)
    for kind in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64):
        if np.iinfo(kind).min <= lo and hi <= np.iinfo(kind).max:
            return slope, intercept, np.dtype(kind)
    return slope, intercept, None


def _dicom_through_pydicom(path: Path, what: str) -> Raw | None:
    """A DICOM file's pixels decoded with pydicom (and the decoders it finds installed) rather
    than the image reader, for valid files the image reader refuses (a Pixel Spacing that is no
    length, frames split over several fragments, signed pixels with a Rescale Intercept): the
    modality rescale applied, MONOCHROME1 inverted, colour as RGB, as the image reader gives them.
    The header's size is checked first, as for any file. None when pydicom cannot decode the
    pixels either. A palette colour image is turned into RGB through its colour table, as the
    image reader does; a segmented table is expanded once for the file, with bounded work
    (:func:`~fetaliqa_core.io.palette.segmented_palette`), and refused in one line when damaged."""
    try:
        import pydicom
        from pydicom.pixels import iter_pixels

        ds = dcmread_bounded(str(path), force=True, defer_size=1024)  # the pixel data stay on disk
        frames, rows, cols = _number_of_frames(ds), int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        _, _, kind = _rescaled_type(ds, np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32))
        itemsize = 8 if kind is None else max(kind.itemsize, (bits + 7) // 8)  # each value, as kept
    except Exception:  # noqa: BLE001 - no header to read: the caller's message stands
        return None
    precheck_dims(path, (frames, rows, cols), samples, "mask" if what == "mask" else "sweep")
    bound_volume(path, (frames, rows, cols), samples, itemsize, mapped=False)
    photometric = _photometric(ds)
    palette = samples == 1 and photometric == "PALETTE COLOR"
    # a segmented colour table: expanded once, its work bounded by its descriptor, before any pixel
    try:
        segmented = segmented_palette(path, ds) if palette and has_segmented_palette(ds) else None
    except FetalIQAError:
        raise
    except Exception:  # noqa: BLE001 - its data not readable here: the caller's message stands
        return None
    arr, decoded = None, 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for decoded, frame in enumerate(iter_pixels(ds), start=1):
                check_cancelled()
                if segmented is not None:
                    frame = segmented.apply(frame)
                elif palette:  # indices into the colour table, as RGB
                    from pydicom.pixels import apply_color_lut

                    frame = apply_color_lut(frame, ds)
                    if frame.dtype == np.uint16:  # a 16-bit table: its colours in 8 bits, as the image reader gives them
                        frame = (frame >> 8).astype(np.uint8)
                elif samples == 1:
                    frame = _rescaled_frame(ds, frame, photometric)
                if arr is None:
                    arr = np.empty((frames, *frame.shape), dtype=frame.dtype)
                arr[decoded - 1] = frame
    except FetalIQAError:
        raise
    except Exception:  # noqa: BLE001 - not decodable here either: the caller's message stands
        return None
    if arr is None or decoded != frames:  # (frames it could not find would be left as they were allocated)
        return None
    components = 3 if palette else samples
    (calibrated, source, note), regions, calibrations = dicom_calibration_and_regions(path)
    spacing_mm, source, note = usable_spacing(calibrated or (1.0, 1.0), source, note)
    grey_levels = components == 1 and arr.dtype != np.uint8
    notes: list[str] = []
    window, padding, frame_windows = dicom_display(path, notes) if grey_levels else (None, None, None)
    if components == 1 and _has_voi_lut_table(path):
        notes.append("the file's VOI LUT (the grey levels meant for display) is not applied: the frames are "
                     "shown and scored as stored")
    return Raw(array=arr, components=components, spacing_mm=spacing_mm, metadata={}, path=path,
               spacing_source=source, spacing_note=note, window=window, padding=padding, notes=notes,
               frame_windows=frame_windows,
               regions=regions, region_calibrations=calibrations,
               pixel_aspect=None if calibrated else dicom_pixel_aspect(path), frame_rate=dicom_frame_rate(path))


def _rescaled_frame(ds: Any, frame: np.ndarray, photometric: str) -> np.ndarray:
    """One grey frame as the image reader gives it: MONOCHROME1 inverted over its stored values,
    then the modality rescale applied (integers kept as integers: :func:`_rescaled_type`)."""
    slope, intercept, kind = _rescaled_type(ds, frame.dtype)
    if photometric == "MONOCHROME1":
        bits = int(ds.get("BitsStored", 8 * frame.dtype.itemsize) or 8 * frame.dtype.itemsize)
        wide = frame.astype(np.int64)  # stored values inverted over their range, as the image reader does
        frame = (-1 - wide) if int(ds.get("PixelRepresentation", 0) or 0) else ((1 << bits) - 1) - wide
    if kind is None:
        return frame.astype(np.float64) * slope + intercept
    if intercept == 0 and frame.dtype == kind:
        return frame
    limits = np.iinfo(kind)
    return np.clip(frame.astype(np.int64) + int(intercept), limits.min, limits.max).astype(kind)


@pydicom_warnings_off()
def dicom_stored_inverted(path: Path) -> bool:
    """Whether ``path`` is a DICOM file of Photometric Interpretation MONOCHROME1 (0 shown white),
    which the image reader inverts: a label mask stored so reads as 255, 254, 253."""
    if path.is_dir() or not (has_dicom_magic(path) or _bare_dicom(path)):
        return False
    try:
        import pydicom

        ds = dcmread_bounded(str(path), stop_before_pixels=True, force=True,
                             specific_tags=["PhotometricInterpretation"])
        return _photometric(ds) == "MONOCHROME1"
    except Exception:  # noqa: BLE001 - only a better message
        return False


def _has_voi_lut_table(path: Path) -> bool:
    """Whether a DICOM header holds a VOI LUT Sequence (0028,3010), a display table."""
    try:
        import pydicom

        ds = dcmread_bounded(str(path), stop_before_pixels=True, force=True, specific_tags=["VOILUTSequence"])
        return bool(len(ds.get("VOILUTSequence", None) or []))  # an empty sequence is no table
    except Exception:  # noqa: BLE001 - only a note
        return False


def _voi_window(item: Any) -> tuple[float, float] | None:
    """The VOI window an item states (the dataset itself, or a Frame VOI LUT item of its functional
    groups), as the values shown black and white; None where it states none usable. PS3.3
    C.11.2.1.2: the first window (a file may list several); LINEAR and LINEAR_EXACT (a SIGMOID
    window is left to the default)."""
    import pydicom

    centre, width = item.get("WindowCenter", None), item.get("WindowWidth", None)
    function = str(item.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if centre is None or width is None or function not in ("LINEAR", "LINEAR_EXACT"):
        return None

    def first(value):  # a file may list several windows: the first is the default
        return value[0] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value

    c, w = float(first(centre)), float(first(width))
    window = None
    if math.isfinite(c) and math.isfinite(w):
        if function == "LINEAR" and w >= 1:
            window = (c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2)
        elif function == "LINEAR_EXACT" and w > 0:
            window = (c - w / 2, c + w / 2)
    return window if window is not None and window[1] > window[0] else None


def _frame_voi_window(group: Any) -> tuple[float, float] | None:
    """The window of one functional group item (shared, or one frame's): its Frame VOI LUT
    Sequence (PS3.3 C.7.6.16.2.10), where an Enhanced file keeps its window."""
    items = group.get("FrameVOILUTSequence", None) or []
    return _voi_window(items[0]) if len(items) else None


#: A display window wider than this many times the range of values a file's pixels can hold
#: (2 ** Bits Stored, rescaled) puts all of them within one of its 256 grey levels: every frame
#: shown through it is one flat grey (a Window Width of 1e300 blacked frames out), so it is not used.
WIDEST_WINDOW = 256


def dicom_display(path: Path, notes: list[str] | None = None
                  ) -> tuple[tuple[float, float] | None, float | None, tuple | None]:
    """From one reading of a greyscale DICOM image's header, in the rescaled values the image
    reader returns: its grey-level window (values shown black and white), its padding value, and
    each frame's own window where frames have different ones; ``None`` where the file has none.
    VOI window: PS3.3 C.11.2.1.2 (:func:`_voi_window`), at the top level or, in an Enhanced file,
    in the shared functional group's Frame VOI LUT, else the first frame's. Each frame's: the
    Frame VOI LUT of each Per-frame Functional Group (C.7.6.16.2.10: frames stored at different
    gains, each shown through its own), one entry a frame, None for a frame stating none; None
    where no frame states one or all state the same. Pixel Padding Value: C.7.5.1.1.2, in stored
    values, so rescaled here. MONOCHROME2 only: a MONOCHROME1 image is inverted by the reader,
    its window is not.

    Not used, each with a note added to ``notes`` (where given): a window wider than
    :data:`WIDEST_WINDOW` times the range of values the pixels can hold (every frame through it
    one flat grey), and frames' own windows given for another number of frames than the file
    holds (they cannot be matched to its frames: one window for all)."""
    try:
        ds = dcmread_bounded(str(path), stop_before_pixels=True, force=True, specific_tags=[
            "PhotometricInterpretation", "WindowCenter", "WindowWidth", "VOILUTFunction",
            "PixelPaddingValue", "RescaleSlope", "RescaleIntercept", "PixelRepresentation", "BitsAllocated",
            "BitsStored", "NumberOfFrames", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"])
        if (_photometric(ds) or "MONOCHROME2") != "MONOCHROME2":
            return None, None, None
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        padding = ds.get("PixelPaddingValue", None)
        pad = None if padding is None else float(padding) * slope + intercept
        pad = pad if pad is not None and math.isfinite(pad) else None
        bits = min(max(int(ds.get("BitsStored", None) or ds.get("BitsAllocated", None) or 16), 1), 64)
        widest = WIDEST_WINDOW * float(1 << bits) * abs(slope)
    except Exception:  # noqa: BLE001 - an odd display header: the default window, never a failure
        return None, None, None
    too_wide = []

    def usable(window: tuple[float, float] | None) -> tuple[float, float] | None:
        if window is not None and not window[1] - window[0] <= widest:
            too_wide.append(window)
            return None
        return window

    try:
        per_frame = tuple(usable(_frame_voi_window(group))
                          for group in ds.get("PerFrameFunctionalGroupsSequence", None) or [])
    except Exception:  # noqa: BLE001 - an odd display header: one window, never a failure
        per_frame = ()
    try:
        window = usable(_voi_window(ds))
        if window is None:  # an Enhanced file's window: its shared functional group, else the first frame's
            shared = ds.get("SharedFunctionalGroupsSequence", None) or []
            window = usable(_frame_voi_window(shared[0])) if len(shared) else None
            if window is None:
                window = next((w for w in per_frame if w is not None), None)
    except Exception:  # noqa: BLE001
        return None, None, None
    distinct = any(w is not None for w in per_frame) and len(set(per_frame)) > 1
    frames = _number_of_frames(ds)
    if distinct and len(per_frame) != frames:
        _add_note(notes, f"the file gives its frames' own display windows (Frame VOI LUT) for {len(per_frame)} "
                         f"frame(s), but holds {frames}: they cannot be matched to its frames, so one window is used "
                         "for all, and frames stored at another gain may look darker or paler than their own window "
                         "shows them")
        distinct = False
    if too_wide:
        _add_note(notes, "the file gives a display window (Window Center/Width) far wider than the range of values "
                         "its pixels can hold (every frame shown through it would be one flat grey): it is not used")
    return window, pad, per_frame if distinct else None


def _add_note(notes: list[str] | None, note: str) -> None:
    """``note`` added to ``notes`` (where given) once: a series' files each say the same."""
    if notes is not None and note not in notes:
        notes.append(note)


def _instance_number(ds: Any) -> int | None:
    value = ds.get("InstanceNumber", None)
    try:
        return None if value is None or str(value).strip() == "" else int(value)
    except (TypeError, ValueError):
        return None


def _image_position(ds: Any) -> tuple | None:
    try:
        value = tuple(round(float(v), 4) for v in ds.get("ImagePositionPatient", None) or ())
    except (TypeError, ValueError):
        return None
    return value if len(value) == 3 else None


def _time_key(ds: Any) -> tuple[str, float] | None:
    """When a DICOM file's image was taken, as ``(which attributes, seconds)``: Acquisition
    DateTime, else Acquisition or Content Date and Time, else a time of day alone; None without
    one that can be read. Only keys of one kind are compared."""
    def seconds_of_day(text: str) -> float | None:
        text = text.strip().replace(":", "")  # (ACR-NEMA wrote HH:MM:SS)
        match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?", text)
        if match is None:
            return None
        hh, mm, ss, frac = match.groups()
        return int(hh) * 3600 + int(mm or 0) * 60 + int(ss or 0) + float(frac or 0)

    def day(text: str) -> int | None:
        text = text.strip()
        return int(text) if re.fullmatch(r"\d{8}", text) else None

    stamp = str(ds.get("AcquisitionDateTime", "") or "").strip()
    match = re.fullmatch(r"(\d{8})([\d.]*)([+-]\d{4})?", stamp)
    if match and seconds_of_day(match.group(2) or "00") is not None:
        return "datetime", int(match.group(1)) * 86400.0 + seconds_of_day(match.group(2) or "00")
    for date_key, time_key in (("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime")):
        d, t = day(str(ds.get(date_key, "") or "")), seconds_of_day(str(ds.get(time_key, "") or ""))
        if d is not None and t is not None:
            return date_key, d * 86400.0 + t
    for time_key in ("AcquisitionTime", "ContentTime"):
        t = seconds_of_day(str(ds.get(time_key, "") or ""))
        if t is not None:
            return time_key, t
    return None


def _across_midnight(seconds: list[float]) -> list[float]:
    """Times of day (seconds) of one short acquisition, made to run on across midnight: the
    acquisition starts after the longest pause between them (23:59:59 before 00:00:01)."""
    ordered = sorted(seconds)
    gaps = np.diff(ordered)
    wrap = ordered[0] + 86400.0 - ordered[-1]
    if not len(gaps) or gaps.max() <= wrap:
        return seconds
    start = ordered[int(np.argmax(gaps)) + 1]
    return [(t - start) % 86400.0 for t in seconds]


def _time_seconds(times: list) -> list[float]:
    """The files' times of one kind in seconds, times of day taken across midnight."""
    seconds = [float(t[1]) for t in times]
    return _across_midnight(seconds) if times[0][0] in ("AcquisitionTime", "ContentTime") else seconds


def _times_disagree(ordered: list[str], members: dict) -> str:
    """A note when the acquisition (or content) times of files put in Instance Number order run
    backwards all along (a writer that numbered the frames from the last): the order used is said,
    not changed. Empty when the times agree, or do not all exist and differ."""
    times = [members[name].time for name in ordered]
    if len(times) < 3 or any(t is None for t in times) or len({t[0] for t in times}) != 1:
        return ""
    seconds = _time_seconds(times)
    steps = np.diff(np.asarray(seconds, dtype=np.float64))
    if steps.size and (steps < 0).all():
        return ("the frames are in the order of their Instance Numbers, but their acquisition times run "
                "backwards along it: if the sweep plays backwards, its files were numbered from the last frame")
    return ""


def _acquisition_order(files: list[str], orders: list[_Member | None]) -> tuple[list[str], str]:
    """A cine's files in acquisition order: by Instance Number when every file has a distinct one
    (PS3.3 C.7.6.1; the series scan sorts by position, which a tracked probe may run backwards);
    else by acquisition (or content) time when every file has a distinct one; else by Image
    Position (the series scan's order) when the files have one each; else by file name with
    numbers compared as numbers (``2`` before ``10``). The answer says which when it is not the
    Instance Number. When a header could not be read, the scan's order. ``orders``: per file,
    :func:`_precheck_dicom`'s result."""
    if any(o is None for o in orders):
        return files, ""
    members: list[_Member] = orders  # type: ignore[assignment]
    numbers = [m.instance for m in members]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        ordered = [name for _, name in sorted(zip(numbers, files))]
        said = [t for t in (_times_disagree(ordered, dict(zip(files, members))), _numbering_gaps(numbers)) if t]
        return ordered, "; ".join(said)
    if not any(n is not None for n in numbers):
        why = "the DICOM files carry no Instance Number"
    else:
        missing = sum(n is None for n in numbers)
        why = ("the DICOM files' Instance Numbers do not order them ("
               + (f"{missing} file(s) without one" if missing else "some are repeated") + ")")
    times = [m.time for m in members]
    if (all(t is not None for t in times) and len({t[0] for t in times}) == 1  # type: ignore[index]
            and len({t[1] for t in times}) == len(times)):  # type: ignore[index]
        seconds = _time_seconds(times)
        return ([name for _, name in sorted(zip(seconds, files))],
                f"{why}; the frames are in the order of their acquisition times")
    positions = [m.position for m in members]
    if all(positions) and len(set(positions)) == len(positions):
        # along the line the positions spread on most (the series scan orders positions only along
        # the slice normal, and falls back to the names' text order otherwise)
        points = np.asarray(positions, dtype=np.float64)
        centred = points - points.mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        axis = axis if axis.sum() >= 0 else -axis
        along = centred @ axis
        if len(set(np.round(along, 4))) == len(files):
            return ([name for _, name in sorted(zip(along.tolist(), files))],
                    f"{why}; the frames are in the order of their Image Positions")

    def natural(name: str) -> list:
        return [int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", Path(name).name)]

    return sorted(files, key=natural), f"{why}; the frames are in the order of the file names"


def _numbering_gaps(numbers: list[int]) -> str:
    """What a series numbered frame by frame (Instance Numbers mostly one apart) says of the
    numbers it lacks: files removed from it (a copy that left some behind) are frames missing from
    the sweep, which the series read without them, no word said. '' without such gaps, or where
    the numbers do not count frames (a constant step, or far more missing than there are files)."""
    ordered = sorted(int(n) for n in numbers)
    steps = np.diff(ordered)
    if len(ordered) < 3 or (steps == steps[0]).all() or float(np.median(steps)) != 1.0:
        return ""
    lacking = int(steps.sum()) + 1 - len(ordered)
    if not 0 < lacking <= len(ordered) // 2:
        return ""
    gaps = [(int(a) + 1, int(b) - 1) for a, b in zip(ordered[:-1], ordered[1:]) if b - a > 1]
    shown = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in gaps[:4]) + (" ..." if len(gaps) > 4 else "")
    return (f"the series' files are numbered {ordered[0]}-{ordered[-1]} (Instance Number), but {lacking} of those "
            f"numbers have no file here ({shown}): frames missing from the sweep, which jumps there. Copy the whole "
            "series again if they were left behind")


def _name_pattern(name: str) -> str:
    """A file's name with its runs of digits set aside (``IM_0007`` -> ``im_#``, ``f2.dcm`` ->
    ``f#.dcm``): the files of one series, numbered by the system that wrote them, share it."""
    return re.sub(r"\d+", "#", name.lower())


def _damaged_members(left_out: list[Path], members: list[str]) -> list[str]:
    """The files among ``left_out`` (those the series scan left out) that are damaged files of
    the series whose files are ``members``, each named with what is wrong with it: read without
    them, the sweep would have a frame missing and no word said. A file counts as one on
    evidence, not on its being there:

    - it is DICOM (by its magic) and its header cannot be parsed, or holds nothing past the file
      meta (cut inside it), or stops inside an element;
    - it is DICOM of the series (its Series Instance UID) with pixel data, or without them but of
      the same kind of object as the series' files (SOP Class): one cut before its pixels;
    - it is named as the series' files are (the same name with its digits set aside, or a .dcm
      file beside .dcm files) and is empty, no DICOM at all (a link to another file, for one),
      cannot be opened, or is DICOM without the Series Instance UID every image has.

    Files of other series, a DICOMDIR or a report (complete DICOM objects of their own), and files
    by other names that are not DICOM (a README, thumbnails) are left out as before."""
    patterns = {_name_pattern(Path(name).name) for name in members}
    all_dcm = all(name.lower().endswith(".dcm") for name in members)
    reference: tuple[str, str] | None = None  # the series' UID and SOP class, read once if needed
    damaged = []
    for path in left_out:
        named = _name_pattern(path.name) in patterns or (all_dcm and path.name.lower().endswith(".dcm"))
        magic = has_dicom_magic(path)
        if not (named or magic):
            continue
        try:
            empty = path.stat().st_size == 0
            with open(path, "rb"):
                pass
        except OSError as exc:
            damaged.append(f"{path.name} (it cannot be opened: {exc.strerror})")
            continue
        if empty or not (magic or _bare_dicom(path)):
            if named:
                damaged.append(f"{path.name} ({'empty, 0 bytes' if empty else 'not a DICOM file'})")
            continue
        try:
            with warnings.catch_warnings(record=True) as said:  # (what is wrong is said here, once)
                warnings.simplefilter("always")
                ds = dcmread_bounded(path, defer_size=1024, force=not magic)
        except Exception:  # noqa: BLE001 - a DICOM file whose header cannot be parsed is damaged
            damaged.append(f"{path.name} (its header cannot be read)")
            continue
        # (judged before any value is looked at: a value read becomes one without its place in the file)
        stops = len(ds) == 0 or any("End of file" in str(w.message) for w in said) or _stops_inside_an_element(path, ds)
        if reference is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    first = dcmread_bounded(members[0], stop_before_pixels=True)
                reference = tuple(str(first.get(k, "") or "").strip() for k in ("SeriesInstanceUID", "SOPClassUID"))
            except Exception:  # noqa: BLE001 - cannot tell: judged by the other evidence alone
                reference = ("", "")
        series, kind = reference
        has_pixels = "PixelData" in ds
        same_series = bool(series) and str(ds.get("SeriesInstanceUID", "") or "").strip() == series
        same_kind = bool(kind) and str(ds.get("SOPClassUID", "") or "").strip() == kind
        if same_series and has_pixels:
            damaged.append(f"{path.name} (damaged)")
        elif _is_dicomdir(path, ds):
            continue
        elif stops:
            damaged.append(f"{path.name} (cut short)")
        elif not has_pixels and ((same_kind and (same_series or named)) or (named and "SeriesInstanceUID" not in ds)):
            damaged.append(f"{path.name} (cut short before its pixels)")
    return sorted(damaged)


def _stops_inside_an_element(path: Path, ds: Any) -> bool:
    """Whether the file ends before the value of the last element pydicom read from it (``ds``,
    read with values deferred): pydicom keeps such a value cut short without a word (a Series
    Instance UID of 6 characters, for one, in a file cut at 500 bytes). Not judged for a deflated
    file, whose positions are in its inflated data."""
    try:
        if str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "") == DEFLATED_SYNTAX:
            return False
        last = ds.get_item(max(ds.keys()), keep_deferred=True)
        start, length = getattr(last, "value_tell", None), getattr(last, "length", None)
        return (start is not None and length is not None and int(length) != 0xFFFFFFFF
                and int(start) + int(length) > path.stat().st_size)
    except Exception:  # noqa: BLE001 - cannot tell: the other evidence judges
        return False


#: DICOM transfer syntaxes whose pixel data is stored as it is (its length is known in advance).
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
#: Encapsulated Uncompressed Explicit VR Little Endian (PS3.5 A.4.11): native pixels, one fragment a frame.
_ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"


#: JPEG baseline, extended, lossless, lossless SV1, JPEG-LS: each frame starts with an SOI marker.
_JPEG_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                  "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
#: Video transfer syntaxes (PS3.5 8.2.5-8.2.8): MPEG-2, MPEG-4 AVC/H.264, HEVC/H.265.
_VIDEO_SYNTAXES = {**{f"1.2.840.10008.1.2.4.{k}": "MPEG-2" for k in (100, 101)},
                   **{f"1.2.840.10008.1.2.4.{k}": "H.264" for k in (102, 103, 104, 105, 106)},
                   **{f"1.2.840.10008.1.2.4.{k}": "HEVC" for k in (107, 108)}}
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian: every encapsulated syntax is


def _skip_offset_table(fh: BinaryIO, offset: int) -> int | None:
    """Move ``fh`` past the Basic Offset Table item of encapsulated pixel data whose value starts at
    ``offset``: the table's length in bytes, or None when no item starts there."""
    fh.seek(int(offset))
    table = fh.read(8)
    if len(table) != 8 or table[:4] != _ITEM_TAG:
        return None
    length = int.from_bytes(table[4:], "little")
    fh.seek(length, os.SEEK_CUR)
    return length


def _first_fragment_head(path: Path, offset: int | None, n: int = 2) -> bytes | None:
    """The first ``n`` bytes of the first fragment of encapsulated pixel data whose value starts
    at ``offset`` (after the Basic Offset Table item), or None when the layout is not as expected
    (the reader judges it)."""
    if offset is None:
        return None
    try:
        with open(path, "rb") as fh:
            if _skip_offset_table(fh, offset) is None:
                return None
            item = fh.read(8)
            if len(item) != 8 or item[:4] != _ITEM_TAG:
                return None
            head = fh.read(n)
            return head if len(head) == n else None
    except (OSError, ValueError, OverflowError):
        return None


#: More items than this in encapsulated pixel data are not counted further (no sweep has as many frames).
_MAX_ITEMS = 100_000


class _Encapsulated(NamedTuple):
    """What the item headers of encapsulated pixel data say (:func:`_encapsulated_items`)."""

    offsets: int     # entries in the Basic Offset Table (0 when it is empty)
    fragments: int   # fragments after it
    jpeg_starts: int  # fragments that begin as a JPEG stream does (SOI followed by a marker)
    damaged: str = ""  # where the list of items breaks off ("" when it is whole)


def _encapsulated_items(path: Path, offset: int | None) -> _Encapsulated | None:
    """Count the items of encapsulated pixel data whose value starts at ``offset``, reading each
    item's 8-byte header (and a fragment's first 3 bytes) only: no pixel is decoded. None when the
    layout is not as expected (the reader judges it) or there are too many items to count; with
    ``damaged`` said when the items begin as they should but their list breaks off (a fragment
    whose length does not reach the next item, or runs past the end of the file)."""
    if offset is None:
        return None
    try:
        with open(path, "rb") as fh:
            end = os.fstat(fh.fileno()).st_size
            length = _skip_offset_table(fh, offset)
            if length is None:
                return None
            fragments = starts = 0
            while fragments <= _MAX_ITEMS:
                at = fh.tell()
                item = fh.read(8)
                if len(item) != 8 or item[:4] == b"\xfe\xff\xdd\xe0":  # the end, or the sequence delimiter
                    return _Encapsulated(length // 4, fragments, starts)
                if item[:4] != _ITEM_TAG:
                    return _Encapsulated(length // 4, fragments, starts, f"no item where fragment {fragments + 1} "
                                                                         f"should begin, at byte {at}")
                size = int.from_bytes(item[4:], "little")
                if at + 8 + size > end:
                    return _Encapsulated(length // 4, fragments, starts, f"fragment {fragments + 1} runs past the "
                                                                         "end of the file")
                head = fh.read(min(size, 3))
                starts += head == b"\xff\xd8\xff"
                fh.seek(size - len(head), os.SEEK_CUR)
                fragments += 1
            return None
    except (OSError, ValueError, OverflowError):
        return None


def _refuse_frames_of_another_size(path: Path, member: _Member, size: tuple[int, ...]) -> None:
    """Compressed frames of another size than the header's Columns and Rows: the image library
    takes the frames' own size, and then finds none of them in the data (a file declaring 4096 x
    4096 that holds ten 64 x 48 JPEG frames was said to contain "no frames (0 x 48 x 64)")."""
    if member.syntax in _NATIVE_SYNTAXES or member.syntax == DEFLATED_SYNTAX or len(size) < 2:
        return
    try:
        cols, rows = (int(v) for v in member.size)
    except (TypeError, ValueError):
        return
    if (size[0], size[1]) != (cols, rows):
        raise FetalIQAError(f"{path}: the header says its frames are {cols} x {rows} pixels (Columns x Rows), but its "
                            f"compressed frames are {size[0]} x {size[1]}: the header is wrong. Export the file again.")


def _refuse_frames_left_out(path: Path, ds: Any, syntax: str, element: Any, frames: int) -> None:
    """Compressed frames the header does not count: the reader decodes as many as Number of Frames
    says (one when it is missing) and left the rest out without a word (or, counting more than the
    file holds, failed as 'could not be decoded'). Counted from the items' headers; a frame may span
    several fragments, so only a definite mismatch is refused: an offset table's one entry a frame,
    RLE's one fragment a frame (PS3.5 A.4.2), or more fragments beginning as a JPEG stream than
    there are frames."""
    if getattr(element, "length", None) != 0xFFFFFFFF:  # not encapsulated (a deflated file's is inflated)
        return
    items = _encapsulated_items(path, getattr(element, "value_tell", None))
    if items is None:
        return
    if items.damaged:  # the image library took gigabytes of memory over such a file, then named no damage
        raise FetalIQAError(f"{path}: the file's compressed frames are damaged ({items.damaged}): it is damaged "
                            "or cut short. Copy or export it again.")
    extended = ds.get_item("ExtendedOffsetTable", keep_deferred=True) if "ExtendedOffsetTable" in ds else None
    held, exact = 0, True  # exact: the count is the number of frames, not a least one
    if extended is not None and getattr(extended, "length", None) not in (None, 0xFFFFFFFF):
        held = int(extended.length) // 8  # (7FE0,0001): 8 bytes a frame
    elif items.offsets:
        held = items.offsets
    elif syntax == "1.2.840.10008.1.2.5":  # RLE Lossless
        held = items.fragments
    elif syntax in _JPEG_SYNTAXES:
        held, exact = items.jpeg_starts, False
    if held and (held > frames or (exact and held != frames)):
        counted = (f"Number of Frames says {frames}" if "NumberOfFrames" in ds
                   else "Number of Frames is missing (1 frame)")
        raise FetalIQAError(f"{path}: the file holds {held} compressed frames but its header's {counted}: "
                            "reading it would leave frames out or fail. Export the file again with its right "
                            "Number of Frames.")


_TOO_DEEP = ("{path}: the DICOM header nests its sequences deeper than any image file does: it is damaged "
             "or crafted, and is not read. Export the file again.")


def _dicom_syntax(path: Path) -> str:
    """A DICOM file's transfer syntax UID ("" for other files, or when the header cannot be read)."""
    if not (has_dicom_magic(path) or _bare_dicom(path)):
        return ""
    try:
        import pydicom

        ds = dcmread_bounded(path, stop_before_pixels=True, force=_bare_dicom(path), specific_tags=[])
        return str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    except Exception:  # noqa: BLE001 - only how quietly it is read
        return ""


def _dicom_compression(path: Path) -> str | None:
    """The name of a DICOM file's compressed transfer syntax, None when it is not compressed."""
    try:
        import pydicom

        ds = dcmread_bounded(path, stop_before_pixels=True, force=_bare_dicom(path))
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None or str(syntax) in _NATIVE_SYNTAXES:
            return None
        return f"{getattr(syntax, 'name', '') or 'an unknown syntax'} ({syntax})"
    except Exception:  # noqa: BLE001 - only a description
        return None


def _dicom_pixel_format(path: Path) -> str:
    """A DICOM file's pixel format in words (bits, samples, photometric, transfer syntax)."""
    try:
        import pydicom

        ds = dcmread_bounded(path, stop_before_pixels=True)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        return (f"{ds.get('BitsAllocated', '?')} bits allocated, {ds.get('SamplesPerPixel', 1)} sample(s) per pixel, "
                f"{ds.get('PhotometricInterpretation', '?')}, transfer syntax "
                f"{getattr(syntax, 'name', None) or syntax or 'unknown'}")
    except Exception:  # noqa: BLE001 - only a description
        return "its header cannot be parsed"


def _sweep_files_in(folder: Path) -> list[Path]:
    """The sweep files (by their names: .mha, .nrrd, .nii...) directly in ``folder``, sorted."""
    try:
        return sorted(p for p in folder.iterdir()
                      if not p.name.startswith(".") and p.name.lower().endswith(SWEEP_FILE_SUFFIXES) and p.is_file())
    except OSError:
        return []


def _some_names(files: list[Path], most: int = 3) -> str:
    """``a.mha, b.mha`` or ``a.mha, b.mha, c.mha and 4 more``: the files a message names."""
    names = ", ".join(p.name for p in files[:most])
    return names + (f" and {len(files) - most} more" if len(files) > most else "")


def _folder_of_sweep_files(folder: Path, depth: int = 3) -> Path | None:
    """The first folder below ``folder`` (breadth first, at most ``depth`` levels, 200 folders)
    that holds sweep files; None when there is none."""
    level, seen = [folder], 0
    for _ in range(depth):
        below = []
        for parent in level:
            try:
                children = sorted(p for p in parent.iterdir() if not p.name.startswith("."))
            except OSError:
                continue
            for child in children:
                if child.is_dir() and not child.is_symlink():
                    seen += 1
                    if seen > 200:
                        return None
                    try:
                        if any(p.name.lower().endswith(SWEEP_FILE_SUFFIXES) for p in child.iterdir()):
                            return child
                    except OSError:
                        continue
                    below.append(child)
        level = below
    return None


def _refuse_odd_entries(folder: Path, entries: list[Path]) -> None:
    """A series folder holding what is no file (a pipe, a device, a link that leads nowhere or
    back to itself) is refused naming those: the image library's scan blocks on a pipe, and the
    others made it call good files of the series damaged."""
    import stat

    odd = []
    for p in entries:
        try:
            mode = os.stat(p).st_mode
        except OSError:  # a dangling or looping link
            odd.append(f"{p.name} (a link to nothing readable)")
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            odd.append(f"{p.name} ({'a pipe' if stat.S_ISFIFO(mode) else 'a device or socket'})")
        elif stat.S_ISDIR(mode) and p.is_symlink() and p.resolve() in (folder.resolve(), *folder.resolve().parents):
            odd.append(f"{p.name} (a link back to this folder)")
    if odd:
        shown = first_names(odd, 3)
        what = "1 entry that is not a file" if len(odd) == 1 else f"{len(odd)} entries that are not files"
        raise FetalIQAError(f"{folder}: the DICOM series folder holds {what}: "
                            f"{shown}. Remove them, or copy the series' files into a folder of their own.")


def _refuse_too_many_files(folder: Path, dicom: int) -> None:
    """More DICOM files (``dicom``) in a folder than a sweep may have frames (each file holds one frame at
    least): refused on their number, before any is parsed (see :func:`_read_dicom_folder`)."""
    if dicom > validate.MAX_SERIES_FILES:
        raise FetalIQAError(f"{folder}: the folder holds {dicom} DICOM files, more than the "
                            f"{validate.MAX_SERIES_FILES} frames a sweep may have (each file holds one frame at "
                            "least). Choose the folder of one sweep.")


def _refuse_tiny_first_frames(folder: Path, dicom: list[Path]) -> None:
    """A folder of many DICOM files whose first :data:`_SERIES_PROBE` files (by name) all hold
    frames too small to be ultrasound frames (fewer than :data:`MIN_FRAME_PX` pixels a side) is
    refused from those files' headers, as the read series would be, before the others are parsed.
    A folder of no more files than that is judged after the scan, as before (it is quick, and a
    few thumbnails may lie beside a sweep)."""
    if len(dicom) <= _SERIES_PROBE:
        return
    sizes = []
    for path in dicom[:_SERIES_PROBE]:
        try:
            ds = dcmread_bounded(path, stop_before_pixels=True, force=_bare_dicom(path),
                                 specific_tags=["Rows", "Columns"])
            sizes.append((int(ds.Rows), int(ds.Columns)))
        except Exception:  # noqa: BLE001 - a header that cannot be read is judged by the full scan
            return
    if all(min(size) < MIN_FRAME_PX for size in sizes):
        h, w = sizes[0]
        raise FetalIQAError(f"{folder}: frames are {h} x {w} pixels (height x width) in the first {len(sizes)} of its "
                            f"{len(dicom)} DICOM files; at least {MIN_FRAME_PX} x {MIN_FRAME_PX} are needed. Check "
                            "that the folder holds ultrasound frames (not thumbnails).")


def _refuse_deep_nesting(files: list[Path]) -> None:
    """Parse each DICOM file's header (not its pixels) before the image library scans a folder:
    its parser crashes the whole process (no message, no table) on sequences nested thousands
    deep, where pydicom stops at Python's recursion limit."""

    for p in files:
        try:
            dcmread_bounded(p, stop_before_pixels=True, defer_size=256, force=_bare_dicom(p))
        except RecursionError:
            raise FetalIQAError(_TOO_DEEP.format(path=p)) from None
        except ZeroFilledDicom:  # the series reader would find no series in it, and say only that
            raise
        except Exception:  # noqa: BLE001 - not DICOM, or damaged otherwise: the series reader judges it
            continue


class _Member(NamedTuple):
    """What a series file's header says about its place in the series (:func:`_precheck_dicom`)."""

    instance: int | None   # Instance Number
    position: tuple | None  # Image Position (Patient), when it has one that can be read
    study: str             # Study Instance UID ("" without one)
    frames: int            # Number of Frames (1 without one)
    calibration: tuple     # spacing.dataset_calibration of the header: (spacing or None, source, note)
    time: tuple | None     # _time_key: when its image was taken
    pixels: tuple = ()     # how it stores its pixels: bits allocated and stored, samples, photometric
    size: tuple = ()       # its frames' Columns and Rows (as written)
    syntax: str = ""       # its Transfer Syntax UID


def _precheck_dicom(path: Path, single: bool = False) -> _Member | None:
    """The pixel data of an uncompressed DICOM file must be as long as its header says (rows x
    columns x frames x samples x bits allocated): the image reader would otherwise allocate what
    the header claims (gigabytes for a 5 MB file) and fill the missing frames with zeros, or read
    8-bit pixels as 16-bit ones. Checked from the header alone, before any pixel is read.

    Returns what places the file in a series, read from the same header (:class:`_Member`); None
    when pydicom cannot parse the header. ``single``: the file is read as a sweep of its own (not
    as one of a series folder's, where one such object would stop the whole folder): a DICOM
    Segmentation object is refused (:func:`_refuse_dicom_segmentation`)."""
    try:
        import pydicom

        with warnings.catch_warnings(record=True) as said:  # pydicom's warnings would print above our line
            warnings.simplefilter("always")
            ds = dcmread_bounded(path, defer_size=1024, force=_bare_dicom(path))
        if any("End of file reached" in str(w.message) for w in said):
            # an item or sequence of undefined length (compressed frames' fragments) never closed: the
            # file stops inside it (it was called "holds no pixel data", and pydicom's two-line warning
            # printed above that)
            raise FetalIQAError(f"{path}: the file stops before the end of its pixel data (or of another element "
                                "of its header): it is truncated, probably an interrupted copy. Copy or export it "
                                "again.")
        if single:
            _refuse_dicom_segmentation(path, ds)
        _refuse_uncounted_frames(path, ds)
        photometric = _photometric(ds)
        order = _Member(_instance_number(ds), _image_position(ds),
                        str(ds.get("StudyInstanceUID", "") or "").strip(), _number_of_frames(ds),
                        dataset_calibration(ds), _time_key(ds),
                        tuple(str(ds.get(k, "") or "")[:16] for k in ("BitsAllocated", "BitsStored",
                                                                       "SamplesPerPixel")) + (photometric[:16],),
                        tuple(str(ds.get(k, "") or "")[:16] for k in ("Columns", "Rows")),
                        str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or ""))
        syntax = order.syntax
        element = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
        if element is None and _is_dicomdir(path, ds):  # (was "no pixel data ... or export it again")
            raise FetalIQAError(f"{path}: a DICOMDIR, the index of a DICOM media folder: it holds no images; they "
                                "are in the folder's subfolders. Choose the subfolder of one series (e.g. "
                                ".../SE000000).")
        if element is None and not any(k in ds for k in ("FloatPixelData", "DoubleFloatPixelData")):
            # an image library would probe what the header claims (2 GB for a 52 KB file) to find nothing
            raise FetalIQAError(f"{path}: the DICOM file holds no pixel data (or its header is damaged before "
                                "them): it is no image. Choose the sweep's image file, or export it again.")
        missing = [k for k in ("Rows", "Columns") if ds.get(k, None) in (None, "")]
        if missing:
            raise FetalIQAError(f"{path}: the DICOM header does not give the image's size ({' and '.join(missing)} "
                                "missing): it is damaged. Export the file again.")
        _refuse_contradicting_photometric(path, ds, photometric)
        if len(ds.get("ModalityLUTSequence", None) or []):  # (0028,3000): stored -> meant values; not applied
            # (an empty sequence, as anonymisers and converters write, maps nothing)
            raise FetalIQAError(f"{path}: the DICOM file maps its stored pixel values through a Modality LUT "
                                "Sequence, which this reader does not apply: its grey levels would be wrong. "
                                "Export the sweep with the values applied (plain 8- or 16-bit grey).")
        if syntax in _VIDEO_SYNTAXES:
            raise FetalIQAError(f"{path}: the DICOM file holds its frames as video ({_VIDEO_SYNTAXES[syntax]}), "
                                "which this reader does not decode. Export the sweep's frames as DICOM images "
                                "(uncompressed or JPEG) or as .mha.")
        if element is not None and syntax in _JPEG_SYNTAXES:
            head = _first_fragment_head(path, getattr(element, "value_tell", None))
            if head is not None and head != b"\xff\xd8":  # the decoder would print its own errors first
                raise FetalIQAError(f"{path}: the file's JPEG-compressed frames do not begin as JPEG data does: "
                                    "they are damaged. Export the file again.")
        if element is None:
            return order  # float pixels: the reader judges them
        deflated = syntax == DEFLATED_SYNTAX  # (positions are in the inflated data, not the file)
        if not deflated:
            _refuse_junk_after_pixel_data(path, ds)
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if photometric == "YBR_FULL_422" and samples == 3:
            samples = 2  # two luma and one each of Cb, Cr per pair of pixels (PS3.3 C.7.6.3.1.2)
        bits = int(ds.BitsAllocated)
        if syntax not in _NATIVE_SYNTAXES and not deflated:
            _refuse_compression_bomb(path, element, (rows, cols, max(frames, 1), max(samples, 1), max(bits, 1)))
            _refuse_frames_left_out(path, ds, syntax, element, frames)
            return order  # compressed: the reader judges the rest
        stored = int(element.length)
    except FetalIQAError:
        raise
    except RecursionError:  # the image library's own parser crashes the process on such a file
        raise FetalIQAError(_TOO_DEEP.format(path=path)) from None
    except Exception as exc:  # noqa: BLE001 - a header pydicom cannot parse is left to the reader's own check
        if type(exc).__name__ == "BytesLengthException":  # e.g. Rows 3 bytes long: the library probed 2 GB on it
            raise FetalIQAError(f"{path}: the DICOM header is damaged (an element's length does not fit its "
                                "type). Export the file again.") from None
        return None
    if stored == 0xFFFFFFFF:
        return order
    if bits not in (1, 8, 16, 32, 64):
        raise FetalIQAError(f"{path}: the DICOM header allocates {bits} bits per pixel, which no "
                            "ultrasound export uses: the header is damaged. Export the file again.")
    needed = validate.checked_product((rows, cols, max(frames, 1), max(samples, 1), bits))
    needed = (needed + 7) // 8
    start = getattr(element, "value_tell", None)
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if start is not None and size is not None and int(start) + stored > size and not deflated:
        # the header's length is right but the file stops before it: an interrupted copy (the image
        # library then found no reader for it, and the file was called undecodable)
        raise FetalIQAError(
            f"{path}: the file stops {int(start) + stored - size} bytes before the end of its pixel data "
            f"({stored} bytes from byte {int(start)}, in a file of {size}): it is truncated, probably an "
            "interrupted copy. Copy or export it again.")
    if stored < needed:
        raise FetalIQAError(
            f"{path}: the file holds {stored} bytes of pixel data but its header ({frames} frames of "
            f"{cols} x {rows} pixels, {samples} sample(s) of {bits} bits) needs {needed}: the file is "
            "truncated or its header is wrong. Copy or export it again.")
    per_frame = needed // max(frames, 1)
    if stored - needed > needed % 2 and _misread_by(stored - needed, cols, rows, max(frames, 1),
                                                    max(samples, 1) * bits / 8):
        # the reader would read the frames the header counts and leave the rest out without a word, or
        # with less than a frame more (Rows or Columns one short), read every frame askew
        held = (f"; the data hold {stored // per_frame} frames"
                if per_frame and stored - stored % per_frame in (stored, stored - 1) else "")
        missing = "" if "NumberOfFrames" in ds else "; Number of Frames is missing"
        harm = ("Reading it would leave frames out" if stored - needed >= per_frame else
                "Its frames would be read askew (a row or a column more than Rows and Columns count?)")
        raise FetalIQAError(
            f"{path}: the file holds {stored} bytes of pixel data, more than the {needed} its header describes "
            f"({frames} frame(s) of {cols} x {rows} pixels, {samples} sample(s) of {bits} bits{missing}){held}. "
            f"{harm}: export the file again"
            + (" with its right Number of Frames." if held else "."))
    return order


#: Media Storage Directory Storage: a DICOMDIR (PS3.10 7.2).
_DICOMDIR_STORAGE = "1.2.840.10008.1.3.10"


def _is_dicomdir(path: Path, ds: Any) -> bool:
    """Whether ``ds`` (the header of ``path``) is a DICOMDIR: by its SOP class, its directory
    records, or its name."""
    sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "").strip()
    return sop == _DICOMDIR_STORAGE or "DirectoryRecordSequence" in ds or path.name.upper() == "DICOMDIR"


#: SOP Class UID of DICOM Segmentation Storage (PS3.4 B.5).
_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _refuse_dicom_segmentation(path: Path, ds: Any) -> None:
    """A DICOM Segmentation object keeps only the annotated frames, each pointing at its frame of
    the sweep (ReferencedFrameNumber), as bits: the image reader called a valid one damaged (in
    its library's own words), or read its one stored frame as the sweep's frame 0. ``ds``: the
    file's header, as :func:`_precheck_dicom` read it."""
    try:
        sop = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    except Exception:  # noqa: BLE001 - the header checks that follow judge a damaged one
        return
    if sop.strip() == _SEGMENTATION_STORAGE:
        raise FetalIQAError(f"{path}: a DICOM Segmentation object, which is not read: its frames are the "
                            "annotated ones alone, each pointing at a frame of the sweep. Export the mask as a "
                            "label image (.mha, .nrrd or .nii) with the sweep's frames, and open that.")


def _refuse_junk_after_pixel_data(path: Path, ds) -> None:
    """Bytes appended after a DICOM file's pixel data that are no element (out of the tags' order,
    or claiming more than the file holds): the image library's reader sized a buffer from such a
    length while only probing the file (3.6 GB for a 37 KB file with 10 stray bytes), then called the
    file's pixels undecodable. Trailing padding (FFFC,FFFC) and signatures are elements like any."""
    from pydicom.tag import Tag

    pixel = Tag(0x7FE0, 0x0010)
    tags = list(ds.keys())
    if pixel not in tags:
        return
    size = path.stat().st_size
    item = ds.get_item(pixel, keep_deferred=True)
    start, length = getattr(item, "value_tell", None), getattr(item, "length", None)
    if start is not None and length not in (None, 0xFFFFFFFF) and 0 < size - (start + int(length)) <= 1 << 20:
        with open(path, "rb") as fh:  # zeros after the pixel data are padding (the image library reads on)
            fh.seek(start + int(length))
            if not fh.read().strip(b"\0"):
                return
    for tag in tags[tags.index(pixel) + 1:]:
        item = ds.get_item(tag, keep_deferred=True)
        start, length = getattr(item, "value_tell", None), getattr(item, "length", 0)
        beyond = start is not None and length not in (None, 0xFFFFFFFF) and start + int(length) > size
        if tag <= pixel or beyond:
            raise FetalIQAError(f"{path}: the file goes on after its pixel data with bytes that are no DICOM "
                                "element (damaged, or something appended to it): export the file again.")


#: Compressed DICOM pixel data: what a header may claim beyond this many bytes must be backed by
#: at least 1 / _DICOM_MAX_RATIO of it in the file (no codec ultrasound uses compresses frames that
#: have content further; a 840-byte RLE file claiming 3.2 GB made the decoder allocate all of it).
_DICOM_FREE_BYTES = 256 << 20
_DICOM_MAX_RATIO = 2000


def _refuse_compression_bomb(path: Path, element: Any, dims: tuple[int, ...]) -> None:
    try:
        offset = int(getattr(element, "value_tell", 0) or 0)
        held = max(path.stat().st_size - offset, 0)
    except (OSError, TypeError, ValueError):
        return
    rows, cols, frames, samples, bits = dims
    needed = (validate.checked_product(dims) + 7) // 8
    if needed > _DICOM_FREE_BYTES and needed > held * _DICOM_MAX_RATIO:
        raise FetalIQAError(f"{path}: the header describes {needed} bytes of pixels ({frames} frame(s) of {cols} x "
                            f"{rows} pixels) but the file holds {held} bytes of compressed data, far less than any "
                            "compression gives: it is damaged or crafted, and is not read. Export the file again.")


#: Photometric interpretations and the samples per pixel each has (PS3.3 C.7.6.3.1.2).
_PHOTOMETRIC_SAMPLES = {"MONOCHROME1": 1, "MONOCHROME2": 1, "PALETTE COLOR": 1, "RGB": 3, "YBR_FULL": 3,
                        "YBR_FULL_422": 3, "YBR_PARTIAL_422": 3, "YBR_PARTIAL_420": 3, "YBR_ICT": 3,
                        "YBR_RCT": 3}


def _refuse_contradicting_photometric(path: Path, ds: Any, photometric: str) -> None:
    """Samples per Pixel 3 with a grey photometric interpretation (or 1 with a colour one): the
    reader would take the colour samples for grey pixels and score a scrambled image."""
    written = str(ds.get("PhotometricInterpretation", "") or "").strip()
    if written != photometric and photometric not in ("MONOCHROME2", "RGB"):
        # the image library matches the code string exactly: 'Monochrome1' was read without its
        # inversion, 'ybr_full_422' as three bytes per pixel (grey and RGB are read the same either way)
        if photometric in _PHOTOMETRIC_SAMPLES:
            raise FetalIQAError(f"{path}: the DICOM header spells its Photometric Interpretation '{written}', not "
                                f"'{photometric}' as the standard does, and its pixels would be read with the wrong "
                                "grey levels or colours: export the file again.")
        # ('nan' is no misspelt 'NAN': no such value exists)
        raise FetalIQAError(f"{path}: the DICOM header's Photometric Interpretation is '{written[:20]}', which is "
                            "not one the standard defines, so how its pixels are to be read as grey levels or "
                            "colours is not known: export the file again.")
    expected = _PHOTOMETRIC_SAMPLES.get(photometric)
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        return
    if expected is not None and samples != expected:
        raise FetalIQAError(f"{path}: the DICOM header contradicts itself: {samples} sample(s) per pixel with "
                            f"Photometric Interpretation {photometric}, which has {expected}. Its frames would be "
                            "read scrambled: export the file again.")


def _bare_dicom(path: Path) -> bool:
    """A DICOM file without its 128-byte preamble and "DICM" (common in exports; the image library
    reads them): it starts with an element of group 0002 or 0008, little endian."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] in (b"\x02\x00", b"\x08\x00") and not has_dicom_magic(path)


def _named_or_marked_dicom(path: Path) -> bool:
    """A file taken for DICOM in a folder: named ``.dcm``, or with the DICOM magic."""
    return path.name.lower().endswith(".dcm") or has_dicom_magic(path)


def has_dicom_magic(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` after its 128-byte preamble."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def looks_like_dicom_series(folder: Path, probe: int = 16) -> bool:
    """Whether ``load_sweep`` would read ``folder`` as a DICOM series, judged cheaply (no header
    parsed): among its files (hidden ones aside, as the reader skips them), one named ``.dcm``
    or, in the first ``probe`` by name, one with the DICOM magic."""
    try:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError:
        return False
    return (any(p.name.lower().endswith(".dcm") for p in files)
            or any(has_dicom_magic(p) for p in files[:probe]))


_SERIES_PROBE = 16  # single-frame files that, with no cine before them, make a folder one series


@pydicom_warnings_off()
def multiframe_dicom_files(folder: Path, at_least: int = 2) -> list[Path]:
    """The DICOM files of ``folder`` when each holds several frames: an ultrasound system's
    export of several cines, one sweep a file (read as a series, they would be refused as
    several series of one file each); a DICOMDIR, a report or a few still images beside them
    are left out (the caller names them). Empty for a series of single frames (one sweep): when
    single images outnumber the cines, or the first 16 files are single images. The headers are
    read without their pixels. ``at_least``: how many cines make the answer (one, beside sweep
    files of other formats)."""
    try:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError:
        return []
    dicoms = [p for p in files if _named_or_marked_dicom(p)]
    if len(dicoms) < max(at_least, 1):
        return []

    cines, singles = [], 0
    for p in dicoms:
        try:
            ds = dcmread_bounded(p, stop_before_pixels=True, force=True, specific_tags=["NumberOfFrames", "Rows"])
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            image = "Rows" in ds  # a DICOMDIR or a report has none
        except Exception:  # noqa: BLE001 - a file pydicom cannot parse is no cine (the series reader judges it)
            frames, image = 0, False
        if image and frames >= 2:
            cines.append(p)
        elif image:
            singles += 1
            if singles >= _SERIES_PROBE and not cines:
                return []  # a series of single frames, however long: not read to its end
    return cines if len(cines) >= max(at_least, 1) and len(cines) >= singles else []


def _looks_like_dicom(path: Path, reader: Any) -> bool:
    """DICOM Part 10 magic, or the ``gggg|eeee`` tag keys only GDCM puts in the metadata."""
    try:
        with open(path, "rb") as fh:
            if fh.read(132)[128:132] == b"DICM":
                return True
    except OSError:
        return False
    return any(re.fullmatch(r"[0-9a-fA-F]{4}\|[0-9a-fA-F]{4}", k) for k in reader.GetMetaDataKeys()[:50])


class _BufferOwner:
    """Exposes a view's buffer through ``__array_interface__`` while holding the object that owns
    the memory, so every array derived from it keeps that object (a SimpleITK image) alive."""

    def __init__(self, view: np.ndarray, owner: Any) -> None:
        self.__array_interface__ = view.__array_interface__
        self._view = view
        self._owner = owner


def _keep_alive(view: np.ndarray, owner: Any) -> np.ndarray:
    return np.asarray(_BufferOwner(view, owner))


def _precheck_nifti(path: Path, size: tuple[int, ...], components: int, reader: Any) -> None:
    """ITK reads a truncated NIfTI without complaint (missing voxels come back as zeros), so the
    byte count is checked here first."""
    suffix = full_suffix(path)
    if suffix not in (".nii", ".nii.gz"):
        return
    itemsize = _sitk_pixel_itemsize(reader)
    if itemsize is None:
        return
    data_bytes = validate.checked_product(size) * components * itemsize
    # a .nii.gz that is not compressed (the image reader reads it as it is) is checked as a .nii
    compressed = suffix == ".nii.gz" and _head(path, 2) == b"\x1f\x8b"
    try:
        if not compressed:
            with open(path, "rb") as fh:
                head = fh.read(544)
            actual = path.stat().st_size
        else:
            with gzip.open(path, "rb") as fh:
                head = fh.read(544)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error, struct.error):
        raise FetalIQAError(f"{path}: the file is truncated or damaged (its compressed data cannot be "
                            "read). Copy or export it again.") from None
    vox_offset = _nifti_vox_offset(head)
    if vox_offset is None:
        return
    stored = _nifti_stored_bits(head)  # the stored type: a scaled (scl_slope) file is read as float
    if stored:
        bits, datatype = stored
        per_voxel = bits if datatype in (128, 2304) else bits * components  # RGB24 / RGBA32: all channels
        data_bytes = (validate.checked_product(size) * per_voxel + 7) // 8
    if vox_offset < 0:
        raise FetalIQAError(f"{path}: the NIfTI header's data offset (vox_offset) is not a valid byte "
                            "position: the header is damaged. Export the file again.")
    expected = vox_offset + data_bytes
    per_frame = data_bytes // max(_frames_of(size), 1)
    counted = True  # (False: inflating stopped past what the header describes)
    if compressed:
        validate.check_inflation(path, expected, path.stat().st_size, MAX_DEFLATE_RATIO)
        try:
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                trailer = struct.unpack("<I", fh.read(4))[0]  # gzip ISIZE: the last member's length mod 2**32
        except (OSError, struct.error):
            trailer = None
        # one stream of the length the header needs (as image writers write): not inflated here too,
        # which doubled the time to open the file (1.0 of 2.1 s for an 840-frame case), as for NRRD;
        # else inflated: several gzip members (as block compressors write) or padding after the stream
        # are valid, and the image reader reads them
        whole = trailer == expected and expected < (1 << 32)
        if whole:
            actual = expected
        else:
            try:
                actual, whole = _inflated_length(path, 0, expected + max(per_frame, 1))
                counted = actual < expected + max(per_frame, 1)  # (else it stopped counting there)
            except OSError:
                whole = False
        if not whole or actual < expected:
            raise FetalIQAError(
                f"{path}: the compressed file does not hold the {expected} bytes its header "
                f"({fmt_dims(size)} voxels) announces: it is truncated or damaged. Copy or export it again.")
    if actual < expected:
        raise FetalIQAError(
            f"{path}: the file holds {actual} bytes but its header ({fmt_dims(size)} voxels) needs "
            f"{expected}: the file is truncated or its header is wrong. Copy or export it again.")
    if actual > expected and _misread_by(actual - expected, size[0], size[1] if len(size) > 1 else 1,
                                         _frames_of(size), data_bytes / max(validate.checked_product(size), 1)):
        # the reader would read what the header counts and leave the rest out without a word: whole
        # frames, or a column of each row (every row read shifted)
        raise _longer_than_header(path, actual - vox_offset, data_bytes, f"{fmt_dims(size)} voxels", per_frame,
                                  counted)


def _frames_of(size_xyz: tuple[int, ...]) -> int:
    """Frames in an image of ``size`` (x, y, z...): every axis after the first two."""
    return validate.checked_product(size_xyz[2:]) if len(size_xyz) > 2 else 1


def _misread_by(excess: int, cols: int, rows: int, frames: int, per_pixel: float) -> bool:
    """Whether ``excess`` bytes after the pixel data a header describes mean the pixels would be read
    wrongly: a frame or more (frames left out), or exactly one pixel more in every row or one row
    more in every frame (a header a column or a row short: every row read shifted). A few bytes of
    padding after the data (a newline, a block's end) are no such thing and are read past."""
    frame = cols * rows * per_pixel
    if excess >= frame:
        return True
    for unit in (rows * frames * per_pixel, cols * frames * per_pixel):
        if unit >= 1 and excess % unit == 0:
            return True
    return False


def _longer_than_header(path: Path, stored: int, described: int, dims: str, per_frame: int,
                        counted: bool = True) -> FetalIQAError:
    """The error for a file holding more pixel data than its header describes: reading it would
    leave frames out without a word, or, less than a frame more (a header a row or a column short),
    read every frame askew. ``counted`` False: inflating stopped at ``stored`` bytes, past what the
    header describes, so the file holds at least that (a gzip bomb's 20 GB were said to be 12 MB)."""
    harm = ("reading it would leave frames out" if stored - described >= per_frame else
            "its frames would be read askew (a row or a column more than the header counts?)")
    return FetalIQAError(
        f"{path}: the file holds {'' if counted else 'at least '}{stored} bytes of pixel data, more than the "
        f"{described} its header "
        f"describes ({dims}): its header is wrong, and {harm}. Export the file again.")


def _check_nrrd_length(path: Path, fields: dict[str, str] | None, size: tuple[int, ...], components: int,
                       itemsize: int) -> None:
    """A NRRD whose data are longer than its sizes say is refused: ITK reads the frames the header
    counts and leaves the rest out without a word (raw: the stored bytes; gzip: the inflated length
    its trailer records). Data read from the end (byte skip -1) or after skipped lines are left to
    the reader."""
    if fields is None:
        return
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("raw", "gzip", "gz"):
        return
    try:
        line_skip = int(fields.get("line skip", fields.get("lineskip", "0")) or 0)
        byte_skip = int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
    except ValueError:
        return
    if line_skip != 0 or byte_skip < 0:
        return
    described = validate.checked_product(size) * components * itemsize
    frame = described // max(_frames_of(size), 1)
    data_file = fields.get("data file", fields.get("datafile"))
    counted = True  # (False: inflating stopped past what the header describes)
    try:
        if data_file is not None:
            data_path, offset = _detached_data_file(path, data_file, "data file"), 0
        elif ":data offset" in fields:  # (read with the header by _nrrd_fields)
            data_path, offset = path, int(fields[":data offset"])
        else:
            return
        if encoding == "raw":
            stored = data_path.stat().st_size - offset - byte_skip
        else:
            if described + byte_skip >= (1 << 32) or data_path.stat().st_size - offset < 18:
                return  # the gzip trailer counts modulo 4 GiB
            with open(data_path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                stored = struct.unpack("<I", fh.read(4))[0] - byte_skip
            if stored != described:
                # the trailer is a cut stream's last 4 bytes when the file is truncated (an interrupted
                # copy read "holds 2005384948 bytes ... its header is wrong"): inflate to be sure
                inflated, whole = _inflated_length(data_path, offset, described + frame + byte_skip + 1)
                counted = inflated < described + frame + byte_skip + 1  # (else it stopped counting there)
                if not whole:
                    raise FetalIQAError(f"{path}: the compressed pixel data stop short (after {inflated} "
                                        f"of the {described + byte_skip} bytes the header describes, inflated): the "
                                        "file is truncated or damaged. Copy or export it again.")
                stored = inflated - byte_skip
    except (OSError, struct.error):
        return
    if stored > described and _misread_by(stored - described, size[0], size[1] if len(size) > 1 else 1,
                                          _frames_of(size), components * itemsize):
        raise _longer_than_header(path, stored, described, f"{fmt_dims(size)} pixels", frame,  # frames left out, or askew
                                  counted)
    if stored < described:  # the image library would allocate what the header claims, then fail
        where = "its data file holds" if data_file is not None else "the file holds"
        raise FetalIQAError(f"{path}: the header describes {described} bytes of pixel data ({fmt_dims(size)} "
                            f"pixels) but {where} {max(stored, 0)}"
                            + (" once inflated" if encoding != "raw" else "")
                            + ": the file is truncated or its header is wrong. Copy or export it again.")


def _inflated_length(path: Path, offset: int, limit: int) -> tuple[int, bool]:
    """How many bytes the gzip data of ``path`` from ``offset`` inflate to, counting up to ``limit``
    (nothing is kept), and whether the data end as a whole gzip stream does (False: cut short or
    damaged). Stops counting at ``limit`` (then whole is True: long enough to say so)."""
    total, decoder = 0, zlib.decompressobj(16 + zlib.MAX_WBITS)
    with open(path, "rb") as fh:
        fh.seek(offset)
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                return total, decoder.eof
            try:
                while chunk:
                    total += len(decoder.decompress(chunk, 1 << 22))
                    chunk = decoder.unconsumed_tail
                    if decoder.eof and decoder.unused_data:
                        rest = decoder.unused_data
                        if len(rest) < 2 and b"\x1f\x8b".startswith(rest):  # a member's magic cut by the read
                            rest += fh.read(2 - len(rest))
                        if not rest.startswith(b"\x1f\x8b"):  # padding after the stream
                            return total, True  # (as the image library's reader, which ignores it)
                        chunk, decoder = rest, zlib.decompressobj(16 + zlib.MAX_WBITS)
                    if total >= limit:
                        return total, True
            except zlib.error:
                return total, False


def bound_volume(path: Path, shape_zyx: tuple[int, ...], components: int, itemsize: int, mapped: bool) -> None:
    """Frames, frame size and memory a volume needs, checked before any pixel is read:
    ``mapped``: the pixels are memory-mapped (only a conversion to uint8 allocates)."""
    dims = frame_stack_shape(tuple(int(d) for d in shape_zyx))
    if len(dims) != 3:
        return  # precheck_dims reports the shape
    n, h, w = dims
    grey8 = components == 1 and itemsize == 1
    decoded = 0 if mapped else components * itemsize
    validate.check_volume(path, n, h, w, decoded, 0 if grey8 else 1)


#: The longest NRRD header read (image writers write a few hundred bytes; comments may add some).
_NRRD_HEADER_LIMIT = 1 << 20


def _utf8_or_latin1(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


#: NRRD per-axis fields an axis with a space direction may not have (the NRRD format: its direction
#: vector gives its spacing and place in space).
_NRRD_FIELDS_NOT_WITH_DIRECTIONS = ("spacings", "axis mins", "axis maxs", "units")


def _nrrd_fields_beside_directions(path: Path, nrrd: dict[str, str]) -> str:
    """The line for a NRRD the image library refuses because it has per-axis fields beside its
    'space directions' (the library's own words were "[nrrd] _nrrdFieldCheckSpaceInfo: axis[0] has
    a direction vector, and so can't have min, max, spacing, or units set")."""
    found = [k for k in _NRRD_FIELDS_NOT_WITH_DIRECTIONS if k in nrrd]
    if "spacings" in found:
        shown = f"'space directions: {nrrd.get('space directions', '')[:60]}' and 'spacings: {nrrd['spacings'][:40]}'"
        return (f"{path}: the NRRD header states the pixel size twice, {shown}, which the NRRD format does not allow "
                "(an axis with a space direction has no spacing of its own), so image readers refuse it and which "
                "size is right is not known. Export the file again, or remove the wrong line from a copy's header, and "
                "open that.")
    named = " and ".join(f"'{k}'" for k in found) or "per-axis fields (axis mins, axis maxs, units)"
    return (f"{path}: the NRRD header gives {named} beside 'space directions', which the NRRD format does not allow "
            "(an axis with a space direction takes its size and place from it), so image readers refuse it. Export the "
            f"file again, or remove the {'line' if len(found) == 1 else 'lines'} from a copy's header, and open that.")


def _nrrd_fields(path: Path) -> dict[str, str] | None:
    """The fields of a NRRD header (keys lower-case), None for other files."""
    if full_suffix(path) not in (".nrrd", ".nhdr"):
        return None
    fields: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            head = fh.read(_NRRD_HEADER_LIMIT + 1)
    except OSError:
        return None
    end = re.search(rb"\r?\n\r?\n", head)  # the blank line (a header written on Windows ends in CR LF CR LF)
    raw_header = head if end is None else head[:end.start()]
    if len(raw_header) > _NRRD_HEADER_LIMIT:  # the image library reads a header of any length: all of it is checked
        raise FetalIQAError(f"{path}: the NRRD header is longer than {_NRRD_HEADER_LIMIT >> 20} MB, far longer than "
                            "any image's: the file is damaged or crafted, and is not read. Export the file again.")
    # 3D Slicer and other current writers write UTF-8 ("µm" as two bytes), older ones Latin-1, and a
    # header edited by hand can hold both: each line in the one it is valid in (UTF-8 first; a
    # whole-header fallback read the UTF-8 "µm" of such a header as "Âµm", no length)
    text = "\n".join(_utf8_or_latin1(line) for line in raw_header.splitlines())
    fields[""] = text  # the header itself, for its length
    if end is not None:  # attached data start after the blank line (a key never holds ':')
        fields[":data offset"] = str(end.end())
    for line in text.splitlines()[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return fields


#: NRRD fields with one entry per axis (the NRRD format's specification), and those with one
#: per axis of the world space.
_NRRD_PER_AXIS = ("sizes", "spacings", "thicknesses", "axis mins", "axismins", "axis maxs", "axismaxs",
                  "centers", "centerings", "labels", "units", "kinds", "space directions")
_NRRD_PER_SPACE_AXIS = ("space units", "space origin", "measurement frame")
_NRRD_MAX_DIM = 16  # NRRD_DIM_MAX of the format's reference library


def _nrrd_entries(key: str, value: str) -> int:
    """How many entries a NRRD field lists: quoted strings, vectors or words."""
    if key in ("labels", "units", "space units"):
        return len(re.findall(r'"[^"]*"', value)) or len(value.split())
    if key in ("space directions", "space origin", "measurement frame"):
        return len(re.findall(r"\([^)]*\)|\bnone\b", value))
    return len(value.split())


def _refuse_overfull_nrrd_fields(path: Path, fields: dict[str, str] | None) -> None:
    """A NRRD header listing more entries in a per-axis field than the image has axes (300 kinds
    for 3 axes: a line of 2 KB) crashed the process inside the image library's parser, taking an
    archive run and the viewer with it: refused first, with the dimension itself."""
    if fields is None or not fields.get("", "").startswith("NRRD"):
        return  # (not a NRRD file: named so, another kind's message follows)
    try:
        dimension = int(fields.get("dimension", "0"))
    except ValueError:
        dimension = 0
    if not 1 <= dimension <= _NRRD_MAX_DIM:
        raise FetalIQAError(f"{path}: the NRRD header gives dimension {fields.get('dimension', '(none)')[:20]!r}, "
                            f"not a number of axes from 1 to {_NRRD_MAX_DIM}: it is damaged. Export the file again.")
    for keys, limit in ((_NRRD_PER_AXIS, dimension), (_NRRD_PER_SPACE_AXIS, _NRRD_MAX_DIM)):
        for key in keys:
            if key in fields and _nrrd_entries(key, fields[key]) > limit:
                raise FetalIQAError(f"{path}: the NRRD header's '{key}' lists {_nrrd_entries(key, fields[key])} "
                                    f"entries for an image of {dimension} axes: it is damaged or crafted, and "
                                    "is not read. Export the file again.")


def _nrrd_stored_bytes(path: Path, fields: dict[str, str] | None) -> int | None:
    """For a gzip-encoded NRRD, the bytes of compressed data (to bound what they can inflate to);
    None for other files. A detached data file must be one regular file: a named pipe would
    block the reader forever. A byte skip below -1 is refused (checked before the image reader
    opens the file)."""
    if fields is None:
        return None
    skip = fields.get("byte skip", fields.get("byteskip", "0")).strip()
    if re.fullmatch(r"-\d+", skip) and int(skip) < -1:
        # the image reader read the data from that many bytes before the end, every frame shifted
        # (83 grey levels off on average for uint16), without a word
        raise FetalIQAError(f"{path}: the NRRD header's 'byte skip: {skip[:20]}' is no value the format defines (the "
                            "bytes to skip before the data, or -1: the data end the file), and its frames would be "
                            "read shifted. The header is damaged: export the file again.")
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("ascii", "text", "txt"):  # ITK's text decoder crashes the process on binary data
        raise FetalIQAError(f"{path}: the NRRD stores its pixels as text (encoding: {encoding}), which is not "
                            "supported for sweeps. Save it with raw or gzip encoding (or as .mha).")
    if encoding in ("bzip2", "bz2", "hex"):
        raise FetalIQAError(f"{path}: the NRRD's pixels are stored with encoding '{encoding}', which this reader "
                            "does not support. Save it with raw or gzip encoding (or as .mha).")
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None:
        stored = _detached_data_file(path, data_file, "data file").stat().st_size
    else:
        stored = max(path.stat().st_size - len(fields[""]), 0)
    return stored if encoding in ("gzip", "gz") else None


#: Length units a NRRD header may name (the format leaves the strings free), in mm.
_LENGTH_UNITS_MM = {"mm": 1.0, "millimeter": 1.0, "millimeters": 1.0, "millimetre": 1.0, "millimetres": 1.0,
                    "cm": 10.0, "centimeter": 10.0, "centimeters": 10.0, "centimetre": 10.0, "centimetres": 10.0,
                    "m": 1000.0, "meter": 1000.0, "meters": 1000.0, "metre": 1000.0, "metres": 1000.0,
                    "um": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3, "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3,
                    "micrometers": 1e-3, "micrometre": 1e-3, "micrometres": 1e-3,
                    "nm": 1e-6, "nanometer": 1e-6, "nanometers": 1e-6, "nanometre": 1e-6, "nanometres": 1e-6,
                    "in": 25.4, "inch": 25.4, "inches": 25.4}
_NRRD_NO_UNIT = {"", "???", "none", "unknown"}
#: NRRD axis kinds that are not positions in space (their "units" entry is not a length).
_NRRD_VALUE_KINDS = {"rgb-color", "rgba-color", "3-color", "4-color", "vector", "covariant-vector",
                     "normal", "2-vector", "3-vector", "4-vector", "3-gradient", "3-normal", "list",
                     "point", "scalar", "complex", "hsv-color", "xyz-color", "quaternion", "2d-symmetric-matrix",
                     "2d-masked-symmetric-matrix", "2d-matrix", "2d-masked-matrix", "3d-symmetric-matrix",
                     "3d-masked-symmetric-matrix", "3d-matrix", "3d-masked-matrix", "time"}


def _nrrd_spacing_units(fields: dict[str, str] | None) -> tuple[tuple[float, float], str]:
    """How to turn a NRRD's spacing into mm, ``(row, col)``, from its ``space units`` (or, with
    ``spacings``, its per-axis ``units``): the image reader takes every length as mm. A unit that
    is no length gives a note that makes the spacing unknown."""
    if fields is None:
        return (1.0, 1.0), ""
    unusable = _nrrd_directions_unusable(fields)
    if unusable:
        return (1.0, 1.0), unusable
    units = _nrrd_units(fields)
    if units is None:
        return (1.0, 1.0), ""
    if "space units" in fields and len({u.strip().lower() for u in units}) > 1:
        return _nrrd_mixed_space_units(fields, units)
    units = units[:2]
    factors = []
    for unit in units:
        key = unit.strip().lower()
        if key in _NRRD_NO_UNIT:
            factors.append(1.0)
        elif key in _LENGTH_UNITS_MM:
            factors.append(_LENGTH_UNITS_MM[key])
        else:
            return (1.0, 1.0), f"the file gives its pixel spacing in '{unit[:20]}', which is not a length"
    while len(factors) < 2:
        factors.append(factors[0] if factors else 1.0)
    return (factors[1], factors[0]), ""


def _nrrd_units(fields: dict[str, str]) -> list[str] | None:
    """The units a NRRD header gives its space's axes (``space units``, all of them) or its image's
    axes (``units``, less the value axes named in ``kinds``); None when it gives neither."""
    if "space units" in fields:
        return re.findall(r'"([^"]*)"', fields["space units"])
    if "units" not in fields:
        return None
    units = re.findall(r'"([^"]*)"', fields["units"])
    kinds = fields.get("kinds", "").lower().split()
    if len(kinds) == len(units):
        units = [u for u, k in zip(units, kinds) if k not in _NRRD_VALUE_KINDS]
    return units


def _nrrd_names_no_unit(fields: dict[str, str] | None) -> bool:
    """Whether a NRRD header names no unit for its pixels' lengths (no ``space units`` or ``units``
    and no named space, or only the format's words for none): the image reader reads them as mm,
    as NIfTI's unit code 0."""
    if fields is None:
        return False
    units = _nrrd_units(fields)
    if units is None:
        # a named anatomical space (ITK, 3D Slicer and this product write one, with no units) is in mm by
        # those tools' convention: a note on every such file would be noise; bare `spacings` are unitless
        return "space" not in fields and "space dimension" not in fields
    units = units if "space units" in fields else units[:2]  # (an image axis past the frame's two: the frames')
    return all(u.strip().lower() in _NRRD_NO_UNIT for u in units)


#: How far from a right angle (its cosine) a NRRD's pixel columns and rows may meet and still be
#: read as a grid of one pixel size: 0.06 degrees, a length off by 0.1 % at most (writers that
#: round their direction cosines stay far within it).
_NRRD_SHEAR_COSINE = 1e-3


def _nrrd_directions_unusable(fields: dict[str, str]) -> str:
    """Why a NRRD's ``space directions`` give its pixels no size a length can use ('' when they
    do, or when there are none to read), read from the header itself: directions of the columns
    and rows that do not meet at a right angle (a sheared grid: the image reader took the vectors'
    lengths, 0.354 x 0.3 mm, without a word), or a size so large the image reader cannot compute it
    (its vector length overflows, and it reads 1 mm instead: 1e308 was said to be "1 x 1 mm, the
    value image writers put when no spacing was known")."""
    vectors = []
    for text in re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))[:2]:
        try:
            vectors.append([float(v) for v in text.split(",")])
        except ValueError:
            return ""  # (the image reader's own line says what is wrong)
    if len(vectors) < 2 or len(vectors[0]) != len(vectors[1]):
        return ""
    col, row = vectors
    if not all(math.isfinite(v) for v in col + row):
        return "the file's space directions hold a value that is no number"
    sizes = [math.hypot(*vector) for vector in (col, row)]  # (hypot: no overflow on squaring 1e308)
    if not all(math.isfinite(sum(v * v for v in vector)) for vector in (col, row)):
        return (f"the file's space directions record pixels {sizes[0]:.3g} wide and {sizes[1]:.3g} high, an "
                "implausible size that image readers read as 1 mm")
    if min(sizes) > 0:
        cosine = sum((a / sizes[0]) * (b / sizes[1]) for a, b in zip(col, row))
        if abs(cosine) > _NRRD_SHEAR_COSINE:
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
            return (f"the file's space directions are not perpendicular (the pixels' columns and rows meet at "
                    f"{angle:.3g} degrees, not 90): a sheared grid has no pixel spacing a length can use")
    return ""


def _nrrd_mixed_space_units(fields: dict[str, str], units: list[str]) -> tuple[tuple[float, float], str]:
    """:func:`_nrrd_spacing_units` when the space's axes have different units ("cm" "mm" "mm"):
    a unit belongs to an axis of the space, not of the image, so each image axis's direction is
    measured in mm component by component (the image reader took every component as mm)."""
    vectors = []
    for text in re.findall(r"\(([^)]*)\)", fields.get("space directions", "")):
        try:
            vectors.append([float(v) for v in text.split(",")])
        except ValueError:
            vectors = []
            break
    if len(vectors) < 2 or any(len(v) != len(units) for v in vectors[:2]):
        return (1.0, 1.0), "the file's space units differ between axes and its space directions cannot be read"
    factors = []
    for axis, unit in enumerate(units):
        key = unit.strip().lower()
        if key not in _LENGTH_UNITS_MM and key not in _NRRD_NO_UNIT:
            if any(v[axis] != 0 for v in vectors[:2]):  # a pixel axis runs along it
                return (1.0, 1.0), f"the file gives its pixel spacing in '{unit[:20]}', which is not a length"
            factors.append(1.0)  # a space axis the frames do not lie along (time): no bearing on the pixels
            continue
        factors.append(_LENGTH_UNITS_MM.get(key, 1.0))
    scales = []
    for vector in vectors[:2]:  # the image's columns (x), then its rows (y)
        as_read = math.sqrt(sum(v * v for v in vector))
        in_mm = math.sqrt(sum((v * f) ** 2 for v, f in zip(vector, factors)))
        if not (as_read > 0 and math.isfinite(in_mm)):
            return (1.0, 1.0), "the file's space directions give no length"
        scales.append(in_mm / as_read)
    return (scales[1], scales[0]), ""


#: NIfTI datatype codes (nifti1.h): the only values a writer may put in the header.
_NIFTI_DATATYPES = frozenset({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304})
#: Bits per voxel and the type's name for each NIfTI datatype (nifti1.h): the NIfTI library sizes
#: and reads the pixel data by the datatype alone, whatever the header's bitpix says.
_NIFTI_DATATYPE_BITS = {2: (8, "uint8"), 4: (16, "int16"), 8: (32, "int32"), 16: (32, "float32"),
                        32: (64, "complex64"), 64: (64, "float64"), 128: (24, "RGB24"), 256: (8, "int8"),
                        512: (16, "uint16"), 768: (32, "uint32"), 1024: (64, "int64"), 1280: (64, "uint64"),
                        1536: (128, "float128"), 1792: (128, "complex128"), 2048: (256, "complex256"),
                        2304: (32, "RGBA32")}


def _precheck_nifti_header(path: Path) -> None:
    """A NIfTI header whose dimension count or datatype is not one the format defines is refused
    here, in one line, before the NIfTI library prints its own error on stderr."""
    suffix = full_suffix(path)
    if suffix not in (".nii", ".nii.gz"):
        return
    try:
        opener = gzip.open if suffix == ".nii.gz" else open
        with opener(path, "rb") as fh:
            head = fh.read(540)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
        return  # _precheck_nifti reports a damaged file
    for endian in ("<", ">"):
        if len(head) >= 348 and struct.unpack(endian + "i", head[:4])[0] == 348:
            ndim, *dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            break
        if len(head) >= 540 and struct.unpack(endian + "i", head[:4])[0] == 540:
            raise FetalIQAError(f"{path}: a NIfTI-2 file, which this reader does not support. Save the sweep as "
                                "NIfTI-1 (nibabel: Nifti1Image) or as .mha.")
    else:
        return
    if head[344:348] == b"ni1\0":  # "pixels in the .img beside me": opened unchecked by the library
        raise FetalIQAError(f"{path}: the NIfTI header says its pixels are in a separate .img file (a NIfTI "
                            "pair), which is not read. Save the sweep as one .nii or .nii.gz file.")
    vox_offset = _nifti_vox_offset(head)
    if head[344:348] == b"n+1\0" and vox_offset is not None and 0 <= vox_offset < 352:
        # the library reads from there: the header's own bytes became pixels, every frame shifted
        raise FetalIQAError(f"{path}: the NIfTI header puts its pixels at byte {vox_offset}, inside the header "
                            "itself (in a single .nii file they start at byte 352 or later): its frames would be "
                            "read shifted. The header is damaged: export the file again.")
    if not 1 <= ndim <= 7:
        raise FetalIQAError(f"{path}: the NIfTI header gives {ndim} dimensions (1 to 7 are possible): the "
                            "header is damaged. Export the file again.")
    if any(d < 0 for d in dims[:ndim]):  # not a strip of frames 1 pixel high, as the library reads it
        raise FetalIQAError(f"{path}: the NIfTI header's dim {' '.join(map(str, dims[:ndim]))} is negative. The "
                            "file is damaged; export it again.")
    if 0 in dims[:ndim]:  # (the library prints "** ERROR: ... bad dim[1]" for a first one of 0, and reads a
        # later one as 1: a strip of frames, or one frame of many)
        raise FetalIQAError(f"{path}: the NIfTI header's dim {' '.join(map(str, dims[:ndim]))} has a size of 0: the "
                            "header is damaged. Export the file again.")
    if datatype not in _NIFTI_DATATYPES:
        raise FetalIQAError(f"{path}: the NIfTI header's datatype code {datatype} is not one the format "
                            "defines: the header is damaged. Export the file again.")
    if datatype == 1:  # DT_BINARY
        raise FetalIQAError(f"{path}: the NIfTI file stores 1 bit per pixel (binary), which is not read. Export "
                            "the sweep with 8-bit pixels (uint8).")
    if datatype in (1536, 2048):  # DT_FLOAT128, DT_COMPLEX256: the image library has no such type
        raise FetalIQAError(f"{path}: the NIfTI file stores 128-bit floating-point{' complex' if datatype == 2048 else ''} "
                            "pixels, which are not read. Export the sweep with 8-bit, 16-bit or 32-bit float pixels.")
    bits, name = _NIFTI_DATATYPE_BITS.get(datatype, (0, ""))
    if bits and bitpix > 0 and bitpix % 8 == 0 and bitpix != bits:
        # the library reads the pixels as the datatype says: a uint8 file marked uint16 came back
        # with its first frames scrambled and its last ones blank, without a word (a bitpix of 0 or
        # of no whole byte says nothing, and the datatype alone is read, rightly)
        raise FetalIQAError(f"{path}: the NIfTI header contradicts itself: bitpix says {bitpix} bits per pixel but "
                            f"datatype {datatype} says {bits} ({name}), so its pixels would be read wrongly. The "
                            "header is damaged: export the file again.")


def _nifti_stored_bits(head: bytes) -> tuple[int, int] | None:
    """Bits per stored value and the datatype code of a NIfTI-1 header, by its datatype (as the
    NIfTI library sizes the pixel data); None when not one, or of no datatype the format defines."""
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", head[:4])[0] == 348:
            datatype = int(struct.unpack(endian + "h", head[70:72])[0])
            bits = _NIFTI_DATATYPE_BITS.get(datatype, (0, ""))[0]
            return (bits, datatype) if bits else None
    return None


def _nifti_vox_offset(head: bytes) -> int | None:
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr == 348:
            value = float(struct.unpack(endian + "f", head[108:112])[0])
            return int(value) if math.isfinite(value) and 0 <= value < 2**31 else -1
        if sizeof_hdr == 540 and len(head) >= 176:
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
            return offset if offset >= 0 else -1
    return None


# NIfTI-1 xyzt_units (nifti1.h): the spatial unit's code -> millimetres; 0 (unknown) is read as mm.
_NIFTI_SPACE_UNITS_MM = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 0.001}


def _nifti_sform_spacing(head: bytes) -> tuple[float, float] | None:
    """``(row_mm, col_mm)`` of one pixel by a NIfTI-1 header's sform matrix (the lengths of its
    first two columns), or None when the header has no sform (sform_code 0) or is not NIfTI-1."""
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", head[:4])[0] != 348:
            continue
        if struct.unpack(endian + "h", head[254:256])[0] <= 0:
            return None
        rows = np.array(struct.unpack(endian + "12f", head[280:328]), dtype=np.float64).reshape(3, 4)
        factor = _NIFTI_SPACE_UNITS_MM.get(head[123] & 0x07)
        col_mm, row_mm = (float(np.linalg.norm(rows[:, j])) for j in (0, 1))
        if factor is None or not all(math.isfinite(v) and v > 0 for v in (row_mm, col_mm)):
            return None
        return float(f"{row_mm * factor:.7g}"), float(f"{col_mm * factor:.7g}")
    return None


def _nifti_sform_only_spacing(head: bytes) -> tuple[float, float] | None:
    """The sform's pixel size (:func:`_nifti_sform_spacing`) of a NIfTI-1 header that states only an
    sform (qform_code 0, sform_code above 0) and leaves its voxel sizes (pixdim) at 1, the format's
    default: the pixel size is then the sform's, which the image reader does not report (a header
    of 0.3 mm was called self-contradictory, 1 against 0.3 mm). None for any other header."""
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", head[:4])[0] != 348:
            continue
        qform_code, sform_code = struct.unpack(endian + "2h", head[252:256])
        pixdim = struct.unpack(endian + "8f", head[76:108])
        if qform_code != 0 or sform_code <= 0 or pixdim[1] != 1.0 or pixdim[2] != 1.0:
            return None
        return _nifti_sform_spacing(head)
    return None


def _nifti_orientation_not_finite(head: bytes) -> bool:
    """Whether a NIfTI-1 header's pixel sizes, quaternion or sform hold a value that is not a
    number: the image reader copes (the spacing is judged by its own checks) but first prints its
    linear algebra's matrix dump, with "nan" in it, on the terminal."""
    if len(head) < 348:
        return False
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", head[:4])[0] == 348:
            values = struct.unpack(endian + "8f", head[76:108]) + struct.unpack(endian + "18f", head[256:328])
            return not all(math.isfinite(v) for v in values)
    return False


def _nifti_head(path: Path) -> bytes:
    """The first 348 bytes of a NIfTI file (.nii or .nii.gz); empty for other files or when
    they cannot be read."""
    suffix = full_suffix(path)
    if suffix not in (".nii", ".nii.gz"):
        return b""
    try:
        opener = gzip.open if suffix == ".nii.gz" else open
        with opener(path, "rb") as fh:
            return fh.read(348)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error):
        return b""


def _nifti_space_unit_code(head: bytes) -> int | None:
    """The spatial unit code of a NIfTI-1 header's xyzt_units (0 unknown, 1 m, 2 mm, 3 um); None
    when the header is not NIfTI-1."""
    if len(head) < 348 or 348 not in (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]):
        return None
    return head[123] & 0x07


def _nifti_spacing_disagreement(head: bytes, spacing_mm: tuple[float, float]) -> str:
    """A NIfTI header holds the pixel size twice: as voxel sizes (pixdim, what the image reader
    reports) and in its sform matrix. When both are set and differ by more than 1 %, the file
    contradicts itself and neither is used; the note gives both."""
    sform = _nifti_sform_spacing(head)
    if sform is None or all(abs(a - b) <= 0.01 * max(a, b) for a, b in zip(sform, spacing_mm)):
        return ""
    fmt = " x ".join
    return (f"the NIfTI header gives two pixel sizes that disagree: {fmt(f'{v:g}' for v in spacing_mm)} mm "
            f"(its voxel sizes, pixdim) and {fmt(f'{v:g}' for v in sform)} mm (its sform matrix)")


def _sitk_pixel_itemsize(reader: Any) -> int | None:
    import SimpleITK as sitk

    table = {
        sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
        sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
        sitk.sitkFloat32: 4, sitk.sitkFloat64: 8,
        sitk.sitkVectorUInt8: 1, sitk.sitkVectorInt8: 1, sitk.sitkVectorUInt16: 2,
        sitk.sitkVectorInt16: 2, sitk.sitkVectorUInt32: 4, sitk.sitkVectorInt32: 4,
        sitk.sitkVectorFloat32: 4, sitk.sitkVectorFloat64: 8,
    }
    return table.get(reader.GetPixelID())


# --- MetaImage ------------------------------------------------------------------------------

_MET_DTYPES = {
    "MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
    "MET_UINT": "u4", "MET_INT": "i4", "MET_ULONG_LONG": "u8", "MET_LONG_LONG": "i8",
    "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
    # MetaIO's "long" is 4 bytes on every platform (the image library reads it so): read here with
    # the same length checks as the rest (handed to the image library, one frame too many passed)
    "MET_ULONG": "u4", "MET_LONG": "i4",
}
_HEADER_LIMIT = 1 << 16
#: A sequence metafile (PLUS, SlicerIGT: a tracked freehand sweep) writes ~8 lines a frame before
#: its data: ~0.5 KB, so 20,000 frames need ~10 MB. The header is read in growing steps up to this.
_HEADER_MAX = 16 << 20
#: Header fields that hold numbers. MetaIO reads them as C does ("1_28" as 1, "١٢٨" as 0), Python
#: as it does ("1_28" and "١٢٨" are 128): only plain ASCII numbers mean the same to both.
_META_NUMBER_FIELDS = {key.lower(): key for key in (
    "NDims", "DimSize", "ElementSpacing", "ElementSize", "HeaderSize", "CompressedDataSize", "ElementNumberOfChannels",
    "Offset", "Origin", "Position", "TransformMatrix", "Rotation", "Orientation", "CenterOfRotation")}
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)"
_PLAIN_NUMBERS = re.compile(rf"\s*(?:(?:{_NUMBER})(?:\s+(?:{_NUMBER}))*)?\s*", re.IGNORECASE | re.ASCII)


def metaimage_header(path: Path) -> tuple[tuple[int, ...] | None, dict[str, str]]:
    """A MetaImage's ``DimSize`` (x, y, z order) and its header's fields (keys in lower case) from
    its header alone; ``(None, {})`` when the file or its header cannot be read (reading the image
    itself then says what is wrong)."""
    try:
        with open(path, "rb") as fh:
            header, _ = _read_meta_header(fh)
        return (tuple(int(v) for v in header["dimsize"].split()), header) if header else (None, {})
    except (OSError, KeyError, ValueError):
        return None, {}


def _read_meta_header(fh: BinaryIO) -> tuple[dict[str, str] | None, int]:
    """A MetaImage header read from the start of ``fh``: 64 KB first, more while what was read is
    all header lines with no data file named yet (a long sequence metafile), up to ``_HEADER_MAX``.
    ``(None, 0)`` when it is no MetaImage header; ``(None, -1)`` when it is one longer than that."""
    head, size = b"", _HEADER_LIMIT
    while True:
        head += fh.read(size - len(head))
        named = _DATA_FILE_LINE.search(head)  # (found by one search: a long header is parsed once, up to it)
        if named is not None or len(head) < size or size >= _HEADER_MAX or _NOT_TEXT.search(head):
            break
        size = min(size * 4, _HEADER_MAX)
    if named is None and len(head) >= size:  # header lines (or not) past the limit: its start tells which
        text = not _NOT_TEXT.search(head) and _parse_meta_header(head[:_HEADER_LIMIT])[1] != 0
        return None, (-1 if text else 0)
    header, offset = _parse_meta_header(head if named is None else head[:named.end()])
    if header is None and (len(head) < size or offset == 0):  # the end of the file, or a line no header has
        return None, 0
    return header, offset


#: The line that ends a MetaImage header (keys in any spelling: readers differ), and bytes no
#: header holds (a binary file is no header however far it is read).
_DATA_FILE_LINE = re.compile(rb"^[ \t]*ElementDataFile[ \t]*=[^\n]*\n", re.IGNORECASE | re.MULTILINE)
_NOT_TEXT = re.compile(rb"[\x00-\x08\x0e-\x1f]")


#: The names MetaIO reads a MetaImage's direction matrix under (one field, three spellings).
_META_MATRIX_FIELDS = ("transformmatrix", "rotation", "orientation")
#: How far from a unit length a MetaImage's pixel axes may be, and from a right angle (its cosine)
#: they may meet, and still be read as a grid of the ElementSpacing's size: a length off by 0.1 %
#: at most (writers that round their matrix to 6 digits stay far within it), as for a NRRD's
#: space directions.
_META_MATRIX_TOLERANCE = 1e-3


def _meta_matrix_unusable(header: dict[str, str], spacing_mm: tuple[float, float], ndims: int) -> str:
    """Why a MetaImage's direction matrix (``TransformMatrix``, or its other spellings) leaves its
    pixels no size a length can use ('' when it is a rotation or reflection, or when there is none
    to read). The image reader places the pixels at the ElementSpacing stretched by the matrix:
    axes 2 long put pixels 0.6 mm apart in its space where the ElementSpacing says 0.3 mm (two
    pixel sizes in one header; the AC was shown at 0.3 mm, half the file's geometry's, without a
    word), and axes that do not meet at a right angle make a sheared grid (read as square). The
    first two axes (the frame's columns and rows) are the ones a length lies along; the image
    reader takes each run of ``ndims`` numbers as one axis."""
    for key in _META_MATRIX_FIELDS:
        try:
            values = [float(v) for v in header.get(key, "").split()]
        except ValueError:
            continue  # (refused earlier as not plain numbers)
        if ndims < 2 or len(values) != ndims * ndims:
            continue
        name = _META_NUMBER_FIELDS[key]
        col, row = values[:ndims], values[ndims:2 * ndims]
        if not all(math.isfinite(v) for v in col + row):
            return f"the MetaImage header's {name} holds a value that is no number"
        lengths = [math.hypot(*axis) for axis in (col, row)]
        if not all(math.isfinite(v) for v in lengths) or min(lengths) == 0:
            return (f"the MetaImage header's {name} gives the pixels' columns or rows no direction (an axis "
                    "of length 0 or past any number)")
        cosine = sum((a / lengths[0]) * (b / lengths[1]) for a, b in zip(col, row))
        if abs(cosine) > _META_MATRIX_TOLERANCE:
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
            return (f"the MetaImage header's {name} is not a rotation: the pixels' columns and rows meet at "
                    f"{angle:.3g} degrees, not 90, and a sheared grid has no pixel spacing a length can use")
        if any(abs(v - 1.0) > _META_MATRIX_TOLERANCE for v in lengths):
            placed = (spacing_mm[0] * lengths[1], spacing_mm[1] * lengths[0])
            return (f"the MetaImage header states two pixel sizes: {spacing_text(spacing_mm)} (its ElementSpacing) "
                    f"and {spacing_text(placed)} (that spacing scaled by its {name}, whose axes are "
                    f"{lengths[0]:.3g} and {lengths[1]:.3g} long, not 1), so which is right is not known")
    return ""


def _read_metaimage(path: Path) -> Raw | None:
    """Parse and check a MetaImage header; memory-map uncompressed pixel data.

    Compressed pixel data is inflated here, with its length checked (:func:`_inflate`). Returns
    None when SimpleITK should decode the pixels: element types with platform-dependent size."""
    with open(path, "rb") as fh:
        header, data_offset = _read_meta_header(fh)
    if data_offset < 0:
        raise FetalIQAError(f"{path}: the MetaImage header runs past {_HEADER_MAX >> 20} MB without naming its "
                            "data (no 'ElementDataFile' line), far longer than any image's. The file is damaged "
                            "or not an image; export it again.")
    if header is None:
        named = _format_by_content(path)
        if named and named[0] != "MetaImage":
            raise FetalIQAError(f"{path}: this is a {named[0]} file, but its name ends in {full_suffix(path)}, and "
                                f"image readers go by the name: rename it (or a copy) to end in {named[1]} and open "
                                "that.")
        raise FetalIQAError(f"{path}: not a MetaImage file (no 'ElementDataFile' header line found). "
                            f"The file is damaged or not an image; choose a file in one of: {SUPPORTED_FORMATS}.")
    if "#duplicate" in header:
        raise FetalIQAError(f"{path}: the MetaImage header gives {header['#duplicate']!r} twice (in any "
                            "spelling): image readers differ on which one counts. Fix the header or export "
                            "the file again.")
    odd = next((key for key in _META_NUMBER_FIELDS if key in header and not _PLAIN_NUMBERS.fullmatch(header[key])), None)
    if odd is not None:
        raise FetalIQAError(f"{path}: the MetaImage header's {_META_NUMBER_FIELDS[odd]} is {header[odd][:40]!r}, which is not plain "
                            "numbers: image readers differ on what it means. Fix the header or export the file again.")
    if header.get("objecttype", "Image").lower() != "image":
        raise FetalIQAError(f"{path}: the MetaImage object is a {header['objecttype']!r}, not an image. "
                            "Choose an image file.")
    try:
        ndims = int(header["ndims"])
        dims = [int(v) for v in header["dimsize"].split()]
        if len(dims) != ndims or ndims < 1:
            raise ValueError
    except (KeyError, ValueError):
        raise FetalIQAError(f"{path}: the MetaImage header has no valid 'NDims'/'DimSize'. The file is "
                            "damaged; export it again.") from None
    if any(d < 0 for d in dims):
        raise FetalIQAError(f"{path}: the header's DimSize {' '.join(map(str, dims))} is negative. The file "
                            "is damaged; export it again.")
    if not truthy(header.get("binarydata", "true")):
        raise FetalIQAError(f"{path}: the MetaImage stores its pixels as text (BinaryData = False), which is not "
                            "supported for sweeps. Save it with binary data.")
    data_file = header.get("elementdatafile", "")
    compressed = truthy(header.get("compresseddata", "false"))
    if data_file.upper() == "LOCAL":
        data_path = path
    else:
        data_path = _detached_data_file(path, data_file, "ElementDataFile")
    element_type = header.get("elementtype", "").upper()
    if element_type.endswith("_ARRAY") and element_type[:-len("_ARRAY")] in _MET_DTYPES:
        element_type = element_type[:-len("_ARRAY")]  # MetaIO's name for the same values, per channel
    if element_type not in _MET_DTYPES:
        raise FetalIQAError(f"{path}: unsupported or missing ElementType {element_type or '(none)'}. "
                            "Export the sweep as 8-bit, 16-bit or float pixels.")
    try:
        components = int(header.get("elementnumberofchannels", "1"))
    except ValueError:
        components = 0
    if components < 1:
        raise FetalIQAError(f"{path}: invalid ElementNumberOfChannels in the header. Export it again.")
    orders = {truthy(header[k]) for k in ("elementbyteordermsb", "binarydatabyteordermsb") if k in header}
    if len(orders) > 1:  # two names of one setting (MetaIO reads one, this reader read the other)
        raise FetalIQAError(f"{path}: the MetaImage header says both that its bytes are big-endian and that "
                            "they are not (ElementByteOrderMSB and BinaryDataByteOrderMSB differ): image readers "
                            "differ on which counts. Fix the header or export the file again.")
    msb = orders == {True}
    dtype = np.dtype(_MET_DTYPES[element_type]).newbyteorder(">" if msb else "<")
    spacing_field = header.get("elementspacing", header.get("elementsize", ""))
    try:
        spacing_xyz = [float(v) for v in spacing_field.split()] if spacing_field else [1.0] * ndims
    except ValueError:
        spacing_xyz = []
    if len(spacing_xyz) < min(ndims, 2):
        raise FetalIQAError(f"{path}: the header's ElementSpacing {spacing_field!r} is not a list of "
                            f"{ndims} numbers. Fix the header or export the file again.")
    spacing_mm = (spacing_xyz[1], spacing_xyz[0]) if ndims >= 2 else (1.0, spacing_xyz[0])
    spacing_source, spacing_note = classify_header_spacing(spacing_mm, recorded=bool(spacing_field))
    spacing_mm, spacing_source, spacing_note = usable_spacing(spacing_mm, spacing_source, spacing_note)
    unusable = _meta_matrix_unusable(header, spacing_mm, ndims)
    if unusable and spacing_source != SPACING_NONE:  # (a spacing already unknown keeps its own reason)
        spacing_mm, spacing_source, spacing_note = (1.0, 1.0), SPACING_NONE, unusable

    shape = tuple(reversed(dims)) + ((components,) if components > 1 else ())
    precheck_dims(path, tuple(reversed(dims)), components)
    metadata = {k: header[k.lower()][:META_VALUE_CHARS] for k in META_KEYS if k.lower() in header}
    expected = validate.checked_product(shape) * dtype.itemsize

    # Uncompressed data is memory-mapped (nothing allocated unless converted); compressed data is
    # inflated into memory.
    bound_volume(path, tuple(reversed(dims)), components, dtype.itemsize, mapped=not compressed)
    try:
        header_size = int(header.get("headersize", "0"))
    except ValueError:
        header_size = 0
    if header_size < -1:  # (it was read as no HeaderSize, and the sweep scored without a word)
        raise FetalIQAError(f"{path}: the header's HeaderSize is {header_size}: no bytes can be skipped a negative "
                            "number of times, and -1 alone has a meaning (the pixel data end the data file). The "
                            "header is wrong: fix it or export the file again.")
    if data_path == path:
        offset = data_offset
        if header_size == -1 and not compressed:  # MetaIO reads the pixels from the end of the file
            offset = max(data_path.stat().st_size - expected, data_offset)
    else:
        offset = 0
        if header_size == -1:
            if compressed:
                raise FetalIQAError(f"{path}: the header puts compressed pixel data at the end of its data "
                                    "file (HeaderSize = -1), where it cannot be found. Export the file again.")
            offset = max(data_path.stat().st_size - expected, 0)
        elif header_size > 0:
            offset = header_size
            size = data_path.stat().st_size
            if header_size >= size:  # (the data file was called truncated, for a header at fault)
                raise FetalIQAError(f"{path}: the header's HeaderSize is {header_size} (bytes to skip at the start "
                                    f"of its data file, {data_path.name}), which leaves nothing of that file ({size} "
                                    "bytes) for the pixels: the header is wrong. Fix it or export the file again.")
    available = data_path.stat().st_size - offset
    hdr_desc = f"DimSize {' '.join(map(str, dims))}, {element_type}" + (
        f", {components} channels" if components > 1 else "")

    if not compressed:
        if available < expected:
            raise FetalIQAError(
                f"{data_path}: the file holds {max(available, 0)} bytes of pixel data but its header "
                f"({hdr_desc}) needs {expected}: the file is truncated (or its header is wrong). "
                "Copy or export the file again.")
        if available > expected:
            raise FetalIQAError(
                f"{data_path}: the file holds {available} bytes of pixel data but its header "
                f"({hdr_desc}) describes {expected}: the header's size is wrong. Export the file again.")
        if expected == 0:
            arr = np.zeros(shape, dtype=dtype)
        else:
            arr = np.memmap(data_path, dtype=dtype, mode="r", offset=offset, shape=shape)
        return Raw(array=arr, components=components, spacing_mm=spacing_mm, metadata=metadata, path=path,
                   spacing_source=spacing_source, spacing_note=spacing_note)

    if "compresseddatasize" in header:
        try:
            csize = int(header["compresseddatasize"])
        except ValueError:
            csize = -1
        if csize > available:
            raise FetalIQAError(
                f"{data_path}: the header announces {csize} bytes of compressed pixel data but the file "
                f"holds {max(available, 0)}: the file is truncated. Copy or download it again.")
    if expected > MAX_DEFLATE_RATIO * max(available, 1):  # deflate expands at most ~1032:1
        raise FetalIQAError(
            f"{data_path}: the header ({hdr_desc}) describes {expected} bytes, far more than "
            f"{available} compressed bytes can hold: the header is wrong. Export the file again.")
    data = _inflate(data_path, offset, available, expected, hdr_desc)
    arr = data.view(dtype).reshape(shape) if expected else np.zeros(shape, dtype=dtype)
    return Raw(array=arr, components=components, spacing_mm=spacing_mm, metadata=metadata, path=path,
               spacing_source=spacing_source, spacing_note=spacing_note)


def _detached_data_file(path: Path, data_file: str, field: str) -> Path:
    """The one regular file, beside the header ``path``, that its ``field`` names for the pixel
    data. A header may not send the reader elsewhere: a list or a numbered pattern of files (one
    of them may be a pipe that blocks the reader forever), a path out of the header's folder
    (``/etc/passwd``, ``../other``), a pipe, device or missing file are refused."""
    name = data_file.strip()
    if not name:
        raise FetalIQAError(f"{path}: the header names no pixel data file ({field}). Export the file again.")
    if name.upper().startswith("LIST") or "%" in name:
        raise FetalIQAError(f"{path}: the header spreads the pixel data over several files ({field} = "
                            f"{name[:60]!r}); only one data file is supported. Export the sweep as a single "
                            ".mha (or .nrrd) file.")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or rel.parent != Path("."):
        raise FetalIQAError(f"{path}: the header sends the reader to a data file outside its own folder "
                            f"({field} = {name[:80]!r}); only a file beside the header is read. Keep the "
                            "header and its data file together and name the data file without a folder.")
    data_path = path.parent / rel
    if rel.name == path.name or (data_path.exists() and data_path.resolve() == path.resolve()):
        # (the image reader reads the header's own text as the first pixels, every frame shifted)
        raise FetalIQAError(f"{path}: the header names its own file as its pixel data file ({field} = "
                            f"{name[:80]!r}), so its header text would be read as pixels. Name the data file "
                            "beside it, or export the file again.")
    if not data_path.exists() and not data_path.is_symlink():
        raise FetalIQAError(f"{path}: the pixel data file {name!r} named in the header is missing "
                            f"(looked for {data_path}). Keep the header and its data file together.")
    validate.check_regular_file(data_path, "the pixel data file named in the header")
    target = data_path.resolve()
    if data_path.is_symlink() and not (target.is_relative_to(path.resolve().parent)
                                       or "/annex/objects/" in target.as_posix()):
        # (a git-annex / DataLad data set links every file into its annex: those are the user's own)
        raise FetalIQAError(f"{path}: the pixel data file {name!r} is a link to a file outside the header's folder "
                            f"({target}); only a file beside the header is read. Put the data file "
                            "itself beside its header.")
    return data_path


def _inflate(data_path: Path, offset: int, stored: int, expected: int, hdr_desc: str) -> np.ndarray:
    """The ``expected`` bytes a zlib (or gzip) stream of ``stored`` bytes at ``offset`` of
    ``data_path`` inflates to, read in chunks into one buffer that never grows past ``expected``.
    A stream that is damaged, ends early or holds more than the header says is refused: a reader
    that only warns would hand on whatever the buffer held before."""

    out = np.empty(expected, np.uint8)
    done = 0
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, as MetaIO writers use

    def damaged(why: str) -> FetalIQAError:
        # (more data than described is no truncation: "damaged or truncated" read as a contradiction)
        state = "damaged (or its header wrong)" if "more than" in why else "damaged or truncated"
        return FetalIQAError(f"{data_path}: the compressed pixel data {why} ({hdr_desc}, {expected} bytes): "
                             f"the file is {state}. Copy or export it again.")

    try:
        with open(data_path, "rb") as fh:
            fh.seek(offset)
            left = stored
            while left > 0 and not inflater.eof:
                check_cancelled()
                chunk = fh.read(min(left, 1 << 22))
                if not chunk:
                    break
                left -= len(chunk)
                while chunk:
                    # (in pieces of at most 16 MB: a 4 MB chunk of zeros inflates to 4 GB in one call,
                    # a second copy of the pixels beside ``out``)
                    piece = inflater.decompress(chunk, min(expected - done + 1, 1 << 24))
                    if done + len(piece) > expected:
                        raise damaged("inflates to more than its header describes")
                    out[done:done + len(piece)] = np.frombuffer(piece, np.uint8)
                    done += len(piece)
                    chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise damaged(f"cannot be inflated ({exc})") from None
    if done != expected or not inflater.eof:
        raise damaged(f"ends after {done} of the bytes its header describes")
    return out


def _parse_meta_header(head: bytes) -> tuple[dict[str, str] | None, int]:
    """``(header, where its data start)``; ``(None, 0)`` when ``head`` holds a line no header has,
    ``(None, -1)`` when every line of it is a header's and no data file is named yet."""
    header: dict[str, str] = {}
    pos = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            return None, -1
        line = head[pos:end]
        pos = end + 1
        if b"=" not in line:
            if line.strip():
                return None, 0
            continue
        key_b, _, value_b = line.partition(b"=")
        try:
            key = key_b.decode("ascii").strip()
            value = _utf8_or_latin1(value_b).strip()  # (written as UTF-8; older writers Latin-1)
        except UnicodeDecodeError:
            return None, 0
        if not key or not re.fullmatch(r"[A-Za-z0-9_\-.]+", key):
            return None, 0
        if key.lower() in header:  # two values: readers differ on which counts (MetaIO's keys are case-sensitive)
            header["#duplicate"] = key
        header[key.lower()] = value
        header.setdefault("#spelling", "")
        if key.lower() == "elementdatafile":
            header["#spelling"] = key
            return header, pos
    return None, -1
