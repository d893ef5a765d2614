"""The dead-letter store of a service database: changes the database rejected, kept with why and where.

Owns: the `splitter.dead_letters` table (one row per rejected or unreadable change: the event, the
SQLSTATE and message, its log offset and commit LSN, its status open/retried/dropped, kept for audit)
and the `splitter.requests` table through which operator commands (replay, dlq retry/drop) reach
the running worker, which is the only writer of its service database.  Must not: decide when a change
is dead-lettered or how a stored one is applied again (the pipeline does) or talk to Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from connectors.pg.state import SCHEMA
from splitter.core.lsn import lsn_to_str

DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.dead_letters (
            id bigserial PRIMARY KEY,
            service text NOT NULL,
            source_table text,
            op text,
            source_key jsonb,
            event jsonb,
            raw_value bytea,
            sqlstate text,
            error text NOT NULL,
            kafka_offset bigint,
            commit_lsn pg_lsn,
            status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'retried', 'dropped')),
            created_at timestamptz NOT NULL DEFAULT now(),
            resolved_at timestamptz
        )"""
    ).format(SCHEMA),
    sql.SQL("CREATE INDEX IF NOT EXISTS dead_letters_open ON {}.dead_letters (service, id) WHERE status = 'open'")
    .format(SCHEMA),
    # An unreadable record is stored once, however often a restarted worker reads it again.
    sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_raw_offset ON {}.dead_letters (service, kafka_offset) "
            "WHERE raw_value IS NOT NULL").format(SCHEMA),
    # Operator requests for the running worker: it performs them in its own session and deletes the row.
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.requests (
            id bigserial PRIMARY KEY,
            service text NOT NULL,
            action text NOT NULL CHECK (action IN ('replay', 'dlq_retry', 'dlq_drop')),
            from_offset bigint,
            from_lsn pg_lsn,
            ids bigint[],
            requested_at timestamptz NOT NULL DEFAULT now(),
            done_at timestamptz,
            result text
        )"""
    ).format(SCHEMA),
]


@dataclass(frozen=True)
class DeadLetter:
    """A change to store: `event` is the parsed record (None when it could not be parsed)."""

    source_table: str | None
    op: str | None
    source_key: list[str | None] | None
    event: dict[str, Any] | None
    raw_value: bytes | None
    sqlstate: str | None
    error: str
    kafka_offset: int
    commit_lsn: int | None


@dataclass(frozen=True)
class StoredDeadLetter:
    id: int
    source_table: str | None
    op: str | None
    source_key: list[str | None] | None
    event: dict[str, Any] | None
    raw_value: bytes | None
    sqlstate: str | None
    error: str
    kafka_offset: int | None
    commit_lsn: str | None
    status: str
    created_at: datetime


@dataclass(frozen=True)
class Request:
    id: int
    action: str
    from_offset: int | None
    from_lsn: str | None
    ids: list[int] | None


def insert(conn: psycopg.Connection, service: str, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {}.dead_letters (service, source_table, op, source_key, event, raw_value, sqlstate, "
                    "error, kafka_offset, commit_lsn) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::pg_lsn) "
                    "ON CONFLICT (service, kafka_offset) WHERE raw_value IS NOT NULL DO NOTHING")
            .format(SCHEMA),
            [(service, d.source_table, d.op, Jsonb(d.source_key) if d.source_key is not None else None,
              Jsonb(d.event) if d.event is not None else None, d.raw_value, d.sqlstate, d.error, d.kafka_offset,
              lsn_to_str(d.commit_lsn) if d.commit_lsn is not None else None) for d in letters])


def fetch(conn: psycopg.Connection, service: str, *, status: str | None = "open",
          ids: Sequence[int] | None = None, limit: int | None = None) -> list[StoredDeadLetter]:
    where = [sql.SQL("service = %s")]
    params: list[Any] = [service]
    if status is not None:
        where.append(sql.SQL("status = %s"))
        params.append(status)
    if ids:
        where.append(sql.SQL("id = ANY(%s)"))
        params.append(list(ids))
    query = sql.SQL("SELECT id, source_table, op, source_key, event, raw_value, sqlstate, error, kafka_offset, "
                    "commit_lsn::text, status, created_at FROM {}.dead_letters WHERE {} ORDER BY id{}").format(
        SCHEMA, sql.SQL(" AND ").join(where), sql.SQL(f" LIMIT {int(limit)}") if limit else sql.SQL(""))
    return [StoredDeadLetter(*row) for row in conn.execute(query, params).fetchall()]


def count_open(conn: psycopg.Connection, service: str) -> int:
    """How many dead letters of `service` are open (neither retried nor dropped)."""
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}.dead_letters WHERE service = %s AND status = 'open'")
                       .format(SCHEMA), (service,)).fetchone()
    return int(row[0]) if row is not None else 0


def mark(conn: psycopg.Connection, ids: Sequence[int], status: str) -> None:
    conn.execute(sql.SQL("UPDATE {}.dead_letters SET status = %s, resolved_at = now() WHERE id = ANY(%s)")
                 .format(SCHEMA), (status, list(ids)))


def open_keys(conn: psycopg.Connection, service: str) -> set[tuple[str, tuple[str | None, ...]]]:
    """(table, key) of every open dead letter: later changes to those rows wait behind them."""
    rows = conn.execute(
        sql.SQL("SELECT source_table, source_key FROM {}.dead_letters WHERE service = %s AND status = 'open' "
                "AND source_key IS NOT NULL").format(SCHEMA), (service,)).fetchall()
    return {(table, tuple(key)) for table, key in rows}


def finish_request(conn: psycopg.Connection, request_id: int, result: str) -> None:
    conn.execute(sql.SQL("UPDATE {}.requests SET done_at = now(), result = %s WHERE id = %s").format(SCHEMA),
                 (result, request_id))


def submit_request(conn: psycopg.Connection, service: str, action: str, *, from_offset: int | None = None,
                   from_lsn: int | None = None, ids: Sequence[int] | None = None) -> int:
    row = conn.execute(
        sql.SQL("INSERT INTO {}.requests (service, action, from_offset, from_lsn, ids) "
                "VALUES (%s, %s, %s, %s::pg_lsn, %s) RETURNING id").format(SCHEMA),
        (service, action, from_offset, lsn_to_str(from_lsn) if from_lsn is not None else None,
         list(ids) if ids else None)).fetchone()
    assert row is not None
    return int(row[0])


def request_result(conn: psycopg.Connection, request_id: int) -> tuple[datetime | None, str | None]:
    row = conn.execute(sql.SQL("SELECT done_at, result FROM {}.requests WHERE id = %s").format(SCHEMA),
                       (request_id,)).fetchone()
    return (row[0], row[1]) if row else (None, None)


#: How often `wait_for_result` looks at the request again.
RESULT_POLL = 0.3


def wait_for_result(conn: psycopg.Connection, request_id: int, wait: float) -> tuple[bool, str | None]:
    """(done, result) of a request once the worker performed it, or (False, None) after `wait` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        done, result = request_result(conn, request_id)
        if done is not None:
            return True, result
        time.sleep(RESULT_POLL)
    return False, None


def event_json(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
