"""The policy seam: a Protocol, the scheduler-side view it may read, and two bases.

A policy only *orders*: given the queued jobs it returns the best one that is
ready to lead a dispatch. Forming micro-batches, splitting, lanes and tokens
stay in the scheduler, so a new policy is one file and one registry line.

Every ordering ends with the tie-break (arrival, id), so decisions are
deterministic for a given input.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Any, ClassVar, Protocol

from scheduling.job import Job
from scheduling.policies.weights import DynamicWeights
from scheduling.service_time import ServiceTimeModel


class PolicySettings(Protocol):
    """What a policy reads of the scheduler's config (scheduling.config.SchedulerConfig).

    A Protocol rather than the config class: the config asks this package's
    registry for policy names, so the policies must not import the config.
    """

    @property
    def lanes(self) -> int:
        """Concurrent executors."""
        ...

    @property
    def max_dispatch_ms(self) -> float | None:
        """Service-time budget of one dispatch, if any."""
        ...

    @property
    def weights(self) -> DynamicWeights:
        """Weights of the dynamic policy's score."""
        ...


class QueueView(Protocol):
    """What a policy may read about the queue (the scheduler implements it)."""

    def group_lanes(self, job: Job) -> int:
        """Live lanes of the group that runs `job`'s class (nodes join and leave)."""
        ...

    def ready(self, job: Job, now: float) -> bool:
        """Whether `job` may lead a dispatch now (not held by its batching window)."""
        ...

    def batchable(self, job: Job) -> bool:
        """Whether `job`'s class may be merged with others."""
        ...

    def dispatch_cap(self, job: Job) -> int:
        """Most samples a dispatch led by `job` may carry (batch, split and token caps)."""
        ...

    def batch_samples(self, job: Job) -> int:
        """Samples a dispatch led by `job` would carry if formed now."""
        ...

    def dispatch_tokens(self, job: Job, samples: int) -> int:
        """Tokens a dispatch of `samples` samples of `job`'s model would hold."""
        ...


class Policy(Protocol):
    """Orders queued jobs. The scheduler tells it what enters and leaves the queue.

    Before `discard(job)` the scheduler sets `job.remaining = 0`, so a policy may
    drop entries lazily by checking that field.
    """

    name: ClassVar[str]

    def push(self, job: Job) -> None:
        """A job entered the queue."""
        ...

    def discard(self, job: Job) -> None:
        """A job left the queue (fully dispatched, cancelled, shed or failed)."""
        ...

    def pick(self, now: float, view: QueueView) -> Job | None:
        """The best queued job that is ready to lead a dispatch; it stays queued."""
        ...

    def order(self, jobs: list[Job], now: float, view: QueueView) -> list[Job]:
        """`jobs` sorted best first (used to choose micro-batch companions)."""
        ...

    def ahead(self, job: Job, now: float, view: QueueView) -> list[Job]:
        """Queued jobs that would lead a dispatch before `job` (not yet queued), best first.

        Admission uses it to add up the work in front of a new job.
        """
        ...


class HeapPolicy:
    """A policy whose key is fixed at push time: O(log n) per job, lazy removal.

    Subclasses define `key(job)`, a tuple ending in (arrival, id). A job that
    leaves from inside the heap (a micro-batch companion, a cancellation) stays
    as a stale entry until it surfaces; so that stale entries cannot pile up
    (each holds its job, and a job holds its input tensor), the heap is emptied
    when no live job is left and rebuilt when stale entries outnumber live ones.
    """

    name: ClassVar[str] = ""

    def __init__(self, config: PolicySettings, service_model: ServiceTimeModel | None) -> None:
        self.config = config
        self.service_model = service_model
        # Entries are key + (job,); ids are unique, so comparison never reaches the Job.
        self._heap: list[tuple[Any, ...]] = []
        #: Jobs pushed and not yet discarded.
        self._live = 0

    def key(self, job: Job) -> tuple[Any, ...]:
        """The job's static ordering key, smallest first."""
        raise NotImplementedError

    def push(self, job: Job) -> None:
        """Queue the job under its static key."""
        heappush(self._heap, (*self.key(job), job))
        self._live += 1

    def discard(self, job: Job) -> None:
        """The entry is dropped when it surfaces with remaining == 0, or at a rebuild."""
        self._live -= 1
        heap = self._heap
        if not self._live:
            heap.clear()
        elif len(heap) > 2 * self._live + 32:
            # Amortised O(1): a rebuild costs O(heap) and halves it at least.
            heap[:] = [entry for entry in heap if entry[-1].remaining]
            heapify(heap)

    def pick(self, now: float, view: QueueView) -> Job | None:
        """The smallest-key ready job; held jobs in front are skipped, not lost."""
        heap = self._heap
        while heap:
            job = heap[0][-1]
            if not job.remaining:
                heappop(heap)  # left the queue since it was pushed
            elif view.ready(job, now):
                return job
            else:
                return self._pick_behind_held(now, view)
        return None

    def _pick_behind_held(self, now: float, view: QueueView) -> Job | None:
        # Slow path: the top is waiting for its window. Pop until a ready job shows
        # up and push the held ones back; held jobs are few (one window's arrivals).
        heap = self._heap
        held: list[tuple[Any, ...]] = []
        found: Job | None = None
        while heap:
            entry = heappop(heap)
            job = entry[-1]
            if not job.remaining:
                continue
            held.append(entry)
            if view.ready(job, now):
                found = job
                break
        for entry in held:
            heappush(heap, entry)
        return found

    def order(self, jobs: list[Job], now: float, view: QueueView) -> list[Job]:
        """Sort by the static key."""
        return sorted(jobs, key=self.key)

    def ahead(self, job: Job, now: float, view: QueueView) -> list[Job]:
        """Live heap entries whose key is smaller than the job's, in key order."""
        key = self.key(job)
        before = [e for e in self._heap if e[-1].remaining and e[:-1] < key]
        before.sort(key=lambda e: e[:-1])
        return [e[-1] for e in before]

    def __len__(self) -> int:
        """Heap entries, stale ones included (an upper bound on queued jobs)."""
        return len(self._heap)


class ScanPolicy:
    """A policy whose ranking depends on `now` or on the queue: O(queue) per pick.

    Subclasses define `rank(job, now, view)`, a tuple ending in (arrival, id).
    Queues are short at realistic load, so a scan beats keeping a heap fresh.
    """

    name: ClassVar[str] = ""

    def __init__(self, config: PolicySettings, service_model: ServiceTimeModel | None) -> None:
        self.config = config
        self.service_model = service_model
        # Insertion-ordered, so a scan meets jobs in submit order.
        self._jobs: dict[int, Job] = {}

    def rank(self, job: Job, now: float, view: QueueView) -> tuple[Any, ...]:
        """The job's ordering key at `now`, smallest first."""
        raise NotImplementedError

    def push(self, job: Job) -> None:
        """Remember the job."""
        self._jobs[job.id] = job

    def discard(self, job: Job) -> None:
        """Forget the job."""
        self._jobs.pop(job.id, None)

    def pick(self, now: float, view: QueueView) -> Job | None:
        """The ready job with the smallest rank."""
        best: Job | None = None
        best_rank: tuple[Any, ...] | None = None
        rank = self.rank
        ready = view.ready
        for job in self._jobs.values():
            if not ready(job, now):
                continue
            if best is None:
                best = job  # ranked only if a rival shows up: a lone job needs no score
                continue
            if best_rank is None:
                best_rank = rank(best, now, view)
            r = rank(job, now, view)
            if r < best_rank:
                best, best_rank = job, r
        return best

    def order(self, jobs: list[Job], now: float, view: QueueView) -> list[Job]:
        """Sort by rank at `now`."""
        return sorted(jobs, key=lambda job: self.rank(job, now, view))

    def ahead(self, job: Job, now: float, view: QueueView) -> list[Job]:
        """Queued jobs ranked before the job at `now`, best first."""
        mine = self.rank(job, now, view)
        ranked = [(self.rank(j, now, view), j) for j in self._jobs.values()]
        return [j for r, j in sorted(ranked, key=lambda rj: rj[0]) if r < mine]

    def __len__(self) -> int:
        """Queued jobs."""
        return len(self._jobs)
