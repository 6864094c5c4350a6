"""Multi-process training: ``torchrun --nproc_per_node 2 -m training.train`` on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    from fetaliqa_core.synth import write_dataset

    data = tmp_path / "data"
    write_dataset(data, cases=5, seed=4, frames_per_sweep=3, height=64, width=96, compress=False)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", "--task", "joint", "--seg-classes", "3", "--init-filters", "4",
           "--data", str(data), "--out", str(out), "--base-config", "tiny", "--all-sweeps",
           "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--workers", "0", "--no-progress-bar",
           "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # rank 0 alone reports and writes
    assert proc.stdout.count("BUNDLE ") == 1
    assert sum(line.startswith("VALIDATION ") for line in proc.stdout.splitlines()) == 1
    progress = [line for line in proc.stdout.splitlines() if line.startswith("PROGRESS ")]
    assert progress and progress[-1].split()[3] == "step=2/2"
    trial = json.loads((out / "trial_1" / "metrics.json").read_text())
    assert trial["world_size"] == 2
    # validation is sharded over the ranks and gathered: every validation frame counted once
    split = json.loads((out / "split.json").read_text())
    assert trial["history"][0]["val"]["n_frames"] == split["val"]["frames"]

    from fetaliqa_core.models.bundle import load_bundle

    loaded = load_bundle(out / "bundle", device="cpu")
    assert loaded.task == "joint" and loaded.manifest.head == "3class"
