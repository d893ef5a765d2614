"""State of online backfills in a service database: the job, its progress, and chunks in flight.

Owns: `splitter.backfills` (one row per backfill job: which table, the source relation shape, chunk size, the
last key copied, chunks done, rows copied, left to the stream and deleted, whether its chunks delete,
status; a `splitter replay --accept-gap` opens one per table before any chunk) and
`splitter.backfill_rows` (the rows of the chunk between its low and high watermark, written by `splitter
backfill`, consumed by the worker when it reaches the high watermark in the change log) and
`splitter.backfill_missed` (source keys of rows the stream could not rebuild while the table was being
re-copied: an update that left TOASTed columns out and found no row here, typically because it moved a
row the copy had not reached yet to a key the copy had already passed; a later chunk that copies such a
key settles it, and the backfill copies the rest again before the job is done).  Must not: decide which
rows win (the worker does, from the log) or read the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from connectors.pg.state import SCHEMA, STATE_SCHEMA

DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.backfills (
            id bigserial PRIMARY KEY,
            service text NOT NULL,
            source_table text NOT NULL,
            relation_header text NOT NULL,
            chunk_rows integer NOT NULL,
            last_key jsonb,
            chunks_done integer NOT NULL DEFAULT 0,
            rows_copied bigint NOT NULL DEFAULT 0,
            rows_skipped bigint NOT NULL DEFAULT 0,
            rows_deleted bigint NOT NULL DEFAULT 0,
            rows_estimated bigint,
            deletes boolean NOT NULL DEFAULT false,
            status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'cancelled')),
            started_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        )"""
    ).format(SCHEMA),
    # Jobs recorded before chunks deleted rows: the columns are added once (an ALTER would lock the table
    # on every start, behind the worker's open transaction).
    sql.SQL(
        """DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {table}::regclass AND attname = 'deletes'
                           AND NOT attisdropped) THEN
                ALTER TABLE {schema}.backfills ADD COLUMN rows_deleted bigint NOT NULL DEFAULT 0,
                                               ADD COLUMN deletes boolean NOT NULL DEFAULT false;
            END IF;
        END $$"""
    ).format(schema=SCHEMA, table=sql.Literal(f"{STATE_SCHEMA}.backfills")),
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.backfill_rows (
            backfill_id bigint NOT NULL,
            chunk integer NOT NULL,
            n integer NOT NULL,
            row jsonb NOT NULL,
            PRIMARY KEY (backfill_id, chunk, n)
        )"""
    ).format(SCHEMA),
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.backfill_missed (
            backfill_id bigint NOT NULL,
            key jsonb NOT NULL,
            noted_at timestamptz NOT NULL DEFAULT now(),
            -- The commit LSN of the batch that noted it (NULL until that batch commits; see `chunk_applied`).
            noted_lsn pg_lsn,
            PRIMARY KEY (backfill_id, key)
        )"""
    ).format(SCHEMA),
]


@dataclass(frozen=True)
class Job:
    id: int
    service: str
    source_table: str
    relation_header: str
    chunk_rows: int
    last_key: list[str | None] | None
    chunks_done: int
    rows_copied: int
    rows_skipped: int
    status: str
    rows_deleted: int = 0
    deletes: bool = False  # its chunks remove target rows the source no longer has (connectors.pg.backfill_deletes)


# In the order of `Job`'s fields.
_JOB_COLUMNS = sql.SQL("id, service, source_table, relation_header, chunk_rows, last_key, chunks_done, rows_copied, "
                       "rows_skipped, status, rows_deleted, deletes")


def ensure(conn: psycopg.Connection) -> None:
    for stmt in DDL:
        conn.execute(stmt)


def running_job(conn: psycopg.Connection, service: str, source_table: str) -> Job | None:
    row = conn.execute(
        sql.SQL("SELECT {} FROM {}.backfills WHERE service = %s AND source_table = %s AND status = 'running' "
                "ORDER BY id DESC LIMIT 1").format(_JOB_COLUMNS, SCHEMA), (service, source_table)).fetchone()
    return Job(*row) if row else None


def job(conn: psycopg.Connection, job_id: int) -> Job | None:
    row = conn.execute(sql.SQL("SELECT {} FROM {}.backfills WHERE id = %s").format(_JOB_COLUMNS, SCHEMA),
                       (job_id,)).fetchone()
    return Job(*row) if row else None


def start_job(conn: psycopg.Connection, service: str, source_table: str, relation_header: str,
              chunk_rows: int, deletes: bool = False) -> Job:
    """A new job for the table; one still running for it is cancelled (the new one copies every key again)."""
    conn.execute(sql.SQL("UPDATE {}.backfills SET status = 'cancelled', updated_at = now() WHERE service = %s "
                         "AND source_table = %s AND status = 'running'").format(SCHEMA), (service, source_table))
    row = conn.execute(
        sql.SQL("INSERT INTO {}.backfills (service, source_table, relation_header, chunk_rows, deletes) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id").format(SCHEMA),
        (service, source_table, relation_header, chunk_rows, deletes)).fetchone()
    assert row is not None
    found = job(conn, int(row[0]))
    assert found is not None
    return found


def put_chunk(conn: psycopg.Connection, job_id: int, chunk: int, rows: Iterable[dict[str, Any]]) -> int:
    conn.execute(sql.SQL("DELETE FROM {}.backfill_rows WHERE backfill_id = %s AND chunk = %s").format(SCHEMA),
                 (job_id, chunk))
    items = [(job_id, chunk, n, Jsonb(r)) for n, r in enumerate(rows)]
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {}.backfill_rows (backfill_id, chunk, n, row) VALUES (%s, %s, %s, %s)")
                        .format(SCHEMA), items)
    return len(items)


def take_chunk(conn: psycopg.Connection, job_id: int, chunk: int) -> list[dict[str, Any]]:
    rows = conn.execute(sql.SQL("SELECT row FROM {}.backfill_rows WHERE backfill_id = %s AND chunk = %s ORDER BY n")
                        .format(SCHEMA), (job_id, chunk)).fetchall()
    return [r[0] for r in rows]


def set_chunk_rows(conn: psycopg.Connection, job_id: int, chunk_rows: int) -> None:
    """Change the chunk size of a job that has not copied a chunk yet (one `splitter replay` opened)."""
    conn.execute(sql.SQL("UPDATE {}.backfills SET chunk_rows = %s WHERE id = %s AND chunks_done = 0").format(SCHEMA),
                 (chunk_rows, job_id))


def set_estimate(conn: psycopg.Connection, job_id: int, rows: int) -> None:
    conn.execute(sql.SQL("UPDATE {}.backfills SET rows_estimated = %s WHERE id = %s").format(SCHEMA), (rows, job_id))


@dataclass(frozen=True)
class Progress:
    """The newest job of one source table, as metrics export it."""

    source_table: str
    rows_done: int
    rows_estimated: int | None
    running: bool


def progress(conn: psycopg.Connection, service: str) -> list[Progress]:
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT ON (source_table) source_table, rows_copied + rows_skipped, rows_estimated, "
                "status = 'running' FROM {}.backfills WHERE service = %s ORDER BY source_table, id DESC")
        .format(SCHEMA), (service,)).fetchall()
    return [Progress(*r) for r in rows]


def running_job_id(conn: psycopg.Connection, service: str, source_table: str) -> int | None:
    row = conn.execute(
        sql.SQL("SELECT max(id) FROM {}.backfills WHERE service = %s AND source_table = %s AND status = 'running'")
        .format(SCHEMA), (service, source_table)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def note_missed(conn: psycopg.Connection, job_id: int, keys: Iterable[Sequence[str | None]]) -> None:
    """Remember source keys the stream could not rebuild (in the worker's apply transaction)."""
    items = [(job_id, Jsonb(list(k))) for k in keys]
    if not items:
        return
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {}.backfill_missed (backfill_id, key) VALUES (%s, %s) "
                                "ON CONFLICT (backfill_id, key) DO UPDATE SET noted_lsn = NULL").format(SCHEMA), items)


def missed_noted_at(conn: psycopg.Connection, lsn: str) -> None:
    """Stamp the keys noted in this transaction with its commit LSN (called last, before the commit)."""
    conn.execute(sql.SQL("UPDATE {}.backfill_missed SET noted_lsn = %s::pg_lsn WHERE noted_lsn IS NULL")
                 .format(SCHEMA), (lsn,))


def missed_keys(conn: psycopg.Connection, job_id: int, limit: int) -> list[list[str | None]]:
    rows = conn.execute(sql.SQL("SELECT key FROM {}.backfill_missed WHERE backfill_id = %s ORDER BY noted_at, key "
                                "LIMIT %s").format(SCHEMA), (job_id, limit)).fetchall()
    return [list(r[0]) for r in rows]


def chunk_applied(conn: psycopg.Connection, job_id: int, chunk: int, copied: int, skipped: int,
                  last_key: Sequence[str | None] | None, final: bool,
                  repaired: Sequence[Sequence[str | None]] = (), copied_keys: Sequence[Sequence[str | None]] = (),
                  high_lsn: str | None = None, deleted: int = 0) -> None:
    """Called by the worker in the transaction that applied the chunk, before `missed_noted_at`.

    `repaired` are the missed keys this repair chunk was built for.  `copied_keys` (the rows this chunk
    copied, at its high watermark `high_lsn`) settle missed keys noted by batches committed before that
    watermark: the chunk read the row after the change that missed it.  Keys noted in this transaction
    are not stamped yet, so they stay (their change may come after the watermark).  The job is done with
    its final chunk only when no missed key is left (one noted in this very transaction included).
    `deleted`: target rows the chunk removed because the source no longer has them.
    """
    conn.execute(sql.SQL("DELETE FROM {}.backfill_rows WHERE backfill_id = %s AND chunk = %s").format(SCHEMA),
                 (job_id, chunk))
    if repaired:
        with conn.cursor() as cur:
            cur.executemany(sql.SQL("DELETE FROM {}.backfill_missed WHERE backfill_id = %s AND key = %s")
                            .format(SCHEMA), [(job_id, Jsonb(list(k))) for k in repaired])
    if copied_keys and high_lsn is not None:
        conn.execute(sql.SQL("DELETE FROM {}.backfill_missed WHERE backfill_id = %s AND noted_lsn < %s::pg_lsn "
                             "AND key = ANY(%s::jsonb[])").format(SCHEMA),
                     (job_id, high_lsn, [Jsonb(list(k)) for k in copied_keys]))
    conn.execute(
        sql.SQL("UPDATE {schema}.backfills SET chunks_done = greatest(chunks_done, %(chunk)s), "
                "rows_copied = rows_copied + %(copied)s, rows_skipped = rows_skipped + %(skipped)s, "
                "rows_deleted = rows_deleted + %(deleted)s, "
                "last_key = coalesce(%(last_key)s, last_key), updated_at = now(), "
                "status = CASE WHEN %(final)s AND status = 'running' AND NOT EXISTS "
                "(SELECT 1 FROM {schema}.backfill_missed m WHERE m.backfill_id = %(job)s) THEN 'done' ELSE status END "
                "WHERE id = %(job)s AND chunks_done < %(chunk)s").format(schema=SCHEMA),
        {"chunk": chunk, "copied": copied, "skipped": skipped, "deleted": deleted,
         "last_key": Jsonb(list(last_key)) if last_key is not None else None, "final": final, "job": job_id})
