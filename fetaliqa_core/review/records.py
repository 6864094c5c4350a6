"""What the review database holds, as Python values: sweeps, model runs, verdicts, positions.

Rows are checked when they are read (JSON that parses to the expected shape, blobs of the
length the sweep needs, labels the schema allows): a row damaged by another program or a
failing disk raises :class:`DamagedRow`, which the store reports as one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from fetaliqa_core.analysis.assessment import SEG_THRESHOLD
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import BIDI_CONTROLS

#: Verdict labels, in the order the review panel offers them.
LABELS: tuple[str, ...] = ("optimal", "suboptimal", "not_usable")
#: ACOUSLIC mask convention: 1 optimal plane, 2 suboptimal plane, 0 background / not usable.
#: The same digits are the review panel's keys.
ACOUSLIC_CODE: dict[str, int] = {"optimal": 1, "suboptimal": 2, "not_usable": 0}
LABEL_FROM_CODE: dict[int, str] = {v: k for k, v in ACOUSLIC_CODE.items()}
LABEL_TITLES: dict[str, str] = {"optimal": "optimal", "suboptimal": "suboptimal",
                                "not_usable": "not usable"}

QueueKind = Literal["candidates", "disagreements", "unreviewed", "all"]
QUEUE_KINDS: tuple[str, ...] = ("candidates", "disagreements", "unreviewed", "all")

#: ``record_verdict(agrees_with_model=AUTO)``: derive agreement from the latest model run.
AUTO = "auto"


class DamagedRow(ValueError):
    """A database row that does not hold what the schema says (``what`` names it)."""


def utc_now() -> str:
    """Current time as UTC ISO 8601 with milliseconds, e.g. ``2025-01-31T14:05:09.123+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class SweepRecord:
    """A sweep file as the store knows it (identified by the hash of its frames)."""

    id: int
    content_hash: str
    path: str | None
    n_frames: int
    sweep_ranges: list[tuple[int, int]]
    spacing_mm: tuple[float, float] | None
    sweep_kinds: list[str] | None
    added: str

    @property
    def name(self) -> str:
        """File name, or the start of the hash when the path is unknown."""
        return Path(self.path).name if self.path else self.content_hash[:12]

    def sweep_index(self, frame: int) -> int:
        """Index of the sub-sweep holding ``frame`` (0 when the ranges are unknown)."""
        for i, (start, stop) in enumerate(self.sweep_ranges):
            if start <= frame < stop:
                return i
        return 0


@dataclass(frozen=True, eq=False)
class ModelRun:
    """Per-frame model results for one sweep. Arrays have shape (n_frames,).

    ``p_cls``/``p_seg`` are float32 probabilities (NaN where that model did not run),
    ``seg_area_px`` int32 pixel counts of the predicted mask (224 x 224 model space),
    ``flagged`` bool: the models propose the frame as good for measuring the AC.
    """

    id: int
    sweep_id: int
    created: str
    bundles: dict[str, Any]
    threshold: float
    seg_threshold: float
    p_cls: np.ndarray
    p_seg: np.ndarray
    seg_area_px: np.ndarray
    flagged: np.ndarray
    chosen_frame: int | None
    ac_mm: float | None
    ga_weeks: float | None

    @property
    def thresholds(self):
        """The run's operating point (``analysis.assessment.Thresholds``): on p_cls when a
        classifier ran, with the classifier bundle's own threshold recorded in ``bundles``
        (the run's when not recorded), else on p_seg."""
        from fetaliqa_core.analysis.assessment import Thresholds

        if np.isfinite(self.p_cls).any():
            info = self.bundles.get("cls")
            own = info.get("threshold") if isinstance(info, dict) else None
            return Thresholds(float(self.threshold), float(self.threshold if own is None else own), "p_cls")
        return Thresholds(float(self.seg_threshold), SEG_THRESHOLD, "p_seg")

    @cached_property
    def scored(self) -> np.ndarray:
        """(n_frames,) bool: a model scored the frame. False on the frames a run stopped
        part-way never reached: "not flagged" there is no call of the model's, so those frames
        count in no agreement with it."""
        return np.isfinite(self.p_cls) | np.isfinite(self.p_seg)

    def frame_flags(self):
        """The run's per-frame calls (``analysis.assessment.FrameFlags``), by the same rule as
        the assessment that flagged its frames."""
        from fetaliqa_core.analysis.assessment import flag_frames

        return flag_frames(self.p_cls, self.p_seg, self.threshold, self.seg_threshold)

    @property
    def cls_call(self) -> np.ndarray:
        """(n_frames,) bool: classifier positive (False where p_cls is NaN)."""
        return self.frame_flags().cls_call

    @property
    def seg_call(self) -> np.ndarray:
        """(n_frames,) bool: segmenter positive (False where p_seg is NaN)."""
        return self.frame_flags().seg_call

    def models_disagree(self) -> np.ndarray:
        """(n_frames,) bool: both models ran and their calls differ."""
        return self.frame_flags().disagreements


@dataclass(frozen=True)
class Verdict:
    """One verdict row. ``time`` is UTC ISO 8601. ``withdrawn``: the row withdraws the reviewer's
    verdict on the frame (``label``: the one withdrawn); only ``history`` reads return such rows."""

    id: int
    sweep_id: int
    frame: int
    reviewer: str
    label: str
    agrees_with_model: bool | None
    note: str
    time: str
    model_run_id: int | None
    withdrawn: bool = False

    @property
    def code(self) -> int:
        """ACOUSLIC label code: 1 optimal, 2 suboptimal, 0 not usable."""
        return ACOUSLIC_CODE[self.label]

    @property
    def positive(self) -> bool:
        """The reviewer calls the frame usable for the AC (optimal or suboptimal)."""
        return self.label != "not_usable"


@dataclass(frozen=True)
class ReviewPosition:
    """Where a reviewer stopped in a sweep: frame and the queue they were working through."""

    frame: int
    queue: str | None
    time: str


# ----------------------------------------------------------------------------- helpers


def f32_blob(values: Any, n: int, name: str) -> bytes:
    arr = np.asarray(values, dtype="<f4").reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values; the sweep has {n} frames")
    return arr.tobytes()


def i32_blob(values: Any, n: int, name: str) -> bytes:
    arr = np.asarray(values).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values; the sweep has {n} frames")
    return arr.astype("<i4").tobytes()


def from_blob(blob: bytes, dtype: str) -> np.ndarray:
    return np.frombuffer(blob, dtype=dtype).copy()


def encode_mask(mask: np.ndarray) -> bytes:
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W) uint8 labels, got shape {mask.shape}")
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        raise ValueError("could not encode a mask as PNG")
    return buf.tobytes()


def decode_mask(blob: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)


def check_label(label: str | int) -> str:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if int(label) in LABEL_FROM_CODE:
            return LABEL_FROM_CODE[int(label)]
    elif isinstance(label, str):
        key = label.strip().lower().replace(" ", "_")
        if key in ACOUSLIC_CODE:
            return key
        if key in {"0", "1", "2"}:
            return LABEL_FROM_CODE[int(key)]
    raise FetalIQAError(f"Unknown verdict label {label!r}: use one of "
                        f"{', '.join(LABELS)} (or the codes 1, 2, 0).")


#: Direction overrides and isolates: in a name they would turn the text after it around in a report.
_BIDI_CONTROLS = dict.fromkeys(map(ord, BIDI_CONTROLS))


#: Of those, the ones that reach past their own run of text (embeddings and overrides, U+202A-E):
#: the marks (LRM, RLM) and isolates are ordinary in Hebrew and Arabic notes and stay there.
_BIDI_OVERRIDES = dict.fromkeys(range(0x202A, 0x202F))
_ISOLATES = dict.fromkeys(range(0x2066, 0x206A))


def _without_controls(text: str, keep: str = "", bidi: dict = _BIDI_CONTROLS) -> str:
    """``text`` without direction overrides and isolates (``bidi``), nor control characters (C0,
    DEL, C1) other than those in ``keep``: invisible, they turned a report's text around (``rtl
    \u202egnp.exe`` shows as "exe.png"), ran escape sequences in a terminal that shows a CSV,
    and a NUL stopped some CSV readers. One pattern scan (a character-by-character loop took
    15 s on a database's 100 MB note, with the review window waiting on it)."""
    if text.isascii():  # (known without a scan) only C0 and DEL can be there: dropped bytewise
        return text.encode("ascii").translate(None, _ascii_controls(keep)).decode("ascii")
    return _unwanted(keep, tuple(sorted(bidi))).sub("", text)


@cache
def _ascii_controls(keep: str) -> bytes:
    return bytes(c for c in (*range(0x20), 0x7F) if chr(c) not in keep)


@cache
def _unwanted(keep: str, bidi: tuple[int, ...]) -> re.Pattern:
    """The characters :func:`_without_controls` drops, as one character class."""
    chars = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in keep]
    chars += [chr(c) for c in bidi]
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")


def check_reviewer(reviewer: str) -> str:
    name = _without_controls(reviewer or "").strip()
    if not name:
        raise FetalIQAError("The reviewer name is empty: enter your name before reviewing, "
                            "so that every verdict says who made it.")
    return name


def clean_note(note: str | None) -> str:
    """A verdict's note as it is kept and shown: line breaks and tabs stay (a note may have lines),
    other control characters and direction embeddings and overrides go (the marks and isolates of
    right-to-left text stay: a Hebrew or Arabic note lost them). Applied when a verdict is recorded
    and when one is read (a database written by an earlier version, or by another program), so
    that no report or export carries them."""
    text = _without_controls("" if note is None else str(note), keep="\n\r\t", bidi=_BIDI_OVERRIDES)
    return text if _isolates_closed(text) else text.translate(_ISOLATES)


def clean_name(text: str | None) -> str:
    """A reviewer's name, a sweep's path or a time as a report or an export shows them: without
    control characters or direction controls, as :func:`check_reviewer` enters a name. A name
    this version writes has none; one in a database written by another program carried escape
    sequences (a terminal showing the CSV cleared its screen) and overrides (a path read
    backwards) into every export, where the notes beside them were cleaned."""
    return _without_controls("" if text is None else str(text))


def _isolates_closed(text: str) -> bool:
    """Whether every direction isolate a text opens (U+2066-8) is closed (U+2069) on its own line:
    one left open runs to the end of its line, and in a report's CSV row reordered the columns
    after the note. Only the lines holding isolates are walked (a note without any, the usual
    case, is scanned once at C speed)."""
    if text.isascii() or _ISOLATE_MARK.search(text) is None:
        return True
    for line in text.splitlines() or [""]:
        depth = 0
        for mark in _ISOLATE_MARK.findall(line):
            depth += -1 if mark == "\u2069" else 1
            if depth < 0:
                return False
        if depth:
            return False
    return True


_ISOLATE_MARK = re.compile("[\u2066-\u2069]")


# ----------------------------------------------------------------------------- rows -> values


def _json(text: Any, what: str) -> Any:
    if not isinstance(text, (str, bytes)):
        raise DamagedRow(what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise DamagedRow(what) from None


def sweep_from_row(row: tuple) -> SweepRecord:
    (sid, chash, path, n, ranges, row_mm, col_mm, added, kinds) = row
    what = f"sweep {sid}"
    try:
        parsed = _json(ranges, what)
        sweep_ranges = [(int(a), int(b)) for a, b in parsed]
        if not isinstance(n, int) or not all(0 <= a < b <= n for a, b in sweep_ranges):
            raise DamagedRow(what)  # (sub-sweeps are ranges of the sweep's own frames)
        kind_list = _json(kinds, what) if kinds else None
        if kind_list is not None and not (isinstance(kind_list, list) and all(isinstance(k, str) for k in kind_list)):
            raise DamagedRow(what)
        if not isinstance(n, int) or n <= 0 or not isinstance(chash, str):
            raise DamagedRow(what)
        spacing = None if row_mm is None else (float(row_mm), float(col_mm))
    except (TypeError, ValueError):
        raise DamagedRow(what) from None
    return SweepRecord(id=sid, content_hash=chash, path=path, n_frames=n, sweep_ranges=sweep_ranges,
                       spacing_mm=spacing, sweep_kinds=kind_list, added=added)


def _blob(blob: Any, dtype: str, n: int, what: str) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    if not isinstance(blob, bytes) or len(blob) != n * itemsize:
        raise DamagedRow(what)
    return from_blob(blob, dtype)


@cache
def _weeks_range() -> tuple[float, float]:
    from fetaliqa_core.analysis.ac import HADLOCK_AC_RANGE_MM, hadlock_ga

    return tuple(hadlock_ga(ac).weeks for ac in HADLOCK_AC_RANGE_MM)


def stored_reading(ac: Any, ga: Any, what: str,
                   error: type[Exception] | None = None) -> tuple[float | None, float | None]:
    """A run's AC and GA. Only a number to act on is stored (analysis.units.read_ac): an AC
    outside the plausible 75-420 mm or a GA outside Hadlock's range of weeks was written by
    another program (1e308 mm and -5 weeks were exported as plain numbers, ac_status "ok").
    ``error``: what is raised (a :class:`DamagedRow` by default; the store refuses to write one)."""
    from fetaliqa_core.analysis.units import AC_PLAUSIBLE_MM

    error = error or DamagedRow
    ac = ac if isinstance(ac, (int, float)) else None
    ga = ga if isinstance(ga, (int, float)) else None
    if ac is not None and not AC_PLAUSIBLE_MM[0] <= round(ac, 1) <= AC_PLAUSIBLE_MM[1]:  # as shown
        raise error(f"{what}: AC {ac:.4g} mm" if what else f"AC {ac:.4g} mm is not a number to act on (75-420 mm)")
    lo, hi = _weeks_range()
    if ga is not None and not lo - 0.01 <= ga <= hi + 0.01:  # stored to 0.01 week
        raise error(f"{what}: GA {ga:.4g} weeks" if what else f"GA {ga:.4g} weeks is outside Hadlock's range")
    return ac, ga


def run_from_row(row: tuple) -> ModelRun:
    """``row``: the model_runs columns followed by the sweep's frame count."""
    (rid, sid, created, bundles, thr, seg_thr, p_cls, p_seg, area, flagged, chosen, ac, ga, n) = row
    what = f"model run {rid}"
    info = _json(bundles, what)
    if not isinstance(info, dict) or not isinstance(n, int) or n <= 0 or not isinstance(created, str):
        raise DamagedRow(what)
    try:
        threshold = float(thr)
        seg_threshold = threshold if seg_thr is None else float(seg_thr)
    except (TypeError, ValueError):
        raise DamagedRow(what) from None
    if chosen is not None and (not isinstance(chosen, int) or not -1 <= chosen < n):
        raise DamagedRow(what)
    ac, ga = stored_reading(ac, ga, what)
    return ModelRun(id=rid, sweep_id=sid, created=created, bundles=info, threshold=threshold,
                    seg_threshold=seg_threshold, p_cls=_blob(p_cls, "<f4", n, what),
                    p_seg=_blob(p_seg, "<f4", n, what), seg_area_px=_blob(area, "<i4", n, what),
                    flagged=_blob(flagged, "u1", n, what).astype(bool), chosen_frame=chosen,
                    ac_mm=ac, ga_weeks=ga)


def verdict_from_row(row: tuple) -> Verdict:
    """``row``: the verdicts columns (``withdrawn`` last) followed by the sweep's frame count."""
    vid, sid, frame, reviewer, label, agrees, note, time, run_id, withdrawn, n = row
    if (label not in ACOUSLIC_CODE or not isinstance(frame, int) or not isinstance(n, int) or not 0 <= frame < n
            or not isinstance(reviewer, str) or not isinstance(time, str) or not isinstance(note, (str, type(None)))
            or withdrawn not in (0, 1)):
        raise DamagedRow(f"verdict {vid}")
    return Verdict(id=vid, sweep_id=sid, frame=frame, reviewer=reviewer, label=label,
                   agrees_with_model=None if agrees is None else bool(agrees), note=clean_note(note),
                   time=time, model_run_id=run_id, withdrawn=bool(withdrawn))


#: The largest mask side a review database holds (masks are stored at the model's resolution,
#: 224 for FetalCLIP): a PNG stating more is refused before it is decoded (30,000 x 30,000 in
#: 875 KB took 1.8 GB).
MAX_MASK_SIDE = 4096


def mask_size(blob: Any, what: str) -> tuple[int, int]:
    """(height, width) a mask PNG's header states, read without decoding it."""
    if not isinstance(blob, bytes) or len(blob) < 24 or blob[:8] != b"\x89PNG\r\n\x1a\n" or blob[12:16] != b"IHDR":
        raise DamagedRow(what)
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    if not (0 < width <= MAX_MASK_SIDE and 0 < height <= MAX_MASK_SIDE):
        raise DamagedRow(what)
    return height, width


def mask_from_blob(blob: Any, what: str) -> np.ndarray:
    mask_size(blob, what)
    mask = decode_mask(blob)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise DamagedRow(what)
    return mask
