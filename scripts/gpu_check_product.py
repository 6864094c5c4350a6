"""GPU check of the product's own command on a whole case: ``fetaliqa score`` on CUDA.

What it does (a minute or two on one NVIDIA H100/H200):

1. writes one synthetic 840-frame case at ACOUSLIC size (``synth``; uncompressed ``.mha``) and a
   classifier and a segmenter bundle on a random real-size FetalCLIP base;
2. runs ``python -m fetaliqa_core.cli score CASE --device DEVICE --no-cache`` as a user would, each
   into its own folder, with (a) those bundles (the teacher), (b) ``--model demo-student``, (c)
   ``--cascade --student resources/demo/student`` with the teacher bundles, (d) ``--model demo``;
3. reports each command's exit status, wall-clock seconds (start-up, model loading and reading the
   case included) and the answer line it printed, and for the cascade how many frames the teacher
   scored (``cascade.json``).

The random teacher's answer means nothing (random weights); the check is that the product's whole
path runs on the device and how long a user waits. Exit status 0 when every command exits 0.
Results are printed and written as JSON (``--out``, default ``$OUT/gpu_check_product.json`` when
``$OUT`` is set).

Usage::

    python scripts/gpu_check_product.py                                              # CUDA
    python scripts/gpu_check_product.py --device cpu --config tiny --frames 24       # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--config", default="fetalclip", help="the teacher's base config (fetalclip = real size)")
    p.add_argument("--frames", type=int, default=840)
    p.add_argument("--timeout", type=float, default=240, help="seconds allowed to each command")
    p.add_argument("--out", default=None, help="JSON result path")
    args = p.parse_args(argv)
    os.environ.setdefault("FETALIQA_HOME", tempfile.mkdtemp(prefix="fetaliqa-home-"))

    from fetaliqa_core.bench.inputs import make_bundles, synthetic_case
    from fetaliqa_core.io import write_volume

    work = Path(tempfile.mkdtemp(prefix="fetaliqa-gpu-product-"))
    t0 = time.perf_counter()
    frames, ranges, kinds = synthetic_case(args.frames, seed=11)
    case = work / "case.mha"
    write_volume(case, frames, compress=False, sweep_ranges=ranges, sweep_kinds=kinds)
    del frames
    cls_dir, seg_dir = make_bundles(args.config, work / "bundles", seed=5)
    result: dict = {"device": args.device, "teacher_config": args.config, "frames": args.frames,
                    "setup_s": round(time.perf_counter() - t0, 1), "runs": {}}
    print(f"set-up: {args.frames}-frame case and {args.config} bundles in {result['setup_s']} s", flush=True)
    student = ROOT / "resources" / "demo" / "student"
    runs = {
        "teacher": ["--cls", str(cls_dir), "--seg", str(seg_dir)],
        "demo-student": ["--model", "demo-student"],
        "cascade": ["--cascade", "--student", str(student), "--cls", str(cls_dir), "--seg", str(seg_dir)],
        "demo": ["--model", "demo"],
    }
    ok = True
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for name, options in runs.items():
        out = work / f"scores-{name}"
        cmd = [sys.executable, "-m", "fetaliqa_core.cli", "score", str(case), "--out", str(out),
               "--device", args.device, "--no-cache", *options]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=work)
            code, said, text = proc.returncode, proc.stdout, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, said = "timeout", (exc.stdout or "") if isinstance(exc.stdout, str) else ""
            text = said
        wall = round(time.perf_counter() - t, 1)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        told = [ln for ln in said.splitlines() if ln.strip()]  # the answer is on stdout (progress on stderr)
        answer = next((ln for ln in told if "chosen frame" in ln), told[0] if told else "")
        entry = {"exit": code, "wall_s": wall, "answer": answer.strip()[:300]}
        if code != 0:
            entry["output_tail"] = lines[-8:]
            ok = False
        cascade_file = out / "cascade.json"
        if cascade_file.is_file():
            try:
                info = json.loads(cascade_file.read_text())
                entry["cascade"] = {k: info[k] for k in info if not isinstance(info[k], (list, dict))}
            except (OSError, ValueError):
                entry["cascade"] = "unreadable"
        result["runs"][name] = entry
        print(f"  {name}: exit {code}, {wall} s: {entry['answer']}", flush=True)
        if code != 0:
            print("    " + "\n    ".join(entry["output_tail"]), flush=True)
    result["ok"] = ok
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    path = args.out or (os.path.join(os.environ["OUT"], "gpu_check_product.json") if os.environ.get("OUT") else None)
    if path:
        from fetaliqa_core.files import write_json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
