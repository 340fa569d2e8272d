"""FLOPs of one sample through a user's ONNX graph, estimated from its shapes.

The latency predictor describes a model by its size (parameters and FLOPs per
sample), so a user's ONNX file needs a FLOPs figure before a trained predictor
can time it. Almost all of a vision or MLP model's arithmetic is in its Conv,
ConvTranspose, Gemm and MatMul nodes; each costs 2 × multiply-accumulates, which
follow from the shapes ONNX shape inference gives with the batch axis fixed at 1.
Elementwise, pooling and normalisation nodes are left out (a few percent at
most), and nodes inside control-flow subgraphs are not visited.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

#: Node types whose multiply-accumulates are counted.
COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def estimate_flops_per_sample(model: onnx.ModelProto, input_name: str) -> float | None:
    """2 × multiply-accumulates of one sample, or None if they cannot be estimated.

    None when the graph has no counted node, or when shape inference leaves the
    shape of one of them unknown: a partial count would understate the model and
    mislead the predictor more than no figure at all.
    """
    shapes = _inferred_shapes(model, input_name)
    if shapes is None:
        return None
    macs = 0
    counted = 0
    for node in model.graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        node_macs = _node_macs(node, shapes)
        if node_macs is None:
            return None
        macs += node_macs
        counted += 1
    return 2.0 * macs if counted and macs > 0 else None


def _inferred_shapes(model: onnx.ModelProto, input_name: str) -> dict[str, list[int]] | None:
    """Static shapes of every tensor whose shape inference could tell, at batch size 1."""
    import onnx

    batch1 = onnx.ModelProto()
    batch1.CopyFrom(model)
    for value in batch1.graph.input:
        if value.name == input_name and value.type.tensor_type.shape.dim:
            value.type.tensor_type.shape.dim[0].dim_value = 1  # also clears a dim_param
    # Shapes the exporter annotated carry the symbolic batch axis: inferred afresh instead.
    del batch1.graph.value_info[:]
    for value in batch1.graph.output:
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(batch1, data_prop=True)
    except Exception:  # inference is best effort: an unknown op or opset raises its own types
        return None
    graph = inferred.graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor = value.type.tensor_type
        known = value.type.HasField("tensor_type") and tensor.HasField("shape")
        if known and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = [d.dim_value for d in tensor.shape.dim]
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int | None:
    """Multiply-accumulates of one counted node; None if a shape it needs is unknown."""
    if len(node.input) < 2 or not node.output:
        return None
    a, b, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
    if a is None or b is None or out is None or not a or not b:
        return None
    if node.op_type == "Conv":
        # Each output element sums over (input channels ÷ group) × kernel: W's dims after M.
        return math.prod(out) * math.prod(b[1:])
    if node.op_type == "ConvTranspose":
        # Each input element is spread over (output channels ÷ group) × kernel.
        return math.prod(a) * math.prod(b[1:])
    if node.op_type == "Gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        inner = a[0] if trans_a else a[-1]
        return math.prod(out) * inner
    return math.prod(out) * a[-1]  # MatMul: [..., M, K] @ [..., K, N]
