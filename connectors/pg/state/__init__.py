"""Everything splitter keeps in its own `splitter` schema, and the only code that reads or writes it.

One module per kind of state: `schema` (DDL and checkpoints), `control` (hold requests), `dead_letters`,
`backfills`, `verify_progress`, `cutover`, `components` (why a component stopped for good or is degraded),
`log_identity` (which change log a position is in), `ownership_moves` (the ownership moves a worker
applied), `source_shapes` (the source tables' shapes at the checkpoint, the schema changes a worker stopped
at).  The schema's name is defined here, once, with
`ensure_tables`, the one way its tables are created.
"""

from collections.abc import Sequence

import psycopg
from psycopg import sql

from connectors.pg.client import lock_key

STATE_SCHEMA = "splitter"
#: The schema as an identifier, for sql.SQL(...).format.
SCHEMA = sql.Identifier(STATE_SCHEMA)


def ensure_tables(conn: psycopg.Connection, ddl: Sequence[sql.SQL | sql.Composed]) -> None:
    """Create the schema if it is missing and run `ddl` (idempotent statements), serialised between creators.

    `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database even when the schema exists, so it is skipped
    when an operator created the schema beforehand for a role without that privilege.
    """
    with conn.transaction():
        # Serialise concurrent creators (a worker and the backfill may both arrive first).
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("splitter.schema"),))
        ensure_schema(conn)
        for stmt in ddl:
            conn.execute(stmt)


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the schema if it is missing (inside the caller's transaction); never asks for CREATE on the
    database when it exists (the grants script creates it, owned by splitter's role)."""
    exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (STATE_SCHEMA,)).fetchone()
    if not exists:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(SCHEMA))
