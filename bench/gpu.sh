#!/usr/bin/env bash
# bench/gpu.sh — every GPU figure of issue 13 in one prepared run of under 10 minutes, one results file.
#
# On a machine with an NVIDIA GPU (nvidia-smi works) it builds .venv-gpu with the project's `.[gpu]`
# extra (tensorflow[and-cuda]); without one, with `.[cpu]`. Then bench/gpu_figures.py measures, on GPU 0:
# embedding N real FairFace val images (float32 and bfloat16, images/s, pipeline ÷ bare forward), a
# paper-head trial and a wide-space trial (first call, warm epoch, validation, whole trial), and 1, 2
# and 4 worker processes on one fixed budget (trials/hour, Optuna + storage share of a trial).
# Figures go to bench/results/gpu-<host>-<date>.json and .md (rewritten after each part).
#
# Time budget (seconds, of GPU_BENCH_BUDGET_S = 570): the venv build whatever it takes (a reused venv:
# ~5 s; a fresh one ~2-4 min with a fast network), then the driver gets what is left, and starts a part
# only while its share remains (embed 10 %, trials 15 %, workers 40 % of its deadline); it is killed
# 20 s after its deadline at the latest.
#
# Knobs (environment):
#   GPU_BENCH_PYTHON=/path/to/python   use this interpreter, build no venv (the tests do)
#   GPU_BENCH_QUICK=1                  a few rows and images: the CPU smoke test (~1 min on 2 cores)
#   GPU_BENCH_OUT=DIR                  where the results go [bench/results]
#   GPU_BENCH_BUDGET_S=570             the whole run's budget
#   GPU_BENCH_STORAGE=URL              study storage of the workers part [SQLite in a temp dir]
#   GPU_BENCH_IMAGES=256               real images to embed
#   FAIRFACE_ROOT=DIR                  FairFace root [../shared/fairface, else tests/fixtures/fairface]
#
#   bash bench/gpu.sh
#   GPU_BENCH_PYTHON=.venv/bin/python GPU_BENCH_QUICK=1 GPU_BENCH_OUT=/tmp/gpu bash bench/gpu.sh
set -euo pipefail

started=$(date +%s)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
budget=${GPU_BENCH_BUDGET_S:-570}
out_dir=${GPU_BENCH_OUT:-$root/bench/results}
stamp="$(hostname -s)-$(date +%Y%m%d-%H%M%S)"

if nvidia-smi -L >/dev/null 2>&1; then
    extra=gpu
    export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}  # the figures are per GPU: all on the first
    export TF_FORCE_GPU_ALLOW_GROWTH=true                   # K workers share it, as docker-compose does
else
    extra=cpu
fi

if [[ -n "${GPU_BENCH_PYTHON:-}" ]]; then
    python=$GPU_BENCH_PYTHON
else
    venv=$root/.venv-gpu
    if ! "$venv/bin/python" -c "import tensorflow, optuna" >/dev/null 2>&1; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
        "$venv/bin/pip" install -q -e "$root[$extra]"
    fi
    python=$venv/bin/python
fi
setup_s=$(($(date +%s) - started))

dataset=${FAIRFACE_ROOT:-$root/../shared/fairface}
if [[ ! -f "$dataset/fairface_label_val.csv" ]]; then
    dataset=$root/tests/fixtures/fairface  # 16 val images: the figures say how many were embedded
fi

args=(--out "$out_dir/gpu-$stamp.json" --dataset "$dataset" --images "${GPU_BENCH_IMAGES:-256}")
args+=(--setup-s "$setup_s" --deadline-s "$((budget - setup_s))")
if [[ -n "${GPU_BENCH_STORAGE:-}" ]]; then
    args+=(--storage "$GPU_BENCH_STORAGE")
fi
if [[ "${GPU_BENCH_QUICK:-0}" == 1 ]]; then
    args+=(--quick)
fi

cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's code, whichever venv runs it
echo "gpu.sh: TensorFlow from $python (.[$extra]), setup ${setup_s} s; FairFace root $dataset" >&2
timeout --kill-after=10 "$((budget - setup_s + 20))" "$python" bench/gpu_figures.py "${args[@]}"
echo "gpu.sh: done in $(($(date +%s) - started)) s: $out_dir/gpu-$stamp.json" >&2
