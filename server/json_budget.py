"""Refuse JSON bodies whose parsed form would cost far more memory than their tensor.

A nested-list number costs ~40 bytes once parsed (a Python float and its list
slot, then numpy's copies) against 4 bytes as float32: one 32 MiB body of
"0,0,0,..." parsed into 16 M floats takes ~650 MB. So before a JSON body is
parsed, the array elements it may hold are bounded by two cheap byte counts and
compared with what any request could legitimately carry: the largest tensor a
request may send (samples × the largest sample), and `limits.max_json_values`.
Base64 and binary inputs are unaffected: base64 text holds no commas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from server.codecs import TooLargeError
from server.config import GatewayConfig
from workloads.specs import WorkloadSpec

#: Array elements a request may hold beside its tensor (shapes, outputs, parameters).
SLACK_VALUES = 256


def json_value_limit(config: GatewayConfig, specs: Iterable[WorkloadSpec]) -> int:
    """Most array elements (by `check_json_values`' count) a JSON body for one of `specs`
    may hold: the largest tensor a request may send, and never more than the config's cap."""
    samples = config.max_request_samples
    tensor = max((_nested_list_count(samples, spec.input_shape) for spec in specs), default=0)
    return min(config.limits.max_json_values, tensor + SLACK_VALUES)


def _nested_list_count(samples: int, shape: Sequence[int]) -> int:
    """Commas + brackets of a (samples, *shape) tensor as nested lists: its values, and
    its arrays (1 + samples + samples × shape[0] + ...)."""
    dims = (samples, *shape)
    arrays = sum(math.prod(dims[:i]) for i in range(len(dims)))
    return math.prod(dims) + arrays


def check_json_values(text: bytes, limit: int, counted: int = 0) -> int:
    """Raise TooLargeError (413) if the JSON `text` may hold more than `limit` array
    elements; return the bound counted so far.

    Every element of an array after the first follows a comma and every array opens
    with a bracket, so commas + brackets bound the element count from above (commas
    in strings or between object members only raise the bound). Both are single C
    passes over the bytes, far cheaper than parsing. A body read in parts is checked
    part by part, passing the bound of the parts before as `counted`.
    """
    bound = counted + text.count(b",") + text.count(b"[")
    if bound > limit:
        raise TooLargeError(
            "inputs",
            f"the JSON body holds more than {limit} array values, the most accepted "
            "(nested lists cost ~40 bytes a value to parse): send inputs as base64 "
            '{"data", "shape"} or as a binary body (application/octet-stream or '
            "application/x-npy)",
        )
    return bound
