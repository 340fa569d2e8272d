"""Progress of the long commands (profile, export, experiments): a bar or plain lines.

On a terminal a tqdm bar is redrawn in place, the usual way for a person
watching. In a log file, a pipe or a CI transcript a redrawn bar becomes one
line of carriage returns, so there every step is a plain, flushed line
(`[3/12] label: detail`); a count (requests of a live run, arrivals of a
simulation) prints a line per `every_pct` percent instead, at most one a
second, and always its last. Everything goes to stderr, so stdout keeps only a
command's results.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

#: Up to this many steps, plain mode prints every step; above it, every `every_pct` percent.
STEP_LINES_UP_TO = 50
#: Plain-mode percent lines of a count come at most this often (a fast run prints few).
MIN_LINE_INTERVAL_S = 1.0


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is an interactive terminal (a closed or odd stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Progress through `total` steps of something named `label`.

    `bar`: None decides by whether the stream is a terminal. `steps`: False for a
    count (requests, arrivals), whose plain lines are percentages. Use as a context
    manager, or call `close()` at the end.
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        unit: str = "step",
        stream: TextIO | None = None,
        bar: bool | None = None,
        steps: bool = True,
        every_pct: int = 10,
    ) -> None:
        self.total, self.label, self.unit = max(int(total), 0), label, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self._last_line = time.monotonic()
        self._every = max(1, self.total * every_pct // 100)
        self._per_step = steps and self.total <= STEP_LINES_UP_TO
        self._next_line = self._every
        use_bar = is_terminal(self.stream) if bar is None else bar
        self._bar = (
            tqdm(total=self.total, desc=label, unit=unit, file=self.stream, dynamic_ncols=True)
            if use_bar
            else None
        )

    def update(self, n: int = 1, detail: str = "") -> None:
        """`n` more steps done; `detail` says what the last one found."""
        self.advance_to(self.done + n, detail)

    def advance_to(self, done: int, detail: str = "") -> None:
        """`done` steps done in all (a count that only grows)."""
        step = done - self.done
        if step <= 0:
            return
        self.done = done
        if self._bar is not None:
            if detail:
                self._bar.write(detail, file=self.stream)
            self._bar.update(step)
        elif self._per_step or detail or done >= self.total or self._due(done):
            self._line(detail)
            while self._next_line <= done:
                self._next_line += self._every

    def _due(self, done: int) -> bool:
        """A percent line is due: a step boundary crossed, and not within a second of the last."""
        return done >= self._next_line and (
            time.monotonic() - self._last_line >= MIN_LINE_INTERVAL_S
        )

    def note(self, text: str) -> None:
        """A line about what is happening now (loading, exporting), above any bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _line(self, detail: str) -> None:
        if self._per_step:
            text = f"[{self.done}/{self.total}] {detail or self.label}"
        else:
            pct = 100 * self.done // self.total if self.total else 100
            elapsed = time.monotonic() - self.started
            text = (
                f"{self.label}: {pct}% ({self.done:,}/{self.total:,} {self.unit}s, "
                f"{elapsed:.1f} s)" + (f" {detail}" if detail else "")
            )
        print(text, file=self.stream, flush=True)
        self._last_line = time.monotonic()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def say(text: str, stream: TextIO | None = None) -> None:
    """One flushed line on stderr: a phase of a command starting or ending."""
    print(text, file=stream or sys.stderr, flush=True)
