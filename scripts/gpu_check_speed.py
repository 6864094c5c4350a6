"""GPU check of the speed paths.

On CUDA: a real-architecture classifier + segmenter pair (random weights) loaded on one shared
base (``models/shared.py``) against the two merged bundles: outputs agree, one encoder pass per
batch, peak GPU memory and frames/s of each. Writes ``$OUT/gpu_check_speed.json``.

    python scripts/gpu_check_speed.py --device cuda
    python scripts/gpu_check_speed.py --device cpu --config tiny --batch 4   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--config", default="fetalclip", help="base config (fetalclip = real size)")
    args = p.parse_args()
    from fetaliqa_core.bench.inputs import make_bundles, quick_frames
    from fetaliqa_core.bench.machine import free_memory, sync
    from fetaliqa_core.models.agreement import output_agreement, predict_all
    from fetaliqa_core.models.bundle import load_bundle
    from fetaliqa_core.models.device import select_device
    from fetaliqa_core.models.shared import load_shared
    from fetaliqa_core.preprocess import preprocess_frames

    choice = select_device(args.device)
    out: dict = {"device": choice.description}
    with tempfile.TemporaryDirectory() as tmp:
        cls_dir, seg_dir = make_bundles(args.config, Path(tmp), seed=3)
        x = preprocess_frames(quick_frames(args.batch, 4), device=choice.device, dtype=choice.dtype)

        cuda = choice.device.type == "cuda"

        def peak_gb():
            return torch.cuda.max_memory_allocated() / 1e9 if cuda else None

        def reset():
            free_memory(choice.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def timed(fn):
            fn()
            sync(choice.device)
            t0 = time.perf_counter()
            r = fn()
            sync(choice.device)
            return r, args.batch / (time.perf_counter() - t0)

        reset()
        cls, seg = load_bundle(cls_dir, device=choice), load_bundle(seg_dir, device=choice)
        ref, out["separate_frames_per_s"] = timed(lambda: predict_all(cls, seg, x, batch=args.batch))
        out["separate_peak_gb"] = peak_gb()
        del cls, seg
        reset()
        pair = load_shared(cls_dir, seg_dir, device=choice)
        got, out["shared_frames_per_s"] = timed(lambda: predict_all(pair, pair, x, batch=args.batch))
        out["shared_peak_gb"] = peak_gb()
        out["shared_encoder_passes"] = pair.model.encoder_passes
        out["shared_vs_separate"] = output_agreement(*ref, *got)
    path = Path(os.environ.get("OUT", ".")) / "gpu_check_speed.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
