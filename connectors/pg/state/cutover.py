"""The cutover state in the source's `splitter` schema: one row per service (state, positions, history), routing.

Owns: the DDL of `splitter.cutover` (one row per service: state, positions, the reverse stream's names,
the last error, and an append-only `history` of every transition as the audit record) and
`splitter.routing` (where applications write each service's tables: home 'source' or 'service'); the
state names and which of them mean what (they are the values this table stores, and the reverse daemon,
metrics and the cutover all read them, so they live here, below those floors); every read and write of
those two tables.  Must not: decide transitions (`splitter.ops.cutover` does) or fence, switch or stream.

States (forward): streaming → fenced → caught_up → verified → switching → switched → reverse_streaming
→ complete, or aborted.  `switching` is the point of no return: it is recorded in the same transaction
that makes the source fence hard; before it, a crashed cutover is aborted on re-run (fence lifted); from
it on, a re-run finishes the switch.  Rollback: rollback_fenced → rollback_caught_up → rollback_verified
→ rollback_switching → rolled_back, the same rule around rollback_switching (an aborted rollback returns
to switched).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from connectors.pg.client import connect, lock_key, wrap_db_error
from connectors.pg.state import SCHEMA, STATE_SCHEMA
from connectors.pg.state import ensure_schema as _ensure_namespace
from splitter.core.dsn import SOURCE_DATABASE
from splitter.core.lsn import str_to_lsn

STREAMING: Final = "streaming"
FENCED: Final = "fenced"
CAUGHT_UP: Final = "caught_up"
VERIFIED: Final = "verified"
SWITCHING: Final = "switching"
SWITCHED: Final = "switched"
REVERSE_STREAMING: Final = "reverse_streaming"
COMPLETE: Final = "complete"
ABORTED: Final = "aborted"
RB_FENCED: Final = "rollback_fenced"
RB_CAUGHT_UP: Final = "rollback_caught_up"
RB_VERIFIED: Final = "rollback_verified"
RB_SWITCHING: Final = "rollback_switching"
ROLLED_BACK: Final = "rolled_back"
#: Every state, in the order of the flows above.
STATES: Final = (STREAMING, FENCED, CAUGHT_UP, VERIFIED, SWITCHING, SWITCHED, REVERSE_STREAMING, COMPLETE, ABORTED,
                 RB_FENCED, RB_CAUGHT_UP, RB_VERIFIED, RB_SWITCHING, ROLLED_BACK)

#: A new cutover may start from these.
STARTABLE: Final = frozenset({STREAMING, ABORTED, ROLLED_BACK})
#: Fenced, not yet switched: a re-run after a crash aborts.
FORWARD_PRE_SWITCH: Final = frozenset({FENCED, CAUGHT_UP, VERIFIED})
#: Past the point of no return: a re-run finishes.
FORWARD_POST_SWITCH: Final = frozenset({SWITCHING, SWITCHED, REVERSE_STREAMING})
ROLLBACK_PRE_SWITCH: Final = frozenset({RB_FENCED, RB_CAUGHT_UP, RB_VERIFIED})
#: The service database is home (or may be): the reverse stream must run.
REVERSE_RUNS: Final = FORWARD_POST_SWITCH | ROLLBACK_PRE_SWITCH | {RB_SWITCHING}

HOME_SOURCE: Final = "source"
HOME_SERVICE: Final = "service"

_DDL = [
    sql.SQL("""CREATE TABLE IF NOT EXISTS {}.cutover (
        service text PRIMARY KEY,
        state text NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        marker_lsn pg_lsn,
        reverse_slot text,
        reverse_publication text,
        reverse_topic text,
        reverse_lsn pg_lsn,
        error text,
        history jsonb NOT NULL DEFAULT '[]'::jsonb
    )""").format(SCHEMA),
    # What applications read before writing a service's tables.
    sql.SQL("""CREATE TABLE IF NOT EXISTS {}.routing (
        service text PRIMARY KEY,
        home text NOT NULL CHECK (home IN ('source', 'service')),
        database text NOT NULL,
        changed_at timestamptz NOT NULL DEFAULT now()
    )""").format(SCHEMA),
]


@dataclass(frozen=True)
class CutoverRow:
    service: str
    state: str
    attempt: int
    updated_at: datetime | None
    marker_lsn: int | None
    reverse_slot: str | None
    reverse_publication: str | None
    reverse_topic: str | None
    reverse_lsn: int | None
    error: str | None
    history: list[dict[str, Any]]


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create `splitter.cutover` and `splitter.routing` (autocommit session: its own transaction)."""
    with conn.transaction():
        # Serialise concurrent creators (two commands for different services may both arrive first).
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("splitter.cutover.schema"),))
        _ensure_namespace(conn)
        for stmt in _DDL:
            conn.execute(stmt)


def has_tables(conn: psycopg.Connection) -> bool:
    """Whether both tables exist (read-only callers: before the first cutover there is no state)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                       (f"{STATE_SCHEMA}.cutover", f"{STATE_SCHEMA}.routing")).fetchone()
    return bool(row and row[0])


def _lsn(text: str | None) -> int | None:
    return str_to_lsn(text) if text else None


def load(conn: psycopg.Connection, service: str, *, for_update: bool = False) -> CutoverRow | None:
    row = conn.execute(
        sql.SQL("SELECT service, state, attempt, updated_at, marker_lsn::text, reverse_slot, reverse_publication, "
                "reverse_topic, reverse_lsn::text, error, history FROM {}.cutover WHERE service = %s{}").format(
            SCHEMA, sql.SQL(" FOR UPDATE" if for_update else "")), (service,)).fetchone()
    if row is None:
        return None
    return CutoverRow(row[0], row[1], row[2], row[3], _lsn(row[4]), row[5], row[6], row[7], _lsn(row[8]), row[9],
                      list(row[10] or []))


def transition(conn: psycopg.Connection, service: str, state: str, event: str, *, new_attempt: bool = False,
               error: str | None = None, **fields: Any) -> None:
    """Set `service`'s state (and `fields`) and append `event` to its history, in the caller's transaction."""
    entry = {"state": state, "event": event}
    if error:
        entry["error"] = error
    sets: list[sql.Composable] = [
        sql.SQL("state = %(state)s"), sql.SQL("updated_at = now()"), sql.SQL("error = %(error)s"),
        sql.SQL("history = c.history || jsonb_build_array(%(entry)s::jsonb || "
                "jsonb_build_object('at', clock_timestamp()))")]
    if new_attempt:
        sets.append(sql.SQL("attempt = c.attempt + 1"))
    params: dict[str, Any] = {"service": service, "state": state, "error": error, "entry": Jsonb(entry)}
    for name, value in fields.items():
        cast = "::pg_lsn" if name.endswith("_lsn") else ""
        sets.append(sql.SQL("{} = %({})s" + cast).format(sql.Identifier(name), sql.SQL(name)))
        params[name] = value
    conn.execute(sql.SQL("INSERT INTO {}.cutover (service, state) VALUES (%(service)s, 'streaming') "
                         "ON CONFLICT (service) DO NOTHING").format(SCHEMA), params)
    conn.execute(sql.SQL("UPDATE {}.cutover AS c SET {} WHERE service = %(service)s").format(
        SCHEMA, sql.SQL(", ").join(sets)), params)


def set_routing(conn: psycopg.Connection, service: str, home: str, database: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {}.routing AS r (service, home, database) VALUES (%s, %s, %s) "
                "ON CONFLICT (service) DO UPDATE SET home = EXCLUDED.home, database = EXCLUDED.database, "
                "changed_at = CASE WHEN r.home = EXCLUDED.home THEN r.changed_at ELSE now() END").format(
            SCHEMA), (service, home, database))


def routing_home(conn: psycopg.Connection, service: str) -> str:
    row = conn.execute(sql.SQL("SELECT home FROM {}.routing WHERE service = %s").format(SCHEMA),
                       (service,)).fetchone()
    return str(row[0]) if row else HOME_SOURCE


def drop_checkpoint(conn: psycopg.Connection, service: str) -> None:
    """Forget `service`'s checkpoint row (the reverse worker's, in the source), if the table exists."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.checkpoints",)).fetchone()
    if exists and exists[0]:
        conn.execute(sql.SQL("DELETE FROM {}.checkpoints WHERE service = %s").format(SCHEMA), (service,))


def read_states(conn: psycopg.Connection) -> dict[str, tuple[str, str | None]]:
    """service → (state, last error) for every service with a cutover row; empty before the first cutover."""
    have = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.cutover",)).fetchone()
    if not have or not have[0]:
        return {}
    rows = conn.execute(sql.SQL("SELECT service, state::text, error FROM {}.cutover").format(SCHEMA)).fetchall()
    return {service: (state, error) for service, state, error in rows}


def _services_in(source_dsn: str, states: Collection[str], services: Sequence[str] | None,
                 application_name: str) -> set[str]:
    """The services (among `services`, if given) whose state is one of `states`, on a session of its own."""
    where = sql.SQL("state = ANY(%s)")
    params: list[object] = [sorted(states)]
    if services is not None:
        where = sql.SQL("service = ANY(%s) AND state = ANY(%s)")
        params = [list(services), sorted(states)]
    try:
        with connect(source_dsn, SOURCE_DATABASE, autocommit=True, application_name=application_name) as conn:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.cutover",)).fetchone()
            if not exists or not exists[0]:
                return set()
            rows = conn.execute(sql.SQL("SELECT service FROM {}.cutover WHERE {}").format(SCHEMA, where),
                                params).fetchall()
    except psycopg.Error as exc:
        raise wrap_db_error(exc, "cannot read the cutover states", source_dsn) from exc
    return {r[0] for r in rows}


def services_needing_reverse(source_dsn: str, services: Sequence[str]) -> set[str]:
    """The services (among `services`) whose state needs the reverse stream running."""
    return _services_in(source_dsn, REVERSE_RUNS, services, "splitter-reverse")


def completed_services(source_dsn: str) -> set[str]:
    """Services whose cutover is complete: their forward worker is retired and verify has nothing to compare.

    For `splitter run` (start no forward worker for them) and `splitter verify` (skip them).
    """
    return _services_in(source_dsn, {COMPLETE}, None, "splitter")


__all__ = [
    "ABORTED",
    "CAUGHT_UP",
    "COMPLETE",
    "FENCED",
    "FORWARD_POST_SWITCH",
    "FORWARD_PRE_SWITCH",
    "HOME_SERVICE",
    "HOME_SOURCE",
    "RB_CAUGHT_UP",
    "RB_FENCED",
    "RB_SWITCHING",
    "RB_VERIFIED",
    "REVERSE_RUNS",
    "REVERSE_STREAMING",
    "ROLLBACK_PRE_SWITCH",
    "ROLLED_BACK",
    "STARTABLE",
    "STATES",
    "STREAMING",
    "SWITCHED",
    "SWITCHING",
    "VERIFIED",
    "CutoverRow",
    "completed_services",
    "drop_checkpoint",
    "ensure_schema",
    "has_tables",
    "load",
    "read_states",
    "routing_home",
    "services_needing_reverse",
    "set_routing",
    "transition",
]
