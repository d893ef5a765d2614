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
from collections.abc import Callable
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

from splitter.core.progress import PLAIN_INTERVAL as CORE_PLAIN_INTERVAL
from splitter.core.progress import Periodic, Progress, line

#: A log line per task at most this often without a terminal (the same cadence a daemon logs at).
PLAIN_INTERVAL = CORE_PLAIN_INTERVAL

#: One line for a log (`splitter.core.progress.line`, kept here under its earlier name).
plain_line = line


class ProgressView:
    """A `ProgressSink` for the command line; use it as a context manager so the bars are cleared."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = PLAIN_INTERVAL,
                 live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = interval
        self._plain = Periodic(self._write, interval, clock)
        self._bars: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop drawing (the bars stay as drawn); a later report starts new ones.  Also before a prompt:
        a live bar redrawn on the terminal would overwrite the question."""
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
            self._tasks.clear()

    def __call__(self, p: Progress) -> None:
        if self.live:
            self._draw(p)
            return
        self._plain(p)

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
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
            # The total was an estimate: the bar ends full at what was done, never short of it.
            whole = max(p.total or 0, p.done)
            self._bars.update(task, completed=whole, total=whole)


__all__ = ["PLAIN_INTERVAL", "ProgressView", "plain_line"]
