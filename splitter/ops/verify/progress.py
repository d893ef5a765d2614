"""Where a verify is: progress against the catalog's row estimates, and the line that shows it.

Owns: `Progress` (rows hashed of about how many, with an ETA), `Tracker` (turning chunk lines
hashed into `Progress`) and `ProgressLine` (one rewritten line on a terminal, nothing when not a
TTY).  Must not: do I/O other than writing that line (the progress row in each service database is
`connectors.pg.verify_target.ProgressRecorder`'s).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Progress:
    """Where a verify is: `rows_done` of about `rows_total` source rows hashed so far."""

    table: str
    tables_done: int
    tables_total: int
    rows_done: int
    rows_total: int
    elapsed: float

    @property
    def eta(self) -> float | None:
        if self.rows_done <= 0 or self.rows_total <= 0 or self.elapsed < 1.0:
            return None
        return max(0.0, self.elapsed * (self.rows_total / self.rows_done - 1))


class ProgressLine:
    """Renders `Progress` as one rewritten line on a terminal (and nothing when not a TTY)."""

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.2) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0
        self._min_interval = min_interval

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self._min_interval:
            return
        self._last = now
        pct = f"{min(100.0, 100.0 * p.rows_done / p.rows_total):5.1f}%" if p.rows_total else "  ?  "
        eta = p.eta
        eta_text = f"ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else "ETA --:--"
        line = (f"verify: {p.tables_done}/{p.tables_total} tables done, at {p.table}  "
                f"{p.rows_done:,}/~{p.rows_total:,} rows {pct}  {eta_text}")
        self.stream.write("\r" + line[:150].ljust(150))
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\r" + " " * 150 + "\r")
            self.stream.flush()


class Tracker:
    """Turns "so many chunk lines hashed" into `Progress` against the catalog's row estimates."""

    def __init__(self, sink: Callable[[Progress], None] | None, estimates: list[int], chunk_rows: int) -> None:
        self.sink = sink
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

    def hashed(self, lines: int) -> None:
        self.lines += lines
        self._emit(self.done + min(self.lines * self.chunk_rows, self.estimates[self.index]), self.index)

    def finish(self) -> None:
        self.done += self.estimates[self.index]
        self._emit(self.done, self.index + 1)

    def _emit(self, rows: int, tables_done: int) -> None:
        if self.sink is not None:
            self.sink(Progress(self.table, tables_done, len(self.estimates), rows, self.total,
                               time.monotonic() - self.started))
