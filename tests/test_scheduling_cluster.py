"""The core on a cluster: lanes on nodes, tokens per node, lanes joining and leaving,
and the one retry of a dispatch whose node was lost (fake clock, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduling.errors import NoLane
from scheduling.membership import NO_TIME_TO_RETRY
from scheduling.placement import DEFAULT_NODE
from scheduling.tokens import token_cost
from tests.factories import make_job, make_scheduler

#: resnet18 at 1 sample: 80 + 4 tokens.
ONE = token_cost(80, 1)


def two_nodes(capacity: int = ONE, lanes_per_node: int = 1, **knobs: object):
    """A scheduler whose lanes are half on node a, half on node b."""
    sched = make_scheduler(lanes=lanes_per_node, capacity=capacity, **knobs)
    for lane in range(lanes_per_node):
        sched.place(lane, "a")
    for _ in range(lanes_per_node):
        sched.add_lane("default", "b")
    return sched


def test_lanes_start_on_the_local_node_and_can_be_placed() -> None:
    sched = make_scheduler(lanes=2)
    assert [sched.node_of(lane) for lane in range(2)] == [DEFAULT_NODE] * 2
    sched.place(1, "n1")
    assert sched.node_of(1) == "n1"
    assert sched.live_lanes() == [0, 1]


def test_tokens_are_a_budget_per_node() -> None:
    # Each node's budget holds one dispatch: one node runs one, two nodes run two.
    one = make_scheduler(lanes=2, capacity=ONE)
    two = two_nodes(capacity=ONE)
    for sched in (one, two):
        sched.submit(make_job(id=0), 0.0)
        sched.submit(make_job(id=1), 0.0)
    assert len(one.poll(0.0)) == 1
    started = two.poll(0.0)
    assert sorted(two.node_of(d.lane) for d in started) == ["a", "b"]
    assert (two.tokens_in_use, two.token_capacity) == (2 * ONE, 2 * ONE)


def test_a_dispatch_goes_to_a_lane_whose_node_has_room() -> None:
    # Node a's budget is taken by a running dispatch; a's second lane is idle but the
    # next dispatch must go to b.
    sched = two_nodes(capacity=ONE, lanes_per_node=2)
    sched.submit(make_job(id=0), 0.0)
    [first] = sched.poll(0.0)
    sched.submit(make_job(id=1), 0.0)
    [second] = sched.poll(0.0)
    assert sched.node_of(first.lane) != sched.node_of(second.lane)


def test_an_added_lane_serves_and_indexes_only_grow() -> None:
    sched = make_scheduler(lanes=1)
    sched.submit(make_job(id=0), 0.0)
    [d0] = sched.poll(0.0)
    lane = sched.add_lane("default", "n2")
    assert lane == 1 and sched.lanes == 2
    sched.submit(make_job(id=1), 0.0)
    [d1] = sched.poll(0.0)
    assert d1.lane == lane and sched.node_of(lane) == "n2"
    sched.remove_lane(lane, 0.0)
    assert sched.add_lane("default", "n3") == 2  # never reused
    assert len(sched.complete(d0, 0.01) + sched.complete(d1, 0.01)) == 2


def test_a_removed_idle_lane_is_never_used_again() -> None:
    sched = make_scheduler(lanes=2)
    sched.remove_lane(0, 0.0)
    assert sched.live_lanes() == [1]
    for i in range(3):
        sched.submit(make_job(id=i), float(i))
        [d] = sched.poll(float(i))
        assert d.lane == 1
        sched.complete(d, float(i) + 0.5)


def test_a_busy_lane_leaves_when_its_dispatch_ends() -> None:
    sched = make_scheduler(lanes=1)
    sched.add_lane("default", "n2")
    sched.submit(make_job(id=0), 0.0)
    [d] = sched.poll(0.0)
    sched.remove_lane(d.lane, 0.001)
    assert d.lane not in sched.live_lanes() and sched.lane_busy(d.lane)
    assert sched.complete(d, 0.02)[0].outcome == "ok"
    assert not sched.lane_busy(d.lane)
    sched.submit(make_job(id=1), 0.03)
    [d2] = sched.poll(0.03)
    assert d2.lane != d.lane


def test_a_group_without_lanes_refuses_with_no_lane() -> None:
    sched = make_scheduler(lanes=1)
    sched.remove_lane(0, 0.0)
    with pytest.raises(NoLane, match="no lane of group 'default'"):
        sched.submit(make_job(), 0.0)
    sched.add_lane("default", "n2")
    sched.submit(make_job(), 0.1)
    assert len(sched.poll(0.1)) == 1


def test_place_refuses_a_busy_lane() -> None:
    sched = make_scheduler(lanes=1)
    sched.submit(make_job(), 0.0)
    sched.poll(0.0)
    with pytest.raises(ValueError, match="cannot move"):
        sched.place(0, "elsewhere")
    with pytest.raises(ValueError, match="no lane group"):
        sched.add_lane("nope", "n")


def test_a_lost_dispatch_is_retried_once_on_another_lane() -> None:
    sched = two_nodes(capacity=1000, microbatch=True, window_ms=0)
    a, b = make_job(id=0), make_job(id=1)
    sched.submit(a, 0.0)
    sched.submit(b, 0.0)
    [lost] = sched.poll(0.0)
    assert [p.job for p in lost.parts] == [a, b]
    sched.remove_lane(lost.lane, 0.005)
    assert sched.requeue(lost, 0.005, "node a left") == []
    assert sched.tokens_in_use == 0 and sched.in_flight == 0
    [retry] = sched.poll(0.005)
    assert retry.retried and retry.id != lost.id and retry.lane != lost.lane
    assert retry.parts == lost.parts and retry.tokens == lost.tokens
    assert sched.complete(retry, 0.03) == [a, b]
    assert a.outcome == b.outcome == "ok"


def test_a_retry_that_is_lost_again_fails_its_jobs_with_the_reason() -> None:
    sched = two_nodes()
    job = make_job()
    sched.submit(job, 0.0)
    [lost] = sched.poll(0.0)
    sched.requeue(lost, 0.001, "node a left")
    [retry] = sched.poll(0.001)
    assert sched.requeue(retry, 0.002, "node b left") == [job]
    assert (job.outcome, job.error) == ("error", "node b left")
    assert sched.poll(0.003) == [] and sched.tokens_in_use == 0


def test_a_retry_with_no_time_left_fails_in_poll() -> None:
    sched = two_nodes()
    job = make_job(job_class="interactive", slo=0.020)  # 11 ms per run
    sched.submit(job, 0.0)
    [lost] = sched.poll(0.0)
    sched.requeue(lost, 0.015, "node a left")  # 15 + 11 ms > 20 ms
    assert sched.poll(0.015) == []
    [failed] = sched.take_failed()
    assert failed is job and job.error == "node a left" + NO_TIME_TO_RETRY
    assert sched.take_failed() == []


def test_a_retry_waits_for_a_free_lane_and_goes_first() -> None:
    sched = make_scheduler(lanes=2)
    first, second, queued = make_job(id=0), make_job(id=1), make_job(id=2)
    sched.submit(first, 0.0)
    sched.submit(second, 0.0)
    d0, d1 = sched.poll(0.0)
    sched.submit(queued, 0.001)
    sched.remove_lane(d0.lane, 0.002)
    sched.requeue(d0, 0.002, "node left")
    assert sched.poll(0.002) == []  # the other lane is busy
    sched.complete(d1, 0.011)
    [retry] = sched.poll(0.011)
    assert retry.retried and retry.parts[0].job is first  # before the queued job


def test_a_cancelled_job_waiting_for_its_retry_is_not_run() -> None:
    sched = make_scheduler(lanes=2)
    job, other = make_job(id=0), make_job(id=1)
    sched.submit(job, 0.0)
    sched.submit(other, 0.0)
    d0, d1 = sched.poll(0.0)
    sched.requeue(d0, 0.001, "node left")
    assert sched.cancel(job.id, 0.002) is job
    sched.complete(d1, 0.011)
    assert sched.poll(0.011) == [] and sched.take_failed() == []
    assert job.outcome == "cancelled" and job.parts_in_flight == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["submit", "poll", "end", "lose", "join", "leave"]), max_size=60))
def test_every_job_ends_once_whatever_the_membership(ops: list[str]) -> None:
    """Invariants under any order of arrivals, completions, node losses and joins:
    each node's tokens stay within its budget, and once everything is drained every
    submitted job has exactly one outcome."""
    sched = two_nodes(capacity=2 * ONE, lanes_per_node=2, microbatch=True, window_ms=0)
    jobs, running, ended, now, nodes = [], [], [], 0.0, 2
    for op in ops:
        now += 0.001
        if op == "submit":
            job = make_job(id=len(jobs), arrival=now, samples=1 + len(jobs) % 3)
            jobs.append(job)
            try:
                sched.submit(job, now)
            except NoLane:
                ended.append(job)
        elif op == "poll" or (op == "end" and not running):
            running += sched.poll(now)
        elif op == "end":
            ended += sched.complete(running.pop(0), now)
        elif op == "lose" and running:
            lost = running.pop()
            if lost.lane in sched.live_lanes():
                sched.remove_lane(lost.lane, now)
            ended += sched.requeue(lost, now, "node left")
        elif op == "join":
            nodes += 1
            sched.add_lane("default", f"n{nodes}")
        elif op == "leave" and len(sched.live_lanes()) > 1:
            sched.remove_lane(sched.live_lanes()[0], now)
        assert sched.tokens_in_use <= 2 * ONE * (nodes + 1)
        ended += sched.take_failed() + sched.take_shed()
    if not sched.live_lanes():
        sched.add_lane("default", "last")
    for _ in range(10 * len(jobs) + 10):  # drain
        now += 0.05
        running += sched.poll(now)
        ended += sched.take_failed()
        if running:
            ended += sched.complete(running.pop(0), now)
    assert sorted(j.id for j in ended) == [j.id for j in jobs]
    assert all(j.outcome in ("ok", "error", "rejected", None) for j in jobs)
