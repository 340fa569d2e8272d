"""GET /v1/profile on a real gateway: observed service times as a trainable profile CSV.

One in-process uvicorn gateway serves `tiny` on 2 thread lanes. Requests are sent
one at a time, so each is its own dispatch with no other lane busy, and the rows
can be counted exactly: calibration runs plus one per request.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import httpx
import pytest

from predictor.features import load_profile_data
from predictor.latency import LatencyPredictor
from server.service_log import LIVE_PROFILE_COLUMNS
from server.startup import CALIBRATION_RUNS
from tests.gateway_fixtures import LiveServer
from workloads.specs import TINY

CPU_PROFILE = Path(__file__).resolve().parent.parent / "configs" / "profiles" / "cpu.csv"
#: Batch sizes of the requests sent, each once per listed occurrence.
REQUESTS = (2, 2, 2, 3, 3)


@pytest.fixture(scope="module")
def served(tiny_http: httpx.Client) -> list[int]:
    """Send REQUESTS one after another; the micro-batch size each ran in."""
    sizes = []
    for n in REQUESTS:
        body = {"model": "tiny", "class": "interactive", "batch_size": n}
        r = tiny_http.post("/infer", json=body)
        assert r.status_code == 200, r.text
        sizes.append(r.json()["batch_size"])
    return sizes


@pytest.fixture(scope="module")
def expected(tiny_server: LiveServer, served: list[int]) -> dict[int, int]:
    """Service times per batch size: the calibration runs at 1 and the dispatch cap,
    then one per request."""
    cap = tiny_server.app.state.gateway.scheduler.largest_dispatch("tiny", "fp32")
    return dict(Counter({n: CALIBRATION_RUNS for n in {1, cap}}) + Counter(served))


def parse(response: httpx.Response) -> tuple[list[str], list[dict[str, str]]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    return list(reader.fieldnames or []), list(reader)


def test_rows_count_every_calibration_run_and_dispatch(
    tiny_http: httpx.Client, served: list[int], expected: dict[int, int]
) -> None:
    assert served == list(REQUESTS)  # one dispatch per request, of its own size
    header, rows = parse(tiny_http.get("/v1/profile"))
    assert header == list(LIVE_PROFILE_COLUMNS)
    assert {int(r["batch_size"]): int(r["repeats"]) for r in rows} == expected
    for row in rows:
        assert (row["workload"], row["backend"], row["precision"]) == ("tiny", "onnx", "fp32")
        assert (row["device"], row["threads"], row["busy_lanes"]) == ("cpu", "1", "0")
        assert int(row["param_count"]) == TINY.param_count
        assert float(row["p50_ms"]) > 0
        assert float(row["p99_ms"]) >= float(row["p50_ms"])


def test_min_repeats_drops_thin_rows(tiny_http: httpx.Client, expected: dict[int, int]) -> None:
    thick = {n: count for n, count in expected.items() if count >= CALIBRATION_RUNS}
    assert thick != expected  # the batch-3 row is thinner: something to drop
    header, rows = parse(tiny_http.get("/v1/profile", params={"min_repeats": CALIBRATION_RUNS}))
    assert header == list(LIVE_PROFILE_COLUMNS)
    assert {int(r["batch_size"]): int(r["repeats"]) for r in rows} == thick
    header, rows = parse(tiny_http.get("/v1/profile", params={"min_repeats": 10_000}))
    assert header == list(LIVE_PROFILE_COLUMNS)  # the header even with no rows
    assert rows == []


@pytest.mark.parametrize("value", ["0", "x"])
def test_a_bad_min_repeats_is_a_422_naming_it(tiny_http: httpx.Client, value: str) -> None:
    r = tiny_http.get("/v1/profile", params={"min_repeats": value})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_input"
    assert body["field"] == "min_repeats"
    assert body["detail"].startswith("min_repeats: ")


def test_the_export_trains_the_predictor_beside_a_profile(
    tiny_http: httpx.Client, served: list[int], tmp_path: Path
) -> None:
    live = tmp_path / "live_profile.csv"
    live.write_text(tiny_http.get("/v1/profile").text)
    data = load_profile_data(live)
    assert set(data.workload) == {"tiny"}
    assert set(data.busy_lanes) == {0}

    predictor = LatencyPredictor("random_forest").train([CPU_PROFILE, live])
    assert "tiny" in predictor.info["workloads"]
    ms = predictor.predict({"workload": "tiny", "backend": "onnx", "batch_size": 2})
    assert ms > 0


def test_the_route_is_documented(tiny_http: httpx.Client) -> None:
    operation = tiny_http.get("/openapi.json").json()["paths"]["/v1/profile"]["get"]
    assert operation["tags"] == ["operations"]
    assert operation["summary"]
    assert "busy_lanes" in operation["description"]
    assert "text/csv" in operation["responses"]["200"]["content"]
    (param,) = operation["parameters"]
    assert param["name"] == "min_repeats"
    assert param["schema"]["minimum"] == 1
