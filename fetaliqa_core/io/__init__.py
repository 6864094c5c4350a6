"""Reading and writing ultrasound sweeps.

``load_sweep`` turns a sweep file (MetaImage ``.mha``/``.mhd``, ``.nrrd``, NIfTI, a multi-frame
DICOM file or a DICOM series folder) into a :class:`Sweep`: frames ``(N, H, W)`` uint8 in the
file's storage order (a header's orientation is not applied), pixel spacing in mm with its
provenance (known from the file or its DICOM ultrasound calibration, units converted, plausible
for obstetric ultrasound, see :mod:`fetaliqa_core.io.spacing`), the sweep ranges, and
``read_notes``: what reading did that the user should see with the answer.
``load_mask`` reads the matching label volume (0 background, 1 optimal plane, 2 suboptimal
plane).

Speed and memory:

* An uncompressed 8-bit MetaImage (the fast path) is memory-mapped after its header has been
  parsed here and its byte count checked against the file size, so frame 0 is available at once
  and pages are read on demand.
* A compressed MetaImage is inflated here, in chunks, into one buffer of the size its header
  gives; a stream that is damaged, short or long is refused (SimpleITK only warns and hands on
  its buffer). Everything else is decoded once by SimpleITK; when the pixels are already 8-bit
  grey the frames are a view of SimpleITK's buffer (no copy). Every header is read and its
  sizes checked before any pixel is decoded.

Every problem a user can cause raises :class:`~fetaliqa_core.errors.FetalIQAError` with the file
name, what is wrong and what to do. SimpleITK's ``RuntimeError`` (with its C++ trace) never
reaches the user.

Modules: ``sweep`` (the Sweep, public functions), ``readers`` (formats), ``frames`` (shape
checks, conversion to uint8, mask labels), ``spacing`` (pixel spacing provenance).
"""

from fetaliqa_core.io._common import (
    META_AC_NOTE,
    META_AC_STATUS,
    META_SOURCE,
    META_SPACING,
    META_SPACING_OF_SWEEP,
    META_SPACING_UNKNOWN,
    META_SWEEP_KINDS,
    META_SWEEP_RANGES,
    MIN_FRAME_PX,
    SPACING_FROM_DICOM_PIXEL_SPACING,
    SPACING_FROM_HEADER,
    SPACING_FROM_IMAGEJ,
    SPACING_FROM_US_REGION,
    SPACING_FROM_USER,
    SPACING_GIVEN,
    SPACING_NONE,
    SUPPORTED_FORMATS,
    SWEEP_KINDS,
    fmt_shape,
    quiet_itk,
)
from fetaliqa_core.io.readers import looks_like_dicom_series, multiframe_dicom_files
from fetaliqa_core.io.spacing import PLAUSIBLE_SPACING_MM
from fetaliqa_core.io.sweep import (
    MaskVolume,
    Sweep,
    crop_like,
    default_sweep_layout,
    load_mask,
    orient_like,
    read_mask_volume,
    load_sweep,
    stated_frames,
    write_volume,
)

__all__ = [
    "META_AC_NOTE", "META_AC_STATUS", "META_SOURCE", "META_SPACING", "META_SPACING_OF_SWEEP", "META_SPACING_UNKNOWN", "META_SWEEP_KINDS",
    "META_SWEEP_RANGES", "MIN_FRAME_PX", "PLAUSIBLE_SPACING_MM", "SPACING_FROM_DICOM_PIXEL_SPACING",
    "SPACING_FROM_HEADER", "SPACING_FROM_IMAGEJ", "SPACING_FROM_US_REGION", "SPACING_FROM_USER", "SPACING_GIVEN",
    "SPACING_NONE", "SUPPORTED_FORMATS", "SWEEP_KINDS", "MaskVolume", "Sweep", "crop_like", "default_sweep_layout",
    "fmt_shape", "load_mask", "load_sweep", "orient_like", "looks_like_dicom_series", "multiframe_dicom_files", "quiet_itk",
    "read_mask_volume", "stated_frames", "write_volume",
]
