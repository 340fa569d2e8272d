"""Triton's model configuration of a served model: GET /v2/models/{name}/config.

Not part of the Open Inference Protocol, but Triton's clients ask for it:
NVIDIA's load tool `perf_analyzer` refuses to start without it. It reads
``max_batch_size`` (above 0: requests carry a batch axis, which it then drops
from the metadata's shapes) and matches ``input`` / ``output`` by name against
the model metadata. The document is Triton's `ModelConfig` message in JSON
with the proto's field names, so the gRPC ModelConfig call can build its
message from the same dictionary (`google.protobuf.json_format.ParseDict`).

Every model has one FP32 input and one FP32 output (server/kserve_codec.py);
``max_batch_size`` is the most samples one request may carry
(``max_request_samples``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from backends.registry import triton_names
from server.api_responses import V2ErrorBody, error_responses
from server.kserve_codec import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    from server.gateway import Gateway

#: Triton's name of our one tensor data type.
FP32 = "TYPE_FP32"


class TensorConfig(BaseModel):
    """One tensor of a model configuration: `ModelInput` / `ModelOutput`."""

    name: str = Field(description="Tensor name, as in the model metadata.")
    data_type: str = Field(FP32, description="Triton's data type name.")
    dims: list[int] = Field(description="Shape of one sample: the batch axis is left out.")


class TritonModelConfig(BaseModel):
    """Triton's `ModelConfig` of a served model (the fields its clients read)."""

    name: str = Field(description="Model name.")
    platform: str = Field(description="Triton's platform name of the default backend.")
    backend: str = Field(description="Triton's backend name of the default backend.")
    max_batch_size: int = Field(
        description="Most samples in one request; every request carries a batch axis."
    )
    input: list[TensorConfig] = Field(description="The input tensors.")
    output: list[TensorConfig] = Field(description="The output tensors.")


def model_config(gw: Gateway, name: str) -> TritonModelConfig:
    """The configuration of served model `name`; UnknownModel (404) if it is not served."""
    served = gw.models.require(name)
    default = served.config.default_backend
    platform, backend = triton_names(default)
    spec = served.spec
    return TritonModelConfig(
        name=name,
        platform=platform,
        backend=backend,
        max_batch_size=gw.config.max_request_samples,
        input=[TensorConfig(name=INPUT_NAME, dims=list(spec.input_shape))],
        output=[TensorConfig(name=OUTPUT_NAME, dims=list(spec.output_shape))],
    )


def add_config_routes(router: APIRouter, check_version: Callable[[str, str], None]) -> None:
    """GET {prefix}/models/{name}/config, and at /versions/{version} (`check_version`
    raises for a version the model lacks)."""
    missing = error_responses(404, model=V2ErrorBody)

    @router.get("/models/{name}/config", responses=missing)
    async def config(request: Request, name: str) -> TritonModelConfig:
        """Triton's model configuration: max_batch_size, input and output dims."""
        return model_config(request.app.state.gateway, name)

    @router.get("/models/{name}/versions/{version}/config", responses=missing)
    async def config_at(request: Request, name: str, version: str) -> TritonModelConfig:
        """Triton's model configuration of one version."""
        check_version(name, version)
        return model_config(request.app.state.gateway, name)
