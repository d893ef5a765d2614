"""Where a long piece of work is, as a value: the one shape every long command reports progress in.

Owns: `Progress` (a task's name, how much of about how much is done, in which unit, since when; its
rate and ETA), `ProgressSink`, the callback type the work takes, `line` (a Progress as one plain line,
for a log or a pipe) and `Periodic`, the sink that hands such lines to a writer (a logger, a stream) at
most every so many seconds per task.  The work (ops/, pipeline/) calls the sink whenever it has news, as
often as it likes; the command line decides how and how often to show it (`splitter.cli.progress`); a
daemon (capture's initial copy) logs `Periodic` lines.  Must not: print, or know about terminals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds between two plain lines of one task (a log shows the work moving without a line per row).
PLAIN_INTERVAL = 10.0


@dataclass(frozen=True)
class Progress:
    """`done` of about `total` `unit` of `task` (total None: not known), `elapsed` seconds in.

    `stage` names where inside the task it is (a table, a chunk, a cutover step); `finished` marks the
    last report of the task.  `estimated`: the total is an estimate and the units flow at a rate (rows);
    False for a count of distinct steps (a cutover's), which has neither a `~` nor a rate.  `before`: of
    `done`, the units earlier runs did (a resumed backfill): the rate and ETA count this run's alone."""

    task: str
    done: int
    total: int | None
    unit: str
    elapsed: float
    stage: str = ""
    finished: bool = False
    estimated: bool = True
    before: int = 0

    @property
    def fraction(self) -> float | None:
        if not self.total or self.total <= 0:
            return None
        return min(1.0, self.done / self.total)

    @property
    def rate(self) -> float | None:
        """Units per second so far (None in the first second, when it means nothing yet)."""
        if self.elapsed < 1.0:
            return None
        return (self.done - self.before) / self.elapsed

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None while the rate or the total is not known)."""
        rate, fraction = self.rate, self.fraction
        if rate is None or rate <= 0 or fraction is None or self.total is None:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def line(self) -> str:
        """This report as one plain line (see `line`)."""
        return line(self)


ProgressSink = Callable[[Progress], None]


def ignore(_progress: Progress) -> None:
    """The sink of work nobody watches."""


def duration(seconds: float) -> str:
    """`0:09`, `12:05`, `1:02:03`: minutes and seconds, hours once there are any."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def line(p: Progress) -> str:
    """One line for a log: `verify: 1,200/~5,000 rows (24.0%), 400 rows/s, ETA 0:09 [posts]`.

    The total is marked `~` because it is an estimate (the catalog's, for rows); on the last report the
    ETA gives way to the time the task took."""
    text = f"{p.task}: {p.done:,}"
    if p.total is not None:
        text += f"/{'~' if p.estimated else ''}{p.total:,}"
    text += f" {p.unit}"
    if p.fraction is not None:
        text += f" ({100 * p.fraction:.1f}%)"
    if p.rate is not None and p.estimated:
        text += f", {p.rate:,.0f} {p.unit}/s"
    if p.finished:
        text += f", done in {duration(p.elapsed)}"
    elif p.eta is not None and p.estimated:
        text += f", ETA {duration(p.eta)}"
    if p.stage:
        text += f" [{p.stage}]"
    return text


class Periodic:
    """A sink that writes `line(p)` through `write` for the first report of a task, then at most every
    `interval` seconds per task, and always for its last (`finished`) report.

    Safe to call from several threads at once (the initial copy reports from one thread per service)."""

    def __init__(self, write: Callable[[str], None], interval: float = PLAIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write = write
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        with self._lock:
            now = self.clock()
            last = self._last.get(p.task)
            if not (p.finished or last is None or now - last >= self.interval):
                return
            self._last[p.task] = now
        self.write(line(p))


__all__ = ["PLAIN_INTERVAL", "Periodic", "Progress", "ProgressSink", "duration", "ignore", "line"]
