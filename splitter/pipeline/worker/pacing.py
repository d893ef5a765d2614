"""When a worker commits and how long it waits for the log: its pacing.

Owns: the rule for committing the batch in hand, when an idle worker writes its read position (so its lag
reads zero), and how long a read may wait for a record.  Must not: read, apply or commit (the loop does,
when told to), or keep anything but the time of the last write and what kind of batch is being filled.

Two kinds of batch.  A *live* batch (the worker reads at the head of the log) is committed as soon as a
read comes back empty or the worker has read all the log holds, and at the latest after `batch_max_wait`:
latency first.  A *catch-up* batch (some read since it began came back full: the client holds more than a
read takes, the worker is behind) ignores an empty read, because a client's fetch queue runs dry between
two fetches while most of a backlog is still unread (committing there made a catching-up worker commit
about twenty times a second whatever its batch settings); it is committed at `batch_max_rows`, after
`catch_up_batch_wait`, or once the worker has read all the log holds (the end-of-partition event).
"""

from __future__ import annotations

import time

from splitter.pipeline.worker.state import Pending

# Records one read takes from the client: a read that gets them all tells the worker it is behind.
READ_RECORDS = 2000
# An idle service still records how far it has read, so lag reads zero on an idle source.
POSITION_WRITE_INTERVAL = 0.25
# How long a read waits for a record when nothing is pending.
IDLE_READ_TIMEOUT = 0.25
# How long a read waits while a live batch is pending: an empty read after it commits the batch.
LIVE_READ_TIMEOUT = 0.02


class Pacing:
    """A worker's commit and wait decisions (one worker thread)."""

    def __init__(self, max_rows: int, max_wait: float, catch_up_wait: float) -> None:
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.catch_up_wait = max(catch_up_wait, max_wait)
        self.catching_up = False  # the batch being filled is a catch-up batch
        self._last_write = time.monotonic()

    def read(self, full: bool) -> None:
        """A read came back with as many records as it asked for (`full`: the worker is behind), or fewer."""
        if full:
            self.catching_up = True

    def read_timeout(self, pending: Pending) -> float:
        """How long a read may wait for a record: until the batch in hand is due, or a while when idle."""
        if not pending.transactions:
            return IDLE_READ_TIMEOUT
        if not self.catching_up:
            return LIVE_READ_TIMEOUT
        return min(IDLE_READ_TIMEOUT, max(0.0, pending.started + self.catch_up_wait - time.monotonic()))

    def due(self, pending: Pending, at_end: bool, empty_read: bool, position_moved: bool) -> bool:
        """Whether to commit now: the batch in hand, or (nothing pending) the read position past the last write.

        `at_end`: the worker has read all the log holds; `empty_read`: the last read brought nothing;
        `position_moved`: it read past what it last wrote, outside any transaction.
        """
        now = time.monotonic()
        if pending.transactions:
            age = now - pending.started
            if self.catching_up:
                due = len(pending.batch) >= self.max_rows or at_end or age >= self.catch_up_wait
            else:
                due = len(pending.batch) >= self.max_rows or at_end or empty_read or age >= self.max_wait
        else:
            due = position_moved and now - self._last_write >= POSITION_WRITE_INTERVAL
        if due:
            self._last_write = now
            self.catching_up = False
        return due
