"""The benchmark's targets and its report as text and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fetaliqa_core.bench.settings import (ACOUSLIC_CASE_FRAMES, ACOUSLIC_SHAPE, GB, TARGET_CPU_FIRST_S,
                                          TARGET_CPU_LIMIT_MARGIN, TARGET_DISPLAY_P95_MS, TARGET_GPU_CASE_S,
                                          TARGET_GPU_SPEEDUP, TARGET_RSS_BYTES, BenchReport)
from fetaliqa_core.errors import FetalIQAError
from fetaliqa_core import files


def _target(name: str, measured: float | None, limit: float, unit: str, applies: bool, met: bool | None,
            note: str = "") -> dict:
    return {"target": name, "measured": measured, "limit": limit, "unit": unit,
            "status": "n/a" if not applies else ("not measured" if met is None else ("met" if met else "NOT met")),
            "note": note}


def evaluate_targets(r: BenchReport) -> list[dict]:
    """The issue's targets, each with what this run measured and whether it is met (``n/a`` when
    this run's device or architecture is not the one the target is about)."""
    dev = r.settings["device_resolved"].split(":")[0]
    arch = r.settings["arch"]
    full = r.settings["case_frames"] >= ACOUSLIC_CASE_FRAMES
    o, s = r.ours, r.seed or {}
    gpu = dev == "cuda" and arch == "fetalclip"
    cpu_real = dev == "cpu" and arch == "fetalclip"
    out = []
    case_s = o.get("open_to_complete_s") if not o.get("complete_estimated") else None
    out.append(_target("GPU: full case open -> complete cls+seg", case_s, TARGET_GPU_CASE_S, "s", gpu and full,
                       None if case_s is None else case_s <= TARGET_GPU_CASE_S))
    speedup = (s["open_to_complete_s"] / o["open_to_complete_s"]) if s.get("open_to_complete_s") and \
        o.get("open_to_complete_s") else None
    out.append(_target("GPU: full case >= 10x faster than seed-style", speedup, TARGET_GPU_SPEEDUP, "x", gpu and full,
                       None if speedup is None else speedup >= TARGET_GPU_SPEEDUP))
    c = r.ceiling
    for task, label in (("cls", "classifier"), ("seg", "segmenter")):
        over = c.get(f"{task}_over_limit_paired_median")
        if over is None:
            over = c.get(f"{task}_over_limit")
        median = c.get(f"{task}_over_limit")
        out.append(_target(f"CPU real arch: {label} within 10 % of matmul-bound time per frame",
                           None if over is None else 100.0 * over, 100.0 * TARGET_CPU_LIMIT_MARGIN,
                           "% over limit", cpu_real, None if over is None else over <= TARGET_CPU_LIMIT_MARGIN,
                           f"each batch vs the matmul rate measured just before it, median of "
                           f"{len(c.get(f'{task}_over_limit_paired') or [])} batches" +
                           ("" if median is None else f"; median vs median: {100.0 * median:+.0f} %")))
    first = o.get("open_to_first_s")
    out.append(_target(f"CPU real arch: first result <= {TARGET_CPU_FIRST_S:g} s after opening", first,
                       TARGET_CPU_FIRST_S, "s", cpu_real, None if first is None else first <= TARGET_CPU_FIRST_S,
                       f"engine batch {o.get('first_batch_frames')}; with batch 1: "
                       f"{_fmt(o.get('open_to_first_batch1_s'), 's')}"))
    rss = r.memory.get("ours_peak_rss_bytes")
    out.append(_target("CPU real arch: peak RSS < 3 GB for a full-size case", None if rss is None else rss / GB,
                       TARGET_RSS_BYTES / GB, "GB", cpu_real and full,
                       None if rss is None else rss < TARGET_RSS_BYTES))
    gui = r.gui or {}
    window, view = gui.get("window") or {}, gui.get("frame_view") or {}
    if window.get("p95_ms") is not None:
        p95, note = window["p95_ms"], (f"whole main window, scoring {'running' if window.get('scoring_running') else 'ENDED'}"
                                       f" at the end; frame view alone: "
                                       f"{_fmt((view.get('engine_running') or {}).get('p95_ms'), 'ms')}")
    else:
        p95, note = (view.get("engine_running") or {}).get("p95_ms"), "frame view widget alone"
    out.append(_target("frame display p95 while the engine runs", p95, TARGET_DISPLAY_P95_MS, "ms", True,
                       None if p95 is None else p95 <= TARGET_DISPLAY_P95_MS, note))
    return out


def standard_notes(r: BenchReport) -> list[str]:
    notes = []
    dev = r.settings["device_resolved"].split(":")[0]
    check = (r.seed or {}).get("cpu_bf16_autocast")
    if dev == "cpu" and check:
        notes.append(f"seed-style on the CPU runs fp32 without autocast: bf16 autocast of its classifier took "
                     f"{check['bf16_over_fp32']:.1f}x the fp32 time here ({check['frames']} frame; about 6x "
                     f"on a CPU without bf16 matrix instructions)")
    if r.ours.get("complete_estimated"):
        notes.append(f"the engine scored {r.ours.get('engine_frames_done')} of {r.settings['case_frames']} frames; "
                     "'complete case' times are extrapolated from the per-frame rate (marked est.)")
    if r.settings["arch"] == "fetalclip" and dev == "cpu":
        notes.append(f"real architecture on the CPU timed on {r.settings['frames']} frames "
                     f"(~1.4 s per frame per encoder pass); the case file has {r.settings['case_frames']} frames")
    return notes


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if unit == "GB":
        return f"{value:.2f} GB"
    a = abs(value)
    text = f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 0.1 else f"{value:.3f}"
    return f"{text} {unit}".strip()


def format_report(r: BenchReport) -> str:
    """The human-readable table printed by ``fetaliqa bench``."""
    st, m = r.settings, r.machine
    lines = []
    dev = st["device_resolved"]
    where = m.get("gpu") or f"{m.get('cpu_model')} ({m.get('cpu_count')} cores, {m.get('cpu_capability')})"
    mem = m.get("memory_bytes")
    lines.append(f"FetalIQA benchmark: arch {st['arch']}, device {dev} ({st['dtype']}), batch {st['batch_size']} "
                 f"(seed-style {st['seed_batch']})")
    lines.append(f"machine: {where}; {mem / 2**30:.1f} GiB RAM; torch {m.get('torch')}; "
                 f"load avg {_load(m.get('load_average_start'))} at start, {_load(m.get('load_average_end'))} at end"
                 if mem else f"machine: {where}; torch {m.get('torch')}")
    lines.append(f"frames: {st['frames']} timed per path, case file {st['case_frames']} frames of "
                 f"{ACOUSLIC_SHAPE[0]}x{ACOUSLIC_SHAPE[1]} uint8 (uncompressed .mha)")
    lines.append("")
    head = f"{'':44s}{'seed-style':>12s}{'ours':>12s}{'ours vs seed':>14s}"
    lines.append(head)
    lines.append("-" * len(head))
    for row in r.comparison_rows():
        factor = "-" if row["ours_vs_seed"] is None else f"{row['ours_vs_seed']:.2f}x"
        lines.append(f"{row['metric'] + ' (' + row['unit'] + ')':44s}{_fmt(row['seed']):>12s}"
                     f"{_fmt(row['ours']):>12s}{factor:>14s}")
    mem_ = r.memory
    lines.append(f"{'peak RSS (GB)':44s}{_fmt(_gb(mem_.get('seed_peak_rss_bytes'))):>12s}"
                 f"{_fmt(_gb(mem_.get('ours_peak_rss_bytes'))):>12s}")
    ph = mem_.get("phases", {})
    lines.append(f"  (RSS per phase, start -> peak GB: " + ", ".join(
        f"{k} {_gb(v['rss_start_bytes']):.2f} -> {_gb(v['rss_peak_bytes']):.2f}" for k, v in ph.items()) +
        "; phases run in this order in one process, so a later phase starts with what earlier ones left)")
    if mem_.get("ours_peak_gpu_bytes") is not None:
        lines.append(f"{'peak GPU memory allocated (GB)':44s}{_fmt(_gb(mem_.get('seed_peak_gpu_bytes'))):>12s}"
                     f"{_fmt(_gb(mem_.get('ours_peak_gpu_bytes'))):>12s}")
    lines.append("(ours vs seed: frames/s ours/seed, times seed/ours; > 1 means ours is faster)")
    o = r.ours
    if o.get("cold_open_to_done_s") is not None:
        lines.append(f"ours, first pass in this process (cold: kernel selection per batch shape): first result "
                     f"{_fmt(o.get('cold_open_to_first_s'), 's')}, done {_fmt(o.get('cold_open_to_done_s'), 's')}; "
                     "the table shows the second pass")
    lines.append(f"ours: bundles loaded in {_fmt(o.get('model_load_s'), 's')}; file opened in {_fmt(o.get('open_s'), 's')}; "
                 f"first result after {o.get('first_batch_frames')} frames; with engine batch 1: "
                 f"{_fmt(o.get('open_to_first_batch1_s'), 's')}")
    spent = o.get("engine_seconds")
    if spent:
        names = {"cache_key": "identifying the sweep for the cache", "wait_prepare": "waiting for prepared batches",
                 "infer": "models", "results": "model output to results", "caller": "the caller between batches",
                 "cache_save": "writing the cache"}
        lines.append("ours, where the engine's time went (the table's pass): " + "; ".join(
            f"{names.get(k, k)} {_fmt(v, 's')}" for k, v in spent.items()))
    rp = r.reopen
    if rp:
        lines.append(f"reopening the cached sweep: {_fmt(rp.get('seconds'), 's')} to {rp.get('frames')} cached results "
                     f"({'hit' if rp.get('cache_hit') else 'MISS'}{'' if rp.get('complete') else ', partial'})")
    if r.agreement:
        a = r.agreement
        lines.append(f"agreement seed vs ours: input max |d| {a['preprocess_max_abs_grey']:.2f} grey levels "
                     f"(mean {a['preprocess_mean_abs_grey']:.3f}); classifier max |dp| {a['cls_max_abs_p']:.4f}; "
                     f"mask pixels agreeing {100 * a['seg_pixel_agreement']:.3f} % (IoU {a['seg_iou']:.4f})")
    lines.append("")
    c, fl = r.ceiling, r.flops
    if c:
        mm = c["matmul"]
        lines.append(f"hardware: {mm['dtype']} matmul {mm['n']}x{mm['n']}: {c['rate_flops'] / 1e9:.1f} GFLOP/s median "
                     f"(best {mm['best_flops'] / 1e9:.1f}) over {mm['reps']} runs")
        if c["rate_flops"] < 0.25 * mm["best_flops"] or any(c.get(f"{t}_over_limit", 0) < -0.2 for t in ("cls", "seg")):
            # (a small matrix, or a CPU shared with other work: the median says little of the hardware)
            lines.append("          warning: the matrix-product rate varied too much in this run (or the model beat "
                         "it by over 20 %): the limit below is not a measure of this machine; run bench on a quiet "
                         "machine with the default --matmul-size")
        b16 = c.get("cpu_bf16_matmul")
        if b16 and b16.get("skipped_large"):
            lines.append(f"          (bf16 matmul on this CPU, for comparison: {b16['skipped_large']}; at "
                         f"{b16['n']}x{b16['n']} {b16['median_flops'] / 1e9:.1f} GFLOP/s, "
                         f"{b16['bf16_over_fp32_time']:.1f}x fp32's time at that size)")
        elif b16:
            lines.append(f"          (bf16 matmul on this CPU, for comparison: "
                         f"{b16['median_flops'] / 1e9:.1f} GFLOP/s median)")
        lines.append(f"FLOPs per frame (FlopCounterMode, merged models): classifier {fl['cls'] / 1e9:.2f} G, "
                     f"segmenter {fl['seg'] / 1e9:.2f} G (ViT analytic {fl['vit_analytic'] / 1e9:.2f} G)")
        lines.append(f"matmul-bound ceiling: classifier {_fmt(c['cls_fps'])} frames/s, segmenter {_fmt(c['seg_fps'])}, "
                     f"both {_fmt(c['cls_seg_fps'])} -> full case {_fmt(c['case_limit_s'], 's')}")
        for task, label in (("cls", "classifier"), ("seg", "segmenter")):
            lines.append(f"ours {label}: median {c[f'{task}_measured_s_per_frame'] * 1000:.1f} ms/frame vs limit "
                         f"{c[f'{task}_limit_s_per_frame'] * 1000:.1f} ms ({100 * c[f'{task}_over_limit']:+.0f} %); "
                         f"best {c[f'{task}_measured_s_per_frame_best'] * 1000:.1f} ms vs "
                         f"{c[f'{task}_limit_s_per_frame_best'] * 1000:.1f} ms at the best matmul rate "
                         f"({100 * c[f'{task}_over_limit_best']:+.0f} %)"
                         + ("; paired per batch: " + ", ".join(f"{100 * v:+.0f} %" for v in c[f"{task}_over_limit_paired"])
                            if c[f"{task}_over_limit_paired"] else ""))
    if r.gui is not None:
        w, g = r.gui.get("window") or {}, r.gui.get("frame_view") or {}
        for name, part in r.gui.items():
            if name == "skipped":
                lines.append(f"frame display: skipped ({part})")
            elif name not in ("window", "frame_view") and isinstance(part, dict) and "skipped" in part:
                lines.append(f"frame display ({name}): skipped ({part['skipped']})")
        if "skipped" in w:
            lines.append(f"main window display: skipped ({w['skipped']})")
        elif w:
            lines.append(f"main window display (set_frame + repaint, app scoring meanwhile): median {w['median_ms']:.1f} ms "
                         f"p95 {w['p95_ms']:.1f} max {w['max_ms']:.1f} (n={w['steps']}, {w['frames_scored_during']} "
                         f"frames scored meanwhile, scoring {'still running' if w['scoring_running'] else 'ended'})")
        if "skipped" in g:
            lines.append(f"frame view display: skipped ({g['skipped']})")
        elif g:
            i, b = g["idle"], g["engine_running"]
            lines.append(f"frame view alone ({g['qt_platform']}, {g['view_size'][0]}x{g['view_size'][1]}, frame + overlay, "
                         f"one paint): idle median {i['median_ms']:.1f} ms p95 {i['p95_ms']:.1f}; engine running "
                         f"median {b['median_ms']:.1f} ms p95 {b['p95_ms']:.1f} max {b['max_ms']:.1f} "
                         f"(n={b['n']}, {g['engine_batches_during']} engine batches meanwhile)")
    lines.append("")
    lines.append("targets:")
    for t in r.targets:
        lines.append(f"  [{t['status']:>12s}] {t['target']}: {_fmt(t['measured'], t['unit'])} "
                     f"(limit {_fmt(t['limit'], t['unit'])}){'; ' + t['note'] if t['note'] else ''}")
    if r.notes:
        lines.append("notes:")
        lines.extend(f"  - {n}" for n in r.notes)
    return "\n".join(lines)


def _gb(value: int | None) -> float | None:
    return None if value is None else value / GB


def _load(values) -> str:
    return "-" if not values else "/".join(f"{v:.2f}" for v in values)


def write_json(report: BenchReport, path: Path) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_json(path, report.to_json())
    except OSError as exc:
        raise FetalIQAError(f"cannot write the benchmark report {path} ({exc.strerror}); choose a writable "
                            "--json path") from None
