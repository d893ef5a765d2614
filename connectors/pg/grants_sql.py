"""The SQL an administrator runs once so that splitter can work as a role that is not a superuser.

Owns: the values that say what the role needs in each database (`DatabaseGrants`, built by
`splitter.ops.grants` from the topology), and their statements: the role itself (cluster-wide),
then per database CONNECT/TEMPORARY, the `splitter` schema owned by the role, USAGE on schemas,
table privileges, the sequences owned by those tables, the replication-origin functions and the
publications (created here because CREATE PUBLICATION and ALTER PUBLICATION ... ADD TABLE need the
tables' owner), each with the comment that says why; and the psql script of them all.
Must not: decide which privileges a topology needs (the ops module does), connect to a database, or
grant anything broader than the values ask for (no ALL TABLES, no ownership of application tables).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from psycopg import sql

from connectors.pg.fence import FUNCTION_NAME
from connectors.pg.fence_drop import drop_function_ddl
from connectors.pg.origins import ORIGIN_FUNCTIONS
from connectors.pg.state import STATE_SCHEMA

#: What psql replaces with the `-v password=...` value (quoted as a literal).
PASSWORD_VARIABLE = ":'password'"

#: The parameter every apply session sets (so the service databases' own triggers and foreign keys
#: do not fire on copied rows); SET on it is granted per role since PostgreSQL 15.
APPLY_PARAMETER = "session_replication_role"


@dataclass(frozen=True)
class TableGrant:
    """Privileges on one table and why the role needs each."""

    schema: str
    table: str
    privileges: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Publication:
    name: str
    tables: tuple[tuple[str, str], ...]
    reason: str


@dataclass(frozen=True)
class DatabaseGrants:
    """Everything the role needs in one database."""

    database: str
    schemas: tuple[str, ...]
    tables: tuple[TableGrant, ...]
    #: Tables whose columns' sequences (serial, identity) a cutover reads and moves forward.
    sequence_tables: tuple[tuple[str, str], ...]
    publications: tuple[Publication, ...]


@dataclass(frozen=True)
class Statement:
    comment: str
    sql: str


def _text(query: sql.Composable) -> str:
    return query.as_string(None)


def role_statements(role: str) -> list[Statement]:
    """The role (created if missing, its attributes set every time) and its one cluster-wide grant."""
    ident, literal = sql.Identifier(role), sql.Literal(role)
    return [
        Statement("The login splitter runs as, created once.",
                  _text(sql.SQL("DO $$\nBEGIN\n"
                                "  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {}) THEN\n"
                                "    CREATE ROLE {};\n  END IF;\nEND $$;").format(literal, ident))),
        Statement("REPLICATION: capture's slot and stream, and each cutover's reverse slot and stream.  Nothing "
                  "more: no superuser, CREATEDB, CREATEROLE or BYPASSRLS.",
                  _text(sql.SQL("ALTER ROLE {} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
                                "PASSWORD ").format(ident)) + PASSWORD_VARIABLE + ";"),
        Statement("The initial copy and every apply session set session_replication_role = replica: the service "
                  "databases' triggers and foreign keys must not fire on copied rows (PostgreSQL 15+).",
                  _text(sql.SQL("GRANT SET ON PARAMETER {} TO {};").format(sql.Identifier(APPLY_PARAMETER),
                                                                          ident))),
    ]


def _sequences_block(role: str, tables: Sequence[tuple[str, str]]) -> sql.Composable:
    relations = sql.SQL(", ").join(sql.SQL("{}::regclass").format(sql.Literal(_qualified(s, t))) for s, t in tables)
    return sql.SQL(
        "DO $$\nDECLARE seq text;\nBEGIN\n"
        "  FOR seq IN SELECT pg_catalog.pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)\n"
        "               FROM pg_catalog.pg_attribute a\n"
        "              WHERE a.attrelid = ANY (ARRAY[{relations}])\n"
        "                AND a.attnum > 0 AND NOT a.attisdropped LOOP\n"
        "    IF seq IS NOT NULL THEN\n"
        "      EXECUTE format('GRANT SELECT, UPDATE ON SEQUENCE %s TO %I', seq, {role});\n"
        "    END IF;\n"
        "  END LOOP;\nEND $$;").format(relations=relations, role=sql.Literal(role))


def _qualified(schema: str, table: str) -> str:
    return _text(sql.Identifier(schema, table))


#: A partitioned table's changes must come under its own name (the one the topology routes), not its
#: partitions'; pg_publication_tables then lists the root too, so membership checks find it.
PUBLISH_VIA_ROOT = "publish_via_partition_root"


def _publication_block(publication: Publication) -> sql.Composable:
    name = sql.Literal(publication.name)
    adds = sql.SQL("").join(
        sql.SQL("  IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication_tables\n"
                "                  WHERE pubname = {name} AND schemaname = {schema} AND tablename = {table}) THEN\n"
                "    ALTER PUBLICATION {pub} ADD TABLE {qualified};\n  END IF;\n").format(
            name=name, schema=sql.Literal(s), table=sql.Literal(t), pub=sql.Identifier(publication.name),
            qualified=sql.Identifier(s, t))
        for s, t in publication.tables)
    return sql.SQL(
        "DO $$\nBEGIN\n"
        "  IF NOT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = {name}) THEN\n"
        "    CREATE PUBLICATION {pub} FOR TABLE {tables} WITH ({via_root} = true);\n  END IF;\n"
        "{adds}END $$;").format(
        name=name, pub=sql.Identifier(publication.name), via_root=sql.SQL(PUBLISH_VIA_ROOT),
        tables=sql.SQL(", ").join(sql.Identifier(s, t) for s, t in publication.tables), adds=adds)


def database_statements(role: str, grants: DatabaseGrants) -> list[Statement]:
    """The statements for one database, to run connected to it as a superuser."""
    ident = sql.Identifier(role)
    out = [
        Statement("Connect, and temporary tables: apply staging, unique-conflict checks, verify's chunk hashes.",
                  _text(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {};").format(
                      sql.Identifier(grants.database), ident))),
        Statement("splitter's own state (checkpoints, dead letters, cutover, routing) and the fence trigger "
                  "function live in this schema; owning it is why the role needs no CREATE on the database.",
                  _text(sql.SQL("CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}; "
                                "ALTER SCHEMA {schema} OWNER TO {role};").format(
                      schema=sql.Identifier(STATE_SCHEMA), role=ident))),
        Statement("Apply sessions mark their writes with a replication origin, so that no stream sends them "
                  "back (revoked from PUBLIC since PostgreSQL 14).",
                  _text(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {};").format(
                      sql.SQL(", ").join(sql.SQL("pg_catalog." + f) for f in ORIGIN_FUNCTIONS), ident))),
    ]
    out.append(Statement("A lifted fence stays as an open trigger until it is dropped, which needs the table's owner: "
                         "this function, owned by you and callable by the role alone, drops splitter's fence triggers "
                         "and nothing else.", _text(drop_function_ddl(role, FUNCTION_NAME))))
    if grants.schemas:
        out.append(Statement("The schemas of the tables below.", _text(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {};").format(
                sql.SQL(", ").join(sql.Identifier(s) for s in grants.schemas), ident))))
    groups: dict[tuple[tuple[str, ...], str], list[tuple[str, str]]] = {}
    for table in grants.tables:
        groups.setdefault((table.privileges, table.reason), []).append((table.schema, table.table))
    for (privileges, reason), tables in groups.items():
        out.append(Statement(reason, _text(sql.SQL("GRANT {} ON TABLE {} TO {};").format(
            sql.SQL(", ").join(sql.SQL(p) for p in privileges),
            sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables), ident))))
    if grants.sequence_tables:
        out.append(Statement("A cutover (and a rollback) moves the sequences of these tables' columns past what the "
                             "other side handed out: it reads them (SELECT) and calls setval (UPDATE).",
                             _text(_sequences_block(role, grants.sequence_tables))))
    for publication in grants.publications:
        out.append(Statement(publication.reason, _text(_publication_block(publication))))
    return out


def psql_script(role: str, databases: Sequence[DatabaseGrants], header: Sequence[str]) -> str:
    """The whole script for psql: `header` comment lines, the role, then each database after `\\connect`."""
    lines = [f"-- {h}" if h else "--" for h in header]
    lines += ["", *_comment("The password: psql's -v password=..., else the environment's SPLITTER_DB_PASSWORD "
                            "(\\getenv, psql 15+), so it need not be on a command line."),
              "\\if :{?password}", "\\else", "  \\getenv password SPLITTER_DB_PASSWORD", "\\endif"]
    for statement in role_statements(role):
        lines += ["", *_comment(statement.comment), statement.sql]
    for grants in databases:
        lines += ["", "", _text(sql.SQL("\\connect {}").format(sql.Identifier(grants.database)))]
        for statement in database_statements(role, grants):
            lines += ["", *_comment(statement.comment), statement.sql]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    return [f"-- {line}" for line in textwrap.wrap(text, 108)]


__all__ = ["APPLY_PARAMETER", "PASSWORD_VARIABLE", "DatabaseGrants", "Publication", "Statement", "TableGrant",
           "database_statements", "psql_script", "role_statements"]
