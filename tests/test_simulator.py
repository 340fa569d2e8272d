"""The discrete-event simulator: traces, determinism, admission, a policy sanity check."""

from __future__ import annotations

import random

import pytest

from scheduling.service_time import FixedServiceTime
from scheduling.simulator import Arrival, SimResult, make_jobs, simulate
from tests.factories import SERVICE, TOKEN_BASES, drive, make_config, make_scheduler


def arrival(t: float, job_class: str = "batch", samples: int = 1, **kw) -> Arrival:
    fields = {
        "workload": "resnet18",
        "backend": "pytorch",
        "precision": "fp32",
        "slo": 0.1 if job_class == "interactive" else 1.0,
    }
    fields.update(kw)
    return Arrival(time=t, job_class=job_class, samples=samples, **fields)  # type: ignore[arg-type]


def random_arrivals(n: int, seed: int, rate: float) -> list[Arrival]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        interactive = rng.random() < 0.3
        out.append(
            arrival(
                t,
                "interactive" if interactive else "batch",
                1 if interactive else rng.randint(1, 16),
                workload=rng.choice(["resnet18", "resnet50"]),
            )
        )
    return out


def test_split_trace_matches_the_hand_computed_one() -> None:
    config = make_config(policy="priority_slo", split=32)
    result = simulate(
        config, [arrival(0.0, samples=100), arrival(0.05, "interactive")], SERVICE, TOKEN_BASES
    )
    big, small = result.jobs
    assert result.dispatches == 5
    assert (small.start, small.end) == (pytest.approx(0.084), pytest.approx(0.095))
    assert (big.start, big.end) == (0.0, pytest.approx(0.151))
    assert result.sim_time == pytest.approx(0.151)
    assert result.outcomes() == {"ok": 2}


def test_jobs_come_back_in_arrival_order_with_ids() -> None:
    result = simulate(
        make_config(lanes=2), [arrival(0.3), arrival(0.1), arrival(0.2)], SERVICE, TOKEN_BASES
    )
    assert [(j.id, j.arrival) for j in result.jobs] == [(0, 0.1), (1, 0.2), (2, 0.3)]


def test_simulate_equals_the_test_driver() -> None:
    arrivals = random_arrivals(400, seed=3, rate=120.0)
    config = make_config(policy="dynamic", lanes=2, microbatch=True, window_ms=5, capacity=500)
    result = simulate(config, arrivals, SERVICE, TOKEN_BASES)
    jobs = make_jobs(arrivals)
    drive(
        make_scheduler(policy="dynamic", lanes=2, microbatch=True, window_ms=5, capacity=500), jobs
    )
    assert [(j.start, j.end, j.lane) for j in result.jobs] == [
        (j.start, j.end, j.lane) for j in jobs
    ]


def test_deterministic_for_a_seed_and_jitter_changes_with_it() -> None:
    arrivals = random_arrivals(300, seed=1, rate=80.0)
    config = make_config(policy="priority_slo", lanes=2, microbatch=True)

    def ends(seed: int) -> list[float | None]:
        return [
            j.end
            for j in simulate(config, arrivals, SERVICE, TOKEN_BASES, jitter=0.3, seed=seed).jobs
        ]

    assert ends(7) == ends(7)
    assert ends(7) != ends(8)


def test_jitter_has_mean_one() -> None:
    arrivals = [arrival(float(i)) for i in range(4000)]  # never queue
    result = simulate(make_config(), arrivals, SERVICE, TOKEN_BASES, jitter=0.5, seed=0)
    mean = sum(j.end - j.start for j in result.jobs) / len(result.jobs)
    assert mean == pytest.approx(0.011, rel=0.05)
    with pytest.raises(ValueError, match="jitter"):
        simulate(make_config(), arrivals, SERVICE, TOKEN_BASES, jitter=-1.0)


def test_admission_refusals_become_rejected_jobs() -> None:
    arrivals = [arrival(0.0) for _ in range(5)] + [arrival(0.0, workload="vit_b_16")]
    config = make_config(queue_limit={"batch": 1}, capacity=200)
    result = simulate(config, arrivals, SERVICE, TOKEN_BASES)
    assert result.outcomes() == {"ok": 1, "rejected": 5}  # all submitted before a poll
    rejected = [j for j in result.jobs if j.outcome == "rejected"]
    assert all(j.end == 0.0 and j.error for j in rejected)
    assert "264 tokens" in rejected[-1].error  # type: ignore[operator]


def test_shedding_in_simulation() -> None:
    arrivals = [arrival(0.0, "interactive", slo=0.02) for _ in range(4)]
    result = simulate(make_config(shed_late=True), arrivals, SERVICE, TOKEN_BASES)
    assert result.outcomes() == {"ok": 1, "shed": 3}


def test_empty_input() -> None:
    result = simulate(make_config(), [], SERVICE, TOKEN_BASES)
    assert result == SimResult(jobs=[], dispatches=0, sim_time=0.0)


def test_policies_under_load() -> None:
    arrivals = random_arrivals(6000, seed=11, rate=75.0)  # ≈ 85 % of two lanes, unbatched
    results = {
        policy: simulate(
            make_config(policy=policy, lanes=2, microbatch=True), arrivals, SERVICE, TOKEN_BASES
        )
        for policy in ("fifo", "priority_slo", "batch_aware", "dynamic")
    }
    for result in results.values():
        assert result.outcomes() == {"ok": len(arrivals)}
        assert all(j.arrival <= j.start <= j.end for j in result.jobs)  # type: ignore[operator]
    interactive = {p: r.slo_attainment("interactive") for p, r in results.items()}
    assert interactive["priority_slo"] >= interactive["fifo"]
    assert interactive["dynamic"] >= interactive["fifo"]
    assert interactive["dynamic"] >= interactive["priority_slo"] - 0.02
    assert results["dynamic"].slo_attainment("batch") >= 0.95  # not starved


def test_policy_model_is_what_the_scheduler_believes() -> None:
    # The truth is 11 ms per job; a pessimistic belief (100 ms) makes shedding drop
    # a job that the truth would have served in time.
    pessimist = FixedServiceTime.linear(100.0, 0.0)
    arrivals = [arrival(0.0, "interactive", slo=0.05)]
    config = make_config(shed_late=True)
    believed = simulate(config, arrivals, SERVICE, TOKEN_BASES, policy_model=pessimist)
    assert believed.outcomes() == {"shed": 1}
    truthful = simulate(config, arrivals, SERVICE, TOKEN_BASES)
    assert truthful.outcomes() == {"ok": 1}
    assert truthful.jobs[0].end == pytest.approx(0.011)
