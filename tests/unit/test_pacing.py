"""A worker's pacing: when the batch in hand is committed, and how long a read waits (pure, on values)."""

from __future__ import annotations

import time

from splitter.core.envelope import ColumnSchema, RelationSchema, RowChange
from splitter.pipeline.worker.pacing import IDLE_READ_TIMEOUT, LIVE_READ_TIMEOUT, POSITION_WRITE_INTERVAL, Pacing
from splitter.pipeline.worker.state import Pending

RELATION = RelationSchema("public", "topics", (ColumnSchema("id", "uuid", True), ColumnSchema("name", "text", False)))


def _pending(rows: int, age: float = 0.0) -> Pending:
    pending = Pending()
    units = []
    for n in range(rows):
        change = RowChange("c", "public.topics", None, {"id": str(n), "name": "x"}, (), 100, 7, n, 0)
        units.append((n, change, RELATION))
    pending.add_transaction(100, units)
    pending.started = time.monotonic() - age
    return pending


def test_a_live_batch_commits_at_an_empty_read_or_its_wait() -> None:
    pacing = Pacing(max_rows=10, max_wait=0.05, catch_up_wait=5.0)
    assert not pacing.due(_pending(3), at_end=False, empty_read=False, position_moved=False)
    assert pacing.due(_pending(3), at_end=False, empty_read=True, position_moved=False)
    assert pacing.due(_pending(3, age=0.06), at_end=False, empty_read=False, position_moved=False)
    assert pacing.due(_pending(10), at_end=False, empty_read=False, position_moved=False)  # rows bound


def test_a_catch_up_batch_fills_across_empty_reads_until_a_bound_or_the_end() -> None:
    pacing = Pacing(max_rows=10, max_wait=0.05, catch_up_wait=5.0)
    pacing.read(full=True)  # the client held more than a read takes: behind
    assert not pacing.due(_pending(3), at_end=False, empty_read=True, position_moved=False)
    assert not pacing.due(_pending(3, age=1.0), at_end=False, empty_read=True, position_moved=False)
    assert pacing.due(_pending(3, age=5.1), at_end=False, empty_read=True, position_moved=False)  # wait bound
    pacing.read(full=True)
    assert pacing.due(_pending(10), at_end=False, empty_read=False, position_moved=False)  # rows bound
    pacing.read(full=True)
    assert pacing.due(_pending(3), at_end=True, empty_read=False, position_moved=False)  # read all the log holds
    assert not pacing.catching_up  # the next batch starts as a live one


def test_an_idle_worker_writes_its_position_at_most_every_interval() -> None:
    pacing = Pacing(max_rows=10, max_wait=5.0, catch_up_wait=5.0)
    empty = Pending()
    assert not pacing.due(empty, at_end=True, empty_read=True, position_moved=False)  # nothing new to write
    time.sleep(POSITION_WRITE_INTERVAL + 0.01)
    assert pacing.due(empty, at_end=True, empty_read=True, position_moved=True)
    assert not pacing.due(empty, at_end=True, empty_read=True, position_moved=True)  # just written


def test_a_read_waits_no_longer_than_the_batch_in_hand_may() -> None:
    pacing = Pacing(max_rows=10, max_wait=0.05, catch_up_wait=0.1)
    assert pacing.read_timeout(Pending()) == IDLE_READ_TIMEOUT
    assert pacing.read_timeout(_pending(1)) == LIVE_READ_TIMEOUT
    pacing.read(full=True)
    assert 0.0 < pacing.read_timeout(_pending(1)) <= 0.1
    assert pacing.read_timeout(_pending(1, age=1.0)) == 0.0
