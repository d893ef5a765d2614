"""The `splitter` schema in a service database: its DDL, the checkpoint row, and the schema's name.

Owns: `STATE_SCHEMA` (the one definition of the schema's name), `ensure_state_schema` (creates the
checkpoint and control tables and those of every other state module, serialised by one advisory lock),
and reading and writing a service's checkpoint.  Must not: decide when a checkpoint is written (the
pipeline's commit step does, in the transaction of the data it covers).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from connectors.pg.state import (
    STATE_SCHEMA,
    components,
    dead_letters,
    ensure_tables,
    ownership_moves,
    source_shapes,
    verify_progress,
)
from connectors.pg.state import backfills as backfill_store
from splitter.core.lsn import lsn_to_str, str_to_lsn

#: The checkpoint offset of a service that holds only copied rows (nothing read from the log yet).
FROM_BEGINNING = -1

_STATE_DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.checkpoints (
            service text PRIMARY KEY,
            topic text NOT NULL,
            kafka_partition integer NOT NULL,
            kafka_offset bigint NOT NULL,
            commit_lsn pg_lsn NOT NULL,
            source_ts timestamptz,
            applied_at timestamptz NOT NULL DEFAULT now(),
            rows_applied bigint NOT NULL DEFAULT 0,
            transactions_applied bigint NOT NULL DEFAULT 0
        )"""
    ).format(sql.Identifier(STATE_SCHEMA)),
    # Requests to hold the worker at a source position (verify, cutover): the worker applies every
    # transaction committed before pause_at_lsn, nothing after, and reports paused_lsn.
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.control (
            service text PRIMARY KEY,
            pause_at_lsn pg_lsn,
            requested_by text,
            requested_at timestamptz,
            paused_lsn pg_lsn,
            paused_at timestamptz
        )"""
    ).format(sql.Identifier(STATE_SCHEMA)),
]


@dataclass(frozen=True)
class Checkpoint:
    """How far a service database is: the last log offset and source commit LSN it holds."""

    topic: str
    partition: int
    offset: int  # FROM_BEGINNING when only a backfill has been applied
    commit_lsn: int
    source_ts: datetime | None
    rows_applied: int = 0
    transactions_applied: int = 0


def ensure_state_schema(conn: psycopg.Connection) -> None:
    ensure_tables(conn, [*_STATE_DDL, *dead_letters.DDL, *backfill_store.DDL, *components.DDL, *ownership_moves.DDL,
                         *verify_progress.DDL, *source_shapes.DDL])


def read_checkpoint(conn: psycopg.Connection, service: str) -> Checkpoint | None:
    row = conn.execute(
        sql.SQL(
            "SELECT topic, kafka_partition, kafka_offset, commit_lsn::text, source_ts, rows_applied, "
            "transactions_applied FROM {}.checkpoints WHERE service = %s"
        ).format(sql.Identifier(STATE_SCHEMA)),
        (service,),
    ).fetchone()
    if row is None:
        return None
    return Checkpoint(row[0], row[1], row[2], str_to_lsn(row[3]), row[4], row[5], row[6])


def write_checkpoint(conn: psycopg.Connection, service: str, cp: Checkpoint) -> None:
    conn.execute(
        sql.SQL(
            """INSERT INTO {}.checkpoints AS c (service, topic, kafka_partition, kafka_offset, commit_lsn, source_ts,
                   applied_at, rows_applied, transactions_applied)
               VALUES (%s, %s, %s, %s, %s::pg_lsn, %s, now(), %s, %s)
               ON CONFLICT (service) DO UPDATE SET topic = EXCLUDED.topic, kafka_partition = EXCLUDED.kafka_partition,
                   kafka_offset = EXCLUDED.kafka_offset, commit_lsn = EXCLUDED.commit_lsn,
                   source_ts = coalesce(EXCLUDED.source_ts, c.source_ts), applied_at = now(),
                   rows_applied = EXCLUDED.rows_applied, transactions_applied = EXCLUDED.transactions_applied"""
        ).format(sql.Identifier(STATE_SCHEMA)),
        (service, cp.topic, cp.partition, cp.offset, lsn_to_str(cp.commit_lsn), cp.source_ts,
         cp.rows_applied, cp.transactions_applied),
    )


# -- reads for observers (splitter status, the metrics poller) -------------------------------------------------


@dataclass(frozen=True)
class AppliedCheckpoint:
    """A service's checkpoint and when it was last written (an idle worker still rewrites it every second)."""

    checkpoint: Checkpoint
    applied_at: datetime


def read_applied(conn: psycopg.Connection, service: str) -> AppliedCheckpoint | None:
    """The checkpoint with its write time; None before the first one (or before the table exists)."""
    present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.checkpoints",)).fetchone()
    if not present or not present[0]:
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT topic, kafka_partition, kafka_offset, commit_lsn::text, source_ts, rows_applied, "
            "transactions_applied, applied_at FROM {}.checkpoints WHERE service = %s"
        ).format(sql.Identifier(STATE_SCHEMA)),
        (service,),
    ).fetchone()
    if row is None:
        return None
    return AppliedCheckpoint(Checkpoint(row[0], row[1], row[2], str_to_lsn(row[3]), row[4], row[5], row[6]), row[7])


def state_tables_exist(conn: psycopg.Connection) -> bool:
    """Whether the state tables are there: `ensure_state_schema` creates them together, verify_progress last."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.verify_progress",)).fetchone()
    return bool(row and row[0])
