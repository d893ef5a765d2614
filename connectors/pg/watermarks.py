"""The online backfill's watermarks in the source's WAL, and waiting for the writers open at a low one.

Owns: writing a chunk's low and high watermark (a non-transactional `splitter.backfill` logical
message whose body is the mark, as JSON) and waiting until every transaction running when the low
watermark was written has ended.  Must not: read or copy rows (`connectors.pg.copy` does), decide what a
mark says (`splitter.ops.backfill` builds it, the worker reads it), or write any table.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import psycopg

from connectors.pg.messages import emit_message
from splitter.core import messages
from splitter.core.errors import RetryableError


def write_watermark(conn: psycopg.Connection, mark: dict[str, Any]) -> None:
    """A watermark into the change log: non-transactional, so it is in the WAL at once."""
    emit_message(conn, messages.BACKFILL, orjson.dumps(mark).decode())


def wait_for_transactions_before(conn: psycopg.Connection, timeout: float) -> None:
    """Wait until every transaction running when the low watermark was written has ended.

    A transaction whose commit record precedes the low watermark in the log can still be invisible to a
    snapshot taken just after it (PostgreSQL writes the commit record before it shows the transaction
    as committed).  Its change would then be neither in the chunk nor inside the window, and the copy
    would bring back the older row.  Once those transactions have ended, every transaction the chunk's
    snapshot does not see commits after the low watermark, where the worker notes its keys.
    """
    # Transaction ids are handed out in order: every writer running at the watermark has one below the id
    # taken now, and the oldest running id (the snapshot's xmin) passes it once they have all ended.
    taken = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert taken is not None
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %s::xid8", (taken[0],)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() >= deadline:
            holders = conn.execute(
                "SELECT string_agg(format('xid %s (pid %s)', backend_xid, pid), ', ' ORDER BY age(backend_xid) DESC) "
                "FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()").fetchone()
            raise RetryableError(
                f"transaction(s) {holders[0] if holders and holders[0] else '(ended just now)'} on the source stayed "
                f"open for {timeout:.0f}s after the backfill's low watermark; the chunk waits for the writers open "
                f"at the watermark to end")
        time.sleep(0.01)
