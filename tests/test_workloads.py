"""Tests for the workloads package: torchvision-compatible models, the catalogue, ONNX files."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from workloads.registry import (
    Workload,
    get_workload,
    onnx_file_workload,
    workload_names,
)
from workloads.specs import RESNET18, RESNET50, TINY, VIT_B_16
from workloads.vit import VisionTransformer

REPO = Path(__file__).resolve().parents[1]
BUILTIN_NAMES = ["resnet18", "resnet50", "vit_b_16", "tiny"]

PARAM_COUNTS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "vit_b_16": 86_567_656}

# torchvision state_dict facts, written out by hand (torchvision is not importable here).
# Key counts: every BatchNorm contributes weight, bias, running_mean, running_var and
# num_batches_tracked. ResNet-18: stem 1+5, 8 BasicBlocks × 12, 3 downsamples × 6, fc 2
# = 122. ResNet-50: stem 6, 16 Bottlenecks × 18, 4 downsamples × 6, fc 2 = 320.
# ViT-B/16: class_token, conv_proj ×2, pos_embedding, 12 blocks × 12, encoder.ln ×2,
# heads.head ×2 = 152.
KEY_COUNTS = {"resnet18": 122, "resnet50": 320, "vit_b_16": 152}
TORCHVISION_KEYS: dict[str, dict[str, tuple[int, ...]]] = {
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_var": (128,),
        "layer4.1.bn2.weight": (512,),
        "fc.weight": (1000, 512),
        "fc.bias": (1000,),
    },
    "resnet50": {
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer4.2.conv2.weight": (512, 512, 3, 3),
        "layer4.2.bn3.num_batches_tracked": (),
        "fc.weight": (1000, 2048),
    },
    "vit_b_16": {
        "conv_proj.weight": (768, 3, 16, 16),
        "conv_proj.bias": (768,),
        "class_token": (1, 1, 768),
        "encoder.pos_embedding": (1, 197, 768),
        "encoder.layers.encoder_layer_0.ln_1.weight": (768,),
        "encoder.layers.encoder_layer_0.self_attention.in_proj_weight": (2304, 768),
        "encoder.layers.encoder_layer_0.self_attention.in_proj_bias": (2304,),
        "encoder.layers.encoder_layer_0.self_attention.out_proj.weight": (768, 768),
        "encoder.layers.encoder_layer_0.mlp.0.weight": (3072, 768),
        "encoder.layers.encoder_layer_11.mlp.3.weight": (768, 3072),
        "encoder.layers.encoder_layer_11.ln_2.bias": (768,),
        "encoder.ln.weight": (768,),
        "heads.head.weight": (1000, 768),
    },
}


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """Each real model built once (seed 0); ViT-B is the expensive one (~2 s)."""
    return {name: get_workload(name).build_module(seed=0) for name in PARAM_COUNTS}


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- catalogue ------------------------------------------------------------------------


def test_workload_names_and_specs() -> None:
    assert workload_names() == BUILTIN_NAMES
    for spec in (RESNET18, RESNET50, VIT_B_16, TINY):
        w = get_workload(spec.name)
        assert isinstance(w, Workload)
        assert w.spec is spec and w.name == spec.name
        assert w.onnx_file is None and w.max_batch is None


def test_unknown_workload_names_choices() -> None:
    with pytest.raises(ValueError) as exc:
        get_workload("nope")
    msg = str(exc.value)
    assert "\n" not in msg and "'nope'" in msg
    assert "resnet18, resnet50, vit_b_16, tiny" in msg


def test_registry_import_does_not_import_torch() -> None:
    code = (
        "import sys, workloads.registry, workloads.specs, workloads.onnx_file;"
        "bad = [m for m in ('torch', 'onnx') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the tiny model -------------------------------------------------------------------


def test_tiny_model() -> None:
    module = get_workload("tiny").build_module()
    assert not module.training
    assert _params(module) == TINY.param_count == 5_418
    y = module(torch.randn(4, *TINY.input_shape))
    assert tuple(y.shape) == (4, *TINY.output_shape)
    assert torch.isfinite(y).all()


def test_tiny_flops_match_spec() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    module = get_workload("tiny").build_module()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.randn(1, *TINY.input_shape))
    assert counter.get_total_flops() == pytest.approx(TINY.flops_per_sample, rel=0.01)


def test_seed_reproducible_and_rng_untouched() -> None:
    w = get_workload("tiny")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = w.build_module(seed=7), w.build_module(seed=7), w.build_module(seed=8)
    assert torch.equal(torch.get_rng_state(), before), "build_module disturbed the global RNG"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_tiny_weights_roundtrip(tmp_path: Path) -> None:
    w = get_workload("tiny")
    src = w.build_module(seed=3)
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    loaded = w.build_module(seed=99, weights=path)
    x = torch.randn(2, *TINY.input_shape)
    with torch.no_grad():
        assert torch.equal(src(x), loaded(x))


def test_bad_weights_file_errors(tmp_path: Path) -> None:
    w = get_workload("tiny")
    state = w.build_module().state_dict()
    state.pop("fc.bias")
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(RuntimeError, match=r"fc\.bias"):
        w.build_module(weights=tmp_path / "partial.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(TypeError, match="state_dict"):
        w.build_module(weights=tmp_path / "list.pt")


# --- real models (torchvision compatibility) --------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PARAM_COUNTS))
def test_param_counts(models: dict[str, torch.nn.Module], name: str) -> None:
    assert _params(models[name]) == PARAM_COUNTS[name] == get_workload(name).spec.param_count


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PARAM_COUNTS))
def test_torchvision_state_dict_keys(models: dict[str, torch.nn.Module], name: str) -> None:
    state = models[name].state_dict()
    assert len(state) == KEY_COUNTS[name]
    for key, shape in TORCHVISION_KEYS[name].items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert not models[name].training


@pytest.mark.slow
def test_resnet_bn_buffers_and_init(models: dict[str, torch.nn.Module]) -> None:
    state = models["resnet50"].state_dict()
    assert sum(k.endswith("num_batches_tracked") for k in state) == 53
    assert torch.equal(state["layer3.1.bn2.weight"], torch.ones(256))
    assert torch.equal(state["layer3.1.bn2.bias"], torch.zeros(256))
    # kaiming_normal_(mode="fan_out"): std = sqrt(2 / (out_channels · k · k)).
    conv = state["layer4.0.conv2.weight"]
    assert conv.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.05)


@pytest.mark.slow
def test_resnet18_output_and_weights_roundtrip(
    models: dict[str, torch.nn.Module], tmp_path: Path
) -> None:
    src = models["resnet18"]
    x = torch.randn(2, *RESNET18.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = src(x)
    assert tuple(y.shape) == (2, 1000)
    assert torch.isfinite(y).all()

    path = tmp_path / "resnet18.pt"
    torch.save(src.state_dict(), path)
    loaded = get_workload("resnet18").build_module(seed=5, weights=path)
    with torch.no_grad():
        assert torch.equal(loaded(x), y)


@pytest.mark.slow
def test_resnet18_seeds(models: dict[str, torch.nn.Module]) -> None:
    w = get_workload("resnet18")
    same, other = w.build_module(seed=0).state_dict(), w.build_module(seed=1).state_dict()
    ref = models["resnet18"].state_dict()
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    assert not torch.equal(ref["conv1.weight"], other["conv1.weight"])


@pytest.mark.slow
def test_resnet18_flops_match_spec(models: dict[str, torch.nn.Module]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        models["resnet18"](torch.randn(1, *RESNET18.input_shape))
    assert counter.get_total_flops() == pytest.approx(RESNET18.flops_per_sample, rel=0.01)


@pytest.mark.slow
def test_resnet50_output(models: dict[str, torch.nn.Module]) -> None:
    with torch.no_grad():
        y = models["resnet50"](torch.randn(1, *RESNET50.input_shape))
    assert tuple(y.shape) == (1, 1000)
    assert torch.isfinite(y).all()


@pytest.mark.slow
def test_vit_output_and_weights_roundtrip(
    models: dict[str, torch.nn.Module], tmp_path: Path
) -> None:
    vit = models["vit_b_16"]
    with torch.no_grad():
        y = vit(torch.randn(1, *VIT_B_16.input_shape))
    assert tuple(y.shape) == (1, 1000)
    assert torch.isfinite(y).all()
    assert y.abs().max() > 0, "a zero-initialised head would make every output 0"

    path = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), path)
    loaded = get_workload("vit_b_16").build_module(weights=path)
    assert list(loaded.state_dict()) == list(vit.state_dict())
    key = "encoder.layers.encoder_layer_5.self_attention.in_proj_weight"
    assert torch.equal(loaded.state_dict()[key], vit.state_dict()[key])


@pytest.mark.slow
def test_vit_rejects_wrong_image_size(models: dict[str, torch.nn.Module]) -> None:
    with pytest.raises(ValueError, match="224"):
        models["vit_b_16"](torch.randn(1, 3, 112, 112))


# --- ViT forward semantics and export, on a small config of the same class -------------


def _small_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5,
    ).eval()  # fmt: skip


def _reference_vit_forward(m: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ViT forward written out with explicit tensor math."""
    import torch.nn.functional as F

    n, p, d = x.shape[0], m.patch_size, m.hidden_dim
    h = F.conv2d(x, m.conv_proj.weight, m.conv_proj.bias, stride=p)
    h = h.reshape(n, d, -1).permute(0, 2, 1)
    h = torch.cat([m.class_token.expand(n, -1, -1), h], dim=1) + m.encoder.pos_embedding
    for block in m.encoder.layers:
        heads = block.num_heads
        a = F.layer_norm(h, (d,), block.ln_1.weight, block.ln_1.bias, eps=1e-6)
        attn = block.self_attention
        q, k, v = (a @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, -1, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)
        o = (w @ v).transpose(1, 2).reshape(n, -1, d)
        h = h + (o @ attn.out_proj.weight.T + attn.out_proj.bias)
        b = F.layer_norm(h, (d,), block.ln_2.weight, block.ln_2.bias, eps=1e-6)
        b = F.gelu(b @ block.mlp[0].weight.T + block.mlp[0].bias)
        h = h + (b @ block.mlp[3].weight.T + block.mlp[3].bias)
    h = F.layer_norm(h, (d,), m.encoder.ln.weight, m.encoder.ln.bias, eps=1e-6)
    return h[:, 0] @ m.heads.head.weight.T + m.heads.head.bias


def test_vit_forward_matches_reference() -> None:
    m = _small_vit()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference_vit_forward(m, x), rtol=1e-4, atol=1e-5)


def test_vit_exports_with_dynamic_batch() -> None:
    m = _small_vit()
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(m, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-4, atol=1e-5)


# --- user ONNX files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with the dynamo exporter and a dynamic batch axis."""
    path = tmp_path_factory.mktemp("onnx") / "my_tiny.onnx"
    module = get_workload("tiny").build_module(seed=0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        # torch 2.13's exporter trips its own pytree FutureWarning; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module,
            (torch.randn(2, *TINY.input_shape),),
            str(path),
            dynamic_shapes=({0: batch},),
            dynamo=True,
            verbose=False,
        )
    return path


def test_an_onnx_file_becomes_a_workload_registered_nowhere(tiny_onnx: Path) -> None:
    w = onnx_file_workload(tiny_onnx)
    assert w.name == "my_tiny" and w.onnx_file == tiny_onnx.resolve()
    assert w.spec.input_shape == (3, 32, 32)
    assert w.spec.output_shape == (10,)
    assert w.spec.input_dtype == "float32"
    assert w.spec.param_count == TINY.param_count
    assert w.spec.token_base == 10  # tiny file: the minimum
    # Estimated from the graph's Conv and Gemm nodes: what torch's counter gives the module.
    assert w.spec.flops_per_sample == pytest.approx(TINY.flops_per_sample, rel=0.01)
    assert w.max_batch is None
    # The gateway keeps it in its own catalogue: nothing process-wide changes.
    assert workload_names() == BUILTIN_NAMES
    with pytest.raises(ValueError, match="ONNX"):
        w.build_module()


def test_exported_onnx_runs_like_torch(tiny_onnx: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    x = torch.randn(3, *TINY.input_shape)
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = get_workload("tiny").build_module(seed=0)(x).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_onnx_file_name_rules(tiny_onnx: Path) -> None:
    w = onnx_file_workload(tiny_onnx, name="custom", token_base=42)
    assert w.name == "custom" and w.spec.token_base == 42
    with pytest.raises(ValueError, match="built-in"):
        onnx_file_workload(tiny_onnx, name="resnet18")
    with pytest.raises(ValueError, match="token_base"):
        onnx_file_workload(tiny_onnx, name="zero", token_base=0)
    with pytest.raises(ValueError, match="choose from"):
        get_workload("custom")


def _save_model(
    path: Path,
    inputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> Path:
    """A one-node model (Identity of the first input, or of a Constant when there is none)."""
    dtype = inputs[0].type.tensor_type.elem_type if inputs else TensorProto.FLOAT
    out = helper.make_tensor_value_info("y", dtype, None)  # shape left to inference
    if inputs:
        node = helper.make_node("Identity", [inputs[0].name], ["y"])
    else:
        value = helper.make_tensor("c", TensorProto.FLOAT, [1, 4], [0.0] * 4)
        node = helper.make_node("Constant", [], ["y"], value=value)
    graph = helper.make_graph([node], "g", inputs, [out], initializer=initializers or [])
    onnx.save(helper.make_model(graph), path)
    return path


def _input(
    shape: list[int | str | None], dtype: int = TensorProto.FLOAT, name: str = "x"
) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def test_onnx_fixed_batch_one_and_inferred_output(tmp_path: Path) -> None:
    weights = [
        helper.make_tensor("w", TensorProto.FLOAT, [256, 1024], np.zeros(256 * 1024)),
        helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1]),
    ]
    w = onnx_file_workload(_save_model(tmp_path / "fixed.onnx", [_input([1, 8])], weights))
    assert w.max_batch == 1
    assert w.spec.input_shape == (8,) and w.spec.output_shape == (8,)  # via shape inference
    assert w.spec.param_count == 256 * 1024  # the int64 shape constant is not a weight
    assert w.spec.token_base == 10  # 1 MiB of weights, raised to the minimum


def test_onnx_input_dtype(tmp_path: Path) -> None:
    path = _save_model(tmp_path / "half.onnx", [_input(["n", 4], TensorProto.FLOAT16)])
    assert onnx_file_workload(path).spec.input_dtype == "float16"


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ([_input(["N", 3, "H", "W"])], "must be static"),
        ([_input([None, 3, 32, 32]), _input([None, 3], name="mask")], "exactly one graph input"),
        ([], "exactly one graph input, found 0"),
        ([_input([4, 3, 32, 32])], "fixed batch axis of 4"),
        ([_input([])], "no batch axis"),
        ([helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], "no batch axis"),
    ],
    ids=["dynamic-spatial", "two-inputs", "no-inputs", "batch-4", "scalar", "unknown-rank"],
)
def test_onnx_bad_inputs(tmp_path: Path, inputs: list[onnx.ValueInfoProto], match: str) -> None:
    path = _save_model(tmp_path / "bad.onnx", inputs)
    with pytest.raises(ValueError, match=match):
        onnx_file_workload(path)
    assert workload_names() == BUILTIN_NAMES


def test_onnx_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        onnx_file_workload(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not a protobuf \x12\x34")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        onnx_file_workload(junk)
