"""Frame stacks: shape checks, conversion of any pixel type to uint8 grey, mask labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.io._common import CHUNK_FRAMES, MIN_FRAME_PX, Raw, check_cancelled, fmt_shape, full_suffix

def frame_stack_shape(shape_zyx: tuple[int, ...]) -> tuple[int, ...]:
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


def precheck_dims(path: Path, shape_zyx: tuple[int, ...], components: int, what: str = "sweep") -> None:
    """Reject shapes no sweep can have before any pixel data is read. ``shape_zyx`` is the
    spatial shape in numpy order (no component axis); ``what``: "sweep" or "mask"."""
    dims = frame_stack_shape(shape_zyx)
    if len(dims) > 3:
        raise FetalIQAError(
            f"{path}: {len(dims)}-D data of shape {fmt_shape(dims)}; a sweep is a stack of 2-D frames "
            "(frames x height x width). Export a single cine (3-D) instead.")
    if len(dims) < 2:
        raise FetalIQAError(f"{path}: 1-D data of length {dims[0] if dims else 0}; a sweep needs 2-D frames. "
                            "Choose an image or cine file.")
    if dims[0] == 0:
        raise FetalIQAError(f"{path}: the file contains no frames (0 x {dims[1]} x {dims[2]}). Export the "
                            "sweep again.")
    if what == "mask" and components != 1:
        raise FetalIQAError(
            f"{path}: the mask has {components} values per pixel (one-hot channels, or a 4-D file whose extra "
            "axis was read as values per pixel); a mask holds one label (0, 1 or 2) per pixel. Export the "
            "mask as a single-channel label image.")
    if components not in (1, 3, 4):
        raise FetalIQAError(
            f"{path}: {components} values per pixel (vector data); only grey, RGB or RGBA frames can be "
            "shown. Export the sweep as greyscale or colour video frames.")


def as_frame_stack(arr: np.ndarray, components: int, path: Path) -> np.ndarray:
    """Reshape (no copy) to ``(N, H, W)`` or ``(N, H, W, C)``; see :func:`frame_stack_shape`."""
    comp_axes = arr.shape[-1:] if components > 1 else ()
    spatial = arr.shape[:arr.ndim - len(comp_axes)]
    dims = frame_stack_shape(spatial)
    if len(dims) != 3:
        raise FetalIQAError(f"{path}: {len(dims)}-D data of shape {fmt_shape(dims)}; expected frames x "
                            "height x width. Export the data as a 3-D volume.")
    return arr.reshape(dims + comp_axes)


def check_frame_shape(shape: tuple[int, ...], path: Path) -> None:
    n, h, w = shape
    if n == 0:
        raise FetalIQAError(f"{path}: the file contains no frames. Export the sweep again.")
    if w < MIN_FRAME_PX <= min(h, n) and full_suffix(Path(path)) in (".nii", ".nii.gz", ".nrrd", ".nhdr"):
        # numpy's (N, H, W) handed to a NIfTI/NRRD writer as (x, y, z) reads as W frames of H x N: a
        # short sweep (16 frames) was refused as "not a thumbnail or a vector field", advice that did
        # not fit the file
        raise FetalIQAError(
            f"{path}: frames are {h} x {w} pixels (height x width), far too narrow for ultrasound frames, and there "
            f"are {n} of them: so reads a sweep of {w} frames of {h} x {n} stored frames-first (numpy's (N, H, W) "
            "saved as a NIfTI's or NRRD's x, y, z). Save it with the frames along the last axis (for a NIfTI "
            "writer, the array transposed to (W, H, N); or SimpleITK's GetImageFromArray of the (N, H, W) array, "
            "saved as .mha) and open that.")
    if h < MIN_FRAME_PX or w < MIN_FRAME_PX:
        raise FetalIQAError(
            f"{path}: frames are {h} x {w} pixels (height x width); at least {MIN_FRAME_PX} x {MIN_FRAME_PX} "
            "are needed. Check that the file holds ultrasound frames (not a thumbnail or a vector field).")


#: The share of pixels with colour (channels apart by more than :data:`COLOUR_APART` grey levels)
#: from which reading the frames as grey is said: grey saved as RGB has none, a lossy export's
#: fringes a few.
COLOUR_NOTE_SHARE = 0.002
COLOUR_APART = 24


def _coloured_share(arr: np.ndarray) -> float:
    """The share of pixels whose colour channels differ by more than :data:`COLOUR_APART`, in up
    to 16 evenly spread frames of ``(N, H, W, C)`` colour frames."""
    sample = np.asarray(arr[:: max(1, arr.shape[0] // 16), ..., :3], dtype=np.float32)
    if sample.size == 0:
        return 0.0
    apart = sample.max(axis=-1) - sample.min(axis=-1)
    return float(np.count_nonzero(apart > COLOUR_APART)) / apart.size


def to_uint8_frames(raw: Raw) -> np.ndarray:
    """``raw.array`` -> ``(N, H, W)`` uint8 C-contiguous frames (no copy when already so)."""
    path = raw.path or Path("?")
    comps = raw.components
    arr = as_frame_stack(raw.array, comps, path)
    check_frame_shape(arr.shape[:3], path)
    if comps == 1 and arr.dtype == np.uint8:
        return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    if comps == 1 and arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * np.uint8(255))
    if comps not in (1, 3, 4):
        raise FetalIQAError(f"{path}: {comps} values per pixel; only grey, RGB or RGBA frames can be shown.")
    n = arr.shape[0]
    if raw.ycbcr and comps == 3 and arr.dtype == np.uint8:  # Y is the grey level already
        return np.ascontiguousarray(arr[..., 0])
    out = np.empty(arr.shape[:3], dtype=np.uint8)
    if comps in (3, 4) and arr.dtype == np.uint8:
        coloured = _coloured_share(arr)
        if coloured >= COLOUR_NOTE_SHARE:
            raw.notes.append(f"{coloured:.1%} of the pixels are in colour (a Doppler overlay, coloured marks?): the "
                             "frames are read as grey (their luminance), and the models judge grey B-mode images, so "
                             "colour areas are scored as grey structures")
    if arr.dtype == np.uint8:  # colour 8-bit: integer luminance, chunk by chunk
        for s in range(0, n, CHUNK_FRAMES):
            check_cancelled()
            c = arr[s:s + CHUNK_FRAMES].astype(np.uint16)
            lum = (77 * c[..., 0] + 150 * c[..., 1] + 29 * c[..., 2] + 128) >> 8
            out[s:s + CHUNK_FRAMES] = lum.astype(np.uint8)
        return out
    lo, hi, padding = _display_window(arr, comps, path, raw.window, raw.padding)
    if raw.window is None and not (lo == 0.0 and hi in _GREY_TOPS):
        # windowed between percentiles: what the models see is not what the scanner showed, and the
        # same sweep stored otherwise reads brighter or darker (signed frames' mean grey 34 read 61)
        raw.notes.append(f"the pixel values ({arr.dtype}) are not grey levels of a known depth: shown as grey "
                         f"between {lo:.6g} and {hi:.6g} (their 0.5th and 99.5th percentiles), which may be brighter "
                         "or darker than the scanner showed them; the models judge the frames as shown here (an "
                         "export as 8-bit grey frames is read as it is)")
    # (hi - lo of a window over +-1.5e308 is no finite number: the values are scaled in halves, or
    # every frame came out black without a word)
    half = not math.isfinite(hi - lo)
    scale = 255.0 / (hi / 2 - lo / 2) if half else (255.0 / (hi - lo) if hi > lo else 0.0)
    los = scales = None
    if comps == 1 and raw.frame_windows is not None and len(raw.frame_windows) == n and not half:
        # each frame through its own window (a frame without one: the sweep's), as the file says:
        # through the first frame's, frames stored at another gain came out 2x too bright, clipped
        if any(w is None for w in raw.frame_windows) and raw.window is not None:
            lo, hi, _ = _display_window(arr, comps, path, None, raw.padding)
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
        own = [w if w is not None and w[1] > w[0] else (lo, hi) for w in raw.frame_windows]
        los = np.array([float(w[0]) for w in own])
        scales = np.array([255.0 / (float(w[1]) - float(w[0])) if w[1] > w[0] else 0.0 for w in own])
    bad = 0
    for s in range(0, n, CHUNK_FRAMES):
        check_cancelled()
        lum = _luminance_float(arr[s:s + CHUNK_FRAMES], comps)
        with np.errstate(over="ignore"):  # (a window beyond float32 printed numpy's warning on the terminal)
            black = lo if los is None else los[s:s + lum.shape[0], None, None].astype(lum.dtype)
        if padding is not None:
            lum[lum == padding] = lo if los is None else np.broadcast_to(black, lum.shape)[lum == padding]
        finite = np.isfinite(lum)  # counted before scaling, which may overflow far outside the window
        if not finite.all():
            bad += int(lum.size - np.count_nonzero(finite))
        with np.errstate(over="ignore", invalid="ignore"):
            if los is not None:
                lum = (lum - black) * scales[s:s + lum.shape[0], None, None].astype(lum.dtype)
            else:
                lum = (lum / 2 - lo / 2) * scale if half else (lum - lo) * scale
        np.nan_to_num(lum, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(lum, 0.0, 255.0, out=lum)
        out[s:s + CHUNK_FRAMES] = np.rint(lum).astype(np.uint8)
    if bad:
        share = bad / float(out.size)
        raw.notes.append(f"{bad} pixel(s) ({share:.2%} of the image) hold no number (NaN or infinite) and are "
                         "shown black; if they lie inside the field of view, the frames there are not what "
                         "was recorded")
    return out


#: The tops of the windows that keep grey levels as stored (0-1, 8 bits, 12, 14 or 16 bits).
_GREY_TOPS = (1.0, 255.0, 4095.0, 16383.0, 65535.0)


def _luminance_float(chunk: np.ndarray, comps: int) -> np.ndarray:
    # float64 stays float64: beyond float32's range its finite values became inf ("99.58 % of the
    # image hold no number (NaN or infinite)", or a whole sweep of +-1e300 refused as all NaN)
    kind = np.float64 if chunk.dtype == np.float64 else np.float32
    with np.errstate(invalid="ignore", over="ignore"):
        if comps == 1:
            return chunk.astype(kind)
        c = chunk.astype(kind)
        return 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]


def _display_window(arr: np.ndarray, comps: int, path: Path, window: tuple[float, float] | None,
                    padding: float | None) -> tuple[float, float, float | None]:
    """The values that become grey levels 0 and 255, and the padding value (shown black), from
    up to 32 evenly spread frames.

    * A window the file gives (DICOM VOI, already turned into its black and white values) is used
      as it is.
    * Padding, a single value filling the area outside the image far below everything in it (the
      file's Pixel Padding Value, or found: >= 1 % of the pixels, further below the rest than the
      rest's own range), takes no part in the window and is shown black (DICOM PS3.3 C.7.5.1.1.2).
    * Values that already are grey levels are kept as they are: integers within 0-255 (8-bit
      frames stored as 16-bit), floats within 0-1 (frames normalised to 1; a little overshoot from
      resampling is clipped), and floats within 0-255 that use more than 0-1.5.
    * Integers that look like grey levels of 12, 14 or 16 bits (black at 0, bright echoes in the
      upper part: an 8-bit sweep stored wider) are shown linearly over that depth
      (:func:`_bit_depth_range`).
    * Anything else is windowed between the 0.5th and 99.5th percentiles of the finite values, so
      a few outliers cannot squash the rest.
    """
    n = arr.shape[0]
    idx = np.unique(np.linspace(0, n - 1, num=min(n, 32)).astype(int))
    sample = _luminance_float(arr[idx], comps).ravel()
    if sample.size > 4_000_000:
        sample = sample[:: sample.size // 4_000_000 + 1]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise FetalIQAError(f"{path}: the pixel values are all NaN or infinite; there is nothing to show. "
                            "Export the sweep again.")
    content = finite
    given = sample.dtype.type(padding) if padding is not None and math.isfinite(padding) else None
    if given is not None and np.any(finite == given):
        content = finite[finite != given]
        padding = float(given)
    else:  # none given, or a value no pixel holds (a header's claim that does not fit its pixels)
        padding = _found_padding(finite)
        if padding is not None:
            content = finite[finite != padding]
            if content.size and content.min() == content.max():
                padding, content = None, finite  # one grey level on a black ground: an image, not padding
    if content.size == 0:
        raise FetalIQAError(f"{path}: every pixel holds the padding value; there is nothing to show. "
                            "Export the sweep again.")
    if window is not None and window[1] > window[0]:
        return float(window[0]), float(window[1]), padding
    mn, mx = float(content.min()), float(content.max())
    p_lo, p_hi = (float(v) for v in np.percentile(content, [0.5, 99.5]))
    is_float = np.issubdtype(arr.dtype, np.floating)
    if is_float and p_lo >= 0.0 and mn > -0.05 and p_hi <= 1.05:
        return 0.0, 1.0, padding
    if mn >= 0.0 and mx <= 255.0 and (not is_float or p_hi > 1.5):
        return 0.0, 255.0, padding
    full = _bit_depth_range(arr.dtype, content, mx)
    if full is not None:
        return 0.0, full, padding
    if p_hi <= p_lo:
        p_lo, p_hi = mn, mx
    return p_lo, p_hi, padding


#: At least this share of the pixels must lie in the upper three quarters of a bit depth for
#: frames to be taken as grey levels of that depth (one hot pixel is not enough).
BIT_DEPTH_SHARE = 0.001


def _bit_depth_range(dtype: np.dtype, content: np.ndarray, mx: float) -> float | None:
    """The top of the bit depth (12, 14 or 16 bits) of integer frames that look like grey levels
    of that depth (an 8-bit sweep stored as 12 or 16 bits: x16, x257, shifted): their black is
    black (their minimum in the bottom 1/256 of the depth) and at least :data:`BIT_DEPTH_SHARE` of
    their pixels lie in its upper three quarters (and none is below 0: signed frames centred on 0
    mapped so lost every negative value to black). They are shown linearly over the depth, so
    that the same sweep in another depth gives the same grey levels (a percentile window
    stretched them, and the models then answered differently). Not judged on a high
    percentile: an ultrasound frame is mostly dark, its bright echoes few. None otherwise."""
    if not np.issubdtype(dtype, np.integer) or mx <= 255 or content.size == 0:
        return None
    top = next((float((1 << b) - 1) for b in (12, 14, 16) if mx <= (1 << b) - 1), None)
    mn = float(content.min())
    if top is None or mn > top / 256 or mn < 0:  # signed values below 0 span no depth from black
        return None
    if np.count_nonzero(content >= top / 4) < BIT_DEPTH_SHARE * content.size:
        return None
    return top


def _found_padding(values: np.ndarray) -> float | None:
    """The minimum of ``values`` when it is padding: >= 1 % of them, and further below the 0.5th
    percentile of the others than those span from their 0.5th to their 99.5th percentile."""
    mn = values.min()
    at_min = values == mn
    count = int(np.count_nonzero(at_min))
    if count < 0.01 * values.size or count == values.size:
        return None
    rest = values[~at_min]
    r_lo, r_hi = (float(v) for v in np.percentile(rest, [0.5, 99.5]))
    return float(mn) if r_lo - float(mn) > max(r_hi - r_lo, 1e-6) else None


def _holds_labels(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds a 1 or a 2 anywhere (frame by frame: no copy of the volume)."""
    return any(bool(((np.asarray(f) == 1) | (np.asarray(f) == 2)).any()) for f in arr)


#: At most this many whole numbers other than 0, 1, 2 in a mask are taken for other labels (an
#: image, even a dark one, holds dozens of grey levels).
FEW_LABELS = 8


def as_labels(arr: np.ndarray, path: Path) -> np.ndarray:
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
        for s in range(0, arr.shape[0], CHUNK_FRAMES):
            c = np.asarray(arr[s:s + CHUNK_FRAMES])
            ok = (c == 0) | (c == 1) | (c == 2)
            if not ok.all():
                bad = sorted({float(v) for v in np.unique(c[~ok])[:20]})
                break
            result[s:s + CHUNK_FRAMES] = c.astype(np.uint8)
    else:
        raise FetalIQAError(f"{path}: mask pixels of type {arr.dtype} cannot be labels. Export the mask as "
                            "8-bit labels 0/1/2.")
    if len(bad) == 1 and bad[0] in (255, 65535):
        high = int(bad[0])
        if not _holds_labels(arr):
            raise FetalIQAError(
                f"{path}: the mask holds {high} where a label (0, 1, 2) belongs: a binary mask stored as 0 and "
                f"{high}, as an image. Export it as labels: 0 and 1 (divide by {high}), or 1 and 2 for optimal "
                "and suboptimal planes.")
        raise FetalIQAError(
            f"{path}: the mask holds {high} beside the labels 1 and 2 (an 'ignore' value?); masks label each pixel "
            "0 (background), 1 (optimal plane) or 2 (suboptimal plane). Export it with 0 in place of "
            f"{high}.")
    if bad and all(isinstance(v, float) and 0.0 < v < 1.0 for v in bad):
        raise FetalIQAError(
            f"{path}: the mask holds values between 0 and 1 (such as {bad[0]:.3g}): a probability map, "
            "not labels. Threshold it (at 0.5, say) and export the labels 0/1/2.")
    if bad and len(bad) <= FEW_LABELS and all(float(v).is_integer() for v in bad):
        # a few whole numbers: a label map whose abdomen has another number (3D Slicer numbers its
        # segments 1, 2, 3...; ITK-SNAP's labels are the user's choice), not an image
        shown = ", ".join(str(int(v)) for v in bad)
        raise FetalIQAError(
            f"{path}: the mask holds labels other than 0, 1, 2 (found {shown}). Masks label each pixel 0 "
            "(background), 1 (optimal plane) or 2 (suboptimal plane): relabel the abdomen as 1 (3D Slicer: "
            "Segmentations, Export to label map with only the abdomen's segment, as label 1; ITK-SNAP: "
            "give the abdomen label 1) and open that.")
    if bad:
        shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise FetalIQAError(
            f"{path}: the mask holds labels other than 0, 1, 2 (found {shown}). Masks label each pixel 0 "
            "(background), 1 (optimal plane) or 2 (suboptimal plane); choose the label mask, not an "
            "image or a probability map.")
    return np.ascontiguousarray(result)
