"""Where a long piece of work is, as a value: the one shape every long command reports progress in.

Owns: `Progress` (a task's name, how much of about how much is done, in which unit, since when; its
rate and ETA) and `ProgressSink`, the callback type the work takes.  The work (ops/, pipeline/) calls
the sink whenever it has news, as often as it likes; the command line decides how and how often to show
it (`splitter.cli.progress`).  Must not: print, or know about terminals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """`done` of about `total` `unit` of `task` (total None: not known), `elapsed` seconds in.

    `stage` names where inside the task it is (a table, a chunk, a cutover step); `finished` marks the
    last report of the task."""

    task: str
    done: int
    total: int | None
    unit: str
    elapsed: float
    stage: str = ""
    finished: bool = False

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
        return self.done / self.elapsed

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None while the rate or the total is not known)."""
        rate, fraction = self.rate, self.fraction
        if rate is None or fraction is None or self.done <= 0 or self.total is None:
            return None
        return max(0.0, (self.total - self.done) / rate)


ProgressSink = Callable[[Progress], None]


def ignore(_progress: Progress) -> None:
    """The sink of work nobody watches."""


__all__ = ["Progress", "ProgressSink", "ignore"]
