"""Everything splitter keeps in its own `splitter` schema, and the only code that reads or writes it.

One module per kind of state: `schema` (DDL and checkpoints), `control` (hold requests), `dead_letters`,
`backfills`, `verify_progress`, `cutover`, `components` (why a component stopped for good).  The schema's
name is defined here, once.
"""

from psycopg import sql

STATE_SCHEMA = "splitter"
#: The schema as an identifier, for sql.SQL(...).format.
SCHEMA = sql.Identifier(STATE_SCHEMA)
