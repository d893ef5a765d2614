"""What would make writing a target table's rows as delete-then-insert differ from updating them.

Owns: the catalog read behind `sink_values.Replacement.blockers`, for one route's target table: triggers
on it that fire in the current session (session_replication_role decides which: in the apply session,
`replica`, only ENABLE ALWAYS and ENABLE REPLICA ones; a foreign key's own triggers, which would cascade or
refuse the delete of a referenced row, are internal ones enabled for origin sessions, so they count only
when someone enabled them so), and columns the route does not write (an insert would give them their
defaults where an update keeps their values).  Must not: write anything, or decide whether rows are
replaced (the pipeline does).
"""

from __future__ import annotations

import psycopg

from splitter.topology.model import Route

_BLOCKERS = """
WITH target AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = %(schema)s AND c.relname = %(table)s
), fires AS (
    SELECT CASE current_setting('session_replication_role') WHEN 'replica' THEN ARRAY['A', 'R']
                ELSE ARRAY['A', 'O'] END AS enabled
)
SELECT 'trigger', tg.tgname::text, coalesce(con.conname::text, '')
  FROM pg_trigger tg
  JOIN target ON tg.tgrelid = target.oid
  LEFT JOIN pg_constraint con ON con.oid = tg.tgconstraint
 CROSS JOIN fires
 WHERE tg.tgenabled::text = ANY (fires.enabled)
UNION ALL
SELECT 'column', a.attname::text, ''
  FROM pg_attribute a
  JOIN target ON a.attrelid = target.oid
 WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND a.attname <> ALL (%(written)s)
 ORDER BY 1, 2
"""


def replacement_blockers(conn: psycopg.Connection, route: Route) -> list[str]:
    """Why delete-then-insert of this route's rows would not equal updating them (empty: it would)."""
    table = f"{route.target_schema}.{route.target_table}"
    rows = conn.execute(_BLOCKERS, {"schema": route.target_schema, "table": route.target_table,
                                    "written": list(route.table.columns)}).fetchall()
    out = []
    for kind, name, constraint in rows:
        if kind == "column":
            out.append(f"column {name} of {table} is not written by the topology (an insert would reset it)")
        elif constraint:
            out.append(f"trigger {name} of constraint {constraint} on {table} fires in the apply session")
        else:
            out.append(f"trigger {name} on {table} fires in the apply session (it would see a delete and an insert)")
    return out
