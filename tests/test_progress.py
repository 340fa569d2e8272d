"""Progress reporting: plain lines off a terminal, a bar on one; readable log-axis ticks."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from loadgen.plot_axes import label_log_axis, nice_log_ticks
from predictor.progress import Progress
from scheduling.config import SchedulerConfig
from scheduling.service_time import FixedServiceTime
from scheduling.simulator import Arrival, simulate


def test_steps_are_one_flushed_line_each_off_a_terminal() -> None:
    out = io.StringIO()  # not a terminal
    with Progress(3, "profile", stream=out) as progress:
        progress.note("loading tiny")
        progress.update(detail="tiny bs=1: p50 1.0 ms")
        progress.update(detail="tiny bs=2: p50 1.5 ms")
        progress.update()
    assert out.getvalue().splitlines() == [
        "loading tiny",
        "[1/3] tiny bs=1: p50 1.0 ms",
        "[2/3] tiny bs=2: p50 1.5 ms",
        "[3/3] profile",
    ]


def test_a_count_prints_percent_lines_and_always_its_last() -> None:
    out = io.StringIO()
    with Progress(1000, "live", unit="answer", stream=out, steps=False) as progress:
        for _ in range(1000):
            progress.update()
    lines = out.getvalue().splitlines()
    # at most one line per 10 % (and at most one a second): never a line per answer
    assert 1 <= len(lines) <= 11
    assert lines[-1].startswith("live: 100% (1,000/1,000 answers, ")


def test_a_terminal_gets_a_bar() -> None:
    out = io.StringIO()
    with Progress(4, "compare", unit="run", stream=out, bar=True) as progress:
        progress.update(detail="fifo at load 0.3: ok")
        progress.advance_to(4)
    text = out.getvalue()
    assert "fifo at load 0.3: ok" in text
    assert "compare: 100%" in text and "4/4" in text and "\r" in text  # redrawn in place


def test_the_simulator_reports_how_far_it_is() -> None:
    arrivals = [Arrival(0.01 * i, "resnet18", "onnx", "fp32", "batch", 1, 1.0) for i in range(250)]
    seen: list[tuple[int, int]] = []
    simulate(
        SchedulerConfig(),
        arrivals,
        FixedServiceTime({"resnet18": (1.0, 0.5)}),
        {"resnet18": 80},
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[0] == (2, 250) and seen[-1] == (250, 250)  # about every 1 %
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})


def test_log_ticks_are_1_2_5_plain_numbers() -> None:
    assert nice_log_ticks(5, 1500) == [5, 10, 20, 50, 100, 200, 500, 1000]
    assert nice_log_ticks(70, 160) == [80, 100, 150]  # within a decade: finer
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(8, 1200)
    label_log_axis(ax.xaxis, 8, 1200)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels == ["10", "20", "50", "100", "200", "500", "1000"]
    plt.close(fig)
