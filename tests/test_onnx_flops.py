"""A user's ONNX model is sized from its graph: parameters and FLOPs per sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import helper

from server.config import GatewayConfigError, parse_gateway_config
from tests.onnx_models import save_model, weight, write_bias, write_mlp
from workloads.registry import onnx_file_workload


def test_mlp_flops_and_params_from_its_graph(tmp_path: Path) -> None:
    spec = onnx_file_workload(write_mlp(tmp_path / "my_mlp.onnx")).spec
    assert spec.param_count == 8 * 16 + 16 + 16 * 4
    assert spec.flops_per_sample == 2.0 * (8 * 16 + 16 * 4)


def test_conv_flops_follow_shape_inference(tmp_path: Path) -> None:
    # 3→4 channels, 3×3 kernel, padding 1 on 8×8: 4·8·8 outputs × 3·3·3 MACs each.
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    nodes = [conv, helper.make_node("Flatten", ["c"], ["y"])]
    path = save_model(
        tmp_path / "conv.onnx", nodes, ["N", 3, 8, 8], ["N", 256], [weight("w", 4, 3, 3, 3)]
    )
    spec = onnx_file_workload(path).spec
    assert spec.flops_per_sample == 2.0 * (4 * 8 * 8) * (3 * 3 * 3)


def test_unestimable_graph_has_no_flops_until_given(tmp_path: Path) -> None:
    path = write_bias(tmp_path / "bias.onnx")
    spec = onnx_file_workload(path).spec
    assert spec.param_count == 4
    assert spec.flops_per_sample == 0.0  # unknown: a trained predictor refuses it at start
    given = onnx_file_workload(path, name="bias2", flops_per_sample=1e6).spec
    assert given.flops_per_sample == 1e6


def test_flops_per_sample_config_key(tmp_path: Path) -> None:
    path = str(write_bias(tmp_path / "bias.onnx"))
    model = {"name": "bias", "onnx_file": path, "flops_per_sample": 2e6}
    assert parse_gateway_config({"models": [model]}).models[0].flops_per_sample == 2e6
    with pytest.raises(GatewayConfigError, match=r"models\.0\.flops_per_sample"):
        parse_gateway_config({"models": [{**model, "flops_per_sample": -1}]})
    with pytest.raises(GatewayConfigError, match="onnx_file models only"):
        parse_gateway_config({"models": [{"name": "tiny", "flops_per_sample": 1e6}]})
