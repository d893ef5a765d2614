"""Shows `Progress` to the operator: a live bar on a terminal (rich), plain periodic lines otherwise.

Owns: `ProgressView`, the sink a command hands to long work.  On a terminal it draws one rich progress
bar per task (done, total, %, rate, ETA, stage) on stderr; without one (a pipe, a CI log, cron) it writes
one plain line per task at most every `interval` seconds, and the last one when the task finishes, so a
log shows the work moving without a line per row.  Always stderr: stdout stays the command's report
(and its JSON, with `--json`).  Must not: do the work or decide what is reported.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

from splitter.core.progress import Progress

PLAIN_INTERVAL = 10.0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def plain_line(p: Progress) -> str:
    """One line for a log: `verify: 1,200/~5,000 rows (24.0%), 400 rows/s, ETA 0:09 [posts]`."""
    text = f"{p.task}: {p.done:,}"
    if p.total is not None:
        text += f"/~{p.total:,}"
    text += f" {p.unit}"
    if p.fraction is not None:
        text += f" ({100 * p.fraction:.1f}%)"
    if p.rate is not None:
        text += f", {p.rate:,.0f} {p.unit}/s"
    if p.finished:
        text += f", done in {_duration(p.elapsed)}"
    elif p.eta is not None:
        text += f", ETA {_duration(p.eta)}"
    if p.stage:
        text += f" [{p.stage}]"
    return text


class ProgressView:
    """A `ProgressSink` for the command line; use it as a context manager so the bars are cleared."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = PLAIN_INTERVAL,
                 live: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self._last_plain: dict[str, float] = {}
        self._bars: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def __call__(self, p: Progress) -> None:
        if self.live:
            self._draw(p)
            return
        now = time.monotonic()
        last = self._last_plain.get(p.task)
        if p.finished or last is None or now - last >= self.interval:
            self._last_plain[p.task] = now
            self.stream.write(plain_line(p) + "\n")
            self.stream.flush()

    def _draw(self, p: Progress) -> None:
        if self._bars is None:
            self._bars = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[stage]}"),
                console=Console(file=self.stream), transient=False)
            self._bars.start()
        task = self._tasks.get(p.task)
        if task is None:
            task = self._tasks[p.task] = self._bars.add_task(p.task, total=p.total, unit=p.unit, stage=p.stage)
        self._bars.update(task, completed=p.done, total=p.total, stage=p.stage)
        if p.finished:
            self._bars.update(task, completed=p.total if p.total is not None else p.done, total=p.total or p.done)


__all__ = ["PLAIN_INTERVAL", "ProgressView", "plain_line"]
