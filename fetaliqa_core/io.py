"""Reading and writing ultrasound sweeps.

``load_sweep`` turns a sweep file (MetaImage ``.mha``/``.mhd``, ``.nrrd``, NIfTI, a multi-frame
DICOM file or a DICOM series folder) into a :class:`Sweep`: frames ``(N, H, W)`` uint8, pixel
spacing in mm and the sweep ranges. ``load_mask`` reads the matching label volume (0 background,
1 optimal plane, 2 suboptimal plane).

Speed and memory:

* An uncompressed 8-bit MetaImage (the fast path) is memory-mapped after its header has been
  parsed here and its byte count checked against the file size, so frame 0 is available at once
  and pages are read on demand.
* Everything else (compressed MetaImage included) is decoded once by SimpleITK; when the pixels
  are already 8-bit grey the frames are a view of SimpleITK's buffer (no copy), so the peak
  extra memory is the compressed data while it is inflated. For a compressed MetaImage the
  header is checked first (announced compressed size against the file size, a decompressed
  size no deflate stream can reach).

Every problem a user can cause raises :class:`~fetaliqa_core.errors.FetalIQAError` with the file
name, what is wrong and what to do. SimpleITK's ``RuntimeError`` (with its C++ trace) never
reaches the user.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import os
import re
import struct
import uuid
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from fetaliqa_core.errors import FetalIQAError

ACOUSLIC_FRAMES_PER_SWEEP = 140
ACOUSLIC_SWEEPS = 6
ACOUSLIC_SPACING_MM = 0.28
SWEEP_KINDS = ("transverse", "sagittal", "unknown")
MIN_FRAME_PX = 32

#: Metadata keys (MetaImage and NRRD headers) that record how the frames split into sweeps.
#: Value formats: ``"0-140,140-280"`` (half-open frame ranges) and ``"transverse,sagittal"``.
META_SWEEP_RANGES = "FetalIQA_SweepRanges"
META_SWEEP_KINDS = "FetalIQA_SweepKinds"

SUPPORTED_FORMATS = ".mha, .mhd, .nrrd, .nii, .nii.gz, DICOM (.dcm file or series folder)"

_CHUNK_FRAMES = 16
# Deflate cannot expand data more than about 1032:1; a header claiming more is lying.
_MAX_DEFLATE_RATIO = 1100


@dataclass(eq=False)
class Sweep:
    """One loaded ultrasound recording (one or more sweeps stacked along the frame axis).

    ``frames``: ``(N, H, W)`` uint8, C-contiguous, read-only (possibly a ``np.memmap``).
    ``spacing_mm``: ``(row_mm, col_mm)`` of one pixel, from the file.
    ``sweep_ranges``: half-open ``[start, stop)`` frame ranges, in order, covering ``0..N``.
    ``sweep_kinds``: one of ``"transverse" | "sagittal" | "unknown"`` per sweep.
    """

    frames: np.ndarray
    spacing_mm: tuple[float, float]
    sweep_ranges: list[tuple[int, int]]
    sweep_kinds: list[str]
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W) uint8, got {self.frames.shape} {self.frames.dtype}")
        if len(self.sweep_ranges) != len(self.sweep_kinds):
            raise ValueError("sweep_ranges and sweep_kinds must have the same length")
        if not _ranges_cover(self.sweep_ranges, self.frames.shape[0]):
            raise ValueError(f"sweep_ranges {self.sweep_ranges} do not cover 0..{self.frames.shape[0]}")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def n_sweeps(self) -> int:
        return len(self.sweep_ranges)

    @cached_property
    def content_hash(self) -> str:
        """Hex digest of the pixels, shape and spacing (blake2b, 128 bit).

        Computed on first use only (about 1 s for an ACOUSLIC case), so it never delays frame 0.
        """
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((tuple(self.frames.shape), tuple(round(s, 9) for s in self.spacing_mm))).encode())
        for start in range(0, self.n_frames, 64):
            chunk = np.ascontiguousarray(self.frames[start:start + 64])
            h.update(memoryview(chunk).cast("B"))
        return h.hexdigest()

    def sweep_index(self, frame: int) -> int:
        """Index of the sweep that holds ``frame`` (zero-based)."""
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} outside 0..{self.n_frames - 1}")
        starts = [start for start, _ in self.sweep_ranges]
        return bisect.bisect_right(starts, frame) - 1


# --------------------------------------------------------------------------------------------
# Public functions


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file or DICOM series folder into a :class:`Sweep`.

    Colour frames become grey, 16-bit and float data are windowed to uint8 between the 0.5th and
    99.5th percentile of the finite values, a single 2-D image becomes a one-frame sweep.
    """
    path = Path(path).expanduser()
    raw = _read_raw(path, purpose="sweep")
    frames = _to_uint8_frames(raw)
    _check_frame_shape(frames.shape, path)
    ranges, kinds = _sweep_layout(frames.shape[0], raw.metadata)
    if frames.flags.writeable:
        frames.flags.writeable = False
    return Sweep(frames=frames, spacing_mm=raw.spacing_mm, sweep_ranges=ranges, sweep_kinds=kinds,
                 path=path)


def load_mask(path: str | Path, like: Sweep | None = None) -> np.ndarray:
    """Read a label volume: ``(N, H, W)`` uint8 (read-only) with values 0 (background),
    1 (optimal plane) and 2 (suboptimal plane). With ``like``, the shape must equal the sweep's
    frames' shape."""
    path = Path(path).expanduser()
    raw = _read_raw(path, purpose="mask")
    arr = raw.array
    if raw.components != 1:
        raise FetalIQAError(
            f"{path}: the mask has {raw.components} values per pixel; a mask holds one label "
            "(0, 1 or 2) per pixel. Export the mask as a single-channel label image.")
    arr = _as_frame_stack(arr, 1, path)
    if like is not None and tuple(arr.shape) != tuple(like.frames.shape):
        raise FetalIQAError(
            f"{path}: the mask has shape {_fmt_shape(arr.shape)} (frames x height x width) but the "
            f"sweep {like.path or ''} has {_fmt_shape(like.frames.shape)}. Choose the mask made "
            "for this sweep.")
    labels = _as_labels(arr, path)
    if labels.flags.writeable and labels is not arr:
        labels.flags.writeable = False
    return labels


def write_volume(path: str | Path, array: np.ndarray, spacing_mm: tuple[float, float] = (0.28, 0.28),
                 compress: bool = False, *, sweep_ranges: list[tuple[int, int]] | None = None,
                 sweep_kinds: list[str] | None = None, compression_level: int = -1) -> None:
    """Write ``array`` ``(N, H, W)`` (or ``(H, W)``) uint8 to ``path`` (format from the suffix,
    e.g. ``.mha``). ``spacing_mm`` is ``(row_mm, col_mm)``; ``compression_level`` a zlib level
    1-9 (-1: the writer's default). Sweep ranges and kinds, when given, are stored in the header
    (MetaImage and NRRD) and read back by :func:`load_sweep`.

    Single-file formats are written to a temporary file that is renamed into place, so a reader
    never sees a half-written file.
    """
    import SimpleITK as sitk

    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise TypeError(f"write_volume needs a (N, H, W) or (H, W) uint8 array, got {arr.shape} {arr.dtype}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=False)
    row_mm, col_mm = (float(spacing_mm[0]), float(spacing_mm[1]))
    image.SetSpacing((col_mm, row_mm, 1.0) if arr.ndim == 3 else (col_mm, row_mm))
    if sweep_ranges is not None:
        n = arr.shape[0] if arr.ndim == 3 else 1
        if not _ranges_cover(sweep_ranges, n):
            raise ValueError(f"sweep_ranges {sweep_ranges} do not cover 0..{n}")
        kinds = list(sweep_kinds) if sweep_kinds is not None else ["unknown"] * len(sweep_ranges)
        if len(kinds) != len(sweep_ranges) or any(k not in SWEEP_KINDS for k in kinds):
            raise ValueError(f"sweep_kinds {kinds} must be one of {SWEEP_KINDS} per sweep")
        image.SetMetaData(META_SWEEP_RANGES, ",".join(f"{a}-{b}" for a, b in sweep_ranges))
        image.SetMetaData(META_SWEEP_KINDS, ",".join(kinds))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetalIQAError(f"{path.parent}: cannot create the folder ({exc.strerror}). "
                            "Choose a folder you can write to.") from None
    suffix = _full_suffix(path)
    try:
        if suffix == ".mhd":  # header + separate data file whose name it records: write in place
            sitk.WriteImage(image, str(path), useCompression=compress, compressionLevel=compression_level)
            return
        tmp_name = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
        try:
            sitk.WriteImage(image, tmp_name, useCompression=compress, compressionLevel=compression_level)
            os.replace(tmp_name, path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    except RuntimeError as exc:
        raise FetalIQAError(f"{path}: could not write the file ({_sitk_reason(exc)}). Check the "
                            f"suffix (supported: {SUPPORTED_FORMATS}) and that the disk has space.") from None
    except OSError as exc:
        raise FetalIQAError(f"{path}: could not write the file ({exc.strerror}). Check that the "
                            "folder is writable and the disk has space.") from None


@lru_cache(maxsize=1)
def _fov_mask_cached() -> np.ndarray:
    import SimpleITK as sitk

    path = _resources_fov_path()
    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise FetalIQAError(f"{path}: the bundled field-of-view mask cannot be read "
                            f"({_sitk_reason(exc)}). Reinstall FetalIQA.") from None
    mask = np.ascontiguousarray(arr > 0.5)
    mask.flags.writeable = False
    return mask


def load_fov_mask() -> np.ndarray:
    """The ACOUSLIC-AI field-of-view (fan) mask: ``(562, 744)`` bool, read-only."""
    return _fov_mask_cached()


def _resources_fov_path() -> Path:
    from fetaliqa_core import paths

    return paths.resources_dir() / "acouslic_fov_mask.mha"


# --------------------------------------------------------------------------------------------
# Reading: every format ends as a _Raw (numpy array in C order (..., Y, X[, components]))


@dataclass
class _Raw:
    array: np.ndarray                 # (..., Y, X) or (..., Y, X, C) when components > 1
    components: int
    spacing_mm: tuple[float, float]   # (row_mm, col_mm)
    metadata: dict[str, str]
    path: Path | None = None


def _read_raw(path: Path, purpose: str) -> _Raw:
    what = "sweep" if purpose == "sweep" else "mask"
    if not path.exists():
        raise FetalIQAError(f"{path}: no such file or folder. Check the path and choose the {what} "
                            f"file ({SUPPORTED_FORMATS}).")
    if path.is_dir():
        return _read_dicom_folder(path, what)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FetalIQAError(f"{path}: cannot be read ({exc.strerror}). Check the file's permissions.") from None
    if size == 0:
        raise FetalIQAError(f"{path}: the file is empty (0 bytes), probably an interrupted copy or "
                            "download. Copy the file again.")
    if not os.access(path, os.R_OK):
        raise FetalIQAError(f"{path}: permission denied. Check the file's permissions.")
    suffix = _full_suffix(path)
    if suffix in (".mha", ".mhd"):
        raw = _read_metaimage(path)
        if raw is not None:
            return raw
    return _read_with_sitk(path, what)


def _read_dicom_folder(folder: Path, what: str) -> _Raw:
    import SimpleITK as sitk

    try:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise FetalIQAError(f"{folder}: the folder cannot be read ({exc.strerror}). Check its permissions.") from None
    if not entries:
        raise FetalIQAError(f"{folder}: the folder is empty. Choose the {what} file itself, or a folder "
                            "holding one DICOM series.")
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" goes to stderr
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as exc:
        raise FetalIQAError(f"{folder}: the folder could not be scanned for DICOM files "
                            f"({_sitk_reason(exc)}). Check the folder's permissions.") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    if not series:
        raise FetalIQAError(f"{folder}: no DICOM series in this folder. Choose the {what} file itself "
                            f"({SUPPORTED_FORMATS}), or a folder of DICOM files of one series.")
    # Several series: take the one with most files (the cine; others are usually localisers).
    files_by_series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series}
    files = max(files_by_series.values(), key=len)
    if len(files) == 1:
        return _read_with_sitk(Path(files[0]), what)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOff()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise FetalIQAError(f"{folder}: the DICOM series could not be read ({_sitk_reason(exc)}). "
                            "Check that all files belong to one series and are complete.") from None
    return _raw_from_image(image, folder, {})


def _read_with_sitk(path: Path, what: str) -> _Raw:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        reason = _sitk_reason(exc)
        if "Unable to determine ImageIO" in reason:
            raise FetalIQAError(f"{path}: not a readable image file (no supported image header found). "
                                f"Choose a {what} file in one of: {SUPPORTED_FORMATS}.") from None
        raise FetalIQAError(f"{path}: the image header cannot be read ({reason}). The file is damaged "
                            "or not an image; export it again.") from None
    size = tuple(int(s) for s in reader.GetSize())       # (X, Y[, Z[, T]])
    components = int(reader.GetNumberOfComponents())
    _precheck_dims(path, size[::-1], components)
    _precheck_nifti(path, size, components, reader)
    metadata = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()
                if k in (META_SWEEP_RANGES, META_SWEEP_KINDS)}
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise FetalIQAError(f"{path}: the pixel data cannot be read ({_sitk_reason(exc)}). The file is "
                            "truncated or damaged; copy or export it again.") from None
    return _raw_from_image(image, path, metadata)


def _raw_from_image(image: Any, path: Path, metadata: dict[str, str]) -> _Raw:
    import SimpleITK as sitk

    components = int(image.GetNumberOfComponentsPerPixel())
    arr = _keep_alive(sitk.GetArrayViewFromImage(image), image)
    # Rounded to 7 significant digits: NIfTI stores float32 (0.28 would read 0.2800000011920929).
    spacing = tuple(float(f"{s:.7g}") for s in image.GetSpacing())
    if len(spacing) >= 2:
        spacing_mm = (spacing[1], spacing[0])
    else:
        spacing_mm = (1.0, spacing[0] if spacing else 1.0)
    _check_spacing(spacing_mm, path)
    return _Raw(array=arr, components=components, spacing_mm=spacing_mm, metadata=metadata, path=path)


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
    suffix = _full_suffix(path)
    if suffix not in (".nii", ".nii.gz"):
        return
    itemsize = _sitk_pixel_itemsize(reader)
    if itemsize is None:
        return
    data_bytes = int(np.prod(size, dtype=np.int64)) * components * itemsize
    try:
        if suffix == ".nii":
            with open(path, "rb") as fh:
                head = fh.read(544)
            actual = path.stat().st_size
        else:
            with gzip.open(path, "rb") as fh:
                head = fh.read(544)
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                actual = struct.unpack("<I", fh.read(4))[0]  # gzip ISIZE: length mod 2**32
    except (OSError, EOFError, gzip.BadGzipFile, struct.error):
        raise FetalIQAError(f"{path}: the file is truncated or damaged (its compressed data cannot be "
                            "read). Copy or export it again.") from None
    vox_offset = _nifti_vox_offset(head)
    if vox_offset is None:
        return
    expected = vox_offset + data_bytes
    if suffix == ".nii":
        if actual < expected:
            raise FetalIQAError(
                f"{path}: the file holds {actual} bytes but its header ({_fmt_dims(size)} voxels) needs "
                f"{expected}: the file is truncated or its header is wrong. Copy or export it again.")
    elif actual != expected % (1 << 32):
        raise FetalIQAError(
            f"{path}: the compressed file does not hold the {expected} bytes its header "
            f"({_fmt_dims(size)} voxels) announces: it is truncated or damaged. Copy or export it again.")


def _nifti_vox_offset(head: bytes) -> int | None:
    if len(head) < 348:
        return None
    for endian in ("<", ">"):
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr == 348:
            return int(struct.unpack(endian + "f", head[108:112])[0])
        if sizeof_hdr == 540 and len(head) >= 176:
            return int(struct.unpack(endian + "q", head[168:176])[0])
    return None


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
}
_HEADER_LIMIT = 1 << 16


def _read_metaimage(path: Path) -> _Raw | None:
    """Parse and check a MetaImage header; memory-map uncompressed pixel data.

    Returns None when SimpleITK should decode the pixels: compressed data, data split over
    several files, element types with platform-dependent size."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_LIMIT)
    header, data_offset = _parse_meta_header(head)
    if header is None:
        raise FetalIQAError(f"{path}: not a MetaImage file (no 'ElementDataFile' header line found). "
                            f"The file is damaged or not an image; choose a file in one of: {SUPPORTED_FORMATS}.")
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
    element_type = header.get("elementtype", "").upper()
    if element_type not in _MET_DTYPES:
        if element_type in ("MET_LONG", "MET_ULONG"):
            return None
        raise FetalIQAError(f"{path}: unsupported or missing ElementType {element_type or '(none)'}. "
                            "Export the sweep as 8-bit, 16-bit or float pixels.")
    try:
        components = int(header.get("elementnumberofchannels", "1"))
    except ValueError:
        components = 0
    if components < 1:
        raise FetalIQAError(f"{path}: invalid ElementNumberOfChannels in the header. Export it again.")
    msb = _truthy(header.get("elementbyteordermsb", header.get("binarydatabyteordermsb", "false")))
    dtype = np.dtype(_MET_DTYPES[element_type]).newbyteorder(">" if msb else "<")
    spacing_text = header.get("elementspacing", header.get("elementsize", ""))
    try:
        spacing_xyz = [float(v) for v in spacing_text.split()] if spacing_text else [1.0] * ndims
    except ValueError:
        spacing_xyz = []
    if len(spacing_xyz) < min(ndims, 2):
        raise FetalIQAError(f"{path}: the header's ElementSpacing {spacing_text!r} is not a list of "
                            f"{ndims} numbers. Fix the header or export the file again.")
    spacing_mm = (spacing_xyz[1], spacing_xyz[0]) if ndims >= 2 else (1.0, spacing_xyz[0])
    _check_spacing(spacing_mm, path)

    shape = tuple(reversed(dims)) + ((components,) if components > 1 else ())
    _precheck_dims(path, tuple(reversed(dims)), components)
    metadata = {k: header[k.lower()] for k in (META_SWEEP_RANGES, META_SWEEP_KINDS) if k.lower() in header}
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize

    data_file = header.get("elementdatafile", "")
    compressed = _truthy(header.get("compresseddata", "false"))
    if data_file.upper() == "LOCAL":
        data_path, offset = path, data_offset
    elif data_file.upper().startswith("LIST") or "%" in data_file or " " in data_file.strip():
        return None
    else:
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise FetalIQAError(f"{path}: the pixel data file {data_file!r} named in the header is missing "
                                f"(looked for {data_path}). Keep the .mhd and its data file together.")
        offset = 0
        try:
            header_size = int(header.get("headersize", "0"))
        except ValueError:
            header_size = 0
        if header_size == -1:
            if compressed:
                return None
            offset = max(data_path.stat().st_size - expected, 0)
        elif header_size > 0:
            offset = header_size
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
        return _Raw(array=arr, components=components, spacing_mm=spacing_mm, metadata=metadata, path=path)

    if "compresseddatasize" in header:
        try:
            csize = int(header["compresseddatasize"])
        except ValueError:
            csize = -1
        if csize > available:
            raise FetalIQAError(
                f"{data_path}: the header announces {csize} bytes of compressed pixel data but the file "
                f"holds {max(available, 0)}: the file is truncated. Copy or download it again.")
    if expected > _MAX_DEFLATE_RATIO * max(available, 1):
        raise FetalIQAError(
            f"{data_path}: the header ({hdr_desc}) describes {expected} bytes, far more than "
            f"{available} compressed bytes can hold: the header is wrong. Export the file again.")
    # Compressed: SimpleITK inflates it once, into the buffer the frames will view (its zlib is
    # about 2.5x faster than Python's here).
    return None


def _parse_meta_header(head: bytes) -> tuple[dict[str, str] | None, int]:
    header: dict[str, str] = {}
    pos = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            return None, 0
        line = head[pos:end]
        pos = end + 1
        if b"=" not in line:
            if line.strip():
                return None, 0
            continue
        key_b, _, value_b = line.partition(b"=")
        try:
            key = key_b.decode("ascii").strip()
            value = value_b.decode("latin-1").strip()
        except UnicodeDecodeError:
            return None, 0
        if not key or not re.fullmatch(r"[A-Za-z0-9_\-.]+", key):
            return None, 0
        header[key.lower()] = value
        if key.lower() == "elementdatafile":
            return header, pos
    return None, 0


# --- shape and conversion ---------------------------------------------------------------------


def _frame_stack_shape(shape_zyx: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial shape (numpy order) as frames x height x width: a 2-D image becomes one frame,
    unit axes in front of the last three are dropped (e.g. NIfTI ``x, y, 1, t``)."""
    dims = list(shape_zyx)
    if len(dims) > 3:
        dims = [d for d in dims[:-2] if d != 1] + dims[-2:]
        if len(dims) == 2:
            dims = [1, *dims]
    if len(dims) == 2:
        dims = [1, *dims]
    return tuple(dims)


def _precheck_dims(path: Path, shape_zyx: tuple[int, ...], components: int) -> None:
    """Reject shapes no sweep can have before any pixel data is read. ``shape_zyx`` is the
    spatial shape in numpy order (no component axis)."""
    dims = _frame_stack_shape(shape_zyx)
    if len(dims) > 3:
        raise FetalIQAError(
            f"{path}: {len(dims)}-D data of shape {_fmt_shape(dims)}; a sweep is a stack of 2-D frames "
            "(frames x height x width). Export a single cine (3-D) instead.")
    if len(dims) < 2:
        raise FetalIQAError(f"{path}: 1-D data of length {dims[0] if dims else 0}; a sweep needs 2-D frames. "
                            "Choose an image or cine file.")
    if dims[0] == 0:
        raise FetalIQAError(f"{path}: the file contains no frames (0 x {dims[1]} x {dims[2]}). Export the "
                            "sweep again.")
    if components not in (1, 3, 4):
        raise FetalIQAError(
            f"{path}: {components} values per pixel (vector data); only grey, RGB or RGBA frames can be "
            "shown. Export the sweep as greyscale or colour video frames.")


def _as_frame_stack(arr: np.ndarray, components: int, path: Path) -> np.ndarray:
    """Reshape (no copy) to ``(N, H, W)`` or ``(N, H, W, C)``; see :func:`_frame_stack_shape`."""
    comp_axes = arr.shape[-1:] if components > 1 else ()
    spatial = arr.shape[:arr.ndim - len(comp_axes)]
    dims = _frame_stack_shape(spatial)
    if len(dims) != 3:
        raise FetalIQAError(f"{path}: {len(dims)}-D data of shape {_fmt_shape(dims)}; expected frames x "
                            "height x width. Export the data as a 3-D volume.")
    return arr.reshape(dims + comp_axes)


def _check_frame_shape(shape: tuple[int, ...], path: Path) -> None:
    n, h, w = shape
    if n == 0:
        raise FetalIQAError(f"{path}: the file contains no frames. Export the sweep again.")
    if h < MIN_FRAME_PX or w < MIN_FRAME_PX:
        raise FetalIQAError(
            f"{path}: frames are {h} x {w} pixels (height x width); at least {MIN_FRAME_PX} x {MIN_FRAME_PX} "
            "are needed. Check that the file holds ultrasound frames (not a thumbnail or a vector field).")


def _to_uint8_frames(raw: _Raw) -> np.ndarray:
    """``raw.array`` -> ``(N, H, W)`` uint8 C-contiguous frames (no copy when already so)."""
    path = raw.path or Path("?")
    comps = raw.components
    arr = _as_frame_stack(raw.array, comps, path)
    _check_frame_shape(arr.shape[:3], path)
    if comps == 1 and arr.dtype == np.uint8:
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if comps == 1 and arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * np.uint8(255))
    if comps not in (1, 3, 4):
        raise FetalIQAError(f"{path}: {comps} values per pixel; only grey, RGB or RGBA frames can be shown.")
    n = arr.shape[0]
    out = np.empty(arr.shape[:3], dtype=np.uint8)
    if arr.dtype == np.uint8:  # colour 8-bit: integer luminance, chunk by chunk
        for s in range(0, n, _CHUNK_FRAMES):
            c = arr[s:s + _CHUNK_FRAMES].astype(np.uint16)
            lum = (77 * c[..., 0] + 150 * c[..., 1] + 29 * c[..., 2] + 128) >> 8
            out[s:s + _CHUNK_FRAMES] = lum.astype(np.uint8)
        return out
    lo, hi = _robust_window(arr, comps, path)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    for s in range(0, n, _CHUNK_FRAMES):
        lum = _luminance_float(arr[s:s + _CHUNK_FRAMES], comps)
        lum = (lum - lo) * scale
        np.nan_to_num(lum, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(lum, 0.0, 255.0, out=lum)
        out[s:s + _CHUNK_FRAMES] = np.rint(lum).astype(np.uint8)
    return out


def _luminance_float(chunk: np.ndarray, comps: int) -> np.ndarray:
    if comps == 1:
        return chunk.astype(np.float32)
    c = chunk.astype(np.float32)
    return 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]


def _robust_window(arr: np.ndarray, comps: int, path: Path) -> tuple[float, float]:
    """0.5th and 99.5th percentiles of the finite values, from up to 32 evenly spread frames."""
    n = arr.shape[0]
    idx = np.unique(np.linspace(0, n - 1, num=min(n, 32)).astype(int))
    sample = _luminance_float(arr[idx], comps).ravel()
    if sample.size > 4_000_000:
        sample = sample[:: sample.size // 4_000_000 + 1]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise FetalIQAError(f"{path}: the pixel values are all NaN or infinite; there is nothing to show. "
                            "Export the sweep again.")
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return lo, hi


def _as_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    """Check a mask holds only 0/1/2 and return it as uint8 (no copy when already uint8)."""
    bad: list[Any] = []
    if arr.dtype == np.uint8:
        if arr.size and int(arr.max()) > 2:
            counts = np.bincount(arr.reshape(-1), minlength=256)
            bad = [int(v) for v in np.nonzero(counts)[0] if v > 2]
        result = arr
    elif arr.dtype == np.bool_:
        result = arr.view(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 2):
            flat = arr.reshape(-1)
            bad = sorted({int(v) for v in np.unique(flat[(flat < 0) | (flat > 2)][:100000])})
        result = arr.astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        result = np.empty(arr.shape, dtype=np.uint8)
        for s in range(0, arr.shape[0], _CHUNK_FRAMES):
            c = np.asarray(arr[s:s + _CHUNK_FRAMES])
            ok = (c == 0) | (c == 1) | (c == 2)
            if not ok.all():
                bad = sorted({float(v) for v in np.unique(c[~ok])[:20]})
                break
            result[s:s + _CHUNK_FRAMES] = c.astype(np.uint8)
    else:
        raise FetalIQAError(f"{path}: mask pixels of type {arr.dtype} cannot be labels. Export the mask as "
                            "8-bit labels 0/1/2.")
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise FetalIQAError(
            f"{path}: the mask holds labels other than 0, 1, 2 (found {shown}). Masks label each pixel 0 "
            "(background), 1 (optimal plane) or 2 (suboptimal plane); choose the label mask, not an "
            "image or a probability map.")
    return np.ascontiguousarray(result)


# --- sweep layout -------------------------------------------------------------------------------


def default_sweep_layout(n_frames: int) -> tuple[list[tuple[int, int]], list[str]]:
    """ACOUSLIC layout for 840 frames (six sweeps of 140: three transverse, three sagittal),
    otherwise one sweep of unknown direction."""
    if n_frames == ACOUSLIC_FRAMES_PER_SWEEP * ACOUSLIC_SWEEPS:
        p = ACOUSLIC_FRAMES_PER_SWEEP
        ranges = [(i * p, (i + 1) * p) for i in range(ACOUSLIC_SWEEPS)]
        return ranges, ["transverse"] * 3 + ["sagittal"] * 3
    return [(0, n_frames)], ["unknown"]


def _sweep_layout(n_frames: int, metadata: dict[str, str]) -> tuple[list[tuple[int, int]], list[str]]:
    """Sweep ranges from the file's metadata when present and valid, else the default layout."""
    text = metadata.get(META_SWEEP_RANGES)
    if text:
        try:
            ranges = []
            for part in text.split(","):
                a, b = part.strip().split("-")
                ranges.append((int(a), int(b)))
        except ValueError:
            ranges = []
        kinds_text = metadata.get(META_SWEEP_KINDS, "")
        kinds = [k.strip() for k in kinds_text.split(",")] if kinds_text else ["unknown"] * len(ranges)
        if (ranges and _ranges_cover(ranges, n_frames) and len(kinds) == len(ranges)
                and all(k in SWEEP_KINDS for k in kinds)):
            return ranges, kinds
    return default_sweep_layout(n_frames)


def _ranges_cover(ranges: list[tuple[int, int]], n: int) -> bool:
    if not ranges:
        return n == 0
    expect = 0
    for a, b in ranges:
        if a != expect or b <= a:
            return False
        expect = b
    return expect == n


# --- small helpers --------------------------------------------------------------------------------


def _full_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _check_spacing(spacing_mm: tuple[float, float], path: Path) -> None:
    if not all(np.isfinite(s) and s > 0 for s in spacing_mm):
        raise FetalIQAError(f"{path}: the pixel spacing {spacing_mm} (mm) is not a positive number, so "
                            "lengths cannot be measured. Fix the spacing in the file's header.")


def _sitk_reason(exc: BaseException) -> str:
    """The useful line of a SimpleITK error, without the C++ source locations."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("ITK ERROR", "sitk::ERROR")):
            reason = ln.split(":", 1)[1].strip() if ln.startswith("sitk::ERROR") else ln.split("):", 1)[-1].strip()
            extra = [x for x in lines[lines.index(ln) + 1:] if not x.startswith(("/", "Exception"))]
            return " ".join([reason, *extra[:1]]).strip()[:300]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _fmt_shape(shape: Any) -> str:
    return " x ".join(str(int(s)) for s in shape)


def _fmt_dims(size_xyz: tuple[int, ...]) -> str:
    return " x ".join(str(int(s)) for s in size_xyz)
