"""The hold contract in a service database (`splitter.control`): ask a worker to stop at a source position.

A requester (verify, cutover) writes `pause_at_lsn`; the worker applies every transaction committed
before it and nothing after, then writes `paused_lsn`; the requester removes its own row to let the
worker go on.  Owns: the requester's side (`HoldControl`) and the reading of a hold with its
checkpoint (`hold_state`); the table's DDL is in `schema`.  Must not: decide when to hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from connectors.pg.client import connect, lock_key, wrap_db_error
from connectors.pg.state import SCHEMA
from connectors.pg.state.dead_letters import Request
from connectors.pg.state.schema import ensure_state_schema
from splitter.core.errors import RetryableError
from splitter.core.lsn import lsn_to_str, str_to_lsn

#: requested_by of verify's holds (other requesters name themselves).
REQUESTER = "verify"


def request_hold(conn: psycopg.Connection, service: str, lsn: int, requester: str, *,
                 take_over: bool = False) -> bool:
    """Ask `service`'s worker to hold at `lsn` for `requester`; False if another requester holds it.

    Only a free row or the requester's own is taken: one requester never overrides another's hold,
    unless `take_over` (`splitter complete`, whose hold retires the worker for good) says so.
    """
    only_free = sql.SQL("" if take_over else "WHERE c.pause_at_lsn IS NULL OR c.requested_by = EXCLUDED.requested_by")
    row = conn.execute(
        sql.SQL("""INSERT INTO {}.control AS c (service, pause_at_lsn, requested_by, requested_at)
           VALUES (%s, %s::pg_lsn, %s, now())
           ON CONFLICT (service) DO UPDATE SET pause_at_lsn = EXCLUDED.pause_at_lsn,
               requested_by = EXCLUDED.requested_by, requested_at = now(), paused_lsn = NULL, paused_at = NULL
           {}
           RETURNING 1""").format(SCHEMA, only_free),
        (service, lsn_to_str(lsn), requester)).fetchone()
    return row is not None


def release_hold(conn: psycopg.Connection, service: str, requester: str) -> None:
    """Remove `requester`'s hold of `service` (another requester's hold stays)."""
    conn.execute(sql.SQL("DELETE FROM {}.control WHERE service = %s AND requested_by = %s").format(SCHEMA),
                 (service, requester))


@dataclass(frozen=True)
class HoldState:
    """The control row and checkpoint of one service, as last read."""

    pause_at_lsn: int | None
    requested_by: str | None
    paused_lsn: int | None
    paused_at: datetime | None
    checkpoint_lsn: int | None
    checkpoint_at: datetime | None


def hold_state(conn: psycopg.Connection, service: str) -> HoldState:
    """Read the control row and the checkpoint; either table may not exist yet (no worker ever ran)."""
    present = conn.execute("SELECT to_regclass('splitter.control') IS NOT NULL, "
                           "to_regclass('splitter.checkpoints') IS NOT NULL").fetchone()
    assert present is not None
    control: tuple[object, ...] | None = None
    checkpoint: tuple[object, ...] | None = None
    if present[0]:
        control = conn.execute("SELECT pause_at_lsn::text, requested_by, paused_lsn::text, paused_at "
                               "FROM splitter.control WHERE service = %s", (service,)).fetchone()
    if present[1]:
        checkpoint = conn.execute("SELECT commit_lsn::text, applied_at FROM splitter.checkpoints WHERE service = %s",
                                  (service,)).fetchone()
    c = control or (None, None, None, None)
    k = checkpoint or (None, None)

    def lsn(text: object) -> int | None:
        return str_to_lsn(str(text)) if text else None

    def ts(value: object) -> datetime | None:
        return value if isinstance(value, datetime) else None

    return HoldState(lsn(c[0]), str(c[1]) if c[1] is not None else None, lsn(c[2]), ts(c[3]), lsn(k[0]), ts(k[1]))


class HoldControl:
    """verify's end of the control-table contract with one service's worker (autocommit session)."""

    def __init__(self, dsn: str, service: str) -> None:
        self._dsn = dsn
        self.service = service
        self._requested = False
        self.conn = connect(dsn, f"the database of service {service}", autocommit=True,
                            application_name="splitter-verify")
        try:
            ensure_state_schema(self.conn)
            # Two verifies of one service would overwrite each other's hold: one at a time.
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s)",
                                    (lock_key(f"splitter.verify.{service}"),)).fetchone()
        except psycopg.Error as exc:
            self.conn.close()
            raise wrap_db_error(exc, f"cannot prepare the hold of service {service}", dsn) from exc
        if not row or not row[0]:
            self.conn.close()
            raise RetryableError(f"another `splitter verify` is running against service {service}; try again later")

    def request(self, lsn: int) -> None:
        """Ask the worker to hold at `lsn` (apply every transaction committed before it, nothing after)."""
        try:
            taken = request_hold(self.conn, self.service, lsn, REQUESTER)
            if not taken:
                other = self.state()
                raise RetryableError(
                    f"service {self.service} is already held by {other.requested_by or 'another requester'} at "
                    f"{lsn_to_str(other.pause_at_lsn or 0)}; verify does not take over that hold: try again later")
            self._requested = True
        except psycopg.Error as exc:
            raise wrap_db_error(exc, f"cannot ask the worker of service {self.service} to hold", self._dsn) from exc

    def state(self) -> HoldState:
        try:
            return hold_state(self.conn, self.service)
        except psycopg.Error as exc:
            raise wrap_db_error(exc, f"cannot read the hold of service {self.service}", self._dsn) from exc

    def release(self) -> None:
        """Let the worker go on (only verify's own request is removed), then end the session."""
        try:
            if self._requested:
                release_hold(self.conn, self.service, REQUESTER)
                self._requested = False
        except psycopg.Error as exc:
            raise wrap_db_error(exc, f"cannot release the hold of service {self.service}; run "
                                     f"DELETE FROM splitter.control WHERE service = '{self.service}' in its database",
                                self._dsn) from exc
        finally:
            self.conn.close()


__all__ = ["REQUESTER", "HoldControl", "HoldState", "hold_state", "mark_paused", "poll_control", "release_hold",
           "request_hold"]


# -- the worker's side: what it is asked to do, and reporting that it holds ---------------------------------------


def poll_control(conn: psycopg.Connection, service: str) -> tuple[Request | None, int | None]:
    """In one round trip: the oldest pending operator request of `service`, and the LSN a hold was asked at."""
    row = conn.execute(
        sql.SQL("SELECT r.id, r.action, r.from_offset, r.from_lsn::text, r.ids, "
                "(SELECT c.pause_at_lsn::text FROM {schema}.control c WHERE c.service = %(s)s) "
                "FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT * FROM {schema}.requests q "
                "WHERE q.service = %(s)s AND q.done_at IS NULL ORDER BY q.id LIMIT 1) AS r ON true")
        .format(schema=SCHEMA), {"s": service}).fetchone()
    assert row is not None
    request = Request(*row[:5]) if row[0] is not None else None
    return request, (str_to_lsn(row[5]) if row[5] else None)


def mark_paused(conn: psycopg.Connection, service: str, pause_at: int, held: int) -> None:
    """Report, in the worker's apply transaction, that it holds at `held` for the hold asked at `pause_at`."""
    conn.execute(
        sql.SQL("UPDATE {}.control SET paused_lsn = %s::pg_lsn, paused_at = now() "
                "WHERE service = %s AND pause_at_lsn = %s::pg_lsn").format(SCHEMA),
        (lsn_to_str(held), service, lsn_to_str(pause_at)))
