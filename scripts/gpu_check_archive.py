"""GPU check of archive scoring under torchrun: NCCL process group with each rank on
``cuda:LOCAL_RANK``, batches uploaded from page-locked memory, cases/s with and without reading
ahead, and the same table both ways.

What it does (about a minute on one NVIDIA GPU with the defaults):

1. writes ``--cases`` copies of one ``--frames``-frame case at ACOUSLIC size as uncompressed
   ``.mha`` (``bench.quick_frames`` and ``io.write_volume``, which writes ``.mha`` itself without SimpleITK) and a
   classifier and a segmenter bundle on a random ``--arch`` base;
2. runs ``torchrun --standalone --nproc_per_node G -m fetaliqa_core.cli score ARCHIVE --out O
   --cls C --seg S --device DEVICE --no-cache --prefetch P`` for P = 0, then 2 (G: ``--nproc``,
   default the number of GPUs), each into a fresh folder;
3. checks that both runs exit 0 with every case ``ok`` and that the two tables agree except for
   when and where each case ran, and reports both ``throughput:`` lines.

Reading an uncompressed case is hashing its bytes and its pixels (~2 s for 840 frames on one
core), which is what reading ahead hides behind the GPU here.

Exit status 0 when the checks pass (throughput is reported, not enforced), 1 otherwise. The
report is printed and written as JSON (``--out``, default ``$OUT/gpu_check_archive.json`` when
``$OUT`` is set).

Usage::

    python scripts/gpu_check_archive.py                                   # CUDA, all GPUs
    python scripts/gpu_check_archive.py --device cpu --nproc 2 --frames 16 --cases 3   # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fetaliqa_core import archive as ar  # noqa: E402


def _table(out: Path) -> list[dict]:
    with open(out / ar.TABLE_FILE, encoding="utf-8") as fh:
        return [{k: v for k, v in row.items() if k not in ar.RUN_COLUMNS} for row in csv.DictReader(fh)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--nproc", type=int, default=None, help="processes (default: the number of GPUs, else 2)")
    p.add_argument("--arch", default="tiny", choices=("tiny", "fetalclip"))
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--frames", type=int, default=840)
    p.add_argument("--timeout", type=float, default=240, help="seconds per torchrun run")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    import torch

    from fetaliqa_core.bench.inputs import make_bundles, quick_frames
    from fetaliqa_core.io import write_volume

    nproc = args.nproc or (torch.cuda.device_count() if args.device.startswith("cuda") else 2) or 1
    report: dict = {"device": args.device, "nproc": nproc, "arch": args.arch, "cases": args.cases,
                    "frames": args.frames, "runs": {}, "checks": {}}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    work = Path(tempfile.mkdtemp(prefix="fetaliqa-archive-check-"))
    t0 = time.perf_counter()
    archive = work / "archive"
    archive.mkdir()
    frames = quick_frames(args.frames, seed=3)
    half = args.frames // 2
    ranges = [(0, half), (half, args.frames)] if half else [(0, args.frames)]
    kinds = ["transverse"] * len(ranges)
    for i in range(args.cases):
        write_volume(archive / f"case{i:03d}.mha", frames, (0.28, 0.28), sweep_ranges=ranges, sweep_kinds=kinds)
    del frames
    cls_dir, seg_dir = make_bundles(args.arch, work / "bundles", seed=5)
    report["setup_s"] = round(time.perf_counter() - t0, 1)
    print(f"set-up: {args.cases} cases of {args.frames} frames, {args.arch} bundles, {report['setup_s']} s", flush=True)

    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               FETALIQA_HOME=str(work / "home"), PYTHONPATH=os.pathsep.join(
                   [str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    ok = True
    tables = {}
    for prefetch in (0, 2):
        out = work / f"out-prefetch{prefetch}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "fetaliqa_core.cli", "score", str(archive), "--out", str(out), "--cls", str(cls_dir),
               "--seg", str(seg_dir), "--device", args.device, "--no-cache", "--quiet", "--prefetch", str(prefetch)]
        t1 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
            log, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            parts = [x.decode("utf-8", "replace") if isinstance(x, bytes) else (x or "")
                     for x in (exc.stdout, exc.stderr)]
            log, rc = "".join(parts), 124
        line = next((ln for ln in log.splitlines() if ln.startswith("throughput:")), None)
        m = re.search(r"throughput: ([0-9.]+) cases/s", line or "")
        report["runs"][f"prefetch_{prefetch}"] = {"rc": rc, "wall_s": round(time.perf_counter() - t1, 1),
                                                  "throughput_line": line,
                                                  "cases_per_s": float(m.group(1)) if m else None}
        print(f"--prefetch {prefetch}: exit {rc}; {line}", flush=True)
        if rc != 0:
            print(log[-4000:])
            ok = False
            continue
        tables[prefetch] = _table(out)
        all_ok = all(r["status"] == "ok" for r in tables[prefetch]) and len(tables[prefetch]) == args.cases
        report["checks"][f"prefetch_{prefetch}_all_ok"] = all_ok
        ok &= all_ok
    if len(tables) == 2:
        same = tables[0] == tables[2]
        report["checks"]["tables_agree"] = same
        ok &= same
    report["passed"] = bool(ok)
    print(json.dumps(report, indent=2))
    target = args.out or (Path(os.environ["OUT"]) / "gpu_check_archive.json" if os.environ.get("OUT") else None)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
