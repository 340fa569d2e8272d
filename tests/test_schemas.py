"""Tests for server.schemas: aliases, forbidden extras, exactly-one-of, error bodies."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from server.schemas import (
    ErrorBody,
    InferQuery,
    InferRequest,
    InferResponse,
    TensorB64,
    Timing,
    error_body_from_validation,
    field_from_loc,
    infer_request_example,
)


def body(**overrides: Any) -> dict[str, Any]:
    """A valid request body with `overrides` applied (None removes a key)."""
    base: dict[str, Any] = {"model": "tiny", "class": "interactive", "batch_size": 2}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def errors_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as exc:
        InferRequest.model_validate(data)
    return exc.value.errors()


def test_aliases_class_and_return() -> None:
    req = InferRequest.model_validate(body(**{"return": "logits"}))
    assert req.job_class == "interactive"
    assert req.return_ == "logits"
    assert req.top_k == 5 and req.backend is None and req.precision is None
    # Python names are accepted too (populate_by_name), for tests and internal callers.
    same = InferRequest(model="tiny", job_class="batch", batch_size=1, return_="top_k")
    assert same.job_class == "batch"


def test_class_is_required_and_checked() -> None:
    errs = errors_of(body(**{"class": None}))
    assert errs[0]["loc"] == ("class",) and errs[0]["type"] == "missing"
    errs = errors_of(body(**{"class": "realtime"}))
    assert errs[0]["loc"] == ("class",)


def test_extra_field_rejected_naming_it() -> None:
    errs = errors_of(body(clas="batch"))
    assert [(e["loc"], e["type"]) for e in errs] == [(("clas",), "extra_forbidden")]
    err = error_body_from_validation(errs)
    assert err.field == "clas" and "unknown field 'clas'" in err.detail


def test_exactly_one_of_inputs_and_batch_size() -> None:
    for data, got in ((body(batch_size=None), "neither"), (body(inputs=[[1.0]]), "both")):
        errs = errors_of(data)
        assert len(errs) == 1
        msg = errs[0]["msg"]
        assert "'inputs'" in msg and "'batch_size'" in msg and got in msg
    assert InferRequest.model_validate(body(batch_size=None, inputs=[[1.0]])).inputs == [[1.0]]


def test_inputs_object_is_a_tensor_and_errors_have_a_clean_path() -> None:
    req = InferRequest.model_validate(
        body(batch_size=None, inputs={"data": "AAAAAA==", "shape": [1]})
    )
    assert isinstance(req.inputs, TensorB64) and req.inputs.dtype == "float32"
    errs = errors_of(body(batch_size=None, inputs={"data": "", "shape": [0]}))
    assert [e["loc"] for e in errs] == [("inputs", "shape", 0)]
    errs = errors_of(body(batch_size=None, inputs={"data": "", "shape": [1], "dtype": "float64"}))
    assert [e["loc"] for e in errs] == [("inputs", "dtype")]
    errs = errors_of(body(batch_size=None, inputs={"data": "", "shape": [1], "extra": 1}))
    assert [e["loc"] for e in errs] == [("inputs", "extra")]
    errs = errors_of(body(batch_size=None, inputs="AAAA"))
    assert [e["loc"] for e in errs] == [("inputs",)] and "nested list" in errs[0]["msg"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("slo_ms", 0),
        ("slo_ms", 600_001),
        ("batch_size", 0),
        ("batch_size", 4097),
        ("top_k", 0),
        ("precision", "int8"),
        ("return", "probs"),
        ("model", ""),
    ],
)
def test_bounds(key: str, value: Any) -> None:
    errs = errors_of(body(**{key: value}))
    assert errs[0]["loc"] == (key,)


def test_shape_rank_bounds() -> None:
    for shape in ([], [1] * 9):
        with pytest.raises(ValidationError):
            TensorB64(data="", shape=shape)


def test_query_model_has_the_options_but_no_inputs() -> None:
    q = InferQuery.model_validate({"model": "tiny", "class": "batch", "slo_ms": "250"})
    assert q.slo_ms == 250.0
    with pytest.raises(ValidationError):
        InferQuery.model_validate({"model": "tiny", "class": "batch", "batch_size": 1})


def make_response() -> InferResponse:
    return InferResponse(
        request_id="r-1",
        model="tiny",
        backend="onnxruntime",
        precision="fp32",
        job_class="interactive",
        outputs=[[{"index": 3, "score": 0.9}]],
        timing=Timing(queue_ms=1.0, service_ms=2.0, e2e_ms=3.5),
        slo_ms=100.0,
        slo_met=True,
        batch_size=4,
        lane=0,
        samples=1,
    )


def test_response_serialises_class_by_alias() -> None:
    dumped = make_response().model_dump(by_alias=True)
    assert dumped["class"] == "interactive" and "job_class" not in dumped
    assert dumped["timing"] == {
        "queue_ms": 1.0,
        "service_ms": 2.0,
        "e2e_ms": 3.5,
        "forecast_ms": None,
    }
    assert '"class":"interactive"' in make_response().model_dump_json(by_alias=True)
    # Parsing the wire form back works (clients and tests read responses).
    assert InferResponse.model_validate(dumped).job_class == "interactive"


def test_error_body() -> None:
    err = ErrorBody(error="queue_full", detail="queue for class 'batch' is full")
    assert err.model_dump() == {
        "error": "queue_full",
        "detail": "queue for class 'batch' is full",
        "field": None,
        "admission": None,
    }


def test_error_body_from_fastapi_style_errors() -> None:
    errs = [
        {"loc": ("body", "inputs", "shape", 0), "msg": "Input should be >= 1", "type": "x"},
        {"loc": ("body", "top_k"), "msg": "bad", "type": "y"},
    ]
    err = error_body_from_validation(errs)
    assert err.error == "invalid_input" and err.field == "inputs.shape.0"
    assert err.detail == "inputs.shape.0: Input should be >= 1 (and 1 more error)"
    model_err = error_body_from_validation(errors_of(body(batch_size=None)))
    assert model_err.field is None and model_err.detail.startswith("give exactly one")
    assert field_from_loc(("query", "slo_ms")) == "slo_ms"


def test_example_is_a_valid_request() -> None:
    req = InferRequest.model_validate(infer_request_example())
    assert req.model == "resnet18"
    examples = InferRequest.model_json_schema()["examples"]
    assert examples == [infer_request_example()]
