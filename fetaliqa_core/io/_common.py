"""Constants and small helpers shared by the sweep readers and writers."""

from __future__ import annotations

import io
import math
import re
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fetaliqa_core.acouslic import SWEEP_KINDS  # noqa: F401  (re-exported for the io modules)
from fetaliqa_core.errors import FetalIQAError

MIN_FRAME_PX = 32

#: Metadata keys (MetaImage and NRRD headers) that record how the frames split into sweeps.
#: Value formats: ``"0-140,140-280"`` (half-open frame ranges) and ``"transverse,sagittal"``.
META_SWEEP_RANGES = "FetalIQA_SweepRanges"
META_SWEEP_KINDS = "FetalIQA_SweepKinds"
#: Keys a mask FetalIQA writes (the challenge's segmentation) carries about the AC measured on it:
#: its status (``ok``, ``doubtful``, ``no units``, ``none``), why, and what made it. ``fetaliqa ac``
#: keeps a doubt recorded there, so the mask does not turn a doubtful AC into a plain one.
META_AC_STATUS = "FetalIQA_ACStatus"
META_AC_NOTE = "FetalIQA_ACNote"
META_SOURCE = "FetalIQA_Source"
#: Set when the sweep's pixel spacing was unknown or implausible: the mask's ElementSpacing is
#: then no length (MetaImage cannot leave it out; 1 x 1 stands for "none").
META_SPACING = "FetalIQA_PixelSpacing"
#: Its value when the sweep's spacing was known: this prefix, then where it came from (``spacing_source``).
META_SPACING_OF_SWEEP = "sweep: "
#: ... or, before the reason, that the sweep's pixel size was unknown (the header's then repeats 1 x 1)
META_SPACING_UNKNOWN = "unknown: "
#: Every key the readers keep from a header.
META_KEYS = (META_SWEEP_RANGES, META_SWEEP_KINDS, META_AC_STATUS, META_AC_NOTE, META_SOURCE, META_SPACING)

SUPPORTED_FORMATS = ".mha, .mhd, .nrrd, .nhdr, .nii, .nii.gz, DICOM (.dcm file or series folder)"
#: The endings of sweep files other than DICOM (which is known by its content as well).
SWEEP_FILE_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".nii", ".nii.gz")

CHUNK_FRAMES = 16

# Deflate cannot expand data more than about 1032:1; a header claiming more is lying.
MAX_DEFLATE_RATIO = 1100


class ReadCancelled(FetalIQAError):
    """Reading was stopped by the caller (:func:`cancellable`); nothing was read."""


_CANCEL = threading.local()


@contextmanager
def cancellable(stop: Callable[[], bool]) -> Iterator[None]:
    """Within the block, reading in this thread stops with :class:`ReadCancelled` soon after
    ``stop()`` is true: the readers ask between chunks of inflating compressed pixel data and of
    converting frames to grey levels. A read inside an image library's own call (a DICOM series,
    NIfTI, NRRD) runs to its end."""
    previous = getattr(_CANCEL, "stop", None)
    _CANCEL.stop = stop
    try:
        yield
    finally:
        _CANCEL.stop = previous


def check_cancelled() -> None:
    stop = getattr(_CANCEL, "stop", None)
    if stop is not None and stop():
        raise ReadCancelled("reading the file was stopped")


#: Where a sweep's pixel spacing came from (``Sweep.spacing_source``).
SPACING_FROM_HEADER = "file header"
SPACING_FROM_US_REGION = "DICOM ultrasound region calibration"
SPACING_FROM_DICOM_PIXEL_SPACING = "DICOM Pixel Spacing"
SPACING_FROM_IMAGEJ = "ImageJ calibration in the TIFF"
SPACING_NONE = "none"
SPACING_FROM_USER = "user"
SPACING_GIVEN = "given"


@dataclass
class Raw:
    """What every reader returns: a numpy array in C order ``(..., Y, X[, C])``."""

    array: np.ndarray                 # (..., Y, X) or (..., Y, X, C) when components > 1
    components: int
    spacing_mm: tuple[float, float]   # (row_mm, col_mm)
    metadata: dict[str, str]
    path: Path | None = None
    #: One of the SPACING_* constants; SPACING_NONE when the file records no spacing.
    spacing_source: str = SPACING_FROM_HEADER
    spacing_note: str = ""
    #: The file's own display window (DICOM VOI: the values shown black and white), if any.
    window: tuple[float, float] | None = None
    #: Each frame's own window, where frames are shown through different ones (a DICOM series
    #: whose files each state theirs, an Enhanced file's per-frame Frame VOI LUT): one entry a
    #: frame, None for a frame with none of its own (it gets the sweep's window). None otherwise.
    frame_windows: tuple | None = None
    #: A value the file marks as padding outside the image (DICOM Pixel Padding Value, rescaled).
    padding: float | None = None
    #: Colour pixels that are YCbCr although the header says RGB (a JFIF stream in a DICOM file
    #: labelled RGB): the first component is the luminance.
    ycbcr: bool = False
    #: What reading did that the user should know (one line each); shown with the answer.
    notes: list[str] = field(default_factory=list)
    #: The rectangles that show the body, ``(x0, y0, x1, y1)`` inclusive, where the file says
    #: (a DICOM ultrasound image's tissue regions): the field of view lies inside them.
    regions: tuple = ()
    #: Those regions each with its own pixel size, ``((x0, y0, x1, y1), (row_mm, col_mm) or None)``,
    #: where they do not all state one (:func:`fetaliqa_core.io.spacing.region_calibrations`).
    region_calibrations: tuple = ()
    #: A pixel's ``(height, width)`` proportions where the file states them without its size
    #: (DICOM Pixel Aspect Ratio other than 1:1); None otherwise.
    pixel_aspect: tuple[float, float] | None = None
    #: ``(frames per second, what the file states)`` where the file states the rate its frames
    #: were acquired or are meant to be played at (:func:`dicom_frame_rate`); None otherwise.
    frame_rate: tuple[float, str] | None = None
    #: A NIfTI's or NRRD's three axes' spacings as its header states them (x, y, z; in its own
    #: unit), for a volume of three axes; empty otherwise. One size for all three is how a stack
    #: written frames-first often comes (one number put in an affine), a sweep's frame axis rarely.
    axes_spacing: tuple[float, ...] = ()


def full_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


_NATIVE_STDERR_LOCK = threading.RLock()  # (a quiet read inside another)
#: What the TIFF library inside the image readers writes straight to stderr about a damaged file
#: (``TIFFReadDirectoryCheckOrder: Warning, ...``, ``MissingRequired: ...``, ``FILE: 0: Row out of
#: range, max 0.``): the readers' own checks say what is wrong in one line.
#: Only lines in the TIFF library's own forms are dropped: its function or codec names
#: (``TIFF...``, ``_TIFF...``, ``...Decode``, ``OJPEG...``, ``MissingRequired``) before the colon, or
#: its "FILE: ROW: Row out of range", or the picture library's decoder's (it names the file it
#: hands the TIFF library "tempfile.tif": ``tempfile.tif: Using code not yet in table.``); a
#: Python traceback's last line or another library's message written meanwhile is passed on.
_TIFF_LIBRARY_LINE = re.compile(r"^(?:(?:_?TIFF\w*|MissingRequired|OJPEG\w*|\w*(?:Decode|Encode|PreDecode)\w*|"
                                r"Fax3\w*|LZW\w*|ZIP\w*|PixarLog\w*|LogLuv\w*|tempfile\.tif): .*"
                                r"|.*: \d+: Row out of range.*)$")
#: The matrix dump ITK's linear algebra (vnl) writes to stderr when an orientation matrix holds
#: a value that is not a number: its source file's name, ``M = [ ...``, rows of numbers, ``]``.
_MATRIX_DUMP_LINE = re.compile(r"^(?:\S*vnl_\w+\.[ch]\w*: .*|M = \[ \.\.\.|\s*(?:[-+]?(?:[\d.]+(?:e[-+]?\d+)?|nan|inf)\s+)*"
                               r"[-+]?(?:[\d.]+(?:e[-+]?\d+)?|nan|inf)?\s*\]?\s*)$", re.IGNORECASE)
#: The JPEG library's warnings on a picture it decodes all the same (``Corrupt JPEG data: 20
#: extraneous bytes before marker 0xd9``, ``Premature end of JPEG file``), which the image reader
#: prints on stdout, where `score --json` writes its one line.
_JPEG_LIBRARY_LINE = re.compile(r"^(?:Corrupt JPEG data: .*|Premature end of JPEG file|Warning: .*|"
                                r"Invalid SOS parameters for sequential JPEG|Inconsistent progression sequence .*)$")


#: What the JPEG decoder inside the DICOM reader writes to stderr each time it tries a frame of 12
#: (or 16) bits with its 8-bit decoder first, before it decodes the frame right with another, and
#: when it gives up on frames split over several fragments (then decoded otherwise, or refused in
#: one line of the reader's own).
_DICOM_JPEG_LINE = re.compile(r"^(?:Unsupported JPEG data precision \d+|Improper call to JPEG library in "
                                        r"state \d+)$")

#: What the MetaImage header parser inside the image reader writes to stderr about a header it
#: cannot parse (``DimSize required and not defined.``, ``MetaObject: Read: MET_Read Failed``,
#: ``MetaImage: M_Read: Error parsing file``): the reader's own check says what is wrong in one line.
_METAIO_LINE = re.compile(r"^(?:Meta\w+: .*|\w+ required and not defined\.?)$")
#: The HDF5 library's diagnostic stack, printed while the image reader tries a damaged HDF5 file
#: (40 lines before the one that says what the file is).
_HDF5_LINE = re.compile(r"^(?:HDF5-DIAG: .*|\s+#\d{3}: .*|\s+(?:major|minor): .*)$")
#: What the PNG library inside the image reader writes to stderr about a damaged picture
#: (``libpng error: IHDR: CRC error``, ``libpng warning: IDAT: chunk data is too large``), before
#: the reader's own line says the file is damaged.
_PNG_LINE = re.compile(r"^libpng (?:error|warning): .*$")


@contextmanager
def quiet_native_stderr(matrix_dump: bool = False, dicom_jpeg: bool = False, metaio: bool = False,
                        hdf5: bool = False, png: bool = False) -> Iterator[None]:
    """The TIFF library's complaints, which C code writes to the process's stderr (file
    descriptor 2) where no Python setting reaches them, kept off the terminal while a file is
    probed or read; anything else written there meanwhile (another thread's message) is passed on
    afterwards. One at a time: descriptor 2 belongs to the whole process. ``matrix_dump``: the
    dump ITK's linear algebra prints of a matrix that is not a number (:data:`_MATRIX_DUMP_LINE`)
    is kept off too; ``dicom_jpeg``: the DICOM reader's JPEG decoder's lines on frames it then
    decodes all the same, or that the reader refuses in a line of its own (:data:`_DICOM_JPEG_LINE`);
    ``metaio``: the MetaImage header parser's lines on a header it cannot parse (:data:`_METAIO_LINE`);
    ``hdf5``: the HDF5 library's diagnostics on a file it cannot open (:data:`_HDF5_LINE`);
    ``png``: the PNG library's errors and warnings on a damaged picture (:data:`_PNG_LINE`)."""
    with _native_output_caught(2, lambda line: bool(_TIFF_LIBRARY_LINE.match(line)
                                                    or (matrix_dump and _MATRIX_DUMP_LINE.match(line))
                                                    or (dicom_jpeg and _DICOM_JPEG_LINE.match(line))
                                                    or (metaio and _METAIO_LINE.match(line))
                                                    or (hdf5 and _HDF5_LINE.match(line))
                                                    or (png and _PNG_LINE.match(line)))):
        yield


@contextmanager
def jpeg_warnings_caught(said: list[str]) -> Iterator[None]:
    """The JPEG library's warnings (:data:`_JPEG_LIBRARY_LINE`), which the image reader prints on
    the process's stdout (file descriptor 1) while it decodes a damaged picture all the same, kept
    off it and added to ``said``, for the reader to say what they mean in a note of its own;
    anything else written there meanwhile is passed on afterwards."""
    def drop(line: str) -> bool:
        if _JPEG_LIBRARY_LINE.match(line):
            said.append(line)
            return True
        return False

    with _native_output_caught(1, drop):
        yield


@contextmanager
def _native_output_caught(fd: int, drop: Any) -> Iterator[None]:
    """What C code writes to descriptor ``fd`` (1 or 2) meanwhile, held back; the lines ``drop``
    takes are left out, the rest written there afterwards."""
    import os
    import sys
    import tempfile

    stream = sys.stdout if fd == 1 else sys.stderr
    with _NATIVE_STDERR_LOCK:
        try:
            stream.flush()
            saved = os.dup(fd)
        except (OSError, ValueError, AttributeError):  # no descriptor (a windowed app): nothing to keep quiet
            yield
            return
        try:
            with tempfile.TemporaryFile() as caught:
                os.dup2(caught.fileno(), fd)
                try:
                    yield
                finally:
                    try:
                        stream.flush()
                    except (OSError, ValueError, AttributeError):
                        pass
                    os.dup2(saved, fd)
                    caught.seek(0)
                    text = caught.read(1 << 20).decode("utf-8", "replace")
                    kept = [line for line in text.splitlines() if line.strip() and not drop(line)]
                    if kept:
                        os.write(fd, ("\n".join(kept) + "\n").encode("utf-8", "replace"))
        finally:
            os.close(saved)


@contextmanager
def quiet_itk(tiff: bool = False, matrix_dump: bool = False, jpeg: list[str] | None = None,
              dicom_jpeg: bool = False, metaio: bool = False, hdf5: bool = False,
              png: bool = False) -> Iterator[None]:
    """ITK's warnings off while a file is read: a reader that copes with an odd header (or finds
    no DICOM series) still prints a C++ source location on stderr, which says nothing to a user;
    what matters is reported as one line by the readers' own checks. With ``tiff`` (a TIFF is
    read), the TIFF library inside it, which writes to stderr by itself, is kept quiet too
    (``quiet_native_stderr``; only then: the whole process's stderr waits meanwhile, a progress
    bar among it, and other files are read one at a time). With ``matrix_dump`` (a header whose
    orientation is not a number), the matrix dump its linear algebra prints is kept quiet so. With
    ``jpeg`` (a list; a JPEG picture is read), the JPEG library's warnings are kept off stdout and
    added to it (:func:`jpeg_warnings_caught`). With ``dicom_jpeg`` (a DICOM file of JPEG frames is
    read), the lines its JPEG decoder prints for frames it decodes all the same ("Unsupported JPEG
    data precision 12", several on the terminal for one good 12-bit file) are kept off. With ``metaio``
    (a MetaImage header is read by the image reader alone, before the reader's own checks), the
    lines its header parser prints on a header it cannot parse are kept off. With ``hdf5`` (an HDF5
    file is read), the HDF5 library's diagnostic stack on one it cannot open is kept off; with ``png``
    (a PNG picture is read), the PNG library's lines on a damaged one ("libpng error: Read Error")."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        if jpeg is not None:
            with jpeg_warnings_caught(jpeg):
                yield
        elif tiff or matrix_dump or dicom_jpeg or metaio or hdf5 or png:
            with quiet_native_stderr(matrix_dump=matrix_dump, dicom_jpeg=dicom_jpeg, metaio=metaio, hdf5=hdf5,
                                     png=png):
                yield
        else:
            yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def spacing_text(spacing_mm: Any, fmt: str = "g", say_order: bool = True) -> str:
    """A ``(row_mm, col_mm)`` pixel size as people read it: ``0.28 x 0.28 mm``; width first when
    the two differ, and said so (``0.28 x 0.35 mm (width x height)``; ``say_order=False`` where
    there is no room), as frame sizes are."""
    row, col = (float(v) for v in tuple(spacing_mm)[:2])
    text = f"{col:{fmt}} x {row:{fmt}} mm"
    plain = not say_order or row == col or not (math.isfinite(row) and math.isfinite(col))
    return text if plain else f"{text} (width x height)"


def usable_spacing(spacing_mm: tuple[float, float], source: str, note: str) -> tuple[tuple[float, float], str, str]:
    """``(spacing_mm, source, note)`` as read, or, when the recorded spacing is no length at all
    (zero, negative, not a number), an unknown spacing that says what the file records: the
    frames can still be scored and viewed, lengths are not shown, and a spacing the user gives
    (``--spacing``, the View menu) replaces it."""
    if all(np.isfinite(s) and s > 0 for s in spacing_mm):
        return spacing_mm, source, note
    return (1.0, 1.0), SPACING_NONE, f"the file records {spacing_text(spacing_mm)} per pixel, which is no length"


def sitk_reason(exc: BaseException) -> str:
    """The useful line of a SimpleITK error, without the C++ source locations."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("ITK ERROR", "sitk::ERROR")):
            reason = ln.split(":", 1)[1].strip() if ln.startswith("sitk::ERROR") else ln.split("):", 1)[-1].strip()
            extra = [x for x in lines[lines.index(ln) + 1:] if not x.startswith(("/", "Exception"))]
            return " ".join([reason, *extra[:1]]).strip()[:300]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def fmt_shape(shape: Any) -> str:
    return " x ".join(str(int(s)) for s in shape)


def fmt_dims(size_xyz: tuple[int, ...]) -> str:
    return " x ".join(str(int(s)) for s in size_xyz)


class ZeroFilledDicom(FetalIQAError):
    """A DICOM file that holds zero bytes where its header's elements should be (:class:`_ZeroRunGuard`)."""


class _ZeroRunGuard(io.BufferedReader):
    """A DICOM file read for pydicom that ends at a run of zero bytes where elements should be.

    pydicom reads zeros as endless empty (0000,0000) elements, 8 bytes at a time, in Python: a
    file of a DICOM preamble and marker followed by zeros (what an interrupted copy or a failed
    sync leaves behind) took 2 s per MB to refuse, hours for a few GB, and the window's Open
    folder... said "Opening" all that time. No DICOM header holds even two such elements in a
    row, so a run of them reads as the end of the file, whatever its size (:func:`dcmread_bounded`
    then judges where the run began)."""

    #: consecutive small reads of zero bytes only (tags, lengths) taken for a run of empty elements
    LIMIT = 32

    def __init__(self, path: Path | str):
        super().__init__(io.FileIO(str(path), "rb"))
        self._run = 0
        self._start = 0
        self.zeros_from: int | None = None  # where the run of zeros began, once one was met

    def read(self, size: int | None = -1) -> bytes:
        if self.zeros_from is not None:
            return b""
        data = super().read(size)
        if data and size is not None and 0 < size <= 16 and not data.strip(b"\0"):
            if not self._run:
                self._start = self.tell() - len(data)
            self._run += 1
            if self._run >= self.LIMIT:
                self.zeros_from = self._start
                return b""
        elif data:
            self._run = 0
        return data


#: Deflated Explicit VR Little Endian (PS3.5 A.5): the whole dataset after the file meta is deflated.
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
#: How much of a deflated dataset is inflated to read its header (all elements before the pixel data)
_DEFLATED_HEAD = 2 << 20
#: What a deflated dataset may hold after its pixel data (a signature, padding)
_DEFLATED_TRAIL = 16 << 20
_DEFLATE_VERDICTS: dict[tuple, str | None] = {}


def _deflated_start(path: Path | str) -> tuple[int, Any, Any] | None:
    """``(where the deflated dataset begins, the preamble, the file meta)`` of a Deflated Explicit
    VR Little Endian file, or None for any other file."""
    try:
        with open(path, "rb") as fh:
            if DEFLATED_SYNTAX.encode() not in fh.read(1 << 16):
                return None
            from pydicom.filereader import _read_file_meta_info, read_preamble

            fh.seek(0)
            preamble = read_preamble(fh, True)
            meta = _read_file_meta_info(fh)
            if str(meta.get("TransferSyntaxUID", "") or "").strip() != DEFLATED_SYNTAX:
                return None
            return fh.tell(), preamble, meta
    except Exception:  # noqa: BLE001 - not such a file, or a header pydicom judges itself
        return None


def _deflated_header_only(path: Path | str, specific_tags: Any = None) -> Any:
    """The header of a deflated DICOM file without its pixel data, from the first
    :data:`_DEFLATED_HEAD` bytes it inflates to (pydicom inflates all of it, pixels included, even
    for a header), or None when it is no such file or its pixel data begin further on. Values are
    read in full (none deferred: their offsets would be in the inflated data, not in the file)."""
    found = _deflated_start(path)
    if found is None:
        return None
    start, preamble, meta = found
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = bytearray()
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            while len(head) < _DEFLATED_HEAD and not inflater.eof:
                data = inflater.unconsumed_tail or fh.read(1 << 16)
                if not data:
                    break
                head += inflater.decompress(data, _DEFLATED_HEAD - len(head))
    except (OSError, zlib.error):
        return None
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    buffer = DicomBytesIO(bytes(head))
    at_pixels: list[bool] = []

    def stop(tag: Any, vr: Any, length: int) -> bool:
        if int(tag) == 0x7FE00010:
            at_pixels.append(True)
            return True
        return False

    try:
        from pydicom.tag import Tag

        tags = [Tag(t) for t in specific_tags] if specific_tags else None
        dataset = read_dataset(buffer, False, True, stop_when=stop, specific_tags=tags)
    except Exception:  # noqa: BLE001 - the whole read judges it
        return None
    if not at_pixels and not inflater.eof:  # (the header goes on past what was inflated)
        return None
    buffer.name = str(path)
    return FileDataset(buffer, dataset, preamble, meta, False, True)


def _deflated_header(head: bytes) -> tuple[int, int, int, str] | None:
    """From the start of an inflated dataset: ``(where its pixel data begin, their length, the
    bytes its header's Rows, Columns, Number of Frames, Samples per Pixel and Bits Allocated
    describe, those in words)``; None when the pixel data do not begin in ``head`` or the header cannot say."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    buffer = DicomBytesIO(head)
    found: list[tuple[int, int]] = []

    def at_pixels(tag: Any, vr: Any, length: int) -> bool:
        if int(tag) == 0x7FE00010:
            found.append((buffer.tell(), int(length)))
            return True
        return False

    try:
        ds = read_dataset(buffer, False, True, stop_when=at_pixels)
        if not found:
            return None
        rows, cols, frames, samples = (max(int(ds.get(k, 1) or 1), 1) for k in (
            "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel"))
        bits = max(int(ds.get("BitsAllocated", 8) or 8), 1)
    except Exception:  # noqa: BLE001 - a damaged header: bounded by memory alone
        return None
    start, length = found[-1]
    described = f"{frames} frame(s) of {cols} x {rows} pixels, {samples} sample(s) of {bits} bits"
    return start, length, (rows * cols * frames * samples * bits + 7) // 8, described


def _check_deflated(path: Path | str, start: int) -> str | None:
    """Why a deflated DICOM file is not read (one line), or None. pydicom inflates the whole
    dataset in memory before it reads any element: a 3.3 MB file whose header describes 30 KB of
    pixels but whose pixel data inflate to 3.3 GB took more than 5 GB of memory before any check.
    Here it is inflated in pieces and counted, nothing kept but the header: it must end within what
    its pixel data's length allows, that length must be no more than twice what the header
    describes (the readers then judge the difference, as for an uncompressed file), and all of it
    must fit in the memory available. The deflated stream must also reach its end (its final
    block): one cut short, an interrupted copy, made the image reader spin for minutes at 2 GB of
    memory, deaf to Ctrl-C, or read the missing pixels as zeros, or call them undecodable."""
    from fetaliqa_core import validate

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head = bytearray()
    total = 0
    limit: int | None = None
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            while not inflater.eof:
                check_cancelled()
                data = inflater.unconsumed_tail or fh.read(1 << 16)
                if not data:
                    break
                out = inflater.decompress(data, 1 << 20)
                total += len(out)
                if limit is None:
                    head += out
                    if len(head) < _DEFLATED_HEAD:
                        continue
                    limit, beyond = _deflated_limit(path, bytes(head))
                    head = bytearray()
                if total > limit:
                    return (f"{path}: the file's deflated data expand to more than {validate._size_text(limit)}, "
                            f"{beyond}: it is damaged or crafted, and is not read. Export the file again.")
    except zlib.error:
        return None  # damaged: the reader says so
    except OSError:
        return None
    if not inflater.eof:  # the file ends inside the stream: what follows (pixels, for one) is lost
        return (f"{path}: the file's deflated data stop before their end (after "
                f"{validate._size_text(total)} inflated): it is truncated, probably an interrupted copy. "
                "Copy or export it again.")
    if limit is None:  # small: all of it was inflated (and kept) above
        _deflated_limit(path, bytes(head))
    return None


def _deflated_limit(path: Path | str, head: bytes) -> tuple[int, str]:
    """How far the inflated dataset of ``path`` may go, judged from its beginning ``head``, and
    what going further would be (words for the refusal); raises
    FetalIQAError when its pixel data are far longer than its header describes or would not fit
    in memory."""
    from fetaliqa_core import validate

    header = _deflated_header(head)
    free = validate.available_memory_bytes()
    total = validate.machine_memory_bytes()
    room = min(v for v in (free, None if total is None else int(total * validate.MEMORY_SHARE), 1 << 62)
               if v is not None)
    in_memory = (room // 2, "more than half the memory available (pydicom's copy and the image reader's)")
    if header is None:  # (the readers' own header checks follow; the inflated data must fit in memory)
        return in_memory
    begin, length, needed, described = header
    if length == 0xFFFFFFFF:
        return in_memory
    if length > 2 * needed + (1 << 20):
        raise FetalIQAError(f"{path}: the file holds {length} bytes of (deflated) pixel data, far more than the "
                            f"{needed} its header describes ({described}). Reading it would leave frames out: export the "
                            "file again with its right Number of Frames (or Rows and Columns).")
    try:
        validate.check_memory(str(path), 2 * (begin + length), "inflating this deflated DICOM file", now=True)
    except FetalIQAError as exc:
        raise _NotNow(str(exc)) from None
    return begin + length + _DEFLATED_TRAIL, "far more than its header and pixel data describe"


def _refuse_deflate_bomb(path: Path | str) -> None:
    """:func:`_check_deflated` for a Deflated Explicit VR Little Endian file, once per file version."""
    found = _deflated_start(path)
    if found is None:
        return
    start = found[0]
    try:
        st = Path(path).stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        return
    if key not in _DEFLATE_VERDICTS:
        try:
            verdict = _check_deflated(path, start)
        except (ReadCancelled, _NotNow):
            raise  # (not the file's fault: judged again next time)
        except FetalIQAError as exc:
            verdict = str(exc)
        if len(_DEFLATE_VERDICTS) > 256:
            _DEFLATE_VERDICTS.clear()
        _DEFLATE_VERDICTS[key] = verdict
    if _DEFLATE_VERDICTS[key]:
        raise DeflateBomb(_DEFLATE_VERDICTS[key])


class _NotNow(FetalIQAError):
    """More memory than is available now (:func:`_deflated_limit`)."""


class DeflateBomb(FetalIQAError):
    """A deflated DICOM file whose inflated data are more than its header allows or memory holds,
    or stop before their end (:func:`_check_deflated`)."""


def dcmread_bounded(path: Path | str, **options: Any) -> Any:
    """``pydicom.dcmread(path, **options)`` in time bounded by the file's header, not its size: a
    deflated file is inflated only as far as its header allows (:func:`_check_deflated`), a
    run of zero bytes where elements should be (:class:`_ZeroRunGuard`) is refused with a
    :class:`ZeroFilledDicom`, unless it comes after the pixel data (padding, as the readers take
    zeros there)."""
    import pydicom

    if options.get("stop_before_pixels"):  # (a deflated file's pixels need not be inflated)
        header = _deflated_header_only(path, options.get("specific_tags"))
        if header is not None:
            return header
    _refuse_deflate_bomb(path)
    with _ZeroRunGuard(path) as fh:
        ds = pydicom.dcmread(fh, **options)
    if fh.zeros_from is not None:
        pixels = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
        start, length = getattr(pixels, "value_tell", None), getattr(pixels, "length", None)
        end = None if start is None or length is None else (
            int(start) if int(length) == 0xFFFFFFFF else int(start) + int(length))  # (fragments: read as one value)
        if end is None or end > fh.zeros_from:
            raise ZeroFilledDicom(
                f"{path}: the DICOM file holds only zero bytes where its header should go on (from byte "
                f"{fh.zeros_from}): it was never fully written, probably an interrupted copy or a failed sync. "
                "Copy or export it again.")
    return ds


@contextmanager
def pydicom_warnings_off() -> Iterator[None]:
    """pydicom's warnings on a header's values (``Invalid value for VR IS: '6.0'``, ``Expected
    implicit VR, but found explicit VR``), two lines each naming a file inside pydicom, kept off
    the terminal while the readers read DICOM: they printed above the reader's own line, and
    before a sweep scored without fault. What matters in them the readers' own checks say, in
    their words (a reader that needs one records it inside this). Only warnings pydicom's own
    modules raise are left out: FetalIQA's, and any other library's, show as before. Also a
    decorator (``@pydicom_warnings_off()``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        yield


#: Frame rates taken from a header, frames per second: outside these a value is not a rate
#: (a Frame Time of 0, or one written in seconds where milliseconds are meant).
PLAUSIBLE_FRAME_RATE = (0.5, 1000.0)


#: The most characters a DICOM decimal string (DS) entry takes, with its backslash.
_DS_ENTRY_CHARS = 17


def _frame_time_vector_head(path: Path | str, ds: Any, most: int) -> list[Any] | None:
    """The first ``most`` entries of a Frame Time Vector, read from only as many of its bytes as
    they can take: a vector of a million entries was parsed whole (6 s and 518 MB) for the mean
    of its first 4096 gaps. None when the file has none."""
    element = ds.get_item(0x00181065, keep_deferred=True) if 0x00181065 in ds else None
    if element is None:
        return None
    data = getattr(element, "value", None) if hasattr(element, "value_tell") else None
    meta = getattr(ds, "file_meta", None)
    deflated = meta is not None and str(meta.get("TransferSyntaxUID", "")) == "1.2.840.10008.1.2.1.99"
    if hasattr(element, "value_tell") and data is None and not deflated:  # (deferred: longer than read ahead)
        with open(path, "rb") as fh:
            fh.seek(int(element.value_tell))
            data = fh.read(min(int(element.length), (most + 1) * _DS_ENTRY_CHARS))
    if isinstance(data, bytes):
        return data.decode("latin-1").split("\\")[:most]
    vector = ds.get("FrameTimeVector", None)  # (already parsed, or in a deflated file's inflated header)
    return None if vector is None or isinstance(vector, (str, bytes)) else list(vector)[:most]


def dicom_frame_rate(path: Path | str) -> tuple[float, str] | None:
    """The rate a DICOM file states for its frames: ``(frames per second, what it states)``, from
    the Cine module (PS3.3 C.7.6.5) in this order: Frame Time (0018,1063, ms between frames),
    Frame Time Vector (0018,1065, its mean after the first, which is 0), Cine Rate (0018,0040),
    then Recommended Display Frame Rate (0008,2144). None when it states none that is a plausible
    rate (:data:`PLAUSIBLE_FRAME_RATE`) or the header cannot be read (the image reader reports that).
    """
    try:
        ds = dcmread_bounded(str(path), stop_before_pixels=True, defer_size="64 KB", force=True,
                             specific_tags=["FrameTime", "FrameTimeVector", "CineRate",
                                            "RecommendedDisplayFrameRate"])
    except Exception:  # noqa: BLE001 - only the playing speed; the image reader reports a damaged header
        return None
    lo, hi = PLAUSIBLE_FRAME_RATE

    def number(value: Any) -> float | None:
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        return v if math.isfinite(v) and v > 0 else None

    def rate(fps: float | None, words: str) -> tuple[float, str] | None:
        return (round(fps, 3), words) if fps is not None and lo <= fps <= hi else None

    try:
        ms = number(ds.get("FrameTime", None))
        if ms is not None and (found := rate(1000.0 / ms, f"Frame Time {ms:g} ms")):
            return found
        vector = _frame_time_vector_head(path, ds, 4097)
        if vector is not None:
            gaps = [number(v) for v in vector[1:4097]]
            if gaps and all(g is not None for g in gaps):
                mean = sum(gaps) / len(gaps)
                if found := rate(1000.0 / mean, f"Frame Time Vector, {mean:g} ms between frames"):
                    return found
        for key, label in (("CineRate", "Cine Rate"), ("RecommendedDisplayFrameRate",
                                                        "Recommended Display Frame Rate")):
            fps = number(ds.get(key, None))
            if found := rate(fps, f"{label} {fps:g} per second" if fps is not None else ""):
                return found
    except Exception:  # noqa: BLE001 - a malformed value: no rate, as for none
        return None
    return None
