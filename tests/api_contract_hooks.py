"""Schemathesis hooks for tests/test_api_contract.py (loaded by `st` via SCHEMATHESIS_HOOKS).

One rule of the gateway's contract cannot be written in JSON Schema: a tensor's
payload must agree with its shape and with the model's input (base64 bytes =
4 × the product of `shape`; nested lists as deep and as long as the model's
sample; a binary body's bytes and X-Shape; a v2 input's `data` and `shape`). A
schema-valid tensor that disagrees gets a 422 (or 413 past the sample limit)
naming the field, and binary bytes that do not frame a tensor (a v2 binary body
whose JSON header is not valid JSON) a 400, which positive_data_acceptance would
report as "valid data refused". This hook drops exactly those reports, and no
other: a positive request without a tensor (`batch_size`, every GET) must still be
accepted, and every other check still runs on the tensor requests.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

#: What a tensor that disagrees with its shape or model is answered.
TENSOR_REFUSALS = frozenset({413, 422})
#: ... and bytes that do not frame a tensor at all.
BINARY_REFUSALS = TENSOR_REFUSALS | {400}


def tensor_refusals(case: Any) -> frozenset[int]:
    """The statuses a schema-valid request may get for its tensor payload: none for a
    request without one (`batch_size` synthetic input, every GET)."""
    path = case.operation.path
    if not (path == "/infer" or (path.startswith("/v2/") and path.endswith("/infer"))):
        return frozenset()
    if case.media_type is not None and "json" not in case.media_type:
        return BINARY_REFUSALS  # octet-stream or .npy bytes
    body = case.body
    if path == "/infer" and isinstance(body, dict) and body.get("inputs") is None:
        return frozenset()
    return TENSOR_REFUSALS


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except a tensor/shape disagreement refused as valid data."""
    return not (
        isinstance(failure, RejectedPositiveData) and response.status_code in tensor_refusals(case)
    )
