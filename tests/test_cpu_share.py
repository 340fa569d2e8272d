"""The simulator's shared-CPU executor: priorities, oversubscription, recomputed ends.

Numbers are worked out by hand; times are virtual.
"""

from __future__ import annotations

import pytest

from scheduling.cpu_share import IndependentLanes, LaneCpu, SharedCores
from scheduling.job import Dispatch
from scheduling.service_time import FixedServiceTime
from scheduling.simulator import Arrival, simulate
from tests.factories import TOKEN_BASES, make_config

#: Lane 0: interactive, 2 threads, normal priority; lanes 1-2: batch, 1 thread, low.
LANES = [LaneCpu(2, "normal"), LaneCpu(1, "low"), LaneCpu(1, "low")]


def dispatch(lane: int, did: int = 0) -> Dispatch:
    return Dispatch(did, lane, "m", "onnx", "fp32", [], 0, 0.0)


def test_low_lanes_fill_the_cores_alone() -> None:
    cpu = SharedCores(2, LANES)
    a, b = dispatch(1, 1), dispatch(2, 2)
    cpu.start(a, 0.5, 0.0)
    cpu.start(b, 0.5, 0.0)
    assert cpu.rate_of(a) == cpu.rate_of(b) == 1.0
    assert cpu.next_end() == pytest.approx(0.5)


def test_a_normal_lane_pauses_low_lanes_and_they_resume_after() -> None:
    cpu = SharedCores(2, LANES)
    batch, inter = dispatch(1, 1), dispatch(0, 2)
    cpu.start(batch, 0.5, 0.0)
    cpu.start(inter, 0.03, 0.1)  # both cores for 30 ms: the batch lane stops
    assert cpu.rate_of(batch) == 0.0 and cpu.rate_of(inter) == 1.0
    assert cpu.next_end() == pytest.approx(0.13)
    assert cpu.finished(0.13) == [inter]
    # 0.1 s done before, 0.4 s left from 0.13 at full speed.
    assert cpu.next_end() == pytest.approx(0.53)
    assert cpu.finished(0.53) == [batch]


def test_oversubscribed_normal_lanes_slow_evenly() -> None:
    cpu = SharedCores(2, [LaneCpu(2, "normal"), LaneCpu(2, "normal")])
    a, b = dispatch(0, 1), dispatch(1, 2)
    cpu.start(a, 0.03, 0.0)
    cpu.start(b, 0.03, 0.0)
    assert cpu.rate_of(a) == 0.5
    assert cpu.next_end() == pytest.approx(0.06)
    assert sorted(d.id for d in cpu.finished(0.06)) == [1, 2]


def test_one_normal_thread_leaves_a_core_to_the_low_lanes() -> None:
    cpu = SharedCores(2, [LaneCpu(1, "normal"), LaneCpu(1, "low"), LaneCpu(1, "low")])
    inter, b1, b2 = dispatch(0, 0), dispatch(1, 1), dispatch(2, 2)
    for d in (b1, b2, inter):
        cpu.start(d, 1.0, 0.0)
    assert cpu.rate_of(inter) == 1.0 and cpu.rate_of(b1) == cpu.rate_of(b2) == 0.5


def test_independent_lanes_end_after_their_service_time() -> None:
    lanes = IndependentLanes()
    lanes.start(dispatch(0, 0), 0.2, 1.0)
    lanes.start(dispatch(1, 1), 0.1, 1.0)
    assert lanes.next_end() == pytest.approx(1.1)
    assert [d.id for d in lanes.finished(1.2)] == [1, 0]


def test_simulated_priority_lanes_keep_interactive_latency_flat() -> None:
    """Interactive jobs on a normal-priority lane beside saturating batch work at low
    priority take exactly their own service time; on shared lanes they queue."""
    service = FixedServiceTime.linear(0.0, 30.0)  # 30 ms per sample
    arrivals = [Arrival(t * 0.01, "resnet18", "onnx", "fp32", "batch", 4, 10.0) for t in range(50)]
    arrivals += [
        Arrival(0.105 + t * 0.1, "resnet18", "onnx", "fp32", "interactive", 1, 0.1)
        for t in range(5)
    ]
    groups = [
        {"name": "interactive", "count": 1, "classes": ["interactive"], "threads": 2},
        {"name": "batch", "count": 2, "classes": ["batch"], "threads": 1, "priority": "low"},
    ]
    split = make_config(lane_groups=groups, admission={})
    shared = make_config(lanes=2, admission={})
    run = {
        name: simulate(cfg, arrivals, service, TOKEN_BASES, cores=2)
        for name, cfg in (("priority", split), ("shared", shared))
    }
    inter = [j for j in run["priority"].jobs if j.job_class == "interactive"]
    assert [round(j.end - j.arrival, 6) for j in inter] == [0.03] * 5
    shared_inter = [j for j in run["shared"].jobs if j.job_class == "interactive"]
    assert all(j.end - j.arrival > 0.03 for j in shared_inter)
    # Batch work still finishes: the low lanes used every core the interactive lane left.
    assert all(j.outcome == "ok" for j in run["priority"].jobs)


def test_event_loop_work_slows_the_lanes_it_shares_cores_with() -> None:
    cpu = SharedCores(2, LANES)
    inter = dispatch(0, 1)
    cpu.start(inter, 0.030, 0.0)
    cpu.overhead(0.010, 0.0)  # 3 normal threads on 2 cores: each at 2/3 speed
    assert cpu.rate_of(inter) == pytest.approx(2 / 3)
    assert cpu.finished(0.015) == []  # the overhead ends at 0.015, unreported
    assert cpu.rate_of(inter) == 1.0
    # 0.010 done by 0.015, 0.020 left at full speed.
    assert cpu.next_end() == pytest.approx(0.035)
    assert cpu.finished(0.035) == [inter]
