"""splitter's own role in the tests: the pipeline under test never runs as a superuser.

Owns: the test role's name and password, creating it on a server (cluster-wide, once per session: the
`splitter_role` fixture in conftest), running what `splitter grants` prints for a Settings' topology in
each of its databases as the superuser (the same statements as the shipped deploy/postgres script), and
turning a superuser DSN or Settings into the role's.  Fixture setup and test-side assertions keep the
superuser DSNs; only what is handed to splitter (in-process Settings, child processes' environment)
uses the role.
Must not: grant anything `splitter.ops.grants` does not, or know which test needs what.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connectors.pg.grants_sql import PASSWORD_VARIABLE, database_statements, role_statements
from splitter.ops.grants import DEFAULT_ROLE, database_grants
from splitter.pipeline.config import Settings

ROLE = DEFAULT_ROLE
PASSWORD = "splitter-test"


def executable(statement: str, password: str = PASSWORD) -> str:
    """A script statement as a client runs it: psql's `:'password'` replaced by the literal."""
    return statement.replace(PASSWORD_VARIABLE, sql.Literal(password).as_string(None))


def create_role(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for statement in role_statements(ROLE):
            conn.execute(executable(statement.sql).encode())


def role_dsn(dsn: str) -> str:
    """`dsn` (a superuser's) logging in as splitter's role instead."""
    return make_conninfo(dsn, user=ROLE, password=PASSWORD)


def is_role_dsn(dsn: str) -> bool:
    return conninfo_to_dict(dsn).get("user") == ROLE


def grant(settings: Settings, keep: Collection[str] = ()) -> None:
    """Run the grants of `settings`' topology (superuser DSNs) in each of its databases but those in `keep`."""
    by_database = {conninfo_to_dict(dsn).get("dbname"): dsn
                   for dsn in (settings.source_dsn, *settings.target_dsns.values())}
    for grants in database_grants(settings):
        if grants.database in keep:
            continue
        with psycopg.connect(by_database[grants.database], autocommit=True) as conn:
            for statement in database_statements(ROLE, grants):
                conn.execute(executable(statement.sql).encode())


def as_role(settings: Settings, keep: Collection[str] = (), granted: bool = False) -> Settings:
    """`settings` (superuser DSNs) after granting its topology to the role (unless `granted` already), with
    the role's DSNs.  Databases named in `keep` (on a test's private server, where the role does not exist)
    keep the superuser's DSN and get no grants."""
    if is_role_dsn(settings.source_dsn):
        return settings
    if not granted:
        grant(settings, keep)

    def swapped(dsn: str) -> str:
        return dsn if conninfo_to_dict(dsn).get("dbname") in keep else role_dsn(dsn)

    return dataclasses.replace(settings, source_dsn=swapped(settings.source_dsn),
                               target_dsns={s: swapped(d) for s, d in settings.target_dsns.items()})

