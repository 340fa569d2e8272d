"""HTTP request and response models of POST /infer (pydantic v2).

The JSON body is `InferRequest`; a binary body (octet-stream or .npy) carries the same
options as query parameters, `InferQuery`. Both forbid unknown keys, so a typo such as
``"clas"`` is a 422 that names the field instead of a silently applied default.

Wire names that are Python keywords or clash with methods use aliases: ``"class"`` is
`job_class`, ``"return"`` is `return_`. Either spelling is accepted on input; responses
serialise by alias (FastAPI's default), so clients always read ``"class"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

JobClassName = Literal["interactive", "batch"]
Precision = Literal["fp32", "fp16"]
ReturnMode = Literal["top_k", "logits"]

#: Short codes of `ErrorBody.error`, for documentation and tests.
ERROR_CODES: tuple[str, ...] = (
    "invalid_input",
    "unknown_model",
    "queue_full",
    "predicted_late",
    "shed",
    "worker_failed",
    "too_large",
    "unavailable",
    "startup_failed",
    "unauthorized",
    "forbidden",
    "conflict",
    "timeout",
    "not_found",
    "method_not_allowed",
    "http_error",
    "internal_error",
)
#: Upper bounds that keep one request from asking for unbounded work.
MAX_SLO_MS = 600_000
MAX_BATCH_SIZE = 4096
MAX_TOP_K = 1000


def infer_request_example() -> dict[str, Any]:
    """A valid InferRequest body for the OpenAPI docs (synthetic inputs, so it is short)."""
    return {
        "model": "resnet18",
        "class": "interactive",
        "batch_size": 1,
        "slo_ms": 100,
        "return": "top_k",
        "top_k": 5,
    }


def _json_integer(value: Any) -> Any:
    """A JSON integer: a number with no fraction (JSON Schema's "integer" includes 3.0),
    never `true` or a string of digits, which a lax int would take."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "int_type", "Input should be an integer, not a boolean or a string"
        )
    return value


#: An integer as JSON Schema's "integer" means it (see `_json_integer`). Bounds go
#: before it in `Annotated[int, Field(ge=...), JSON_INT]`: after it, pydantic writes
#: them into the JSON schema as unknown keywords ("ge") instead of "minimum".
JSON_INT = BeforeValidator(_json_integer)


class TensorB64(BaseModel):
    """One tensor as base64 of its raw little-endian bytes."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Base64 (standard alphabet, padded) of the raw bytes.")
    shape: Annotated[
        list[Annotated[int, Field(ge=1), JSON_INT]], Field(min_length=1, max_length=8)
    ] = Field(description="Dimensions, batch axis first (or one sample's shape).")
    dtype: Literal["float32"] = Field("float32", description="Element type; only float32.")


class InferParams(BaseModel):
    """Options shared by the JSON body and the binary path's query string."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(min_length=1, description="Model name, e.g. 'resnet18'.")
    job_class: JobClassName = Field(
        alias="class", description="'interactive' (tight SLO) or 'batch' (throughput)."
    )
    backend: str | None = Field(None, description="Backend name; the gateway default if null.")
    precision: Precision | None = Field(None, description="fp32 or fp16; default if null.")
    slo_ms: float | None = Field(
        None,
        gt=0,
        le=MAX_SLO_MS,
        allow_inf_nan=False,  # NaN compares false with both bounds: name it for what it is
        description="Latency budget; the class default if null.",
    )
    return_: ReturnMode = Field(
        "top_k", alias="return", description="'top_k' probabilities or raw 'logits'."
    )
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K), JSON_INT] = Field(
        5, description="Entries per sample for top_k."
    )


class InferQuery(InferParams):
    """Query parameters of a binary POST /infer (the tensor is the body)."""

    # A query string or header is text: "5" is the number 5 here, not a type error.
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="Entries per sample for top_k.")


class InferRequest(InferParams):
    """JSON body of POST /infer: exactly one of `inputs` or `batch_size`."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [infer_request_example()]},
    )

    inputs: TensorB64 | list[Any] | None = Field(
        None, description="The batch: a base64 tensor object, or nested lists of numbers."
    )
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE), JSON_INT] | None = Field(
        None, description="Run this many synthetic samples instead."
    )

    @field_validator("inputs", mode="wrap")
    @classmethod
    def _pick_input_form(
        cls, value: Any, handler: ValidatorFunctionWrapHandler
    ) -> TensorB64 | list[Any] | None:
        # Chosen by JSON type up front: a plain union would report a failed object twice
        # (once per member), with member names such as "list[any]" in the error path.
        if isinstance(value, dict):
            return TensorB64.model_validate(value)
        if value is None or isinstance(value, list | TensorB64):
            return handler(value)
        raise PydanticCustomError(
            "inputs_type",
            "inputs must be an object {data, shape, dtype} or a nested list of numbers",
        )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> InferRequest:
        if (self.inputs is None) == (self.batch_size is None):
            got = "neither" if self.inputs is None else "both"
            raise ValueError(f"give exactly one of 'inputs' or 'batch_size' (got {got})")
        return self


class Timing(BaseModel):
    """Where one request's time went, in milliseconds."""

    queue_ms: float = Field(description="Arrival to the start of its (first) micro-batch.")
    service_ms: float = Field(description="Start of its first part to the end of its last.")
    e2e_ms: float = Field(description="Arrival to completion, as the gateway measured it.")
    forecast_ms: float | None = Field(
        None,
        description="Arrival to completion as admission forecast it (its planning quantile; "
        "absent for classes admitted without a forecast).",
    )


class InferResponse(BaseModel):
    """Successful POST /infer result."""

    model_config = ConfigDict(populate_by_name=True)

    request_id: str
    model: str
    backend: str
    precision: str
    job_class: str = Field(alias="class")
    outputs: list[Any] = Field(description="Per sample: a top-k list or a logits list.")
    timing: Timing
    slo_ms: float
    slo_met: bool
    batch_size: int = Field(description="Samples in the micro-batch the request last ran in.")
    lane: int = Field(description="Lane the request's last part ran on.")
    samples: int = Field(description="Samples in this request.")


class ErrorBody(BaseModel):
    """Body of every non-2xx answer."""

    error: str = Field(description="Short code: " + ", ".join(ERROR_CODES) + ".")
    detail: str = Field(description="One-line human message.")
    field: str | None = Field(None, description="Offending field or header, when one is.")
    admission: AdmissionForecast | None = Field(
        None, description="predicted_late only: the forecast that refused the request."
    )


class AdmissionForecast(BaseModel):
    """Why admission refused a request: it was predicted to finish after its deadline."""

    predicted_finish_ms: float = Field(description="Forecast finish, ms after arrival.")
    deadline_ms: float = Field(description="The request's deadline (its SLO), ms after arrival.")
    retry_after_ms: float = Field(
        description="Predicted drain: ms until the work now ahead of it is done (Retry-After "
        "is this, rounded up to whole seconds)."
    )


def field_from_loc(loc: Sequence[str | int]) -> str:
    """Dotted field path from a pydantic/FastAPI error location.

    ("body", "inputs", "shape", 0) → "inputs.shape.0": FastAPI's leading "body"/"query"/
    "header" says where, not what, and is dropped.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "header", "path"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts)


def error_body_from_validation(errors: Sequence[Mapping[str, Any]]) -> ErrorBody:
    """An `ErrorBody` ("invalid_input") for the first error of a pydantic/FastAPI 422.

    One error is reported: clients fix one at a time, and the message stays one line.
    """
    if not errors:
        return ErrorBody(error="invalid_input", detail="invalid request")
    first = errors[0]
    field = field_from_loc(first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = f"unknown field {field.rsplit('.', 1)[-1]!r}"
    detail = f"{field}: {message}" if field else message
    more = len(errors) - 1
    if more:
        detail += f" (and {more} more error{'s' if more > 1 else ''})"
    return ErrorBody(error="invalid_input", detail=detail, field=field or None)


ErrorBody.model_rebuild()
