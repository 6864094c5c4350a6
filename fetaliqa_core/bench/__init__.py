"""Benchmark: the product's scoring path against the seed-style path and the hardware limit.

Everything runs in one process on one set of synthetic frames of ACOUSLIC size (562 x 744
uint8), written first to an uncompressed ``.mha`` file in a temporary folder. Two paths score
the same frames with the same weights:

seed-style
    the way the reference code does the work: SimpleITK reads the whole volume; each frame is
    preprocessed on its own with PIL (zero-pad to a square, bicubic resize to 224, grey to RGB,
    open_clip's eval transform); the LoRA adapters stay unmerged inside peft; batches of 32
    under bf16 autocast on CUDA (fp32 without autocast on the CPU, where bf16 autocast is about
    6x slower on CPUs without bf16 matrix instructions); classifier and segmenter as two separate
    passes, the segmenter taking its four block outputs by forward hooks and resizing the 16x16 grids to
    14x14 with bilinear ``F.interpolate`` on NCHW views.
ours
    ``io.load_sweep`` (memory-mapped) -> ``engine.ScoringEngine`` -> ``preprocess_frames``
    (batched, on the device) -> ``LoadedModel.predict`` (LoRA merged, inference mode, bf16
    weights on CUDA, fp32 on the CPU), at the device's batch size.

Both paths run the same bundles: a random base of the chosen architecture with random LoRA
updates (so that merging matters) and random heads, saved with ``save_bundle`` and loaded with
``load_bundle`` (merged for ours, ``merge=False`` for the seed-style path). The report also
checks that the two paths compute the same function (agreement of inputs and outputs).

Figures reported: preprocessing, classifier and segmenter frames/s for each path; time from
opening the file to the first result and to the complete curve (classifier and segmenter);
reopening a cached sweep; peak resident memory per phase (sampled) and peak GPU memory; the
device's measured matrix-product rate turned into a frames/s ceiling from the models' FLOPs per
frame; and, where a display probe is registered (entry point group ``fetaliqa.bench_probes``; the app
registers one), the time to show a frame with its overlay while the engine runs.

Units: frames/s, seconds, milliseconds, bytes (shown as GB = 10^9 bytes).

Modules: :mod:`.settings` (what to run, the report), :mod:`.machine` (memory, matrix product,
FLOPs), :mod:`.inputs` (case file, bundles), :mod:`.seed_style`, :mod:`.ours`, :mod:`.run` (one
run, display probes), :mod:`.report` (targets, text, JSON).
"""

from fetaliqa_core.bench.inputs import quick_frames
from fetaliqa_core.bench.report import evaluate_targets, format_report, write_json
from fetaliqa_core.bench.run import run_bench
from fetaliqa_core.bench.settings import BenchProbeInput, BenchReport, BenchSettings

__all__ = ["BenchProbeInput", "BenchReport", "BenchSettings", "evaluate_targets", "format_report", "quick_frames",
           "run_bench", "write_json"]
