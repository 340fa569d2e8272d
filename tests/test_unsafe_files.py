"""No file mlws reads can run code: every format, with a code-execution payload.

Each case builds a file whose loading *would* run `touch MARKER` if the format were
unpickled, loads it the way mlws does, and checks that the load fails with a clear
error and that the marker was never created. The formats: predictor files (the old
pickle-based format 1, and format 2 with a pickled object smuggled into its
archive), model weights (state_dict files), .npy request bodies, and YAML configs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from predictor.latency import LatencyPredictor
from predictor.model_file import MAGIC, PredictorFileError, read_header
from tests.test_predictor import synthetic


class Payload:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "loading the file ran the payload"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    predictor = LatencyPredictor("random_forest").train(synthetic([1, 4], workloads=("m",)))
    return predictor.save(tmp_path_factory.mktemp("p") / "good.mlws")


def _with_payload(src: Path, dst: Path, body: bytes, **header_changes: Any) -> Path:
    """`src`'s header (hash and length fixed up, as an attacker would) around `body`."""
    header, _ = read_header(src)
    header.update(header_changes)
    header["payload_sha256"] = hashlib.sha256(body).hexdigest()
    header["payload_bytes"] = len(body)
    dst.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + body)
    return dst


def test_format_1_pickle_is_refused_with_how_to_retrain(
    trained: Path, tmp_path: Path, marker: Path
) -> None:
    body = pickle.dumps({"core": Payload(marker)})
    old = _with_payload(trained, tmp_path / "old.pkl", body, format_version=1)
    with pytest.raises(PredictorFileError, match=r"format 1 .*pickle.*mlws predictor train"):
        LatencyPredictor.load(old)


def test_object_array_in_the_archive_is_refused(
    trained: Path, tmp_path: Path, marker: Path
) -> None:
    buffer = io.BytesIO()
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    np.savez(buffer, knots=evil)  # np.savez pickles object arrays
    crafted = _with_payload(trained, tmp_path / "evil.mlws", buffer.getvalue())
    with pytest.raises(PredictorFileError, match="holds a Python object"):
        LatencyPredictor.load(crafted)


def test_malformed_trees_are_refused_not_evaluated(trained: Path, tmp_path: Path) -> None:
    _, offset = read_header(trained)
    with np.load(io.BytesIO(trained.read_bytes()[offset:])) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["mean.left"] = np.zeros_like(arrays["mean.left"])  # every node its own child: a loop
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    crafted = _with_payload(trained, tmp_path / "loop.mlws", buffer.getvalue())
    with pytest.raises(PredictorFileError, match="damaged predictor file"):
        LatencyPredictor.load(crafted)


def test_weights_file_with_a_payload_is_refused(tmp_path: Path, marker: Path) -> None:
    import torch

    from workloads.registry import get_workload

    path = tmp_path / "weights.pt"
    torch.save({"conv1.weight": Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"not loading it: .*Python objects other than tensors"):
        get_workload("tiny").build_module(weights=str(path))


def test_npy_body_with_a_pickled_object_is_a_clear_input_error(marker: Path) -> None:
    from server.codecs import InputError, decode_binary

    evil = np.empty(2, dtype=object)
    evil[0] = Payload(marker)
    buffer = io.BytesIO()
    np.save(buffer, evil, allow_pickle=True)
    with pytest.raises(InputError, match="only float32 is accepted"):
        decode_binary(buffer.getvalue(), "application/x-npy", None, None)


def test_yaml_config_cannot_construct_python_objects(tmp_path: Path, marker: Path) -> None:
    from server.config import GatewayConfigError, load_gateway_config

    path = tmp_path / "gw.yaml"
    path.write_text(f"port: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(GatewayConfigError, match="invalid YAML"):
        load_gateway_config(path)
