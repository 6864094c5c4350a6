"""Rebuild the demo base, classifier and segmenter in ``resources/demo/`` from this repository.

Each step is an ordinary command (printed before it runs, so the recipe can be replayed by
hand); ``--dry-run`` prints them only. The recipe:

1. synthetic training cases, full-length (6 x 140 frames) and made at ACOUSLIC's full size
   (562 x 744, ``--fan-variety``: half on other fan geometries), stored as the models see them
   (224 x 224) by ``training.cache_frames``;
2. the base: the ``tiny`` FetalCLIP-family tower (``training.pretrain_base``, every weight
   trained) continued from the previous demo base on these cases (``--from-random``: from a
   random initialisation instead; LoRA on a random tower has nothing to adapt; this base is
   *not* FetalCLIP);
3. the LoRA classifier and the LoRA 3-class segmenter on that frozen base (``training.train``),
   exactly as a user trains on FetalCLIP;
4. a held-out synthetic set of another seed at full size and ``fetaliqa eval`` of both models on
   it (the product's path: full frames, the app's frame choice, AC from the mask);
5. copies into ``resources/demo/``: ``base_tiny.pt`` (+ ``.json``), ``cls/``, ``seg/``,
   ``eval_heldout.json``.

Every training step runs in ``--precision``: by default bf16 (autocast) on a CPU with bf16 matrix
instructions, as the shipped models were made (AVX-512 BF16), and fp32 on a CPU without them,
where bf16 runs several times slower (a training step 7.8x on an AVX2-only CPU); fp32 gives models
close to, not bit-equal with, the shipped ones.

``--paper`` adds the same pair trained with ``--preset paper`` on the same cases and base
(:func:`paper_commands`), evaluated beside the project's pair and the paper's table, installed in
``resources/demo/paper/``.

The demo student (``resources/demo/student``) is distilled from the result afterwards
(``resources/README.md``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fetaliqa_core.files import write_json

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
BASE_DESCRIPTION = ("tiny FetalCLIP-family vision tower pretrained from a random initialisation on synthetic "
                    "sweeps by training.pretrain_base (resources/demo/base_tiny.pt; not FetalCLIP)")


#: Synthetic data of the recipe: training cases (dataset seed) and held-out cases (another seed,
#: never trained on), both full-length (6 x 140 frames) at ACOUSLIC's full size, 562 x 744.
TRAIN_SEED, TRAIN_CASES = 101, 40
HELDOUT_SEED, HELDOUT_CASES = 9001, 12


def default_precision() -> str:
    """The recipe's number format on this CPU: bf16 (as the shipped models were made) unless the
    CPU's flags show no bf16 matrix instructions, where bf16 runs several times slower: fp32."""
    from fetaliqa_core.models.device import cpu_lacks_bf16

    return "fp32" if cpu_lacks_bf16() else "bf16"


def _cpu_args(precision: str) -> list[str]:
    return ["--device", "cpu", "--threads", "1", "--workers", "0", "--no-progress-bar", "--precision", precision]


def paper_commands(work: Path, py: str = sys.executable, precision: str = "bf16") -> list[tuple[str, list[str]]]:
    """The same models trained with ``--preset paper`` on the same cases and base, and both pairs
    evaluated side by side on the held-out cases (``eval --paper-cls/--paper-seg --compare-paper``).

    Two departures from the paper, for a 2-core CPU, both recorded in the bundles' manifests: one
    trial instead of five, and passes capped (30 steps of 32 frames for the classifier, 25 for the
    segmenter, three passes an epoch: the frames as they are and the two offline copies), which
    gives each model about the frames the project's demo models saw; the segmenter's decoder is the
    reference's at 8 filters (32 costs ~5x more per frame on a CPU)."""
    w = str(work)
    cpu = _cpu_args(precision)
    base = f"{w}/base/base_weights.pt"
    # --split-seed 42: the seed the shipped pair was trained with (before --preset paper took the
    # reference code's seed by default); the same split as the project's pair's seed
    common = ["--preset", "paper", "--trials", "1", "--split-seed", "42", "--data", f"{w}/train224", "--base", base,
              "--base-config", "tiny"]
    tower = "on the tiny FetalCLIP-family tower pretrained on synthetic sweeps (not FetalCLIP; not for clinical use)"
    return [
        ("paper-cls", [py, "-m", "training.train", "--task", "cls", *common, "--max-steps", "30", "--out",
                       f"{w}/paper_cls", "--description",
                       "demo classifier, paper preset (MLP-only LoRA r=8 + linear head, batch Dice n/a, OpenCV "
                       "pre-resize, 2 offline copies, permutation split; 1 trial, at most 30 steps a pass, 3 passes "
                       f"an epoch) {tower}", *cpu]),
        ("paper-seg", [py, "-m", "training.train", "--task", "seg", *common, "--max-steps", "25", "--init-filters",
                       "8", "--out", f"{w}/paper_seg", "--description",
                       "demo segmenter, paper preset (MLP-only LoRA r=8 + the reference depthwise-separable UNETR "
                       "decoder at 8 filters, batch Dice, OpenCV pre-resize, 2 offline copies, permutation split; 1 "
                       f"trial, at most 25 steps a pass, 3 passes an epoch) {tower}", *cpu]),
        ("eval-paper", [py, "-m", "fetaliqa_core.cli", "eval", "--cls", f"{w}/cls/bundle", "--seg", f"{w}/seg/bundle",
                        "--paper-cls", f"{w}/paper_cls/bundle", "--paper-seg", f"{w}/paper_seg/bundle",
                        "--base", base, "--data", f"{w}/heldout", "--split", "all", "--all-sweeps",
                        "--compare-paper", "--device", "cpu", "--out", f"{w}/eval_paper", "--quiet"]),
    ]


def commands(work: Path, py: str = sys.executable, from_random: bool = False,
             precision: str = "bf16") -> list[tuple[str, list[str]]]:
    """The recipe: ``(name, argv)`` per step."""
    w = str(work)
    cpu = _cpu_args(precision)
    start = [] if from_random else ["--init-weights", str(DEMO / "base_tiny.pt")]
    base = f"{w}/base/base_weights.pt"
    return [
        ("synth-train", [py, "-m", "training.cache_frames", "--synth-cases", str(TRAIN_CASES), "--synth-seed",
                         str(TRAIN_SEED), "--fan-variety", "--jobs", "2", "--resume", "--out", f"{w}/train224"]),
        ("base", [py, "-m", "training.pretrain_base", "--data", f"{w}/train224", "--out", f"{w}/base",
                  "--base-config", "tiny", *start, "--all-sweeps", "--neg-ratio", "4", "--epochs", "12",
                  "--batch-size", "16", "--lr", "3e-4", "--val-frames", "600", *cpu]),
        ("cls", [py, "-m", "training.train", "--task", "cls", "--data", f"{w}/train224", "--out", f"{w}/cls",
                 "--base", base, "--base-config", "tiny", "--all-sweeps", "--neg-ratio", "4", "--epochs", "5",
                 "--batch-size", "16", "--lr", "1e-3", "--val-frames", "600", "--threshold", "auto", "--seed", "0",
                 "--no-test", "--seg-loss", "dice", "--description",
                 f"demo classifier: LoRA (r=8) + linear head trained on synthetic sweeps over the {BASE_DESCRIPTION}",
                 *cpu]),
        ("seg", [py, "-m", "training.train", "--task", "seg", "--seg-classes", "3", "--init-filters", "8",
                 "--seg-loss", "batch_dice_ce", "--data", f"{w}/train224", "--out", f"{w}/seg", "--base", base,
                 "--base-config", "tiny", "--all-sweeps", "--neg-ratio", "4", "--epochs", "4", "--batch-size", "16",
                 "--lr", "1e-3", "--val-frames", "400", "--seg-prior", "0.03", "--seed", "0", "--no-test",
                 "--description",
                 "demo segmenter (background/optimal/suboptimal): LoRA (r=8) + UNETR decoder (8 filters) trained "
                 f"on synthetic sweeps over the {BASE_DESCRIPTION}", *cpu]),
        ("synth-heldout", [py, "-m", "fetaliqa_core.cli", "synth", "--out", f"{w}/heldout", "--cases",
                           str(HELDOUT_CASES), "--seed", str(HELDOUT_SEED), "--no-compress", "--quiet"]),
        ("eval-heldout", [py, "-m", "fetaliqa_core.cli", "eval", "--cls", f"{w}/cls/bundle", "--seg",
                          f"{w}/seg/bundle", "--base", base, "--data", f"{w}/heldout", "--split", "all",
                          "--all-sweeps", "--device", "cpu", "--out", f"{w}/eval_heldout", "--quiet"]),
    ]


def install(work: Path, dest: Path = DEMO, paper: bool = False) -> None:
    """Copy the products of the recipe into ``dest`` (``paper``: the paper-preset pair and the
    side-by-side evaluation into ``dest/paper``)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / "base" / "base_weights.pt", dest / "base_tiny.pt")
    record = json.loads((work / "base" / "base_weights.json").read_text())
    write_json(dest / "base_tiny.json", record)
    pairs = [(work / name / "bundle", dest / name) for name in ("cls", "seg")]
    if paper:
        pairs += [(work / f"paper_{name}" / "bundle", dest / "paper" / name) for name in ("cls", "seg")]
    for source, target in pairs:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by every user of an installation
    evals = [(work / "eval_heldout" / "metrics.json", dest / "eval_heldout.json")]
    if paper:
        evals.append((work / "eval_paper" / "paper" / "metrics.json", dest / "paper" / "eval_heldout.json"))
    for source, target in evals:
        metrics = json.loads(source.read_text())
        metrics.pop("cases", None)  # per-case rows stay in the work folder
        write_json(target, metrics)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/fetaliqa-demo-build"), help="work folder (created)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--from-step", default=None, help="skip the steps before this one (a finished work folder)")
    p.add_argument("--no-install", action="store_true", help="do not copy into resources/demo/")
    p.add_argument("--from-random", action="store_true",
                   help="pretrain the tiny base from a random initialisation (else: continue the shipped demo base)")
    p.add_argument("--paper", action="store_true",
                   help="also train the pair with --preset paper and evaluate both pairs side by side "
                        "(resources/demo/paper/)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="number format of every training step (default: bf16 on a CPU with bf16 matrix "
                        "instructions, as the shipped models were made; fp32 on a CPU without them, where bf16 "
                        "runs several times slower)")
    args = p.parse_args(argv)
    precision = args.precision or default_precision()
    if args.precision is None and precision == "fp32":
        print("# fp32: this CPU has no bf16 matrix instructions (the shipped models were trained in bf16; "
              "--precision bf16 repeats that, several times slower here)", flush=True)
    steps = commands(args.work, from_random=args.from_random, precision=precision) + (
        paper_commands(args.work, precision=precision) if args.paper else [])
    names = [n for n, _ in steps]
    if args.from_step is not None and args.from_step not in names:
        p.error(f"--from-step must be one of {', '.join(names)}")
    start = names.index(args.from_step) if args.from_step else 0
    times = {}
    for name, argv_ in steps[start:]:
        print(f"# {name}\n{shlex.join(argv_)}", flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        proc = subprocess.run(argv_, cwd=REPO)
        times[name] = round(time.perf_counter() - t0, 1)
        print(f"# {name}: {times[name]} s, exit {proc.returncode}", flush=True)
        if proc.returncode != 0:
            return proc.returncode
    if not args.dry_run and not args.no_install:
        install(args.work, paper=args.paper)
        print(f"installed into {DEMO}; step times (s): {json.dumps(times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
