"""Small ONNX graphs built with onnx.helper, for the tests of user ONNX models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weight(name: str, *shape: int) -> onnx.TensorProto:
    """An all-ones float32 initializer."""
    return numpy_helper.from_array(np.ones(shape, dtype=np.float32), name)


def save_model(
    path: Path,
    nodes: list[onnx.NodeProto],
    x: list[int | str],
    y: list[int | str],
    weights: list[onnx.TensorProto],
) -> Path:
    """A float32 graph from input `x` to output `y` (shapes; a string is a symbolic axis)."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def write_mlp(path: Path) -> Path:
    """x [N, 8] → Gemm 8→16 (+bias) → Relu → MatMul 16→4: 8·16 + 16·4 = 192 MACs."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    weights = [weight("w1", 8, 16), weight("b1", 16), weight("w2", 16, 4)]
    return save_model(path, nodes, ["N", 8], ["N", 4], weights)


def write_bias(path: Path) -> Path:
    """x [N, 4] + b: four parameters but no Conv, Gemm or MatMul to estimate FLOPs from."""
    nodes = [helper.make_node("Add", ["x", "b"], ["y"])]
    return save_model(path, nodes, ["N", 4], ["N", 4], [weight("b", 4)])


def write_unloadable(path: Path) -> Path:
    """A well-formed graph whose only operator no runtime implements."""
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="example.unknown")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("example.unknown", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    onnx.save(model, str(path))
    return path
