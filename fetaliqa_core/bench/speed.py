"""``fetaliqa bench --speed``: the CPU speed paths side by side in one run.

- preprocessing: the seed-style PIL path, the CPU path and the torch (GPU) path on the same frames;
- precision: the CPU probe, the real architecture (FetalCLIP's ViT-L/14, random weights) in fp32
  and bf16 on the same frames, and the agreement of a classifier + segmenter pair in bf16 vs fp32;
- one base for two bundles: peak RSS of a child process holding a real-architecture classifier
  and segmenter on one base, and the teacher's full-case time estimated from a measured subset;
- the student: a full synthetic case through the engine, and student vs teacher and cascade vs
  teacher on held-out synthetic cases (chosen frame, flags, time).

Every figure comes with the others of the same run (the machine is shared: ratios matter).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fetaliqa_core.acouslic import FRAMES_PER_CASE


def _best(fn: Callable[[], object], reps: int = 2) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def preprocessing(n: int, log) -> dict:
    from fetaliqa_core.bench.inputs import quick_frames
    from fetaliqa_core.bench.seed_style import seed_style_preprocess, seed_style_transform
    from fetaliqa_core.preprocess import _as_uint8_batch, _preprocess_torch, preprocess_frames

    frames = quick_frames(n, 11)
    tf = seed_style_transform()
    cpu = torch.device("cpu")
    paths = {
        "seed_style_pil": lambda: torch.stack([seed_style_preprocess(f, tf) for f in frames]),
        "ours_cpu": lambda: [preprocess_frames(frames[i:i + 8]) for i in range(0, n, 8)],
        "torch_path_on_cpu": lambda: [_preprocess_torch(_as_uint8_batch(frames[i:i + 8], "f"), cpu, torch.float32, 224)
                                      for i in range(0, n, 8)],
    }
    out = {}
    for name, fn in paths.items():
        fn()
    for name, fn in paths.items():  # measured after all warm-ups, one after the other
        out[f"{name}_frames_per_s"] = n / _best(fn)
    out["ours_over_seed"] = out["ours_cpu_frames_per_s"] / out["seed_style_pil_frames_per_s"]
    log(f"preprocessing: {out}")
    return out


def _bundle_pair(workdir: Path, arch: str) -> tuple[Path, Path]:
    from fetaliqa_core.bench.inputs import make_bundles

    target = workdir / f"pair-{arch}"
    if not (target / "seg" / "manifest.json").is_file():
        make_bundles(arch, target, seed=3)
    return target / "cls", target / "seg"


def bf16_skipped(log, measure: bool = True) -> dict | None:
    """Why the real architecture is not run in bf16 here, or None to run it: on a CPU whose flags
    show no bf16 matrix instructions (auto never picks bf16 there, and the real pair in bf16 runs
    for many minutes), unless bf16 is forced (``FETALIQA_PRECISION=bf16``). What is measured
    instead: one small matrix product each way (under a second), whose ratio is reported."""
    from fetaliqa_core.bench.machine import SMALL_BF16_SIDE
    from fetaliqa_core.models.device import (PRECISION_ENV, SLOW_BF16, cpu_lacks_bf16, measure_cpu_matmul,
                                             precision_preference)

    if not cpu_lacks_bf16() or precision_preference(None) == "bf16":
        return None
    why = (f"bf16 not run on the real architecture: {SLOW_BF16}; auto runs fp32 here. "
           f"Set {PRECISION_ENV}=bf16 to time it anyway.")
    if not measure:
        return {"reason": why}
    n = SMALL_BF16_SIDE
    fp32, bf16 = measure_cpu_matmul(n, n, n, rounds=1)
    why += f" (a {n}x{n} matrix product: bf16 took {fp32 / bf16:.1f}x fp32's time)"
    log(why)
    return {"reason": why, "small_matmul_side": n, "fp32_gflops": fp32, "bf16_gflops": bf16,
            "bf16_over_fp32_time": fp32 / bf16}


def precision(workdir: Path, frames: int, log) -> dict:
    """Probe, ViT-L/14 per-frame time in fp32 and bf16, pair agreement bf16 vs fp32."""
    from fetaliqa_core.bench.inputs import quick_frames
    from fetaliqa_core.bench.machine import vit_flops
    from fetaliqa_core.models.agreement import output_agreement, predict_all
    from fetaliqa_core.models.base import load_base_config
    from fetaliqa_core.models.device import cpu_precision_probe, select_device
    from fetaliqa_core.models.shared import load_shared
    from fetaliqa_core.preprocess import preprocess_frames

    probe = cpu_precision_probe()
    if probe.bf16_gflops and probe.fp32_gflops:
        log(f"bf16 probe: {probe.reason}; matrix products {probe.bf16_gflops:.0f} GFLOP/s bf16, "
            f"{probe.fp32_gflops:.0f} fp32")
    res: dict = {"probe": probe.to_dict(), "frames": frames}
    skip = bf16_skipped(log)
    if skip:
        res["bf16_skipped"] = skip
    cls_dir, seg_dir = _bundle_pair(workdir, "fetalclip")
    x = preprocess_frames(quick_frames(frames, 5))
    preds = {}
    vit = vit_flops(load_base_config("fetalclip"))  # one ViT-L/14 pass (the decoder left out)
    for prec in ("fp32",) if skip else ("fp32", "bf16"):
        log(f"precision {prec}: the real architecture (ViT-L/14) on {frames} frames")
        pair = load_shared(cls_dir, seg_dir, device=select_device("cpu", prec))
        predict_all(pair, pair, x[:1], batch=1)  # warm-up
        t0 = time.perf_counter()
        preds[prec] = predict_all(pair, pair, x, batch=2)
        res[f"pair_{prec}_s_per_frame"] = (time.perf_counter() - t0) / frames
        del pair
        # the two ViT-L/14 passes' arithmetic (2B rows), the decoder left out: what share of the
        # probe's matrix-product rate the pair reached
        rate = 2 * vit / res[f"pair_{prec}_s_per_frame"] / 1e9
        probe_rate = probe.bf16_gflops if prec == "bf16" else probe.fp32_gflops
        res[f"pair_{prec}_vit_gflops"] = rate
        log(f"precision {prec}: {res[f'pair_{prec}_s_per_frame']:.2f} s/frame (cls + seg, one encoder pass): "
            f"{rate:.0f} GFLOP/s in the two ViT passes"
            + (f", {rate / probe_rate:.0%} of the probe's matrix-product rate" if probe_rate else ""))
    res["teacher_full_case_fp32_s_estimate"] = FRAMES_PER_CASE * res["pair_fp32_s_per_frame"]
    if skip:
        return res
    p32, l32 = preds["fp32"]
    p16, l16 = preds["bf16"]
    agree = output_agreement(p32, l32, p16, l16)
    res["bf16_vs_fp32"] = agree
    res["bf16_speedup"] = res["pair_fp32_s_per_frame"] / res["pair_bf16_s_per_frame"]
    res["teacher_full_case_bf16_s_estimate"] = FRAMES_PER_CASE * res["pair_bf16_s_per_frame"]
    return res


_RSS_CHILD = r"""
import json, sys
import numpy as np, torch
from fetaliqa_core.bench.machine import max_rss_bytes
from fetaliqa_core.models.shared import load_shared
from fetaliqa_core.models.device import select_device
from fetaliqa_core.preprocess import preprocess_frames
pair = load_shared(sys.argv[1], sys.argv[2], device=select_device("cpu", sys.argv[3]))
# a full-size case held in memory (840 x 562 x 744, every page touched: the worst case; the app
# memory-maps it) and two batches of the engine's size scored from it
case = np.random.default_rng(0).integers(0, 256, size=(840, 562, 744), dtype=np.uint8)
b = max(1, pair.batch_size)
for start in (0, b):
    pair.predict_labels(preprocess_frames(case[start:start + b]))
print(json.dumps({"peak_rss_bytes": max_rss_bytes(), "batch": b, "encoder_passes": pair.model.encoder_passes}))
"""

def shared_rss(workdir: Path, log) -> dict:
    """Peak RSS of the real pair on one base, in fp32 and (where it is run) bf16, and ``auto``: the
    number format ``--precision auto`` runs here, which the target is judged in (without the
    precision section the report held no probe, and the target line looked up bf16 on a CPU that
    skips it: "not measured" beside an fp32 figure measured a minute before)."""
    from fetaliqa_core.models.device import cpu_precision_probe

    cls_dir, seg_dir = _bundle_pair(workdir, "fetalclip")
    out: dict = {"auto": "bf16" if cpu_precision_probe().use_bf16 else "fp32"}
    skip = bf16_skipped(log, measure=False)
    if skip:
        out["bf16"] = {"skipped": skip["reason"]}
        log(f"peak RSS in bf16 skipped: {skip['reason']}")
    for prec in ("fp32",) if skip else ("fp32", "bf16"):
        log(f"classifier + segmenter on one ViT-L/14 base, {prec}: a child process holding a full-size case")
        r = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(cls_dir), str(seg_dir), prec], capture_output=True,
                           text=True, timeout=1800, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        if r.returncode != 0:
            out[prec] = {"error": r.stderr.strip().splitlines()[-1:]}
            continue
        data = json.loads(r.stdout.strip().splitlines()[-1])
        out[prec] = {"peak_rss_gb": data["peak_rss_bytes"] / 1024 ** 3, "batch": data["batch"],
                     "encoder_passes_for_two_batches": data["encoder_passes"]}
        log(f"classifier + segmenter on one ViT-L/14 base, {prec}: peak RSS {out[prec]['peak_rss_gb']:.2f} GB")
    return out


def _synthetic_cases(workdir: Path, n: int, per_sweep: int, seed: int) -> list[Path]:
    from fetaliqa_core.synth import write_dataset

    target = workdir / f"heldout-{n}-{per_sweep}-{seed}"
    if not target.is_dir():
        write_dataset(target, cases=n, seed=seed, frames_per_sweep=per_sweep, compress=False)
    return sorted((target / "images" / "stacked_fetal_ultrasound").glob("*.mha"))


def _assess(sweep, results, thresholds):
    from fetaliqa_core.analysis.assessment import assess

    return assess(sweep, results, thresholds)


def _runs(flags: np.ndarray, frame: int) -> tuple[int, int] | None:
    """The run of consecutive flagged frames holding ``frame``."""
    if frame < 0 or not flags[frame]:
        return None
    a = frame
    while a > 0 and flags[a - 1]:
        a -= 1
    b = frame
    while b + 1 < len(flags) and flags[b + 1]:
        b += 1
    return a, b


def chosen_runs(assessment) -> dict[str, tuple[int, int] | None]:
    """The teacher's runs ``(first, last)`` holding its chosen frame, by the two notions of a run
    the product has: ``"choice"``, the frame choice's run it took the frame from
    (:class:`~fetaliqa_core.analysis.frame_choice.Choice`: frames every model calls with a
    plausible mask, or those with a plausible mask when the models disagree everywhere), and
    ``"candidates"``, the run of candidate frames as a cascade's student sends them to the teacher
    (combined score over the threshold: ``FrameFlags.near_candidates``). None where there is no
    such run (or no chosen frame)."""
    frame = assessment.summary.chosen_frame
    out: dict[str, tuple[int, int] | None] = {"choice": None, "candidates": None}
    if frame < 0:
        return out
    choice = getattr(assessment, "choice", None)
    for runs in (choice.runs if choice is not None else []):
        for a, b, _ in runs:
            if a <= frame < b:
                out["choice"] = (int(a), int(b) - 1)
    out["candidates"] = _runs(assessment.flags.near_candidates, frame)
    return out


def _inside(frame: int, run: tuple[int, int] | None) -> bool:
    return run is not None and run[0] <= frame <= run[1]


def student_vs_teacher(workdir: Path, student_dir: Path | None, cases: int, per_sweep: int, log) -> dict:
    """Demo teacher (classifier + segmenter, shared base) vs the student, and the cascade, per case."""
    from fetaliqa_core import io as fio
    from fetaliqa_core.analysis.assessment import Thresholds
    from fetaliqa_core.cascade import CascadeEngine
    from fetaliqa_core.engine import ScoringEngine
    from fetaliqa_core.models.choice import ModelChoice, load_models

    teacher = load_models(ModelChoice(model="demo", device="cpu"))
    student = load_models(ModelChoice(model=None, cls=student_dir, seg=student_dir, device="cpu")) \
        if student_dir else load_models(ModelChoice(model="demo-student", device="cpu"))
    thr = Thresholds.of_models(teacher)
    rows = []
    for path in _synthetic_cases(workdir, cases, per_sweep, seed=77):
        sweep = fio.load_sweep(path)
        t0 = time.perf_counter()
        tr = ScoringEngine(sweep, teacher.cls, teacher.seg, cache=False).run()
        t_teacher = time.perf_counter() - t0
        t0 = time.perf_counter()
        sr = ScoringEngine(sweep, student.cls, student.seg, cache=False).run()
        t_student = time.perf_counter() - t0
        t0 = time.perf_counter()
        casc = CascadeEngine(sweep, student.cls, teacher.cls, teacher.seg, cache=False, thresholds=thr).run()
        t_cascade = time.perf_counter() - t0
        ta, sa = _assess(sweep, tr, thr), _assess(sweep, sr, thr)
        ca = _assess(sweep, casc.teacher_results, thr)
        tc, sc, cc = ta.summary.chosen_frame, sa.summary.chosen_frame, ca.summary.chosen_frame
        runs = chosen_runs(ta)
        rows.append({
            "case": path.stem, "frames": sweep.n_frames, "teacher_chosen": tc, "student_chosen": sc, "cascade_chosen": cc,
            "student_same_or_in_run": bool(sc == tc or any(_inside(sc, r) for r in runs.values())),
            "student_in_choice_run": bool(sc == tc or _inside(sc, runs["choice"])),
            "student_in_candidate_run": bool(sc == tc or _inside(sc, runs["candidates"])),
            "cascade_same": bool(cc == tc), "flags_equal": float((ta.flags.candidates == sa.flags.candidates).mean()),
            "teacher_s": t_teacher, "student_s": t_student, "cascade_s": t_cascade,
            "teacher_frames_in_cascade": int(casc.confirmed.sum())})
        log(f"held-out {path.stem}: {rows[-1]}")
    n = len(rows)
    return {"cases": rows, "n_cases": n,
            "flags_equal_mean": float(np.mean([r["flags_equal"] for r in rows])),
            "student_chosen_same_or_in_run": sum(r["student_same_or_in_run"] for r in rows) / n,
            "student_chosen_in_choice_run": sum(r["student_in_choice_run"] for r in rows) / n,
            "student_chosen_in_candidate_run": sum(r["student_in_candidate_run"] for r in rows) / n,
            "cascade_chosen_same": sum(r["cascade_same"] for r in rows) / n,
            "cascade_over_teacher_time": sum(r["cascade_s"] for r in rows) / sum(r["teacher_s"] for r in rows),
            "student_over_teacher_time": sum(r["student_s"] for r in rows) / sum(r["teacher_s"] for r in rows),
            "teacher_frame_share_in_cascade": sum(r["teacher_frames_in_cascade"] for r in rows)
            / sum(r["frames"] for r in rows)}


def cascade_with_real_teacher(precision_: dict | None, student: dict | None, heldout: dict) -> dict | None:
    """The cascade's time against the teacher's with the real architecture as teacher, from this
    run's own measurements: the student's full-case time, the real pair's time per frame (bf16
    where the probe chose it) and the share of frames the cascade sent to the teacher on the
    held-out cases. Agreement is measured with the demo teacher (the only one with a student)."""
    if not precision_ or not student or not heldout.get("n_cases"):
        return None
    per_frame = min(precision_.get("pair_bf16_s_per_frame", float("inf")),
                    precision_.get("pair_fp32_s_per_frame", float("inf")))
    student_s = student.get("auto_s")
    if not np.isfinite(per_frame) or student_s is None:
        return None
    share = heldout["teacher_frame_share_in_cascade"]
    teacher_s = FRAMES_PER_CASE * per_frame
    cascade_s = student_s + share * teacher_s
    return {"teacher_full_case_s": teacher_s, "cascade_full_case_s": cascade_s,
            "cascade_over_teacher_time": cascade_s / teacher_s, "teacher_frame_share": share,
            "how": "student full-case time + share of frames re-scored x real pair s/frame, over 840 x that"}


def student_full_case(workdir: Path, student_dir: Path | None, log) -> dict:
    """840 frames (6 x 140, 562 x 744) through the engine with the student: cls + seg, preprocessing included."""
    from fetaliqa_core import io as fio
    from fetaliqa_core.engine import ScoringEngine
    from fetaliqa_core.models.choice import ModelChoice, load_models

    path = _synthetic_cases(workdir, 1, 140, seed=91)[0]
    sweep = fio.load_sweep(path)
    out = {}
    for prec in ("auto",):  # what a user gets (the CPU probe decides)
        m = load_models(ModelChoice(model=None, cls=student_dir, seg=student_dir, device="cpu", precision=prec)) \
            if student_dir else load_models(ModelChoice(model="demo-student", device="cpu", precision=prec))
        t0 = time.perf_counter()
        r = ScoringEngine(sweep, m.cls, m.seg, cache=False).run()
        out[f"{prec}_s"] = time.perf_counter() - t0
        out["frames"] = r.n_done
        out["device"] = m.describe()
        log(f"student full case ({r.n_done} frames, cls + seg) {prec}: {out[f'{prec}_s']:.1f} s")
    return out


def run_speed_bench(student_dir: Path | None = None, real_frames: int = 4, heldout_cases: int = 10,
                    heldout_per_sweep: int = 24, workdir: Path | None = None, log=lambda s: None,
                    sections: tuple[str, ...] = ("preprocess", "precision", "rss", "student", "heldout")) -> dict:
    from fetaliqa_core.bench.machine import machine_info

    owned = None
    if workdir is None:
        owned = tempfile.TemporaryDirectory(prefix="fetaliqa-speed-")
        workdir = Path(owned.name)
    report: dict = {"machine": machine_info(torch.device("cpu")), "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    try:
        if "preprocess" in sections:
            report["preprocessing"] = preprocessing(64, log)
        if "precision" in sections:
            report["precision"] = precision(workdir, real_frames, log)
        if "rss" in sections:
            report["shared_base_rss"] = shared_rss(workdir, log)
        if "student" in sections:
            report["student_full_case"] = student_full_case(workdir, student_dir, log)
        if "heldout" in sections:
            report["heldout"] = student_vs_teacher(workdir, student_dir, heldout_cases, heldout_per_sweep, log)
            projected = cascade_with_real_teacher(report.get("precision"), report.get("student_full_case"),
                                                  report["heldout"])
            if projected:
                report["heldout"]["cascade_real_teacher"] = projected
                log(f"cascade with the real-architecture teacher (from this run's timings): "
                    f"{projected['cascade_over_teacher_time']:.1%} of the teacher's full-case time")
    finally:
        report["seconds"] = time.perf_counter() - t0
        report["load_average_end"] = list(os.getloadavg())
        if owned is not None:
            owned.cleanup()
    return report


def _rss_precision(pre: dict, rss: dict) -> str:
    """The number format the peak-RSS target is judged in: what auto runs on this CPU (the
    precision section's probe, else what the rss section recorded), else the one format measured
    (a report written before ``auto`` was recorded), else bf16."""
    probe = pre.get("probe") or {}
    if "use_bf16" in probe:
        return "bf16" if probe["use_bf16"] else "fp32"
    if rss.get("auto") in ("bf16", "fp32"):
        return rss["auto"]
    measured = [p for p in ("bf16", "fp32") if (rss.get(p) or {}).get("peak_rss_gb") is not None]
    return measured[0] if len(measured) == 1 else "bf16"


def target_lines(report: dict) -> list[str]:
    """One line per target of the CPU speed work, met or not, from one report's own figures."""
    out = []

    def line(what: str, value, target: str, met) -> None:
        shown = "n/a" if value is None else value
        out.append(f"{what}: {shown} (target {target}): {'met' if met else 'not met' if met is not None else 'not measured'}")

    stu = report.get("student_full_case") or {}
    s = stu.get("auto_s")
    line("student full case (840 frames, cls + seg)", None if s is None else f"{s:.1f} s", "<= 30 s",
         None if s is None else s <= 30)
    pre = report.get("precision") or {}
    t = pre.get("teacher_full_case_bf16_s_estimate")
    skipped = " (bf16 skipped: no bf16 matrix instructions)" if pre.get("bf16_skipped") else ""
    line(f"teacher (real architecture) full case, bf16, extrapolated{skipped}",
         None if t is None else f"{t / 60:.1f} min", "<= 4 min", None if t is None else t <= 240)
    rss_all = report.get("shared_base_rss") or {}
    prec = _rss_precision(pre, rss_all)
    rss = (rss_all.get(prec) or {}).get("peak_rss_gb")
    line(f"peak RSS, real pair on one base ({prec}), full-size case in memory", None if rss is None else f"{rss:.2f} GB",
         "< 3 GB", None if rss is None else rss < 3.0)
    h = report.get("heldout") or {}
    if h.get("n_cases"):
        line(f"student vs teacher flags equal ({h['n_cases']} held-out cases)", f"{h['flags_equal_mean']:.1%}",
             ">= 95 %", h["flags_equal_mean"] >= 0.95)
        line("student's chosen frame = teacher's or in the same run (the frame choice's or the candidates' run; "
             f"{h.get('student_chosen_in_choice_run', float('nan')):.0%} and "
             f"{h.get('student_chosen_in_candidate_run', float('nan')):.0%} by each alone)",
             f"{h['student_chosen_same_or_in_run']:.0%}",
             ">= 90 % of cases", h["student_chosen_same_or_in_run"] >= 0.90)
        line("cascade's chosen frame = teacher's", f"{h['cascade_chosen_same']:.0%}", ">= 95 % of cases",
             h["cascade_chosen_same"] >= 0.95)
        real = h.get("cascade_real_teacher")
        if real:
            line("cascade time / teacher time (real-architecture teacher)", f"{real['cascade_over_teacher_time']:.1%}",
                 "<= 15 %", real["cascade_over_teacher_time"] <= 0.15)
        else:
            # the target is the real teacher's: the demo teacher costs about what the student does, and
            # on short sweeps the per-sweep minimum of re-scored frames is most of them
            share = h.get("teacher_frame_share_in_cascade")
            out.append(f"cascade time / teacher time (demo teacher): {h.get('cascade_over_teacher_time', float('nan')):.1%}"
                       + (f", the teacher re-scoring {share:.1%} of the frames" if share is not None else "")
                       + " (the 15 % target is the real-architecture teacher's: not measured in this run)")
    return out
