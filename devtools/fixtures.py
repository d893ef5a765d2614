"""The shipped bento_social schema and the seven service schemas, and loading them into a database.

Owns: the DDL files under `devtools/sql/` (read through importlib.resources, so they ship in the wheel)
and running them.  The target DDL creates each service's schema, enum types and tables; splitter's own
state schema (`splitter`) is created by splitter itself, never here.
Must not: generate data (`devtools.datagen`), write rows, or run against a database it was not handed:
the caller picks the connection and owns its transaction.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg

from splitter.core.errors import ConfigurationError

SOURCE_DATABASE = "bento_social"
TARGET_DATABASES: tuple[str, ...] = (
    "auth_db",
    "user_db",
    "post_db",
    "topic_db",
    "comment_db",
    "notification_db",
    "interaction_db",
)


def source_schema_sql() -> str:
    """The DDL of the source database `bento_social` (meant for an empty database)."""
    return resources.files("devtools").joinpath("sql", "bento_social.sql").read_text(encoding="utf-8")


def target_schema_sql(database: str) -> str:
    """The DDL of one service database (schema, enum types, tables, indexes)."""
    if database not in TARGET_DATABASES:
        known = ", ".join(TARGET_DATABASES)
        raise ConfigurationError(f"no shipped schema for database {database!r} (known: {known})")
    return resources.files("devtools").joinpath("sql", "targets", f"{database}.sql").read_text(encoding="utf-8")


def _run_script(conn: psycopg.Connection[Any], script: str) -> None:
    # A script without parameters goes through the simple query protocol, which accepts many statements.
    # Its text comes from files shipped in the package, never from user input.
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(script.encode("utf-8"))


def load_source_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the bento_social tables and enum types in the (empty) database `conn` is connected to."""
    _run_script(conn, source_schema_sql())


def load_target_schema(conn: psycopg.Connection[Any], database: str) -> None:
    """Create the schema of service database `database` (e.g. "auth_db") in the database `conn` is on."""
    _run_script(conn, target_schema_sql(database))
