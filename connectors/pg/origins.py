"""Replication origins: the mark an apply session puts on its writes so that they never go round.

A reverse capture (on a service database) streams with `origin 'none'`, so the forward worker's writes
are not sent back; the forward capture streams with `origin 'any'` and puts each transaction's origin on
its records, so a forward worker skips its own reverse stream's writes while other services' workers
apply them (their read copies of shared tables).

Owns: the name of a service's origin (`splitter_<service>`; the reverse worker's service is `<S>.reverse`),
whether the connecting role may use origins in a database (`origin_access`: the catalog's answer for the
exact functions `setup_origin` calls), the message that names the privilege to grant, and setting an origin
up on a session.  Must not: decide what a role without the privilege means (the sink warns and applies
unmarked writes; the cutover preflight refuses), or read or write anything else.

Why the catalog and not a try: the cutover preflight must know before it changes anything, and the sink
then takes the same answer instead of a second rule.  Since PostgreSQL 14 the origin functions are revoked
from PUBLIC and may be granted (`has_function_privilege` answers); before 14 they checked for a superuser
inside, whatever their ACL said, so there only a superuser can use them.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

#: The functions an apply session calls, as `has_function_privilege` and GRANT name them.
ORIGIN_FUNCTIONS = ("pg_replication_origin_create(text)", "pg_replication_origin_session_setup(text)")
_GRANTABLE_SINCE = 140000  # server_version_num from which EXECUTE on them is what counts


def origin_name(service: str) -> str:
    """The origin an apply session for `service` marks its writes with."""
    return f"splitter_{service}"


@dataclass(frozen=True)
class OriginAccess:
    """Whether the connecting role may use replication origins in its database."""

    role: str
    database: str
    usable: bool
    grantable: bool  # False before PostgreSQL 14: only a superuser can
    role_ident: str  # the role as GRANT spells it (quoted where needed)

    def refusal(self) -> str:
        """Why the role cannot mark its writes, naming the privilege, the role and the database."""
        what = f"role {self.role} cannot use replication origins in database {self.database}"
        if not self.grantable:
            return f"{what}: before PostgreSQL 14 only a superuser can; run the workers as a superuser"
        return (f"{what}: GRANT EXECUTE ON FUNCTION {', '.join(ORIGIN_FUNCTIONS)} TO {self.role_ident} in "
                f"that database, then restart the workers that apply as {self.role}; or run them as a superuser")


def origin_access(conn: psycopg.Connection) -> OriginAccess:
    """The connecting role's (current_user's) right to use replication origins in `conn`'s database."""
    create, session_setup = ORIGIN_FUNCTIONS
    row = conn.execute(
        "SELECT current_user, quote_ident(current_user), current_database(), r.rolsuper, "
        "current_setting('server_version_num')::int >= %s, "
        "has_function_privilege(%s::text, 'EXECUTE') AND has_function_privilege(%s::text, 'EXECUTE') "
        "FROM pg_roles r WHERE r.rolname = current_user", (_GRANTABLE_SINCE, create, session_setup)).fetchone()
    assert row is not None
    role, ident, database, superuser, grantable, granted = row
    return OriginAccess(str(role), str(database), bool(superuser or (grantable and granted)), bool(grantable),
                        str(ident))


def setup_origin(conn: psycopg.Connection, name: str) -> OriginAccess:
    """Mark every later write of `conn`'s session with origin `name` (created if missing), if the role may.

    Returns what `origin_access` found; when it is not usable nothing was set up and the caller decides.
    `conn` must not be inside a transaction (the origin is created in one of its own).
    """
    access = origin_access(conn)
    if access.usable:
        with conn.transaction():
            exists = conn.execute("SELECT 1 FROM pg_replication_origin WHERE roname = %s", (name,)).fetchone()
            if not exists:
                conn.execute("SELECT pg_replication_origin_create(%s)", (name,))
        conn.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
    return access


__all__ = ["ORIGIN_FUNCTIONS", "OriginAccess", "origin_access", "origin_name", "setup_origin"]
