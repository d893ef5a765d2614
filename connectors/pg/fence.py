"""Write fences: triggers that make a database reject writes to a service's tables, with a clear error.

Owns: the `splitter.fence_writes()` trigger function, creating (and turning soft into hard) and dropping
the `splitter_fence` trigger on a set of tables, the session advisory lock a soft fence depends on, and
the SQLSTATE applications see, and the rule for taking table locks while writers run (short lock
timeouts, retried until a deadline).  Must not: decide when to fence (`splitter.ops.cutover` does) or
touch data.

The fence is one statement-level BEFORE INSERT/UPDATE/DELETE/TRUNCATE trigger per table:

* Creating it takes SHARE ROW EXCLUSIVE on the table, which conflicts with the ROW EXCLUSIVE every writing
  transaction holds until it ends, so the CREATE waits for in-flight writers to commit (this is the drain,
  like Vitess's second lock) while reads (ACCESS SHARE) go on.  Any statement that writes afterwards sees
  the trigger (taking its table lock processes the catalog invalidation) and fails.
* It raises SQLSTATE `SP001` (class "SP" is in the implementation-defined range; no PostgreSQL code uses
  it) with a message naming the new home, e.g. "posts moved to service post (post_db); write there".
  Applications match on the SQLSTATE, never on the text.
* Ordinary triggers do not fire in sessions with session_replication_role = replica, so splitter's own
  apply sessions (the reverse stream) write through a fence.
* A *soft* fence only holds while the session that took it is alive: it checks pg_locks for that
  session's advisory lock and lets the write through when nobody holds it.  A cutover that crashes or is
  killed before it switches therefore never leaves writes fenced with nobody switching.  Switching turns
  the fence *hard* (unconditional) in the same transaction that records the point of no return, on the
  very session holding the lock, so a fence cannot turn hard after its owner died.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg
from psycopg import sql

from connectors.pg.state import SCHEMA

T = TypeVar("T")

FENCE_SQLSTATE = "SP001"
TRIGGER_NAME = "splitter_fence"
FUNCTION_NAME = "fence_writes"
SOFT = "soft"
HARD = "hard"
OPEN = "open"  # lifted, trigger not dropped yet

# First key of every cutover advisory lock (two-int form, so pg_locks shows it as classid/objid with
# objsubid = 2).  'SPLT' as an int: positive, so it compares to pg_locks' oid columns without sign games.
LOCK_CLASS = 0x53504C54

_FUNCTION_DDL = sql.SQL(
    """CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger LANGUAGE plpgsql AS $fence$
BEGIN
    -- TG_ARGV: [0] message, [1] 'soft' | 'hard' | 'open', [2] lock class, [3] lock key, [4] hint.
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


def lock_key(service: str) -> tuple[int, int]:
    """The advisory lock (two int4 keys) a cutover command for `service` holds while it runs."""
    return LOCK_CLASS, zlib.crc32(f"splitter.cutover.{service}".encode()) & 0x7FFFFFFF


def try_lock(conn: psycopg.Connection, service: str) -> bool:
    """Take the session advisory lock of `service`'s cutover on `conn` (autocommit); False if taken."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_key(service)).fetchone()
    return bool(row and row[0])


def ensure_function(conn: psycopg.Connection) -> None:
    """Create the schema and the trigger function (inside the caller's transaction)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(SCHEMA))
    conn.execute(_FUNCTION_DDL.format(schema=SCHEMA, function=sql.Identifier(FUNCTION_NAME),
                                      sqlstate=sql.Literal(FENCE_SQLSTATE)))


def fence_tables(conn: psycopg.Connection, tables: Sequence[tuple[str, str, str]], service: str, mode: str,
                 hint: str) -> None:
    """Create or replace the fence on each (schema, table, message), inside the caller's transaction.

    The caller sets lock_timeout: CREATE TRIGGER waits behind every in-flight writer of the table.
    """
    if mode not in (SOFT, HARD):
        raise ValueError(f"fence mode must be {SOFT!r} or {HARD!r}, not {mode!r}")
    klass, key = lock_key(service)
    ensure_function(conn)
    for schema, table, message in tables:
        args = sql.SQL(", ").join(sql.Literal(a) for a in (message, mode, str(klass), str(key), hint))
        conn.execute(sql.SQL(
            "CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}({args})").format(
            trigger=sql.Identifier(TRIGGER_NAME), table=sql.Identifier(schema, table),
            schema=SCHEMA, function=sql.Identifier(FUNCTION_NAME), args=args))


def unfence_tables(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> None:
    """Lift the fence of each (schema, table), if any, inside the caller's transaction.

    The trigger is replaced by an open one rather than dropped: DROP TRIGGER takes ACCESS EXCLUSIVE,
    which would queue every reader behind one long query, while CREATE OR REPLACE TRIGGER takes the
    same SHARE ROW EXCLUSIVE as the fence did.  `sweep` drops open triggers afterwards.
    """
    fenced = fences(conn, tables)
    if fenced:
        ensure_function(conn)
    for (schema, table) in fenced:
        conn.execute(sql.SQL(
            "CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}('', {open}, '0', '0', '')").format(
            trigger=sql.Identifier(TRIGGER_NAME), table=sql.Identifier(schema, table),
            schema=SCHEMA, function=sql.Identifier(FUNCTION_NAME), open=sql.Literal(OPEN)))


def sweep(conn: psycopg.Connection, tables: Sequence[tuple[str, str]], lock_timeout_ms: int = 200) -> bool:
    """Drop open (lifted) fence triggers, each in its own short transaction; best effort.

    lock_timeout bounds how long readers can queue behind the ACCESS EXCLUSIVE lock; a trigger that
    cannot be dropped now stays open (harmless) and is swept next time.  True if none is left.
    """
    clean = True
    for (schema, table), mode in _all_fences(conn, tables).items():
        if mode != OPEN:
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(TRIGGER_NAME), sql.Identifier(schema, table)))
        except psycopg.errors.LockNotAvailable:
            clean = False
    return clean


def _all_fences(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for schema, table in tables:
        row = conn.execute(
            """SELECT t.tgargs FROM pg_catalog.pg_trigger t
                 JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s""",
            (schema, table, TRIGGER_NAME)).fetchone()
        if row is not None:
            # tgargs is the arguments, each NUL-terminated.
            args = bytes(row[0]).split(b"\0")
            out[(schema, table)] = args[1].decode() if len(args) > 1 else HARD
    return out


def fences(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The fenced tables among `tables`, with their mode ('soft' or 'hard'); lifted ones are left out."""
    return {t: mode for t, mode in _all_fences(conn, tables).items() if mode != OPEN}


def lock_holder_alive(conn: psycopg.Connection, service: str) -> bool:
    """Whether some session of this database holds `service`'s cutover lock (what a soft fence checks)."""
    klass, key = lock_key(service)
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted
               AND objsubid = 2 AND database = (SELECT oid FROM pg_catalog.pg_database
                                                 WHERE datname = pg_catalog.current_database())
               AND classid = %s::oid AND objid = %s::oid)""", (str(klass), str(key))).fetchone()
    return bool(row and row[0])


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


def fence_with_retries(conn: psycopg.Connection, tables: Sequence[tuple[str, str, str]], service: str, mode: str,
                       hint: str, deadline: float, lock_timeout_ms: int = 2000,
                       before_commit: Callable[[], None] | None = None) -> None:
    """Fence `tables` in one transaction, retrying lock timeouts until `deadline` (see `retry_lock_timeouts`).

    `before_commit`, if given, runs inside the transaction (to persist state atomically with the fence).
    """
    def body() -> None:
        fence_tables(conn, tables, service, mode, hint)
        if before_commit is not None:
            before_commit()

    retry_lock_timeouts(conn, body, deadline, lock_timeout_ms)


__all__ = [
    "FENCE_SQLSTATE",
    "HARD",
    "SOFT",
    "TRIGGER_NAME",
    "ensure_function",
    "fence_tables",
    "fence_with_retries",
    "fences",
    "lock_holder_alive",
    "lock_key",
    "retry_lock_timeouts",
    "sweep",
    "try_lock",
    "unfence_tables",
]
