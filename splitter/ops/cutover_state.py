"""The persisted cutover state machine and the routing table, in the source database's `splitter` schema.

Owns: the DDL of `splitter.cutover` (one row per service: state, positions, the reverse stream's names,
the last error, and an append-only `history` of every transition as the audit record) and
`splitter.routing` (where applications write each service's tables: home 'source' or 'service'), the
state names and which of them mean what, reading and transitioning rows, and the status view.
Must not: fence, switch or stream (`splitter.cutover`, `splitter.reverse` do).

States (forward): streaming → fenced → caught_up → verified → switching → switched → reverse_streaming
→ complete, or aborted.  `switching` is the point of no return: it is recorded in the same transaction
that makes the source fence hard; before it, a crashed cutover is aborted on re-run (fence lifted); from
it on, a re-run finishes the switch.  Rollback: rollback_fenced → rollback_caught_up → rollback_verified
→ rollback_switching → rolled_back, the same rule around rollback_switching (an aborted rollback returns
to switched).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from connectors.pg.client import connect, wrap_db_error
from splitter.core.lsn import str_to_lsn
from splitter.pipeline.config import Settings

SCHEMA = "splitter"

STREAMING = "streaming"
FENCED = "fenced"
CAUGHT_UP = "caught_up"
VERIFIED = "verified"
SWITCHING = "switching"
SWITCHED = "switched"
REVERSE_STREAMING = "reverse_streaming"
COMPLETE = "complete"
ABORTED = "aborted"
RB_FENCED = "rollback_fenced"
RB_CAUGHT_UP = "rollback_caught_up"
RB_VERIFIED = "rollback_verified"
RB_SWITCHING = "rollback_switching"
ROLLED_BACK = "rolled_back"

#: A new cutover may start from these.
STARTABLE = frozenset({STREAMING, ABORTED, ROLLED_BACK})
#: Fenced, not yet switched: a re-run after a crash aborts.
FORWARD_PRE_SWITCH = frozenset({FENCED, CAUGHT_UP, VERIFIED})
#: Past the point of no return: a re-run finishes.
FORWARD_POST_SWITCH = frozenset({SWITCHING, SWITCHED, REVERSE_STREAMING})
ROLLBACK_PRE_SWITCH = frozenset({RB_FENCED, RB_CAUGHT_UP, RB_VERIFIED})
#: The service database is home (or may be): the reverse stream must run.
REVERSE_RUNS = FORWARD_POST_SWITCH | ROLLBACK_PRE_SWITCH | {RB_SWITCHING}

HOME_SOURCE = "source"
HOME_SERVICE = "service"

_DDL = [
    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)),
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
    )""").format(sql.Identifier(SCHEMA)),
    # What applications read before writing a service's tables.
    sql.SQL("""CREATE TABLE IF NOT EXISTS {}.routing (
        service text PRIMARY KEY,
        home text NOT NULL CHECK (home IN ('source', 'service')),
        database text NOT NULL,
        changed_at timestamptz NOT NULL DEFAULT now()
    )""").format(sql.Identifier(SCHEMA)),
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
    with conn.transaction():
        # Serialise concurrent creators (two commands for different services may both arrive first).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('splitter.cutover.schema'))")
        for stmt in _DDL:
            conn.execute(stmt)


def _lsn(text: str | None) -> int | None:
    return str_to_lsn(text) if text else None


def load(conn: psycopg.Connection, service: str, *, for_update: bool = False) -> CutoverRow | None:
    row = conn.execute(
        sql.SQL("SELECT service, state, attempt, updated_at, marker_lsn::text, reverse_slot, reverse_publication, "
                "reverse_topic, reverse_lsn::text, error, history FROM {}.cutover WHERE service = %s{}").format(
            sql.Identifier(SCHEMA), sql.SQL(" FOR UPDATE" if for_update else "")), (service,)).fetchone()
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
                         "ON CONFLICT (service) DO NOTHING").format(sql.Identifier(SCHEMA)), params)
    conn.execute(sql.SQL("UPDATE {}.cutover AS c SET {} WHERE service = %(service)s").format(
        sql.Identifier(SCHEMA), sql.SQL(", ").join(sets)), params)


def set_routing(conn: psycopg.Connection, service: str, home: str, database: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {}.routing AS r (service, home, database) VALUES (%s, %s, %s) "
                "ON CONFLICT (service) DO UPDATE SET home = EXCLUDED.home, database = EXCLUDED.database, "
                "changed_at = CASE WHEN r.home = EXCLUDED.home THEN r.changed_at ELSE now() END").format(
            sql.Identifier(SCHEMA)), (service, home, database))


def routing_home(conn: psycopg.Connection, service: str) -> str:
    row = conn.execute(sql.SQL("SELECT home FROM {}.routing WHERE service = %s").format(sql.Identifier(SCHEMA)),
                       (service,)).fetchone()
    return str(row[0]) if row else HOME_SOURCE


def services_needing_reverse(settings: Settings, services: list[str]) -> set[str]:
    """The services (among `services`) whose state needs the reverse stream running."""
    try:
        with connect(settings.source_dsn, "the source database", autocommit=True,
                     application_name="splitter-reverse") as conn:
            exists = conn.execute("SELECT to_regclass('splitter.cutover') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return set()
            rows = conn.execute(sql.SQL("SELECT service FROM {}.cutover WHERE service = ANY(%s) AND state = ANY(%s)")
                                .format(sql.Identifier(SCHEMA)), (services, sorted(REVERSE_RUNS))).fetchall()
    except psycopg.Error as exc:
        raise wrap_db_error(exc, "cannot read the cutover states", settings.source_dsn) from exc
    return {r[0] for r in rows}


def completed_services(settings: Settings) -> set[str]:
    """Services whose cutover is complete: their forward worker is retired and verify has nothing to compare.

    For `splitter run` (start no forward worker for them) and `splitter verify` (skip them).
    """
    try:
        with connect(settings.source_dsn, "the source database", autocommit=True,
                     application_name="splitter") as conn:
            exists = conn.execute("SELECT to_regclass('splitter.cutover') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return set()
            rows = conn.execute(sql.SQL("SELECT service FROM {}.cutover WHERE state = %s").format(
                sql.Identifier(SCHEMA)), (COMPLETE,)).fetchall()
    except psycopg.Error as exc:
        raise wrap_db_error(exc, "cannot read the cutover states", settings.source_dsn) from exc
    return {r[0] for r in rows}


@dataclass(frozen=True)
class ServiceCutoverStatus:
    """One line of `splitter status`'s cutover section."""

    service: str
    state: str
    home: str
    updated_at: datetime | None
    fenced: str  # 'no', 'soft', 'hard', or 'soft (stale: its cutover is gone, writes pass)'
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "state": self.state, "home": self.home, "fenced": self.fenced,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None, "error": self.error}


def status(settings: Settings) -> list[ServiceCutoverStatus]:
    """Each service's cutover state, home and source fence, for `splitter status`."""
    from connectors.pg import fence

    out: list[ServiceCutoverStatus] = []
    try:
        with connect(settings.source_dsn, "the source database", autocommit=True,
                     application_name="splitter-status") as conn:
            # Read-only: before the first cutover there is no state, and every service streams.
            have = conn.execute("SELECT to_regclass('splitter.cutover') IS NOT NULL AND "
                                "to_regclass('splitter.routing') IS NOT NULL").fetchone()
            for svc in settings.topology.services:
                row = load(conn, svc.name) if have and have[0] else None
                tables = [(r.source_schema, r.source_table) for r in settings.topology.routes_for(svc)]
                modes = set(fence.fences(conn, tables).values())
                fenced = "no"
                if modes:
                    fenced = fence.HARD if fence.HARD in modes else fence.SOFT
                    if fenced == fence.SOFT and not fence.lock_holder_alive(conn, svc.name):
                        fenced = "soft (stale: its cutover is gone, writes pass)"
                out.append(ServiceCutoverStatus(
                    svc.name, row.state if row else STREAMING,
                    routing_home(conn, svc.name) if have and have[0] else HOME_SOURCE,
                    row.updated_at if row else None, fenced, row.error if row else None))
    except psycopg.Error as exc:
        raise wrap_db_error(exc, "cannot read the cutover states", settings.source_dsn) from exc
    return out


def render_status(rows: list[ServiceCutoverStatus]) -> str:
    header = ("SERVICE", "CUTOVER", "HOME", "FENCE", "SINCE", "LAST ERROR")
    lines = [header] + [
        (r.service, r.state, r.home, r.fenced, r.updated_at.strftime("%Y-%m-%d %H:%M:%S") if r.updated_at else "-",
         (r.error or "")[:80]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def history_json(row: CutoverRow) -> str:
    return json.dumps(row.history, indent=2, default=str)


__all__ = [
    "CutoverRow",
    "ServiceCutoverStatus",
    "completed_services",
    "ensure_schema",
    "load",
    "render_status",
    "routing_home",
    "services_needing_reverse",
    "set_routing",
    "status",
    "transition",
]
