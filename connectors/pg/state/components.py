"""Which splitter components stopped for good or run degraded, kept in the database each belongs to:
`splitter.components`.

Owns: the table (one row per component that stopped with a configuration or fatal error and has not run
since: component, service, exit class and code, the masked message, when) and its uses: a component
records its stop before its process exits (`record_stopped`), clears it once it runs again
(`clear_stopped`), and observers (`splitter status`, the metrics) read it (`read_stopped`).  State
`degraded` is a component that runs but has a problem an operator must see (capture: heartbeats failing,
broker unreachable): `exit_class` then holds the problems' kinds ("heartbeat", "broker", comma-separated),
`exit_code` 0; written and cleared by the component itself while it runs (`record_degraded`,
`clear_degraded`, on a session it holds open), read by `read_degraded`.  A worker's row is in its service
database; capture's and the reverse daemon's are in the source.  Must not: decide whether a component
stops or restarts (the daemon does), or hold anything but masked messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from connectors.pg.client import connect, wrap_db_error
from connectors.pg.state import SCHEMA, STATE_SCHEMA, ensure_tables

#: A row's states: stopped for good, or running with a problem (see the module docstring).
STOPPED = "stopped"
DEGRADED = "degraded"

DDL = [
    sql.SQL(
        """CREATE TABLE IF NOT EXISTS {}.components (
            component text NOT NULL,
            service text NOT NULL DEFAULT '',
            state text NOT NULL,
            exit_class text NOT NULL,
            exit_code integer NOT NULL,
            message text NOT NULL,
            since timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (component, service)
        )"""
    ).format(SCHEMA),
]

_APPLICATION_NAME = "splitter-daemon"
_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class StoppedComponent:
    component: str  # capture | worker | reverse
    service: str  # "" for capture and reverse
    exit_class: str  # fatal | configuration
    exit_code: int
    message: str
    since: datetime

    @property
    def name(self) -> str:
        """How logs and the supervisor call it: capture, reverse, worker[S]."""
        return f"{self.component}[{self.service}]" if self.service else self.component


def _has_table(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.components",)).fetchone()
    return bool(row and row[0])


def _ensure_table(conn: psycopg.Connection) -> None:
    ensure_tables(conn, DDL)


def record_stopped(dsn: str, what: str, component: str, service: str, exit_class: str, exit_code: int,
                   message: str) -> None:
    """Record that `component` stopped for good (creating the table if needed); raises a SplitterError."""
    conn = connect(dsn, what, autocommit=True, application_name=_APPLICATION_NAME)
    try:
        _ensure_table(conn)
        conn.execute(
            sql.SQL("INSERT INTO {}.components AS c (component, service, state, exit_class, exit_code, message, since) "
                    "VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (component, service) DO UPDATE SET "
                    "state = EXCLUDED.state, exit_class = EXCLUDED.exit_class, exit_code = EXCLUDED.exit_code, "
                    "message = EXCLUDED.message, since = EXCLUDED.since").format(SCHEMA),
            (component, service, STOPPED, exit_class, exit_code, message[:_MAX_MESSAGE]))
    except psycopg.Error as exc:
        raise wrap_db_error(exc, f"recording that {component} stopped, in {what}", dsn) from exc
    finally:
        conn.close()


def clear_stopped(dsn: str, what: str, component: str, service: str) -> None:
    """Forget `component`'s stop (it runs again); nothing to do before the table exists.  Raises a SplitterError."""
    conn = connect(dsn, what, autocommit=True, application_name=_APPLICATION_NAME)
    try:
        if _has_table(conn):
            conn.execute(sql.SQL("DELETE FROM {}.components WHERE component = %s AND service = %s").format(SCHEMA),
                         (component, service))
    except psycopg.Error as exc:
        raise wrap_db_error(exc, f"clearing the stop record of {component}, in {what}", dsn) from exc
    finally:
        conn.close()


def read_stopped(conn: psycopg.Connection) -> list[StoppedComponent]:
    """Every component of this database that stopped for good, by name; [] before the table exists."""
    if not _has_table(conn):
        return []
    rows = conn.execute(
        sql.SQL("SELECT component, service, exit_class, exit_code, message, since FROM {}.components "
                "WHERE state = %s ORDER BY component, service").format(SCHEMA), (STOPPED,)).fetchall()
    return [StoppedComponent(*row) for row in rows]


@dataclass(frozen=True)
class DegradedComponent:
    component: str
    service: str
    problems: tuple[str, ...]  # heartbeat | broker
    message: str
    since: datetime


def record_degraded(conn: psycopg.Connection, component: str, service: str, problems: tuple[str, ...],
                    message: str) -> None:
    """Record that `component` runs degraded (autocommit `conn`); `since` is kept while the problems stay."""
    try:
        _ensure_table(conn)
        conn.execute(
            sql.SQL("INSERT INTO {}.components AS c (component, service, state, exit_class, exit_code, message, since) "
                    "VALUES (%s, %s, %s, %s, 0, %s, now()) ON CONFLICT (component, service) DO UPDATE SET "
                    "state = EXCLUDED.state, exit_class = EXCLUDED.exit_class, exit_code = 0, "
                    "message = EXCLUDED.message, since = CASE WHEN c.state = EXCLUDED.state "
                    "AND c.exit_class = EXCLUDED.exit_class THEN c.since ELSE EXCLUDED.since END").format(SCHEMA),
            (component, service, DEGRADED, ",".join(problems), message[:_MAX_MESSAGE]))
    except psycopg.Error as exc:
        raise wrap_db_error(exc, f"recording that {component} runs degraded") from exc


def clear_degraded(conn: psycopg.Connection, component: str, service: str) -> None:
    """Forget that `component` runs degraded (a stop record stays)."""
    try:
        if _has_table(conn):
            conn.execute(sql.SQL("DELETE FROM {}.components WHERE component = %s AND service = %s AND state = %s")
                         .format(SCHEMA), (component, service, DEGRADED))
    except psycopg.Error as exc:
        raise wrap_db_error(exc, f"clearing the degraded record of {component}") from exc


def read_degraded(conn: psycopg.Connection) -> list[DegradedComponent]:
    """Every component of this database that runs degraded, by name; [] before the table exists."""
    if not _has_table(conn):
        return []
    rows = conn.execute(
        sql.SQL("SELECT component, service, exit_class, message, since FROM {}.components "
                "WHERE state = %s ORDER BY component, service").format(SCHEMA), (DEGRADED,)).fetchall()
    return [DegradedComponent(c, s, tuple(p for p in kinds.split(",") if p), m, t) for c, s, kinds, m, t in rows]


__all__ = ["DDL", "DEGRADED", "STOPPED", "DegradedComponent", "StoppedComponent", "clear_degraded",
           "clear_stopped", "read_degraded", "read_stopped", "record_degraded", "record_stopped"]
