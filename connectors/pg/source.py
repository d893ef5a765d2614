"""The PostgreSQL source: catalog reads, publication and slot management, and the replication stream.

Owns: the source's catalog as capture and copies read it (a table's columns and key, type names,
row estimates), the advisory lock that keeps two captures off one slot, the publication of exactly
the tables the topology takes, the logical slot (created with an exported snapshot for the initial
copy, dropped to start over), the CopyBoth replication stream over `psycopg.pq` (START_REPLICATION,
reading XLogData and keepalives, sending standby status updates) and heartbeats written with
`pg_logical_emit_message`.  Source positions and the slot's state are `connectors.pg.positions`'s,
row copies `connectors.pg.copy`'s.  Must not: decide when an LSN is safe to confirm (capture does,
from Kafka's acknowledgements) or know about Kafka.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import pq, sql

from connectors.pg.client import (
    CONNECT_TIMEOUT,
    connect,
    connect_failure,
    lock_key,
    pin_text_forms_sql,
    with_timeout,
    wrap_db_error,
)
from connectors.pg.grants_sql import PUBLISH_VIA_ROOT
from connectors.pg.replication_protocol import PrimaryKeepalive, XLogData, parse_copy_data, standby_status_update
from splitter.core import messages
from splitter.core.dsn import mask_secrets, with_params
from splitter.core.envelope import ColumnSchema, RelationSchema
from splitter.core.errors import ConfigurationError, FatalError, RetryableError, classify_sqlstate
from splitter.core.lsn import lsn_to_str, str_to_lsn

log = logging.getLogger(__name__)

#: pgoutput's `origin` option exists from this server version on (PostgreSQL 16).
ORIGIN_OPTION_VERSION = 160000
FIRST_USER_OID = 16384  # FirstNormalObjectId: types below it are built in and exist in every database


#: The index whose columns identify a row in the change log, its *row key*: the replica identity index under
#: REPLICA IDENTITY USING INDEX (an update's old key and a delete carry only its columns), else the primary key.
_ROW_KEY_INDEX = ("JOIN pg_class rel ON rel.oid = {attrelid} LEFT JOIN pg_index pk ON pk.indrelid = rel.oid "
                  "AND CASE WHEN rel.relreplident = 'i' THEN pk.indisreplident ELSE pk.indisprimary END")

_COLUMNS_SQL = f"""
SELECT a.attname,
       CASE WHEN a.atttypid < %(first_user_oid)s THEN format_type(a.atttypid, a.atttypmod) ELSE 'text' END,
       coalesce(a.attnum = ANY (pk.indkey::int2[]), false)
  FROM pg_attribute a
  {_ROW_KEY_INDEX.format(attrelid="a.attrelid")}
 WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
 ORDER BY a.attnum
"""


def relation_schema(conn: psycopg.Connection, schema: str, table: str) -> RelationSchema:
    """A source table's columns as splitter reads them: built-in types as declared, others as text."""
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    ).fetchone()
    if row is None:
        raise ConfigurationError(f"source table {schema}.{table} does not exist")
    return relation_schema_by_oid(conn, row[0], schema, table)


def relation_schema_by_oid(conn: psycopg.Connection, oid: int, schema: str, table: str,
                           only: Iterable[str] | None = None) -> RelationSchema:
    rows = conn.execute(_COLUMNS_SQL, {"oid": oid, "first_user_oid": FIRST_USER_OID}).fetchall()
    columns = [ColumnSchema(name, sql_type, bool(is_key)) for name, sql_type, is_key in rows]
    if only is not None:
        # Keep the columns (and order) the Relation message announced.
        by_name = {c.name: c for c in columns}
        columns = [by_name[n] if n in by_name else ColumnSchema(n, "text", False) for n in only]
    return RelationSchema(schema, table, tuple(columns))


def estimated_rows(conn: psycopg.Connection, schema: str, table: str) -> int:
    """The planner's estimate of a table's rows (0 for one never analyzed)."""
    row = conn.execute(
        "SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
    return int(row[0]) if row else 0


def type_names(conn: psycopg.Connection, types: Sequence[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The name of each (type oid, typmod) as `format_type` spells it."""
    rows = conn.execute(
        "SELECT t.oid, t.m, format_type(t.oid, t.m) FROM unnest(%s::oid[], %s::int[]) AS t(oid, m)",
        ([t[0] for t in types], [t[1] for t in types])).fetchall()
    return {(oid, mod): name for oid, mod, name in rows}


def row_key_columns(conn: psycopg.Connection, oid: int) -> set[str]:
    """The row key's column names of the relation `oid` (`_ROW_KEY_INDEX`; empty without one)."""
    return {r[0] for r in conn.execute(
        "SELECT a.attname FROM pg_attribute a " + _ROW_KEY_INDEX.format(attrelid="%s")
        + " WHERE a.attrelid = rel.oid AND a.attnum = ANY (pk.indkey::int2[])", (oid,))}


def try_lock_slot(conn: psycopg.Connection, slot: str) -> bool:
    """Take the session advisory lock that keeps two captures off `slot`; False if another session holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(f"splitter.slot.{slot}"),)).fetchone()
    return bool(row and row[0])


def drop_slot(conn: psycopg.Connection, slot: str) -> None:
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _any_partitioned(conn: psycopg.Connection, tables: Sequence[tuple[str, str]]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM unnest(%s::text[], %s::text[]) AS w(s, t) JOIN pg_namespace n ON n.nspname = w.s "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.t WHERE c.relkind = 'p'",
        ([s for s, _ in tables], [t for _, t in tables])).fetchone()
    return bool(row and row[0])


def ensure_publication(conn: psycopg.Connection, publication: str, tables: Iterable[tuple[str, str]]) -> None:
    """Create the publication for `tables`, or add the ones it lacks (it never drops any); one that has them
    all is left alone, so a role that owns none of the tables (splitter's own) can run against it.

    Raises ConfigurationError naming the statement for the tables' owner to run when the role may not
    (SQLSTATE 42501: CREATE and ALTER PUBLICATION need ownership of every table named).
    """
    wanted = list(tables)
    with conn.transaction():
        exists = conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
        if not exists:
            _as_owner(conn, sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH ({} = true)").format(
                sql.Identifier(publication), sql.SQL(", ").join(sql.Identifier(s, t) for s, t in wanted),
                sql.SQL(PUBLISH_VIA_ROOT)))
            return
        if not exists[0] and _any_partitioned(conn, wanted):
            _as_owner(conn, sql.SQL("ALTER PUBLICATION {} SET ({} = true)").format(
                sql.Identifier(publication), sql.SQL(PUBLISH_VIA_ROOT)))
        have = set(conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (publication,)).fetchall())
        missing = [t for t in wanted if t not in have]
        if missing:
            _as_owner(conn, sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                sql.Identifier(publication), sql.SQL(", ").join(sql.Identifier(s, t) for s, t in missing)))


def _as_owner(conn: psycopg.Connection, statement: sql.Composed) -> None:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigurationError(
            f"role {conn.info.user} may not change publications here ({exc.sqlstate}: {exc.diag.message_primary}); "
            f"run as the owner of the publication and its tables, in database {conn.info.dbname}: "
            f"{statement.as_string(conn)} (`splitter grants` prints every statement the role needs)") from exc


@dataclass(frozen=True)
class SlotInfo:
    name: str
    confirmed_flush_lsn: int | None
    restart_lsn: int | None
    active: bool
    wal_status: str | None
    invalidation_reason: str | None


def emit_heartbeat(conn: psycopg.Connection) -> None:
    """A non-transactional logical message: it moves the stream (and so the slot) past idle WAL."""
    conn.execute("SELECT pg_logical_emit_message(false, %s, now()::text)", (messages.HEARTBEAT,))


class ReplicationConnection:
    """A `replication=database` session driven through psycopg's libpq layer."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        conninfo = with_timeout(with_params(dsn, replication="database", application_name="splitter-capture"))
        started = time.monotonic()
        self.pgconn = pq.PGconn.connect(conninfo.encode())
        if self.pgconn.status != pq.ConnStatus.OK:
            message = self.pgconn.get_error_message().strip()
            needs_password = bool(self.pgconn.needs_password)
            self.pgconn.finish()
            what = "cannot open a replication connection to the source"
            if time.monotonic() - started >= CONNECT_TIMEOUT:  # libpq gave up waiting: no server answered
                raise RetryableError(mask_secrets(f"{what}: {message}", dsn))
            # A missing REPLICATION attribute (42501) or a wrong password is named and not retried.
            failure = connect_failure(conninfo, message, needs_password, what, dsn, conninfo)
            raise failure from failure.__cause__
        self.copy_mode = False
        # pgoutput prints values with the walsender's settings.
        self._exec(pin_text_forms_sql())

    def _exec(self, command: sql.Composable | str) -> pq.abc.PGresult:
        text = command if isinstance(command, str) else command.as_string(None)
        result = self.pgconn.exec_(text.encode())
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK, pq.ExecStatus.COPY_BOTH):
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
            state = sqlstate.decode() if sqlstate else None
            message = (result.get_error_message() or self.pgconn.get_error_message()).strip()
            raise classify_sqlstate(state)(mask_secrets(f"source replication command failed: {message}", self._dsn))
        return result

    def create_slot(self, slot: str, *, temporary: bool = False) -> tuple[int, str]:
        """Create a pgoutput slot exporting a snapshot; returns (consistent point, snapshot name).

        The snapshot stays importable only while this connection runs no other command, so the
        caller copies everything it needs before calling `start()`.  A temporary slot (verify's
        consistent point) disappears with the connection.
        """
        result = self._exec(sql.SQL("CREATE_REPLICATION_SLOT {} {} LOGICAL pgoutput (SNAPSHOT 'export')").format(
            sql.Identifier(slot), sql.SQL("TEMPORARY" if temporary else "")))
        consistent = result.get_value(0, 1)
        snapshot = result.get_value(0, 2)
        assert consistent is not None and snapshot is not None
        return str_to_lsn(consistent.decode()), snapshot.decode()

    def start(self, slot: str, publication: str, start_lsn: int = 0, *, origin: str = "any") -> bool:
        """Stream the slot.  `origin` 'none' leaves out changes applied under a replication origin (a reverse
        capture must never send the forward worker's writes back); 'any' sends them too, each transaction
        with the name of its origin (the forward capture: every other service needs a reverse stream's writes).

        Returns whether the server does what `origin` says: pgoutput has the option since PostgreSQL 16, and
        before it sends every transaction with its Origin message, as 'any' does (False for 'none' there:
        the caller must leave out the transactions that name an origin itself).
        """
        if origin not in ("any", "none"):
            raise ValueError(f"origin must be 'any' or 'none', not {origin!r}")
        filters = self.pgconn.server_version >= ORIGIN_OPTION_VERSION
        options = [
            sql.SQL("proto_version '1'"),
            sql.SQL("publication_names {}").format(sql.Literal(publication)),
            sql.SQL("messages 'true'"),
        ]
        if filters:
            options.append(sql.SQL("origin {}").format(sql.Literal(origin)))
        self._exec(sql.SQL("START_REPLICATION SLOT {} LOGICAL {} ({})").format(
            sql.Identifier(slot), sql.SQL(lsn_to_str(start_lsn)), sql.SQL(", ").join(options)))
        self.copy_mode = True
        return filters or origin == "any"

    def read(self, timeout: float) -> XLogData | PrimaryKeepalive | None:
        """The next CopyData message, or None if none arrived within `timeout` seconds."""
        nbytes, data = self.pgconn.get_copy_data(1)
        if nbytes == 0 and timeout <= 0:
            # Only what already arrived: read the socket without waiting.
            self.pgconn.consume_input()
            nbytes, data = self.pgconn.get_copy_data(1)
            if nbytes == 0:
                return None
        elif nbytes == 0:
            ready, _, _ = select.select([self.pgconn.socket], [], [], timeout)
            if not ready:
                return None
            self.pgconn.consume_input()
            nbytes, data = self.pgconn.get_copy_data(1)
            if nbytes == 0:
                return None
        if nbytes == -1:
            result = self.pgconn.get_result()
            message = result.get_error_message().strip() if result else ""
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) if result else None
            state = sqlstate.decode() if sqlstate else None
            raise classify_sqlstate(state)(mask_secrets(f"the source ended the replication stream: {message}",
                                                        self._dsn))
        if nbytes < 0:
            message = self.pgconn.get_error_message().strip()
            raise RetryableError(mask_secrets(f"replication stream from the source failed: {message}", self._dsn))
        return parse_copy_data(bytes(data))

    def send_status(self, flushed_lsn: int, reply: bool = False) -> None:
        message = standby_status_update(flushed_lsn, flushed_lsn, flushed_lsn, reply_requested=reply)
        if self.pgconn.put_copy_data(message) != 1 or self.pgconn.flush() < 0:
            raise RetryableError("cannot send a status update on the replication stream")

    def close(self) -> None:
        self.pgconn.finish()


def check_slot_usable(info: SlotInfo, slot: str) -> None:
    """Refuse a slot PostgreSQL has invalidated: its WAL is gone, so changes were lost."""
    if info.wal_status == "lost" or info.invalidation_reason:
        raise FatalError(
            f"replication slot {slot!r} was invalidated by PostgreSQL ({info.invalidation_reason or info.wal_status}, "
            f"for example by max_slot_wal_keep_size): changes since {lsn_to_str(info.confirmed_flush_lsn or 0)} are "
            f"gone. Recover with a fresh snapshot: stop splitter, drop the slot (SELECT pg_drop_replication_slot("
            f"'{slot}')), empty the service databases (or drop their splitter schema and tables' rows), and start "
            f"`splitter run` again to re-copy")


__all__ = [
    "ReplicationConnection",
    "SlotInfo",
    "check_slot_usable",
    "connect",
    "drop_slot",
    "emit_heartbeat",
    "ensure_publication",
    "estimated_rows",
    "relation_schema",
    "relation_schema_by_oid",
    "row_key_columns",
    "try_lock_slot",
    "type_names",
    "wrap_db_error",
]
