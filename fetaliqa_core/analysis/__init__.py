"""What the sonographer acts on, computed from the engine's per-frame results. Pure numpy /
OpenCV; no model, no Qt.

- :mod:`.ac`: abdominal circumference on one frame's mask (the challenge's way) and Hadlock's
  gestational age.
- :mod:`.assessment`: per-frame calls and flags, best frame per sweep, the case's chosen frame.
- :mod:`.metrics`: per-frame metrics (binary classification metrics, Dice).
- :mod:`.units`: what a clinician is shown of an AC (known units, doubtful, or not shown).
- :mod:`.challenge`: the ACOUSLIC-AI challenge's per-case metrics and their aggregate.

The ACOUSLIC-AI data facts and the field-of-view mask live in :mod:`fetaliqa_core.acouslic`.
"""

from fetaliqa_core.analysis.ac import (
    DEFAULT_MIN_AREA_PX,
    HADLOCK_AC_RANGE_MM,
    ACMeasurement,
    GestationalAge,
    ellipse_polygon,
    extrapolated_note,
    format_ga,
    hadlock_ga,
    measure_ac,
    measure_ac_evaluator,
    measure_frame_ac,
    ramanujan_circumference,
)
from fetaliqa_core.analysis.assessment import (
    BestFrame,
    FrameFlags,
    best_frames,
    choose_case_frame,
    combined_score,
    flag_frames,
    smooth_curve,
)
from fetaliqa_core.analysis.challenge import (
    DSC_SOFT_WINDOW,
    CaseMetrics,
    aggregate_case_metrics,
    case_metrics,
    dsc_soft_evaluator,
    reference_frame,
    wfss,
)
from fetaliqa_core.analysis.metrics import BinaryMetrics, binary_metrics, dice, dice_per_frame
from fetaliqa_core.analysis.units import AC_PLAUSIBLE_MM, DEMO_MODEL_DOUBT, ACReading, read_ac

__all__ = [
    "AC_PLAUSIBLE_MM",
    "ACReading",
    "DEMO_MODEL_DOUBT",
    "read_ac",
    "DEFAULT_MIN_AREA_PX",
    "DSC_SOFT_WINDOW",
    "HADLOCK_AC_RANGE_MM",
    "ACMeasurement",
    "BestFrame",
    "BinaryMetrics",
    "CaseMetrics",
    "FrameFlags",
    "GestationalAge",
    "aggregate_case_metrics",
    "best_frames",
    "binary_metrics",
    "case_metrics",
    "choose_case_frame",
    "combined_score",
    "dice",
    "dice_per_frame",
    "dsc_soft_evaluator",
    "ellipse_polygon",
    "extrapolated_note",
    "flag_frames",
    "format_ga",
    "hadlock_ga",
    "measure_ac",
    "measure_ac_evaluator",
    "measure_frame_ac",
    "ramanujan_circumference",
    "reference_frame",
    "smooth_curve",
    "wfss",
]
