"""What `splitter plan` reads from a PostgreSQL database: catalogs, settings, privileges and the planner's verdicts.

Owns: every catalog and preflight query the plan runs (wal_level and the slot and wal-sender counts,
the connecting role's rights, the publication, tables with their columns, types, enum labels,
indexes, replica identity and privileges), planning a route's projection or its apply statement
without running it (LIMIT 0, EXPLAIN), and opening the plan's own session, so that every driver
error becomes a one-line, masked message.  Results are plain dataclasses of what the database said.
Must not: write anything (no SET beyond the session's own timeouts, no DDL, no rows), judge what it
read (the plan's rules do), or read the `splitter` schema's tables (connectors.pg.state owns them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from connectors.pg.client import connect
from connectors.pg.origins import origin_access
from connectors.pg.source import FIRST_USER_OID
from splitter.core.dsn import mask_secrets
from splitter.core.errors import SplitterError

TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


# ------------------------------------------------------------------------------------------ what was read

@dataclass(frozen=True)
class TypeInfo:
    """A type as one database's catalogs describe it."""

    oid: int
    typmod: int
    display: str  # format_type(oid, typmod): what people read, e.g. "timestamp(3) without time zone"
    name: str  # typname, schema-qualified unless it lives in pg_catalog ("int4", "auth.user_role")
    category: str  # pg_type.typcategory ("S" strings, "N" numbers, "E" enums, ...)
    enum_labels: tuple[str, ...] | None = None

    @property
    def builtin(self) -> bool:
        return self.oid < FIRST_USER_OID  # the same oid means the same type in every database


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    type: TypeInfo
    not_null: bool
    has_default: bool  # a DEFAULT, an identity or a generated column: the database fills it
    default: str | None = None  # the DEFAULT as pg_get_expr prints it (None: none, or an identity/generated)
    filled_by: str = ""  # "identity" or "generated" when the database computes the column itself
    storage: str = "p"  # pg_attribute.attstorage: "x" and "e" may be TOASTed out of line (unchanged: not sent)


@dataclass(frozen=True)
class IndexFacts:
    name: str
    columns: tuple[str | None, ...]  # key columns in order; None where the index has an expression
    primary: bool
    unique: bool
    partial: bool
    replica_identity: bool = False  # the index REPLICA IDENTITY USING INDEX names

    @property
    def plain(self) -> bool:
        return not self.partial and None not in self.columns


@dataclass(frozen=True)
class TableFacts:
    schema: str
    name: str
    columns: Mapping[str, ColumnFacts] = field(default_factory=dict)
    indexes: tuple[IndexFacts, ...] = ()
    replica_identity: str = "d"  # pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
    privileges: frozenset[str] = frozenset()
    owned: bool = True  # the connecting role is (a member of) the owner
    partitioned: bool = False  # a partitioned table (relkind 'p'), published through its root

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def primary_key(self) -> IndexFacts | None:
        return next((i for i in self.indexes if i.primary), None)

    @property
    def row_key(self) -> IndexFacts | None:
        """The index whose columns identify a row in the change log: the replica identity index under
        REPLICA IDENTITY USING INDEX, else the primary key (`connectors.pg.source` reads it the same way)."""
        if self.replica_identity == "i":
            return next((i for i in self.indexes if i.replica_identity), None)
        return self.primary_key


@dataclass(frozen=True)
class ReplicationSettings:
    wal_level: str
    max_replication_slots: int
    replication_slots_used: int
    max_wal_senders: int
    wal_senders_used: int


@dataclass(frozen=True)
class SourceRole:
    name: str
    superuser: bool
    replication: bool
    can_create: bool  # CREATE on the database (CREATE PUBLICATION needs it)


@dataclass(frozen=True)
class PublicationFacts:
    tables: frozenset[tuple[str, str]]
    inserts: bool = True
    updates: bool = True
    deletes: bool = True
    truncates: bool = True
    owned: bool = True


@dataclass(frozen=True)
class TargetRole:
    name: str
    superuser: bool
    can_create: bool  # CREATE on the database
    can_temp: bool  # TEMP on the database: the apply stages rows in temporary tables
    state_schema_exists: bool
    can_use_state_schema: bool  # USAGE and CREATE on an existing `splitter` schema
    can_set_replication_role: bool
    can_use_origin: bool


@dataclass(frozen=True)
class QueryFailure:
    """Why PostgreSQL refused to plan a statement: its one-line message (masked) and SQLSTATE."""

    message: str
    sqlstate: str | None


@dataclass(frozen=True)
class ReadFailure:
    """Why a database could not be read: the one-line reason (masked), and whether it was connected."""

    message: str
    connected: bool


# ------------------------------------------------------------------------------------------- the session

_Read = TypeVar("_Read")


def server_message(exc: psycopg.Error, *dsns: str) -> str:
    """The server's own one-line message (no statement text, which can be long), masked."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return mask_secrets(" ".join((primary or str(exc)).split()), *dsns)


def _read_failure(exc: Exception, dsn: str, *, connected: bool) -> ReadFailure:
    # connect() wraps the driver's error as "cannot connect to <what>: ..."; the driver's own
    # reason is the useful part, and the message the plan builds names the database once.
    cause = exc.__cause__ if isinstance(exc, SplitterError) and isinstance(exc.__cause__, psycopg.Error) else exc
    if isinstance(cause, psycopg.Error):
        return ReadFailure(server_message(cause, dsn), connected)
    return ReadFailure(" ".join(mask_secrets(str(cause), dsn).split()), connected)


def read_database(dsn: str, what: str, read: Callable[[psycopg.Connection[Any]], _Read]) -> _Read | ReadFailure:
    """`read` on a fresh autocommit session of the plan's own, or why the database could not be read.

    A SplitterError `read` raises (a missing table, an unusable slot) is a failure to read too.
    """
    try:
        conn = connect(dsn, what, autocommit=True, application_name="splitter-plan")
    except SplitterError as exc:
        return _read_failure(exc, dsn, connected=False)
    try:
        with conn:
            return read(conn)
    except (psycopg.Error, SplitterError) as exc:
        return _read_failure(exc, dsn, connected=True)


def limit_session(conn: psycopg.Connection[Any], *, lock_timeout: str, statement_timeout: str) -> None:
    """Bound how long this session waits for a lock and runs one statement."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout)))
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(statement_timeout)))


# ------------------------------------------------------------------------------------ settings and roles

def replication_settings(conn: psycopg.Connection[Any]) -> ReplicationSettings:
    """wal_level, and how many replication slots and wal senders exist and are in use."""
    row = conn.execute(
        "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
        "(SELECT count(*) FROM pg_replication_slots), current_setting('max_wal_senders')::int, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')").fetchone()
    assert row is not None
    return ReplicationSettings(str(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def source_role(conn: psycopg.Connection[Any]) -> SourceRole:
    """The connecting role's rights that capture and CREATE PUBLICATION need."""
    row = conn.execute(
        "SELECT current_user, r.rolsuper, r.rolreplication, has_database_privilege(current_database(), 'CREATE') "
        "FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    assert row is not None
    return SourceRole(str(row[0]), bool(row[1]), bool(row[2]), bool(row[3]))


def target_role(conn: psycopg.Connection[Any], state_schema: str) -> TargetRole:
    """The connecting role's rights that a worker's apply session needs in a service database."""
    row = conn.execute(
        "SELECT current_user, r.rolsuper, has_database_privilege(current_database(), 'CREATE'), "
        "has_database_privilege(current_database(), 'TEMP'), n.oid IS NOT NULL, "
        "n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE') AND has_schema_privilege(n.oid, 'CREATE') "
        "FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = %s WHERE r.rolname = current_user",
        (state_schema,)).fetchone()
    assert row is not None
    user, superuser, can_create, can_temp, schema_exists, can_use_schema = row
    can_set = bool(superuser)
    if not can_set and conn.info.server_version >= 150000:
        granted = conn.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')").fetchone()
        can_set = bool(granted and granted[0])
    return TargetRole(str(user), bool(superuser), bool(can_create), bool(can_temp), bool(schema_exists),
                      bool(can_use_schema), can_set, origin_access(conn).usable)


def publication(conn: psycopg.Connection[Any], name: str) -> PublicationFacts | None:
    """The publication called `name` with every table it publishes, or None if there is none."""
    row = conn.execute(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pg_has_role(pubowner, 'USAGE') "
        "FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    if row is None:
        return None
    # pg_publication_tables resolves FOR ALL TABLES and FOR TABLES IN SCHEMA too.
    published = conn.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                             (name,)).fetchall()
    return PublicationFacts(frozenset((s, t) for s, t in published), *(bool(v) for v in row))


# ---------------------------------------------------------------------------------------------- tables

_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relreplident, c.relkind = 'p', pg_has_role(c.relowner, 'USAGE'),
       has_table_privilege(c.oid, 'SELECT'), has_table_privilege(c.oid, 'INSERT'),
       has_table_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND (n.nspname = ANY(%(schemas)s)
        OR (n.nspname, c.relname) IN (SELECT * FROM unnest(%(schemas_of)s::text[], %(names)s::text[])))
"""

_TYPE_COLUMNS = """format_type(t.oid, {mod}), t.typname, tn.nspname, t.typcategory,
       CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                                            ORDER BY e.enumsortorder) END"""

_COLUMNS_SQL = f"""
SELECT a.attrelid, a.attname, a.atttypid, a.atttypmod, {_TYPE_COLUMNS.format(mod="a.atttypmod")},
       a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
       CASE WHEN a.attidentity <> '' THEN 'identity' WHEN a.attgenerated <> '' THEN 'generated' ELSE '' END,
       a.attstorage
  FROM pg_attribute a
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_namespace tn ON tn.oid = t.typnamespace
 WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum
"""

# Key columns only (INCLUDE columns do not take part in uniqueness); attnum 0 is an expression.
_INDEXES_SQL = """
SELECT i.indrelid, ic.relname, i.indisprimary, i.indisunique, i.indpred IS NOT NULL, i.indisreplident,
       ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
 WHERE i.indrelid = ANY(%s) AND i.indisvalid
 ORDER BY ic.relname
"""

_RESOLVE_TYPES_SQL = f"""
SELECT x.oid, x.mod, {_TYPE_COLUMNS.format(mod="x.mod")}
  FROM unnest(%s::oid[], %s::int4[]) AS x(oid, mod)
  JOIN pg_type t ON t.oid = x.oid
  JOIN pg_namespace tn ON tn.oid = t.typnamespace
"""


def _type_info(oid: int, typmod: int, display: str, typname: str, nspname: str, category: str,
               labels: list[str] | None) -> TypeInfo:
    name = typname if nspname == "pg_catalog" else f"{nspname}.{typname}"
    return TypeInfo(oid, typmod, display, name, category, tuple(labels) if labels is not None else None)


def tables(conn: psycopg.Connection[Any], *, schemas: Sequence[str] = (), pairs: Sequence[tuple[str, str]] = (),
           detail: Iterable[tuple[str, str]] | None = None) -> dict[tuple[str, str], TableFacts]:
    """Ordinary tables of `schemas` plus the `pairs`; columns and indexes for those in `detail` (all if None)."""
    rows = conn.execute(_TABLES_SQL, {"schemas": list(schemas), "schemas_of": [p[0] for p in pairs],
                                      "names": [p[1] for p in pairs]}).fetchall()
    wanted = None if detail is None else set(detail)
    oids = {row[0]: (row[1], row[2]) for row in rows if wanted is None or (row[1], row[2]) in wanted}
    columns: dict[int, dict[str, ColumnFacts]] = {oid: {} for oid in oids}
    for rel, name, typoid, typmod, display, typname, nsp, cat, labels, notnull, hasdef, default, filled_by, \
            storage in conn.execute(_COLUMNS_SQL, (list(oids),)).fetchall():
        columns[rel][name] = ColumnFacts(name, _type_info(typoid, typmod, display, typname, nsp, cat, labels),
                                         bool(notnull), bool(hasdef), default, filled_by, str(storage))
    indexes: dict[int, list[IndexFacts]] = {oid: [] for oid in oids}
    for rel, name, primary, unique, is_partial, replident, cols in conn.execute(_INDEXES_SQL,
                                                                               (list(oids),)).fetchall():
        indexes[rel].append(IndexFacts(name, tuple(cols), bool(primary), bool(unique), bool(is_partial),
                                       bool(replident)))
    out = {}
    for oid, schema, table, replident, partitioned, owned, *privileges in rows:
        granted = frozenset(p for p, on in zip(TABLE_PRIVILEGES, privileges, strict=True) if on)
        out[(schema, table)] = TableFacts(schema, table, columns.get(oid, {}), tuple(indexes.get(oid, ())),
                                          str(replident), granted, bool(owned), bool(partitioned))
    return out


def resolve_types(conn: psycopg.Connection[Any], types: Iterable[tuple[int, int]]) -> dict[tuple[int, int], TypeInfo]:
    """The catalog's description of each (type oid, typmod)."""
    pairs = sorted(set(types))
    if not pairs:
        return {}
    rows = conn.execute(_RESOLVE_TYPES_SQL, ([p[0] for p in pairs], [p[1] for p in pairs])).fetchall()
    return {(oid, mod): _type_info(oid, mod, *rest) for oid, mod, *rest in rows}


__all__ = [
    "TABLE_PRIVILEGES",
    "ColumnFacts",
    "IndexFacts",
    "PublicationFacts",
    "QueryFailure",
    "ReadFailure",
    "ReplicationSettings",
    "SourceRole",
    "TableFacts",
    "TargetRole",
    "TypeInfo",
    "limit_session",
    "publication",
    "read_database",
    "replication_settings",
    "resolve_types",
    "server_message",
    "source_role",
    "tables",
    "target_role",
]
