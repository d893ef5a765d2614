"""Sequences in PostgreSQL: which column owns which sequence, how far it is, and moving it forward.

Owns: the catalog read of owned sequences (serial and identity), a sequence's last value, a column's
maximum, and `setval`.  Must not: decide which sequence moves where (`splitter.ops.cutover.sequences`
does, for a cutover).
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def owned_sequences(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """column → its sequence (serial or identity), for the columns of `schema.table` that own one."""
    rows = conn.execute(
        """SELECT a.attname, pg_get_serial_sequence(format('%%I.%%I', n.nspname, c.relname), a.attname)
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (schema, table)).fetchall()
    return {name: seq for name, seq in rows if seq}


def last_value(conn: psycopg.Connection, seq: str) -> int | None:
    """What `seq` last handed out; None if it never did."""
    row = conn.execute("SELECT pg_sequence_last_value(%s::regclass)", (seq,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def column_max(conn: psycopg.Connection, schema: str, table: str, column: str) -> int | None:
    """The largest value of `column` in `schema.table` (as bigint); None for an empty table."""
    row = conn.execute(sql.SQL("SELECT max({})::bigint FROM {}").format(
        sql.Identifier(column), sql.Identifier(schema, table))).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def set_last_value(conn: psycopg.Connection, seq: str, value: int) -> None:
    """`setval(seq, value, true)`: the next value handed out is the one after `value`."""
    conn.execute("SELECT setval(%s::regclass, %s, true)", (seq, value))


__all__ = ["column_max", "last_value", "owned_sequences", "set_last_value"]
