#!/usr/bin/env bash
# The CUDA paths, checked on a machine with an NVIDIA GPU: `bash scripts/gpu-check.sh`.
#
# 1. install       `make install` (the project venv, from requirements.lock)
# 2. cuda-variants scripts/install-cuda-variants.sh: torch's CUDA build, onnxruntime-gpu
# 3. probe         what torch, onnxruntime and nvidia-smi see (stops here if torch sees no GPU)
# 4. tests-cuda    tests/test_cuda.py with MLWS_REQUIRE_CUDA=1: a test that would skip fails
# 5. tests-cpu-paths   tests/test_cuda_paths_on_cpu.py: the fp16 graph with onnxruntime-gpu
#                  (its CPU-only refusals skip here, as they should)
# 6. profile       `mlws profile` of ResNet-18 on cuda, both backends, fp32 and fp16
# then a summary block: GPU, driver, versions, test counts, profile rows (ms, MiB).
#
# Everything lands in $GPU_CHECK_OUT (default results/gpu-check/): one log per step,
# the JUnit XML of each test run, profile-cuda.csv, probe.json, steps.tsv.
# Time: each step has its own limit, and all of them share GPU_CHECK_BUDGET_S (default
# 470 s, under 8 minutes). Measured on a 2-core machine without a GPU: cuda-variants
# took about 4 minutes to replace a CPU torch on a cold pip cache (3.5 GB of wheels),
# 15 s to swap onnxruntime for onnxruntime-gpu, 10 s when both are in place; install
# takes seconds once the venv is up to date. Estimated on a GPU machine: tests 1-3 min,
# profile about 1 min. A first run on a cold pip cache needs more than the budget: raise
# GPU_CHECK_BUDGET_S, or run `make install && bash scripts/install-cuda-variants.sh` first.
#
# Exit status: 0 all passed; 1 something failed (the summary says what); 3 no CUDA GPU
# visible (nvidia-smi missing or failing, or a driver too old for torch's CUDA build).
set -euo pipefail
# Only shell builtins until the GPU is found, so the refusal works with any PATH.
case "${BASH_SOURCE[0]}" in */*) cd "${BASH_SOURCE[0]%/*}/.." ;; *) cd .. ;; esac

# torch 2.13.0's PyPI build is CUDA 13.0, which needs an NVIDIA driver of 580 or later.
MIN_DRIVER=580

refuse() {
    echo "gpu-check: no usable CUDA GPU: $*" >&2
    exit 3
}

if ! command -v nvidia-smi >/dev/null 2>&1; then
    refuse "nvidia-smi not found (run this on a machine with an NVIDIA GPU and its driver)"
fi
if ! gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1); then
    refuse "nvidia-smi failed: ${gpu%%$'\n'*}"
fi
IFS=, read -r gpu_name driver _ <<<"${gpu%%$'\n'*}"
driver=${driver// /}
if [ -z "$gpu_name" ] || ! [[ "${driver%%.*}" =~ ^[0-9]+$ ]]; then
    refuse "nvidia-smi lists no GPU (it said: ${gpu%%$'\n'*})"
fi
if ((${driver%%.*} < MIN_DRIVER)); then
    refuse "driver $driver on $gpu_name is older than $MIN_DRIVER, which torch's CUDA 13.0 build needs"
fi

VENV=${VENV:-.venv}
OUT=${GPU_CHECK_OUT:-results/gpu-check}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
mkdir -p "$OUT"
# What an earlier check left: the summary reads every tests-*.xml there.
rm -f "$OUT"/*.log "$OUT"/tests-*.xml "$OUT"/steps.tsv "$OUT"/probe.json "$OUT"/profile-cuda.csv
echo "gpu-check: $gpu_name, driver $driver; results in $OUT; time budget ${BUDGET}s"

# step NAME LIMIT_S COMMAND...: runs COMMAND under a time limit (its own, or what is left
# of the budget), logs it to $OUT/NAME.log, records NAME/status/seconds in steps.tsv.
# Never fails itself: the summary judges. Returns 1 when the step did not succeed.
step() {
    local name=$1 limit=$2 left status t0 rc
    shift 2
    left=$((BUDGET - SECONDS))
    ((limit < left)) || limit=$left
    t0=$SECONDS
    if ((limit < 10)); then
        status="not run: the time budget is spent"
    else
        echo "==> $name (limit ${limit}s): $*"
        set +e
        timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
        rc=${PIPESTATUS[0]}
        set -e
        case $rc in
            0) status=ok ;;
            124 | 137) status="timed out after ${limit}s" ;;
            *) status="failed (exit $rc)" ;;
        esac
    fi
    echo "==> $name: $status ($((SECONDS - t0)) s)"
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >>"$OUT/steps.tsv"
    [ "$status" = ok ]
}

PY="$VENV/bin/python"
PYTEST=("$PY" -m pytest -p no:cacheprovider -rs -q --tb=short --timeout 120)
if step install 300 make install VENV="$VENV" &&
    step cuda-variants 300 bash scripts/install-cuda-variants.sh "$VENV" &&
    step probe 60 "$PY" scripts/gpu_check_summary.py probe "$OUT/probe.json"; then
    step tests-cuda 180 env MLWS_REQUIRE_CUDA=1 "${PYTEST[@]}" tests/test_cuda.py \
        --junitxml="$OUT/tests-cuda.xml" || true
    step tests-cpu-paths 120 "${PYTEST[@]}" tests/test_cuda_paths_on_cpu.py \
        --junitxml="$OUT/tests-cpu-paths.xml" || true
    step profile 150 "$VENV/bin/mlws" profile --workloads resnet18 --backends pytorch,onnx \
        --precisions fp32,fp16 --batch-sizes 1,8,32 --threads 1 --device cuda --warmup 3 \
        --repeats 20 --min-time 0.2 --max-time 2 --out "$OUT/profile-cuda.csv" || true
fi
# Standard library only: the summary prints even when the venv could not be made.
python3 scripts/gpu_check_summary.py summary "$OUT"
