"""Dropping a lifted fence trigger for a role that does not own the table (splitter's own role).

DROP TRIGGER needs the table's owner, while creating, replacing and lifting a fence needs only TRIGGER.
The grants script (`connectors.pg.grants_sql`) therefore installs, as the superuser running it, one
SECURITY DEFINER function in the `splitter` schema that drops a trigger only if it calls splitter's fence
function, and grants EXECUTE on it to the role alone.

Owns: that function's DDL and calling it.  Must not: decide when a trigger is lifted or may be dropped
(`connectors.pg.fence.sweep` does), or drop anything but a trigger of splitter's fence function.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from connectors.pg.state import SCHEMA

DROP_FUNCTION = "drop_fence_trigger"


def drop_function_ddl(role: str, fence_function: str) -> sql.Composed:
    """The function (run as the script's superuser) and its EXECUTE for `role` only."""
    function = sql.SQL("{}.{}").format(SCHEMA, sql.Identifier(DROP_FUNCTION))
    fence = sql.Literal(f"{SCHEMA.as_string(None)}.{sql.Identifier(fence_function).as_string(None)}()")
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {function}(relation regclass, trigger_name name) RETURNS void\n"
        "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $drop$\n"
        "BEGIN\n"
        "  IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t WHERE t.tgrelid = relation AND t.tgname = trigger_name\n"
        "                    AND t.tgfoid = to_regprocedure({fence})) THEN\n"
        "    RAISE EXCEPTION 'trigger % on % is not a splitter fence', trigger_name, relation\n"
        "      USING ERRCODE = 'insufficient_privilege';\n"
        "  END IF;\n"
        "  EXECUTE format('DROP TRIGGER %I ON %s', trigger_name, relation);\n"
        "END $drop$;\n"
        "REVOKE ALL ON FUNCTION {function}(regclass, name) FROM PUBLIC;\n"
        "GRANT EXECUTE ON FUNCTION {function}(regclass, name) TO {role};").format(
        function=function, fence=fence, role=sql.Identifier(role))


def drop_through_function(conn: psycopg.Connection, schema: str, table: str, trigger: str) -> bool:
    """Drop `trigger` through the function, inside the caller's transaction; False if it is not installed
    or the role may not call it (the trigger then stays, open)."""
    installed = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL AND has_function_privilege(to_regprocedure(%s), "
                             "'EXECUTE')", (f"splitter.{DROP_FUNCTION}(regclass, name)",) * 2).fetchone()
    if not (installed and installed[0]):
        return False
    conn.execute(sql.SQL("SELECT {}.{}(%s::regclass, %s)").format(SCHEMA, sql.Identifier(DROP_FUNCTION)),
                 (sql.Identifier(schema, table).as_string(conn), trigger))
    return True


__all__ = ["DROP_FUNCTION", "drop_function_ddl", "drop_through_function"]
