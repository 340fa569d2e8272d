"""The one exception → HTTP mapping (server/errors.py), without a server."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from backends.base import ChoiceError
from scheduling.errors import JobTooLarge, QueueFull, UnknownWorkload
from scheduling.job import Job
from server.codecs import InputError, TooLargeError
from server.errors import (
    BodyTooLarge,
    MalformedBody,
    error_response,
    outcome_error,
)
from server.lanes.base import LaneError, WorkerDied
from server.schemas import InferRequest


def answer(exc: BaseException) -> tuple[int, dict, dict]:
    response = error_response(exc, retry_after_s=2)
    return response.status_code, json.loads(response.body), dict(response.headers)


@pytest.mark.parametrize(
    ("exc", "status", "code", "retry"),
    [
        (QueueFull("interactive", 64), 429, "queue_full", True),
        (JobTooLarge("resnet18", "fp32", 1004, 1000), 413, "too_large", False),
        (UnknownWorkload("bert", ["tiny"]), 404, "unknown_model", False),
        (ChoiceError("backend", "tf", ["onnx"]), 422, "invalid_input", False),
        (InputError("inputs.shape", "bad shape"), 422, "invalid_input", False),
        (TooLargeError("inputs.shape", "65 samples"), 413, "too_large", False),
        (BodyTooLarge("body of 40 MiB", field="body"), 413, "too_large", False),
        (MalformedBody("not JSON", field="body"), 400, "invalid_input", False),
        (WorkerDied("worker process of lane 0 was killed by SIGKILL"), 503, "worker_failed", True),
        (RuntimeError("surprise"), 500, "internal_error", False),
    ],
)
def test_each_domain_error_has_one_status(exc, status: int, code: str, retry: bool) -> None:
    got_status, body, headers = answer(exc)
    assert (got_status, body["error"]) == (status, code)
    assert set(body) == {"error", "detail", "field"} and body["detail"]
    assert ("retry-after" in headers) == retry
    if retry:
        assert headers["retry-after"] == "2"


def test_malformed_json_is_400_and_schema_errors_are_422_naming_the_field() -> None:
    with pytest.raises(ValidationError) as bad_json:
        InferRequest.model_validate_json(b'{"model": ')
    status, body, _ = answer(bad_json.value)
    assert status == 400 and body["field"] == "body" and "JSON" in body["detail"]

    with pytest.raises(ValidationError) as bad_field:
        InferRequest.model_validate_json(b'{"model": "tiny", "class": "x", "batch_size": 1}')
    status, body, _ = answer(bad_field.value)
    assert status == 422 and body["field"] == "class" and "\n" not in body["detail"]


def test_fastapi_request_validation_errors_become_an_error_body() -> None:
    exc = RequestValidationError(
        [{"type": "missing", "loc": ("query", "model"), "msg": "Field required", "input": None}]
    )
    status, body, _ = answer(exc)
    assert status == 422 and body == {
        "error": "invalid_input",
        "detail": "model: Field required",
        "field": "model",
    }


@pytest.mark.parametrize(
    ("outcome", "aborted", "status", "code"),
    [
        ("shed", None, 503, "shed"),
        ("error", None, 503, "worker_failed"),
        ("cancelled", None, 503, "unavailable"),
        ("ok", "server shutting down", 503, "unavailable"),
    ],
)
def test_jobs_that_did_not_end_ok(outcome: str, aborted: str | None, status: int, code: str):
    job = Job(1, "tiny", "onnx", "fp32", "batch", 1, 0.0, 1.0, outcome=outcome, error="why")  # type: ignore[arg-type]
    got_status, body, _ = answer(outcome_error(job, aborted))
    assert (got_status, body["error"]) == (status, code)
    assert (aborted or "why") in body["detail"]


def test_lane_errors_are_worker_failures() -> None:
    assert issubclass(WorkerDied, LaneError)
