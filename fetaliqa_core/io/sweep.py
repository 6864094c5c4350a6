"""The :class:`Sweep` and the public reading and writing functions."""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import math
import mmap
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from fetaliqa_core import acouslic
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_path
from fetaliqa_core.io import spacing as _spacing
from fetaliqa_core.io._common import (
    META_SWEEP_KINDS,
    META_SWEEP_RANGES,
    SPACING_FROM_US_REGION,
    SPACING_FROM_USER,
    SPACING_GIVEN,
    SPACING_NONE,
    SUPPORTED_FORMATS,
    SWEEP_KINDS,
    check_cancelled,
    fmt_shape,
    full_suffix,
    quiet_itk,
    sitk_reason,
)
from fetaliqa_core.io.frames import as_frame_stack, as_labels, check_frame_shape, to_uint8_frames
from fetaliqa_core.io.readers import (dicom_stored_inverted, read_raw, slicer_segment_names,
                                      tiff_compressed_without_predictor)


@dataclass(eq=False)
class Sweep:
    """One loaded ultrasound recording (one or more sweeps stacked along the frame axis).

    ``frames``: ``(N, H, W)`` uint8, C-contiguous, read-only (possibly a ``np.memmap``).
    ``spacing_mm``: ``(row_mm, col_mm)`` of one pixel as recorded (``1.0, 1.0`` when the file
    records none): use :attr:`measurement_spacing_mm` for anything shown in mm.
    ``sweep_ranges``: half-open ``[start, stop)`` frame ranges, in order, covering ``0..N``.
    ``sweep_kinds``: one of ``"transverse" | "sagittal" | "unknown"`` per sweep.
    ``spacing_source``: where the spacing came from: ``"file header"``, ``"DICOM ultrasound
    region calibration"``, ``"DICOM Pixel Spacing"``, ``"user"``, ``"given"`` (built in code) or
    ``"none"`` (unknown); ``spacing_note`` says why when it is unknown.
    """

    frames: np.ndarray
    spacing_mm: tuple[float, float]
    sweep_ranges: list[tuple[int, int]]
    sweep_kinds: list[str]
    path: Path | None = None
    spacing_source: str = SPACING_GIVEN
    spacing_note: str = ""
    #: The spacing the content hash covers: the file's, so a spacing set by the user later does
    #: not make the same recording a different sweep (review database, cache).
    hash_spacing_mm: tuple[float, float] | None = dataclasses.field(default=None, repr=False)
    #: What reading the file did that the user should know, one line each (pixels that hold no
    #: number, series left out of a folder, how the spacing was chosen); shown with the answer.
    read_notes: tuple[str, ...] = ()
    #: Where the file says the image of the body lies: ``(x0, y0, x1, y1)`` rectangles, inclusive
    #: (a DICOM ultrasound image's tissue regions; empty when it says nothing). The field of view
    #: is looked for inside them (:func:`fetaliqa_core.acouslic.sweep_fov`), not on the scanner's
    #: panels or a Doppler strip beside them.
    image_regions: tuple = ()
    #: Those regions each with its own pixel size, ``((x0, y0, x1, y1), (row_mm, col_mm) or None)``
    #: in the frames' pixels, where they do not all state one (a picture-in-picture image at another
    #: zoom): ``spacing_mm`` is then the largest region's, and holds only for an outline inside it
    #: (:meth:`outline_spacing`). Empty otherwise.
    region_calibrations: tuple = ()
    #: The frames cut from a larger screen: ``((x0, y0, x1, y1), (height, width))``, the rectangle
    #: kept (inclusive, in the file's pixels) and the file's own frame size; None when not cut. A
    #: mask drawn on the whole screen is cut the same way (:func:`crop_like`).
    crop: tuple | None = None
    #: A pixel's ``(height, width)`` proportions where the file states them but not its size (DICOM
    #: Pixel Aspect Ratio other than 1:1): a pixel size the user gives must then be two values.
    pixel_aspect: tuple[float, float] | None = None
    #: ``(frames per second, what the file states)`` where the file states the rate of its frames
    #: (a DICOM cine's Frame Time, Cine Rate): the window plays the sweep at it. None otherwise.
    frame_rate: tuple[float, str] | None = None

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

    # --- pixel spacing (see fetaliqa_core.io.spacing) ----------------------------------------

    @property
    def spacing_known(self) -> bool:
        """Whether the pixel spacing comes from the file, its calibration, the user or code."""
        return self.spacing_source != SPACING_NONE

    @property
    def spacing_plausible(self) -> bool:
        """Known and inside :data:`fetaliqa_core.io.spacing.PLAUSIBLE_SPACING_MM`."""
        return self.spacing_known and _spacing.is_plausible(self.spacing_mm)

    @property
    def measurement_spacing_mm(self) -> tuple[float, float] | None:
        """``(row_mm, col_mm)`` when lengths may be shown, else None."""
        return tuple(self.spacing_mm) if self.spacing_plausible else None  # type: ignore[return-value]

    @property
    def spacing_problem(self) -> str | None:
        """One line saying why no length (mm) or gestational age may be shown; None when they may."""
        return _spacing.problem(tuple(self.spacing_mm), self.spacing_source, self.spacing_note)

    def outline_spacing(self, mask: np.ndarray) -> tuple[tuple[float, float] | None, str | None, str]:
        """The pixel size to measure the outline ``mask`` (2-D, the frames' size, non-zero inside)
        with: ``(spacing, problem, note)``. The sweep's :attr:`measurement_spacing_mm` (or its
        :attr:`spacing_problem`), except where its image regions state different pixel sizes
        (:attr:`region_calibrations`): then that of the region holding the outline, with a note when
        it is not the sweep's, or none (``problem`` says why) when the outline lies outside them or
        across two of different sizes (:func:`fetaliqa_core.io.spacing.outline_spacing`). A size the
        user gave stands for every pixel."""
        if self.spacing_problem is not None:
            return None, self.spacing_problem, ""
        used = tuple(float(v) for v in self.spacing_mm)
        if self.spacing_source != SPACING_FROM_US_REGION or not self.region_calibrations:
            return used, None, ""
        return _spacing.outline_spacing(self.region_calibrations, used, mask)

    def in_memory(self) -> Sweep:
        """This sweep with its frames read into memory when they are mapped from the file (an
        uncompressed sweep opens without reading it). For a sweep used for a while (scored, shown):
        another program may rewrite or truncate the file meanwhile, and a mapped page that no
        longer exists kills the process (SIGBUS) with no word and no result."""
        if not isinstance(self.frames, np.memmap):
            return self
        from fetaliqa_core import validate

        n, h, w = self.frames.shape
        validate.check_memory(str(self.path), int(self.frames.nbytes), f"a sweep of {n} x {h} x {w} pixels",
                              now=True)
        frames = _read_mapped(self.frames, self.path)  # an ndarray of its own, no longer backed by the file
        frames.flags.writeable = False
        return dataclasses.replace(self, frames=frames)

    def with_spacing(self, spacing_mm: float | tuple[float, float], how: str = "given") -> Sweep:
        """The same sweep with a pixel spacing the user gave (mm per pixel, one value or
        ``(row_mm, col_mm)``). Raises FetalIQAError when it is not plausible, or when it is one
        value and the sweep's pixels are not square (its calibration, its Pixel Aspect Ratio or a
        size given before): one value would make them square. A calibration of the file's it
        replaces is said in a note (``how``: how it was given, "given with --spacing")."""
        stated = tuple(self.spacing_mm) if self.spacing_known else None
        pair, replaced = _spacing.given_spacing(spacing_mm, stated, self.spacing_source, self.pixel_aspect, how)
        notes = self.read_notes
        if self.region_calibrations and self.spacing_source != SPACING_FROM_USER:
            # image regions calibrated differently: the size given replaces them all (the largest's
            # size alone was named, or nothing where the size given was the largest's or where the
            # regions, of like size, left the sweep's unknown), and the note that the largest's was
            # used is no longer true (it was kept). Where an outline lies in a
            # region of another size, its AC says so (:func:`~fetaliqa_core.io.spacing.given_where_outline_lies`).
            replaced = _spacing.regions_given_note(self.region_calibrations, how)
            notes = tuple(n for n in notes if not n.endswith(_spacing.LARGEST_REGION_USED))
        notes += (f"pixel spacing {replaced}",) if replaced else ()
        if self.spacing_note.startswith(_spacing.SPACING_CHANGES):
            # one value for every frame of a sweep whose depth changed: said, not forgotten
            notes += (f"{self.spacing_note}; the pixel size given, {_spacing.spacing_text(pair)}, is applied "
                      "to every frame: check that it holds for the frame measured",)
        given = dataclasses.replace(self, spacing_mm=pair, spacing_source=SPACING_FROM_USER, spacing_note="",
                                    hash_spacing_mm=self._hash_spacing(), read_notes=notes)
        given._keep_worked_out(self)
        return given

    def _keep_worked_out(self, other: Sweep) -> None:
        """Take over what was worked out from ``other``'s pixels and kept on it (its content hash,
        which covers the file's spacing, not one given later; its field of view; its frames'
        brightness): the pixels are the same, and working it out again took the window's thread
        1-2 s on a full case when the user set a pixel spacing."""
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in other.__dict__.items():
            if key not in names:
                self.__dict__.setdefault(key, value)

    def _hash_spacing(self) -> tuple[float, float]:
        return tuple(self.hash_spacing_mm if self.hash_spacing_mm is not None else self.spacing_mm)  # type: ignore

    @cached_property
    def content_hash(self) -> str:
        """Hex digest of the pixels, shape and the file's spacing (blake2b, 128 bit).

        Computed on first use only (about 1 s for an ACOUSLIC case), so it never delays frame 0.
        """
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((tuple(self.frames.shape), tuple(round(s, 9) for s in self._hash_spacing()))).encode())
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


#: Height/width (either way) beyond which frames are taken for a stack read along the wrong axis.
NARROW_FRAME_ASPECT = 3


def load_sweep(path: str | Path) -> Sweep:
    """Read a sweep file or DICOM series folder into a :class:`Sweep`.

    The pixel spacing's provenance is on the sweep (``spacing_source``, ``spacing_problem``).
    Colour frames become grey; 16-bit and float data are shown through the file's own window
    (DICOM VOI) when it has one, keep grey levels they already hold (0-255, or floats within 0-1),
    and are otherwise windowed to uint8 between the 0.5th and 99.5th percentile of the finite
    values, padding left out (see :func:`fetaliqa_core.io.frames.to_uint8_frames`); a single 2-D
    image becomes a one-frame sweep. Frames are in the file's storage order (rows top to bottom as
    stored): an orientation in the header (direction cosines, a NIfTI affine) is not applied.
    """
    path = Path(path).expanduser()
    raw = read_raw(path, purpose="sweep")
    frames = to_uint8_frames(raw)
    check_frame_shape(frames.shape, path)
    ranges, kinds = _sweep_layout(frames.shape[0], raw.metadata)
    if frames.flags.writeable:
        frames.flags.writeable = False
    n, h, w = frames.shape
    spacing_source, spacing_note = raw.spacing_source, raw.spacing_note
    # (the black's layout only for the formats numpy's frames-first order is written in: a DICOM or
    # a TIFF is written frame by frame, and a linear probe's sweep whose depth changed mid-sweep has
    # black along whole rows of some frames and in no one place)
    across = frames_axis_evidence(frames, black_layout=bool(raw.axes_spacing))
    suspect = None if across is not None else _frames_first_layout(n, h, w, raw.axes_spacing)
    tall, wide = float(h), float(w)
    if raw.spacing_source != SPACING_NONE and all(0 < float(v) < math.inf for v in raw.spacing_mm):
        tall, wide = h * float(raw.spacing_mm[0]), w * float(raw.spacing_mm[1])  # in mm: pixels need not be square
    if across is not None:
        # A stack saved frames-first (numpy's order) as a NIfTI/NRRD's x, y, z reads as slices
        # across the sweep: each "frame" holds one column of every real frame, with a pixel
        # size that can look plausible. Nothing measured on such a slice is a length on the body.
        unpredicted = tiff_compressed_without_predictor(path)
        if unpredicted:  # (a TIFF written with a predictor whose tag says none decodes to such noise)
            raw.notes.append(f"{across}: the TIFF's pixels are compressed with {unpredicted} and its Predictor tag "
                             "says none; if they were stored with a predictor (the tag wrong), each frame decodes "
                             "to noise; otherwise the file stores its frames along another axis, so each frame "
                             "shown is a slice across the sweep. Export it again (with the frames along the last, "
                             "slowest, axis)")
        else:
            raw.notes.append(f"{across}: the file seems to store its frames along another axis (e.g. written in "
                             "numpy's frames-first order), so each frame shown is a slice across the sweep; export "
                             "it with the frames along the last (slowest) axis")
        if spacing_source != SPACING_NONE:
            spacing_source = SPACING_NONE
            spacing_note = "the frames seem to be slices across the sweep, not its frames"
    elif suspect is not None:
        # The pixels do not tell (a slowly changing sweep with no black around its image), but the
        # layout is that of such a stack: its pixel size is not trusted, and the user is told what to check.
        raw.notes.append(suspect)
        if spacing_source != SPACING_NONE:
            spacing_source = SPACING_NONE
            spacing_note = ("the frames may be slices across the sweep (a stack stored frames-first), not its "
                            "frames: check them")
    elif max(tall, wide) > NARROW_FRAME_ASPECT * min(tall, wide):
        # A stack written in numpy's (N, H, W) order as a NIfTI/NRRD's (x, y, z) reads as frames
        # of H x N pixels: ultrasound frames are never this narrow.
        raw.notes.append(f"the frames are {h} x {w} pixels (height x width), far narrower than ultrasound "
                         f"frames; if the file stores its {n} frames along another axis, export it with the "
                         "frames along the last (slowest) axis")
    if _looks_like_label_mask(frames):
        raw.notes.append("the frames hold only the values 0, 1 and 2: this looks like a label mask (an "
                         "annotation), not a sweep; choose the sweep's image file")
    regions = tuple(r for r in raw.regions if r[2] < w and r[3] < h)
    calibrations = tuple((r, size) for r, size in raw.region_calibrations if r[2] < w and r[3] < h)
    crop = _image_area(regions, h, w)
    if crop is not None:
        # a scanner's screen (panels, text, a Doppler strip around the image): the frames are cut to
        # the image the file names, as the models were trained on frames that are all image (on a
        # 1920 x 1080 capture an abdomen was a dozen pixels across in the model's input)
        x0, y0, x1, y1 = crop
        frames = np.ascontiguousarray(frames[:, y0:y1 + 1, x0:x1 + 1])
        frames.flags.writeable = False
        regions = tuple((a - x0, b - y0, c - x0, d - y0) for a, b, c, d in regions)
        calibrations = tuple(((a - x0, b - y0, c - x0, d - y0), size) for (a, b, c, d), size in calibrations)
        raw.notes.append(f"the frames are cut to the ultrasound image the file names (columns {x0}-{x1}, rows "
                         f"{y0}-{y1} of its {w} x {h}): the scanner's panels and text around it are left out")
    return Sweep(frames=frames, spacing_mm=raw.spacing_mm, sweep_ranges=ranges, sweep_kinds=kinds,
                 path=path, spacing_source=spacing_source, spacing_note=spacing_note,
                 read_notes=tuple(raw.notes), image_regions=regions, region_calibrations=calibrations,
                 crop=None if crop is None else (crop, (h, w)), pixel_aspect=raw.pixel_aspect,
                 frame_rate=raw.frame_rate)


#: At most this many bytes of a sweep's frames are read to tell a label mask from a sweep. A blank
#: file (all zeros: a preallocated file, a copy never finished) passes the first frames' test, and
#: reading all of it to be sure took minutes and all the memory on a 335 GB one (memory-mapped, before
#: its size was judged), with no way to stop it; a mask is told apart well within this.
MASK_CHECK_BYTES = 128 << 20


def _mapped(frames: np.ndarray) -> bool:
    """Whether ``frames`` (or the array it is a view of) is mapped from a file rather than held in memory."""
    a = frames
    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return isinstance(a, mmap.mmap)


def _looks_like_label_mask(frames: np.ndarray) -> bool:
    """Whether the frames hold nothing but the values 0, 1 and 2, some not 0: a label mask (an
    annotation) opened as a sweep, whose grey levels span 0-255. Frames spread evenly over the
    sweep are read, a few at a time and no more than :data:`MASK_CHECK_BYTES` in all (every frame of
    a smaller sweep, or of one held in memory), and reading stops at the first grey level above 2
    (a sweep's first frames settle it) or when the read is stopped (``io.cancellable``)."""
    n = int(frames.shape[0])
    frame_bytes = max(1, int(frames[:1].nbytes))
    if n == 0 or frames.size == 0:
        return False
    budget = max(1, MASK_CHECK_BYTES // frame_bytes)
    # (frames already in memory are all read: a challenge answer's mask labels one frame of 840,
    # which a sample misses; only a file mapped from disk is sampled)
    if budget >= n or not _mapped(frames):
        order = np.arange(n)
    else:
        order = np.unique(np.linspace(0, n - 1, budget).round().astype(np.int64))
    # the 16 frames spread over the sweep first: on a sweep they settle it
    first = order[np.unique(np.linspace(0, len(order) - 1, min(16, len(order))).round().astype(np.int64))]
    order = np.concatenate([first, np.setdiff1d(order, first, assume_unique=True)])
    step = max(1, (8 << 20) // frame_bytes)
    top = 0
    for start in range(0, len(order), step):
        check_cancelled()
        top = max(top, int(frames[np.sort(order[start:start + step])].max()))
        if top > 2:
            return False
    return top > 0


#: The image regions a file names must leave out at least this share of the frame's width or
#: height for the frames to be cut to them (a region drawn around the whole frame is no cut).
MIN_CROP_SHARE = 0.05


def _image_area(regions: tuple, h: int, w: int) -> tuple[int, int, int, int] | None:
    """The rectangle ``(x0, y0, x1, y1)`` (inclusive) that holds every image region, when it
    leaves out a part of the frame worth cutting off; None otherwise."""
    if not regions:
        return None
    x0, y0 = min(r[0] for r in regions), min(r[1] for r in regions)
    x1, y1 = max(r[2] for r in regions), max(r[3] for r in regions)
    if (x1 - x0 + 1) > (1 - MIN_CROP_SHARE) * w and (y1 - y0 + 1) > (1 - MIN_CROP_SHARE) * h:
        return None
    return x0, y0, x1, y1


#: How much more alike neighbouring frames must be than a frame's neighbouring columns, and its
#: neighbouring rows than its columns (grey-level correlation), for the frames to be taken for
#: slices across a sweep written frames-first. A sweep's frames are planes a probe's move apart,
#: less alike than a frame's neighbouring pixels (0.58-0.97 against 0.85-0.99 on the cases of four
#: generators); written frames-first, the sweep's frame axis lies along the columns (the demo case:
#: frames 0.93, rows 0.88, columns 0.44). A probe held still over fine speckle makes neighbouring
#: frames the more alike too, but leaves a frame's rows and columns alike (and a B-mode image's
#: columns are the more alike where the two differ: the beam is wider than a pulse is long); on
#: the project's sweeps saved frames-first the rows lead the columns by 0.06-0.44 (under 0.1: not caught).
ACROSS_MARGIN = 0.2
ACROSS_SIDE_MARGIN = 0.1
#: Frame pairs sampled for that comparison, and the grey level above which a pixel counts
#: (black padding and the fan's outside are alike everywhere and say nothing).
_ACROSS_PAIRS, _ACROSS_MIN_GREY = 12, 5
#: Frames of more pixels than this are sampled at a wider step for it (a frame's pixels, not its file's).
_ACROSS_PIXELS = 1 << 20


def _pixel_step(h: int, w: int) -> int:
    """Every how many pixels (in each direction) a frame of ``h`` x ``w`` is read for the signs of
    a stack stored frames-first: 1 up to :data:`_ACROSS_PIXELS`, wider beyond (about that many read)."""
    return max(1, math.ceil(math.sqrt(h * w / _ACROSS_PIXELS)))


def frames_axis_evidence(frames: np.ndarray, black_layout: bool = True) -> str | None:
    """What in the pixels shows a stack written frames-first and read with its frames along the
    columns, said in a few words with its numbers; None when nothing does, and for stacks too small
    to tell (under 8 frames, 8 x 8 pixels). Either of two signs: the black around the image lies
    along whole rows of each frame rather than in the same place in every frame
    (:func:`_black_layout`), or neighbouring frames and neighbouring rows are both clearly more
    alike than neighbouring columns (:data:`ACROSS_MARGIN`). ``black_layout``: whether the first
    sign is looked for (only in the formats a frames-first array is written in: NIfTI, NRRD)."""
    n, h, w = frames.shape
    if n < 8 or h < 8 or w < 8:
        return None
    black = _black_layout(frames) if black_layout else None
    if black is not None:
        return black
    alike = _neighbours_alike(frames)
    if alike is None:
        return None
    return f"neighbouring frames and a frame's rows are far more alike than its columns ({alike})"


def _neighbours_alike(frames: np.ndarray) -> str | None:
    """The grey-level correlations between neighbouring frames, rows and columns, as text, when
    frames and rows are both clearly more alike than columns (:func:`frames_axis_evidence`)."""
    n, h, w = frames.shape
    starts = np.unique(np.linspace(0, n - 2, _ACROSS_PAIRS).round().astype(int))
    pairs = {"frames": ([], []), "rows": ([], []), "columns": ([], [])}
    # frames over a megapixel are sampled more sparsely (still neighbour beside neighbour): turning
    # whole 4096 x 4096 frames into floats took 1.1 GB and seconds before a sweep too large for
    # memory was refused
    k = _pixel_step(h, w)
    f2, f3 = 2 * k, 3 * k

    def grey(part: np.ndarray) -> np.ndarray:
        return np.asarray(part, dtype=np.float32).ravel()

    for i in starts:
        check_cancelled()  # (a frame may be 16 MB of a file being read)
        a, b = frames[i], frames[i + 1]
        pairs["frames"][0].append(grey(a[::f2, ::f2]))
        pairs["frames"][1].append(grey(b[::f2, ::f2]))
        pairs["rows"][0].append(grey(a[:-1:f3, ::f2]))
        pairs["rows"][1].append(grey(a[1::f3, ::f2]))
        pairs["columns"][0].append(grey(a[::f2, :-1:f3]))
        pairs["columns"][1].append(grey(a[::f2, 1::f3]))
    corr = {}
    for axis, (xs, ys) in pairs.items():
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = (x > _ACROSS_MIN_GREY) & (y > _ACROSS_MIN_GREY)
        x, y = x[keep], y[keep]
        if x.size < 1000 or float(x.std()) == 0.0 or float(y.std()) == 0.0:
            return None
        corr[axis] = float(np.corrcoef(x, y)[0, 1])
    if not all(math.isfinite(v) for v in corr.values()):
        return None
    # numpy's (N, H, W) read as (x, y, z) puts the sweep's frame axis on the columns and its rows on
    # the rows: the columns alone are far less alike than the rows. A probe held still, a frame
    # stored twice or fine speckle make neighbouring frames alike too, but leave a frame's rows and
    # columns alike (or its columns more alike: the beam is wider than a pulse is long)
    if corr["frames"] - corr["columns"] < ACROSS_MARGIN or corr["rows"] - corr["columns"] < ACROSS_SIDE_MARGIN:
        return None
    return ", ".join(f"{axis} {value:.2f}" for axis, value in corr.items())


#: The black around a sweep's image (outside a probe's fan, margins: grey levels up to
#: :data:`_ACROSS_MIN_GREY`) lies in the same place in every frame; written frames-first and read
#: along the wrong axis, it lies along whole rows of each frame instead (each row of a "frame" is one
#: depth of every real frame). The shares of the black in the sampled frames that lie so, upright:
#: 0.58-0.99 in the same place, 0.03-0.55 along whole rows, the rows never ahead (by 0.31 at the
#: least); frames-first: 0.47-0.99 along whole rows, 0.06-0.58 in the same place, the rows ahead by
#: 0.27 at the least (120 cases of the synthesiser at four sizes, the demo's six sweeps, a phantom).
#: Taken for frames-first when the rows hold at least :data:`BLACK_ROWS_MIN` of it and
#: :data:`BLACK_MARGIN` more than the same place does. (The pixels of a probe moving slowly over a
#: slowly changing body are alike along every axis, and the correlations above miss such a stack;
#: its fan, held still on the screen, does not.)
BLACK_ROWS_MIN, BLACK_MARGIN = 0.4, 0.2
#: ... and at least this share of the frames have a whole black row
BLACK_ROWS_FRAMES = 0.7
#: ... and the whole black rows move from frame to frame: read frames-first, each "frame" is another
#: column of the sweep and shows the fan's edge at another depth (the same black rows, give or take
#: 1 % of them, in 0.00-0.40 of the neighbouring sampled frames: the cases above), while an upright
#: sweep keeps them in place for as long as a depth is set (a depth changed twice: 0.87). Taken for
#: frames-first only when they stay put between fewer than this share of neighbouring sampled frames.
BLACK_ROWS_STEADY = 0.6
#: Frames sampled for it; a line counts as black when this share of its pixels is; the black must
#: be at least this share of the sampled frames' pixels to say anything.
_BLACK_FRAMES, _BLACK_LINE, _BLACK_MIN_SHARE = 16, 0.95, 0.02


def _black_layout(frames: np.ndarray) -> str | None:
    """The shares of the black lying along whole rows and in the same place in every frame, as
    text, when the rows hold clearly more of it (:data:`BLACK_MARGIN`) in (nearly) every frame
    (:data:`BLACK_ROWS_FRAMES`) and move from frame to frame (:data:`BLACK_ROWS_STEADY`); None
    otherwise. Frames that show less than half the image most do (blank frames, a probe lifted off)
    are left out: their black lies along whole rows in an upright sweep too. Where the black lies is
    judged over the frames with whole black rows: an upright linear sweep whose depth was set
    shorter for a stretch (from its third frame on, say) has them in one place in that stretch."""
    n, h, w = frames.shape
    picked = np.unique(np.linspace(0, n - 1, min(n, _BLACK_FRAMES)).round().astype(int))
    k = _pixel_step(h, w)  # (frames over a megapixel: every k-th pixel)
    black = np.stack([np.asarray(frames[i][::k, ::k]) <= _ACROSS_MIN_GREY for i in picked])
    shown = 1.0 - black.mean(axis=(1, 2))
    black = black[(shown > _BLACK_MIN_SHARE) & (shown >= 0.5 * float(np.median(shown)))]
    total = int(black.sum())
    if black.shape[0] < 4 or total < max(500, _BLACK_MIN_SHARE * black.size):
        return None
    along_rows = black.mean(axis=2) >= _BLACK_LINE           # (frames, H): a frame's row black (nearly) all along
    # read frames-first, (nearly) every "frame" is a slice through the black beside the fan; an upright
    # sweep whose depth changed, or that lost contact, for a stretch has whole black rows in that stretch only
    with_rows = along_rows.any(axis=1)
    if float(with_rows.mean()) < BLACK_ROWS_FRAMES:
        return None
    # ... and in the same place all through that stretch (the depth set shorter from the third frame on,
    # or deep only in the last ones): where the black lies is judged over the frames with whole black
    # rows. Read frames-first, every "frame" has them and each lies elsewhere (the fan's edge at
    # another depth in each column), so this leaves such a stack as it was
    black, along_rows = black[with_rows], along_rows[with_rows]
    total = int(black.sum())
    in_place = black.mean(axis=0) >= _BLACK_LINE             # (H, W): black in (nearly) every such frame
    same_place = float((black & in_place[None]).sum()) / total
    whole_rows = float((black & along_rows[:, :, None]).sum()) / total
    if whole_rows < BLACK_ROWS_MIN or whole_rows - same_place < BLACK_MARGIN:
        return None
    # (a depth changed twice leaves each depth's black rows in place for its own stretch only: what
    # tells the two apart is that, read frames-first, the black rows move from one "frame" to the next)
    tolerance = max(1, round(0.01 * along_rows.shape[1]))
    kept = (along_rows[1:] != along_rows[:-1]).sum(axis=1) <= tolerance
    if kept.size and float(kept.mean()) >= BLACK_ROWS_STEADY:
        return None
    return (f"the black around the image lies along whole rows of each frame ({whole_rows:.2f} of it), not in the "
            f"same place in every frame ({same_place:.2f}) as around a sweep's image")


#: A frame at least this many times taller than wide, with more frames than a frame is wide, in a
#: NIfTI or NRRD whose header gives its three axes one size, is taken for a stack written
#: frames-first when the pixels cannot tell (:func:`_frames_first_layout`).
FRAMES_FIRST_TALL = 2


def _frames_first_layout(n: int, h: int, w: int, axes_spacing: tuple[float, ...]) -> str | None:
    """A note when the layout is that of a sweep written frames-first (numpy's ``(N, H, W)`` saved
    as a NIfTI's or NRRD's x, y, z reads as W frames of H x N): frames far taller than wide
    (:data:`FRAMES_FIRST_TALL`), more of them than a frame is wide, and one size stated for all
    three axes (one number put in an affine; a sweep's frame axis rarely has its pixels' size).
    None otherwise. Upright, a sweep rarely has all three: its frames are wider than tall or
    nearly square. Such a stack of a slowly changing sweep with no black around its image passes
    :func:`frames_axis_evidence`: its pixel size is then not trusted, and the note says what to check."""
    if len(axes_spacing) != 3 or h < FRAMES_FIRST_TALL * w or n <= w:
        return None
    size = float(axes_spacing[0])
    if not (size > 0 and all(abs(float(v) - size) <= 1e-6 * size for v in axes_spacing)):
        return None
    return (f"the frames are {h} x {w} pixels (height x width), far taller than wide, there are more of them ({n}) "
            f"than a frame is wide, and the header gives all three axes one size ({size:g}): so reads a sweep of "
            f"{w} frames stored frames-first (numpy's (N, H, W) saved as a NIfTI's or NRRD's x, y, z), each frame "
            "shown then a slice across the sweep. Check the frames: if they are not the sweep's, export it with "
            "the frames along the last (slowest) axis; if they are, set the pixel size to measure")


@dataclass(eq=False)
class MaskVolume:
    """A label volume as read from its file: ``labels`` ``(N, H, W)`` uint8 (0, 1, 2; read-only)
    and the file's pixel spacing with its provenance (as on :class:`Sweep`)."""

    labels: np.ndarray
    spacing_mm: tuple[float, float]
    spacing_source: str
    spacing_note: str = ""
    #: header keys FetalIQA reads (``io.META_KEYS``), e.g. the AC status a mask it wrote carries
    metadata: dict[str, str] = field(default_factory=dict)
    #: what reading did that the user should know (e.g. which of several calibrations was used)
    notes: list[str] = field(default_factory=list)

    @property
    def spacing_problem(self) -> str | None:
        """One line saying why lengths cannot be shown, or None when they can."""
        return _spacing.problem(tuple(self.spacing_mm), self.spacing_source, self.spacing_note)


def read_mask_volume(path: str | Path, binary_255: bool = False) -> MaskVolume:
    """Read a label volume with the checks of :func:`load_mask` and keep the file's spacing.
    ``binary_255``: a mask of 0 and 255 alone (a binary mask saved as an image, as many tools do)
    is read as 0 and 1, with a note; where the label's meaning matters (optimal 1, suboptimal 2:
    training, evaluation) it is refused."""
    path = Path(path).expanduser()
    raw = read_raw(path, purpose="mask")
    arr = raw.array
    if raw.components != 1:
        raise FetalIQAError(
            f"{path}: the mask has {raw.components} values per pixel; a mask holds one label "
            "(0, 1 or 2) per pixel. Export the mask as a single-channel label image.")
    arr = as_frame_stack(arr, 1, path)
    notes = list(raw.notes)
    try:
        labels = as_labels(arr, path)
    except FetalIQAError:
        if dicom_stored_inverted(path):  # (its labels were called 253, 254, 255, to be renumbered)
            shown = ", ".join(str(v) for v in np.unique(np.asarray(arr))[:4].tolist())
            raise FetalIQAError(
                f"{path}: the mask is a DICOM file stored as MONOCHROME1 (0 shown white), which is read inverted as a "
                f"grey image is, so its labels read inverted (as {shown}). Export the mask as MONOCHROME2 "
                "(or as .mha, .nrrd or .nii) and open that.") from None
        value = _one_value(arr) if binary_255 else None
        if value is None:
            raise
        labels = np.ascontiguousarray(arr != 0).view(np.uint8)
        if value in (255, 65535):
            notes.append(f"the mask holds 0 and {value} only (a binary mask saved as an image): "
                         "that value read as label 1")
        else:
            segment = slicer_segment_names(path).get(value, "")
            named = f" (the 3D Slicer segment '{segment}')" if segment else ""
            notes.append(f"the mask holds 0 and label {value} only{named}: that label read as the abdomen (label 1)")
    if labels.flags.writeable and labels is not arr:
        labels.flags.writeable = False
    return MaskVolume(labels=labels, spacing_mm=tuple(raw.spacing_mm), spacing_source=raw.spacing_source,
                      spacing_note=raw.spacing_note, metadata=dict(raw.metadata), notes=notes)


def _one_value(arr: np.ndarray) -> int | None:
    """The one whole number other than 0 that ``arr`` holds beside 0, None when it holds none or
    several (frame by frame: no copy of the volume). Such a mask outlines one thing, whatever its
    number: a binary mask saved as an image (255, 65535), a 3D Slicer segment exported with its
    label value (3), an ITK-SNAP label (5)."""
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        return None
    value = None
    for frame in arr:
        f = np.asarray(frame)
        others = f[f != 0]
        if not others.size:
            continue
        value = others[0] if value is None else value
        if not (others == value).all():
            return None
    if value is None or not np.isfinite(value) or value < 0 or not float(value).is_integer():
        return None
    return int(value)


def crop_like(labels: np.ndarray, sweep) -> np.ndarray:
    """``labels`` ``(N, H, W)`` cut as ``sweep``'s frames were cut from the file's screen, when the
    mask has the file's own frame size (drawn on the whole screen); else as they are."""
    crop = getattr(sweep, "crop", None)
    if crop is None or tuple(labels.shape[1:]) != tuple(crop[1]):
        return labels
    x0, y0, x1, y1 = crop[0]
    return np.ascontiguousarray(labels[:, y0:y1 + 1, x0:x1 + 1])


#: Suffixes whose headers state an orientation (direction cosines) the image reader gives:
#: a DICOM ultrasound image or a picture states none a mask's could be compared with.
_ORIENTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _header_geometry(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]] | None:
    """A file's direction matrix (columns: its axes in space), origin, spacing and size, read from
    its header alone; None for a format that states no orientation or a header the image reader
    cannot read (the reader that reads its pixels says why)."""
    if full_suffix(path) not in _ORIENTED_SUFFIXES:
        return None
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        # (called before the sweep is read and refused in one line: the MetaImage parser's own
        # lines on a header it cannot parse came first on the terminal)
        with quiet_itk(metaio=full_suffix(path) in (".mha", ".mhd")):
            reader.ReadImageInformation()
        dim = int(reader.GetDimension())
        if dim not in (2, 3):
            return None
        direction = np.asarray(reader.GetDirection(), float).reshape(dim, dim)
        spacing = np.asarray(reader.GetSpacing(), float)
        lengths = np.linalg.norm(direction, axis=0)
        if np.all(lengths > 0) and np.all(np.isfinite(lengths)):
            # a MetaImage's matrix of axes not 1 long (2: its pixels twice the ElementSpacing apart)
            # is read as the image reader places the pixels: unit axes, each step its physical length
            # (the pixel size the file then states is unknown, said where it is read)
            direction, spacing = direction / lengths, spacing * lengths
        return direction, np.asarray(reader.GetOrigin(), float), spacing, tuple(int(v) for v in reader.GetSize())
    except Exception:  # noqa: BLE001 - no orientation to compare; reading the pixels reports a bad header
        return None


def stated_frames(path: str | Path) -> int | None:
    """The frames a sweep file's header states (1 for a 2-D image), read from the header alone,
    without a pixel: None for a format whose header is not read so (DICOM, pictures) or one the
    image reader cannot read (reading the sweep says why). A check against another file's frames
    can then be made before gigabytes of a long sweep are read for nothing."""
    geometry = _header_geometry(Path(path))
    if geometry is None:
        return None
    size = geometry[3]
    return int(size[2]) if len(size) == 3 else 1


def _moved_by(direction: np.ndarray, origin: np.ndarray, spacing: np.ndarray, other: np.ndarray) -> str:
    """Where the origin ``other`` lies from ``origin``, in pixels and frames of the image whose axes
    are ``direction``'s columns, ``spacing`` apart, in words ("50 pixels to the right; 2 frames on,
    its frame I on the sweep's frame I+2"); "" when within half a pixel (and half a frame) on every
    axis. On an axis of no positive step (a frame spacing of 0) a difference of more than 0.001 mm
    counts, said in mm."""
    # mm along the image's axes (by the inverse: the axes of a sheared header are not perpendicular)
    shift = np.linalg.pinv(direction) @ (np.asarray(other, float) - np.asarray(origin, float))
    ways = (("to the right", "to the left"), ("down", "up"), ("on along the frames", "back along the frames"))
    words = []
    for axis, mm in enumerate(shift[:3]):
        mm = float(mm)
        step = float(spacing[axis]) if axis < len(spacing) else 0.0
        way = ways[axis][0 if mm > 0 else 1]
        if not (step > 0 and math.isfinite(step)):
            if abs(mm) > 1e-3:
                words.append(f"{abs(mm):.3g} mm {way}")
            continue
        count = f"{abs(mm) / step:.3g}"
        if abs(mm) / step < 0.5:
            continue
        if axis < 2:
            words.append(f"{count} pixel{'' if count == '1' else 's'} {way}")
        else:  # (the frame measured is, by the headers, another of the sweep's)
            words.append(f"{count} frame{'' if count == '1' else 's'} {'on' if mm > 0 else 'back'}, its frame I on "
                         f"the sweep's frame I{'+' if mm > 0 else '-'}{count}")
    return "; ".join(words)


def orient_like(labels: np.ndarray, mask_path: str | Path, sweep_path: str | Path
                ) -> tuple[np.ndarray, str, bool]:
    """``labels`` ``(N, H, W)`` (read from ``mask_path``) in the storage order of the sweep at
    ``sweep_path``, where both headers state an orientation and place the mask where the sweep
    lies: ``(labels, note, swapped)``, ``swapped`` when rows and columns were exchanged (the
    mask's pixel size then reads the other way round). A mask stored flipped or transposed relative
    to its sweep (a reorienting tool's NIfTI with rows flipped, a 3D Slicer ``.seg.nrrd`` with its
    axes reversed) was laid on the sweep as stored: the outline on the mirrored place of the frame,
    doubted for a wrong cause. Orientations that differ otherwise (turned by another angle, frames
    reversed) are refused; headers that place the mask elsewhere in space (oriented alike or not:
    an origin half a pixel or half a frame or more from the sweep's) leave it as stored, said so.
    Nothing is done where either file states no orientation, nor where the mask's is its writer's
    default (origin 0, axes along those of the image reader or of a NIfTI writer's RAS space): a mask
    written from an array with no geometry given was drawn on the frames as stored."""
    mask_path, sweep_path = Path(mask_path), Path(sweep_path)
    mine, theirs = _header_geometry(mask_path), _header_geometry(sweep_path)
    if mine is None or theirs is None or len(mine[3]) != len(theirs[3]):
        return labels, "", False
    (dm, om, sm, size_m), (ds, os_, ss, size_s) = mine, theirs
    defaults = (np.eye(len(dm)), np.diag([-1.0, -1.0] + [1.0] * (len(dm) - 2)))  # (ITK's, and a NIfTI writer's)
    if not np.any(om) and any(np.allclose(dm, d) for d in defaults):
        return labels, "", False  # the writer's default geometry (none given): the mask states no orientation
    # the mask's axes in the sweep's: a signed permutation when they differ by flips (by the inverse, not
    # the transpose: a sheared sweep's axes are not perpendicular, and a mask on the same axes lies as it does)
    relation = np.linalg.pinv(ds) @ dm
    if np.allclose(relation, np.eye(len(relation)), atol=1e-3):
        # the same orientation: the same place too, or the headers say the mask was drawn elsewhere
        # (a mask 50 pixels to the side, or two frames on, was laid on the sweep without a word; by
        # its header, the frame measured was another of the sweep's)
        moved = _moved_by(ds, os_, ss, om)
        if moved:
            return labels, ("the mask's header places it elsewhere in space: laid on the sweep as stored (the "
                            f"headers put it {moved}); check that it was drawn on these frames"), False
        return labels, "", False
    rounded = np.round(relation)
    in_plane = rounded[:2, :2]
    signed_permutation = (np.allclose(relation, rounded, atol=1e-3) and np.all(np.abs(in_plane).sum(axis=0) == 1)
                          and np.all(np.abs(in_plane).sum(axis=1) == 1))
    if len(relation) == 3:
        signed_permutation = signed_permutation and rounded[2, 2] == 1 and not rounded[2, :2].any() \
            and not rounded[:2, 2].any()
    if not signed_permutation:
        raise FetalIQAError(f"{mask_path}: its header orients the mask otherwise than the sweep's {sweep_path.name} "
                            "(not by a flip of its rows or columns): save the mask in the sweep's orientation")

    def corners(direction, origin, spacing, size):
        steps = direction[:, :2] * spacing[:2]
        return np.array([origin + steps @ np.array([i, j]) for i in (0, size[0] - 1) for j in (0, size[1] - 1)])

    tolerance = 0.5 * float(max(np.max(sm[:2]), np.max(ss[:2]))) + 1e-3
    mask_box, sweep_box = corners(dm, om, sm, size_m), corners(ds, os_, ss, size_s)
    same_place = all(np.min(np.linalg.norm(sweep_box - c, axis=1)) <= tolerance for c in mask_box)
    words = []
    swapped = bool(in_plane[0, 1])
    if swapped:
        words.append("its rows and columns exchanged")
    col_sign, row_sign = (in_plane[0, 1], in_plane[1, 0]) if swapped else (in_plane[0, 0], in_plane[1, 1])
    if row_sign < 0:
        words.append("its rows stored bottom to top")
    if col_sign < 0:
        words.append("its columns stored right to left")
    said = " and ".join(words)
    if not same_place:
        return labels, (f"the mask's header orients it otherwise than the sweep's ({said}) but places it elsewhere "
                        "in space: laid on the sweep as stored"), False
    out = np.swapaxes(labels, 1, 2) if swapped else labels
    if row_sign < 0:
        out = out[:, ::-1, :]
    if col_sign < 0:
        out = out[:, :, ::-1]
    out = np.ascontiguousarray(out)
    out.flags.writeable = False
    return out, (f"the mask's header orients it otherwise than the sweep's ({said}): turned to the sweep's "
                 "storage order before measuring"), swapped


def load_mask(path: str | Path, like: Sweep | None = None, *, in_memory: bool = False) -> np.ndarray:
    """Read a label volume: ``(N, H, W)`` uint8 (read-only) with values 0 (background),
    1 (optimal plane) and 2 (suboptimal plane). With ``like``, the shape must equal the sweep's
    frames' shape. ``in_memory``: labels mapped from an uncompressed file are read into memory,
    as :meth:`Sweep.in_memory` reads a sweep's frames (for a mask used for a while: another
    program cutting the file short meanwhile would kill the process with SIGBUS)."""
    path = Path(path).expanduser()
    labels = read_mask_volume(path).labels
    if like is not None and getattr(like, "path", None) is not None:
        labels = orient_like(labels, path, like.path)[0]  # (a mask stored flipped against its sweep)
    if like is not None:
        labels = crop_like(labels, like)
    if like is not None and tuple(labels.shape) != tuple(like.frames.shape):
        raise FetalIQAError(
            f"{path}: the mask has shape {fmt_shape(labels.shape)} (frames x height x width) but the "
            f"sweep {like.path or ''} has {fmt_shape(like.frames.shape)}. Choose the mask made "
            "for this sweep.")
    if in_memory and _mapped(labels):
        from fetaliqa_core import validate

        validate.check_memory(str(path), int(labels.nbytes), f"a mask of {fmt_shape(labels.shape)} pixels", now=True)
        labels = _read_mapped(labels, path)
        labels.flags.writeable = False
    return labels


def _read_mapped(view: np.memmap, path) -> np.ndarray:
    """The bytes a memory-mapped array shows, read from its file with ordinary reads: copying from
    the mapping itself dies of SIGBUS when another program truncates or rewrites the file during
    the copy (a new export copied over it); a read comes back short instead, and is said."""
    root = view
    while isinstance(root.base, np.memmap):
        root = root.base
    filename = getattr(root, "filename", None)
    if filename is None or not view.flags.c_contiguous or not isinstance(root, np.memmap):
        return np.array(view)
    start = int(root.offset) + (view.__array_interface__["data"][0] - root.__array_interface__["data"][0])
    try:
        data = np.fromfile(filename, dtype=view.dtype, count=view.size, offset=start)
    except OSError as exc:
        raise FetalIQAError(f"{path}: the file could not be read again ({exc.strerror}): another program may "
                            "be moving or writing it. Open it again when it is done.") from None
    if data.size != view.size:
        raise FetalIQAError(f"{path}: the file became shorter while it was read: another program is writing or "
                            "truncating it. Open it again once it is complete.")
    return data.reshape(view.shape)


def write_volume(path: str | Path, array: np.ndarray, spacing_mm: tuple[float, float] = (0.28, 0.28),
                 compress: bool = False, *, sweep_ranges: list[tuple[int, int]] | None = None,
                 sweep_kinds: list[str] | None = None, compression_level: int = -1,
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``array`` ``(N, H, W)`` (or ``(H, W)``) uint8 to ``path`` (format from the suffix,
    e.g. ``.mha``). ``spacing_mm`` is ``(row_mm, col_mm)``; ``compression_level`` a zlib level
    1-9 (-1: the writer's default). Sweep ranges and kinds, when given, are stored in the header
    (MetaImage and NRRD) and read back by :func:`load_sweep`; ``metadata`` adds header keys (one
    line each: line breaks become spaces).

    Single-file formats are written to a temporary file that is renamed into place, so a reader
    never sees a half-written file.
    """
    from fetaliqa_core.paths import NOT_TEXT_PATH, is_text_path

    path = Path(path)
    if not is_text_path(path.absolute()):  # the image library aborts the process on such a name
        raise FetalIQAError(f"{ascii(str(path))}: {NOT_TEXT_PATH}.")
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise TypeError(f"write_volume needs a (N, H, W) or (H, W) uint8 array, got {arr.shape} {arr.dtype}")
    row_mm, col_mm = (float(spacing_mm[0]), float(spacing_mm[1]))
    keys: dict[str, str] = {}
    if sweep_ranges is not None:
        n = arr.shape[0] if arr.ndim == 3 else 1
        if not _ranges_cover(sweep_ranges, n):
            raise ValueError(f"sweep_ranges {sweep_ranges} do not cover 0..{n}")
        kinds = list(sweep_kinds) if sweep_kinds is not None else ["unknown"] * len(sweep_ranges)
        if len(kinds) != len(sweep_ranges) or any(k not in SWEEP_KINDS for k in kinds):
            raise ValueError(f"sweep_kinds {kinds} must be one of {SWEEP_KINDS} per sweep")
        keys[META_SWEEP_RANGES] = ",".join(f"{a}-{b}" for a, b in sweep_ranges)
        keys[META_SWEEP_KINDS] = ",".join(kinds)
    for key, value in (metadata or {}).items():
        text = " ".join(str(value).split())
        if text:  # an empty value is not written (MetaImage warns and drops it)
            keys[str(key)] = text
    suffix = full_suffix(path)
    try:
        import SimpleITK as sitk
    except ImportError:  # a machine with the models' libraries alone (the GPU benchmark's)
        if suffix != ".mha":
            raise FetalIQAError(f"{path}: writing {suffix} files needs SimpleITK, which is not installed here. "
                                "Install FetalIQA's requirements, or write a .mha file.") from None
        _write_metaimage(path, arr, (row_mm, col_mm), keys, compress, compression_level)
        return
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=False)
    image.SetSpacing((col_mm, row_mm, 1.0) if arr.ndim == 3 else (col_mm, row_mm))
    for key, text in keys.items():
        image.SetMetaData(key, text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetalIQAError(f"{path.parent}: cannot create the folder ({exc.strerror}). "
                            "Choose a folder you can write to.") from None
    try:
        with quiet_itk():  # (its own "file stream is fail after write" on a full disk: the line below says it)
            if suffix == ".mhd":  # header + separate data file whose name it records: write in place
                sitk.WriteImage(image, str(path), useCompression=compress, compressionLevel=compression_level)
                return
            with atomic_path(path, suffix=suffix) as tmp:
                sitk.WriteImage(image, str(tmp), useCompression=compress, compressionLevel=compression_level)
    except RuntimeError as exc:
        raise FetalIQAError(f"{path}: could not write the file ({sitk_reason(exc)}). Check the "
                            f"suffix (supported: {SUPPORTED_FORMATS}) and that the disk has space.") from None
    except OSError as exc:
        raise FetalIQAError(f"{path}: could not write the file ({exc.strerror}). Check that the "
                            "folder is writable and the disk has space.") from None


def _write_metaimage(path: Path, arr: np.ndarray, spacing_mm: tuple[float, float], keys: dict[str, str],
                     compress: bool, level: int) -> None:
    """``arr`` as one ``.mha`` file, written without an image library: the header SimpleITK writes
    (``ElementSpacing`` width first), then the pixels, zlib-deflated when ``compress``."""
    import zlib

    shape = arr.shape[::-1]  # MetaImage sizes run x, y, z
    ndims = len(shape)
    pixels = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    if compress:
        pixels = zlib.compress(pixels, level)
    identity = " ".join("1" if i == j else "0" for i in range(ndims) for j in range(ndims))
    lines = ["ObjectType = Image", f"NDims = {ndims}", "BinaryData = True", "BinaryDataByteOrderMSB = False",
             f"CompressedData = {compress}"] + ([f"CompressedDataSize = {len(pixels)}"] if compress else []) + [
        f"TransformMatrix = {identity}", "Offset = " + " ".join(["0"] * ndims),
        "CenterOfRotation = " + " ".join(["0"] * ndims),
        "ElementSpacing = " + " ".join([repr(spacing_mm[1]), repr(spacing_mm[0])] + ["1"] * (ndims - 2)),
        "DimSize = " + " ".join(str(v) for v in shape), "ElementType = MET_UCHAR"]
    lines += [f"{key} = {text}" for key, text in keys.items()]
    lines.append("ElementDataFile = LOCAL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".mha") as tmp, open(tmp, "wb") as fh:
            fh.write(("\n".join(lines) + "\n").encode("utf-8"))
            fh.write(pixels)
    except OSError as exc:
        raise FetalIQAError(f"{path}: could not write the file ({exc.strerror}). Check that the "
                            "folder is writable and the disk has space.") from None


# --- sweep layout -------------------------------------------------------------------------------


def default_sweep_layout(n_frames: int) -> tuple[list[tuple[int, int]], list[str]]:
    """ACOUSLIC layout for 840 frames (six sweeps of 140: three transverse, three sagittal),
    otherwise one sweep of unknown direction."""
    if n_frames == acouslic.FRAMES_PER_CASE:
        return acouslic.case_sweep_ranges(n_frames), list(acouslic.CASE_SWEEP_KINDS)
    return [(0, n_frames)], ["unknown"]


def recorded_sweep_layout(n_frames: int, metadata: dict[str, str]) -> tuple[list[tuple[int, int]], list[str]] | None:
    """Sweep ranges and kinds the file's metadata records (``FetalIQA_SweepRanges``), None when it
    records none or ranges that do not cover its ``n_frames`` frames."""
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
    return None


def _sweep_layout(n_frames: int, metadata: dict[str, str]) -> tuple[list[tuple[int, int]], list[str]]:
    """Sweep ranges from the file's metadata when present and valid, else the default layout."""
    return recorded_sweep_layout(n_frames, metadata) or default_sweep_layout(n_frames)


def _ranges_cover(ranges: list[tuple[int, int]], n: int) -> bool:
    if not ranges:
        return n == 0
    expect = 0
    for a, b in ranges:
        if a != expect or b <= a:
            return False
        expect = b
    return expect == n
