"""One benchmark run: set-up, the product's path, FLOPs and the ceiling, the registered display probes,
the seed-style path."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from fetaliqa_core.bench.inputs import have_simpleitk, prepare_inputs_in_child
from fetaliqa_core.bench.machine import (SMALL_BF16_SIDE, MemoryWatch, count_flops, dtype_name, free_memory,
                                         machine_info, max_rss_bytes, measure_matmul, merge_matmul, vit_flops)
from fetaliqa_core.bench.ours import (MatmulProbe, agreement, preprocess_one, run_engine, run_ours_components,
                                      run_reopen)
from fetaliqa_core.bench.report import evaluate_targets, standard_notes
from fetaliqa_core.bench.seed_style import SeedStyleSegmenter, run_seed_style
from fetaliqa_core.bench.settings import ACOUSLIC_SHAPE, BenchProbeInput, BenchReport, BenchSettings, resolve
from fetaliqa_core.files import json_safe
from fetaliqa_core.plugins import BENCH_PROBES, registered


def run_bench(settings: BenchSettings, log: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Run everything :class:`BenchSettings` asks for and return the report."""
    from fetaliqa_core.models.base import load_base_config
    from fetaliqa_core.models.bundle import load_bundle
    from fetaliqa_core.models.device import DeviceChoice, select_device

    choice = select_device(settings.device)
    device = choice.device
    settings = resolve(settings, device.type)
    batch = settings.batch_size or choice.batch_size
    config = load_base_config(settings.arch)
    report = BenchReport(settings={**json_safe(asdict(settings)), "device_resolved": str(device),
                                   "dtype": dtype_name(choice.dtype), "batch_size": batch},
                         machine=machine_info(device))
    watch = MemoryWatch(device)
    owned_tmp = None
    if settings.workdir is None:
        owned_tmp = tempfile.TemporaryDirectory(prefix="fetaliqa-bench-")
        workdir = Path(owned_tmp.name)
    else:
        workdir = Path(settings.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        # ---------------------------------------------------------------- set-up
        with watch.phase("setup"):
            log(f"set-up: synthetic case of {settings.case_frames} frames {ACOUSLIC_SHAPE[0]}x{ACOUSLIC_SHAPE[1]}, "
                f"bundles for {settings.arch}")
            t0 = time.perf_counter()
            case_path, cls_dir, seg_dir = prepare_inputs_in_child(settings.case_frames, settings.arch,
                                                                  settings.seed, workdir)
            report.notes.append(f"set-up (synthesis, file, bundles; in a child process so that its memory "
                                f"does not count) took {time.perf_counter() - t0:.1f} s")
            if not have_simpleitk():
                report.notes.append("SimpleITK is not installed here: the case file was written and read by "
                                    "FetalIQA's own MetaImage code, and the seed-style path copies the whole volume "
                                    "instead of SimpleITK reading it")
        free_memory(device)

        # ---------------------------------------------------------------- ours
        with watch.phase("ours-load"):
            t0 = time.perf_counter()
            cls_lm = load_bundle(cls_dir, device=choice)
            seg_lm = load_bundle(seg_dir, device=choice)
            load_s = time.perf_counter() - t0
        log(f"ours: bundles loaded in {load_s:.1f} s; case file opened by the engine")
        # the matrix-product rate is taken just before and just after the scoring, so that a busy
        # spell of other processes on a shared computer weighs on both alike (outside the memory
        # phases: its matrices are not the product's memory)
        log(f"matrix-product rate ({dtype_name(choice.dtype)}, before scoring)")
        mm_before = measure_matmul(device, choice.dtype, n=settings.matmul_size)
        with watch.phase("ours-score"):
            cold = None
            if device.type == "cuda":
                # the first pass in a fresh process pays for kernel selection and compilation per
                # batch shape; timed apart, the case is then opened again (a new cache, no hit)
                log("  first (cold) pass over the case")
                cold = run_engine(case_path, cls_lm, seg_lm, batch, workdir / "results-cache-cold",
                                  stop_after=None if settings.frames >= settings.case_frames else settings.frames)
                cold.pop("_sweep")
                cold.pop("_results")
            cache_root = workdir / "results-cache"
            engine = run_engine(case_path, cls_lm, seg_lm, batch, cache_root,
                                stop_after=None if settings.frames >= settings.case_frames else settings.frames)
            sweep = engine.pop("_sweep")
            engine.pop("_results")
            # a shared CPU: pair each batch with the matmul rate of that moment (a GPU here is not
            # shared, and the probe's matrices would count as the product's GPU memory)
            probe = MatmulProbe(device, choice.dtype, settings.matmul_size) if device.type == "cpu" else None
            components = run_ours_components(sweep, settings.frames, cls_lm, seg_lm, batch, log, probe)
            del probe
            log("  first result with batch 1")
            first_b1 = run_engine(case_path, cls_lm, seg_lm, 1, workdir / "results-cache-b1", stop_after=1)
            log("  reopening the cached sweep")
            reopen = run_reopen(case_path, cls_lm, seg_lm, batch, cache_root)
        log(f"matrix-product rate ({dtype_name(choice.dtype)}, after scoring)")
        mm_after = measure_matmul(device, choice.dtype, n=settings.matmul_size)
        ours = dict(components)
        ours.update(model_load_s=load_s, open_s=engine["open_s"], open_to_first_s=engine["open_to_first_s"],
                    first_batch_frames=engine["first_batch_frames"], engine_frames_done=engine["frames_done"],
                    engine_seconds=engine["engine_seconds"],
                    open_to_first_batch1_s=first_b1["open_to_first_s"],
                    cold_open_to_first_s=None if cold is None else cold["open_to_first_s"],
                    cold_open_to_done_s=None if cold is None else cold["open_to_done_s"])
        done = engine["open_to_done_s"]
        if engine["complete"]:
            ours.update(open_to_done_s=done, open_to_complete_s=done, complete_estimated=False)
        else:
            # scale the scoring part (after the first batch) to the whole case
            first, n_first = engine["open_to_first_s"], engine["first_batch_frames"]
            rest = max(engine["frames_done"] - n_first, 1)
            est = first + (done - first) * (settings.case_frames - n_first) / rest
            ours.update(open_to_done_s=done, open_to_complete_s=est, complete_estimated=True)
        report.reopen = reopen

        # ---------------------------------------------------------------- FLOPs and the ceiling
        log("FLOPs per frame and the matrix-product rate")
        x1 = preprocess_one(sweep, device, choice.dtype)
        cls_flops = count_flops(cls_lm.model, x1)
        seg_flops = count_flops(seg_lm.model, x1)
        analytic = vit_flops(config)
        report.flops = {"method": "torch.utils.flop_counter.FlopCounterMode on one frame through the loaded "
                                  "(merged) models, with formulas added for the fused attention kernels",
                        "cls": cls_flops["total"], "seg": seg_flops["total"], "cls_by_op": cls_flops["by_op"],
                        "seg_by_op": seg_flops["by_op"], "vit_analytic": analytic,
                        "vit_reference_fetalclip": 162.03e9}
        mm = merge_matmul(mm_before, mm_after)
        rate = mm["median_flops"]
        ceiling = {"matmul": {k: v for k, v in mm.items() if k != "times_s"}, "rate_flops": rate,
                   "cls_fps": rate / cls_flops["total"], "seg_fps": rate / seg_flops["total"],
                   "cls_seg_fps": rate / (cls_flops["total"] + seg_flops["total"])}
        for task in ("cls", "seg"):
            # median batch vs median matmul, and best batch vs best matmul (least disturbed by others)
            limit = report.flops[task] / rate
            measured = ours[f"{task}_s_per_frame_median"]
            ceiling[f"{task}_limit_s_per_frame"] = limit
            ceiling[f"{task}_measured_s_per_frame"] = measured
            ceiling[f"{task}_over_limit"] = measured / limit - 1.0
            ceiling[f"{task}_fraction_of_ceiling"] = limit / measured
            limit_best = report.flops[task] / mm["best_flops"]
            ceiling[f"{task}_limit_s_per_frame_best"] = limit_best
            ceiling[f"{task}_measured_s_per_frame_best"] = ours[f"{task}_s_per_frame_best"]
            ceiling[f"{task}_over_limit_best"] = ours[f"{task}_s_per_frame_best"] / limit_best - 1.0
            # each batch against the matrix-product rate measured right before it
            paired = [t / (report.flops[task] / r) - 1.0
                      for t, r in zip(ours["batch_s_per_frame"][task], ours["batch_matmul_flops"][task])]
            ceiling[f"{task}_over_limit_paired"] = paired
            ceiling[f"{task}_over_limit_paired_median"] = statistics.median(paired) if paired else None
        ceiling["case_limit_s"] = settings.case_frames / ceiling["cls_seg_fps"]
        if device.type == "cpu" and choice.dtype != torch.bfloat16:
            ceiling["cpu_bf16_matmul"] = cpu_bf16_comparison(device, settings.matmul_size or mm["n"], log)
        report.ceiling = ceiling
        free_memory(device)

        # ---------------------------------------------------------------- GUI
        if not settings.skip_gui:
            with watch.phase("gui"):
                report.gui = run_display_probes(BenchProbeInput(
                    case_path=case_path, sweep=sweep, cls_lm=cls_lm, seg_lm=seg_lm, cls_dir=cls_dir, seg_dir=seg_dir,
                    home=workdir / "app-home", steps=settings.gui_frames,
                    engine_batch=1 if device.type == "cpu" else batch, log=log))
        del cls_lm, seg_lm, sweep
        free_memory(device)

        # ---------------------------------------------------------------- seed-style
        if not settings.skip_seed:
            with watch.phase("seed"):
                seed_choice = DeviceChoice(device=device, dtype=torch.float32, batch_size=settings.seed_batch)
                log("seed-style: loading the same bundles without merging LoRA")
                cls_seed = load_bundle(cls_dir, device=seed_choice, merge=False)
                seg_seed = load_bundle(seg_dir, device=seed_choice, merge=False)
                seg_model = seg_seed.model
                if hasattr(seg_model.seg, "use_channels_last"):
                    seg_model.seg.use_channels_last(False)  # the reference ran NCHW
                seg_net = SeedStyleSegmenter(seg_model).eval()
                seed = run_seed_style(case_path, settings.frames, settings.case_frames, cls_seed.model, seg_net,
                                      device, settings.seed_batch, log)
                seg_net.remove_hooks()
                del cls_seed, seg_seed, seg_model, seg_net
            report.agreement = agreement(seed, ours)
            report.seed = {k: v for k, v in seed.items() if not k.startswith("_")}
            free_memory(device)
        report.ours = {k: v for k, v in ours.items() if not k.startswith("_")}
    finally:
        watch.close()
        if owned_tmp is not None:
            owned_tmp.cleanup()

    ours_phases = [watch.phases[k] for k in ("ours-load", "ours-score") if k in watch.phases]
    report.memory = {"phases": watch.phases, "process_peak_rss_bytes": max_rss_bytes(),
                     "ours_peak_rss_bytes": max((p["rss_peak_bytes"] for p in ours_phases), default=None),
                     "ours_models_rss_bytes": watch.phases.get("ours-load", {}).get("rss_end_bytes"),
                     "ours_peak_gpu_bytes": max((p.get("gpu_peak_bytes", 0) for p in ours_phases), default=None)
                     if device.type == "cuda" else None,
                     "seed_peak_rss_bytes": watch.phases.get("seed", {}).get("rss_peak_bytes"),
                     "seed_peak_gpu_bytes": watch.phases.get("seed", {}).get("gpu_peak_bytes")}
    report.machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report.targets = evaluate_targets(report)
    report.notes.extend(standard_notes(report))
    return report


def cpu_bf16_comparison(device: torch.device, n: int, log: Callable[[str], None]) -> dict:
    """bf16's matrix-product rate beside the product's fp32 one, for comparison (auto chose
    fp32 here: models.device). Where the CPU's flags show no bf16 matrix instructions, bf16 is
    timed only at :data:`SMALL_BF16_SIDE` beside fp32 at the same size (the large product takes
    minutes there), and the entry says so (``skipped_large``)."""
    from fetaliqa_core.models.device import SLOW_BF16, cpu_lacks_bf16, measure_cpu_matmul

    if not cpu_lacks_bf16():
        log(f"bf16 matrix-product rate {n}x{n}, for comparison")
        bf16 = measure_matmul(device, torch.bfloat16, n=n)
        return {k: v for k, v in bf16.items() if k != "times_s"}
    side = min(n, SMALL_BF16_SIDE)
    log(f"bf16 matrix product for comparison: {side}x{side} only ({SLOW_BF16})")
    fp32, bf16 = measure_cpu_matmul(side, side, side, rounds=1)
    return {"n": side, "dtype": "bf16", "reps": 3, "median_flops": bf16 * 1e9, "best_flops": bf16 * 1e9,
            "fp32_flops_same_size": fp32 * 1e9, "bf16_over_fp32_time": fp32 / bf16,
            "skipped_large": f"not timed at {n}x{n}: {SLOW_BF16} (one such product takes minutes)"}


def run_display_probes(inp: BenchProbeInput) -> dict:
    """The figures of every registered display probe, merged (the app registers the frame
    display's); a probe that cannot be imported is reported as skipped, with the reason."""
    probes = registered(BENCH_PROBES)
    if not probes:
        return {"skipped": f"no display probe is registered (entry point group {BENCH_PROBES}); "
                           "install the app to time the frame display"}
    out: dict = {}
    for name, ep in probes.items():
        try:
            probe = ep.load()
        except ImportError as exc:
            out[name] = {"skipped": f"display probe {name!r} cannot be imported ({exc})"}
            continue
        out.update(probe(inp))
    return out
