"""Writing synthetic cases and datasets in the ACOUSLIC-AI layout."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fetaliqa_core import acouslic
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core.files import atomic_write, csv_writer, write_json
from fetaliqa_core.synth.case import (
    DEFAULT_FRAMES_PER_SWEEP,
    DEFAULT_HEIGHT,
    DEFAULT_SWEEPS,
    DEFAULT_WIDTH,
    SynthCase,
    case_seed,
    synthesize_case,
)

IMAGES_SUBDIR = acouslic.IMAGES_SUBDIR
MASKS_SUBDIR = acouslic.MASKS_SUBDIR
CSV_PATH = acouslic.CSV_RELPATH



@dataclass(frozen=True)
class CaseSummary:
    """What ``write_dataset`` reports per case (the volumes themselves stay on disk)."""

    index: int
    uuid: str
    kind: str
    ac_mm: list[float | None]
    abdomen_sweeps: list[int]


def write_case(case: SynthCase, image_path: Path, mask_path: Path, compress_images: bool = True) -> None:
    """Write a case's image and mask volumes. Images are compressed with zlib level 1 (twice as
    fast as the default level, files ~25 % larger); masks are always compressed."""
    from fetaliqa_core.io import write_volume

    write_volume(mask_path, case.mask, case.spacing_mm, compress=True,
                 sweep_ranges=case.sweep_ranges, sweep_kinds=case.sweep_kinds)
    write_volume(image_path, case.frames, case.spacing_mm, compress=compress_images,
                 sweep_ranges=case.sweep_ranges, sweep_kinds=case.sweep_kinds, compression_level=1)


def _make_and_write(index: int, seed: int, n_sweeps: int, frames_per_sweep: int, height: int, width: int,
                    compress: bool, img_dir: Path, mask_dir: Path, fan_variety: bool = False) -> CaseSummary:
    case = synthesize_case(case_seed(seed, index), n_sweeps=n_sweeps, frames_per_sweep=frames_per_sweep,
                           height=height, width=width, fan_variety=fan_variety)
    write_case(case, img_dir / f"{case.uuid}.mha", mask_dir / f"{case.uuid}.mha", compress_images=compress)
    return CaseSummary(index=index, uuid=case.uuid, kind=case.kind, ac_mm=list(case.ac_mm),
                       abdomen_sweeps=list(case.abdomen_sweeps))


def write_dataset(out_dir: str | Path, cases: int, seed: int, n_sweeps: int = DEFAULT_SWEEPS,
                  frames_per_sweep: int = DEFAULT_FRAMES_PER_SWEEP, height: int = DEFAULT_HEIGHT,
                  width: int = DEFAULT_WIDTH, compress: bool = True, overwrite: bool = False,
                  jobs: int = 1, progress: Callable[[int, int, CaseSummary], None] | None = None,
                  fan_variety: bool = False) -> list[str]:
    """Write ``cases`` synthetic cases in the ACOUSLIC-AI layout under ``out_dir``::

        images/stacked_fetal_ultrasound/<uuid>.mha
        masks/stacked_fetal_abdomen/<uuid>.mha
        circumferences/fetal_abdominal_circumferences_per_sweep.csv

    Case ``i`` depends only on ``seed`` and ``i`` (not on ``jobs``, the number of worker
    processes). ``fan_variety``: half of the cases on other fan geometries than ACOUSLIC-AI's.
    Returns the case uuids in order. ``progress(done, cases, summary)`` is called
    after each case.
    """
    out = Path(out_dir)
    if cases < 1:
        raise FetalIQAError(f"--cases {cases}: give at least 1 case.")
    img_dir, mask_dir, csv_path = out / IMAGES_SUBDIR, out / MASKS_SUBDIR, out / CSV_PATH
    holds = csv_path.exists() or (img_dir.is_dir() and any(img_dir.glob("*.mha")))
    if not overwrite and holds:
        raise FetalIQAError(f"{out}: already holds a dataset. Choose an empty folder, or overwrite it "
                            "explicitly (--overwrite).")
    earlier = _synth_cases(out)
    if holds and earlier is None:
        # --overwrite replaces a dataset synth wrote, never one it did not (a real one's table would
        # have been replaced, and its scans deleted with the cases its table listed)
        raise FetalIQAError(f"{out}: holds a dataset that `fetaliqa synth` did not write (no {SYNTH_MARKER}): "
                            "it is left as it is, --overwrite or not. Choose an empty folder.")
    try:
        for d in (img_dir, mask_dir, csv_path.parent):
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetalIQAError(f"{out}: cannot create the dataset folders ({exc.strerror}). Choose a folder "
                            "you can write to.") from None
    args = (seed, n_sweeps, frames_per_sweep, height, width, compress, img_dir, mask_dir, fan_variety)
    summaries: list[CaseSummary] = []
    if jobs <= 1 or cases == 1:
        for i in range(cases):
            summaries.append(_make_and_write(i, *args))
            if progress is not None:
                progress(len(summaries), cases, summaries[-1])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, cases), mp_context=ctx) as pool:
            futures = [pool.submit(_make_and_write, i, *args) for i in range(cases)]
            for fut in as_completed(futures):
                summaries.append(fut.result())
                if progress is not None:
                    progress(len(summaries), cases, summaries[-1])
        summaries.sort(key=lambda s: s.index)
    header = ["uuid", "subject_id"] + [f"sweep_{k + 1}_ac_mm" for k in range(n_sweeps)]
    buf = io.StringIO()
    w = csv_writer(buf)
    w.writerow(header)
    for s in summaries:
        w.writerow([s.uuid, str(s.index + 1)] + ["" if v is None else f"{v:.2f}" for v in s.ac_mm])
    atomic_write(csv_path, buf.getvalue())
    # --overwrite: the cases an earlier synth run wrote here that this one does not hold go (only
    # those its own record lists: every other file is left); they stayed, and scoring images/ took
    # them for this one's
    kept = [s.uuid for s in summaries]
    new = set(kept)
    for uuid in earlier or []:
        if uuid not in new:
            for folder in (img_dir, mask_dir):
                (folder / f"{uuid}.mha").unlink(missing_ok=True)
    write_json(out / SYNTH_MARKER, {"written_by": "fetaliqa synth", "seed": int(seed), "cases": kept})
    return kept


#: What ``fetaliqa synth`` records of the cases it wrote into a dataset folder: --overwrite removes
#: those and no other file.
SYNTH_MARKER = ".fetaliqa-synth.json"


def _synth_cases(out: Path) -> list[str] | None:
    """The case ids an earlier ``synth`` run wrote into ``out`` (its record), each a plain file name
    (nothing a record could smuggle in reaches outside the dataset's folders); None without one."""
    from fetaliqa_core import validate

    try:  # (bounded: a record of 100,000 cases is 4 MB)
        record = validate.read_json_bounded(out / SYNTH_MARKER, SYNTH_MARKER, "", max_bytes=1 << 24)
    except FetalIQAError:
        return None
    cases = record.get("cases") if isinstance(record, dict) else None
    if not isinstance(cases, list):
        return None
    ids = [str(u) for u in cases[:100000] if isinstance(u, str)]
    return [u for u in ids if u and u == Path(u).name and u not in (".", "..")]
