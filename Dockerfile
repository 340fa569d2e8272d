# The mlws gateway image.
#
#   CPU (default):  docker build -t mlws:cpu .
#   CUDA:           docker build --build-arg VARIANT=cuda -t mlws:cuda .
#                   docker run --gpus all -p 8000:8000 -v mlws-models:/app/models mlws:cuda
#
# PyTorch comes from the wheel index of the variant: PyTorch's CPU index for `cpu` (a plain
# `pip install torch` would pull gigabytes of CUDA packages), PyPI for `cuda`, whose Linux
# wheel of the pinned torch is the CUDA build (CUDA 13.0, cuDNN 9, as nvidia-* wheels; a
# host driver >= 580). The CUDA variant keeps the same Python base: onnxruntime-gpu, built
# for the same CUDA and cuDNN, loads torch's nvidia-* libraries (backends/onnx_backend.py
# preloads them); the driver comes from the host (NVIDIA Container Toolkit). PyPI has no
# onnxruntime-gpu of the lock's onnxruntime version, so the variant names its own, as
# scripts/install-cuda-variants.sh does. Everything else is at requirements.lock's versions.
#
# Models are exported to ONNX on first start into /app/models (a volume, so the next
# start reuses them).

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG VARIANT=cpu

# --- variants: the torch wheel index and the ONNX Runtime package ---------------------------
FROM ${PYTHON_IMAGE} AS variant-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu \
    ONNXRUNTIME_PACKAGE=onnxruntime

FROM ${PYTHON_IMAGE} AS variant-cuda
ENV TORCH_INDEX=https://pypi.org/simple \
    ONNXRUNTIME_PACKAGE=onnxruntime-gpu \
    ONNXRUNTIME_GPU_VERSION=1.31.1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# --- the image ------------------------------------------------------------------------------
# variant-${VARIANT} names a stage above, not an image: there is no tag to pin (DL3006).
# hadolint ignore=DL3006
FROM variant-${VARIANT} AS gateway

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

# A fixed numeric uid/gid: `USER` by number is non-root to any runtime (runAsNonRoot).
RUN groupadd --system --gid 10001 mlws \
    && useradd --system --uid 10001 --gid mlws --create-home --home-dir /home/mlws \
        --shell /usr/sbin/nologin mlws

WORKDIR /app

# 1. torch alone, from the variant's index: the largest layer, cached across code changes.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0

# 2. The project's runtime dependencies (pyproject.toml), at the lock's exact versions; the
#    lock's development tools (pytest, ruff, locust...) stay out of the image. The lock's
#    torch==2.13.0 is already met by the CPU/CUDA build above (local version +cpu/+cu...).
COPY requirements.lock pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/runtime-requirements.txt \
    && pip install --no-cache-dir -c requirements.lock -r /tmp/runtime-requirements.txt \
    && if [ "${ONNXRUNTIME_PACKAGE}" != onnxruntime ]; then \
        pip uninstall --yes onnxruntime \
        && pip install --no-cache-dir -c requirements.lock \
            "${ONNXRUNTIME_PACKAGE}==${ONNXRUNTIME_GPU_VERSION}"; \
    fi \
    && rm /tmp/runtime-requirements.txt

# 3. The project itself (no dependency resolution: everything is installed above).
COPY README.md run_experiment.py ./
COPY mlws ./mlws
COPY server ./server
COPY serving ./serving
COPY scheduling ./scheduling
COPY backends ./backends
COPY workloads ./workloads
COPY predictor ./predictor
COPY loadgen ./loadgen
COPY configs ./configs
RUN PIP_CONSTRAINT=/app/requirements.lock pip install --no-cache-dir --no-deps . \
    && mkdir -p /app/models \
    && chown mlws:mlws /app/models

# ONNX exports land in models/onnx (the gateway's onnx_dir) at first start.
VOLUME ["/app/models"]
USER 10001:10001
EXPOSE 8000
# KServe v2 over gRPC (grpc_port).
EXPOSE 8001

# Liveness: /healthz answers as soon as the process serves HTTP, also while the models are
# exported and loaded (readiness is /readyz; docker-compose.yml waits on that one).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["mlws", "serve", "--host", "0.0.0.0"]
