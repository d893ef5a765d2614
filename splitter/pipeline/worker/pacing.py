"""When a worker commits and how long it waits for the log: its pacing.

Owns: the rule for committing the batch in hand (when the worker has read all the log holds; while it is
behind, only at `batch_max_rows` or `batch_max_wait`), when an idle worker writes its read position (so
its lag reads zero), and how long a read may wait for a record.  Must not: read, apply or commit (the
loop does, when told to), or keep anything but the time of the last write.

Why "all the log holds" and not "a read came back empty": a client's fetch queue runs dry between two
fetches while most of a backlog is still unread; committing there made a catching-up worker commit about
twenty times a second whatever its batch settings.
"""

from __future__ import annotations

import time

from splitter.pipeline.worker.state import Pending

# An idle service still records how far it has read, so lag reads zero on an idle source.
POSITION_WRITE_INTERVAL = 0.25
# How long a read waits for a record when nothing is pending.
IDLE_READ_TIMEOUT = 0.25


class Pacing:
    """A worker's commit and wait decisions (one worker thread)."""

    def __init__(self, max_rows: int, max_wait: float) -> None:
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._last_write = time.monotonic()

    def read_timeout(self, pending: Pending) -> float:
        """How long a read may wait for a record: until the batch in hand is due, or a while when idle."""
        if not pending.transactions:
            return IDLE_READ_TIMEOUT
        return min(IDLE_READ_TIMEOUT, max(0.0, pending.started + self.max_wait - time.monotonic()))

    def due(self, pending: Pending, at_end: bool, position_moved: bool) -> bool:
        """Whether to commit now: the batch in hand, or (nothing pending) the read position past the last write.

        `at_end`: the worker has read all the log holds; `position_moved`: it read past what it last wrote,
        outside any transaction.
        """
        now = time.monotonic()
        if pending.transactions:
            due = len(pending.batch) >= self.max_rows or at_end or now - pending.started >= self.max_wait
        else:
            due = position_moved and now - self._last_write >= POSITION_WRITE_INTERVAL
        if due:
            self._last_write = now
        return due
