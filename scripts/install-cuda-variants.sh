#!/usr/bin/env bash
# The CUDA builds of PyTorch and ONNX Runtime, into a virtual environment made by
# `make install`: usage `bash scripts/install-cuda-variants.sh [VENV]` (default .venv).
# Needs PyPI; no GPU (it only installs). scripts/gpu-check.sh runs it.
#
# - PyTorch: PyPI's Linux wheel of the locked version IS the CUDA build (torch 2.13.0: CUDA
#   13.0, cuDNN 9, as nvidia-* wheels; an NVIDIA driver >= 580 to run). The CPU build
#   carries a local version (2.13.0+cpu), which `torch==2.13.0` also matches; `torch===2.13.0`
#   (exact string) matches only the plain CUDA wheel.
# - ONNX Runtime: `onnxruntime-gpu` replaces `onnxruntime` (both install the same
#   `onnxruntime` package, so they must never be installed together). PyPI has no
#   onnxruntime-gpu of the lock's onnxruntime version (1.32.0); the newest, 1.31.1, is built
#   for CUDA 13.0 and cuDNN 9, the same as torch's, and loads torch's nvidia-* libraries.
#   Move ONNXRUNTIME_GPU_VERSION to the lock's onnxruntime once PyPI has that version.
#
# Everything else stays at the lock's versions (-c requirements.lock). The script leaves
# $VENV/.cuda-variants behind: `make install` re-runs it after installing the lock, which
# reinstalls the CPU onnxruntime whenever the lock changes. Idempotent: does nothing when
# both CUDA builds are already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv}
ONNXRUNTIME_GPU_VERSION=${ONNXRUNTIME_GPU_VERSION:-1.31.1}
TORCH_VERSION=$(sed -n 's/^torch==//p' requirements.lock)
PY="$VENV/bin/python"
MARKER="$VENV/.cuda-variants"
[ -n "$TORCH_VERSION" ] || { echo "install-cuda-variants: no torch==... in requirements.lock" >&2; exit 1; }
[ -x "$PY" ] || { echo "install-cuda-variants: no $PY; run 'make install' first" >&2; exit 1; }

# Installed version of a distribution, or nothing.
installed() {
    "$PY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}

pip_install() {
    "$PY" -m pip install --no-input --progress-bar off -c requirements.lock "$@"
}

torch_now=$(installed torch)
torch_cuda=$("$PY" -c "import torch; print(torch.version.cuda or '')" 2>/dev/null || true)
if [ "$torch_now" = "$TORCH_VERSION" ] && [ -n "$torch_cuda" ]; then
    echo "==> torch $torch_now (CUDA $torch_cuda): already the CUDA build"
else
    echo "==> torch ${torch_now:-none} -> $TORCH_VERSION, the CUDA build from PyPI (about 3 GB with its nvidia-* libraries; cached after the first time)"
    pip_install "torch===$TORCH_VERSION"
fi

ort_cpu=$(installed onnxruntime)
ort_gpu=$(installed onnxruntime-gpu)
if [ -z "$ort_cpu" ] && [ "$ort_gpu" = "$ONNXRUNTIME_GPU_VERSION" ]; then
    echo "==> onnxruntime-gpu $ort_gpu: already installed"
else
    echo "==> onnxruntime ${ort_cpu:-none} / onnxruntime-gpu ${ort_gpu:-none} -> onnxruntime-gpu $ONNXRUNTIME_GPU_VERSION alone"
    # Both own the onnxruntime/ directory: remove both, then install the one.
    "$PY" -m pip uninstall --yes --quiet onnxruntime onnxruntime-gpu 2>/dev/null || true
    pip_install "onnxruntime-gpu==$ONNXRUNTIME_GPU_VERSION"
fi

"$PY" - <<'EOF'
import onnxruntime as ort
import torch

assert torch.version.cuda, f"torch {torch.__version__} is not a CUDA build"
providers = ort.get_available_providers()
assert "CUDAExecutionProvider" in providers, f"onnxruntime {ort.__version__}: {providers}"
print(f"==> torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"onnxruntime {ort.__version__} ({', '.join(providers)})")
EOF
touch "$MARKER"
