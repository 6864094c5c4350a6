#!/usr/bin/env bash
# The GPU benchmark of FetalIQA in one prepared command, for a lent NVIDIA H100/H200 machine.
#
# It runs, in this order, each under its own time limit, writing everything to $OUT:
#   1. fetaliqa bench --device cuda --arch fetalclip --frames 840   -> bench.json, bench.txt
#      (seed-style vs ours, matmul ceiling, peak GPU memory; --skip-gui: no Qt on that machine)
#   2. fetaliqa bench --speed on the machine's CPU (preprocessing, bf16 probe, ViT-L bf16 vs fp32)
#      -> bench_speed.json, bench_speed.txt
#   3. every GPU check script under scripts/ (scripts/gpu_check_*.py) -> <name>.txt (+ its JSON);
#      gpu_check_speed.py: one shared base for a classifier + segmenter pair on CUDA
#   4. the card and software seen                                      -> env.txt
#
# The device image has Python 3.12 with torch, torchvision, peft, numpy, pillow, opencv,
# safetensors, psutil, timm and huggingface_hub, but not open_clip_torch, ftfy, wcwidth,
# platformdirs or SimpleITK. Carry those as wheels:
#
#   here, once (a machine with pip access):   bash scripts/gpu_bench.sh prepare
#       -> .whl/ (ignored by git; about 2.5 MB)
#   there (device tool `run`, carry [".whl"], timeout_s 600):   bash scripts/gpu_bench.sh
#
# SimpleITK's wheel (53 MB) plus the working tree (~19 MB with the demo base) exceeds the 64 MiB
# a device call may carry, so it is left out unless WITH_SIMPLEITK=1: the benchmark then writes
# and reads its uncompressed .mha without it (fetaliqa_core.bench.write_plain_mha; io reads
# uncompressed MetaImage itself). scripts/gpu_check_training.py writes its dataset through
# io.write_volume, which needs SimpleITK: without it that check fails at its first step.
#
# Budget: set-up with a real-size random base takes a minute or two (4 towers built and
# fingerprinted), the bench itself well under a minute of GPU work plus ~20 s of seed-style PIL
# preprocessing; the check scripts get what is left.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
    PY=${PYTHON:-.venv/bin/python}
    ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
    mkdir -p .whl
    # .whl/ is in .gitignore: it travels only when a device call names it in carry
    plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
    # shellcheck disable=SC2086
    extra=()
    [ "${WITH_SIMPLEITK:-0}" = "1" ] && extra=("SimpleITK==$(ver SimpleITK)")
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl \
        "open_clip_torch==$(ver open_clip_torch)" "ftfy==$(ver ftfy)" "wcwidth==$(ver wcwidth)" \
        "platformdirs==$(ver platformdirs)" "${extra[@]}"
    du -sh .whl
    exit $?
fi

OUT=${OUT:-out/gpu_bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export FETALIQA_HOME=/tmp/fetaliqa-home  # nothing written to a user profile

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
    "$PY" -c "import open_clip, peft; print('open_clip', open_clip.__version__, 'peft', peft.__version__)"
    nproc; free -g | head -2
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# Seconds for all steps together: under the device tool's 600 s per command, with room to spare.
BUDGET=${GPU_BENCH_BUDGET_S:-560}
status=0
echo "== fetaliqa bench (cuda, fetalclip, 840 frames)"
timeout 300 "$PY" -m fetaliqa_core.cli.bench --device cuda --arch fetalclip --frames 840 --skip-gui \
    --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt" || status=1
echo "== fetaliqa bench --speed (the machine's CPU: preprocessing, bf16 probe and ViT-L bf16 vs fp32)"
timeout 240 "$PY" -m fetaliqa_core.cli.bench --speed --sections preprocess,precision --real-frames 8 \
    --json "$OUT/bench_speed.json" 2>&1 | tee "$OUT/bench_speed.txt" || status=1

checks=(scripts/gpu_check_*.py)
left=${#checks[@]}
for script in "${checks[@]}"; do
    [ -e "$script" ] || continue
    name=$(basename "$script" .py)
    share=$(( (BUDGET - SECONDS) / left ))
    left=$((left - 1))
    if [ "$share" -lt 30 ]; then
        echo "== $script: skipped, only ${share} s left" | tee "$OUT/$name.txt"; status=1; continue
    fi
    echo "== $script (limit ${share} s)"
    timeout "$share" "$PY" "$script" 2>&1 | tee "$OUT/$name.txt" || status=1
done
echo "gpu_bench: exit status $status (files in $OUT)"
exit $status
