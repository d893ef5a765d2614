"""The SQL a cutover runs beyond fences, sequences and its state: the reverse stream's slot and publication,
and the catalog facts its preflight checks.

Owns: dropping a replication slot and a publication, and reading the columns of a table the reverse
stream would write (nullability, defaults, identity, generated, primary key).  Must not: decide whether a
service can be reversed (`splitter.topology.inversion` judges the facts) or when to drop anything
(`splitter.ops.cutover` does); creating slots and publications is `connectors.pg.source`'s.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from splitter.topology.inversion import SourceColumn

log = logging.getLogger(__name__)


def drop_slot(conn: psycopg.Connection, slot: str) -> None:
    """Drop the replication slot `slot` (it must exist and be inactive)."""
    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def drop_publication(conn: psycopg.Connection, publication: str) -> None:
    """Drop `publication`, unless the role does not own it (the grants script creates the reverse publications
    as the tables' owner): without a slot it costs nothing, and the next cutover finds it complete."""
    statement = sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication))
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        log.info("publication %s stays (role %s does not own it; it costs nothing without a slot): %s",
                 publication, conn.info.user, statement.as_string(conn))


def writeback_columns(conn: psycopg.Connection, schema: str, table: str) -> list[SourceColumn]:
    """The columns of `schema.table` as the reverse preflight needs them; empty if the table does not exist."""
    rows = conn.execute(
        """SELECT a.attname, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated,
                  coalesce(a.attnum = ANY (pk.indkey::int2[]), false)
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (schema, table)).fetchall()
    return [SourceColumn(name, bool(notnull), bool(hasdef), identity or "", generated or "", bool(in_pk))
            for name, notnull, hasdef, identity, generated, in_pk in rows]


__all__ = ["drop_publication", "drop_slot", "writeback_columns"]
