"""A workload backed by a user's own ``.onnx`` file.

Everything the scheduler needs (input name, per-sample shapes, dtype, size) is read
from the file's graph with the ``onnx`` package; there is no torch module, the ONNX
Runtime backend opens the file itself. ``onnx`` is imported lazily so importing
this module (and the registry) stays cheap.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workloads.onnx_flops import estimate_flops_per_sample
from workloads.specs import WorkloadSpec

if TYPE_CHECKING:
    import onnx

#: One memory token per MiB of weights for user models, never fewer than this.
MIN_TOKEN_BASE = 10
BYTES_PER_TOKEN = 1 << 20


@dataclass(frozen=True)
class OnnxFileInfo:
    """What was read from an ONNX file."""

    spec: WorkloadSpec
    path: Path
    input_name: str
    output_name: str
    #: False when the file fixes the batch axis at 1: dispatch one sample at a time.
    dynamic_batch: bool
    weight_bytes: int


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None] | None:
    """Dims of a tensor value (None for a symbolic/unknown dim), or None if the rank is unknown."""
    tensor_type = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def _per_sample_shape(
    dims: list[int | None] | None, what: str, path: Path
) -> tuple[tuple[int, ...], bool]:
    """Split off the batch axis; returns (per-sample shape, batch axis is dynamic)."""
    if dims is None or len(dims) == 0:
        raise ValueError(
            f"{path}: {what} has no batch axis (rank unknown or 0); "
            "expected shape [batch, ...] with a dynamic or size-1 batch axis"
        )
    batch, rest = dims[0], dims[1:]
    if batch is not None and batch != 1:
        raise ValueError(
            f"{path}: {what} has a fixed batch axis of {batch}; "
            "re-export it with a dynamic batch axis (or batch 1)"
        )
    if any(d is None or d <= 0 for d in rest):
        shown = ["?" if d is None else d for d in dims]
        raise ValueError(
            f"{path}: {what} has shape {shown}; every axis except the first (batch) "
            "must be static, re-export it with fixed non-batch dimensions"
        )
    return tuple(int(d) for d in rest if d is not None), batch is None


def _dtype_name(elem_type: int, what: str, path: Path) -> str:
    import onnx

    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {what} has unsupported element type {elem_type}") from exc


def _weights(graph: onnx.GraphProto) -> tuple[int, int]:
    """(parameter count, weight bytes) over the graph's initializers.

    Works from the dims alone, so external-data weights need not be loaded. The count
    is approximate by nature: exporters deduplicate identical initializers (e.g. the
    all-ones LayerNorm weights of a freshly initialised model) and add shape constants.
    int64 tensors are skipped because in ONNX they are shapes and indices, never weights
    (quantized weights are int8/uint8, their biases int32).
    """
    import onnx

    params = 0
    nbytes = 0
    tensors = [*graph.initializer, *(s.values for s in graph.sparse_initializer)]
    for t in tensors:
        if t.data_type == onnx.TensorProto.INT64:
            continue
        n = math.prod(t.dims)
        params += n
        # Exotic element types: count the parameters, not their bytes.
        with contextlib.suppress(KeyError, ValueError, TypeError):
            nbytes += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return params, nbytes


def default_token_base(weight_bytes: int) -> int:
    """One token per MiB of weights, at least MIN_TOKEN_BASE."""
    return max(MIN_TOKEN_BASE, math.ceil(weight_bytes / BYTES_PER_TOKEN))


def inspect_onnx_file(
    path: str | Path,
    name: str | None = None,
    token_base: int | None = None,
    flops_per_sample: float | None = None,
) -> OnnxFileInfo:
    """Read an ONNX file's single input, first output and weights into a WorkloadSpec.

    The input must be one tensor [batch, ...] whose batch axis is dynamic or 1 and
    whose other axes are static; ValueError otherwise. `name` defaults to the file
    stem, `token_base` to `default_token_base` of the weight bytes, and
    `flops_per_sample` to the estimate from the graph's Conv/Gemm/MatMul nodes
    (`workloads/onnx_flops.py`; 0.0 when it cannot be estimated).
    """
    path = Path(path)
    model = _load(path)
    graph = model.graph

    # Old exporters (IR < 4) list initializers among the inputs too; those are weights.
    initializer_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1:
        found = ", ".join(i.name for i in inputs) or "none"
        raise ValueError(f"{path}: expected exactly one graph input, found {len(inputs)} ({found})")
    if not graph.output:
        raise ValueError(f"{path}: the graph has no outputs")
    inp = inputs[0]
    input_shape, dynamic_batch = _per_sample_shape(_dims(inp), f"input {inp.name!r}", path)
    input_dtype = _dtype_name(inp.type.tensor_type.elem_type, f"input {inp.name!r}", path)

    out = graph.output[0]
    output_shape = _output_shape(model, out, path)

    params, weight_bytes = _weights(graph)
    if token_base is None:
        token_base = default_token_base(weight_bytes)
    if token_base <= 0:
        raise ValueError(f"token_base must be positive, got {token_base}")
    name = path.stem if name is None else name
    if not name.strip():
        raise ValueError("workload name must not be empty")
    spec = WorkloadSpec(
        name=name,
        input_shape=input_shape,
        input_dtype=input_dtype,
        output_shape=output_shape,
        token_base=token_base,
        param_count=params,
        flops_per_sample=_flops(model, inp.name, flops_per_sample),
    )
    return OnnxFileInfo(
        spec=spec,
        path=path.resolve(),
        input_name=inp.name,
        output_name=out.name,
        dynamic_batch=dynamic_batch,
        weight_bytes=weight_bytes,
    )


def _output_shape(model: onnx.ModelProto, out: onnx.ValueInfoProto, path: Path) -> tuple[int, ...]:
    """Per-sample shape of output `out`, by shape inference where the file leaves it open."""
    dims = _dims(out)
    if dims is None or any(d is None for d in dims[1:]):
        dims = _inferred_output_dims(model, out.name) or dims
    return _per_sample_shape(dims, f"output {out.name!r}", path)[0]


def _flops(model: onnx.ModelProto, input_name: str, given: float | None) -> float:
    """FLOPs per sample: `given`, else estimated from the graph; 0.0 means unknown."""
    if given is None:
        return estimate_flops_per_sample(model, input_name) or 0.0
    if not (math.isfinite(given) and given > 0):
        raise ValueError(f"flops_per_sample must be a positive number, got {given}")
    return float(given)


def _load(path: Path) -> onnx.ModelProto:
    """The model proto of an ONNX file, without its external weights (dims suffice)."""
    import onnx

    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError family
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from exc


def _inferred_output_dims(model: Any, output_name: str) -> list[int | None] | None:
    """Output dims from ONNX shape inference, for files that don't annotate outputs."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort; the caller reports the real problem
        return None
    for o in inferred.graph.output:
        if o.name == output_name:
            return _dims(o)
    return None
