"""The score files of a sweep: ``frames.csv``, ``summary.json`` and the challenge's two files.

``fetaliqa score``, ``fetaliqa gui --save-scores`` and the headless demo all write them here from
one :class:`~fetaliqa_core.analysis.assessment.Assessment`, so the same sweep, models and
threshold give the same files.
"""

from __future__ import annotations

import io as _io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fetaliqa_core.files import atomic_output_dir, atomic_write, csv_writer, write_json

FRAMES_CSV = "frames.csv"
SUMMARY_JSON = "summary.json"
CHALLENGE_FRAME_FILE = "fetal-abdomen-frame-number.json"
CHALLENGE_MASK_FILE = "fetal-abdomen-segmentation.mha"

FRAMES_COLUMNS = ("frame", "sweep", "p_cls", "p_seg", "seg_area_px", "flagged", "threshold",
                  "model_threshold")


def _score(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else ""


def frames_csv_text(sweep, results, assessment) -> str:
    """``frames.csv``: one row per frame; empty cells where a model did not score the frame.
    ``threshold`` / ``model_threshold`` repeat the operating point the ``flagged`` column used."""
    buf = _io.StringIO()
    w = csv_writer(buf, lineterminator="\n")  # no cell runs as a spreadsheet formula
    w.writerow(FRAMES_COLUMNS)
    t = assessment.thresholds
    thr, own = f"{t.value:.4f}", f"{t.model:.4f}"
    flagged = assessment.flagged
    for i in range(sweep.n_frames):
        area = int(results.seg_area_px[i])
        w.writerow([i, sweep.sweep_index(i) + 1, _score(float(results.p_cls[i])),
                    _score(float(results.p_seg[i])), "" if area < 0 else area,
                    int(bool(flagged[i])), thr, own])
    return buf.getvalue()


def write_frames_csv(path: str | Path, sweep, results, assessment) -> Path:
    return atomic_write(path, frames_csv_text(sweep, results, assessment))


def write_summary_json(path: str | Path, assessment) -> Path:
    return write_json(path, assessment.summary.to_json())


def write_challenge_files(folder: Path, sweep, results, assessment) -> None:
    """The challenge's outputs: the chosen frame number (-1 for none) and a mask volume that is
    empty except on the chosen frame, on the frames' own geometry."""
    from fetaliqa_core import io as fio
    from fetaliqa_core.preprocess import mask_to_frame

    frame = assessment.chosen_frame
    atomic_write(folder / CHALLENGE_FRAME_FILE, f"{frame}\n")
    volume = np.zeros((sweep.n_frames, sweep.height, sweep.width), dtype=np.uint8)
    if frame >= 0 and results.mask(frame) is not None:
        volume[frame] = mask_to_frame(results.mask(frame), sweep.height, sweep.width) > 0
    fio.write_volume(folder / CHALLENGE_MASK_FILE, volume, spacing_mm=sweep.spacing_mm, compress=True)


def write_scores(out: str | Path, sweep, results, assessment, challenge: bool = False,
                 extra: Callable[[Path], None] | None = None) -> list[Path]:
    """Write ``frames.csv`` and ``summary.json`` (and with ``challenge`` the challenge's files)
    into ``out`` at once: a failure leaves ``out`` as it was. ``extra(folder)`` may write more
    files into the folder before it is put in place. Returns the files written here."""
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        write_frames_csv(tmp / FRAMES_CSV, sweep, results, assessment)
        write_summary_json(tmp / SUMMARY_JSON, assessment)
        names = [FRAMES_CSV, SUMMARY_JSON]
        if challenge:
            write_challenge_files(tmp, sweep, results, assessment)
            names += [CHALLENGE_FRAME_FILE, CHALLENGE_MASK_FILE]
        if extra is not None:
            extra(tmp)
    return [out / n for n in names]
