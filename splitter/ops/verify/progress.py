"""Where a verify is: rows hashed against the catalog's row estimates, as `splitter.core.progress.Progress`.

Owns: `Tracker`, turning "so many chunk lines of this table hashed" into `Progress` reports of the task
`verify` (rows of about how many, the table and how many tables are done as its stage).  Must not: show
anything (the command line's `ProgressView` does) or do I/O (the progress row in each service database
is `connectors.pg.verify_target.ProgressRecorder`'s).
"""

from __future__ import annotations

import time

from splitter.core.progress import Progress, ProgressSink, ignore

TASK = "verify"


class Tracker:
    """Turns "so many chunk lines hashed" into `Progress` against the catalog's row estimates.

    A table's rows count as its estimate once it is finished (the estimate is what the total is made
    of, so the bar reaches 100% at the end however far off the catalog was)."""

    def __init__(self, sink: ProgressSink | None, estimates: list[int], chunk_rows: int) -> None:
        self.sink = sink or ignore
        self.estimates = estimates
        self.total = sum(estimates)
        self.chunk_rows = chunk_rows
        self.started = time.monotonic()
        self.done = 0  # estimated rows of the tables finished
        self.table = ""
        self.index = 0
        self.lines = 0

    def start(self, index: int, table: str) -> None:
        self.index, self.table, self.lines = index, table, 0
        self._emit(self.done, self.index)

    def hashed(self, lines: int) -> None:
        self.lines += lines
        self._emit(self.done + min(self.lines * self.chunk_rows, self.estimates[self.index]), self.index)

    def finish(self) -> None:
        self.done += self.estimates[self.index]
        self._emit(self.done, self.index + 1)

    def _emit(self, rows: int, tables_done: int) -> None:
        tables = len(self.estimates)
        self.sink(Progress(TASK, rows, self.total, "rows", time.monotonic() - self.started,
                           stage=f"{self.table}, {tables_done}/{tables} tables",
                           finished=tables_done == tables))


__all__ = ["TASK", "Tracker"]
