"""Helpers the benchmarks share: repetitions, raw-backend baselines, load drivers, output.

Every benchmark measures its baseline and the system under test in the same run,
alternating them repetition by repetition (`rep_order`) so that drift on a shared,
noisy machine hits both, and quotes the median of the per-repetition figures. Its
last line of output is exactly one JSON object with those figures (`emit_json`).

Throughput is counted as work done *inside* a measurement window (`window_rate`):
each batch credits its samples in proportion to the part of its run that falls in
the window, so a 1.6 s batch cut by either edge neither counts whole nor vanishes.
The raw baseline and the gateway are counted by the same rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends.base import LoadOptions, Runner
from backends.registry import load_runner
from workloads.registry import get_workload

ROOT = Path(__file__).resolve().parents[1]
#: Where the benchmarks (and the gateways they start) find exported ONNX graphs.
ONNX_DIR = ROOT / "models" / "onnx"


# ------------------------------------------------------------------ statistics
def median(values: Iterable[float]) -> float:
    """Median of the values (NaN when there are none)."""
    data = [float(v) for v in values]
    return statistics.median(data) if data else float("nan")


def p50(values: Iterable[float]) -> float:
    """50th percentile (linear interpolation); NaN when there are no values."""
    data = np.fromiter(values, dtype=float)
    return float(np.percentile(data, 50)) if data.size else float("nan")


def rep_order(rep: int, names: Sequence[str]) -> list[str]:
    """`names` in order on even repetitions, reversed on odd ones (ABBA against drift)."""
    return list(names) if rep % 2 == 0 else list(reversed(names))


def emit_json(figures: dict[str, Any]) -> None:
    """Print the benchmark's figures as one JSON object: always its last line."""
    print(json.dumps(figures), flush=True)


@dataclass(frozen=True)
class Busy:
    """One batch's run: its start and end on a `time.perf_counter` axis, and its samples."""

    start: float
    end: float
    samples: int


def window_rate(spans: Iterable[Busy], start: float, end: float) -> float:
    """Samples per second processed inside [start, end].

    Each span credits its samples in proportion to its overlap with the window.
    """
    work = 0.0
    for s in spans:
        overlap = min(s.end, end) - max(s.start, start)
        if overlap > 0:
            work += s.samples * overlap / max(s.end - s.start, 1e-9)
    return work / (end - start)


# --------------------------------------------------------- raw-backend baselines
def synthetic_input(workload: str, batch_size: int, seed: int = 0) -> np.ndarray:
    """A seeded random float32 batch of `batch_size` samples of `workload`'s input."""
    shape = (batch_size, *get_workload(workload).spec.input_shape)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def load_runners(workload: str, count: int, threads: int, backend: str = "onnx") -> list[Runner]:
    """`count` independent runners (fp32), each with its own `threads` intra-op threads.

    Exports the ONNX graph into ONNX_DIR first if it is missing or stale, so call
    this before starting a gateway that would export the same file.
    """
    options = LoadOptions(threads=threads, onnx_dir=ONNX_DIR)
    return [load_runner(workload, backend, options) for _ in range(count)]


@dataclass(frozen=True)
class RawRun:
    """A raw-backend throughput measurement."""

    #: Samples/s processed inside the window.
    rate: float
    #: CPU the process used inside the window, percent of one core (the runner threads).
    cpu_pct: float


def raw_throughput(
    runners: Sequence[Runner], batch: np.ndarray, warmup_s: float, seconds: float
) -> RawRun:
    """`batch` run in a tight loop by one Python thread per runner, all at once.

    The threads start together, run for `warmup_s + seconds`, and are counted over
    the last `seconds` by `window_rate`. ONNX Runtime releases the GIL while it
    runs, so the threads run concurrently, as a gateway's thread lanes do.
    """
    start = time.perf_counter() + 0.05  # every thread is waiting before the clock starts
    w0 = start + warmup_s
    w1 = w0 + seconds
    spans: list[list[Busy]] = [[] for _ in runners]

    def loop(runner: Runner, out: list[Busy]) -> None:
        time.sleep(max(0.0, start - time.perf_counter()))
        n = len(batch)
        t = time.perf_counter()
        while t < w1:
            runner.run(batch)
            end = time.perf_counter()
            out.append(Busy(t, end, n))
            t = end

    threads = [
        threading.Thread(target=loop, args=(r, s), daemon=True)
        for r, s in zip(runners, spans, strict=True)
    ]
    for th in threads:
        th.start()
    time.sleep(max(0.0, w0 - time.perf_counter()))
    cpu0 = time.process_time()
    time.sleep(max(0.0, w1 - time.perf_counter()))
    cpu = (time.process_time() - cpu0) * 100.0 / seconds
    for th in threads:
        th.join()
    return RawRun(window_rate((b for s in spans for b in s), w0, w1), cpu)


def raw_latencies_ms(
    runner: Runner, batch: np.ndarray, seconds: float, min_runs: int, gaps_s: Sequence[float] = ()
) -> list[float]:
    """Run times (ms) of `batch` on `runner`: at least `min_runs` runs and `seconds` seconds.

    With `gaps_s`, one run per gap instead, sleeping that long before each: the
    model called at a request pace, from an idle machine (colder caches, idle
    cores waking up), as a lightly loaded server calls it.
    """
    for _ in range(3):
        runner.run(batch)
    times: list[float] = []
    if gaps_s:
        for gap in gaps_s:
            time.sleep(gap)
            t0 = time.perf_counter()
            runner.run(batch)
            times.append((time.perf_counter() - t0) * 1e3)
        return times
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        runner.run(batch)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


# ------------------------------------------------------------------ open loop
#: Clients `open_loop` can send with: the project's (httpx, as loadgen.client) and a lean one.
CLIENTS: tuple[str, ...] = ("httpx", "lean")
#: What a request that failed at the transport level raises, for either client.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
)


class LeanHttp:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: the cheapest way to ask.

    httpx's AsyncClient spends milliseconds of CPU per request on a slow core,
    which would be counted as gateway overhead; this one spends a tenth of that,
    and sends head and body in one write. It speaks only what the gateway
    answers: Content-Length bodies, keep-alive.
    """

    #: Idle connections older than this are not reused (uvicorn closes them after 5 s).
    MAX_IDLE_S = 3.0

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def post_json(self, path: str, body: dict[str, object]) -> tuple[int, bytes]:
        """(status, body bytes) of one POST; raises one of _TRANSPORT_ERRORS on failure."""
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode("latin-1")
        async with asyncio.timeout(self.timeout_s):
            reader, writer = await self._connection()
            writer.write(head + data)
            lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            payload = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return int(lines[0].split()[1]), payload

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A fresh-enough idle connection, or a new one."""
        while self._idle:
            reader, writer, since = self._idle.pop()
            if time.monotonic() - since < self.MAX_IDLE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        """Close every idle connection."""
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


@dataclass
class Answer:
    """One open-loop request as the client saw it, with the gateway's timing split."""

    #: Which client sent it (one of CLIENTS).
    client: str
    #: Scheduled send time to response, ms (as loadgen.client measures it).
    e2e_ms: float
    #: HTTP status, or None when the request failed at the transport level.
    status: int | None
    #: How late the client sent it, ms after its scheduled time (asyncio timer wake-up).
    late_ms: float = 0.0
    #: Which arrival it answers: its position in the `arrivals` sent.
    index: int = -1
    #: The gateway's own timing (ms), from the response body; None unless 200.
    queue_ms: float | None = None
    service_ms: float | None = None
    server_e2e_ms: float | None = None


def open_loop(
    base_url: str,
    arrivals: Sequence[Any],
    clients: Sequence[str] = ("httpx",),
    timeout_s: float = 30.0,
) -> list[Answer]:
    """Send every `scheduling.simulator.Arrival` at its time, as `loadgen.client.run_load` does.

    Same request bodies (`loadgen.client.request_body`) and the same latency
    definition (from the *scheduled* send time, the clock stopped when the body
    has arrived); unlike run_load it keeps the gateway's timing split of every
    answer. Arrival i goes through `clients[i % len(clients)]`, so clients
    compared in one call share the same load and the same moments.
    """
    import httpx

    from loadgen.client import request_body

    host, _, port = base_url.removeprefix("http://").partition(":")

    async def drive() -> list[Answer]:
        out: list[Answer] = []
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        lean = LeanHttp(host, int(port), timeout_s)
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as hx:

            async def via_httpx(body: dict[str, object]) -> tuple[int, bytes]:
                response = await hx.post("/infer", json=body)
                return response.status_code, response.content

            posts = {"httpx": via_httpx, "lean": lambda body: lean.post_json("/infer", body)}

            async def send(i: int, arrival: Any) -> None:
                name = clients[i % len(clients)]
                await asyncio.sleep(max(0.0, t0 + arrival.time - time.monotonic()))
                late_ms = (time.monotonic() - t0 - arrival.time) * 1e3
                try:
                    status, payload = await posts[name](request_body(arrival))
                except (httpx.HTTPError, *_TRANSPORT_ERRORS):
                    status, payload = None, b""
                e2e_ms = (time.monotonic() - t0 - arrival.time) * 1e3
                answer = Answer(name, e2e_ms, status, late_ms, i)
                if status == 200:
                    timing = json.loads(payload)["timing"]
                    answer.queue_ms = timing["queue_ms"]
                    answer.service_ms = timing["service_ms"]
                    answer.server_e2e_ms = timing["e2e_ms"]
                out.append(answer)

            t0 = time.monotonic()
            await asyncio.gather(*(send(i, a) for i, a in enumerate(arrivals)))
        lean.close()
        return out

    return asyncio.run(drive())


# --------------------------------------------------------- where the CPU goes
def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every process (Linux /proc; empty elsewhere)."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, cmdline)
    return out


def child_pids(marker: str) -> list[int]:
    """Pids of the children of this process whose command line contains `marker`, oldest
    first (Linux only)."""
    me = os.getpid()
    found = [pid for pid, (ppid, cmd) in _processes().items() if ppid == me and marker in cmd]
    return sorted(found, key=_start_ticks)


def child_pid(marker: str) -> int | None:
    """Pid of a child of this process whose command line contains `marker` (Linux only)."""
    pids = child_pids(marker)
    return pids[0] if pids else None


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it: its children, theirs, ... (Linux only)."""
    below: dict[int, list[int]] = {}
    for child, (ppid, _) in _processes().items():
        below.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo.extend(below.get(out[-1], []))
    return out


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (raises OSError if gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> int:
    """When `pid` started, in clock ticks after boot (0 if it is gone)."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return 0


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) `pid` has used; raises OSError if it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by `pid` and its live descendants (NaN without /proc)."""
    if pid is None or not Path(f"/proc/{pid}").exists():
        return float("nan")
    total = 0.0
    for p in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += process_cpu_s(p)
    return total


def thread_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of `pid`; empty where /proc is absent."""
    if pid is None:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_split(
    pid: int | None, before: dict[int, float], after: dict[int, float], seconds: float, lanes: int
) -> dict[str, Any]:
    """Percent of one core each of a gateway's threads used over `seconds`.

    main: the event loop (the main thread, tid == pid); lanes: the `lanes` busiest
    other threads, busiest first (thread lanes, each running its ONNX Runtime
    session); other: the rest (asyncio.to_thread decode workers, the loader).
    """
    if pid is None or not after:
        return {}
    scale = 100.0 / seconds
    used = {tid: (after[tid] - before.get(tid, 0.0)) * scale for tid in after}
    main = used.pop(pid, 0.0)
    ranked = sorted(used.values(), reverse=True)
    return {"main": main, "lanes": ranked[:lanes], "other": sum(ranked[lanes:])}


def prometheus_value(text: str, name: str, labels: str = "") -> float:
    """The value of series `name{labels}` in a Prometheus exposition (0.0 if absent)."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


class OtherCpu:
    """CPU used by processes other than this one and `pids` (Linux /proc; NaN elsewhere).

    On a shared machine a benchmark's figures mean little while something else
    runs: each measurement reports this next to it, so a disturbed one shows.
    """

    def __init__(self, pids: Sequence[int | None] = ()) -> None:
        self.pids = [p for p in pids if p is not None]
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy CPU seconds of the machine, CPU seconds of ours)."""
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            ours = sum(os.times()[:2])
            ours += sum(process_cpu_s(pid) for pid in self.pids)
        except (OSError, ValueError, IndexError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return time.perf_counter(), (sum(fields[:8]) - idle) / self._tick, ours

    def lap(self) -> float:
        """Percent of one core used by other processes since the previous lap."""
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return float("nan")
        others = (now[1] - last[1]) - (now[2] - last[2])
        return max(0.0, others) * 100.0 / (now[0] - last[0])
