"""A worker's pacing: when the batch in hand is committed, and how long a read waits (pure, on values)."""

from __future__ import annotations

import time

from splitter.core.envelope import ColumnSchema, RelationSchema, RowChange
from splitter.pipeline.worker.pacing import IDLE_READ_TIMEOUT, POSITION_WRITE_INTERVAL, Pacing
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


def test_a_worker_behind_keeps_filling_its_batch_until_a_bound() -> None:
    pacing = Pacing(max_rows=10, max_wait=5.0)
    assert not pacing.due(_pending(3), at_end=False, position_moved=False)
    assert pacing.due(_pending(10), at_end=False, position_moved=False)  # rows bound
    assert pacing.due(_pending(3, age=5.1), at_end=False, position_moved=False)  # wait bound


def test_a_worker_that_read_all_the_log_holds_commits_at_once() -> None:
    assert Pacing(max_rows=1_000_000, max_wait=3600.0).due(_pending(1), at_end=True, position_moved=False)


def test_an_idle_worker_writes_its_position_at_most_every_interval() -> None:
    pacing = Pacing(max_rows=10, max_wait=5.0)
    empty = Pending()
    assert not pacing.due(empty, at_end=True, position_moved=False)  # nothing read past the last write
    time.sleep(POSITION_WRITE_INTERVAL + 0.01)
    assert pacing.due(empty, at_end=True, position_moved=True)
    assert not pacing.due(empty, at_end=True, position_moved=True)  # just written


def test_a_read_waits_no_longer_than_the_batch_in_hand_may() -> None:
    pacing = Pacing(max_rows=10, max_wait=0.1)
    assert pacing.read_timeout(Pending()) == IDLE_READ_TIMEOUT
    assert 0.0 < pacing.read_timeout(_pending(1)) <= 0.1
    assert pacing.read_timeout(_pending(1, age=1.0)) == 0.0
