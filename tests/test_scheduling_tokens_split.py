"""Token blocking, head of line, and job splitting, with hand-computed traces."""

from __future__ import annotations

import pytest

from scheduling.errors import JobTooLarge, UnknownWorkload
from scheduling.tokens import TokenCost, max_samples_within, table_cost, token_cost
from tests.factories import drive, make_job, make_scheduler

ms = 1e-3


def by_id(jobs):
    return {j.id: j for j in jobs}


def test_dispatch_waits_until_its_tokens_fit() -> None:
    jobs = by_id(
        [
            make_job(id=0, workload="resnet50", samples=32, arrival=0.0),  # 288 tokens, 42 ms
            make_job(id=1, workload="resnet18", samples=1, arrival=0.001),  # 84 tokens
        ]
    )
    seen: list[int] = []
    sched = make_scheduler(capacity=300, lanes=2)
    drive(sched, jobs.values(), on_poll=lambda s, now, started: seen.append(s.tokens_in_use))
    assert max(seen) <= 300
    assert jobs[1].start == jobs[0].end == pytest.approx(42 * ms)
    assert jobs[1].lane == 0  # freed just now: warm, before the never-used lane 1


def test_a_blocked_head_is_not_bypassed_by_a_smaller_job() -> None:
    jobs = by_id(
        [
            make_job(id=0, workload="resnet50", samples=32, arrival=0.0),  # 288 of 400
            make_job(id=1, workload="vit_b_16", arrival=0.001),  # 264: blocked
            make_job(id=2, workload="tiny", arrival=0.002),  # 14 would fit, must wait
        ]
    )
    drive(make_scheduler(capacity=400, lanes=3), jobs.values())
    assert jobs[1].start == pytest.approx(42 * ms)
    assert jobs[2].start == pytest.approx(42 * ms)


def test_a_higher_class_is_not_held_behind_a_blocked_lower_one() -> None:
    jobs = by_id(
        [
            make_job(id=0, workload="resnet50", samples=32, arrival=0.0),
            make_job(id=1, workload="vit_b_16", arrival=0.001),
            make_job(id=2, workload="tiny", job_class="interactive", arrival=0.002),
        ]
    )
    drive(make_scheduler(policy="priority_slo", capacity=400, lanes=3), jobs.values())
    assert jobs[2].start == 0.002  # outranks the blocked batch head, and fits
    assert jobs[1].start == pytest.approx(42 * ms)


def test_dispatch_size_is_cut_to_what_the_capacity_can_hold() -> None:
    job = make_job(samples=32)
    trace = drive(make_scheduler(capacity=200, split=32), [job])
    assert trace.samples() == [30, 2]  # 80 + 4 × 30 = 200
    assert [d.tokens for d, _ in trace.dispatches] == [200, 88]


def test_max_samples_within_matches_token_cost() -> None:
    for base, precision, capacity in [(80, "fp32", 1000), (260, "fp16", 300), (10, "fp16", 11)]:
        n = max_samples_within(table_cost(base, precision), capacity, capacity)
        assert token_cost(base, n, precision) <= capacity or n == 0
        assert token_cost(base, n + 1, precision) > capacity
    assert max_samples_within(table_cost(260), 200, 200) == 0
    # A measured cost below a token per sample: the limit bounds the count.
    assert max_samples_within(TokenCost(10.0, 0.25, "profile p.csv"), 100, 64) == 64
    assert max_samples_within(TokenCost(10.0, 0.25, "profile p.csv"), 20, 64) == 40


def test_job_too_large_is_refused_at_submit() -> None:
    sched = make_scheduler(capacity=200)
    with pytest.raises(JobTooLarge) as info:
        sched.submit(make_job(workload="vit_b_16"), 0.0)
    assert (info.value.tokens, info.value.capacity) == (264, 200)
    assert "264" in str(info.value) and "200" in str(info.value)
    assert sched.pending == 0


def test_unknown_workload_is_a_clear_key_error() -> None:
    sched = make_scheduler()
    with pytest.raises(KeyError) as info:
        sched.submit(make_job(workload="gpt5"), 0.0)
    assert isinstance(info.value, UnknownWorkload)
    assert "unknown workload 'gpt5'" in str(info.value) and "resnet18" in str(info.value)


def test_a_100_sample_job_runs_as_32_32_32_4() -> None:
    job = make_job(samples=100)
    trace = drive(make_scheduler(split=32), [job])
    assert trace.samples() == [32, 32, 32, 4]
    assert [d.parts[0].offset for d, _ in trace.dispatches] == [0, 32, 64, 96]
    assert [end for _, end in trace.dispatches] == pytest.approx([0.042, 0.084, 0.126, 0.140])
    assert trace.finished == [job]  # once, when the last part ends
    assert (job.start, job.end, job.outcome) == (0.0, pytest.approx(0.140), "ok")


def test_interactive_job_runs_between_parts_on_one_lane() -> None:
    big = make_job(id=0, samples=100, arrival=0.0)
    small = make_job(id=1, job_class="interactive", arrival=0.050)
    trace = drive(make_scheduler(policy="priority_slo", split=32), [big, small])
    assert [(d.parts[0].job.id, d.samples) for d, _ in trace.dispatches] == [
        (0, 32),
        (0, 32),
        (1, 1),
        (0, 32),
        (0, 4),
    ]
    assert (small.start, small.end) == (pytest.approx(0.084), pytest.approx(0.095))
    assert big.end == pytest.approx(0.151)
    assert [j.id for j in trace.finished] == [1, 0]


def test_fifo_finishes_dispatching_the_split_job_first() -> None:
    big = make_job(id=0, samples=100, arrival=0.0)
    small = make_job(id=1, job_class="interactive", arrival=0.050)
    drive(make_scheduler(policy="fifo", split=32), [big, small])
    assert small.start == pytest.approx(0.140)


def test_parts_spread_over_two_lanes() -> None:
    job = make_job(samples=100)
    trace = drive(make_scheduler(split=32, lanes=2), [job])
    assert [(d.lane, d.start) for d, _ in trace.dispatches] == [
        (0, 0.0),
        (1, 0.0),
        (0, pytest.approx(0.042)),
        (1, pytest.approx(0.042)),
    ]
    assert job.end == pytest.approx(0.084)


def test_batchable_parts_obey_max_batch_and_others_only_the_split_limit() -> None:
    batch = make_job(id=0, samples=40)
    inter = make_job(id=1, job_class="interactive", samples=40)
    sched = make_scheduler(microbatch=True, max_batch=16, split=32, lanes=4)
    sched.submit(batch, 0.0)
    sched.submit(inter, 0.0)
    started = sched.poll(0.0)
    assert sorted((d.parts[0].job.id, d.samples) for d in started) == [
        (0, 16),
        (0, 16),
        (1, 8),
        (1, 32),
    ]


def test_no_split_limit_runs_a_job_whole() -> None:
    job = make_job(samples=100)
    trace = drive(make_scheduler(split=None), [job])
    assert trace.samples() == [100]


def test_service_time_budget_caps_dispatch_size() -> None:
    # 10 ms + 1 ms/sample: a 15 ms budget allows 5 samples, below the 32-sample split.
    big = make_job(id=0, samples=12, arrival=0.0)
    sched = make_scheduler(split=32, max_dispatch_ms=15.0, lanes=2)
    sched.submit(big, 0.0)
    assert [d.samples for d in sched.poll(0.0)] == [5, 5]


def test_budget_below_one_sample_still_runs_single_samples() -> None:
    job = make_job(id=0, samples=3, arrival=0.0)
    sched = make_scheduler(split=32, max_dispatch_ms=1.0, lanes=1)
    sched.submit(job, 0.0)
    assert [d.samples for d in sched.poll(0.0)] == [1]


def test_budget_keeps_interactive_wait_short_on_one_lane() -> None:
    big = make_job(id=0, samples=40, arrival=0.0)
    small = make_job(id=1, job_class="interactive", arrival=0.001)
    # Parts of 10 samples (20 ms) instead of 32 (42 ms): the interactive job starts at 20 ms.
    drive(make_scheduler(policy="priority_slo", split=32, max_dispatch_ms=20.0), [big, small])
    assert small.start == pytest.approx(0.020)


def test_largest_dispatch_is_the_larger_sample_cap_cut_to_the_tokens() -> None:
    assert make_scheduler().largest_dispatch("resnet18", "fp32") == 32  # the split
    merged = make_scheduler(microbatch=True, max_batch=64, split=16)
    assert merged.largest_dispatch("resnet18", "fp32") == 16  # batch cap: min(64, 16)
    unsplit = make_scheduler(split=None)  # no split: only the tokens bound it
    assert unsplit.largest_dispatch("tiny", "fp32") == 247  # 10 + 4 × 247 <= 1000
    assert make_scheduler(capacity=100).largest_dispatch("resnet18", "fp32") == 5  # 80 + 4 × 5
    # A budget shortens dispatches as the model learns; lanes still warm up for the bound.
    budgeted = make_scheduler(max_dispatch_ms=15.0)  # 10 ms + 1 ms a sample: 5 samples
    assert budgeted.dispatch_caps("batch", ("resnet18", "pytorch", "fp32"))[1] == 5
    assert budgeted.largest_dispatch("resnet18", "fp32") == 32
    # Not even one sample fits: refused at submit; lanes warm up for one all the same.
    assert make_scheduler(capacity=200).largest_dispatch("vit_b_16", "fp32") == 1
    with pytest.raises(UnknownWorkload):
        make_scheduler().largest_dispatch("gpt5", "fp32")
