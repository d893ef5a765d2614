"""Which change log a position refers to: `splitter.log_identity`.

Owns: the table (one row per holder of a position in the change log: capture's slot, in the source; each
service's checkpoint, in its service database) with the topic and the id Kafka gave it when it was created,
and reading and writing a row.  A slot position or a checkpoint offset means something only in the log it
was taken in: a topic deleted and created again, or created again by a broker that restarted empty, has the
same name and a new id.  Created on first write (like `components`).  Must not: ask Kafka for an id, or
decide what a different one means (splitter.pipeline.log_identity and the worker's log guard do).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from connectors.pg.client import wrap_db_error
from connectors.pg.state import SCHEMA, STATE_SCHEMA, ensure_tables

#: Who holds the position: capture's slot (row named by the slot) or a service's checkpoint (by the service).
SLOT = "slot"
SERVICE = "service"

DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.log_identity (
            holder text NOT NULL,
            name text NOT NULL,
            topic text NOT NULL,
            topic_id text NOT NULL,
            since timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (holder, name)
        )"""
    ).format(SCHEMA),
]


@dataclass(frozen=True)
class LogIdentity:
    topic: str
    topic_id: str  # "" from a broker that gives topics no id
    since: datetime


def read_log_identity(conn: psycopg.Connection, holder: str, name: str) -> LogIdentity | None:
    try:
        present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.log_identity",)).fetchone()
        if not present or not present[0]:
            return None
        row = conn.execute(sql.SQL("SELECT topic, topic_id, since FROM {}.log_identity WHERE holder = %s AND name = %s")
                           .format(SCHEMA), (holder, name)).fetchone()
    except psycopg.Error as exc:
        raise wrap_db_error(exc, f"cannot read which change log {holder} {name} refers to") from exc
    return LogIdentity(row[0], row[1], row[2]) if row else None


def write_log_identity(conn: psycopg.Connection, holder: str, name: str, topic: str, topic_id: str) -> None:
    """Record that the position `holder` `name` holds is in `topic` with id `topic_id` (autocommit session)."""
    try:
        ensure_tables(conn, DDL)
        with conn.transaction():
            conn.execute(
                sql.SQL("""INSERT INTO {}.log_identity AS l (holder, name, topic, topic_id) VALUES (%s, %s, %s, %s)
                           ON CONFLICT (holder, name) DO UPDATE SET topic = EXCLUDED.topic,
                               topic_id = EXCLUDED.topic_id, since = now()""").format(SCHEMA),
                (holder, name, topic, topic_id))
    except psycopg.Error as exc:
        raise wrap_db_error(exc, f"cannot record which change log {holder} {name} refers to") from exc
