"""Synthetic blind-sweep cases in the ACOUSLIC-AI layout.

Each case is a stack of sweeps (default: 6 sweeps x 140 frames of 562 x 744 pixels, spacing
0.28 mm; sweeps 1-3 transverse, 4-6 sagittal) with a label mask (0 background, 1 optimal,
2 suboptimal plane) and the abdominal circumference per sweep.

How a frame is made (everything in dB, then log-compressed to 8 bit; modules in brackets):

* The frame is built on a polar grid (depth x scan line), as a scanner does, and scan-converted
  to the fan with ``cv2.remap`` (``fan``): by default the real ACOUSLIC fan
  (``resources/acouslic_fov_mask.mha``); with ``fan_variety`` half of the cases get another
  curved-array fan (opening, probe-face radius, depth).
* Maternal tissue layers (skin, fat with bright septa, muscle, fascia, myometrium, placenta,
  amniotic fluid, deep tissue) are depth bands that follow the fan curvature, with wavy
  boundaries that drift slowly from frame to frame (``render``).
* Each pixel carries an echo level and an attenuation; the attenuation is accumulated along
  depth, so fluid gives posterior enhancement and bone (spine, skull, ribs) casts a shadow.
  A time-gain compensation curve offsets the average tissue loss. Acoustic shadows (gas, poor
  contact) darken bands of scan lines over runs of frames. Speckle size and the display's
  dynamic range vary from case to case.
* Speckle is the magnitude of smoothed complex Gaussian noise (Rayleigh statistics), drawn
  from a precomputed bank with a random offset per frame.
* The fetus is a set of ellipses (``anatomy``, placed by ``layout``): where a sweep cuts it
  across, the abdominal cross-section grows, stays (the optimal frames: label 1), shrinks
  (label 2), passes into the thorax (ribs, heart) and may reach the head; the abdomen shows the
  stomach bubble, the umbilical vein and the spine with its shadow. The fetus may move out of
  the plane for a few frames (gaps in the annotated run). Sweeps that cut the fetus across
  without the abdominal plane show the head (skull ring, midline echo), the thorax, limbs or an
  abdomen cut by the fan edge (centre outside the fan), all unannotated; sweeps along the
  fetus show the body cut lengthwise and limbs. Usually the transverse sweeps (1-3) cut the
  fetus across; in a quarter of the cases it lies across the maternal axis and the sagittal
  sweeps do.

The mask of an annotated frame is the abdomen ellipse clipped to the field of view. Every
annotated sweep has a circumference in the CSV (as in ACOUSLIC-AI, also sweeps with suboptimal
frames only): the ellipse of its largest section, Ramanujan, in mm. All label-1 frames of a
sweep show the same ellipse size, so each measures that value. No case has annotations without
a circumference. Label statistics per case follow ACOUSLIC-AI's (about 62 % of cases with an
optimal frame, ~6 optimal and ~13 suboptimal frames per case of 840 frames).

Everything is drawn from one ``numpy.random.Generator`` seeded by the case seed: same seed, same
bytes.
"""

from __future__ import annotations

from pathlib import Path

from fetaliqa_core.synth.case import (
    CASE_KINDS,
    DEFAULT_FRAMES_PER_SWEEP,
    DEFAULT_HEIGHT,
    DEFAULT_SPACING_MM,
    DEFAULT_SWEEPS,
    DEFAULT_WIDTH,
    SYNTH_VERSION,
    SynthCase,
    case_seed,
    case_uuid,
    ramanujan_circumference,
    synthesize_case,
)
from fetaliqa_core.synth.dataset import CSV_PATH, IMAGES_SUBDIR, MASKS_SUBDIR, CaseSummary, write_case, write_dataset

#: Seed of the demo case: abdomen with optimal frames in a transverse sweep, distractors elsewhere.
DEMO_SEED = 27

__all__ = [
    "CASE_KINDS", "CSV_PATH", "CaseSummary", "DEFAULT_FRAMES_PER_SWEEP", "DEFAULT_HEIGHT", "DEFAULT_SPACING_MM",
    "DEFAULT_SWEEPS", "DEFAULT_WIDTH", "DEMO_SEED", "IMAGES_SUBDIR", "MASKS_SUBDIR", "SYNTH_VERSION", "SynthCase",
    "case_seed", "case_uuid", "demo_case_paths", "demo_sweep_path", "ramanujan_circumference", "synthesize_case",
    "write_case", "write_dataset",
]


def _demo_files() -> tuple[Path, Path]:
    from fetaliqa_core import paths

    folder = paths.cache_path() / "demo"  # (made when the case is written: no warning for a look)
    stem = f"demo_s{DEMO_SEED}_v{SYNTH_VERSION}"
    return folder / f"{stem}.mha", folder / f"{stem}_mask.mha"


def _demo_stamp(files) -> Path:
    return files[0].with_name(files[0].name + ".sizes.json")


def _sizes(files) -> list[int]:
    return [p.stat().st_size for p in files]


def demo_case_exists() -> bool:
    """Whether the demo case is in the cache already, whole (else :func:`demo_case_paths` makes it):
    both files of the sizes they were written with (a file truncated or damaged in the cache was
    refused by every later `fetaliqa demo`, and never made again)."""
    import json

    files = _demo_files()
    try:
        return json.loads(_demo_stamp(files).read_text(encoding="utf-8")) == _sizes(files)
    except (OSError, ValueError):
        return False


def demo_case_paths() -> tuple[Path, Path]:
    """(sweep, mask) paths of the demo case in the user cache, synthesised on first use.

    The sweep is written uncompressed so that it opens memory-mapped; both files appear
    atomically (temporary file, then rename), and a small record of their sizes after them."""
    from fetaliqa_core.files import atomic_write

    files = _demo_files()
    if demo_case_exists():
        return files
    case = synthesize_case(DEMO_SEED)
    write_case(case, files[0], files[1], compress_images=False)
    atomic_write(_demo_stamp(files), str(_sizes(files)))
    return files


def demo_sweep_path() -> Path:
    """Path of the demo sweep (840 frames, 562 x 744), synthesised into the cache on first use."""
    return demo_case_paths()[0]
