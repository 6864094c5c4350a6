#!/usr/bin/env bash
# The GPU benchmark of FetalIQA in prepared commands, for a lent NVIDIA H100/H200 machine.
#
# Steps (each under its own time limit, everything written to $OUT):
#   env       the card and software seen                                        -> env.txt
#   bench     fetaliqa bench --device cuda --arch fetalclip --frames 840        -> bench.json, bench.txt
#             (seed-style vs ours, matmul ceiling, peak GPU memory; --skip-gui: no Qt there)
#   models    scripts/gpu_check_models.py: bf16 on the GPU vs fp32 on the CPU, frames/s
#   cpu2      fetaliqa bench --speed on TWO cores of the machine's CPU (pinned, two threads):
#             preprocessing, the bf16 probe, ViT-L bf16 vs fp32, one base for two bundles (RSS),
#             the student's full case: a 2-core laptop with that CPU's matrix instructions
#                                                                               -> bench_cpu2.json/.txt
#   product   scripts/gpu_check_product.py: `fetaliqa score` on CUDA (teacher, student, cascade, demo)
#   speed     scripts/gpu_check_speed.py: one shared base for a classifier + segmenter pair on CUDA
#   training  scripts/gpu_check_training.py: real-size LoRA training steps in bf16
#   archive   scripts/gpu_check_archive.py: archive scoring under torchrun with NCCL
#
#   bash scripts/gpu_bench.sh                      # every step, in that order
#   bash scripts/gpu_bench.sh env bench models     # the named steps only
#
# A device call may run 10 minutes and a session holds the machine about 15, its start included,
# so the steps are split over two calls made back to back while the machine is warm:
#   run 1 (timeout_s 420):  GPU_BENCH_BUDGET_S=400 bash scripts/gpu_bench.sh env bench:170 models:100 cpu2
#   run 2 (what is left):   bash scripts/gpu_bench.sh product speed training archive
# (STEP:SECONDS gives a step its own limit; other steps share what is left evenly.)
# GPU_BENCH_BUDGET_S (default 400) caps one call's steps together; a step is skipped when less
# than 30 s of it would be left.
#
# The device image has Python 3.12 with torch, torchvision, peft, numpy, pillow, opencv,
# safetensors, psutil, timm and huggingface_hub, but not open_clip_torch, ftfy, wcwidth,
# platformdirs or SimpleITK. The first four, and this project's versions of peft and timm, travel
# as wheels:
#
#   here, once (a machine with pip access):   bash scripts/gpu_bench.sh prepare
#       -> .whl/ (ignored by git; about 5 MB)
#   there (device tool `run`, carry [".whl"]):  bash scripts/gpu_bench.sh STEP...
#
# SimpleITK's wheel (53 MB) and the working tree do not fit in what a device call may carry, and
# nothing here needs it: FetalIQA reads and writes .mha itself (io.write_volume writes MetaImage
# without SimpleITK where it is missing).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "prepare" ]; then
    PY=${PYTHON:-.venv/bin/python}
    ver() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
    mkdir -p .whl
    # .whl/ is in .gitignore: it travels only when a device call names it in carry
    plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
    # shellcheck disable=SC2086
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl \
        "open_clip_torch==$(ver open_clip_torch)" "ftfy==$(ver ftfy)" "wcwidth==$(ver wcwidth)" \
        "platformdirs==$(ver platformdirs)" "peft==$(ver peft)" "timm==$(ver timm)"
    du -sh .whl
    exit $?
fi

OUT=${OUT:-out/gpu_bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${GPU_BENCH_PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export FETALIQA_HOME=/tmp/fetaliqa-home  # nothing written to a user profile

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(env bench models cpu2 product speed training archive)
BUDGET=${GPU_BENCH_BUDGET_S:-400}
status=0
left=${#steps[@]}

# two CPUs of different physical cores (not hyper-thread siblings of one core), for the 2-core run
two_cpus() {
    local first siblings cpu
    first=$(cut -d, -f1 /sys/fs/cgroup/cpuset.cpus.effective 2>/dev/null | cut -d- -f1)
    first=${first:-0}
    siblings=$(cat "/sys/devices/system/cpu/cpu$first/topology/thread_siblings_list" 2>/dev/null || echo "$first")
    for cpu in $(seq 0 $(( $(nproc --all) - 1 ))); do
        [ "$cpu" = "$first" ] && continue
        case ",$siblings," in *",$cpu,"*) continue ;; esac
        if [[ "$siblings" =~ ^([0-9]+)-([0-9]+)$ ]] && [ "$cpu" -ge "${BASH_REMATCH[1]}" ] \
            && [ "$cpu" -le "${BASH_REMATCH[2]}" ]; then continue; fi
        echo "$first,$cpu"; return
    done
    echo "$first"
}

run_step() {  # name, limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then status=1; echo "== $name: exit status $rc"; fi
}

for item in "${steps[@]}"; do
    step=${item%%:*}  # STEP or STEP:SECONDS (that step's own limit, within what is left)
    share=$(( (BUDGET - SECONDS) / left ))
    left=$((left - 1))
    if [ "$item" != "$step" ]; then
        share=${item#*:}
        [ "$share" -gt $((BUDGET - SECONDS)) ] && share=$((BUDGET - SECONDS))
    fi
    if [ "$step" != env ] && [ "$share" -lt 30 ]; then
        echo "== $step: skipped, only ${share} s left" | tee "$OUT/$step.txt"; status=1; continue
    fi
    case $step in
        env)
            {
                nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
                "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
                "$PY" -c "import open_clip, peft, timm, numpy; print('open_clip', open_clip.__version__, 'peft', peft.__version__, 'timm', timm.__version__, 'numpy', numpy.__version__)"
                lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|Flags" | sed -E 's/^(Flags:).*/\1 '"$(grep -o -w -E 'amx_bf16|amx_tile|avx512_bf16|avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"'/'
                echo "two cores for the cpu2 step: $(two_cpus)"
                free -g | head -2
            } > "$OUT/env.txt" 2>&1
            cat "$OUT/env.txt" ;;
        bench)
            run_step bench "$share" "$PY" -m fetaliqa_core.cli.bench --device cuda --arch fetalclip --frames 840 \
                --skip-gui --json "$OUT/bench.json" ;;
        models)
            run_step gpu_check_models "$share" "$PY" scripts/gpu_check_models.py ;;
        cpu2)
            cpus=$(two_cpus)
            run_step bench_cpu2 "$share" env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 taskset -c "$cpus" \
                "$PY" -m fetaliqa_core.cli.bench --speed --sections preprocess,precision,rss,student --real-frames 8 \
                --json "$OUT/bench_cpu2.json" ;;
        product)
            run_step gpu_check_product "$share" "$PY" scripts/gpu_check_product.py --timeout $((share / 3)) ;;
        speed)
            run_step gpu_check_speed "$share" "$PY" scripts/gpu_check_speed.py ;;
        training)
            run_step gpu_check_training "$share" "$PY" scripts/gpu_check_training.py --steps 100 ;;
        archive)
            run_step gpu_check_archive "$share" "$PY" scripts/gpu_check_archive.py ;;
        *)
            echo "unknown step $step (env bench models cpu2 product speed training archive)"; status=1 ;;
    esac
done
echo "gpu_bench: exit status $status after ${SECONDS} s (files in $OUT)"
exit $status
