"""Logical messages into a database's WAL (`pg_logical_emit_message`), for markers a stream reader acts on.

Owns: the one call that writes a logical message and returns its position.  Must not: choose prefixes
(`splitter.core.messages` holds every one) or encode payloads (their writers do).
"""

from __future__ import annotations

import psycopg

from splitter.core.lsn import str_to_lsn


def emit_message(conn: psycopg.Connection, prefix: str, payload: str, transactional: bool = False) -> int:
    """Write a logical message with `prefix` and `payload`; returns its LSN.

    A non-transactional message is in the WAL at once (even inside a transaction that later rolls back),
    but a lone one waits for the WAL writer to be flushed; a transactional one is flushed by its commit.
    """
    row = conn.execute("SELECT pg_logical_emit_message(%s, %s, %s)::text", (transactional, prefix, payload)).fetchone()
    assert row is not None
    return str_to_lsn(row[0])


__all__ = ["emit_message"]
