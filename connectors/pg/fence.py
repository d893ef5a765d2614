"""Write fences: triggers that make a database reject writes to a service's tables, with a clear error.

Owns: the `splitter.fence_writes()` trigger function; creating (and turning soft into hard), lifting and
dropping the fence triggers, one per (table, service, kind), on the columns and rows a `FenceSpec` names;
reading them back (`fences`); the session advisory lock a soft fence depends on; the SQLSTATE
applications see; and the rule for taking table locks while writers run (short lock timeouts, retried
until a deadline).  Must not: decide when or what to fence (`splitter.ops.cutover` does) or touch data.

Two kinds of trigger, each named per service (`trigger_name`), so several services can fence different
columns of one shared table at once:

* the *fence* (`splitter_fence_<service>`): where the service's writes used to go (the source after its
  cutover, the service database after a rollback); soft or hard (below);
* the *read copy* fence (`splitter_read_copy_<service>`): in the service's database after its switch, on
  what it reads but another service owns (the forward stream keeps overwriting it); always hard.

Each is one statement-level BEFORE trigger: `UPDATE` (any column, or `UPDATE OF` the fenced columns only,
so a write touching none of them goes through) and, when the rows are fenced, INSERT, DELETE and TRUNCATE.

* Creating it takes SHARE ROW EXCLUSIVE on the table, which conflicts with the ROW EXCLUSIVE every writing
  transaction holds until it ends, so the CREATE waits for in-flight writers to commit (this is the drain,
  like Vitess's second lock) while reads (ACCESS SHARE) go on.  Any statement that writes afterwards sees
  the trigger (taking its table lock processes the catalog invalidation) and fails.  CREATE OR REPLACE
  TRIGGER takes the same lock and may change the event list and columns, so turning soft into hard and
  lifting never take more.
* It raises SQLSTATE `SP001` (class "SP" is in the implementation-defined range; no PostgreSQL code uses
  it) with a message naming the new home, e.g. "posts moved to service post (post_db); write there".
  Applications match on the SQLSTATE, never on the text.
* Ordinary triggers do not fire in sessions with session_replication_role = replica, so splitter's own
  apply sessions (the forward and reverse streams) write through a fence.
* A *soft* fence only holds while the session that took it is alive: it checks pg_locks for the advisory
  lock of its `lock_service` (the service a command locked; a group cutover fences every member's tables
  under its lead's one lock) and lets the write through when nobody holds it.  A cutover that crashes or
  is killed before it switches therefore never leaves writes fenced with nobody switching.  Switching
  turns the fence *hard* (unconditional) in the same transaction that records the point of no return, on
  the very session holding the lock, so a fence cannot turn hard after its owner died.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql

from connectors.pg.fence_drop import drop_through_function
from connectors.pg.state import SCHEMA, STATE_SCHEMA, ensure_schema

log = logging.getLogger(__name__)

T = TypeVar("T")

FENCE_SQLSTATE = "SP001"
FUNCTION_NAME = "fence_writes"
SOFT = "soft"
HARD = "hard"
OPEN = "open"  # lifted, trigger not dropped yet
FENCE = "fence"  # kinds of trigger
READ_COPY = "read_copy"
_PREFIX = {FENCE: "splitter_fence_", READ_COPY: "splitter_read_copy_"}
READ_COPY_HINT = "read splitter.routing for where the service owning it writes"
_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer identifiers silently

# First key of every cutover advisory lock (two-int form, so pg_locks shows it as classid/objid with
# objsubid = 2).  'SPLT' as an int: positive, so it compares to pg_locks' oid columns without sign games.
LOCK_CLASS = 0x53504C54

# pg_trigger.tgtype bits (catalog/pg_trigger.h).
_TG_INSERT, _TG_DELETE, _TG_UPDATE = 1 << 2, 1 << 3, 1 << 4

_FUNCTION_DDL = sql.SQL(
    """CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger LANGUAGE plpgsql AS $fence$
BEGIN
    -- TG_ARGV: [0] message, [1] 'soft' | 'hard' | 'open', [2] lock class, [3] lock key, [4] hint,
    -- [5] service, [6] kind ('fence' | 'read_copy'); the last two are for whoever reads pg_trigger.
    IF TG_ARGV[1] = 'open' THEN
        RETURN NULL;  -- lifted; the trigger itself is dropped when that does not stall readers
    END IF;
    IF TG_ARGV[1] = 'soft' AND NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 2
           AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
           AND classid = TG_ARGV[2]::oid AND objid = TG_ARGV[3]::oid) THEN
        -- The cutover that fenced this table is gone without switching: the fence no longer holds.
        RETURN NULL;
    END IF;
    RAISE EXCEPTION USING ERRCODE = {sqlstate}, MESSAGE = TG_ARGV[0], HINT = TG_ARGV[4];
END
$fence$"""
)


@dataclass(frozen=True)
class FenceSpec:
    """What one service's fence on one table stops: updates of `columns` (None: of any column) and, when
    `rows`, inserts, deletes and truncates; `message` is the error the writer gets."""

    schema: str
    table: str
    message: str
    service: str
    columns: tuple[str, ...] | None = None
    rows: bool = True

    def __post_init__(self) -> None:
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))
        if not self.rows and self.columns == ():
            raise ValueError(f"a fence of {self.schema}.{self.table} for {self.service} must stop something "
                             f"(columns or rows)")


@dataclass(frozen=True)
class Fence:
    """A fence trigger found on a table (`fences`); `lock_held`: a soft fence's lock has a holder."""

    schema: str
    table: str
    service: str
    kind: str
    mode: str
    columns: tuple[str, ...] | None  # None: any UPDATE; (): no UPDATE
    rows: bool
    lock_held: bool


def trigger_name(service: str, kind: str = FENCE) -> str:
    """The trigger of `service`'s fence of `kind`: within 63 bytes, a hash keeping long names apart."""
    name = _PREFIX[kind] + service
    if len(name.encode()) <= _NAME_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = name.encode()[:_NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}_{digest}"


def lock_key(service: str) -> tuple[int, int]:
    """The advisory lock (two int4 keys) a cutover command for `service` holds while it runs."""
    return LOCK_CLASS, zlib.crc32(f"splitter.cutover.{service}".encode()) & 0x7FFFFFFF


def try_lock(conn: psycopg.Connection, service: str) -> bool:
    """Take the session advisory lock of `service`'s cutover on `conn` (autocommit); False if taken."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_key(service)).fetchone()
    return bool(row and row[0])


def ensure_function(conn: psycopg.Connection) -> None:
    """Create the schema and the trigger function (inside the caller's transaction)."""
    ensure_schema(conn)
    conn.execute(_FUNCTION_DDL.format(schema=SCHEMA, function=sql.Identifier(FUNCTION_NAME),
                                      sqlstate=sql.Literal(FENCE_SQLSTATE)))


def _events(columns: tuple[str, ...] | None, rows: bool) -> sql.Composable:
    events: list[sql.Composable] = [sql.SQL("INSERT")] if rows else []
    if columns is None:
        events.append(sql.SQL("UPDATE"))
    elif columns:
        events.append(sql.SQL("UPDATE OF {}").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns)))
    if rows:
        events += [sql.SQL("DELETE"), sql.SQL("TRUNCATE")]
    return sql.SQL(" OR ").join(events)


def _create(conn: psycopg.Connection, schema: str, table: str, trigger: str, events: sql.Composable,
            args: Sequence[str]) -> None:
    conn.execute(sql.SQL(
        "CREATE OR REPLACE TRIGGER {trigger} BEFORE {events} ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}({args})").format(
        trigger=sql.Identifier(trigger), events=events, table=sql.Identifier(schema, table), schema=SCHEMA,
        function=sql.Identifier(FUNCTION_NAME), args=sql.SQL(", ").join(sql.Literal(a) for a in args)))


def fence_tables(conn: psycopg.Connection, specs: Sequence[FenceSpec], lock_service: str, mode: str,
                 hint: str) -> None:
    """Create or replace each spec's fence, inside the caller's transaction; a soft one holds while some
    session holds `lock_service`'s cutover lock.

    The caller sets lock_timeout: CREATE TRIGGER waits behind every in-flight writer of the table.
    """
    if mode not in (SOFT, HARD):
        raise ValueError(f"fence mode must be {SOFT!r} or {HARD!r}, not {mode!r}")
    klass, key = lock_key(lock_service)
    ensure_function(conn)
    for spec in specs:
        _create(conn, spec.schema, spec.table, trigger_name(spec.service), _events(spec.columns, spec.rows),
                (spec.message, mode, str(klass), str(key), hint, spec.service, FENCE))


def read_copy_tables(conn: psycopg.Connection, specs: Sequence[FenceSpec], hint: str = READ_COPY_HINT) -> None:
    """Create or replace each spec's read-copy fence (hard, tied to no lock), inside the caller's
    transaction; like `fence_tables` it waits behind in-flight writers (the caller sets lock_timeout)."""
    ensure_function(conn)
    for spec in specs:
        _create(conn, spec.schema, spec.table, trigger_name(spec.service, READ_COPY),
                _events(spec.columns, spec.rows), (spec.message, HARD, "0", "0", hint, spec.service, READ_COPY))


def _lift(conn: psycopg.Connection, tables: Sequence[tuple[str, str]], service: str, kind: str) -> None:
    lifted = [(f.schema, f.table) for f in fences(conn, tables, service, kind)]
    if lifted:
        ensure_function(conn)
    for schema, table in lifted:
        # Every event and no column list: an open trigger pins no column (ALTER TABLE DROP COLUMN works).
        _create(conn, schema, table, trigger_name(service, kind), _events(None, True),
                ("", OPEN, "0", "0", "", service, kind))


def unfence_tables(conn: psycopg.Connection, tables: Sequence[tuple[str, str]], service: str) -> None:
    """Lift `service`'s fence of each (schema, table), if any, inside the caller's transaction.

    The trigger is replaced by an open one rather than dropped: DROP TRIGGER takes ACCESS EXCLUSIVE,
    which would queue every reader behind one long query, while CREATE OR REPLACE TRIGGER takes the
    same SHARE ROW EXCLUSIVE as the fence did.  `sweep` drops open triggers afterwards.  Other services'
    fences of the same tables stay.
    """
    _lift(conn, tables, service, FENCE)


def lift_read_copy(conn: psycopg.Connection, tables: Sequence[tuple[str, str]], service: str) -> None:
    """Lift `service`'s read-copy fence of each (schema, table), if any, like `unfence_tables`."""
    _lift(conn, tables, service, READ_COPY)


def sweep(conn: psycopg.Connection, tables: Sequence[tuple[str, str]], service: str,
          lock_timeout_ms: int = 200) -> bool:
    """Drop `service`'s open (lifted) triggers of either kind, each in its own short transaction; best effort.

    lock_timeout bounds how long readers can queue behind the ACCESS EXCLUSIVE lock; a trigger that
    cannot be dropped now stays open (harmless) and is swept next time.  True if none is left to retry.
    DROP TRIGGER needs the table's owner: a role with only TRIGGER on the table (splitter's own) drops
    through the grants script's function (`connectors.pg.fence_drop`); without it the open trigger stays.
    """
    clean = True
    for found in _all_fences(conn, tables, service, None):
        if found.mode != OPEN:
            continue
        name = trigger_name(service, found.kind)
        drop = sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(name), sql.Identifier(found.schema, found.table))
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
                try:
                    with conn.transaction():
                        conn.execute(drop)
                except psycopg.errors.InsufficientPrivilege:
                    if not drop_through_function(conn, found.schema, found.table, name):
                        log.info("lifted fence trigger of service %s on %s.%s stays (open, it stops nothing): "
                                 "only the table's owner may drop it: %s", service, found.schema, found.table,
                                 drop.as_string(conn))
        except psycopg.errors.LockNotAvailable:
            clean = False
    return clean


_TRIGGERS_SQL = """
SELECT t.tgargs, t.tgtype,
       ARRAY(SELECT a.attname::text FROM unnest(t.tgattr::int2[]) WITH ORDINALITY AS u(attnum, i)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = u.attnum ORDER BY u.i)
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 WHERE n.nspname = %s AND c.relname = %s AND p.proname = %s AND pn.nspname = %s
 ORDER BY t.tgname"""


def _all_fences(conn: psycopg.Connection, tables: Sequence[tuple[str, str]], service: str | None,
                kind: str | None) -> list[Fence]:
    out: list[Fence] = []
    for schema, table in tables:
        for tgargs, tgtype, attnames in conn.execute(_TRIGGERS_SQL,
                                                     (schema, table, FUNCTION_NAME, STATE_SCHEMA)).fetchall():
            # tgargs is the arguments, each NUL-terminated.
            args = [a.decode() for a in bytes(tgargs).split(b"\0")]
            mode, klass, key = (args[1], args[2], args[3]) if len(args) > 3 else (HARD, "0", "0")
            owner, found_kind = (args[5], args[6]) if len(args) > 6 else ("", FENCE)
            if (service is not None and owner != service) or (kind is not None and found_kind != kind):
                continue
            columns = tuple(attnames) if attnames else (None if tgtype & _TG_UPDATE else ())
            held = mode == SOFT and _lock_held(conn, int(klass), int(key))
            out.append(Fence(schema, table, owner, found_kind, mode, columns, bool(tgtype & _TG_INSERT), held))
    return out


def fences(conn: psycopg.Connection, tables: Sequence[tuple[str, str]], service: str | None = None,
           kind: str | None = FENCE) -> list[Fence]:
    """The fences on `tables` (of `service`, or of every service; of `kind`, or of both kinds), each with
    its mode ('soft' or 'hard'); lifted ones are left out."""
    return [f for f in _all_fences(conn, tables, service, kind) if f.mode != OPEN]


def _lock_held(conn: psycopg.Connection, klass: int, key: int) -> bool:
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted
               AND objsubid = 2 AND database = (SELECT oid FROM pg_catalog.pg_database
                                                 WHERE datname = pg_catalog.current_database())
               AND classid = %s::oid AND objid = %s::oid)""", (str(klass), str(key))).fetchone()
    return bool(row and row[0])


def lock_holder_alive(conn: psycopg.Connection, service: str) -> bool:
    """Whether some session of this database holds `service`'s cutover lock (what a soft fence checks)."""
    return _lock_held(conn, *lock_key(service))


def retry_lock_timeouts(conn: psycopg.Connection, body: Callable[[], T], deadline: float,
                        lock_timeout_ms: int = 2000, pause: float = 0.05) -> T:
    """Run `body` in one transaction with a short lock_timeout, retrying lock timeouts until `deadline`.

    A short lock_timeout per attempt bounds how long new writers queue behind a statement waiting for a
    table lock (CREATE TRIGGER waits behind every in-flight writer) when some old transaction does not
    finish; the attempt is retried, `pause` seconds apart, until the deadline (time.monotonic()), after
    which the lock timeout is raised.
    """
    while True:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
                return body()
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)


def fence_with_retries(conn: psycopg.Connection, specs: Sequence[FenceSpec], lock_service: str, mode: str,
                       hint: str, deadline: float, lock_timeout_ms: int = 2000,
                       before_commit: Callable[[], None] | None = None) -> None:
    """Fence `specs` in one transaction, retrying lock timeouts until `deadline` (see `retry_lock_timeouts`).

    `before_commit`, if given, runs inside the transaction (to persist state atomically with the fence).
    """
    def body() -> None:
        fence_tables(conn, specs, lock_service, mode, hint)
        if before_commit is not None:
            before_commit()

    retry_lock_timeouts(conn, body, deadline, lock_timeout_ms)


__all__ = [
    "FENCE",
    "FENCE_SQLSTATE",
    "HARD",
    "OPEN",
    "READ_COPY",
    "READ_COPY_HINT",
    "SOFT",
    "Fence",
    "FenceSpec",
    "ensure_function",
    "fence_tables",
    "fence_with_retries",
    "fences",
    "lift_read_copy",
    "lock_holder_alive",
    "lock_key",
    "read_copy_tables",
    "retry_lock_timeouts",
    "sweep",
    "trigger_name",
    "try_lock",
    "unfence_tables",
]
