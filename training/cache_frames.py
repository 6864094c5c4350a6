"""Write a dataset's frames as the model sees them: a copy of an ACOUSLIC-layout dataset whose
frames are already zero-padded to a square and resized to 224 x 224 (uint8, exactly what
:func:`fetaliqa_core.preprocess.preprocess_frames` computes before normalising) and whose masks
are padded and resized the same way (nearest neighbour).

Training reads such a copy like any other dataset (``--data``), 13x fewer bytes per frame than
ACOUSLIC's 562 x 744, memory-mapped, so an epoch no longer decodes and resizes full frames; the
preprocessing of a 224 x 224 square is the identity, so the model sees the same numbers. The
augmentation then works on the padded square, as the paper's reference code did. Pixel spacing
is scaled (mm per pixel of the square), AC values are copied as they are (mm).

Source: an ACOUSLIC-layout folder (``--data``; e.g. the challenge's 300 cases), or synthetic
cases made at full size in memory and never written at full size (``--synth-cases``)::

    python -m training.cache_frames --data ACOUSLIC/ --out ACOUSLIC_224/
    python -m training.cache_frames --synth-cases 120 --synth-seed 1 --fan-variety --out train224/
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

from fetaliqa_core.acouslic import CSV_RELPATH, IMAGES_SUBDIR, MASKS_SUBDIR
from fetaliqa_core.cli._args import job_count, non_negative_int, thread_count
from fetaliqa_core.errors import FetalIQAError


def _input_size(text: str) -> int:
    """argparse type for --size: a model input side of 16 to 2048 pixels."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 16 <= value <= 2048:
        raise argparse.ArgumentTypeError(f"{value}: give a model input side of 16 to 2048 pixels (FetalCLIP: 224)")
    return value


def model_view(frames: np.ndarray, size: int = 224, chunk: int = 64) -> np.ndarray:
    """``(N, H, W)`` uint8 frames -> ``(N, size, size)`` uint8: pad to a square and resize exactly as
    the models' preprocessing does (its normalisation undone, which is exact for 8-bit values)."""
    import torch

    from fetaliqa_core.preprocess import OPENAI_MEAN, OPENAI_STD, preprocess_frames

    out = np.empty((frames.shape[0], size, size), dtype=np.uint8)
    for i in range(0, frames.shape[0], chunk):
        with torch.inference_mode():
            x = preprocess_frames(np.ascontiguousarray(frames[i:i + chunk]), size=size, device="cpu")[:, 0]
        grey = (x * OPENAI_STD[0] + OPENAI_MEAN[0]) * 255.0
        out[i:i + chunk] = grey.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def mask_view(mask: np.ndarray, size: int = 224) -> np.ndarray:
    """``(N, H, W)`` label masks -> ``(N, size, size)`` as the models see them (pad, nearest); only
    the annotated frames are resized (the others stay empty)."""
    from fetaliqa_core.preprocess import preprocess_masks

    out = np.zeros((mask.shape[0], size, size), dtype=np.uint8)
    annotated = np.nonzero(mask.reshape(mask.shape[0], -1).max(axis=1))[0]
    if annotated.size:
        out[annotated] = preprocess_masks(np.ascontiguousarray(mask[annotated]), size=size).numpy().astype(np.uint8)
    return out


def _write(out: Path, uuid: str, frames: np.ndarray, mask: np.ndarray, spacing: tuple[float, float],
           ranges, kinds, size: int) -> None:
    from fetaliqa_core.io import write_volume

    scale = max(frames.shape[1:]) / size
    sp = (spacing[0] * scale, spacing[1] * scale)
    write_volume(out / MASKS_SUBDIR / f"{uuid}.mha", mask_view(mask, size), sp, compress=True,
                 sweep_ranges=ranges, sweep_kinds=kinds)
    write_volume(out / IMAGES_SUBDIR / f"{uuid}.mha", model_view(frames, size), sp, compress=False,
                 sweep_ranges=ranges, sweep_kinds=kinds)


def _synth_one(index: int, seed: int, fan_variety: bool, out: Path, size: int) -> tuple[str, list]:
    from fetaliqa_core import synth

    case = synth.synthesize_case(synth.case_seed(seed, index), fan_variety=fan_variety)
    _write(out, case.uuid, case.frames, case.mask, case.spacing_mm, case.sweep_ranges, case.sweep_kinds, size)
    return case.uuid, list(case.ac_mm)


def _read_rows(out: Path) -> list[tuple[str, str, list]]:
    from training.dataset import read_cases

    if not (out / CSV_RELPATH).is_file():
        return []
    return [(c.uuid, c.subject_id, list(c.ac_mm)) for c in read_cases(out)]


def _write_csv(out: Path, rows: list[tuple[str, str, list]]) -> None:
    n = max(len(r[2]) for r in rows)
    path = out / CSV_RELPATH
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["uuid", "subject_id"] + [f"sweep_{k + 1}_ac_mm" for k in range(n)])
        for uuid, subject, acs in rows:
            w.writerow([uuid, subject] + ["" if v is None else f"{v:.2f}" for v in acs])
    os.replace(tmp, path)


def _log(text: str) -> None:
    print(text, flush=True)


def cache_dataset(out: Path, data: Path | None = None, synth_cases: int = 0, synth_seed: int = 1,
                  fan_variety: bool = False, size: int = 224, jobs: int = 1, resume: bool = False, log=_log) -> int:
    """Write the model-view copy into ``out``; returns the number of cases. The CSV is rewritten
    after every case, so the folder is a usable dataset of the cases done so far; ``resume``
    continues a run that was stopped (the cases its CSV lists are kept)."""
    if out.exists() and any(out.iterdir()) and not resume:
        raise FetalIQAError(f"--out {out} is not empty; choose a new folder (or --resume a stopped run)")
    for d in (IMAGES_SUBDIR, MASKS_SUBDIR, CSV_RELPATH.parent):
        (out / d).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = _read_rows(out) if resume else []
    done = {r[0] for r in rows}
    if data is not None:
        from fetaliqa_core.io import load_mask, load_sweep
        from training.dataset import read_cases

        for i, case in enumerate(read_cases(data)):
            if case.uuid in done:
                continue
            # (in memory: mapped from their files, a file cut short meanwhile would end the run with SIGBUS)
            sweep = load_sweep(case.image_path).in_memory()
            mask = load_mask(case.mask_path, like=sweep, in_memory=True)
            _write(out, case.uuid, np.asarray(sweep.frames), np.asarray(mask), sweep.spacing_mm,
                   sweep.sweep_ranges, sweep.sweep_kinds, size)
            rows.append((case.uuid, case.subject_id, list(case.ac_mm)))
            _write_csv(out, rows)
            log(f"case {i + 1}: {case.uuid} ({time.perf_counter() - t0:.0f} s)")
        return len(rows)
    if synth_cases < 1:
        raise FetalIQAError("give --data or --synth-cases N (N >= 1)")
    from fetaliqa_core import synth

    todo = [i for i in range(synth_cases) if synth.case_uuid(synth.case_seed(synth_seed, i)) not in done]
    if jobs <= 1:
        for i in todo:
            uuid, acs = _synth_one(i, synth_seed, fan_variety, out, size)
            rows.append((uuid, str(i + 1), acs))
            _write_csv(out, rows)
            log(f"case {i + 1}/{synth_cases} ({time.perf_counter() - t0:.0f} s)")
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futs = {pool.submit(_synth_one, i, synth_seed, fan_variety, out, size): i for i in todo}
            for f in as_completed(futs):
                i = futs[f]
                uuid, acs = f.result()  # a failed case stops the run at once (the CSV keeps what is done)
                rows.append((uuid, str(i + 1), acs))
                rows.sort(key=lambda r: int(r[1]))
                _write_csv(out, rows)
                log(f"case {i + 1}/{synth_cases} ({time.perf_counter() - t0:.0f} s)")
    log(f"{len(rows)} cases in {out} ({time.perf_counter() - t0:.0f} s)")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (created; must be empty)")
    p.add_argument("--data", type=Path, default=None, help="source dataset in the ACOUSLIC-AI layout")
    p.add_argument("--synth-cases", type=non_negative_int, default=0, help="instead of --data: this many synthetic cases")
    p.add_argument("--synth-seed", type=non_negative_int, default=1, help="dataset seed of the synthetic cases")
    p.add_argument("--fan-variety", action="store_true", help="synthetic cases: half on other fan geometries")
    p.add_argument("--size", type=_input_size, default=224, help="model input size (default 224)")
    p.add_argument("--jobs", type=job_count, default=1, help="worker processes for synthetic cases")
    p.add_argument("--threads", type=thread_count, default=1, help="torch threads per process (default 1)")
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    args = p.parse_args(argv)
    import torch

    from fetaliqa_core.cli import run_guarded

    torch.set_num_threads(max(1, args.threads))
    # one line for an error, "interrupted" (status 130; finished cases are kept, --resume goes on)
    # for Ctrl-C and SIGTERM: a traceback and a silent status 143 before
    return run_guarded(lambda: cache_dataset(args.out.expanduser().resolve(), args.data, args.synth_cases,
                                             args.synth_seed, args.fan_variety, args.size, args.jobs,
                                             args.resume) and 0,
                       interrupted="interrupted (the cases written are kept; --resume continues)")


if __name__ == "__main__":
    sys.exit(main())
