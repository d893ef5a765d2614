"""The ownership moves a service's worker has applied, kept in its service database.

Owns: `splitter.ownership_moves` (one row per worker, source table and move: which service the move
names, where the table's writes went, and the move's position in the source's log), written in the
transaction of the checkpoint at that position, and read back as the last move of each table at or
before a position (the scopes a worker resumes with).  Must not: decode ownership messages or turn a
move into a write scope (`splitter.pipeline.worker.moves` does), or commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from connectors.pg.state import SCHEMA
from splitter.core.lsn import lsn_to_str, str_to_lsn

DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.ownership_moves (
            worker text NOT NULL,
            source_table text NOT NULL,
            lsn pg_lsn NOT NULL,
            service text NOT NULL,
            home text NOT NULL CHECK (home IN ('service', 'source', 'retired')),
            recorded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (worker, source_table, lsn)
        )"""
    ).format(SCHEMA),
]


@dataclass(frozen=True)
class StoredMove:
    """One move a worker applied: source table `table`'s writes of `service` went to `home` at `lsn`."""

    table: str
    service: str  # "" for a retired table
    home: str  # "service" | "source" | "retired"
    lsn: int


def record(conn: psycopg.Connection, worker: str, moves: Iterable[StoredMove]) -> None:
    """Insert `moves` into the open transaction; one already there (read again by a replay) stays as it was."""
    rows = [(worker, m.table, lsn_to_str(m.lsn), m.service, m.home) for m in moves]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {}.ownership_moves (worker, source_table, lsn, service, home) "
                    "VALUES (%s, %s, %s::pg_lsn, %s, %s) ON CONFLICT DO NOTHING").format(SCHEMA), rows)


def latest(conn: psycopg.Connection, worker: str, through_lsn: int) -> list[StoredMove]:
    """The last move of each source table `worker` recorded at or before `through_lsn`."""
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT ON (source_table) source_table, service, home, lsn::text "
                "FROM {}.ownership_moves WHERE worker = %s AND lsn <= %s::pg_lsn "
                "ORDER BY source_table, lsn DESC").format(SCHEMA),
        (worker, lsn_to_str(through_lsn))).fetchall()
    return [StoredMove(str(table), str(service), str(home), str_to_lsn(str(lsn))) for table, service, home, lsn in rows]


__all__ = ["DDL", "StoredMove", "latest", "record"]
