"""The simulator on a cluster: nodes × lanes under one scheduler, tokens per node, the hop.

Virtual time only; expected times are worked out by hand.
"""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.arrivals import arrival_rate, capacity_jobs_per_s, poisson_arrivals
from loadgen.config import ConfigError, ExperimentConfig, parse_experiment_config
from loadgen.experiment import build_service_model, simulate_run
from scheduling.cpu_share import LaneCpu, SharedCores
from scheduling.job import Dispatch
from scheduling.sim_cluster import PerNode, Topology
from scheduling.simulator import Arrival, SimResult, simulate
from tests.factories import SERVICE, TOKEN_BASES, make_config

#: Per node, an interactive lane at normal priority and a low batch lane, 2 threads each.
GROUPS = [
    {"name": "interactive", "count": 1, "classes": ["interactive"], "threads": 2},
    {"name": "batch", "count": 1, "classes": ["batch"], "threads": 2, "priority": "low"},
]


def experiment(**overrides: Any) -> ExperimentConfig:
    """A mixed ResNet-18 experiment on fixed service times, interactive lanes admitting."""
    data: dict[str, Any] = {
        "name": "cluster",
        "duration_s": 60,
        "load": 0.7,
        "interactive_ratio": 0.3,
        "batch_sizes": {"interactive": {"choices": [1]}, "batch": {"min": 4, "max": 16}},
        "service_time": {"fixed": {"resnet18": {"base_ms": 8, "per_sample_ms": 3.5}}},
        "scheduler": {
            "policy": "priority_slo",
            "lane_groups": GROUPS,
            "admission": {
                "interactive": {"refuse_late": True, "shed_late": True, "margin_ms": 5},
                "batch": {"refuse_late": False, "shed_late": False},
            },
            "microbatch": {"enabled": True, "window_ms": 10, "classes": ["batch"]},
        },
        "jitter": 0.2,
        "seed": 5,
    }
    data.update(overrides)
    return parse_experiment_config(data)


def run(config: ExperimentConfig) -> tuple[SimResult, dict[str, Any]]:
    model = build_service_model(config)
    arrivals = poisson_arrivals(config, arrival_rate(config, model), config.duration_s, 5)
    sim = simulate_run(config, arrivals, model)
    return sim.result, sim.summary


def trace(result: SimResult) -> list[tuple[Any, ...]]:
    return [(j.outcome, j.start, j.end, j.lane) for j in result.jobs]


def arrival(t: float, job_class: str = "batch", samples: int = 1) -> Arrival:
    slo = 0.1 if job_class == "interactive" else 1.0
    return Arrival(t, "resnet18", "pytorch", "fp32", job_class, samples, slo)  # type: ignore[arg-type]


@pytest.mark.parametrize("service_time", [{}, {"cores": 2, "request_cpu_ms": 1.4}])
def test_one_node_is_the_single_machine_job_for_job(service_time: dict[str, Any]) -> None:
    st = {"fixed": {"resnet18": {"base_ms": 8, "per_sample_ms": 3.5}}, **service_time}
    alone, summary = run(experiment(service_time=st))
    one, one_summary = run(experiment(service_time=st, cluster={"nodes": 1, "network_ms": 0}))
    assert trace(one) == trace(alone)
    assert one.dispatches == alone.dispatches and one.sim_time == alone.sim_time
    assert summary["run"]["topology"] == {"nodes": 1, "lanes": 2, "network_ms": 0.0}
    assert one_summary["classes"] == summary["classes"]


def test_four_nodes_at_four_times_the_load_keep_interactive_attainment() -> None:
    # A tight interactive SLO (20 ms for 11.5 ms of work) at 0.9 load: some are refused.
    st = {"fixed": {"resnet18": {"base_ms": 8, "per_sample_ms": 3.5}}, "cores": 2}
    knobs: dict[str, Any] = {
        "service_time": st,
        "load": 0.9,
        "interactive_ratio": 0.5,
        "slo_ms": {"interactive": 20, "batch": 1000},
    }
    one = experiment(**knobs, cluster={"network_ms": 0.5})
    four = experiment(**knobs, cluster={"nodes": 4, "network_ms": 0.5})
    model = build_service_model(one)
    assert capacity_jobs_per_s(four, model) == pytest.approx(4 * capacity_jobs_per_s(one, model))
    single, _ = run(one)
    cluster, summary = run(four)
    assert len(cluster.jobs) == pytest.approx(4 * len(single.jobs), rel=0.1)
    assert summary["run"]["topology"] == {"nodes": 4, "lanes": 8, "network_ms": 0.5}
    assert {j.lane for j in cluster.jobs if j.lane is not None} == set(range(8))
    # One queue over every node's lanes: at least as good as one node at a quarter of
    # the load (pooling only helps), and batch work is not starved for it.
    inter_1, inter_4 = single.slo_attainment("interactive"), cluster.slo_attainment("interactive")
    assert 0.8 < inter_1 <= inter_4 + 0.02
    assert cluster.slo_attainment("batch") >= single.slo_attainment("batch") - 0.02 > 0.9


def test_the_hop_counts_in_the_lanes_capacity() -> None:
    # 2 ms a job on 2 one-thread lanes with 2 cores: 1000 jobs/s. A 2 ms hop holds each
    # lane 4 ms a job but leaves the CPU free: the lanes saturate first, at 500.
    fixed = {"resnet18": {"base_ms": 1, "per_sample_ms": 1}}
    sizes = {"interactive": {"choices": [1]}, "batch": {"choices": [1]}}

    def capacity(cores: int | None, network_ms: float) -> float:
        config = experiment(
            service_time={"fixed": fixed, "cores": cores},
            batch_sizes=sizes,
            scheduler={"lanes": 2},
            cluster={"network_ms": network_ms},
        )
        return capacity_jobs_per_s(config, build_service_model(config))

    assert capacity(2, 0) == pytest.approx(1000.0)
    assert capacity(2, 2) == pytest.approx(500.0)
    assert capacity(None, 2) == pytest.approx(500.0)


def test_tokens_are_per_node() -> None:
    # 100 tokens hold one one-sample ResNet-18 dispatch (84), not two.
    arrivals = [arrival(0.0), arrival(0.0)]
    one_node = simulate(make_config(lanes=2, capacity=100), arrivals, SERVICE, TOKEN_BASES)
    assert [j.start for j in one_node.jobs] == [0.0, pytest.approx(0.011)]
    two_nodes = simulate(
        make_config(lanes=1, capacity=100),
        arrivals,
        SERVICE,
        TOKEN_BASES,
        topology=Topology(nodes=2),
    )
    assert [j.start for j in two_nodes.jobs] == [0.0, 0.0]
    assert sorted(j.lane for j in two_nodes.jobs) == [0, 1]  # one lane on each node


@pytest.mark.parametrize("cores", [None, 1])
def test_the_network_hop_lengthens_every_dispatch(cores: int | None) -> None:
    hop = Topology(nodes=2, network_s=0.005)
    result = simulate(
        make_config(), [arrival(0.0)], SERVICE, TOKEN_BASES, cores=cores, topology=hop
    )
    (job,) = result.jobs
    assert job.end - job.arrival == pytest.approx(0.011 + 0.005)


def test_the_hop_leaves_the_cpu_to_other_lanes() -> None:
    # One core, two lanes: the second job starts when the first one's work ends, and runs
    # at full speed while the first one's result is still on its way back.
    hop = Topology(network_s=0.005)
    arrivals = [arrival(0.0), arrival(0.011)]
    result = simulate(make_config(lanes=2), arrivals, SERVICE, TOKEN_BASES, cores=1, topology=hop)
    first, second = result.jobs
    assert first.end == pytest.approx(0.016)
    assert (second.start, second.end) == (pytest.approx(0.011), pytest.approx(0.027))


def test_event_loop_work_runs_on_node_0_only() -> None:
    lanes = [LaneCpu(1, "normal"), LaneCpu(1, "normal")]
    cluster = PerNode([SharedCores(1, lanes), SharedCores(1, lanes)], [0, 1])
    on_0, on_1 = (
        Dispatch(0, 0, "m", "onnx", "fp32", [], 0, 0.0),
        Dispatch(1, 1, "m", "onnx", "fp32", [], 0, 0.0),
    )
    cluster.start(on_0, 0.010, 0.0)
    cluster.start(on_1, 0.010, 0.0)
    cluster.overhead(0.010, 0.0)  # node-0's one core: two threads at half speed
    assert cluster.next_end() == pytest.approx(0.010)
    assert cluster.finished(0.010) == [on_1]
    assert cluster.next_end() == pytest.approx(0.020)
    assert cluster.finished(0.020) == [on_0]


@pytest.mark.parametrize(
    ("cluster", "key"),
    [({"nodes": 0}, "cluster.nodes"), ({"network_ms": -1}, "cluster.network_ms")],
)
def test_a_bad_cluster_is_named(cluster: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        experiment(cluster=cluster)
    with pytest.raises(ValueError, match="nodes"):
        Topology(nodes=0)
