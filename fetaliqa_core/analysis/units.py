"""What a clinician is shown of an abdominal circumference: a number with known units, a
doubtful number, or no number and the reason.

Rules (the same in the command line, the viewer, reports and ``summary.json``):

- **No pixel spacing, or an implausible one** (see :mod:`fetaliqa_core.io.spacing`): no length
  in mm and no gestational age (GA) anywhere; the reason is said instead. A spacing the user
  gives (``--spacing MM``, or in the viewer) makes the lengths known again.
- **A mask that is not an abdomen's outline** at the measured frame (fragmented, not
  ellipse-like, elongated, cut off by the fan, of implausible size: the frame choice's verdict,
  :func:`~fetaliqa_core.analysis.frame_choice.mask_shape`): the ellipse fitted to it measures
  nothing, so the AC is shown *doubtful* with the reason, without GA. This is the case of a frame
  chosen on the classifier's word alone, where no mask in the case looked like an abdomen.
- **AC outside** :data:`AC_PLAUSIBLE_MM` (75-420 mm): shown, marked *doubtful*, never as a number
  to act on. 75 mm is Hadlock's AC at 14 weeks, the start of his 1984 cohort and of routine
  abdominal biometry; 420 mm is above the largest term abdomens of the usual obstetric charts
  (Hadlock's formula reaches 42 weeks at ~380 mm; charts' upper centiles at 40-42 weeks lie
  around 380-400 mm), with a margin for macrosomia. A value outside is more likely a wrong frame,
  mask or spacing than a fetus.
- **GA** (Hadlock 1984) is given only with a trusted AC inside Hadlock's range
  (:data:`~fetaliqa_core.analysis.ac.HADLOCK_AC_RANGE_MM`, ~14-42 weeks), written one way:
  ``24w 3d`` (:func:`~fetaliqa_core.analysis.ac.format_ga`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from fetaliqa_core.analysis.ac import HADLOCK_AC_RANGE_MM, format_ga, hadlock_ga

#: Plausible fetal abdominal circumference, mm (see the module's text).
AC_PLAUSIBLE_MM = (75.0, 420.0)

#: Status of a reading: a number to act on, a doubtful number, no number (units), no AC at all.
OK, DOUBTFUL, NO_UNITS, NONE = "ok", "doubtful", "no units", "none"


@dataclass(frozen=True)
class ACReading:
    """An AC as shown to people. ``ac_mm`` / ``ga_weeks`` are None when they must not be shown;
    ``ga_text`` is ``24w 3d`` or empty; ``note`` says why a value is doubtful or missing."""

    status: str
    ac_mm: float | None
    ga_weeks: float | None
    ga_text: str
    note: str

    @property
    def trusted(self) -> bool:
        return self.status == OK

    def text(self) -> str:
        """One line: ``AC 231.4 mm, GA 27w 1d``; ``AC 52.0 mm (doubtful: ...)``; ``AC not
        shown: ...``; ``no AC``."""
        if self.status == NONE:
            return "no AC" + (f" ({self.note})" if self.note else "")
        if self.status == NO_UNITS:
            return f"AC not shown: {self.note}"
        text = f"AC {self.ac_mm:.1f} mm"
        if self.ga_text:
            text += f", GA {self.ga_text}"
        if self.status == DOUBTFUL:
            text += f" (doubtful: {self.note})"
        elif self.note:
            text += f" ({self.note})"
        return text

    def short(self, why: bool = False) -> str:
        """The same in a few words, for a label on the image (the reason goes elsewhere):
        ``AC 231.4 mm · GA 27w 1d``; ``AC 52.0 mm (doubtful)``; ``AC not shown (pixel spacing)``.
        ``why``: a doubt with its reason in a few words, ``AC 52.0 mm (doubtful: flattened outline)``
        (:func:`short_doubt`; the window's status bar)."""
        if self.status == NONE:
            return "no AC"
        if self.status == NO_UNITS:
            return "AC not shown (pixel spacing)"
        text = f"AC {self.ac_mm:.1f} mm" + (f" · GA {self.ga_text}" if self.ga_text else "")
        if self.status != DOUBTFUL:
            return text
        words = short_doubt(self.note) if why else ""
        return text + (f" (doubtful: {words})" if words else " (doubtful)")

    def to_dict(self) -> dict:
        return asdict(self)


#: Doubts about an outline that may still be an abdomen's (pinched, flattened, cut off straight,
#: oval: ``analysis.frame_choice`` and ``analysis.ac``), said as such rather than as no abdomen.
OUTLINE_DOUBTS = ("pinched", "notched", "flattened", "cut off", "oval", "inside the body", "outside the body",
                  "not checked against", "extrapolated")


def mask_doubt(mask_problem: str) -> str:
    """Why an AC on a mask is doubtful, in words: its outline is pinched, flattened, cut off or
    oval (an abdomen's, maybe, but not whole, not one, or cut obliquely), off the body's edge or
    not checked against it, or it outlines no abdomen at all."""
    if mask_problem.startswith(OUTLINE_DOUBTS):
        return f"the mask's outline is {mask_problem}"
    return f"the mask there does not outline an abdomen ({mask_problem})"


def beside_threshold(p: float, threshold: float) -> str:
    """``p`` with two decimals, or as many more (up to five) as it takes not to read as equal to
    ``threshold`` when it is not (0.6663 against 0.67 is "0.666", not "0.67")."""
    p, threshold = float(p), float(threshold)
    for digits in (2, 3, 4, 5):
        if p == threshold or round(p, digits) != round(threshold, digits):
            break
    return f"{p:.{digits}f}"


def classifier_doubt(p_cls: float | None, threshold: float) -> str | None:
    """Why an AC measured on a frame is doubtful when the classifier scored that frame below its
    threshold: the segmenter outlined something the classifier does not take for an abdomen, and
    with two models that disagree neither is to be believed on its own. None when the classifier
    calls the frame, did not score it (NaN) or did not run (None)."""
    if p_cls is None or not math.isfinite(float(p_cls)) or float(p_cls) >= threshold:
        return None
    return (f"the classifier does not call this frame an abdomen (score {beside_threshold(p_cls, threshold)}, "
            f"threshold {threshold:.2f}): the models disagree")


def segmenter_doubt(threshold: float = 0.5) -> str:
    """Why an AC measured on a frame is doubtful when the segmenter's own call there is no (its
    mask covers less than the paper's 1 % of the model input, ``p_seg`` below ``threshold``): an
    outline the segmenter does not stand by, on a frame only the classifier calls."""
    return (f"the segmenter does not call this frame (its mask covers under 1 % of the image, p_seg "
            f"below {threshold:.2f}): the models disagree")


def models_disagree(p_cls: float, threshold_cls: float, seg_called: bool | None,
                    threshold_seg: float = 0.5) -> str | None:
    """Why one of two models contradicts an AC measured on a frame: the classifier scored it
    below its threshold (:func:`classifier_doubt`), else the segmenter's own call there is no
    (``seg_called`` False: :func:`segmenter_doubt`; None where it did not score the frame). For
    runs with a classifier; None when neither contradicts it."""
    doubt = classifier_doubt(p_cls, threshold_cls)
    if doubt is None and seg_called is False:
        doubt = segmenter_doubt(threshold_seg)
    return doubt


#: Why an AC from a demonstration model is never a number to act on. Measured: on 12 held-out
#: synthetic cases of the project's own generator its AC at the chosen frame was within 3 % of the
#: truth in 0 of 9 cases (resources/README.md), and on sweeps of a generator it never saw it
#: outlined thoraxes and halves of abdomens that pass every shape check.
DEMO_MODEL_DOUBT = ("from a demonstration model trained on synthetic sweeps only, whose masks are not "
                    "reliable outside them: not a measurement")


#: Why an AC from a distilled student scoring without its teacher is not the answer: the student
#: is made to pick the frames its teacher re-scores (the cascade), and its own chosen frame agreed
#: with its teacher's in 3 of 10 cases (docs/BENCHMARKS.md); whatever its masks look like,
#: the number is a fast model's first look.
STUDENT_ALONE_DOUBT = ("from a distilled student scoring alone, which is not meant to give the answer: "
                       "re-score the sweep with its teacher (--cascade, or Cascade in Models...) before acting on it")


#: Pixels whose sides differ by more than this share are not square to the models: they see the
#: frames stretched (the models are trained on square pixels, as ACOUSLIC's are).
SQUARE_PIXEL_TOLERANCE = 0.05


#: How :func:`stretch_doubt` starts (it is found again in a model doubt that holds it).
STRETCH_MARK = "the pixels are not square ("


def stretch_doubt(spacing_mm) -> str | None:
    """Why an AC from the models is not to be acted on when the sweep's pixels are not square:
    the frames reach the models stretched (as stored), and their masks are those of a stretched
    body (a 0.2 x 0.3 mm copy of a sweep read its AC 9 % short, though the AC itself is measured
    in mm). None for square pixels or an unknown size."""
    if spacing_mm is None:
        return None
    try:
        row, col = (float(v) for v in spacing_mm)
    except (TypeError, ValueError):
        return None
    if not (row > 0 and col > 0) or abs(row - col) <= SQUARE_PIXEL_TOLERANCE * max(row, col):
        return None
    return (f"{STRETCH_MARK}{col:g} mm wide x {row:g} mm high): the models saw the frames "
            "stretched, so their mask may be off; resample the sweep to square pixels")


def model_doubt(demo: bool, spacing_mm=None, student_alone: bool = False) -> str | None:
    """Why the models themselves cannot give an AC to act on: a demonstration model, a distilled
    student scoring without its teacher (``student_alone``: :data:`STUDENT_ALONE_DOUBT`), or frames
    they saw stretched (:func:`stretch_doubt`); None for the user's own on square pixels (a test
    model on a randomly initialised base is labelled as such, not doubted: it stands for the
    user's own models in the tests)."""
    reasons = [r for r in (DEMO_MODEL_DOUBT if demo else None, STUDENT_ALONE_DOUBT if student_alone else None,
                           stretch_doubt(spacing_mm)) if r]
    return "; ".join(reasons) or None


def short_doubt(note: str) -> str:
    """A few words for why an AC is doubtful (:func:`read_ac`'s note), where a line has no room for
    the whole reason (the window's status bar, whose tooltip holds it): "flattened, oval outline",
    "not an abdomen's outline", "models disagree", "demo model", "student alone"; "" when none fits."""
    text = note.lower()
    first = text.split("; check")[0]
    words = ""
    if first.startswith("the mask's outline is "):
        found = [w for w in ("pinched", "notched", "flattened", "cut off", "oval", "extrapolated") if w in first]
        words = "outline cut off" if "cut off" in found else f"{', '.join(found)} outline" if found else "outline"
        edge = next((w for w in ("inside the body", "outside the body") if first.startswith(f"the mask's outline is {w}")), "")
        if edge:  # which way the AC is off comes first
            words = f"outline {edge}" + (f", {', '.join(found)}" if found else "")
        elif first.startswith("the mask's outline is not checked against"):
            words = "edge not seen" + (f", {', '.join(found)} outline" if found else "")
    elif first.startswith("the mask there does not outline an abdomen"):
        words = "implausible size" if "size" in first else "not an abdomen's outline"
    elif "the models disagree" in first:
        words = "models disagree"
    elif first.startswith(DEMO_MODEL_DOUBT[:30].lower()):
        words = "demo model"
    elif first.startswith(STUDENT_ALONE_DOUBT[:30].lower()):
        words = "student alone"
    elif first.startswith("outside the plausible"):
        return "implausible size"
    elif "not square" in first or "stretched" in first:
        words = "pixels not square"
    if "outside the plausible" in text and words and words != "implausible size":
        words += ", implausible size"  # (said after the first reason: the stronger one is kept too)
    return words


def read_ac(ac_mm: float | None, spacing_problem: str | None = None,
            mask_problem: str | None = None, disagreement: str | None = None,
            model_doubt: str | None = None) -> ACReading:
    """The reading of an AC measured in mm with the sweep's spacing.

    spacing_problem: the sweep's :attr:`~fetaliqa_core.io.Sweep.spacing_problem` (None when the
    spacing is known and plausible). mask_problem: why the mask measured is not an abdomen's
    outline (:attr:`~fetaliqa_core.analysis.frame_choice.MaskShape.reason`; None when it is).
    disagreement: why the other model contradicts the frame (:func:`classifier_doubt`; None when
    it does not). model_doubt: why the models themselves cannot give a number to act on
    (:data:`DEMO_MODEL_DOUBT` for the demonstration models; None for the user's own).
    """
    if ac_mm is None or not math.isfinite(float(ac_mm)) or float(ac_mm) <= 0:
        return ACReading(NONE, None, None, "", "")
    if spacing_problem:
        return ACReading(NO_UNITS, None, None, "", spacing_problem)
    ac = round(float(ac_mm), 1)  # judged as shown: "AC 380.0 mm" is inside 75-380 mm, not past it
    lo, hi = AC_PLAUSIBLE_MM
    # every reason counts: a value out of range is said beside the first other reason
    size = "" if lo <= ac <= hi or (mask_problem and "size" in mask_problem) else (
        f"; also outside the plausible {lo:.0f}-{hi:.0f} mm")
    # a student's word and the stretched frames' are said beside any other doubt: what to do next
    # (re-score with its teacher, resample the sweep to square pixels) was said only where the mask
    # and the classifier raised none (the mask file's record kept it, the window and summary.json not)
    also_models = f"; also {STUDENT_ALONE_DOUBT}" if model_doubt and STUDENT_ALONE_DOUBT in model_doubt else ""
    stretched = (model_doubt or "").find(STRETCH_MARK)
    if stretched >= 0:  # (the last of the model doubts: from its mark to the end)
        also_models += f"; also {model_doubt[stretched:]}"
    if mask_problem:
        check = "the frame, the mask and the pixel spacing" if "size" in mask_problem or size else "the frame and the mask"
        # the other model's word is said too (it was dropped: a frame the classifier scored 0.28 read
        # only "flattened")
        also = f"; also {disagreement}" if disagreement else ""
        return ACReading(DOUBTFUL, round(ac, 1), None, "",
                         f"{mask_doubt(mask_problem)}{also}; check {check}{size}{also_models}")
    if disagreement:
        return ACReading(DOUBTFUL, round(ac, 1), None, "", f"{disagreement}; check the frame{size}{also_models}")
    if model_doubt:
        return ACReading(DOUBTFUL, round(ac, 1), None, "", f"{model_doubt}{size}")
    if not lo <= ac <= hi:
        return ACReading(DOUBTFUL, round(ac, 1), None, "",
                         f"outside the plausible {lo:.0f}-{hi:.0f} mm; check the frame, the mask "
                         "and the pixel spacing")
    ga = hadlock_ga(ac)
    if ga.out_of_range or not math.isfinite(ga.weeks):
        glo, ghi = HADLOCK_AC_RANGE_MM
        return ACReading(OK, round(ac, 1), None, "",
                         f"no GA: outside Hadlock's {glo:.0f}-{ghi:.0f} mm")
    return ACReading(OK, round(ac, 1), round(ga.weeks, 2), format_ga(ga.weeks), "")
