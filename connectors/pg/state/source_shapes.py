"""The source tables' shapes a service's worker stands at, and the schema changes it stopped at, kept in its
service database.

Owns: `splitter.source_shapes` (one row per service and source table: the schema header of the table's
shape at the checkpoint and the log offset that shape began at), written in the checkpoint's transaction
(`store`), read as the next start's baseline (`stored`) and cut back by a replay's rewind (`forget_after`);
and `splitter.schema_stops` (the offset and new shape of each type change the worker stopped at): recorded
before it exits (`record_stop`); restarting it is the operator's acknowledgement, so the next start reads
the shapes it may now take (`acknowledged`), forgetting those its checkpoint has passed.  Must not: judge a
shape (`splitter.pipeline.worker.schema_policy` does), or commit.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql

from connectors.pg.state import SCHEMA

DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.source_shapes (
            service text NOT NULL,
            source_table text NOT NULL,
            began_at_offset bigint NOT NULL,
            shape bytea NOT NULL,
            PRIMARY KEY (service, source_table)
        )"""
    ).format(SCHEMA),
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.schema_stops (
            service text NOT NULL,
            source_table text NOT NULL,
            kafka_offset bigint NOT NULL,
            shape bytea NOT NULL,
            stopped_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (service, source_table, kafka_offset)
        )"""
    ).format(SCHEMA),
]


def store(conn: psycopg.Connection, service: str, shapes: Mapping[str, tuple[int, bytes]]) -> None:
    """Write, in the open transaction, each table's shape (the offset it began at, its schema header)."""
    if not shapes:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {}.source_shapes (service, source_table, began_at_offset, shape) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (service, source_table) DO UPDATE "
                    "SET began_at_offset = EXCLUDED.began_at_offset, shape = EXCLUDED.shape").format(SCHEMA),
            [(service, table, offset, header) for table, (offset, header) in shapes.items()])


def stored(conn: psycopg.Connection, service: str) -> dict[str, bytes]:
    """The tables' shapes at `service`'s checkpoint, by table."""
    rows = conn.execute(sql.SQL("SELECT source_table, shape FROM {}.source_shapes WHERE service = %s").format(SCHEMA),
                        (service,)).fetchall()
    return {str(table): bytes(shape) for table, shape in rows}


def forget_after(conn: psycopg.Connection, service: str, offset: int) -> None:
    """In the open transaction: the checkpoint moves back to `offset`, so shapes that began after it are not
    the shapes there (the replay reads them again)."""
    conn.execute(sql.SQL("DELETE FROM {}.source_shapes WHERE service = %s AND began_at_offset > %s").format(SCHEMA),
                 (service, offset))


def record_stop(conn: psycopg.Connection, service: str, table: str, offset: int, shape: bytes) -> None:
    """Note, in the open transaction, that `service` stopped at `offset` where `table` took `shape`."""
    conn.execute(
        sql.SQL("INSERT INTO {}.schema_stops (service, source_table, kafka_offset, shape) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (service, source_table, kafka_offset) DO UPDATE SET shape = EXCLUDED.shape, "
                "stopped_at = now()").format(SCHEMA),
        (service, table, offset, shape))


def acknowledged(conn: psycopg.Connection, service: str, checkpoint_offset: int) -> frozenset[tuple[str, bytes]]:
    """The (source table, shape) pairs `service` stopped at beyond `checkpoint_offset`, in the open transaction
    (the stops at or before it were gone through, and are deleted; several of one table may wait: two type
    changes before the checkpoint passes the first)."""
    conn.execute(sql.SQL("DELETE FROM {}.schema_stops WHERE service = %s AND kafka_offset <= %s").format(SCHEMA),
                 (service, checkpoint_offset))
    rows = conn.execute(sql.SQL("SELECT source_table, shape FROM {}.schema_stops WHERE service = %s").format(SCHEMA),
                        (service,)).fetchall()
    return frozenset((str(table), bytes(shape)) for table, shape in rows)


__all__ = ["DDL", "acknowledged", "forget_after", "record_stop", "store", "stored"]
