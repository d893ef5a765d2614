"""Source positions: the source's WAL position and the replication slot's state, read one way for everyone.

Owns: the one query of a slot's state (with the source's current WAL position, in the same statement) that
serves capture and plan (`slot_info`, which also refuses a slot of another plugin or database), metrics and
status (`source_positions`); `current_wal_lsn`; and `ReadSession`, the autocommit connection an observer
(status, the metrics poller) reads through: opened on first use, closed after a failure, its driver errors
turned into splitter errors by `wrap_db_error`.
Must not: write anything, decide what a position means (lag is splitter.observe.lag's), or know the
`splitter` schema (connectors.pg.state reads it; a ReadSession only runs those reads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from connectors.pg.client import connect, wrap_db_error
from connectors.pg.source import SlotInfo
from splitter.core.errors import ConfigurationError
from splitter.core.lsn import str_to_lsn

T = TypeVar("T")

# One row even when the slot does not exist (the WAL position is always there).  invalidation_reason is
# PostgreSQL 17's; read through to_jsonb it is NULL on the older servers that lack the column.
_SLOT_SQL = """
SELECT pg_current_wal_lsn()::text, s.slot_name, s.confirmed_flush_lsn::text, s.restart_lsn::text,
       coalesce(s.active, false), s.wal_status, to_jsonb(s)->>'invalidation_reason', s.plugin, s.database
  FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = %s
"""


@dataclass(frozen=True)
class SourcePositions:
    """The source's current WAL position and its slot (None when the slot does not exist), read together."""

    wal_lsn: int
    slot: SlotInfo | None

    @property
    def slot_lag_bytes(self) -> int | None:
        """Source WAL the slot has not confirmed (current WAL - confirmed_flush_lsn)."""
        if self.slot is None or self.slot.confirmed_flush_lsn is None:
            return None
        return self.wal_lsn - self.slot.confirmed_flush_lsn

    @property
    def retained_wal_bytes(self) -> int | None:
        """WAL the source keeps on disk for the slot (current WAL - restart_lsn)."""
        if self.slot is None or self.slot.restart_lsn is None:
            return None
        return self.wal_lsn - self.slot.restart_lsn


def _read(conn: psycopg.Connection, slot: str) -> tuple[SourcePositions, str | None, str | None]:
    """The positions, and the slot's plugin and database (None, None without a slot)."""
    row = conn.execute(_SLOT_SQL, (slot,)).fetchone()
    assert row is not None
    info = None
    if row[1] is not None:
        info = SlotInfo(row[1], str_to_lsn(row[2]) if row[2] else None, str_to_lsn(row[3]) if row[3] else None,
                        bool(row[4]), row[5], row[6])
    return SourcePositions(str_to_lsn(row[0]), info), row[7], row[8]


def source_positions(conn: psycopg.Connection, slot: str) -> SourcePositions:
    """The source's WAL position and the state of `slot`, whatever plugin or database the slot belongs to."""
    return _read(conn, slot)[0]


def slot_info(conn: psycopg.Connection, slot: str) -> SlotInfo | None:
    """The state of `slot`, a pgoutput slot in this database (ConfigurationError otherwise); None if absent."""
    positions, plugin, database = _read(conn, slot)
    if positions.slot is None:
        return None
    if plugin != "pgoutput" or database != conn.info.dbname:
        raise ConfigurationError(
            f"replication slot {slot!r} exists but belongs to plugin {plugin!r} in database {database!r}; "
            f"splitter needs a pgoutput slot in {conn.info.dbname!r}: choose another --slot name")
    return positions.slot


def current_wal_lsn(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str_to_lsn(row[0])


class ReadSession:
    """An observer's autocommit connection to one database: opened on first use, closed after a failure."""

    def __init__(self, dsn: str, what: str, application_name: str) -> None:
        self._dsn = dsn
        self._what = what
        self._application_name = application_name
        self._conn: psycopg.Connection | None = None

    def read(self, what: str, read: Callable[[psycopg.Connection], T]) -> T:
        """`read(connection)`; a driver error closes the connection and is raised as `wrap_db_error(exc, what)`."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = connect(self._dsn, self._what, autocommit=True,
                                        application_name=self._application_name)
        try:
            return read(conn)
        except psycopg.Error as exc:
            self.close()
            raise wrap_db_error(exc, what) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


__all__ = ["ReadSession", "SourcePositions", "current_wal_lsn", "slot_info", "source_positions"]
